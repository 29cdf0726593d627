"""Exact rewrites of the residual blocks' resampling convolutions: the same numbers (to float
rounding) from fewer multiply-adds, with the layers' own weights, so state_dicts, spectral norm
and checkpoints do not change.

- `upsample_conv(x, conv)`: a 3x3 convolution (padding 1) of the nearest-neighbour 2x upsampled
  x is one stride-2 transposed convolution of x with a 4x4 kernel made of sums of the 3x3 taps:
  4/9 of the multiply-adds, and no upsampled tensor is stored.
- `conv_avgpool(x, conv)`: a 3x3 convolution followed by 2x2 average pooling is one stride-2
  convolution with the 4x4 kernel (the same sums, over 4): 4/9 of the multiply-adds.
- A 1x1 convolution commutes with both resamplings (they act on pixels, it on channels), so the
  blocks apply their shortcut convolutions at the lower resolution: a quarter of the work.
Anything else (another kernel, padding, stride, or resampling) falls back to the plain
formulation, which `fuse = False` also forces (the reference the tests compare against).

The 4x4 kernels are built from the weights: once per weight change where no gradient is wanted
and the layer is in eval mode (sampling, metrics: the kernel is cached on the layer), else at
every call. That build reads and writes the whole weight; for inputs of few positions (batch x
height x width below MIN_POSITIONS: the first blocks at a small batch, as on a CPU) it costs more
than the saved multiply-adds, so there the original formulation runs.
"""
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

fuse = True  # False: every block runs the original formulation
# Input positions from which rebuilding the kernel at each call pays (measured on CPU oneDNN
# and assumed on GPUs, where a batch of 256 passes it at the 4 x 4 of the first block).
MIN_POSITIONS = 1024


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """x2 nearest-neighbour upsampling used by every G block."""
    return F.interpolate(x, scale_factor=2)


def _weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight the layer convolves with (spectrally normalized for SN layers: one power
    iteration, as its own forward would run)."""
    return conv.W_() if hasattr(conv, 'W_') else conv.weight


def _is_conv(conv, kernel: int, padding: int) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (kernel, kernel)
            and conv.padding == (padding, padding) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == 'zeros')


def _sum_of_shifts(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) -> (O, I, 4, 4): the sum of the kernel shifted by 0 or 1 in each axis."""
    return (F.pad(weight, (0, 1, 0, 1)) + F.pad(weight, (1, 0, 0, 1))
            + F.pad(weight, (0, 1, 1, 0)) + F.pad(weight, (1, 0, 1, 0)))


def _cached(conv: nn.Module) -> bool:
    """Whether the layer's fused kernel can be kept: no gradient wanted, and in eval mode (SN
    then moves no vector, so the kernel changes only with the weights)."""
    return not torch.is_grad_enabled() and not conv.training


def _worth_it(x: torch.Tensor, conv: nn.Module) -> bool:
    return _cached(conv) or x.shape[0] * x.shape[2] * x.shape[3] >= MIN_POSITIONS


def fusable_upsample(x: torch.Tensor, conv, upsample: Optional[Callable]) -> bool:
    return (fuse and upsample is upsample_nearest and _is_conv(conv, 3, 1)
            and _worth_it(x, conv))


def fusable_avgpool(x: torch.Tensor, conv, downsample: Optional[nn.Module]) -> bool:
    return (fuse and isinstance(downsample, nn.AvgPool2d) and _is_conv(conv, 3, 1)
            and downsample.kernel_size in (2, (2, 2)) and downsample.stride in (2, (2, 2))
            and downsample.padding in (0, (0, 0)) and not downsample.ceil_mode
            and _worth_it(x, conv))


def pointwise(conv) -> bool:
    """A 1x1 convolution without padding: it commutes with nearest upsampling and pooling."""
    return fuse and _is_conv(conv, 1, 0)


def upsample_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(upsample_nearest(x)) for a 3x3 convolution with padding 1.

    Output row 2i + a reads upsampled rows 2i + a - 1 .. 2i + a + 1, which are input rows
    {i - 1, i, i} (a = 0) or {i, i, i + 1} (a = 1): per axis the taps fold into the kernel
    [w2, w1 + w2, w0 + w1, w0] of a stride-2 transposed convolution with padding 1, which is
    the flipped sum of shifts.
    """
    n, _, h, w = x.shape
    return _apply(conv, x, 'up', lambda wt: torch.flip(_sum_of_shifts(wt), (2, 3)).transpose(0, 1),
                  lambda k, b: F.conv_transpose2d(x, k, b, stride=2, padding=1),
                  n * conv.out_channels * 4 * h * w)


def conv_avgpool(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """avg_pool2d(conv(x), 2) for a 3x3 convolution with padding 1: output pixel i averages
    conv rows 2i, 2i + 1, which read input rows 2i - 1 .. 2i + 2 with the taps summed as in
    `_sum_of_shifts`."""
    n, _, h, w = x.shape
    return _apply(conv, x, 'pool', lambda wt: _sum_of_shifts(wt) / 4,
                  lambda k, b: F.conv2d(x, k, b, stride=2, padding=1),
                  n * conv.out_channels * (h // 2) * (w // 2))


def _apply(conv: nn.Conv2d, x: torch.Tensor, kind: str, build: Callable, run: Callable,
           out_numel: int) -> torch.Tensor:
    """`run(build(weight), bias)` with the layer's weight: normalized for SN layers (which may
    divide the output by sigma instead, spectral_norm.py). Where `_cached` holds, the built
    kernel is kept on the layer while nothing it depends on changed (the weights' and SN
    vectors' version counters, the autocast dtype, the layout)."""
    if not _cached(conv) or torch.compiler.is_compiling():
        if hasattr(conv, 'normalized'):
            return conv.normalized(lambda w, b: run(build(w), b), out_numel)
        return run(build(conv.weight), conv.bias)
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(
        x.device.type) else conv.weight.dtype
    layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
              and not x.is_contiguous() else torch.contiguous_format)
    key = (kind, conv.weight.data_ptr(), conv.weight._version, dtype, layout,
           tuple(u._version for u in getattr(conv, 'u', ())))
    cache = conv.__dict__.get('_fused_kernel')
    if cache is None or cache[0] != key:
        # Cast here, once: autocast would cast the cached float32 kernel at every call.
        kernel = build(_weight(conv)).to(dtype).contiguous(memory_format=layout)
        conv.__dict__['_fused_kernel'] = cache = (key, kernel)
    return run(cache[1], conv.bias)
