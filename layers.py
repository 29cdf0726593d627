"""Building blocks shared by BigGAN and BigGAN-deep.

The SN conv, linear and embedding layers (from spectral_norm.py, importable from here), SA-GAN
self-attention, the batch-norm family (class-conditional `ccbn`, plain `bn`, `myBN` with standing
statistics), the BigGAN G and D residual blocks, weight init and the activation table. Every
layer keeps the original's parameter and buffer names, so checkpoints move both ways.

The models build every residual block from `which_block` (flags --G_block / --D_block pick one
of G_BLOCKS / D_BLOCKS by name) and hand it the `which_conv` and `which_bn` partials. To try a new
block, write it here and add it to G_BLOCKS or D_BLOCKS (README, "Try a new block").
"""
import functools
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

import resample
# The SN layers live in spectral_norm.py; their names stay importable from here, as in the
# original.
from spectral_norm import (SN, SNConv2d, SNEmbedding, SNLinear, gram_schmidt,  # noqa: F401
                           power_iteration, proj)


# ------------------------------------------------------------------------------------------------
# Activations and init
# ------------------------------------------------------------------------------------------------

# The original's activation table (flags --G_nl / --D_nl). A fresh module is built per use, so an
# in-place ReLU in G never aliases one in D.
ACTIVATIONS = {
    'relu': lambda: nn.ReLU(inplace=False),
    'inplace_relu': lambda: nn.ReLU(inplace=True),
    'ir': lambda: nn.ReLU(inplace=True),
}


def get_activation(activation: Union[str, nn.Module], arg: str = 'activation') -> nn.Module:
    """Return an activation module from a name of the original's table or a module."""
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]()
    raise ValueError(f'{arg}={activation!r} is not an activation: give an nn.Module or one of '
                     f'{sorted(ACTIVATIONS)}')


INIT_STYLES = ('ortho', 'N02', 'glorot', 'xavier')


def check_choice(arg: str, value, choices: Sequence) -> None:
    """Raise a ValueError naming `arg` and the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f'{arg}={value!r} is not valid; choose one of {list(choices)}')


def init_weights(module: nn.Module, init: str) -> None:
    """Initialize the weight of every Conv2d, Linear and Embedding in `module` (SN layers and
    the shared embedding included). Biases keep PyTorch's default init, BN gains 1, biases 0,
    attention gamma 0, SN u ~ N(0, 1), as in the original."""
    check_choice('init', init, INIT_STYLES)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            if init == 'ortho':
                nn.init.orthogonal_(m.weight)
            elif init == 'N02':
                nn.init.normal_(m.weight, 0, 0.02)
            else:
                nn.init.xavier_uniform_(m.weight)


# --G_param / --D_param: SN, or plain layers (`SVD`: the original's name, never implemented there).
PARAMETERIZATIONS = ('SN', 'SVD', 'none')


def sn_layers(param: str, num_svs: int, num_itrs: int, eps: float, kernel_size: int = 3,
              arg: str = 'G_param') -> Tuple[Callable, Callable, Callable]:
    """The `which_conv`, `which_linear`, `which_embedding` partials for a parameterization:
    spectrally normalized layers for `SN`, plain PyTorch layers otherwise."""
    check_choice(arg, param, PARAMETERIZATIONS)
    padding = kernel_size // 2
    if param == 'SN':
        sn = dict(num_svs=num_svs, num_itrs=num_itrs, eps=eps)
        return (functools.partial(SNConv2d, kernel_size=kernel_size, padding=padding, **sn),
                functools.partial(SNLinear, **sn),
                functools.partial(SNEmbedding, **sn))
    return (functools.partial(nn.Conv2d, kernel_size=kernel_size, padding=padding),
            nn.Linear, nn.Embedding)


# ------------------------------------------------------------------------------------------------
# Self-attention
# ------------------------------------------------------------------------------------------------

def attention_explicit(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The original's attention: (N, c, HW) queries, (N, c, M) keys, (N, d, M) values ->
    (N, d, HW); the scores are not scaled by 1/sqrt(c), and the softmax runs in float32
    whatever the autocast dtype (float64 stays float64). It stores the N x HW x M score matrix."""
    scores = torch.bmm(theta.transpose(1, 2), phi)
    if scores.element_size() < 4:
        scores = scores.float()
    return torch.bmm(g, F.softmax(scores, -1).to(g.dtype).transpose(1, 2))


def attention_sdpa(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The same through scaled_dot_product_attention (scale 1, as the original), which on CUDA
    runs a fused kernel that never stores the score matrix (4 GiB for BigGAN-128's 64 x 64
    attention at batch 256 in float32) and accumulates in float32. The query and key widths are
    zero-padded to a multiple of 8, the alignment the fused kernels want (zeros add nothing to
    the scores). The fused kernels also need unit stride along the channels: the transposes of
    NCHW activations have stride HW there (without the copies PyTorch falls back to the math
    kernel, which stores the score matrix); channels-last ones have it already and are not
    copied."""
    q, k, v = (t.transpose(1, 2).unsqueeze(1).contiguous() for t in (theta, phi, g))
    pad = -q.shape[-1] % 8
    if pad:
        q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
    return F.scaled_dot_product_attention(q, k, v, scale=1.0).squeeze(1).transpose(1, 2)


class Attention(nn.Module):
    """SA-GAN non-local block: theta/phi project to ch/8, g to ch/2, o back to ch; phi and g are
    max-pooled 2x2. The output is `gamma * o + x` with gamma starting at 0. On CUDA the attention
    itself runs through `attention_sdpa` (`fused = False`: `attention_explicit`, the original's
    computation, as on the CPU, where no fused kernel takes these shapes and the explicit form
    is the faster one)."""
    fused = True

    def __init__(self, ch: int, which_conv: Callable = SNConv2d, name: str = 'attention'):
        super().__init__()
        if ch // 8 < 1:
            raise ValueError(f'self-attention needs at least 8 channels, got {ch}: raise the '
                             f'channel width (G_ch/D_ch) or drop attention at this resolution')
        self.ch = ch
        # 1x1 convs without bias, as in the original.
        self.theta = which_conv(ch, ch // 8, kernel_size=1, padding=0, bias=False)
        self.phi = which_conv(ch, ch // 8, kernel_size=1, padding=0, bias=False)
        self.g = which_conv(ch, ch // 2, kernel_size=1, padding=0, bias=False)
        self.o = which_conv(ch // 2, ch, kernel_size=1, padding=0, bias=False)
        self.gamma = nn.Parameter(torch.tensor(0.), requires_grad=True)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.theta(x).reshape(n, self.ch // 8, h * w)
        phi = F.max_pool2d(self.phi(x), [2, 2]).reshape(n, self.ch // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).reshape(n, self.ch // 2, h * w // 4)
        attend = attention_sdpa if self.fused and x.is_cuda else attention_explicit
        o = self.o(attend(theta, phi, g).reshape(n, self.ch // 2, h, w))
        return self.gamma * o + x


# ------------------------------------------------------------------------------------------------
# Batch norms
# ------------------------------------------------------------------------------------------------

def fused_bn(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, gain=None, bias=None,
             eps: float = 1e-5) -> torch.Tensor:
    """Normalize with given statistics and apply gain and bias in one scale-and-shift."""
    scale = torch.rsqrt(var + eps)
    if gain is not None:
        scale = scale * gain
    shift = mean * scale
    if bias is not None:
        shift = shift - bias
    return x * scale - shift


def manual_bn(x: torch.Tensor, gain=None, bias=None, return_mean_var: bool = False,
              eps: float = 1e-5):
    """Batch norm with statistics over (N, H, W) computed in float32 as E[x^2] - E[x]^2 (biased)."""
    float_x = x.float()
    m = torch.mean(float_x, [0, 2, 3], keepdim=True)
    m2 = torch.mean(float_x ** 2, [0, 2, 3], keepdim=True)
    var = (m2 - m ** 2).to(x.dtype)
    m = m.to(x.dtype)
    out = fused_bn(x, m, var, gain, bias, eps)
    if return_mean_var:
        return out, m.squeeze(), var.squeeze()
    return out


class myBN(nn.Module):
    """Batch norm with standing statistics.

    In standing mode (`accumulate_standing`), training-mode forwards add the batch statistics to
    `stored_mean`/`stored_var` and count them in `accumulation_counter`; `finish_standing()`
    turns the sums into averages and leaves standing mode, so later training goes back to the
    momentum update (the original never left standing mode).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer('stored_mean', torch.zeros(num_channels))
        self.register_buffer('stored_var', torch.ones(num_channels))
        self.register_buffer('accumulation_counter', torch.zeros(1))
        self.accumulate_standing = False

    def reset_stats(self) -> None:
        self.stored_mean.zero_()
        self.stored_var.zero_()
        self.accumulation_counter.zero_()

    def finish_standing(self) -> None:
        """Turn accumulated sums into the standing averages and leave standing mode."""
        if self.accumulate_standing and self.accumulation_counter.item() > 0:
            self.stored_mean.div_(self.accumulation_counter)
            self.stored_var.div_(self.accumulation_counter)
        self.accumulation_counter.zero_()
        self.accumulate_standing = False

    def forward(self, x: torch.Tensor, gain=None, bias=None) -> torch.Tensor:
        if self.training:
            out, mean, var = manual_bn(x, gain, bias, return_mean_var=True, eps=self.eps)
            with torch.no_grad():
                if self.accumulate_standing:
                    self.stored_mean.add_(mean.float())
                    self.stored_var.add_(var.float())
                    self.accumulation_counter.add_(1.0)
                else:
                    self.stored_mean.mul_(1 - self.momentum).add_(mean.float() * self.momentum)
                    self.stored_var.mul_(1 - self.momentum).add_(var.float() * self.momentum)
            return out
        mean = self.stored_mean.view(1, -1, 1, 1)
        var = self.stored_var.view(1, -1, 1, 1)
        if self.accumulate_standing:
            mean = mean / self.accumulation_counter
            var = var / self.accumulation_counter
        return fused_bn(x, mean.to(x.dtype), var.to(x.dtype), gain, bias, self.eps)


NORM_STYLES = ('bn', 'in', 'gn', 'nonorm')


def check_norm_style(norm_style: str) -> None:
    """Accept bn, in, nonorm, gn and the group-norm variants gn_ch_<N> / gn_grp_<N>."""
    parts = norm_style.split('_') if isinstance(norm_style, str) else []
    if norm_style in NORM_STYLES or (len(parts) == 3 and parts[0] == 'gn'
                                     and parts[1] in ('ch', 'grp') and parts[2].isdigit()
                                     and int(parts[2]) > 0):
        return
    raise ValueError(f'norm_style={norm_style!r} is not valid; choose one of {list(NORM_STYLES)} '
                     f"or 'gn_ch_<N>' (N channels per group) or 'gn_grp_<N>' (N groups)")


def groupnorm(x: torch.Tensor, norm_style: str) -> torch.Tensor:
    """Group norm without affine: `gn_ch_N` -> groups of N channels, `gn_grp_N` -> N groups,
    plain `gn` -> 16 groups."""
    channels = x.shape[1]
    if norm_style.startswith('gn_ch_'):
        groups = max(channels // int(norm_style.split('_')[-1]), 1)
    elif norm_style.startswith('gn_grp_'):
        groups = int(norm_style.split('_')[-1])
    else:
        groups = 16
    groups = min(groups, channels)
    if channels % groups:
        raise ValueError(f'norm_style={norm_style!r} makes {groups} groups, which does not divide '
                         f'{channels} channels')
    return F.group_norm(x, groups)


def _stat_layer(output_size: int, eps: float, momentum: float, cross_replica: bool,
                mybn: bool) -> Optional[nn.Module]:
    """The child `bn` module holding the statistics, when they do not live in the norm itself."""
    if cross_replica:
        from sync_batchnorm import SynchronizedBatchNorm2d
        return SynchronizedBatchNorm2d(output_size, eps=eps, momentum=momentum, affine=False)
    if mybn:
        return myBN(output_size, eps, momentum)
    return None


class ccbn(nn.Module):
    """Class-conditional batch norm: `BN(x) * (1 + W_g(y)) + W_b(y)`.

    `which_linear` maps the conditioning vector (or, without a shared embedding, the class index
    through an `nn.Embedding`) to per-channel gains and biases. Statistics live in
    `stored_mean`/`stored_var` or, with `mybn`/`cross_replica`, in the child `bn`.
    """

    def __init__(self, output_size: int, input_size: int, which_linear: Callable,
                 eps: float = 1e-5, momentum: float = 0.1, cross_replica: bool = False,
                 mybn: bool = False, norm_style: str = 'bn'):
        super().__init__()
        check_norm_style(norm_style)
        self.output_size, self.input_size = output_size, input_size
        self.gain = which_linear(input_size, output_size)
        self.bias = which_linear(input_size, output_size)
        self.eps = eps
        self.momentum = momentum
        self.cross_replica = cross_replica
        self.mybn = mybn
        self.norm_style = norm_style
        self.bn = _stat_layer(output_size, eps, momentum, cross_replica, mybn)
        if self.bn is None and norm_style in ('bn', 'in'):
            self.register_buffer('stored_mean', torch.zeros(output_size))
            self.register_buffer('stored_var', torch.ones(output_size))

    @staticmethod
    def _condition(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Embedding) and y.is_floating_point():
            # Soft class vectors (interpolated one-hots) mix the per-class rows.
            return y @ layer.weight
        return layer(y)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain = (1 + self._condition(self.gain, y)).view(y.size(0), -1, 1, 1)
        bias = self._condition(self.bias, y).view(y.size(0), -1, 1, 1)
        if self.bn is not None:
            return self.bn(x, gain=gain, bias=bias)
        if self.norm_style == 'bn':
            out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, self.training,
                               self.momentum, self.eps)
        elif self.norm_style == 'in':
            out = F.instance_norm(x, self.stored_mean, self.stored_var, None, None,
                                  self.training, self.momentum, self.eps)
        elif self.norm_style == 'nonorm':
            out = x
        else:
            out = groupnorm(x, self.norm_style)
        return out * gain + bias

    def extra_repr(self) -> str:
        return f'out: {self.output_size}, in: {self.input_size}, norm_style={self.norm_style}'


class bn(nn.Module):
    """Plain affine batch norm with `gain`/`bias` parameters (G's output layer)."""

    def __init__(self, output_size: int, eps: float = 1e-5, momentum: float = 0.1,
                 cross_replica: bool = False, mybn: bool = False):
        super().__init__()
        self.output_size = output_size
        self.gain = nn.Parameter(torch.ones(output_size), requires_grad=True)
        self.bias = nn.Parameter(torch.zeros(output_size), requires_grad=True)
        self.eps = eps
        self.momentum = momentum
        self.bn = _stat_layer(output_size, eps, momentum, cross_replica, mybn)
        if self.bn is None:
            self.register_buffer('stored_mean', torch.zeros(output_size))
            self.register_buffer('stored_var', torch.ones(output_size))

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.bn is not None:
            return self.bn(x, gain=self.gain.view(1, -1, 1, 1), bias=self.bias.view(1, -1, 1, 1))
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias,
                            self.training, self.momentum, self.eps)


# ------------------------------------------------------------------------------------------------
# Standing statistics
# ------------------------------------------------------------------------------------------------

def initiate_standing_stats(net: nn.Module) -> None:
    """Reset every `myBN` of `net` and put it in standing mode."""
    for module in net.modules():
        if hasattr(module, 'accumulate_standing'):
            module.reset_stats()
            module.accumulate_standing = True


def accumulate_standing_stats(net: nn.Module, z: torch.Tensor, y: torch.Tensor, n_classes: int,
                              num_accumulations: int = 16,
                              sample_z: Optional[Callable[[torch.Tensor], None]] = None) -> None:
    """Standing statistics (the original's utils.accumulate_standing_stats): average BN
    statistics over `num_accumulations` train-mode
    forwards of fresh noise and classes, then leave `net` in eval mode.

    `z` and `y` are buffers resampled in place; `sample_z(z)` draws the noise (default N(0, 1); a
    truncation sweep passes its own, which the original ignored). Without `--mybn` only the
    momentum running statistics move, as in the original.
    """
    initiate_standing_stats(net)
    net.train()
    with torch.no_grad():
        for _ in range(num_accumulations):
            if sample_z is None:
                z.normal_()
            else:
                sample_z(z)
            y.random_(0, n_classes)
            net(z, net.shared(y))
    for module in net.modules():
        if isinstance(module, myBN):
            module.finish_standing()
    net.eval()


# ------------------------------------------------------------------------------------------------
# BigGAN residual blocks
# ------------------------------------------------------------------------------------------------

class GBlock(nn.Module):
    """BigGAN G block: BN-act-(up)-conv3x3-BN-act-conv3x3, plus a 1x1 shortcut when the channel
    count changes or the block upsamples. Upsampling and conv1 run as one transposed convolution
    and the shortcut conv runs before the upsampling (resample.py: the same numbers, 4/9 and 1/4
    of the work)."""

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable = nn.Conv2d,
                 which_bn: Callable = bn, activation: Optional[nn.Module] = None,
                 upsample: Optional[Callable] = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation = activation
        self.upsample = upsample
        self.conv1 = which_conv(in_channels, out_channels)
        self.conv2 = which_conv(out_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or upsample is not None
        if self.learnable_sc:
            self.conv_sc = which_conv(in_channels, out_channels, kernel_size=1, padding=0)
        self.bn1 = which_bn(in_channels)
        self.bn2 = which_bn(out_channels)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # The original upsamples, then convolves; a 1x1 conv commutes with the upsampling.
        conv_first = self.learnable_sc and resample.pointwise(self.conv_sc)
        if conv_first:
            x = self.conv_sc(x)
        if self.upsample is not None:
            x = self.upsample(x)
        if self.learnable_sc and not conv_first:
            x = self.conv_sc(x)
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.bn1(x, y))
        if resample.fusable_upsample(h, self.conv1, self.upsample):
            h = resample.upsample_conv(h, self.conv1)
        else:
            h = self.conv1(h if self.upsample is None else self.upsample(h))
        h = self.conv2(self.activation(self.bn2(h, y)))
        return h + self.shortcut(x)


class DBlock(nn.Module):
    """BigGAN D block: (ReLU)-conv3x3-act-conv3x3-(avgpool), plus a 1x1 shortcut.

    `wide` makes the hidden width out_channels (else in_channels, the SN-GAN pattern). The first
    block of D is not pre-activated and pools before its shortcut conv (the "optimized" block).
    conv2 and the pooling run as one strided convolution, and the shortcut conv always after the
    pooling (resample.py: the same numbers, 4/9 and 1/4 of the work).
    """

    def __init__(self, in_channels: int, out_channels: int, which_conv: Callable = SNConv2d,
                 wide: bool = True, preactivation: bool = False,
                 activation: Optional[nn.Module] = None, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_channels = out_channels if wide else in_channels
        self.preactivation = preactivation
        self.activation = activation
        self.downsample = downsample
        self.conv1 = which_conv(in_channels, self.hidden_channels)
        self.conv2 = which_conv(self.hidden_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or downsample is not None
        if self.learnable_sc:
            self.conv_sc = which_conv(in_channels, out_channels, kernel_size=1, padding=0)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # The original's pre-activated blocks convolve, then pool; a 1x1 conv commutes with the
        # pooling, so every block pools first where the conv is 1x1.
        conv_first = (self.learnable_sc and self.preactivation
                      and not resample.pointwise(self.conv_sc))
        if conv_first:
            x = self.conv_sc(x)
        if self.downsample is not None:
            x = self.downsample(x)
        if self.learnable_sc and not conv_first:
            x = self.conv_sc(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out-of-place ReLU whatever D_nl says: x is still needed by the shortcut.
        h = F.relu(x) if self.preactivation else x
        h = self.activation(self.conv1(h))
        if resample.fusable_avgpool(h, self.conv2, self.downsample):
            h = resample.conv_avgpool(h, self.conv2)
        else:
            h = self.conv2(h)
            if self.downsample is not None:
                h = self.downsample(h)
        return h + self.shortcut(x)


# Residual blocks by name, for --G_block / --D_block ('' keeps the model's own: these for BigGAN,
# the bottleneck blocks of BigGANdeep.py for BigGAN-deep). A G block is called as
# `block(in_channels, out_channels, which_conv=, which_bn=, activation=, upsample=)` and run as
# `block(x, y)`; a D block as `block(in_channels, out_channels, which_conv=, wide=,
# preactivation=, activation=, downsample=)` and run as `block(x)`.
G_BLOCKS = {'GBlock': GBlock}
D_BLOCKS = {'DBlock': DBlock}


def get_block(block: Union[str, Callable, None], table: dict, own: Callable,
              arg: str) -> Callable:
    """The block class (or partial) `block` names: '' or None -> `own`, a name -> its entry of
    `table`, anything callable -> itself."""
    if not block:
        return own
    if isinstance(block, str):
        check_choice(arg, block, list(table))
        return table[block]
    if not callable(block):
        raise ValueError(f'{arg}={block!r} is neither a block name nor a block class')
    return block
