"""Samplers: exact resume, multi-epoch length and epochs, seeding, DDP shards, loader wiring."""
import pytest
import torch
from torch.utils.data import DataLoader

import datasets
from data_helpers import random_hdf5
from samplers import EpochSampler, MultiEpochSampler, epoch_indices


def batches(sampler, batch_size, passes=1, drop_last=True):
    """The index batches a DataLoader yields over ``passes`` passes."""
    loader = DataLoader(range(len(sampler.data)), batch_size=batch_size, sampler=sampler,
                        drop_last=drop_last)
    return [b.tolist() for _ in range(passes) for b in loader]


class Indices:
    """A stand-in data set: only its length matters to a sampler."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def multi(n, num_epochs, start_itr, batch_size, **kwargs):
    sampler = MultiEpochSampler(Indices(n), num_epochs, start_itr, batch_size, **kwargs)
    sampler.data = Indices(n)
    return sampler


def epochs(n, batch_size, start_itr, **kwargs):
    sampler = EpochSampler(Indices(n), batch_size, start_itr=start_itr, **kwargs)
    sampler.data = Indices(n)
    return sampler

# ---------------------------------------------------------------------------------------------
# MultiEpochSampler


@pytest.mark.parametrize('n, num_epochs, batch_size', [(10, 3, 4), (12, 2, 4), (7, 5, 3)])
def test_multi_epoch_resume_is_exact(n, num_epochs, batch_size):
    full = batches(multi(n, num_epochs, 0, batch_size), batch_size)
    assert len(full) == num_epochs * n // batch_size  # the short final batch is dropped
    assert all(len(b) == batch_size for b in full)
    for k in range(len(full) + 3):
        resumed = multi(n, num_epochs, k, batch_size)
        assert len(resumed) == max(0, len(full) - k) * batch_size
        assert batches(resumed, batch_size) == full[k:]


def test_multi_epoch_stream_is_num_epochs_permutations():
    n, num_epochs = 10, 3
    stream = list(multi(n, num_epochs, 0, 1))
    assert len(stream) == n * num_epochs
    parts = [stream[e * n:(e + 1) * n] for e in range(num_epochs)]
    assert all(sorted(p) == list(range(n)) for p in parts)
    assert parts[0] != parts[1] != parts[2]


def test_multi_epoch_sampler_is_spent_after_one_pass():
    # The original's epoch loop re-iterated the stream (num_epochs**2 epochs): here the second
    # pass is empty and len() is 0, never negative.
    sampler = multi(10, 3, 0, 4)
    assert len(batches(sampler, 4)) == 7
    assert len(sampler) == 0 and batches(sampler, 4) == []
    assert len(multi(10, 3, 10**6, 4)) == 0


def test_multi_epoch_skips_without_drawing_earlier_epochs():
    # ImageNet x 500 epochs resumed near the end: computed, not materialized (5 GB of indices).
    n, batch_size = 1_281_167, 2048
    total = 500 * n // batch_size
    sampler = MultiEpochSampler(Indices(n), 500, total - 2, batch_size, seed=3)
    assert len(sampler) == 2 * batch_size
    tail = list(sampler)
    start = (total - 2) * batch_size
    epoch, offset = divmod(start, n)
    expected = epoch_indices(n, epoch, seed=3)[offset:offset + 2 * batch_size].tolist()
    assert tail == expected


def test_orders_come_from_the_seed_not_the_global_rng():
    torch.manual_seed(1)
    first = list(multi(10, 2, 0, 1, seed=5))
    torch.manual_seed(2)
    torch.rand(100)
    assert list(multi(10, 2, 0, 1, seed=5)) == first
    assert list(multi(10, 2, 0, 1, seed=6)) != first
    # Neighbouring seeds do not share shifted epochs (as seed + epoch would).
    assert epoch_indices(50, 1, seed=0).tolist() != epoch_indices(50, 0, seed=1).tolist()


@pytest.mark.parametrize('world_size', [2, 3])
def test_ranks_get_disjoint_slices_of_the_same_epoch(world_size):
    n = 10
    per_rank = [epoch_indices(n, 4, seed=1, rank=r, world_size=world_size).tolist()
                for r in range(world_size)]
    assert all(len(p) == n // world_size for p in per_rank)
    flat = sum(per_rank, [])
    assert len(set(flat)) == len(flat)
    assert set(flat) <= set(epoch_indices(n, 4, seed=1).tolist())
    # Each rank's multi-epoch stream is made of its own slices, and resumes exactly too.
    for rank in range(world_size):
        full = batches(multi(n, 4, 0, 2, rank=rank, world_size=world_size), 2)
        assert batches(multi(n, 4, 3, 2, rank=rank, world_size=world_size), 2) == full[3:]
        stream = sum(full, [])
        assert stream[:n // world_size] == epoch_indices(n, 0, 0, True, rank,
                                                         world_size).tolist()
        assert len(stream) == 4 * (n // world_size) // 2 * 2

# ---------------------------------------------------------------------------------------------
# EpochSampler (the plain loader)


@pytest.mark.parametrize('shuffle', [True, False])
@pytest.mark.parametrize('drop_last', [True, False])
def test_epoch_sampler_resume_is_exact(shuffle, drop_last):
    n, batch_size, passes = 10, 3, 4
    full = batches(epochs(n, batch_size, 0, shuffle=shuffle, drop_last=drop_last), batch_size,
                   passes, drop_last)
    per_epoch = n // batch_size if drop_last else -(-n // batch_size)
    assert len(full) == passes * per_epoch
    for k in range(len(full)):
        sampler = epochs(n, batch_size, k, shuffle=shuffle, drop_last=drop_last)
        first_pass_len = per_epoch - k % per_epoch
        loader = DataLoader(range(n), batch_size=batch_size, sampler=sampler,
                            drop_last=drop_last)
        assert len(loader) == first_pass_len
        resumed = [b.tolist() for _ in range(passes - k // per_epoch) for b in loader]
        assert resumed == full[k:]


def test_epoch_sampler_shards_and_resumes_per_rank():
    n, batch_size, world_size = 11, 2, 2
    for rank in range(world_size):
        full = batches(epochs(n, batch_size, 0, seed=4, rank=rank, world_size=world_size),
                       batch_size, passes=3)
        assert len(full) == 3 * (n // world_size // batch_size)
        assert sum(full[:2], []) == epoch_indices(n, 0, 4, True, rank, world_size)[:4].tolist()
        resumed = batches(epochs(n, batch_size, 3, seed=4, rank=rank, world_size=world_size),
                          batch_size, passes=2)
        assert resumed == full[3:]


def test_epoch_sampler_shuffles_each_epoch_and_can_jump():
    sampler = epochs(10, 1, 0, shuffle=True)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first and sampler.epoch == 1
    assert list(epochs(10, 1, 0, shuffle=False)) == list(range(10))


def test_loader_resume_through_get_data_loaders(tmp_path):
    # Labels of this file are the item indices, so batches show the order.
    path = str(tmp_path / 'd.hdf5')
    random_hdf5(path, n=12, n_classes=12)
    common = {'batch_size': 4, 'num_workers': 0, 'seed': 7}
    for options in ({'shuffle': True}, {'use_multiepoch_sampler': True, 'num_epochs': 3}):
        loader = datasets.get_data_loaders('HDF5', path, **common, **options)[0]
        full = [y.tolist() for _ in range(3) for _, y in loader]
        assert len(full) == 9 and sorted(sum(full[:3], [])) == list(range(12))
        for k in (1, 3, 5, 8):
            loader = datasets.get_data_loaders('HDF5', path, start_itr=k, **common, **options)[0]
            resumed = [y.tolist() for _ in range(3) for _, y in loader]
            assert resumed[:len(full) - k] == full[k:]
            if 'use_multiepoch_sampler' in options:
                assert len(resumed) == len(full) - k
