"""Load a trained generator in one call, whatever holds it, and save it to pass around.

    import pretrained
    G = pretrained.from_pretrained('runs/demo/weights/demo')   # G_ema when the run has one
    pretrained.save_pretrained('my_biggan', G_ema=G)            # config.json + G_ema.safetensors

`from_pretrained(path)` takes
- a pretrained folder (config.json + G_ema.safetensors / G.safetensors; pretrained_files.py),
- a weights folder of a training run, ours or the original's (its released checkpoints):
  the architecture comes from its state_dict.pth as `sample.py --config_from_name` reads it,
- a G state_dict file of a TF-Hub conversion (TFHub/converter.py's biggan-<res>.pth or
  biggan-deep-<res>.pth): the architecture is the converter's one whose keys and shapes the
  file has.
The entry points live here rather than as methods of the models, which import nothing of the
file and config layers (a model method that loaded a run would make BigGAN import utils, which
imports BigGAN).
"""
import os
from typing import Optional

import torch
import torch.nn as nn

import checkpoints
import pretrained_files
import sample
import sample_config
from pretrained_files import save as save_pretrained  # noqa: F401  (the API's other half)
from safe_pickle import safe_load


def from_pretrained(path: str, ema: Optional[bool] = None, load_weights: str = '',
                    device='cpu') -> nn.Module:
    """The generator held at `path` (see the module docstring), on `device`, in training mode
    as any freshly built module (call .eval() to sample with its stored BN statistics).
    `ema`: G_ema (True), G (False), or G_ema when there is one (None). `load_weights`: which
    copy of a run (e.g. 'best0', 'copy1'; '' the latest)."""
    if os.path.isdir(path):
        if pretrained_files.is_folder(path):
            G = pretrained_files.load(path, ema)
        else:
            G = _from_run(path, ema, load_weights)
    elif os.path.isfile(path):
        if ema is not None:
            raise ValueError(f'{path!r} is one G state_dict file: it has no G_ema / G choice '
                             f'(leave ema out)')
        G = _from_state_file(path)
    else:
        raise FileNotFoundError(f'{path!r} does not exist: give a pretrained folder '
                                f'(config.json), a weights folder of a run, or a G state_dict '
                                f'file')
    return G.to(device)


def run_config(folder: str, ema: Optional[bool] = None, load_weights: str = '') -> dict:
    """sample.py's config for a weights folder (ours or the original's): its saved config,
    with --use_ema when `ema`, or with None when the copy has G_ema weights."""
    root, name = os.path.split(os.path.abspath(folder))
    if ema is None:
        ema = os.path.isfile(os.path.join(folder, checkpoints.file_name(
            'G_ema', load_weights or None)))
    argv = ['--config_from_name', '--weights_root', root, '--experiment_name', name,
            '--load_weights', load_weights] + (['--use_ema'] if ema else [])
    return sample_config.parse_sample_config(argv)


def _from_run(folder: str, ema: Optional[bool], load_weights: str) -> nn.Module:
    """G of a weights folder (ours or the original's), built from its saved config."""
    G, _ = sample.load_generator(run_config(folder, ema, load_weights), torch.device('cpu'))
    return G


def _from_state_file(path: str) -> nn.Module:
    """G of a bare state_dict file: the TF-Hub conversion whose architecture fits it."""
    state = safe_load(path)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f'{path!r} does not hold a G state_dict')
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    for build in conversions():
        with torch.device('meta'):  # shapes only: nothing allocated or initialized
            candidate = build(None)
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            G = build(None)
            checkpoints.load_into(G, path, strict=True, state=state)
            return G
    raise ValueError(f'{path!r} fits none of the TF-Hub conversions (BigGAN and BigGAN-deep at '
                     f'128, 256, 512): sample.py --G_weights takes it with the architecture '
                     f'flags, or save it with pretrained.save_pretrained')


def conversions():
    """A builder (state_dict -> G) for every TF-Hub architecture TFHub/ can build."""
    from TFHub import converter, deep
    builders = [lambda state, r=r: converter.build_generator(r, state)
                for r in converter.RESOLUTIONS]
    builders += [lambda state, r=r: deep.build_generator(r, state)
                 for r in deep.RESOLUTIONS if not deep.missing_arch_message(r)]
    return builders
