"""Cross-replica (synchronized) batch norm for torch.distributed, with the original's keys.

The original vendored a DataParallel-only SyncBN; this one synchronizes across DDP processes
(`torchrun`) and keeps the same module name and state_dict keys (`running_mean`, `running_var`,
`num_batches_tracked`), so `--cross_replica` checkpoints load both ways.
"""
from .batchnorm import SynchronizedBatchNorm2d, local_statistics

__all__ = ['SynchronizedBatchNorm2d', 'local_statistics']
