"""Spectral normalization: the power iteration, the SN mixin (visible `u`/`sv` buffers, the
original's names) and the SN conv, linear and embedding layers.

A layer computes with `weight / sigma` (sigma: the largest tracked singular value). Where its
output has fewer elements than its weight (a small batch, D's deep layers, the linear and
embedding layers) it divides the output by sigma instead: the same numbers to rounding (the
division commutes with the layer's linear map), with one pass over fewer elements forward and
backward. `divide_outputs = False` forces the original order everywhere.
"""
from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

divide_outputs = True


def proj(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Projection of row vector x onto row vector y: (y.x) y / (y.y)."""
    return torch.mm(y, x.t()) * y / torch.mm(y, y.t())


def gram_schmidt(x: torch.Tensor, ys: Sequence[torch.Tensor]) -> torch.Tensor:
    """Remove from x its projection onto every vector of ys."""
    for y in ys:
        x = x - proj(x, y)
    return x


def power_iteration(W: torch.Tensor, u_list: List[torch.Tensor], update: bool = True,
                    eps: float = 1e-12) -> Tuple[list, list, list]:
    """One power-iteration step for each tracked singular pair of the matrix W.

    The vectors are deflated against the ones already computed in this call (Gram-Schmidt), so
    pair i converges to the i-th singular value. u and v are constants for autograd; the singular
    values `v W^T u^T` carry the gradient through W (Miyato et al.). With `update`, the new u's are
    written into the buffers in place.
    """
    us, vs, svs = [], [], []
    for i, u in enumerate(u_list):
        with torch.no_grad():
            v = F.normalize(gram_schmidt(torch.matmul(u, W), vs), eps=eps)
            vs.append(v)
        # v W^T gives both the new u (no gradient) and the singular value v W^T u^T (with
        # it): one pass over W instead of two, the same numbers.
        vW = torch.matmul(v, W.t())
        with torch.no_grad():
            u = F.normalize(gram_schmidt(vW, us), eps=eps)
            us.append(u)
            if update:
                u_list[i].copy_(u)
        svs.append(torch.squeeze(torch.matmul(vW, u.t())))
    return svs, us, vs


class SN:
    """Spectral-norm mixin for a layer with a `weight`.

    Registers buffers `u0, sv0, u1, sv1, ...` (one pair per tracked singular value). `u` is updated
    only in training mode; `sv` holds the latest singular values for logging. The effective weight
    is `weight / sv0`. The power iteration runs in float32 even under autocast, so mixed precision
    does not move sigma.
    """

    def __init__(self, num_svs: int, num_itrs: int, num_outputs: int, transpose: bool = False,
                 eps: float = 1e-12):
        if num_svs < 1 or num_itrs < 1:
            raise ValueError(f'spectral norm needs num_svs >= 1 and num_itrs >= 1, got '
                             f'num_svs={num_svs}, num_itrs={num_itrs}')
        self.num_svs = num_svs
        self.num_itrs = num_itrs
        self.transpose = transpose
        self.eps = eps
        for i in range(num_svs):
            self.register_buffer(f'u{i}', torch.randn(1, num_outputs))
            self.register_buffer(f'sv{i}', torch.ones(1))

    @property
    def u(self) -> List[torch.Tensor]:
        return [getattr(self, f'u{i}') for i in range(self.num_svs)]

    @property
    def sv(self) -> List[torch.Tensor]:
        return [getattr(self, f'sv{i}') for i in range(self.num_svs)]

    def sigma(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(w, sigma): the weight as the power iteration reads it (half types promoted to
        float32) and its largest tracked singular value, after `num_itrs` iterations."""
        weight = self.weight
        w = weight.float() if weight.element_size() < 4 else weight
        with torch.autocast(device_type=weight.device.type, enabled=False):
            if w.dim() == 4 and not w.is_contiguous() and w.is_contiguous(
                    memory_format=torch.channels_last):
                # Columns in (kh, kw, in) order: a view of a channels_last weight, not a copy.
                # u and the singular values do not depend on the order of the columns.
                W_mat = w.permute(0, 2, 3, 1).reshape(w.size(0), -1)
            else:
                W_mat = w.reshape(w.size(0), -1)
            if self.transpose:
                W_mat = W_mat.t()
            # Half-precision u buffers (a model cast with .half()) iterate in float32 too.
            us = [u if u.dtype == w.dtype else u.to(w.dtype) for u in self.u]
            for _ in range(self.num_itrs):
                svs, _, _ = power_iteration(W_mat, us, update=self.training, eps=self.eps)
            if self.training:
                with torch.no_grad():
                    for buffer, u in zip(self.u, us):
                        if buffer is not u:
                            buffer.copy_(u)
                    for sv_buffer, sv in zip(self.sv, svs):
                        sv_buffer.copy_(sv)
        return w, svs[0]

    def W_(self) -> torch.Tensor:
        """The spectrally normalized weight (runs the power iteration)."""
        w, sigma = self.sigma()
        return (w / sigma).to(self.weight.dtype)

    def normalized(self, op: Callable, out_numel: int, channel_dim: int = 1) -> torch.Tensor:
        """`op(weight, bias)` computed with the normalized weight `W_()`: the layer's map (linear
        in the weight) and this layer's bias. For an output of `out_numel` elements, fewer than
        the weight's, the output of the raw weight is divided by sigma and the bias (along
        `channel_dim`) added after."""
        bias = getattr(self, 'bias', None)
        if not (divide_outputs and out_numel < self.weight.numel()):
            return op(self.W_(), bias)
        _, sigma = self.sigma()
        # A 0-dim float32 sigma leaves a half-precision output in its own dtype.
        y = op(self.weight, None) / sigma
        if bias is None:
            return y
        if channel_dim != -1:
            bias = bias.view((-1,) + (1,) * (y.dim() - channel_dim - 1))
        return y + bias.to(y.dtype)


def conv_out_numel(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Elements of conv(x) for an (N, C, H, W) input."""
    size = [x.shape[0], conv.out_channels]
    for i in range(2):
        span = conv.dilation[i] * (conv.kernel_size[i] - 1) + 1
        size.append((x.shape[2 + i] + 2 * conv.padding[i] - span) // conv.stride[i] + 1)
    return size[0] * size[1] * size[2] * size[3]


class SNConv2d(nn.Conv2d, SN):
    """Conv2d with spectral normalization."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0,
                 dilation=1, groups=1, bias: bool = True, num_svs: int = 1, num_itrs: int = 1,
                 eps: float = 1e-12):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias)
        SN.__init__(self, num_svs, num_itrs, out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalized(lambda w, b: F.conv2d(x, w, b, self.stride, self.padding,
                                                     self.dilation, self.groups),
                               conv_out_numel(x, self))


class SNLinear(nn.Linear, SN):
    """Linear layer with spectral normalization."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, num_svs: int = 1,
                 num_itrs: int = 1, eps: float = 1e-12):
        nn.Linear.__init__(self, in_features, out_features, bias)
        SN.__init__(self, num_svs, num_itrs, out_features, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalized(lambda w, b: F.linear(x, w, b),
                               x.numel() // self.in_features * self.out_features, channel_dim=-1)


class SNEmbedding(nn.Embedding, SN):
    """Embedding with spectral normalization of the (num_embeddings x dim) matrix."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                 norm_type: float = 2, scale_grad_by_freq: bool = False, sparse: bool = False,
                 _weight=None, num_svs: int = 1, num_itrs: int = 1, eps: float = 1e-12):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx, max_norm,
                              norm_type, scale_grad_by_freq, sparse, _weight)
        SN.__init__(self, num_svs, num_itrs, num_embeddings, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalized(lambda w, b: F.embedding(x, w),
                               x.numel() * self.embedding_dim, channel_dim=-1)
