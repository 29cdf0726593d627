"""The pretrained folder: a generator to pass around as `config.json` + `G_ema.safetensors`
(and, when written, `G.safetensors` and `D.safetensors`).

config.json holds the model family (`"model": "BigGAN"` or `"BigGANdeep"`) and the keyword
arguments G was built with, under their flag names where they have one (`G_nl`, not
`G_activation`), so `Generator(**arguments)` builds the architecture again and the file reads as
a command line; D's, when D.safetensors is written, under `"D"`. The weights are safetensors
files: a JSON header and raw tensor bytes, nothing that runs code when read (unlike a pickle);
safetensors is an optional dependency.

This module writes and reads the folder only; `pretrained.from_pretrained` loads any kind of
source (this folder, a training run's or the original's weights folder, a TF-Hub conversion).
"""
import inspect
import json
import os
from typing import Dict, Optional

import torch
import torch.nn as nn

import atomic
import BigGAN
import BigGANdeep
import checkpoints
import flags

CONFIG = 'config.json'
FORMAT = 'BigGAN-PyTorch pretrained'
NETS = ('G_ema', 'G', 'D')
FAMILIES = {'BigGAN': BigGAN, 'BigGANdeep': BigGANdeep}  # flags.MODELS, by module


def weights_file(net: str) -> str:
    return f'{net}.safetensors'


def is_folder(path: str) -> bool:
    """Whether `path` is a pretrained folder (a folder holding config.json)."""
    return os.path.isfile(os.path.join(path, CONFIG))


def require_safetensors():
    """safetensors.torch, or a ValueError (a user error: one `error:` line) saying how to
    install it."""
    try:
        import safetensors.torch
    except ImportError:
        raise ValueError('pretrained folders (config.json + *.safetensors) need the optional '
                         'package safetensors: pip install safetensors') from None
    return safetensors.torch


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def as_flags(arguments: dict) -> dict:
    """Model keyword arguments under their flag names (G_activation -> G_nl) where a flag
    feeds them; other keys as they are."""
    by_arg = {row.arg: row.key for row in flags.rows().values() if row.arg}
    return {by_arg.get(key, key): value for key, value in arguments.items()}


def full_arguments(net: nn.Module) -> dict:
    """Every keyword argument of `net`'s constructor (defaults filled in) plus the block flags
    it was given, under flag names; a ValueError when one is no plain JSON value (an
    nn.Module activation or a block class has no name to write)."""
    if not hasattr(net, 'arguments'):
        raise ValueError(f'{type(net).__name__} records no constructor arguments: only the '
                         f'networks of BigGAN.py and BigGANdeep.py can be saved')
    defaults = {name: param.default
                for name, param in inspect.signature(type(net).__init__).parameters.items()
                if param.default is not inspect.Parameter.empty and name != 'skip_init'}
    arguments = as_flags({**defaults, **net.arguments})
    for key, value in arguments.items():
        try:
            json.dumps(value)
        except TypeError:
            raise ValueError(f'{type(net).__name__} argument {key}={value!r} cannot be written '
                             f'to {CONFIG}: build the network with a name (a string) '
                             f'instead') from None
    return arguments


def save(folder: str, G_ema: Optional[nn.Module] = None, G: Optional[nn.Module] = None,
         D: Optional[nn.Module] = None, source: str = '') -> str:
    """Write the pretrained folder: G_ema.safetensors and/or G.safetensors (at least one),
    D.safetensors when D is given, and config.json last (so a folder with config.json is
    whole). Weights files of an earlier save that this one does not write are removed, so the
    folder never mixes two models. `source` (e.g. the run it came from) goes into config.json.
    Returns the folder."""
    st = require_safetensors()
    generators = [net for net in (G_ema, G) if net is not None]
    if not generators:
        raise ValueError('save: give G_ema or G (or both)')
    family = type(generators[0]).__module__
    if family not in flags.MODELS:
        raise ValueError(f'save: {type(generators[0]).__name__} from {family!r} is not a '
                         f'generator of {list(flags.MODELS)}')
    arguments = [full_arguments(net) for net in generators]
    if len(arguments) == 2 and arguments[0] != arguments[1]:
        differ = sorted(k for k in {**arguments[0], **arguments[1]}
                        if arguments[0].get(k) != arguments[1].get(k))
        raise ValueError(f'save: G_ema and G differ in {differ}; they are not one model')
    config = {'format': FORMAT, 'model': family, **arguments[0]}
    if D is not None:
        config['D'] = full_arguments(D)
    if source:
        config['source'] = source
    os.makedirs(folder, exist_ok=True)
    nets = {'G_ema': G_ema, 'G': G, 'D': D}
    for name, net in nets.items():
        path = os.path.join(folder, weights_file(name))
        if net is None:
            atomic.remove(path)
            continue
        tensors = {key: value.detach().cpu().contiguous().clone()
                   for key, value in net.state_dict().items()}
        data = st.save(tensors, metadata={'format': 'pt', 'net': name, 'model': family})
        atomic.atomic_write(path, lambda f, d=data: f.write(d))
    atomic.atomic_write_text(os.path.join(folder, CONFIG), json.dumps(config, indent=1) + '\n')
    return folder


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

def read_config(folder: str) -> dict:
    """config.json of a pretrained folder; a ValueError naming the file when it is not one."""
    path = os.path.join(folder, CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{folder!r} is not a pretrained folder: it has no {CONFIG}')
    try:
        with open(path) as f:
            config = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f'{path!r} is not valid JSON ({error})') from None
    if not isinstance(config, dict) or config.get('model') not in flags.MODELS:
        raise ValueError(f'{path!r} names no model family ("model": one of '
                         f'{list(flags.MODELS)})')
    return config


def present(folder: str) -> Dict[str, str]:
    """{net: path} of the weights files the folder holds."""
    return {net: os.path.join(folder, weights_file(net)) for net in NETS
            if os.path.isfile(os.path.join(folder, weights_file(net)))}


def pick_generator(folder: str, ema: Optional[bool]) -> str:
    """'G_ema' or 'G': the one asked for (`ema` True / False), or with None G_ema when the
    folder has it, else G. A FileNotFoundError when the one asked for is absent."""
    have = present(folder)
    wanted = ('G_ema' if 'G_ema' in have else 'G') if ema is None else ('G_ema' if ema else 'G')
    if wanted not in have:
        raise FileNotFoundError(f'{folder!r} has no {weights_file(wanted)}; it holds: '
                                f"{', '.join(weights_file(n) for n in have) or 'no weights'}")
    return wanted


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """A safetensors file's tensors (on the CPU)."""
    try:
        return require_safetensors().load_file(path)
    except Exception as error:  # safetensors raises its own error types for a damaged file
        if isinstance(error, ValueError) and 'pip install' in str(error):
            raise
        raise ValueError(f'{path!r} is no readable safetensors file ({error})') from None


def model_arguments(config: dict) -> dict:
    """The keyword arguments of config.json (without its own keys)."""
    return {key: value for key, value in config.items()
            if key not in ('format', 'model', 'source', 'D')}


def build(config: dict, net: str = 'G') -> nn.Module:
    """The Generator (`net` 'G') or Discriminator ('D') that config.json describes, without
    its initialization (the weights are loaded next)."""
    family = FAMILIES[config['model']]  # read_config checked the name
    cls = family.Generator if net == 'G' else family.Discriminator
    arguments = model_arguments(config) if net == 'G' else config.get('D')
    if not isinstance(arguments, dict):
        raise ValueError(f'{CONFIG} holds no arguments for D (its "D" entry)')
    try:
        return cls(**arguments, skip_init=True)
    except TypeError as error:
        raise ValueError(f'{CONFIG} does not describe a {config["model"]} {cls.__name__}: '
                         f'{error}') from None


def load(folder: str, ema: Optional[bool] = None) -> nn.Module:
    """The generator of a pretrained folder, its weights loaded strictly (see
    pick_generator for `ema`); in training mode, as any freshly built module."""
    config = read_config(folder)
    name = pick_generator(folder, ema)
    G = build(config)
    path = os.path.join(folder, weights_file(name))
    checkpoints.load_into(G, path, strict=True, state=read_weights(path))
    return G
