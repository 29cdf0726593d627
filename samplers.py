"""Resumable index samplers: seeded per-epoch orders, the multi-epoch stream, DDP sharding.

Epoch e's order comes from its own ``torch.Generator`` seeded from ``(seed, e)``, never from the
global RNG. A run resumed at iteration k can therefore recompute exactly which epoch and which
offset it had reached and carry on with the batches an uninterrupted run would have seen.

Both samplers count in indices of one rank. With ``world_size > 1`` every rank takes a disjoint
``1/world_size`` slice (a stride) of the same epoch permutation; the last ``n % world_size``
indices of each permutation are left out so that every rank sees the same number of batches
(a rank with one batch more would hang the others in DDP).
"""
from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch.utils.data import Sampler

# ---------------------------------------------------------------------------------------------
# Epoch permutations


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch's order, a 32-bit hash of ``(seed, epoch)``.

    torch's CPU generator keeps only the low 32 bits of a seed, so ``seed`` and ``epoch`` are
    mixed (numpy's SeedSequence) rather than packed; and runs with seeds 0 and 1 do not see
    the same orders shifted by one epoch, as plain ``seed + epoch`` would give.
    """
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1)[0])


def epoch_indices(n: int, epoch: int, seed: int = 0, shuffle: bool = True,
                  rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The indices rank ``rank`` visits in epoch ``epoch``, in order (n // world_size of them)."""
    if shuffle:
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    per_rank = n // world_size
    return order[rank:per_rank * world_size:world_size]


def check_shard(rank: int, world_size: int) -> None:
    """Raise ValueError unless ``0 <= rank < world_size``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} / world_size {world_size}: need world_size >= 1 and '
                         f'0 <= rank < world_size')


def _per_rank_length(data_source: Sized, world_size: int, batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f'batch_size must be at least 1, got {batch_size}')
    per_rank = len(data_source) // world_size
    if per_rank == 0:
        raise ValueError(f'the dataset has {len(data_source)} items, fewer than world_size '
                         f'{world_size}: every rank needs at least one')
    return per_rank

# ---------------------------------------------------------------------------------------------
# One epoch per pass (the plain loader)


class EpochSampler(Sampler[int]):
    """Yields one epoch per pass; a run resumed at ``start_itr`` first gets the rest of its epoch.

    With ``B = batch_size`` and ``bpe`` batches per epoch (``m // B`` with ``drop_last``, else
    ``ceil(m / B)``, ``m`` = indices per rank), iteration ``start_itr`` lies in epoch
    ``start_itr // bpe`` after ``start_itr % bpe`` of its batches. The first pass yields epoch
    ``start_itr // bpe`` without those batches; every later pass yields the next whole epoch.
    ``len()`` is the length of the next pass. ``set_epoch`` jumps to the start of an epoch.
    """

    def __init__(self, data_source: Sized, batch_size: int, shuffle: bool = True, seed: int = 0,
                 start_itr: int = 0, drop_last: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        check_shard(rank, world_size)
        if start_itr < 0:
            raise ValueError(f'start_itr must be >= 0, got {start_itr}')
        self.n = len(data_source)
        self.per_rank = _per_rank_length(data_source, world_size, batch_size)
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        if drop_last:
            self.batches_per_epoch = self.per_rank // batch_size
        else:
            self.batches_per_epoch = -(-self.per_rank // batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f'{self.per_rank} items per rank make no full batch of {batch_size}'
                             ' with drop_last: lower --batch_size or keep the short batch')
        self.epoch, skipped_batches = divmod(start_itr, self.batches_per_epoch)
        self._skip = skipped_batches * batch_size

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass yield the whole of epoch ``epoch``."""
        self.epoch, self._skip = epoch, 0

    def __len__(self) -> int:
        return self.per_rank - self._skip

    def __iter__(self) -> Iterator[int]:
        indices = epoch_indices(self.n, self.epoch, self.seed, self.shuffle, self.rank,
                                self.world_size)[self._skip:]
        # Advance now, not when the pass ends: a pass cut short still counts as its epoch.
        self.epoch, self._skip = self.epoch + 1, 0
        return iter(indices.tolist())

# ---------------------------------------------------------------------------------------------
# The multi-epoch stream (--use_multiepoch_sampler)


class MultiEpochSampler(Sampler[int]):
    """``num_epochs`` epochs in one pass, resumable at any iteration.

    The stream is epoch 0's permutation, then epoch 1's, ... up to ``num_epochs`` epochs, cut
    to whole batches of ``batch_size`` (the final short batch is dropped: the training step
    splits each batch into ``num_D_steps x num_D_accumulations`` equal chunks). Batches may
    straddle epoch boundaries. A sampler made with ``start_itr = k`` yields the stream from
    batch k on, so its batches equal those of an uninterrupted run from iteration k.

    Fixes of the original: ``len()`` is never negative (0 once the stream is used up); the
    order does not depend on the global RNG; skipping to ``start_itr`` computes its epoch and
    offset instead of drawing every earlier permutation; and one pass holds all epochs, after
    which the sampler is spent, so a training loop that re-iterates the loader once per epoch
    (as the original's does) gets empty passes instead of ``num_epochs**2`` epochs.
    """

    def __init__(self, data_source: Sized, num_epochs: int, start_itr: int = 0,
                 batch_size: int = 128, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        check_shard(rank, world_size)
        if num_epochs < 0 or start_itr < 0:
            raise ValueError(f'num_epochs ({num_epochs}) and start_itr ({start_itr}) must be '
                             '>= 0')
        self.n = len(data_source)
        self.per_rank = _per_rank_length(data_source, world_size, batch_size)
        self.batch_size, self.seed, self.rank, self.world_size = (batch_size, seed, rank,
                                                                  world_size)
        total_batches = num_epochs * self.per_rank // batch_size
        self.start_itr = min(start_itr, total_batches)
        self._remaining = (total_batches - self.start_itr) * batch_size

    def __len__(self) -> int:
        return self._remaining

    def __iter__(self) -> Iterator[int]:
        remaining, self._remaining = self._remaining, 0
        return self._stream(self.start_itr * self.batch_size, remaining)

    def _stream(self, start: int, count: int) -> Iterator[int]:
        epoch, offset = divmod(start, self.per_rank)
        while count > 0:
            # One epoch in memory at a time: ImageNet x 500 epochs would not fit.
            chunk = epoch_indices(self.n, epoch, self.seed, True, self.rank,
                                  self.world_size)[offset:offset + count]
            yield from chunk.tolist()
            count -= len(chunk)
            epoch, offset = epoch + 1, 0
