"""How training runs on one device or many: the process group under torchrun, the rank helpers
every module uses, the speed flags' checks, and the wrapping of G and D for torch.compile, DDP or
DataParallel.

One process per device. `setup(device)` joins the process group when torchrun started several
processes (WORLD_SIZE > 1) and returns this process's device; `teardown()` leaves it. Every
rank holds the same weights (DDP averages the gradients), only rank 0 writes files.

`wrap_for_training` prepares the fused `BigGAN.G_D` that the training step calls: it compiles
(--compile) and then DDP-wraps its `G` and `D` in place, as two units. G runs without gradients
in the D step, and D is frozen in the G step; wrapping the two nets separately lets each DDP
wrapper see only the backward passes whose gradients it averages. `G_D.forward` stays what
runs; the plain G and D stay untouched, so checkpoints, EMA, sampling and the optimizers keep
working on the plain modules' keys.
"""
import os
import shutil
import sys
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

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


def main_process_print(*args, **kwargs) -> None:
    """print on rank 0 only."""
    if is_main():
        print(*args, **kwargs)
        sys.stdout.flush()


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched with several processes and return this process's
    device (`device` is the one --device names): `cuda:LOCAL_RANK` on GPUs (NCCL), the CPU with
    gloo. A group someone else created (a test, a notebook) is used as it is."""
    global _OWNED_GROUP
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


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over all processes (a new tensor; `x` itself in one process)."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's N_r x ... tensor in rank order (the N_r may differ)."""
    if world_size() == 1:
        return x
    count = torch.tensor([len(x)], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    # all_gather needs equal shapes: pad to the longest, then cut each part back.
    padded = x.new_zeros((int(max(counts)), *x.shape[1:]))
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(n)] for part, n in zip(parts, counts)])


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over all processes, in place; returns it."""
    if world_size() > 1:
        dist.all_reduce(x)
    return x


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is true on at least one (one small all-reduce)."""
    return bool(max_over_ranks(int(flag), device))


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of every process's `value` (one small all-reduce)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([float(value)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


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
# Compile and DDP around the fused forward
# ------------------------------------------------------------------------------------------------

class DDP(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that reads the wrapped net's attributes, as G_D reads
    `self.G.shared` (the shared embedding's gradients are averaged with G's other ones)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _ddp(module: nn.Module, device: torch.device) -> nn.Module:
    # broadcast_buffers=False: SN's u vectors follow from the weights, which are equal on
    # every rank, so they stay equal without a broadcast per forward; BN running statistics
    # are per rank (each its own shard, as the original's device-0 replica) unless
    # --cross_replica, which computes them from the global batch. Rank 0's are saved.
    return DDP(module, device_ids=[device.index] if device.type == 'cuda' else None,
               broadcast_buffers=False, gradient_as_bucket_view=True)


def wrap_for_training(GD: nn.Module, config: dict, device: torch.device) -> nn.Module:
    """Prepare the fused G_D for training and return what the step calls: `GD` itself, whose
    `G` and `D` are, in place, compiled (--compile, static shapes) and then, under several
    processes, DDP-wrapped; or, with --parallel in one process that sees several GPUs,
    DataParallel over `GD` (the original's mode). Compile before DDP: the compiler then sees
    only the models' code, which traces with no graph break (cross-replica BN included);
    compiling DDP itself breaks the graph in DDP's own forward and took 6 times longer to
    compile (measured on the CPU), for all-reduces that overlap the backward."""
    if config.get('compile'):
        # Static shapes: training sees a few batch sizes (D gets fakes and reals together in its
        # step, fakes alone in G's), each worth its own specialized graph.
        mode = config.get('compile_mode', 'default')
        GD.G = torch.compile(GD.G, mode=mode, dynamic=False)
        GD.D = torch.compile(GD.D, mode=mode, dynamic=False)
    if world_size() > 1:
        if config.get('parallel'):
            main_process_print(f'Note: --parallel under torchrun: each of the {world_size()} '
                               f'processes drives one device (DDP)')
        GD.G, GD.D = _ddp(GD.G, device), _ddp(GD.D, device)
        return GD
    if not config.get('parallel'):
        return GD
    if device.type == 'cuda' and torch.cuda.device_count() > 1:
        print(f'--parallel: DataParallel over {torch.cuda.device_count()} GPUs in one process '
              f'(torchrun with one process per GPU scales better)')
        return nn.DataParallel(GD)
    print(f'Note: --parallel: one device ({device}) in this process, nothing to split; for '
          f'several GPUs launch torchrun --nproc_per_node N train.py ...')
    return GD


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
