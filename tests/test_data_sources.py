"""Fashion-MNIST (the default data set) and CIFAR through torchvision."""
import gzip
import pickle

import numpy as np
import pytest
import torch
import torchvision

import datasets
from data_helpers import write_fmnist
from data_sources import FMNIST_SYSTEM_DIR, has_fmnist

HINT = 'apt-get install dataset-fashion-mnist'


def _fmnist_arrays(n=20):
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (n, 28, 28), dtype=np.uint8)  # no black: padding shows
    return images, np.arange(n) % 10


def test_fmnist_from_the_debian_package():
    if not has_fmnist(FMNIST_SYSTEM_DIR):
        pytest.skip(f'Fashion-MNIST is not installed: {HINT} (as root)')
    loader = datasets.get_data_loaders('FMNIST', batch_size=2000, num_workers=0, shuffle=False,
                                       drop_last=False)[0]
    count, per_class = 0, torch.zeros(10, dtype=torch.long)
    for x, y in loader:
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
        assert (x[:, :, :2] == -1).all() and (x[:, :, :, -2:] == -1).all()  # black padding
        count += len(x)
        per_class += torch.bincount(y, minlength=10)
    assert count == 60000
    assert per_class.tolist() == [6000] * 10


@pytest.mark.parametrize('sub', ['', 'fashion-mnist'])
def test_fmnist_files_in_data_root(tmp_path, sub):
    images, labels = _fmnist_arrays()
    write_fmnist(str(tmp_path / sub), images, labels)
    loader = datasets.get_data_loaders('FMNIST', str(tmp_path), batch_size=20, num_workers=0,
                                       shuffle=False)[0]
    x, y = next(iter(loader))
    assert y.tolist() == labels.tolist()
    expected = (torch.from_numpy(images).float() / 255 - 0.5) * 2
    assert torch.equal(x[:, :, 2:30, 2:30], expected[:, None].expand(-1, 3, -1, -1))
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, :, border] == -1).all()


def test_fmnist_augment_pads_black_and_keeps_range(tmp_path):
    images, labels = _fmnist_arrays()
    write_fmnist(str(tmp_path), images, labels)
    x, _ = next(iter(datasets.get_data_loaders('FMNIST', str(tmp_path), augment=True,
                                               batch_size=20, num_workers=0)[0]))
    assert x.shape == (20, 3, 32, 32) and x.min() >= -1 and x.max() <= 1


def test_fmnist_missing_gives_the_install_hint(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        datasets.get_data_loaders('FMNIST', str(tmp_path))
    message = str(err.value)
    assert HINT in message and '--data_root' in message and str(tmp_path) in message


def test_fmnist_corrupt_file_is_named(tmp_path):
    images, labels = _fmnist_arrays()
    write_fmnist(str(tmp_path), images, labels)
    with gzip.open(tmp_path / 'train-labels-idx1-ubyte.gz', 'wb') as f:
        f.write(b'\x00\x00\x08\x03junk')
    with pytest.raises(ValueError, match='train-labels-idx1-ubyte.gz'):
        datasets.get_data_loaders('FMNIST', str(tmp_path))


def test_cifar_missing_without_download_says_where(tmp_path):
    info = datasets.DATASETS['C10']
    with pytest.raises(FileNotFoundError, match=r'cifar-10-batches-py.*cifar-10-python\.tar\.gz'):
        datasets.build_dataset(info, str(tmp_path), download=False)


@pytest.mark.parametrize('name, n_classes', [('C10', 10), ('C100', 100)])
def test_cifar_loads_through_torchvision(tmp_path, monkeypatch, name, n_classes):
    # Fake pickles in torchvision's layout; the checksum test only knows the real files.
    monkeypatch.setattr(torchvision.datasets.cifar, 'check_integrity', lambda *a, **k: True)
    cls = torchvision.datasets.CIFAR10 if n_classes == 10 else torchvision.datasets.CIFAR100
    folder = tmp_path / 'cifar' / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = 'labels' if n_classes == 10 else 'fine_labels'
    all_labels, all_data = [], []
    for file_name, _ in cls.train_list:
        labels = rng.integers(0, n_classes, 4).tolist()
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        all_labels += labels
        all_data.append(data)
        entry = {'data': data, label_key: labels}
        with open(folder / file_name, 'wb') as f:
            pickle.dump(entry, f)
    with open(folder / cls.meta['filename'], 'wb') as f:
        pickle.dump({cls.meta['key']: [str(i) for i in range(n_classes)]}, f)
    x, y = next(iter(datasets.get_data_loaders(name, str(tmp_path), batch_size=len(all_labels),
                                               num_workers=0, shuffle=False)[0]))
    assert x.shape == (len(all_labels), 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert y.tolist() == all_labels
    expected = torch.from_numpy(np.concatenate(all_data).reshape(-1, 3, 32, 32))
    assert torch.equal(x, (expected.float() / 255 - 0.5) * 2)
