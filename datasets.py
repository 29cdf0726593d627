"""The dataset table, input checks, transforms and data loaders.

One row per dataset replaces the original's five parallel dicts. Besides the table's names,
``ImageFolder`` trains on any folder of class sub-folders and ``HDF5`` on any file in
make_hdf5.py's layout, without editing code. The dataset classes live in ``data_sources.py``
and the samplers in ``samplers.py``; both are re-exported here.
"""
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from data_sources import (FMNIST_INSTALL_HINT, FMNIST_SYSTEM_DIR, IMG_EXTENSIONS,  # noqa: F401
                          FashionMNIST, ILSVRC_HDF5, ImageFolder, cifar, find_classes, has_fmnist,
                          implied_classes, index_cache_path,
                          read_hdf5_layout)
from samplers import EpochSampler, MultiEpochSampler  # noqa: F401

# Resolutions with G and D arch tables.
VALID_RESOLUTIONS = (32, 64, 128, 256, 512)
_VALID_LIST = ', '.join(map(str, VALID_RESOLUTIONS))
KINDS = ('folder', 'hdf5', 'cifar10', 'cifar100', 'fmnist')


@dataclass(frozen=True)
class DatasetInfo:
    """One row of the dataset table."""
    name: str
    kind: str               # one of KINDS: which class reads it
    root: str               # path relative to --data_root ('' = data_root itself)
    resolution: int         # side S of the square images the models see
    n_classes: int
    classes_per_sheet: int  # classes per class-conditional sample sheet


def _table() -> dict[str, DatasetInfo]:
    rows = [DatasetInfo('C10', 'cifar10', 'cifar', 32, 10, 10),
            DatasetInfo('C100', 'cifar100', 'cifar', 32, 100, 100),
            DatasetInfo('FMNIST', 'fmnist', 'fashion-mnist', 32, 10, 10)]
    for size, per_sheet in ((32, 50), (64, 50), (128, 20), (256, 20)):
        rows.append(DatasetInfo(f'I{size}', 'folder', 'ImageNet', size, 1000, per_sheet))
        rows.append(DatasetInfo(f'I{size}_hdf5', 'hdf5', f'ILSVRC{size}.hdf5', size, 1000,
                                per_sheet))
    return {row.name: row for row in sorted(rows, key=lambda row: row.name)}


DATASETS: dict[str, DatasetInfo] = _table()
CUSTOM_DATASETS = ('ImageFolder', 'HDF5')
DATASET_NAMES = (*DATASETS, *CUSTOM_DATASETS)

# ---------------------------------------------------------------------------------------------
# Checks and dataset resolution


def check_resolution(resolution: int, flag: str = '--resolution') -> int:
    """Return ``resolution`` if G and D have arch tables for it, else raise ValueError."""
    if type(resolution) is not int or resolution not in VALID_RESOLUTIONS:  # bool is no size
        why = ('is not a multiple of 4' if type(resolution) is int and resolution % 4
               else 'has no BigGAN arch table')
        raise ValueError(f'{flag} {resolution!r} {why}; valid resolutions: {_VALID_LIST}')
    return resolution


def _sheet_classes(n_classes: int, resolution: int) -> int:
    # ImageNet's sheet layout: 50 classes per sheet up to 64 px, 20 above.
    return min(n_classes, 50 if resolution <= 64 else 20)


def dataset_info(dataset: str, data_root: str = 'data', resolution: int | None = None
                 ) -> DatasetInfo:
    """The table row of ``dataset``, or a row made for the custom ``ImageFolder``/``HDF5``.

    ``ImageFolder``: ``data_root`` is a folder of class sub-folders, whose number gives
    n_classes; ``resolution`` is required. ``HDF5``: ``data_root`` is the file; S and
    n_classes (declared, or max label + 1) come from it. For table names, ``resolution`` may be
    None or the row's own value. Bad input raises ValueError (FileNotFoundError for a missing path).
    """
    if dataset in DATASETS:
        info = DATASETS[dataset]
        if resolution is not None and resolution != info.resolution:
            raise ValueError(f'--resolution {resolution} does not match --dataset {dataset} '
                             f'({info.resolution}); drop --resolution, or use --dataset '
                             'ImageFolder for a folder at another size')
        return info
    if dataset == 'ImageFolder':
        if resolution is None:
            raise ValueError(f'--dataset ImageFolder needs --resolution (one of {_VALID_LIST})')
        check_resolution(resolution)
        n_classes = len(find_classes(data_root))
        return DatasetInfo('ImageFolder', 'folder', '', resolution, n_classes,
                           _sheet_classes(n_classes, resolution))
    if dataset == 'HDF5':
        _, size, labels, n_classes = read_hdf5_layout(data_root)
        n_classes = n_classes or implied_classes(data_root, labels)
        check_resolution(size, flag=f'image size of {data_root!r}:')
        if resolution is not None and resolution != size:
            raise ValueError(f'--resolution {resolution} does not match the {size} x {size} '
                             f'images of {data_root!r}')
        return DatasetInfo('HDF5', 'hdf5', '', size, n_classes, _sheet_classes(n_classes, size))
    raise ValueError(f'unknown --dataset {dataset!r}; valid: {", ".join(DATASET_NAMES)}')


def data_name(dataset: str, data_root: str) -> str:
    """Which data ``--dataset ImageFolder`` / ``HDF5`` means, for experiment names: the base name
    of ``data_root`` (a file's without its extension), runs of characters other than letters,
    digits, '.' and '-' as one '-'; '' for the table's datasets, whose names say it."""
    if dataset not in CUSTOM_DATASETS:
        return ''
    base = os.path.basename(os.path.abspath(data_root))
    if dataset == 'HDF5':
        base = os.path.splitext(base)[0]
    return re.sub(r'[^A-Za-z0-9.-]+', '-', base).strip('-')[:40] or 'data'


def identity(dataset: str, data_root: str, n_classes: int, n_images: int,
             subset_seed: int | None = None) -> dict:
    """What a checkpoint records of its data (state_dict['data'], which the original ignores),
    for `check_same_data` at --resume; `subset_seed` where a subset of it is trained on."""
    data = {'dataset': dataset, 'data_name': data_name(dataset, data_root),
            'n_classes': n_classes, 'n_images': n_images}
    if subset_seed is not None:
        data['subset_seed'] = subset_seed
    return data


def check_same_data(state: dict, here: dict, path: str) -> None:
    """Refuse to resume the checkpoint `state` (from `path`) on other data than it was trained
    on: a ValueError naming both. A checkpoint without the record (the original's, or older
    ones) is checked by what its config says: the dataset and class count."""
    saved = state.get('data')
    if not isinstance(saved, dict):
        config = state.get('config') or {}
        saved = {key: config[key] for key in ('dataset', 'n_classes') if key in config}
    differ = [key for key in here if key in saved and saved[key] != here[key]]
    if differ:
        def describe(data):
            name = f" {data['data_name']!r}" if data.get('data_name') else ''
            counts = [f"{data[key]} {word}" for key, word in (('n_classes', 'classes'),
                                                              ('n_images', 'images'))
                      if key in data]
            if 'subset_seed' in data:
                counts.append(f"the subset of --subset_seed {data['subset_seed']}")
            return f"{data.get('dataset', '?')}{name} ({', '.join(counts)})"
        raise ValueError(f'--resume: {path!r} was trained on {describe(saved)}, the data here '
                         f'is {describe(here)}: resume with the data the run was trained on '
                         f'(--dataset, --data_root), or start a new run under another name '
                         f'(--experiment_name)')


def fmnist_folder(data_root: str) -> str:
    """The folder Fashion-MNIST is read from (see docs/data.md, "Fashion-MNIST").

    ``data_root`` itself if it holds the files, else ``data_root/fashion-mnist``; with the
    default ``data_root`` 'data' and no files there, the Debian package's folder.
    """
    candidates = [data_root, os.path.join(data_root, DATASETS['FMNIST'].root)]
    if os.path.normpath(data_root) == 'data':
        candidates.append(FMNIST_SYSTEM_DIR)
    for folder in candidates:
        if has_fmnist(folder):
            return folder
    raise FileNotFoundError(f'Fashion-MNIST not found in {" or ".join(map(repr, candidates))}: '
                            f'{FMNIST_INSTALL_HINT}')

# ---------------------------------------------------------------------------------------------
# Transforms


class CenterCropLongEdge:
    """Crop the largest centred square (side min(W, H)) out of a PIL image."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return TF.center_crop(img, min(img.size))

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


class RandomCropLongEdge:
    """Crop a square of side min(W, H) at a uniformly random offset along the long edge.

    The original drew the offset along the wrong axis, so crops of non-square images ran off
    the image and PIL filled them with black; here the crop always lies inside the image, and
    every offset from 0 to (long - short) is possible. It draws from torch's RNG, which the
    DataLoader seeds per worker.
    """

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        side = min(width, height)
        offset = int(torch.randint(0, max(width, height) - side + 1, ()))
        left, top = (offset, 0) if width > height else (0, offset)
        return img.crop((left, top, left + side, top + side))

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def make_transform(kind: str, resolution: int, augment: bool = False) -> Callable | None:
    """The original's transform for a dataset kind (None where the dataset scales itself).

    Folders: [Random|Center]CropLongEdge, Resize(S) (bilinear), with augment a horizontal flip;
    CIFAR: with augment RandomCrop(32, padding 4) and a flip; both end in ToTensor and
    Normalize(0.5, 0.5). Fashion-MNIST: with augment the CIFAR crop and flip on uint8 tensors.
    HDF5: none (the original ignores --augment there).
    """
    to_unit = [T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)]
    cifar_augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if kind == 'folder':
        crop = [RandomCropLongEdge()] if augment else [CenterCropLongEdge()]
        flip = [T.RandomHorizontalFlip()] if augment else []
        return T.Compose(crop + [T.Resize(resolution)] + flip + to_unit)
    if kind in ('cifar10', 'cifar100'):
        return T.Compose((cifar_augment if augment else []) + to_unit)
    if kind == 'fmnist':
        return T.Compose(cifar_augment) if augment else None
    return None

# ---------------------------------------------------------------------------------------------
# Datasets and loaders


def build_dataset(info: DatasetInfo, data_root: str = 'data', augment: bool = False,
                  load_in_mem: bool = False, index_dir: str | None = None,
                  download: bool = True) -> Dataset:
    """The Dataset of one table row; its path is ``os.path.join(data_root, info.root)``."""
    path = os.path.join(data_root, info.root) if info.root else data_root
    transform = make_transform(info.kind, info.resolution, augment)
    if info.kind == 'folder':
        dataset = ImageFolder(path, transform=transform, load_in_mem=load_in_mem,
                              index_dir=index_dir)
        if len(dataset.classes) > info.n_classes:
            raise ValueError(f'{path!r} has {len(dataset.classes)} class folders but --dataset '
                             f'{info.name} has {info.n_classes} classes; use --dataset '
                             'ImageFolder for a folder with its own classes')
        return dataset
    if info.kind == 'hdf5':
        if augment:
            warnings.warn(f'--augment has no effect on HDF5 data ({info.name}), as in the '
                          'original', stacklevel=2)
        dataset = ILSVRC_HDF5(path, load_in_mem=load_in_mem)
        if dataset.resolution != info.resolution:
            raise ValueError(f'{path!r} holds {dataset.resolution} x {dataset.resolution} images'
                             f' but --dataset {info.name} is {info.resolution} x '
                             f'{info.resolution}')
        if dataset.labels.max() >= info.n_classes:
            raise ValueError(f'{path!r} has label {dataset.labels.max()} but --dataset '
                             f'{info.name} has {info.n_classes} classes; use --dataset HDF5')
        return dataset
    if info.kind in ('cifar10', 'cifar100'):
        return cifar(path, info.n_classes, transform, download)
    if info.kind == 'fmnist':
        return FashionMNIST(fmnist_folder(data_root), transform=transform)
    raise ValueError(f'dataset {info.name}: unknown kind {info.kind!r}; valid: {", ".join(KINDS)}')


def labels_of(data: Dataset) -> np.ndarray:
    """Every item's class, read without loading images."""
    for name in ('labels', 'targets'):
        if hasattr(data, name):
            return np.asarray(getattr(data, name), dtype=np.int64)
    raise TypeError(f'{type(data).__name__} has no labels to draw a class-balanced subset from')


def subset_size(n: int, fraction: float = 1.0, num_samples: int = 0) -> int:
    """The images a --data_fraction / --num_samples subset of `n` keeps (at least one)."""
    if num_samples:
        if num_samples > n:
            raise ValueError(f'--num_samples {num_samples} is more than the {n} images of the '
                             f'data; give at most {n} (or 0 for all)')
        return num_samples
    return max(1, round(fraction * n))


def subset_indices(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A class-balanced subset of `size` of the items with these labels, sorted: each class
    keeps its share of `size` (largest remainders round up, ties to the smaller class number),
    its items drawn at random by a generator seeded with `seed` alone, so every resume and
    rank draws the same."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(np.int64)
    short = size - quota.sum()
    quota[np.argsort(-(exact - quota), kind='stable')[:short]] += 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, len(labels), size]))
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def _accelerator_available() -> bool:
    accelerator = getattr(torch, 'accelerator', None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def get_data_loaders(dataset: str, data_root: str = 'data', *, augment: bool = False,
                     batch_size: int = 64, num_workers: int = 8, shuffle: bool = True,
                     load_in_mem: bool = False, hdf5: bool = False, pin_memory: bool = True,
                     drop_last: bool = True, start_itr: int = 0, num_epochs: int = 500,
                     use_multiepoch_sampler: bool = False, resolution: int | None = None,
                     index_dir: str | None = None, seed: int = 0, rank: int = 0,
                     world_size: int = 1, data_fraction: float = 1.0, num_samples: int = 0,
                     subset_seed: int = 0) -> list[DataLoader]:
    """``[train_loader]`` over ``dataset``, as the original's, made exactly resumable.

    ``batch_size`` is the loader's batch, per rank: train.py passes
    ``batch_size x num_D_steps x num_D_accumulations``. ``hdf5`` is kept from the original's
    signature; the dataset name decides (``I128`` or ``I128_hdf5``). Orders come from
    generators seeded with ``seed`` (not the global RNG); with ``world_size > 1`` each rank
    gets a disjoint slice of every epoch.

    Resume, with ``start_itr`` = iterations already done:
    - ``use_multiepoch_sampler``: one pass over the loader yields every batch from iteration
      ``start_itr`` to the end of ``num_epochs`` epochs (short final batch dropped; ``shuffle``
      has no effect, the order is always random); later passes are empty.
    - otherwise: each pass is one epoch (shuffled with ``shuffle``); the first pass yields the
      rest of the epoch ``start_itr`` lies in, i.e. epoch ``start_itr // len_epoch`` without
      its first ``start_itr % len_epoch`` batches, where ``len_epoch`` is ``len(loader)`` of a
      fresh loader. ``loader.sampler.epoch`` is the epoch the next pass yields.

    ``data_fraction`` < 1 or ``num_samples`` > 0: train on a class-balanced subset
    (`subset_indices`, seeded by ``subset_seed``).

    Image-folder indexes are cached in ``index_dir`` (None: beside the folder if writable, else
    ``logs/``). ``pin_memory`` applies only where an accelerator is present.
    """
    info = dataset_info(dataset, data_root, resolution)
    if hdf5 and info.kind != 'hdf5':
        raise ValueError(f'hdf5=True but --dataset {dataset} is not an HDF5 dataset; use '
                         f'{dataset}_hdf5 or HDF5')
    if num_workers < 0:
        raise ValueError(f'--num_workers must be >= 0, got {num_workers}')
    data = build_dataset(info, data_root, augment, load_in_mem, index_dir)
    if data_fraction < 1 or num_samples:
        size = subset_size(len(data), data_fraction, num_samples)
        data = Subset(data, subset_indices(labels_of(data), size, subset_seed).tolist())
    if use_multiepoch_sampler:
        sampler = MultiEpochSampler(data, num_epochs, start_itr, batch_size, seed, rank,
                                    world_size)
        drop_last = True
    else:
        sampler = EpochSampler(data, batch_size, shuffle, seed, start_itr, drop_last, rank,
                               world_size)
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=pin_memory and _accelerator_available(), drop_last=drop_last)
    return [loader]
