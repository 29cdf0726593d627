"""BigGAN-deep: its arch tables, Generator and Discriminator (its bottleneck G and D blocks are
layers.DeepGBlock / DeepDBlock, importable from here as GBlock / DBlock).

Shared with BigGAN (imported, not copied): the G arch table, attention parsing, init, the layers
and the fused `G_D`. BigGAN-deep conditions every block on `cat([shared(y), z])` (`hier` and
`G_shared` are required) and has `G_depth`/`D_depth` blocks per stage.
"""
import functools
from typing import Callable, Union

import torch
import torch.nn as nn

import layers
from BigGAN import (G_D, DiscriminatorBase, GeneratorBase, d_tables, select_arch,  # noqa: F401
                    takes_config, upsample_nearest)
from BigGAN import G_arch as _biggan_G_arch

__all__ = ['GBlock', 'DBlock', 'G_arch', 'D_arch', 'Generator', 'Discriminator', 'G_D']


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------

# The bottleneck blocks live in layers.py (G_BLOCKS / D_BLOCKS name them DeepGBlock / DeepDBlock);
# the original's names stay importable from here.
GBlock, DBlock = layers.DeepGBlock, layers.DeepDBlock


# ------------------------------------------------------------------------------------------------
# Arch tables (the original's BigGANdeep.G_arch / D_arch)
# ------------------------------------------------------------------------------------------------

def G_arch(ch: int = 64, attention: Union[str, int] = '64', arg: str = 'G_attn') -> dict:
    """BigGAN's G table, 512 included. The original's deep table stops at 256; BigGAN-deep 512
    (Brock et al. 2019, Appendix B; DeepMind's TF-Hub biggan-deep-512) has the stage widths of
    BigGAN 512, in and out multipliers 16, 16, 8, 8, 4, 2, 1 and 16, 8, 8, 4, 2, 1, 1."""
    return _biggan_G_arch(ch, attention, arg)


_D_TABLE = {  # resolution: (in multipliers, out multipliers, downsample, resolution, attn range)
    32: ([4, 4, 4], [4, 4, 4], [True, True, False, False], [16, 16, 16, 16], (2, 5)),
    64: ([1, 2, 4, 8], [2, 4, 8, 16], [True] * 4 + [False], [32, 16, 8, 4, 4], (2, 6)),
    128: ([1, 2, 4, 8, 16], [2, 4, 8, 16, 16], [True] * 5 + [False],
          [64, 32, 16, 8, 4, 4], (2, 7)),
    256: ([1, 2, 4, 8, 8, 16], [2, 4, 8, 8, 16, 16], [True] * 6 + [False],
          [128, 64, 32, 16, 8, 4, 4], (2, 7)),
    # The original stops at 256. As BigGAN's 512 row: the 256 row with one more ch -> ch down
    # stage in front (seven stages, 512 -> 4, mirroring the 512 G), attention at 64 after the
    # 2ch -> 4ch stage as at 256, keys up to 256, the largest size after a stage.
    512: ([1, 1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16], [True] * 7 + [False],
          [256, 128, 64, 32, 16, 8, 4, 4], (2, 8)),
}


def D_arch(ch: int = 64, attention: Union[str, int] = '64', arg: str = 'D_attn') -> dict:
    """The BigGAN-deep D table; only the first len(out_channels) downsample/resolution entries
    are used, as in the original."""
    return d_tables(_D_TABLE, ch, attention, arg, rgb_input=False)


# ------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------

class Generator(GeneratorBase):
    """BigGAN-deep generator. Call as `G(z, G.shared(y))`; needs `hier` and `G_shared`.

    Stage i has `G_depth` blocks: all but the last keep in_i channels, the last maps to out_i and
    upsamples (for G_depth <= 2 exactly the original; deeper stages work here, the original's
    crashed). Each block is its own entry of `blocks`; attention joins the last block of a stage.
    Blocks are built from `G_block` (a name in layers.G_BLOCKS, a class, or '' for DeepGBlock).
    """
    own_block = GBlock

    @takes_config('G')
    def __init__(self, *, G_ch: int = 64, G_depth: int = 2, dim_z: int = 128,
                 bottom_width: int = 4, resolution: int = 128, G_kernel_size: int = 3,
                 G_attn: str = '64', n_classes: int = 1000, num_G_SVs: int = 1,
                 num_G_SV_itrs: int = 1, G_shared: bool = True, shared_dim: int = 0,
                 hier: bool = False, cross_replica: bool = False, mybn: bool = False,
                 G_activation: Union[str, nn.Module] = 'relu', BN_eps: float = 1e-5,
                 SN_eps: float = 1e-12, G_init: str = 'ortho', skip_init: bool = False,
                 G_param: str = 'SN', norm_style: str = 'bn',
                 G_block: Union[str, Callable] = '', G_output_eps: float = 1e-5):
        if not (hier and G_shared):
            raise ValueError('BigGAN-deep needs hier=True and G_shared=True (flags --hier '
                             '--G_shared): every block is conditioned on cat([shared(y), z])')
        if G_depth < 1:
            raise ValueError(f'G_depth must be >= 1, got {G_depth}')
        super().__init__(arch=select_arch(G_arch(G_ch, G_attn), resolution, 'BigGAN-deep G'),
                         G_ch=G_ch, dim_z=dim_z, bottom_width=bottom_width,
                         resolution=resolution, n_classes=n_classes, G_shared=G_shared,
                         shared_dim=shared_dim, hier=hier, G_activation=G_activation,
                         G_init=G_init, norm_style=norm_style)
        which_conv, which_linear, _ = layers.sn_layers(G_param, num_G_SVs, num_G_SV_itrs, SN_eps,
                                                       G_kernel_size, 'G_param')
        which_block = layers.get_block(G_block, layers.G_BLOCKS, self.own_block, 'G_block')
        self.G_depth = G_depth
        which_bn = functools.partial(layers.ccbn,
                                     which_linear=functools.partial(which_linear, bias=False),
                                     input_size=self.shared_dim + dim_z,
                                     cross_replica=cross_replica, mybn=mybn,
                                     norm_style=norm_style, eps=BN_eps)

        self.shared = nn.Embedding(n_classes, self.shared_dim)
        self.linear = which_linear(dim_z + self.shared_dim,
                                   self.arch['in_channels'][0] * bottom_width ** 2)
        blocks = []
        for index, (c_in, c_out) in enumerate(zip(self.arch['in_channels'],
                                                  self.arch['out_channels'])):
            for g_index in range(G_depth):
                last = g_index == G_depth - 1
                blocks.append([which_block(c_in, c_out if last else c_in, which_conv=which_conv,
                                           which_bn=which_bn, activation=self.activation,
                                           upsample=upsample_nearest
                                           if self.arch['upsample'][index] and last else None)])
            if self.arch['attention'][self.arch['resolution'][index]]:
                blocks[-1].append(layers.Attention(c_out, which_conv))
        self.blocks = nn.ModuleList([nn.ModuleList(stage) for stage in blocks])
        self.output_layer = self.output_layer_for(which_conv, cross_replica, mybn, G_output_eps)
        if not skip_init:
            layers.init_weights(self, G_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z: (N, dim_z) noise; y: the output of `self.shared` for the class labels."""
        z = torch.cat([y, z], 1)  # embedding first, then z; every block sees the same vector
        h = self.linear(z)
        h = h.view(h.size(0), -1, self.bottom_width, self.bottom_width)
        for stage in self.blocks:
            for block in stage:
                h = block(h, z)
        return torch.tanh(self.output_layer(h))


# ------------------------------------------------------------------------------------------------
# Discriminator
# ------------------------------------------------------------------------------------------------

class Discriminator(DiscriminatorBase):
    """BigGAN-deep projection discriminator: a 3x3 stem conv, then `D_depth` blocks per stage
    (the first of each stage changes width and downsamples). `D_wide` goes to the blocks, and
    BigGAN-deep's own block ignores it, as in the original. Blocks are built from `D_block` (a
    name in layers.D_BLOCKS, a class, or '' for DeepDBlock)."""
    own_block = DBlock

    @takes_config('D')
    def __init__(self, *, D_ch: int = 64, D_wide: bool = True, D_depth: int = 2,
                 resolution: int = 128, D_kernel_size: int = 3, D_attn: str = '64',
                 n_classes: int = 1000, num_D_SVs: int = 1, num_D_SV_itrs: int = 1,
                 D_activation: Union[str, nn.Module] = 'relu', SN_eps: float = 1e-12,
                 output_dim: int = 1, D_init: str = 'ortho', skip_init: bool = False,
                 D_param: str = 'SN', D_block: Union[str, Callable] = ''):
        if D_depth < 1:
            raise ValueError(f'D_depth must be >= 1, got {D_depth}')
        super().__init__(arch=select_arch(D_arch(D_ch, D_attn), resolution, 'BigGAN-deep D'),
                         D_ch=D_ch, resolution=resolution, n_classes=n_classes,
                         D_activation=D_activation, D_init=D_init)
        which_conv, which_linear, which_embedding = layers.sn_layers(
            D_param, num_D_SVs, num_D_SV_itrs, SN_eps, D_kernel_size, 'D_param')
        which_block = layers.get_block(D_block, layers.D_BLOCKS, self.own_block, 'D_block')
        self.D_depth = D_depth
        self.input_conv = which_conv(3, self.arch['in_channels'][0])
        blocks = []
        for index, c_out in enumerate(self.arch['out_channels']):
            c_in = self.arch['in_channels'][index]
            stage = [which_block(c_in if d_index == 0 else c_out, c_out, which_conv=which_conv,
                                 wide=D_wide, activation=self.activation, preactivation=True,
                                 downsample=nn.AvgPool2d(2)
                                 if self.arch['downsample'][index] and d_index == 0 else None)
                     for d_index in range(D_depth)]
            if self.arch['attention'][self.arch['resolution'][index]]:
                stage.append(layers.Attention(c_out, which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self.linear = which_linear(self.arch['out_channels'][-1], output_dim)
        self.embed = which_embedding(n_classes, self.arch['out_channels'][-1])
        if not skip_init:
            layers.init_weights(self, D_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The stem conv, then the blocks."""
        return super().features(self.input_conv(x))
