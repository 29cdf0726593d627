"""Cross-replica BN across 2 processes (gloo) equals BN over the combined batch."""
import os
import tempfile
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from conftest import leave_spawned_worker
from sync_batchnorm import SynchronizedBatchNorm2d


def _worker(rank, world, tmp):
    # Inputs travel by file, not by shared memory, which is scarce on small CI machines.
    x, gain, bias, grad_out = torch.load(os.path.join(tmp, 'inputs'))
    dist.init_process_group('gloo', init_method=f'file://{os.path.join(tmp, "init")}',
                            rank=rank, world_size=world, timeout=timedelta(seconds=120))
    torch.manual_seed(0)
    bn = SynchronizedBatchNorm2d(x.shape[1], affine=False)
    half = x.shape[0] // world
    part = x[rank * half:(rank + 1) * half].clone().requires_grad_(True)
    g = gain[rank * half:(rank + 1) * half]
    b = bias[rank * half:(rank + 1) * half]
    out = bn(part, gain=g, bias=b)
    out.backward(grad_out[rank * half:(rank + 1) * half])
    torch.save({'out': out.detach(), 'grad': part.grad, 'mean': bn.running_mean,
                'var': bn.running_var}, os.path.join(tmp, f'result.{rank}'))
    dist.destroy_process_group()
    leave_spawned_worker()


def test_two_process_sync_bn_equals_full_batch_bn():
    torch.manual_seed(1)
    x = torch.randn(8, 5, 4, 4) * 2 + 1
    gain = torch.rand(8, 5, 1, 1) + 0.5
    bias = torch.randn(8, 5, 1, 1)
    grad_out = torch.randn(8, 5, 4, 4)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save((x, gain, bias, grad_out), os.path.join(tmp, 'inputs'))
        mp.spawn(_worker, args=(2, tmp), nprocs=2)
        parts = [torch.load(os.path.join(tmp, f'result.{r}')) for r in range(2)]

    ref_bn = nn.BatchNorm2d(5, affine=False)
    xr = x.clone().requires_grad_(True)
    ref = ref_bn(xr) * gain + bias
    ref.backward(grad_out)
    torch.testing.assert_close(torch.cat([p['out'] for p in parts]), ref.detach(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p['grad'] for p in parts]), xr.grad,
                               atol=1e-5, rtol=1e-5)
    for p in parts:
        torch.testing.assert_close(p['mean'], ref_bn.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(p['var'], ref_bn.running_var, atol=1e-6, rtol=1e-5)
