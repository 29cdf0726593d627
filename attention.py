"""SA-GAN self-attention (the non-local block of BigGAN's G and D at one resolution): the module
`Attention` and its two computations, the original's explicit one and the fused
scaled_dot_product_attention one. Importable from layers.py, as in the original."""
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from spectral_norm import SNConv2d


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
