"""BigGAN: the arch tables, Generator, Discriminator and the fused G_D forward.

The models are pure nn.Modules: keyword arguments carry the original's flag names, no optimizer
and no file I/O live here. `G(z, G.shared(y))` and `D(x, y)` behave as in the original, and every
state_dict key and shape matches it (see tests/test_model_structure.py).
"""
import functools
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

import layers

# ------------------------------------------------------------------------------------------------
# Arch tables (spec 3.1): channel multipliers per stage, and the resolutions after each stage at
# which attention may be placed. The 32x32 D table labels every stage "16" (so --D_attn 16 puts
# attention after all four blocks): copied literally, as the original's checkpoints depend on it.
# ------------------------------------------------------------------------------------------------

_G_TABLE = {  # resolution: (in multipliers, out multipliers)
    32: ([4, 4, 4], [4, 4, 4]),
    64: ([16, 16, 8, 4], [16, 8, 4, 2]),
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
    512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1]),
}

_D_TABLE = {  # resolution: (in multipliers after the RGB input, out multipliers, downsample,
    #                        nominal resolution after each block, attention keys 2**lo..2**hi)
    32: ([4, 4, 4], [4, 4, 4, 4], [True, True, False, False], [16, 16, 16, 16], (2, 5)),
    64: ([1, 2, 4, 8], [1, 2, 4, 8, 16], [True] * 4 + [False], [32, 16, 8, 4, 4], (2, 6)),
    128: ([1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 16], [True] * 5 + [False],
          [64, 32, 16, 8, 4, 4], (2, 7)),
    256: ([1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16], [True] * 6 + [False],
          [128, 64, 32, 16, 8, 4, 4], (2, 7)),
}


def parse_attention(attention: Union[str, int], arg: str = 'attn') -> List[int]:
    """'16_32' -> [16, 32]; '0' -> []. ValueError on anything else."""
    try:
        values = [int(item) for item in str(attention).split('_')]
    except ValueError:
        raise ValueError(f'{arg}={attention!r} is not valid: give underscore-separated '
                         f"resolutions such as '64' or '32_64', or '0' for none") from None
    return [v for v in values if v != 0]


def _attention_flags(attention: Union[str, int], keys: List[int], arg: str) -> Dict[int, bool]:
    wanted = parse_attention(attention, arg)
    missing = [v for v in wanted if v not in keys]
    if missing:
        raise ValueError(f'{arg}={attention!r}: this model has no attention resolution '
                         f'{missing}; valid resolutions are {keys} (or 0 for none)')
    return {key: key in wanted for key in keys}


def G_arch(ch: int = 64, attention: Union[str, int] = '64', arg: str = 'G_attn') -> dict:
    """The G arch table for every resolution (attention checked lazily per resolution)."""
    arch = {}
    for res, (ins, outs) in _G_TABLE.items():
        resolutions = [2 ** i for i in range(3, 3 + len(ins))]
        arch[res] = {'in_channels': [ch * m for m in ins],
                     'out_channels': [ch * m for m in outs],
                     'upsample': [True] * len(ins),
                     'resolution': resolutions,
                     'attention_keys': resolutions,
                     'attention': functools.partial(_attention_flags, attention, resolutions, arg)}
    return arch


def d_tables(table: dict, ch: int, attention: Union[str, int], arg: str,
             rgb_input: bool) -> dict:
    """D arch tables from rows (in multipliers, out multipliers, downsample, resolutions,
    attention exponent range); `rgb_input` prepends the 3 input channels to in_channels (BigGAN
    feeds the image to its first block; BigGAN-deep has a stem conv)."""
    arch = {}
    for res, (ins, outs, down, resolutions, (lo, hi)) in table.items():
        keys = [2 ** i for i in range(lo, hi + 1)]
        arch[res] = {'in_channels': [3] * rgb_input + [ch * m for m in ins],
                     'out_channels': [ch * m for m in outs],
                     'downsample': down,
                     'resolution': resolutions,
                     'attention_keys': keys,
                     'attention': functools.partial(_attention_flags, attention, keys, arg)}
    return arch


def D_arch(ch: int = 64, attention: Union[str, int] = '64', arg: str = 'D_attn') -> dict:
    """The D arch table for every resolution (no 512 table, as in the original)."""
    return d_tables(_D_TABLE, ch, attention, arg, rgb_input=True)


def select_arch(tables: dict, resolution: int, arg: str) -> dict:
    """Pick one resolution's table, resolving its attention flags; ValueError if absent."""
    if resolution not in tables:
        raise ValueError(f'resolution={resolution!r}: {arg} has no arch table for it; valid '
                         f'resolutions are {sorted(tables)}')
    arch = dict(tables[resolution])
    arch['attention'] = arch['attention']()
    return arch


def check_attention_width(arch: dict, channels_key: str, arg: str) -> None:
    """Attention needs 8 or more channels where it is placed."""
    for res, ch in zip(arch['resolution'], arch[channels_key]):
        if arch['attention'][res] and ch < 8:
            raise ValueError(f'{arg}: attention at resolution {res} sees {ch} channels, fewer '
                             f'than the 8 it needs; raise the width or move the attention')


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """x2 nearest-neighbour upsampling used by every G block."""
    return F.interpolate(x, scale_factor=2)


# ------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------

class GeneratorBase(nn.Module):
    """What the BigGAN and BigGAN-deep generators share: argument checks, the arch table, the
    `which_conv`/`which_linear` partials, the output layer and weight init."""

    def _setup(self, tables: dict, model: str, G_ch: int, dim_z: int, bottom_width: int,
               resolution: int, n_classes: int, G_shared: bool, shared_dim: int, hier: bool,
               G_activation: Union[str, nn.Module], G_init: str, norm_style: str,
               G_param: str, num_G_SVs: int, num_G_SV_itrs: int, SN_eps: float,
               G_kernel_size: int):
        for name, value in (('G_ch', G_ch), ('dim_z', dim_z), ('n_classes', n_classes)):
            if value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value}')
        self.arch = select_arch(tables, resolution, model)
        check_attention_width(self.arch, 'out_channels', 'G_attn')
        layers.check_choice('G_init', G_init, layers.INIT_STYLES)
        layers.check_norm_style(norm_style)
        self.ch = G_ch
        self.dim_z = dim_z
        self.bottom_width = bottom_width
        self.resolution = resolution
        self.n_classes = n_classes
        self.G_shared = G_shared
        self.shared_dim = shared_dim if shared_dim > 0 else dim_z
        self.hier = hier
        self.activation = layers.get_activation(G_activation, 'G_activation')
        self.init = G_init
        return layers.sn_layers(G_param, num_G_SVs, num_G_SV_itrs, SN_eps, G_kernel_size,
                                'G_param')[:2]

    def _finish(self, which_conv, cross_replica: bool, mybn: bool, skip_init: bool) -> None:
        # The output BN keeps eps 1e-5 whatever BN_eps says (checkpoint-visible behaviour).
        last = self.arch['out_channels'][-1]
        self.output_layer = nn.Sequential(
            layers.bn(last, cross_replica=cross_replica, mybn=mybn),
            self.activation,
            which_conv(last, 3))
        if not skip_init:
            layers.init_weights(self, self.init)


class Generator(GeneratorBase):
    """BigGAN generator. Call as `G(z, G.shared(y))`.

    With `hier`, z is split into one chunk per stage plus one for the linear layer, and each
    stage is conditioned on `cat([shared(y), z_chunk])`; `G.dim_z` is rounded down to a multiple
    of the number of chunks (what samplers must use).
    """

    def __init__(self, *, G_ch: int = 64, dim_z: int = 128, bottom_width: int = 4,
                 resolution: int = 128, G_kernel_size: int = 3, G_attn: str = '64',
                 n_classes: int = 1000, num_G_SVs: int = 1, num_G_SV_itrs: int = 1,
                 G_shared: bool = True, shared_dim: int = 0, hier: bool = False,
                 cross_replica: bool = False, mybn: bool = False,
                 G_activation: Union[str, nn.Module] = 'relu', BN_eps: float = 1e-5,
                 SN_eps: float = 1e-12, G_init: str = 'ortho', skip_init: bool = False,
                 G_param: str = 'SN', norm_style: str = 'bn'):
        super().__init__()
        if hier and not G_shared:
            raise ValueError('hier=True needs G_shared=True: hierarchical z concatenates each '
                             'z chunk with the shared class embedding (flag --G_shared)')
        which_conv, which_linear = self._setup(
            G_arch(G_ch, G_attn), 'BigGAN G', G_ch, dim_z, bottom_width, resolution,
            n_classes, G_shared, shared_dim, hier, G_activation, G_init, norm_style, G_param,
            num_G_SVs, num_G_SV_itrs, SN_eps, G_kernel_size)
        if hier:
            # One chunk for the linear layer, one per stage; dim_z rounds down (spec 3.4).
            self.num_slots = len(self.arch['in_channels']) + 1
            self.z_chunk_size = dim_z // self.num_slots
            if self.z_chunk_size < 1:
                raise ValueError(f'dim_z={dim_z} is too small for hier at resolution '
                                 f'{resolution}: it needs at least {self.num_slots}')
            self.dim_z = self.z_chunk_size * self.num_slots
        else:
            self.num_slots = 1
            self.z_chunk_size = 0

        # ccbn gains/biases: linear maps of the conditioning vector when shared, else per-class
        # embeddings (never SN, as in the original).
        bn_linear = functools.partial(which_linear, bias=False) if G_shared else nn.Embedding
        bn_input = self.shared_dim + self.z_chunk_size if G_shared else n_classes
        which_bn = functools.partial(layers.ccbn, which_linear=bn_linear, input_size=bn_input,
                                     cross_replica=cross_replica, mybn=mybn,
                                     norm_style=norm_style, eps=BN_eps)

        self.shared = nn.Embedding(n_classes, self.shared_dim) if G_shared else nn.Identity()
        self.linear = which_linear(dim_z // self.num_slots,
                                   self.arch['in_channels'][0] * bottom_width ** 2)
        blocks = []
        for index, (c_in, c_out) in enumerate(zip(self.arch['in_channels'],
                                                  self.arch['out_channels'])):
            stage = [layers.GBlock(c_in, c_out, which_conv=which_conv, which_bn=which_bn,
                                   activation=self.activation,
                                   upsample=upsample_nearest if self.arch['upsample'][index]
                                   else None)]
            if self.arch['attention'][self.arch['resolution'][index]]:
                stage.append(layers.Attention(c_out, which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self._finish(which_conv, cross_replica, mybn, skip_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z: (N, dim_z) noise; y: the output of `self.shared` for the class labels."""
        if self.hier:
            zs = torch.split(z, self.z_chunk_size, 1)
            z = zs[0]
            ys = [torch.cat([y, chunk], 1) for chunk in zs[1:]]
        else:
            ys = [y] * len(self.blocks)
        h = self.linear(z)
        h = h.view(h.size(0), -1, self.bottom_width, self.bottom_width)
        for stage, y_stage in zip(self.blocks, ys):
            for block in stage:
                h = block(h, y_stage)
        return torch.tanh(self.output_layer(h))


# ------------------------------------------------------------------------------------------------
# Discriminator
# ------------------------------------------------------------------------------------------------

class DiscriminatorBase(nn.Module):
    """What the BigGAN and BigGAN-deep discriminators share: argument checks, the arch table,
    the SN layer partials, the projection head, weight init and the forward."""

    def _setup(self, tables: dict, model: str, D_ch: int, resolution: int, n_classes: int,
               D_activation: Union[str, nn.Module], D_init: str, D_param: str, num_D_SVs: int,
               num_D_SV_itrs: int, SN_eps: float, D_kernel_size: int):
        for name, value in (('D_ch', D_ch), ('n_classes', n_classes)):
            if value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value}')
        self.arch = select_arch(tables, resolution, model)
        check_attention_width(self.arch, 'out_channels', 'D_attn')
        layers.check_choice('D_init', D_init, layers.INIT_STYLES)
        self.ch = D_ch
        self.resolution = resolution
        self.n_classes = n_classes
        self.activation = layers.get_activation(D_activation, 'D_activation')
        self.init = D_init
        return layers.sn_layers(D_param, num_D_SVs, num_D_SV_itrs, SN_eps, D_kernel_size,
                                'D_param')

    def _finish(self, which_linear, which_embedding, output_dim: int, skip_init: bool) -> None:
        last = self.arch['out_channels'][-1]
        self.linear = which_linear(last, output_dim)
        self.embed = which_embedding(self.n_classes, last)
        if not skip_init:
            layers.init_weights(self, self.init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks: the last feature map before global sum pooling."""
        h = x
        for stage in self.blocks:
            for block in stage:
                h = block(h)
        return h

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.sum(self.activation(self.features(x)), [2, 3])
        # Projection head (Miyato & Koyama): unconditional score + <embed(y), h>.
        return self.linear(h) + torch.sum(self.embed(y) * h, 1, keepdim=True)


class Discriminator(DiscriminatorBase):
    """BigGAN projection discriminator. Call as `D(x, y)` with integer labels; returns (N, 1)."""

    def __init__(self, *, D_ch: int = 64, D_wide: bool = True, resolution: int = 128,
                 D_kernel_size: int = 3, D_attn: str = '64', n_classes: int = 1000,
                 num_D_SVs: int = 1, num_D_SV_itrs: int = 1,
                 D_activation: Union[str, nn.Module] = 'relu', SN_eps: float = 1e-12,
                 output_dim: int = 1, D_init: str = 'ortho', skip_init: bool = False,
                 D_param: str = 'SN'):
        super().__init__()
        which_conv, which_linear, which_embedding = self._setup(
            D_arch(D_ch, D_attn), 'BigGAN D', D_ch, resolution, n_classes, D_activation,
            D_init, D_param, num_D_SVs, num_D_SV_itrs, SN_eps, D_kernel_size)
        blocks = []
        for index, c_out in enumerate(self.arch['out_channels']):
            stage = [layers.DBlock(self.arch['in_channels'][index], c_out,
                                   which_conv=which_conv, wide=D_wide,
                                   activation=self.activation, preactivation=index > 0,
                                   downsample=nn.AvgPool2d(2) if self.arch['downsample'][index]
                                   else None)]
            if self.arch['attention'][self.arch['resolution'][index]]:
                stage.append(layers.Attention(c_out, which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self._finish(which_linear, which_embedding, output_dim, skip_init)


# ------------------------------------------------------------------------------------------------
# Fused G and D
# ------------------------------------------------------------------------------------------------

class G_D(nn.Module):
    """G and D in one module, so one DDP wrapper (and one call) runs G then D.

    `train_G=False` runs G without gradients (the D step). Without `split_D`, fakes and reals go
    through D as one concatenated batch; with it, as two calls. Returns (D_fake, D_real) when
    reals are given, else D's output on the fakes (and G_z with `return_G_z`).
    """

    def __init__(self, G: nn.Module, D: nn.Module):
        super().__init__()
        self.G = G
        self.D = D

    def forward(self, z: torch.Tensor, gy: torch.Tensor, x: Optional[torch.Tensor] = None,
                dy: Optional[torch.Tensor] = None, train_G: bool = False,
                return_G_z: bool = False, split_D: bool = False):
        with torch.set_grad_enabled(train_G):
            G_z = self.G(z, self.G.shared(gy))
        if x is not None and G_z.dtype != x.dtype:
            G_z = G_z.to(x.dtype)
        if split_D:
            D_fake = self.D(G_z, gy)
            if x is not None:
                return D_fake, self.D(x, dy)
            return (D_fake, G_z) if return_G_z else D_fake
        D_input = G_z if x is None else torch.cat([G_z, x], 0)
        D_class = gy if dy is None else torch.cat([gy, dy], 0)
        D_out = self.D(D_input, D_class)
        if x is not None:
            return torch.split(D_out, [G_z.shape[0], x.shape[0]])
        return (D_out, G_z) if return_G_z else D_out
