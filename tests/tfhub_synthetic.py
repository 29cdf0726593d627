"""Synthetic TF-Hub BigGAN modules for the converter tests, built from the published modules'
naming rules, not from the converter's own tables, so the two can disagree.

`module_variable_shapes(resolution)` lists every variable of `deepmind/biggan-<res>/2` with its TF
shape (conv kernels HWIO, dense weights (in, out), SN vectors (1, out)), under the names a
`hub.Module` gives them (`module/...:0`), EMA variants included. `SyntheticModule` fills them
with random values; the raw (non-EMA) variant of a weight is minus its EMA variant, computed only
when read, so a test can tell which one the converter took.
"""
from collections.abc import Mapping
from typing import Dict, Iterator, Tuple

import numpy as np
import torch

EMA = 'ema_b999900'
EMA_LEAVES = ('w', 'b', 'gamma', 'beta')
CH = 96
EMBED = 128
N_CLASSES = 1000

# The BigGAN G tables (channel multipliers) and the modules' dim_z and attention position
# (attention before GBlock k).
MODULES = {
    128: dict(dim_z=120, ins=[16, 16, 8, 4, 2], outs=[16, 8, 4, 2, 1], attention_before=4),
    256: dict(dim_z=140, ins=[16, 16, 8, 8, 4, 2], outs=[16, 8, 8, 4, 2, 1], attention_before=5),
    512: dict(dim_z=128, ins=[16, 16, 8, 8, 4, 2, 1], outs=[16, 8, 8, 4, 2, 1, 1],
              attention_before=4),
}


def _full(name: str) -> str:
    return f'module/{name}:0'


def _sn_layer(scope: str, w_shape: Tuple[int, ...], bias: bool) -> Dict[str, tuple]:
    out = w_shape[-1]
    shapes = {f'{scope}/w': w_shape, f'{scope}/u0': (1, out), f'{scope}/u1': (1, out)}
    if bias:
        shapes[f'{scope}/b'] = (out,)
    return shapes


def _stats(scope: str, channels: int) -> Dict[str, tuple]:
    return {f'{scope}/accumulated_mean': (channels,), f'{scope}/accumulated_var': (channels,),
            f'{scope}/accumulation_counter': ()}


def base_variable_shapes(resolution: int) -> Dict[str, tuple]:
    """Every trainable/statistics variable (no EMA variants), short names (no module/, :0)."""
    module = MODULES[resolution]
    chunk = module['dim_z'] // (len(module['ins']) + 1)
    shapes = {'linear/w': (N_CLASSES, EMBED)}
    shapes.update(_sn_layer('Generator/G_Z/G_linear', (chunk, module['ins'][0] * CH * 16), True))
    for i, (m_in, m_out) in enumerate(zip(module['ins'], module['outs'])):
        c_in, c_out = m_in * CH, m_out * CH
        block = 'Generator/GBlock' + (f'_{i}' if i else '')
        shapes.update(_sn_layer(f'{block}/conv0', (3, 3, c_in, c_out), True))
        shapes.update(_sn_layer(f'{block}/conv1', (3, 3, c_out, c_out), True))
        shapes.update(_sn_layer(f'{block}/conv_sc', (1, 1, c_in, c_out), True))
        for bn, c in (('HyperBN', c_in), ('HyperBN_1', c_out)):
            for part in ('gamma', 'beta'):
                shapes.update(_sn_layer(f'{block}/{bn}/{part}', (chunk + EMBED, c), False))
        shapes.update(_stats(f'{block}/CrossReplicaBN', c_in))
        shapes.update(_stats(f'{block}/CrossReplicaBN_1', c_out))
    c = module['outs'][module['attention_before'] - 1] * CH
    for part, (c_from, c_to) in (('theta', (c, c // 8)), ('phi', (c, c // 8)),
                                 ('g', (c, c // 2)), ('o_conv', (c // 2, c))):
        shapes.update(_sn_layer(f'Generator/attention/{part}', (1, 1, c_from, c_to), False))
    shapes['Generator/attention/gamma'] = ()
    shapes['Generator/ScaledCrossReplicaBN/gamma'] = (CH,)
    shapes['Generator/ScaledCrossReplicaBN/beta'] = (CH,)
    shapes.update(_stats('Generator/ScaledCrossReplicaBNbn', CH))
    shapes.update(_sn_layer('Generator/conv_2d', (3, 3, CH, 3), True))
    return shapes


def module_variable_shapes(resolution: int) -> Dict[str, tuple]:
    """All variables of the module under their `module/...:0` names, EMA variants included."""
    return hub_names(base_variable_shapes(resolution), EMA, EMA_LEAVES)


def hub_names(base: Dict[str, tuple], ema: str, ema_leaves: Tuple[str, ...]) -> Dict[str, tuple]:
    """`base` under `module/...:0` names, plus the `<name>/<ema>` variant of each EMA leaf."""
    shapes = {}
    for name, shape in base.items():
        shapes[_full(name)] = shape
        if name.rsplit('/', 1)[-1] in ema_leaves:
            shapes[_full(f'{name}/{ema}')] = shape
    return shapes


class SyntheticModule(Mapping):
    """A read-only `{module/...:0: np.ndarray}` of one module, values drawn from `seed`.

    EMA weights ~ N(0, 1), scaled down where SN does not bound them so that the images do not
    saturate (a comparison of saturated tanh outputs would prove little): the class embedding
    by 0.05 (conditioning vectors near unit norm), the output BN's gamma and beta by 0.2. Raw
    weights are minus the EMA ones; BN means ~ 0.1 N(0, 1), variances ~ U(0.5, 1.5), counters
    1; SN u ~ N(0, 1). `zeros=True` skips the random draw (for the shape-only tests).
    """

    SCALES = {'linear/': 0.05, 'Generator/ScaledCrossReplicaBN/': 0.2}
    EMA, EMA_LEAVES = EMA, EMA_LEAVES  # the module family's (a subclass may have its own)
    variable_shapes = staticmethod(module_variable_shapes)

    def __init__(self, resolution: int, seed: int = 0, zeros: bool = False):
        self.shapes = self.variable_shapes(resolution)
        self._stored: Dict[str, np.ndarray] = {}
        gen = torch.Generator().manual_seed(seed)
        for name, shape in self.shapes.items():
            short = name[len('module/'):-len(':0')]
            leaf = short.rsplit('/', 1)[-1]
            if leaf in self.EMA_LEAVES:
                continue  # a raw weight: derived from its EMA variant when read
            if zeros:
                value = torch.zeros(shape)
            elif leaf == 'accumulated_var':
                value = 0.5 + torch.rand(shape, generator=gen)
            elif leaf == 'accumulated_mean':
                value = 0.1 * torch.randn(shape, generator=gen)
            elif leaf == 'accumulation_counter':
                value = torch.ones(shape)
            else:
                value = torch.randn(shape, generator=gen)
                for prefix, scale in self.SCALES.items():
                    if short.startswith(prefix):
                        value *= scale
            self._stored[name] = value.numpy()

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._stored:
            return self._stored[name]
        if name in self.shapes:  # a raw weight: minus its EMA variant
            return -self._stored[name[:-len(':0')] + f'/{self.EMA}:0']
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


class Without(Mapping):
    """A view of `variables` with some names removed (a module with missing variables)."""

    def __init__(self, variables: Mapping, removed):
        self._variables = variables
        self._removed = set(removed)

    def __getitem__(self, name: str):
        if name in self._removed:
            raise KeyError(name)
        return self._variables[name]

    def __iter__(self):
        return (n for n in self._variables if n not in self._removed)

    def __len__(self) -> int:
        return sum(1 for _ in self)
