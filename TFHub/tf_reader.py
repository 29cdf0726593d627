"""Reading TF-Hub generator variables into PyTorch tensors: the pieces the BigGAN
(TFHub/converter.py) and BigGAN-deep (TFHub/deep.py) mappings share. A `Reader` takes variables
by canonical name and notes every missing or misshapen one, so that one `ConversionError` lists
them all; `conv`, `put_sn`, `attention` and `channel_major` write spectrally normalized layers
and reorder TF's layouts.
"""
import math
import re
from collections.abc import Mapping
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

import layers
from TFHub.variables import canonical_name

EMA_SUFFIX = 'ema_b999900'
EMA_LEAVES = ('w', 'b', 'gamma', 'beta')       # the variables that have an EMA variant
IGNORED_LEAVES = ('u1', 'accumulation_counter')  # read by neither generator
TF_EPS = 1e-4         # TF's eps for every BN and for SN's vector normalization
BOTTOM = 4            # G_linear's output is a BOTTOM x BOTTOM map


class ConversionError(ValueError):
    """Variables that do not make the requested module: missing, misshapen, other resolution."""


class Reader:
    """Reads variables by canonical name, EMA variant or raw. It notes what is missing or
    misshapen instead of stopping at the first problem, so that one error lists them all.

    A `dry` reader reads nothing: it notes missing names and hands out tensors on the meta
    device, so a dry pass of the mapping finds every missing variable at no cost.
    """

    def __init__(self, variables: Mapping, ema: bool,
                 log: Optional[Callable[[str], None]] = None, dry: bool = False,
                 ema_suffix: str = EMA_SUFFIX, ema_leaves: Sequence[str] = EMA_LEAVES):
        self.variables = variables
        self.names = {canonical_name(name): name for name in variables}
        self.ema = ema
        # The BigGAN-deep modules name their EMA variants and leaves differently (TFHub/deep.py).
        self.ema_suffix, self.ema_leaves = ema_suffix, tuple(ema_leaves)
        self.dry = dry
        self.log = log or (lambda message: None)
        self.missing: List[str] = []
        self.misshapen: List[str] = []
        self.used = set()

    def read(self, scope: str, leaf: str, shape: Sequence[int],
             any_layout: bool = False) -> torch.Tensor:
        """The float32 tensor `scope/leaf` (its EMA variant when asked), checked against `shape`
        (only its size with `any_layout`, for SN vectors and scalars)."""
        name = f'{scope}/{leaf}'
        if self.ema and leaf in self.ema_leaves:
            name = f'{name}/{self.ema_suffix}'
        shape = tuple(shape)
        if name not in self.names:
            self.missing.append(name)
        if self.dry or name not in self.names:
            return torch.zeros(shape, device='meta' if self.dry else None)
        array = np.array(self.variables[self.names[name]], dtype=np.float32)
        if array.shape != shape and not (any_layout and array.size == math.prod(shape)):
            self.misshapen.append(f'{name} has shape {array.shape}, expected {shape}')
            return torch.zeros(shape)
        self.used.add(name)
        return torch.from_numpy(array).reshape(shape)


def sigma(weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """sv0: the largest singular value estimated by one power iteration from the stored u, which
    is what a training-mode forward would log (the forward itself never reads sv0)."""
    svs, _, _ = layers.power_iteration(weight.reshape(weight.shape[0], -1), [u.clone()],
                                       update=False, eps=TF_EPS)
    return svs[0].reshape(1)


def put_sn(out: Dict, key: str, weight: torch.Tensor, bias: Optional[torch.Tensor],
            u: torch.Tensor) -> None:
    out[f'{key}.weight'] = weight.contiguous()
    if bias is not None:
        out[f'{key}.bias'] = bias.contiguous()
    out[f'{key}.u0'] = u.reshape(1, -1).contiguous()
    out[f'{key}.sv0'] = sigma(out[f'{key}.weight'], out[f'{key}.u0'])


def conv(src: Reader, out: Dict, key: str, scope: str, c_in: int, c_out: int, k: int,
          bias: bool = True) -> None:
    src.log(f'{key} <- {scope}')
    weight = src.read(scope, 'w', (k, k, c_in, c_out)).permute(3, 2, 0, 1)  # HWIO -> OIHW
    put_sn(out, key, weight, src.read(scope, 'b', (c_out,)) if bias else None,
            src.read(scope, 'u0', (1, c_out), any_layout=True))


def channel_major(t: torch.Tensor, channels: int) -> torch.Tensor:
    """Rows in TF's (row, col, channel) order of an NHWC map -> PyTorch's (channel, row, col)."""
    rest = t.shape[1:]
    nhwc = t.reshape(BOTTOM, BOTTOM, channels, *rest)
    return nhwc.permute(2, 0, 1, *range(3, 3 + len(rest))).reshape(t.shape)


def attention(src: Reader, out: Dict, key: str, channels: int) -> None:
    scope = 'Generator/attention'
    out[f'{key}.gamma'] = src.read(scope, 'gamma', (), any_layout=True)
    c = channels
    for ours, theirs, c_in, c_out in (('theta', 'theta', c, c // 8), ('phi', 'phi', c, c // 8),
                                      ('g', 'g', c, c // 2), ('o', 'o_conv', c // 2, c)):
        conv(src, out, f'{key}.{ours}', f'{scope}/{theirs}', c_in, c_out, 1, bias=False)


def problems(src: Reader, resolution: int, module: Optional[str] = None) -> str:
    module = module or f'biggan-{resolution}'
    lines = []
    if src.missing:
        shown = ', '.join(src.missing[:6]) + (f' and {len(src.missing) - 6} more'
                                              if len(src.missing) > 6 else '')
        lines.append(f'the variables lack {len(src.missing)} that the {module} '
                     f'module has: {shown}')
        suffix = src.ema_suffix
        raw = [name[:-len(suffix) - 1] for name in src.missing if name.endswith(suffix)]
        if src.ema and raw and all(name in src.names for name in raw):
            lines.append('their raw (non-EMA) variants are present: convert those with '
                         '--no_ema (ema=False)')
    if src.misshapen:
        lines.append('misshapen: ' + '; '.join(src.misshapen[:6]))
    return '; '.join(lines)


def gblock_count(variables: Mapping) -> int:
    """How many GBlocks (`Generator/GBlock`, `GBlock_1`, ...) the variables hold."""
    indices = set()
    for name in variables:
        match = re.match(r'Generator/GBlock(?:_(\d+))?/', canonical_name(name))
        if match:
            indices.add(int(match.group(1) or 0))
    return max(indices) + 1 if indices else 0


def class_first(weight: torch.Tensor, z_dim: int) -> torch.Tensor:
    """Columns from TF's [z (chunk) | class embedding] to our generators' [class embedding | z]."""
    return torch.cat([weight[:, z_dim:], weight[:, :z_dim]], 1)


def g_linear(src: Reader, out: Dict, scope: str, in_features: int, channels: int,
             z_dim: Optional[int] = None) -> None:
    """G's first SN linear into `linear`: its rows to channel-major order and, with `z_dim`
    (an input of [z | class embedding]), its columns to [class embedding | z]."""
    src.log(f'linear <- {scope} (rows to channel-major'
            + (', columns to [class | z])' if z_dim is not None else ')'))
    n = BOTTOM * BOTTOM * channels
    weight = src.read(scope, 'w', (in_features, n)).t()
    if z_dim is not None:
        weight = class_first(weight, z_dim)
    bias = src.read(scope, 'b', (n,))
    u = src.read(scope, 'u0', (n,), any_layout=True)
    put_sn(out, 'linear', channel_major(weight, channels), channel_major(bias, channels),
           channel_major(u, channels))


def conditional_gains(src: Reader, out: Dict, key: str, scope: str, leaves: Sequence[str],
                      in_features: int, z_dim: int, channels: int) -> None:
    """A class-conditional BN's `gain` and `bias` SN linears from `scope/<leaf>` (TF's gamma /
    beta or scale / offset, on [z | class embedding]), columns to [class embedding | z]."""
    for ours, theirs in zip(('gain', 'bias'), leaves):
        weight = src.read(f'{scope}/{theirs}', 'w', (in_features, channels)).t()
        put_sn(out, f'{key}.{ours}', class_first(weight, z_dim), None,
               src.read(f'{scope}/{theirs}', 'u0', (1, channels), any_layout=True))
