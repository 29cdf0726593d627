"""SynchronizedBatchNorm2d: batch statistics summed over every process of the default group.

Training with more than one process: the per-channel sum, sum of squares and count are
all-reduced (differentiably, so gradients see the global statistics), the input is normalized
with the global biased variance, and the running variance is updated with the unbiased one, as
`nn.BatchNorm2d` does. One process, or eval mode: plain batch norm. In every case the optional
per-sample `gain` and `bias` are applied as `x_hat * gain + bias` (the original added the gain
instead of multiplying outside DataParallel training, which "crippled training").

Inside `local_statistics()` the statistics are this process's own: for work one rank does alone
(rank 0 drawing sample sheets), where a collective would wait for the others forever.
"""
import contextlib
from typing import Iterator, Optional

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn as nn

import distributed


_LOCAL = False  # set by local_statistics()


def _world_size() -> int:
    return 1 if _LOCAL else distributed.world_size()


@contextlib.contextmanager
def local_statistics() -> Iterator[None]:
    """Within this block, training-mode forwards normalize with this process's batch alone."""
    global _LOCAL
    previous, _LOCAL = _LOCAL, True
    try:
        yield
    finally:
        _LOCAL = previous


def _sum_over_processes(x: torch.Tensor) -> torch.Tensor:
    """A differentiable sum over every process (its gradient is the same sum of the gradients).
    Through the functional collectives where they carry autograd (PyTorch 2.6 on): torch.compile
    traces them into the graph, with no graph break; else through torch.distributed.nn."""
    if hasattr(funcol, 'all_reduce_backward'):
        return funcol.wait_tensor(funcol.all_reduce(x, 'sum', dist.group.WORLD))
    from torch.distributed.nn.functional import all_reduce
    return all_reduce(x)


class SynchronizedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span all processes; forward takes gain and bias."""

    def forward(self, input: torch.Tensor, gain: Optional[torch.Tensor] = None,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.training and _world_size() > 1:
            out = self._synchronized(input)
        else:
            out = super().forward(input)
        if gain is not None:
            out = out * gain
        if bias is not None:
            out = out + bias
        return out

    def _synchronized(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        count = torch.full((1,), x.numel() // x.size(1), dtype=torch.float32, device=x.device)
        packed = torch.cat([x32.sum([0, 2, 3]), (x32 * x32).sum([0, 2, 3]), count])
        packed = _sum_over_processes(packed)
        c = x.size(1)
        total = packed[-1]
        mean = packed[:c] / total
        var = (packed[c:2 * c] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                # A tensor, not a float: reading the counter back would wait for the device
                # (and break a compiled graph).
                momentum = (1.0 / self.num_batches_tracked if self.momentum is None
                            else self.momentum)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(mean * momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased * momentum)
        scale = torch.rsqrt(var + self.eps)
        out = (x32 - mean.view(1, c, 1, 1)) * scale.view(1, c, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return out.to(x.dtype)
