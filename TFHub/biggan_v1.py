"""The TF-Hub BigGAN generator (deepmind/biggan-{128,256,512}/2) in PyTorch, in TF's own layout.

Its modules carry the TF variable scopes (`GBlock_1.conv0`, `GBlock_1.HyperBN.gamma`,
`GBlock_1.CrossReplicaBN`, `G_linear`, `ScaledCrossReplicaBN`, ...) and hold the TF tensors
as they are, changed only to PyTorch's axis conventions (conv kernels HWIO -> OIHW, dense
weights (in, out) -> (out, in)). `load_tf_variables` fills it by one naming rule, independent of
the converter's per-layer table, so comparing this model with the converted `BigGAN.Generator`
checks the converter (tests/test_tfhub.py).

How it differs from `BigGAN.Generator` with `converter.get_config(res)`:

1. Class input: one-hot (or soft) class vectors (N, 1000) through a bias-free linear `linear`
   (1000 -> 128). BigGAN.Generator looks integer labels up in `shared` (nn.Embedding): the same
   numbers for one-hot inputs, with `shared.weight` = TF `linear/w` as stored (in, out).
2. Conditioning vector of GBlock i: cat([z chunk i + 1, class embedding]). BigGAN.Generator
   uses cat([class embedding, z chunk]), so the converter moves the 128 class columns of every
   HyperBN gamma/beta weight to the front.
3. `G_linear`'s output is read as an NHWC map (N, 4, 4, 16 ch) and then moved to NCHW.
   BigGAN.Generator reads (N, 16 ch, 4, 4) directly, so the converter re-orders the rows of its
   weight, bias and SN vector u to channel-major.
4. The statistics of each class-conditional BN live in a sibling scope (`CrossReplicaBN`,
   `CrossReplicaBN_1`; `ScaledCrossReplicaBNbn` for the output BN), and are called
   accumulated_mean / accumulated_var (BigGAN.Generator: the BN's stored_mean / stored_var).
   TF's accumulation_counter is kept here but used by neither model.
5. The output BN uses eps 1e-4, like every TF BN. The original's output BN is fixed at 1e-5
   whatever BN_eps says; `converter.get_config` sets G_output_eps 1e-4 (--G_output_eps).
6. SN vectors: TF stores u0 and u1 per layer. Both models normalize a weight by one power
   iteration from u0 (layers.SN, eps 1e-4), as the original's port did; u1 is read by neither.
   TF stores no sigma: sv0 stays 1 here (the converter fills BigGAN.Generator's sv0).

The same in both: the SN conv and linear layers and the self-attention block (taken from
layers.py; TF's `o_conv` is layers.Attention's `o`), the channel tables and nearest x2
upsampling (from BigGAN.py), the class-conditional BN arithmetic BN(x) * (1 + gamma(c)) + beta(c)
with eps 1e-4 (written out here in TF's split into CrossReplicaBN and HyperBN), the block order
of layers.GBlock, ReLU, tanh, and hierarchical z (dim_z in len(GBlocks) + 1 equal chunks, the
first to G_linear).
"""
import functools
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import truncnorm

import BigGAN
import layers
from TFHub.variables import canonical_name

MODULES = {  # resolution: (dim_z, index of the GBlock the attention block precedes)
    128: (120, 4),
    256: (140, 5),
    512: (128, 4),
}
CH = 96
EMBED_DIM = 128
N_CLASSES = 1000
EPS = 1e-4
EMA_SUFFIX = 'ema_b999900'
EMA_LEAVES = ('w', 'b', 'gamma', 'beta')

sn_conv = functools.partial(layers.SNConv2d, eps=EPS)
sn_linear = functools.partial(layers.SNLinear, eps=EPS)


class CrossReplicaBN(nn.Module):
    """Batch norm without affine parameters, its statistics under TF's names."""

    def __init__(self, channels: int, eps: float = EPS, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.register_buffer('accumulated_mean', torch.zeros(channels))
        self.register_buffer('accumulated_var', torch.ones(channels))
        self.register_buffer('accumulation_counter', torch.zeros(()))

    def forward(self, x: torch.Tensor, weight: Optional[torch.Tensor] = None,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.batch_norm(x, self.accumulated_mean, self.accumulated_var, weight, bias,
                            self.training, self.momentum, self.eps)


class HyperBN(nn.Module):
    """TF's class-conditional scale and shift of a normalized x: x * (1 + gamma(c)) + beta(c)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.gamma = sn_linear(cond_dim, channels, bias=False)
        self.beta = sn_linear(cond_dim, channels, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shape = (cond.shape[0], -1, 1, 1)
        return x * (1 + self.gamma(cond)).view(shape) + self.beta(cond).view(shape)


class GBlock(nn.Module):
    """TF's GBlock: the arithmetic of layers.GBlock with an upsampling shortcut, under TF's
    names (conv0/conv1 are layers.GBlock's conv1/conv2, HyperBN/HyperBN_1 its bn1/bn2)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.conv0 = sn_conv(in_channels, out_channels, kernel_size=3, padding=1)
        self.conv1 = sn_conv(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_sc = sn_conv(in_channels, out_channels, kernel_size=1, padding=0)
        self.HyperBN = HyperBN(in_channels, cond_dim)
        self.HyperBN_1 = HyperBN(out_channels, cond_dim)
        self.CrossReplicaBN = CrossReplicaBN(in_channels)
        self.CrossReplicaBN_1 = CrossReplicaBN(out_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.HyperBN(self.CrossReplicaBN(x), cond))
        h = self.conv0(BigGAN.upsample_nearest(h))
        h = F.relu(self.HyperBN_1(self.CrossReplicaBN_1(h), cond))
        return self.conv1(h) + self.conv_sc(BigGAN.upsample_nearest(x))


class Generator(nn.Module):
    """The TF-Hub generator at `resolution`. Call as `G(z, class_vectors)` with z of shape
    (N, dim_z) and one-hot or soft class vectors (N, 1000); see `one_hot`."""

    def __init__(self, resolution: int = 128):
        super().__init__()
        if resolution not in MODULES:
            raise ValueError(f'resolution={resolution!r}: TF-Hub BigGAN modules exist for '
                             f'{sorted(MODULES)} only')
        arch = BigGAN.G_arch(CH, '0')[resolution]
        self.resolution = resolution
        self.dim_z, self.attention_before = MODULES[resolution]
        self.z_chunk = self.dim_z // (len(arch['in_channels']) + 1)
        self.bottom_channels = arch['in_channels'][0]
        cond_dim = self.z_chunk + EMBED_DIM
        self.linear = nn.Linear(N_CLASSES, EMBED_DIM, bias=False)
        self.G_linear = sn_linear(self.z_chunk, 16 * self.bottom_channels)
        self.GBlock = nn.ModuleList(GBlock(c_in, c_out, cond_dim) for c_in, c_out
                                    in zip(arch['in_channels'], arch['out_channels']))
        self.attention = layers.Attention(arch['out_channels'][self.attention_before - 1],
                                          sn_conv)
        self.ScaledCrossReplicaBN = nn.ParameterDict({'gamma': nn.Parameter(torch.ones(CH)),
                                                      'beta': nn.Parameter(torch.zeros(CH))})
        self.ScaledCrossReplicaBNbn = CrossReplicaBN(CH)
        self.conv_2d = sn_conv(CH, 3, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor, class_vectors: torch.Tensor) -> torch.Tensor:
        embed = self.linear(class_vectors)
        zs = torch.split(z, self.z_chunk, 1)
        h = self.G_linear(zs[0]).view(z.shape[0], 4, 4, self.bottom_channels)
        h = h.permute(0, 3, 1, 2)  # TF's NHWC map to NCHW
        for i, block in enumerate(self.GBlock):
            if i == self.attention_before:
                h = self.attention(h)
            h = block(h, torch.cat([zs[i + 1], embed], 1))
        bn = self.ScaledCrossReplicaBN
        h = F.relu(self.ScaledCrossReplicaBNbn(h, bn['gamma'], bn['beta']))
        return torch.tanh(self.conv_2d(h))


def tf_name(key: str) -> Optional[str]:
    """The TF variable (canonical name) behind a state_dict key of `Generator`; None for sv0.

    The rule: scopes are module names, except GBlock.<i> -> GBlock[_<i>], G_linear under G_Z,
    attention.o -> o_conv; weight/bias are TF's w/b; all but `linear` live under Generator/.
    """
    parts = key.split('.')
    if parts[-1] == 'sv0':
        return None
    parts[-1] = {'weight': 'w', 'bias': 'b'}.get(parts[-1], parts[-1])
    if parts[0] == 'GBlock':
        parts[:2] = ['GBlock' + (f'_{parts[1]}' if parts[1] != '0' else '')]
    elif parts[0] == 'G_linear':
        parts.insert(0, 'G_Z')
    elif parts[:2] == ['attention', 'o']:
        parts[1] = 'o_conv'
    name = '/'.join(parts)
    return name if parts[0] == 'linear' else f'Generator/{name}'


def _to_torch_layout(array: np.ndarray, target: torch.Tensor, is_weight: bool) -> torch.Tensor:
    value = torch.from_numpy(np.array(array, dtype=np.float32))
    if is_weight and value.dim() == 4:    # conv kernel HWIO -> OIHW
        value = value.permute(3, 2, 0, 1)
    elif is_weight and value.dim() == 2:  # dense (in, out) -> (out, in)
        value = value.t()
    if value.shape != target.shape and (is_weight or value.numel() != target.numel()):
        raise ValueError(f'a TF variable of shape {tuple(array.shape)} cannot fill a tensor '
                         f'of shape {tuple(target.shape)}')
    return value.reshape(target.shape)


def load_tf_variables(G: Generator, variables: Mapping, ema: bool = True) -> Generator:
    """Fill `G` from TF variables (names with or without `module/` and `:0`); EMA weights
    unless `ema` is False. KeyError names the first variable that is missing."""
    names = {canonical_name(name): name for name in variables}
    state = G.state_dict()
    for key, target in state.items():
        name = tf_name(key)
        if name is None:
            continue
        leaf = name.rsplit('/', 1)[-1]
        if ema and leaf in EMA_LEAVES:
            name = f'{name}/{EMA_SUFFIX}'
        if name not in names:
            raise KeyError(f'TF variable {name} (for {key}) is missing')
        state[key] = _to_torch_layout(variables[names[name]], target, leaf == 'w')
    G.load_state_dict(state, strict=True)
    return G


def one_hot(labels: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """Integer labels (N,) -> float one-hot class vectors (N, n_classes)."""
    return F.one_hot(labels.long(), n_classes).float()


def truncated_z_sample(batch_size: int, z_dim: int, truncation: float = 0.5,
                       seed: Optional[int] = None) -> np.ndarray:
    """TF-Hub's noise: `truncation` times a normal truncated to [-2, 2], float32 (batch, z_dim).

    Every value lies in [-2 truncation, 2 truncation]. This is TF-Hub's convention, not the
    paper's resampling at a threshold; TF-Hub also feeds the truncation into the graph (the BN
    statistics), which neither generator here does (issue #14 of the original): the converted
    weights match TF-Hub at truncation 1 only.
    """
    if batch_size < 1 or z_dim < 1:
        raise ValueError(f'batch_size={batch_size}, z_dim={z_dim}: both must be positive')
    if not truncation > 0:
        raise ValueError(f'truncation={truncation!r} must be positive (TF-Hub uses 0.02 to 1)')
    state = None if seed is None else np.random.RandomState(seed)
    values = truncnorm.rvs(-2, 2, size=(batch_size, z_dim), random_state=state)
    return (truncation * values).astype(np.float32)
