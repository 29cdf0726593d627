"""datasets.py's class-balanced subsets (--data_fraction, --num_samples, --subset_seed): the
indices drawn, their size, and the loaders over them (ranks, resume)."""
import h5py
import numpy as np
import pytest
import torch

import datasets
from data_helpers import FOLDER_LABELS, make_image_folder, write_hdf5


def _unbalanced_labels(seed: int = 0) -> np.ndarray:
    """100 labels: 50 of class 0, 30 of class 2, 15 of class 5, 5 of class 7, shuffled."""
    labels = np.repeat([0, 2, 5, 7], [50, 30, 15, 5])
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize('size', [1, 7, 33, 50, 99, 100])
def test_subset_indices_size_order_and_balance(size):
    labels = _unbalanced_labels()
    chosen = datasets.subset_indices(labels, size, seed=3)
    assert chosen.dtype.kind == 'i' and len(chosen) == size
    assert (np.diff(chosen) > 0).all()  # sorted, unique
    assert chosen.min() >= 0 and chosen.max() < len(labels)
    for cls, count in zip(*np.unique(labels, return_counts=True)):
        share = count * size / len(labels)
        kept = int((labels[chosen] == cls).sum())
        assert np.floor(share) <= kept <= np.ceil(share), (cls, kept, share)


def test_subset_indices_ties_and_exact_quotas():
    labels = _unbalanced_labels()
    # 33: shares 16.5, 9.9, 4.95, 1.65 -> floors 16, 9, 4, 1 (30); the 3 largest remainders
    # (0.95, 0.9, 0.65) round up.
    chosen = datasets.subset_indices(labels, 33, seed=0)
    assert [int((labels[chosen] == c).sum()) for c in (0, 2, 5, 7)] == [16, 10, 5, 2]
    # Two classes of 3 and a share of 1 to give: the tie goes to the smaller class number.
    labels = np.array([1, 1, 1, 0, 0, 0])
    chosen = datasets.subset_indices(labels, 1, seed=0)
    assert labels[chosen].tolist() == [0]


def test_subset_indices_follow_the_seed_alone():
    labels = _unbalanced_labels()
    one = datasets.subset_indices(labels, 20, seed=5)
    assert np.array_equal(one, datasets.subset_indices(labels.copy(), 20, seed=5))
    np.random.seed(123)  # the global RNG plays no part
    torch.manual_seed(123)
    assert np.array_equal(one, datasets.subset_indices(labels, 20, seed=5))
    assert not np.array_equal(one, datasets.subset_indices(labels, 20, seed=6))
    # Within a class, the subset is drawn at random, not the first items.
    first = np.sort(np.concatenate([np.flatnonzero(labels == c)[:k]
                                    for c, k in ((0, 10), (2, 6), (5, 3), (7, 1))]))
    assert not np.array_equal(one, first)


def test_subset_size():
    assert datasets.subset_size(24, 0.5) == 12
    assert datasets.subset_size(24, 1.0) == 24
    assert datasets.subset_size(24, 0.1) == 2  # 2.4
    assert datasets.subset_size(24, 0.001) == 1  # at least one image
    assert datasets.subset_size(24, 1.0, num_samples=10) == 10
    assert datasets.subset_size(24, 1.0, num_samples=24) == 24
    with pytest.raises(ValueError, match='--num_samples 25'):
        datasets.subset_size(24, 1.0, num_samples=25)


def test_labels_of(tmp_path):
    class Targets(torch.utils.data.Dataset):
        targets = [2, 0, 1]
    assert datasets.labels_of(Targets()).tolist() == [2, 0, 1]
    folder = datasets.ImageFolder(make_image_folder(str(tmp_path / 'folder')))
    assert datasets.labels_of(folder).tolist() == FOLDER_LABELS
    with pytest.raises(TypeError, match='no labels'):
        datasets.labels_of(torch.utils.data.TensorDataset(torch.zeros(3)))


# ------------------------------------------------------------------------------------------------
# Loaders
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """An HDF5 file of 30 distinct random images: 15 of class 0, 9 of class 1, 6 of class 2."""
    path = str(tmp_path_factory.mktemp('subsets') / 'uneven.hdf5')
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8)
    labels = rng.permutation(np.repeat(np.arange(3), [15, 9, 6])).astype(np.int64)
    write_hdf5(path, imgs, labels)
    with h5py.File(path, 'r') as f:
        assert np.array_equal(f['labels'][:], labels)
    return path, imgs, labels


def _loader(path, **kwargs):
    args = dict(batch_size=3, num_workers=0, pin_memory=False, shuffle=True, seed=0,
                data_fraction=0.5, subset_seed=4)
    args.update(kwargs)
    return datasets.get_data_loaders('HDF5', path, **args)[0]


def _sources(batches, imgs):
    """The file index of every image the batches hold (each image of the file is distinct)."""
    flat = torch.from_numpy(imgs).float().div(255).sub(0.5).mul(2).flatten(1)
    found = []
    for x, y in batches:
        for image in x.flatten(1):
            match = (flat == image).all(1).nonzero().flatten()
            assert len(match) == 1
            found.append(int(match[0]))
    return found


def test_loader_over_the_subset(data):
    path, imgs, labels = data
    loader = _loader(path)
    subset = datasets.subset_indices(labels, 15, seed=4)
    assert len(loader.dataset) == 15
    assert list(loader.dataset.indices) == subset.tolist()
    batches = list(loader)
    assert len(batches) == 5
    seen = _sources(batches, imgs)
    assert sorted(seen) == subset.tolist()  # one epoch: every image of the subset, once
    assert [int(y) for _, ys in batches for y in ys] == labels[seen].tolist()
    # Class-balanced: shares 7.5, 4.5, 3 -> 8, 4, 3 (the tie to the smaller class).
    assert np.bincount(labels[subset]).tolist() == [8, 4, 3]
    other = _loader(path, subset_seed=5)
    assert len(other.dataset) == 15 and list(other.dataset.indices) != subset.tolist()
    assert len(_loader(path, data_fraction=1.0, num_samples=6).dataset) == 6
    assert len(_loader(path, data_fraction=1.0).dataset) == 30
    with pytest.raises(ValueError, match='--num_samples 31'):
        _loader(path, data_fraction=1.0, num_samples=31)


@pytest.mark.parametrize('multiepoch', [False, True])
def test_two_ranks_share_one_subset(data, multiepoch):
    path, imgs, labels = data
    subset = set(datasets.subset_indices(labels, 12, seed=4).tolist())
    seen = []
    for rank in (0, 1):
        loader = _loader(path, data_fraction=0.4, batch_size=2, rank=rank, world_size=2,
                         use_multiepoch_sampler=multiepoch, num_epochs=1)
        assert list(loader.dataset.indices) == sorted(subset)
        seen.append(_sources(list(loader), imgs))
    assert len(seen[0]) == len(seen[1]) == 6
    assert set(seen[0]).isdisjoint(seen[1])  # one epoch, split between the ranks
    assert set(seen[0]) | set(seen[1]) == subset


@pytest.mark.parametrize('multiepoch', [False, True])
def test_restarted_loader_yields_the_same_later_batches(data, multiepoch):
    path = data[0]

    def passes(loader, count):
        return [batch for _ in range(count) for batch in loader]
    # 15 images, batches of 3: 5 per epoch.
    straight = passes(_loader(path, use_multiepoch_sampler=multiepoch, num_epochs=3),
                      1 if multiepoch else 3)
    assert len(straight) == 15
    for start in (2, 5, 7):
        loader = _loader(path, use_multiepoch_sampler=multiepoch, num_epochs=3,
                         start_itr=start)
        resumed = passes(loader, 1 if multiepoch else 3 - start // 5)
        assert len(resumed) == 15 - start
        for (x, y), (x2, y2) in zip(straight[start:], resumed):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    # Epochs differ in order, and a whole epoch covers the subset.
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(straight[:5], straight[5:10]))
