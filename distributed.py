"""How training runs on one device or many: the process group under torchrun, rank helpers,
the speed flags' checks, and the wrapping of G and D for torch.compile, DDP or DataParallel.

One process per device. `setup(config)` joins the process group when torchrun started several
processes (WORLD_SIZE > 1) and returns this process's device; `teardown()` leaves it. Every
rank holds the same weights (DDP averages the gradients), only rank 0 writes files.

`wrap_for_training` builds what the training step calls: G (with its shared embedding) and D as
two separate units, each compiled with `--compile` and then wrapped in DDP, joined by
`TrainingGD`, which runs G then D as the original's `G_D` does. G runs without gradients in the
D step, and D is frozen in the G step; wrapping the two nets separately lets each DDP wrapper
see only the backward passes whose gradients it averages. The plain G and D stay untouched, so
checkpoints, EMA, sampling and the optimizers keep working on the plain modules' keys.
"""
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

import utils

_OWNED_GROUP = False  # True when setup() created the process group (then teardown ends it)


# ------------------------------------------------------------------------------------------------
# Process group and ranks
# ------------------------------------------------------------------------------------------------

def world_size() -> int:
    """Number of processes in the default group; 1 without torch.distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank; 0 without torch.distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes logs, checkpoints and samples."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if world_size() > 1:
        dist.barrier()


def setup(config: dict) -> torch.device:
    """Join the process group when launched with several processes and return this process's
    device: `cuda:LOCAL_RANK` on GPUs (NCCL), the CPU with gloo. A group someone else created
    (a test, a notebook) is used as it is."""
    global _OWNED_GROUP
    device = utils.get_device(config)
    processes = int(os.environ.get('WORLD_SIZE', '1'))
    if processes <= 1 and not dist.is_initialized():
        return device
    if device.type == 'cuda':
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f'LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} '
                             f'GPUs are visible: give torchrun --nproc_per_node at most that')
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        dist.init_process_group(backend, device_id=device if device.type == 'cuda' else None)
        _OWNED_GROUP = True
    return device


def teardown(wait: bool = True) -> None:
    """Leave the process group if `setup` joined it; with `wait`, once every rank is done (a
    rank that left early would break the others' last collective). After an error, leave at
    once, so that torchrun sees the failure and stops the other ranks."""
    global _OWNED_GROUP
    if _OWNED_GROUP and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _OWNED_GROUP = False


def broadcast_states(*modules: Optional[nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every rank (the same start everywhere, even
    where initialization drew different random numbers)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for module in modules:
            if module is None:
                continue
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor, 0)


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The average of `x` over all processes (a new tensor; `x` itself in one process)."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is true on at least one (one small all-reduce)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# ------------------------------------------------------------------------------------------------
# Training noise
# ------------------------------------------------------------------------------------------------

class ShardedNoise:
    """Training noise for one rank: draws the whole (all ranks) batch from one CPU sampler and
    keeps this rank's slice, so every rank's sampler state is the same (any rank's checkpoint
    resumes every rank) and N processes see exactly the noise of one process with N times
    the batch. The draws go through pinned memory, so the copy to the GPU does not wait for
    the work queued before it."""

    def __init__(self, sampler, device: torch.device, rank: int = 0, world: int = 1):
        self.sampler, self.device, self.rank, self.world = sampler, device, rank, world

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == 'cuda':
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def sample(self, n: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        n = n or self.sampler.batch_size
        z, y = self.sampler.sample(n * self.world)
        part = slice(self.rank * n, (self.rank + 1) * n)
        return self._to_device(z[part]), self._to_device(y[part])

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# The units compile and DDP wrap, and the fused forward built from them
# ------------------------------------------------------------------------------------------------

class ConditionedG(nn.Module):
    """`G(z, G.shared(y))` as one forward taking class labels: the shared embedding runs inside
    the wrapped forward, so DDP and compile see it like any other G parameter."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.G(z, self.G.shared(y))


class PairedD(nn.Module):
    """D on the fakes and, when given, the reals, in one forward (DDP expects one forward per
    backward): one concatenated batch, or two calls with `split_D`, as the original's G_D."""

    def __init__(self, D: nn.Module):
        super().__init__()
        self.D = D

    def forward(self, G_z: torch.Tensor, gy: torch.Tensor, x: Optional[torch.Tensor] = None,
                dy: Optional[torch.Tensor] = None, split_D: bool = False):
        if x is None:
            return self.D(G_z, gy)
        if split_D:
            return self.D(G_z, gy), self.D(x, dy)
        out = self.D(torch.cat([G_z, x], 0), torch.cat([gy, dy], 0))
        return torch.split(out, [G_z.shape[0], x.shape[0]])


class TrainingGD(nn.Module):
    """The fused G-then-D forward of the training step (the original's `G_D`, same results),
    built from a `ConditionedG` and a `PairedD` that may be compiled or DDP-wrapped.

    `train_G=False` runs G without gradients (the D step). Returns (D_fake, D_real) when reals
    are given, else D's output on the fakes.
    """

    def __init__(self, G_unit: nn.Module, D_unit: nn.Module):
        super().__init__()
        self.G_unit, self.D_unit = G_unit, D_unit

    def forward(self, z: torch.Tensor, gy: torch.Tensor, x: Optional[torch.Tensor] = None,
                dy: Optional[torch.Tensor] = None, train_G: bool = False,
                split_D: bool = False):
        with torch.set_grad_enabled(train_G):
            G_z = self.G_unit(z, gy)
        if x is not None and G_z.dtype != x.dtype:
            G_z = G_z.to(x.dtype)
        return self.D_unit(G_z, gy, x, dy, split_D)


@dataclass
class TrainingNets:
    """What the training step runs: the fused forward, and the DDP wrappers (None without
    DDP) whose gradient averaging is skipped on all but the last micro-batch."""
    GD: nn.Module
    G_ddp: Optional[nn.Module] = None
    D_ddp: Optional[nn.Module] = None


def _ddp(module: nn.Module, device: torch.device) -> nn.Module:
    # broadcast_buffers=False: SN's u vectors follow from the weights, which are equal on
    # every rank, so they stay equal without a broadcast per forward; BN running statistics
    # are per rank (each its own shard, as the original's device-0 replica) unless
    # --cross_replica, which computes them from the global batch. Rank 0's are saved.
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == 'cuda' else None,
        broadcast_buffers=False, gradient_as_bucket_view=True)


def wrap_for_training(G: nn.Module, D: nn.Module, config: dict,
                      device: torch.device) -> TrainingNets:
    """Compile (with --compile) the G and D units before any DDP wrapping; DDP under several
    processes; DataParallel with --parallel in one process that sees several GPUs."""
    G_unit, D_unit = ConditionedG(G), PairedD(D)
    if config.get('compile'):
        # Static shapes: training sees a few batch sizes (D gets fakes and reals together in its
        # step, fakes alone in G's), each worth its own specialized graph.
        mode = config.get('compile_mode', 'default')
        G_unit = torch.compile(G_unit, mode=mode, dynamic=False)
        D_unit = torch.compile(D_unit, mode=mode, dynamic=False)
    if world_size() > 1:
        if config.get('parallel'):
            utils.main_process_print(f'Note: --parallel under torchrun: each of the '
                                     f'{world_size()} processes drives one device (DDP)')
        G_unit, D_unit = _ddp(G_unit, device), _ddp(D_unit, device)
        return TrainingNets(TrainingGD(G_unit, D_unit), G_unit, D_unit)
    GD = TrainingGD(G_unit, D_unit)
    if not config.get('parallel'):
        return TrainingNets(GD)
    if device.type == 'cuda' and torch.cuda.device_count() > 1:
        # The original's mode: one process splits each batch over every visible GPU.
        print(f'--parallel: DataParallel over {torch.cuda.device_count()} GPUs in one process '
              f'(torchrun with one process per GPU scales better)')
        return TrainingNets(nn.DataParallel(GD))
    print(f'Note: --parallel: one device ({device}) in this process, nothing to split; for '
          f'several GPUs launch torchrun --nproc_per_node N train.py ...')
    return TrainingNets(GD)


# ------------------------------------------------------------------------------------------------
# Flag checks that need the device
# ------------------------------------------------------------------------------------------------

def _compiler_problem(device: torch.device) -> Optional[str]:
    """Why torch.compile cannot run here, or None."""
    import torch._dynamo
    if not torch._dynamo.is_dynamo_supported():
        return f'torch.compile does not support this Python ({sys.version.split()[0]})'
    if device.type == 'cuda':
        from torch.utils._triton import has_triton
        return None if has_triton() else 'torch.compile on GPUs needs Triton (pip install triton)'
    if device.type == 'cpu':
        compilers = [os.environ.get('CXX', ''), 'g++', 'c++', 'clang++']
        if not any(c and shutil.which(c) for c in compilers):
            return 'torch.compile on the CPU needs a C++ compiler (install g++ or set CXX)'
        return None
    return f'torch.compile is not set up for device type {device.type!r}'


def check_flags(config: dict, device: torch.device) -> None:
    """Refuse speed and parallelism flags that cannot work on `device` with a ValueError that
    names the flag and what to use instead."""
    if config['amp'] == 'fp16' and device.type != 'cuda':
        legacy = [f'--{name}' for name in ('G_fp16', 'D_fp16', 'G_mixed_precision',
                                           'D_mixed_precision') if config.get(name)]
        given = ', '.join(legacy) + ' (mapped to --amp fp16)' if legacy else '--amp fp16'
        raise ValueError(f'{given}: float16 with loss scaling needs a CUDA device, this run is '
                         f'on {device}; use --amp bf16 (no loss scaling needed) or --amp none')
    if config.get('compile'):
        problem = _compiler_problem(device)
        if problem:
            raise ValueError(f'--compile: {problem}; drop --compile to train eagerly')
    several_gpus = device.type == 'cuda' and torch.cuda.device_count() > 1
    one_process = max(world_size(), int(os.environ.get('WORLD_SIZE', '1'))) == 1
    if config.get('parallel') and one_process and several_gpus:
        if config.get('compile'):
            raise ValueError('--compile with --parallel (DataParallel in one process) is not '
                             'supported; launch one process per GPU with torchrun instead: '
                             'torchrun --nproc_per_node N train.py ... --compile')
        if config.get('cross_replica'):
            raise ValueError('--cross_replica synchronizes BN across processes, and --parallel '
                             'runs one process; launch with torchrun --nproc_per_node N '
                             'train.py ... --cross_replica instead')
