"""BigGAN: the arch tables, Generator, Discriminator and `G_D`, the fused forward that training
runs (BigGAN-deep shares it).

The models are pure nn.Modules: keyword arguments carry the original's flag names, no optimizer
and no file I/O live here. As in the original, `Generator(**config)` and `Discriminator(**config)`
take a whole config too (`takes_config`). `G(z, G.shared(y))` and `D(x, y)` behave as the
original's, and every state_dict key and shape matches it (see tests/test_model_structure.py).
"""
import functools
import inspect
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn as nn

import flags
import layers
from resample import upsample_nearest  # noqa: F401  (BigGANdeep and TFHub use it from here)

# ------------------------------------------------------------------------------------------------
# Arch tables (the original's G_arch / D_arch): channel multipliers per stage, and the
# resolutions after each stage at which attention may be placed. The 32x32 D table labels every
# stage "16" (so --D_attn 16 puts attention after all four blocks): copied literally, as the
# original's checkpoints depend on it.
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
    # The original stops at 256. This row is the paper's 512 x 512 D (Brock et al. 2019,
    # Appendix B, Table 9): the 256 row with one more ch -> ch down block in front, so attention
    # at 64 again follows the ch -> 2ch block. Its keys end at 256, the largest size after a
    # block, as the 256 row's keys end at 128, so that every key places attention.
    512: ([1, 1, 2, 4, 8, 8, 16], [1, 1, 2, 4, 8, 8, 16, 16], [True] * 7 + [False],
          [256, 128, 64, 32, 16, 8, 4, 4], (2, 8)),
}


def parse_attention(attention: Union[str, int], arg: str = 'attn') -> List[int]:
    """'16_32' -> [16, 32]; '0' -> []. ValueError on anything else."""
    try:
        values = [int(item) for item in str(attention).split('_')]
    except ValueError:
        raise ValueError(f'{arg}={attention!r} is not valid: give underscore-separated '
                         f"resolutions such as '64' or '32_64', or '0' for none") from None
    return [v for v in values if v != 0]


DEFAULT_ATTENTION = '64'  # the G_attn / D_attn default


def _attention_flags(attention: Union[str, int], keys: List[int], arg: str) -> Dict[int, bool]:
    wanted = parse_attention(attention, arg)
    missing = [v for v in wanted if v not in keys]
    if missing and str(attention) == DEFAULT_ATTENTION:
        # The original ignored the default '64' at resolutions without a 64 entry (CIFAR's
        # launch script relies on it); any other missing entry is an error here.
        return {key: False for key in keys}
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
    """The D arch table for every resolution (512 added: the original has no 512 D)."""
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


# ------------------------------------------------------------------------------------------------
# Whole configs as keyword arguments
# ------------------------------------------------------------------------------------------------

def takes_config(net: str) -> Callable:
    """Decorate a G (`net` 'G') or D ('D') `__init__` so that it also takes a whole config, as
    the original's models did (`Generator(**config)`, a parsed config or an original
    `state_dict['config']`): flags and config entries that are not its arguments are left out,
    --G_nl / --D_nl feed G_activation / D_activation, and the block flags (`use` G_block /
    D_block in flags.py) are bound into the residual block (`G_block` / `D_block`). A key that
    is neither an argument nor a flag is still a TypeError. The model keeps what it was built
    from as `arguments` (its own keywords and block flags, not skip_init), so that
    `type(model)(**model.arguments)` builds the same architecture (pretrained_files.py writes
    them to config.json)."""
    def decorate(init: Callable) -> Callable:
        params = [name for name in inspect.signature(init).parameters if name != 'self']

        @functools.wraps(init)
        def wrapper(self, **kwargs):
            owner = type(self).__name__
            args, block_flags = flags.model_arguments(owner, net, params, kwargs)
            arguments = {key: value for key, value in {**args, **block_flags}.items()
                         if key != 'skip_init'}
            if block_flags:
                arg = f'{net}_block'
                block = layers.get_block(args.get(arg), getattr(layers, f'{net}_BLOCKS'),
                                         self.own_block, arg)
                args[arg] = bind_block_flags(block, block_flags, flags.rows())
            init(self, **args)
            self.arguments = arguments
        return wrapper
    return decorate


def bind_block_flags(block: Callable, values: dict, table: dict) -> Callable:
    """`block` with the block flags it takes bound; a flag it does not take must keep its
    default (ValueError naming the flag and the block)."""
    taken = inspect.signature(block).parameters
    bound = {}
    for key, value in values.items():
        row = table[key]
        name = row.arg or key
        if name in taken:
            bound[name] = value
        elif value != row.default:
            raise ValueError(f'--{row.name} {value!r}: the residual block '
                             f'{getattr(block, "__name__", block)} takes no {name}; pick a '
                             f'block that does (--{row.use[0]}_block) or leave the flag out')
    return functools.partial(block, **bound) if bound else block


# ------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------

class GeneratorBase(nn.Module):
    """What the BigGAN and BigGAN-deep generators share: argument checks, the attributes every G
    has (`arch`, `dim_z`, `shared_dim`, `activation`, ...), and the output layer."""

    def __init__(self, *, arch: dict, G_ch: int, dim_z: int, bottom_width: int,
                 resolution: int, n_classes: int, G_shared: bool, shared_dim: int, hier: bool,
                 G_activation: Union[str, nn.Module], G_init: str, norm_style: str):
        super().__init__()
        for name, value in (('G_ch', G_ch), ('dim_z', dim_z), ('n_classes', n_classes)):
            if value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value}')
        check_attention_width(arch, 'out_channels', 'G_attn')
        layers.check_choice('G_init', G_init, layers.INIT_STYLES)
        layers.check_norm_style(norm_style)
        self.arch = arch
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

    def output_layer_for(self, which_conv: Callable, cross_replica: bool, mybn: bool,
                         eps: float = 1e-5) -> nn.Sequential:
        """BN, activation and a conv to RGB. The BN's eps is G_output_eps, not BN_eps: the
        original fixed it at 1e-5, TF-Hub's modules used 1e-4."""
        last = self.arch['out_channels'][-1]
        return nn.Sequential(layers.bn(last, eps=eps, cross_replica=cross_replica, mybn=mybn),
                             self.activation, which_conv(last, 3))


class Generator(GeneratorBase):
    """BigGAN generator. Call as `G(z, G.shared(y))`.

    With `hier`, z is split into one chunk per stage plus one for the linear layer, and each
    stage is conditioned on `cat([shared(y), z_chunk])`; `G.dim_z` is rounded down to a multiple
    of the number of chunks (what samplers must use). Every stage's residual block is built from
    `G_block` (a name in layers.G_BLOCKS, a class, or '' for layers.GBlock).
    """
    own_block = layers.GBlock

    @takes_config('G')
    def __init__(self, *, G_ch: int = 64, dim_z: int = 128, bottom_width: int = 4,
                 resolution: int = 128, G_kernel_size: int = 3, G_attn: str = '64',
                 n_classes: int = 1000, num_G_SVs: int = 1, num_G_SV_itrs: int = 1,
                 G_shared: bool = True, shared_dim: int = 0, hier: bool = False,
                 cross_replica: bool = False, mybn: bool = False,
                 G_activation: Union[str, nn.Module] = 'relu', BN_eps: float = 1e-5,
                 SN_eps: float = 1e-12, G_init: str = 'ortho', skip_init: bool = False,
                 G_param: str = 'SN', norm_style: str = 'bn',
                 G_block: Union[str, Callable] = '', G_output_eps: float = 1e-5):
        if hier and not G_shared:
            raise ValueError('hier=True needs G_shared=True: hierarchical z concatenates each '
                             'z chunk with the shared class embedding (flag --G_shared)')
        super().__init__(arch=select_arch(G_arch(G_ch, G_attn), resolution, 'BigGAN G'),
                         G_ch=G_ch, dim_z=dim_z, bottom_width=bottom_width,
                         resolution=resolution, n_classes=n_classes, G_shared=G_shared,
                         shared_dim=shared_dim, hier=hier, G_activation=G_activation,
                         G_init=G_init, norm_style=norm_style)
        which_conv, which_linear, _ = layers.sn_layers(G_param, num_G_SVs, num_G_SV_itrs, SN_eps,
                                                       G_kernel_size, 'G_param')
        which_block = layers.get_block(G_block, layers.G_BLOCKS, self.own_block, 'G_block')
        if hier:
            # One chunk for the linear layer, one per stage; dim_z rounds down.
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
            stage = [which_block(c_in, c_out, which_conv=which_conv, which_bn=which_bn,
                                 activation=self.activation,
                                 upsample=upsample_nearest if self.arch['upsample'][index]
                                 else None)]
            if self.arch['attention'][self.arch['resolution'][index]]:
                stage.append(layers.Attention(c_out, which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self.output_layer = self.output_layer_for(which_conv, cross_replica, mybn, G_output_eps)
        if not skip_init:
            layers.init_weights(self, G_init)

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
    """What the BigGAN and BigGAN-deep discriminators share: argument checks, the attributes
    every D has, the projection head and the forward."""

    def __init__(self, *, arch: dict, D_ch: int, resolution: int, n_classes: int,
                 D_activation: Union[str, nn.Module], D_init: str):
        super().__init__()
        for name, value in (('D_ch', D_ch), ('n_classes', n_classes)):
            if value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value}')
        check_attention_width(arch, 'out_channels', 'D_attn')
        layers.check_choice('D_init', D_init, layers.INIT_STYLES)
        self.arch = arch
        self.ch = D_ch
        self.resolution = resolution
        self.n_classes = n_classes
        self.activation = layers.get_activation(D_activation, 'D_activation')
        self.init = D_init

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
    """BigGAN projection discriminator. Call as `D(x, y)` with integer labels; returns (N, 1).
    Every stage's residual block is built from `D_block` (a name in layers.D_BLOCKS, a class,
    or '' for layers.DBlock)."""
    own_block = layers.DBlock

    @takes_config('D')
    def __init__(self, *, D_ch: int = 64, D_wide: bool = True, resolution: int = 128,
                 D_kernel_size: int = 3, D_attn: str = '64', n_classes: int = 1000,
                 num_D_SVs: int = 1, num_D_SV_itrs: int = 1,
                 D_activation: Union[str, nn.Module] = 'relu', SN_eps: float = 1e-12,
                 output_dim: int = 1, D_init: str = 'ortho', skip_init: bool = False,
                 D_param: str = 'SN', D_block: Union[str, Callable] = ''):
        super().__init__(arch=select_arch(D_arch(D_ch, D_attn), resolution, 'BigGAN D'),
                         D_ch=D_ch, resolution=resolution, n_classes=n_classes,
                         D_activation=D_activation, D_init=D_init)
        which_conv, which_linear, which_embedding = layers.sn_layers(
            D_param, num_D_SVs, num_D_SV_itrs, SN_eps, D_kernel_size, 'D_param')
        which_block = layers.get_block(D_block, layers.D_BLOCKS, self.own_block, 'D_block')
        blocks = []
        for index, c_out in enumerate(self.arch['out_channels']):
            stage = [which_block(self.arch['in_channels'][index], c_out, which_conv=which_conv,
                                 wide=D_wide, activation=self.activation,
                                 preactivation=index > 0,
                                 downsample=nn.AvgPool2d(2) if self.arch['downsample'][index]
                                 else None)]
            if self.arch['attention'][self.arch['resolution'][index]]:
                stage.append(layers.Attention(c_out, which_conv))
            blocks.append(nn.ModuleList(stage))
        self.blocks = nn.ModuleList(blocks)
        self.linear = which_linear(self.arch['out_channels'][-1], output_dim)
        self.embed = which_embedding(n_classes, self.arch['out_channels'][-1])
        if not skip_init:
            layers.init_weights(self, D_init)


# ------------------------------------------------------------------------------------------------
# Fused G and D
# ------------------------------------------------------------------------------------------------

class G_D(nn.Module):
    """G then D in one forward: what every training step runs (train_fns.GAN_training_function
    calls it), in one process, with --parallel (DataParallel replicates it), under torchrun and
    with --compile. For those two, distributed.wrap_for_training compiles and DDP-wraps
    `self.G` and `self.D` in place, as two units (each DDP wrapper then sees only the backward
    passes whose gradients it averages); this forward stays the one that runs, so an edit here
    changes training everywhere.

    `train_G=False` runs G without gradients (the D step). Without `split_D`, fakes and reals go
    through D as one concatenated batch; with it, as two calls. `augment` (augment.Augmenter:
    --DiffAugment, --ADA), when given, transforms every batch on its way into D. Returns
    (D_fake, D_real) when reals are given, else D's output on the fakes; `return_G_z` adds G's
    output (before any augmentation) at the end.
    """

    def __init__(self, G: nn.Module, D: nn.Module, augment: Optional[Callable] = None):
        super().__init__()
        self.G = G
        self.D = D
        self.augment = augment

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """D's output on `images`, augmented on the way in as every batch D sees (the
        limited-data terms call it too)."""
        return self.D(self.augment(images) if self.augment else images, labels)

    def forward(self, z: torch.Tensor, gy: torch.Tensor, x: Optional[torch.Tensor] = None,
                dy: Optional[torch.Tensor] = None, train_G: bool = False,
                return_G_z: bool = False, split_D: bool = False):
        with torch.set_grad_enabled(train_G):
            G_z = self.G(z, self.G.shared(gy))
        if x is not None and G_z.dtype != x.dtype:
            G_z = G_z.to(x.dtype)
        if split_D:
            out = (self.discriminate(G_z, gy),)
            if x is not None:
                out = out + (self.discriminate(x, dy),)
        else:
            D_input = G_z if x is None else torch.cat([G_z, x], 0)
            D_class = gy if dy is None else torch.cat([gy, dy], 0)
            D_out = self.discriminate(D_input, D_class)
            out = (D_out,) if x is None else tuple(torch.split(D_out, [G_z.shape[0],
                                                                        x.shape[0]]))
        if return_G_z:
            out = out + (G_z,)
        return out[0] if len(out) == 1 else out
