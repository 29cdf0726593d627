"""The dataset table, image folders and their index cache, HDF5 reading, transforms, bad input."""
import os

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import data_sources
import datasets
from data_helpers import (FOLDER_IMAGES, FOLDER_LABELS, make_image_folder, make_solid_folder,
                          random_hdf5)


def load_all(dataset, data_root, **kwargs):
    """Every (image, label) of a data set in order, as two tensors."""
    kwargs = {'batch_size': 2, 'num_workers': 0, 'shuffle': False, 'drop_last': False, **kwargs}
    loader = datasets.get_data_loaders(dataset, str(data_root), **kwargs)[0]
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

# ---------------------------------------------------------------------------------------------
# The table


def test_table_has_every_original_name_with_its_values():
    # The original's utils.py dicts: class, size, root, classes, classes per sheet.
    expected = {'C10': ('cifar10', 'cifar', 32, 10, 10),
                'C100': ('cifar100', 'cifar', 32, 100, 100),
                'FMNIST': ('fmnist', 'fashion-mnist', 32, 10, 10)}
    for size, sheet in ((32, 50), (64, 50), (128, 20), (256, 20)):
        expected[f'I{size}'] = ('folder', 'ImageNet', size, 1000, sheet)
        expected[f'I{size}_hdf5'] = ('hdf5', f'ILSVRC{size}.hdf5', size, 1000, sheet)
    got = {name: (row.kind, row.root, row.resolution, row.n_classes, row.classes_per_sheet)
           for name, row in datasets.DATASETS.items()}
    assert got == expected
    assert all(row.name == name for name, row in datasets.DATASETS.items())
    assert datasets.dataset_info('I128_hdf5') is datasets.DATASETS['I128_hdf5']


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match='I512') as err:
        datasets.dataset_info('I512')
    for name in ('I128_hdf5', 'C100', 'FMNIST', 'ImageFolder', 'HDF5'):
        assert name in str(err.value)


@pytest.mark.parametrize('resolution, why', [(30, 'multiple of 4'), (100, 'arch table'),
                                             (1024, 'arch table'), (0, 'arch table')])
def test_bad_resolution_is_refused(resolution, why):
    with pytest.raises(ValueError, match=why) as err:
        datasets.check_resolution(resolution)
    assert '32, 64, 128, 256, 512' in str(err.value)
    assert [datasets.check_resolution(r) for r in (32, 64, 128, 256, 512)] == [32, 64, 128, 256,
                                                                              512]


def test_table_resolution_must_match(tmp_path):
    assert datasets.dataset_info('C10', resolution=32).resolution == 32
    with pytest.raises(ValueError, match='--resolution 64 does not match --dataset C10'):
        datasets.dataset_info('C10', resolution=64)

# ---------------------------------------------------------------------------------------------
# Image folders


def test_image_folder_labels_sizes_and_order(tmp_path):
    root = make_image_folder(str(tmp_path / 'pets'))
    info = datasets.dataset_info('ImageFolder', root, resolution=32)
    assert (info.kind, info.n_classes, info.resolution, info.classes_per_sheet) == ('folder', 2,
                                                                                   32, 2)
    x, y = load_all('ImageFolder', root, resolution=32)
    assert x.shape == (len(FOLDER_IMAGES), 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == FOLDER_LABELS
    assert x.min() >= -1 and x.max() <= 1
    dataset = datasets.build_dataset(info, root)
    assert [os.fsdecode(p) for p in dataset.paths] == [rel for rel, *_ in FOLDER_IMAGES]
    assert dataset.classes == ['cat', 'dog']  # the hidden folder is no class
    grey = x[1]  # the grey JPEG is repeated to RGB
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])


def test_image_folder_values_are_exact(tmp_path):
    colours = {'blue': (0, 0, 255), 'odd': (1, 128, 254), 'red': (200, 3, 77)}
    root = make_solid_folder(str(tmp_path / 'solid'), colours)
    x, y = load_all('ImageFolder', root, resolution=64)
    assert y.tolist() == [0, 1, 2]
    for image, colour in zip(x, colours.values(), strict=True):
        expected = (torch.tensor(colour, dtype=torch.float32) / 255 - 0.5) * 2
        assert torch.equal(image, expected[:, None, None].expand(3, 64, 64))


def test_load_in_mem_gives_the_same_tensors(tmp_path):
    root = make_image_folder(str(tmp_path / 'pets'))
    x, y = load_all('ImageFolder', root, resolution=32)
    x_mem, y_mem = load_all('ImageFolder', root, resolution=32, load_in_mem=True)
    assert torch.equal(x, x_mem) and torch.equal(y, y_mem)


def test_table_folder_path_rule_and_class_count(tmp_path):
    make_image_folder(str(tmp_path / 'ImageNet'))
    x, y = load_all('I64', tmp_path)  # data_root/ImageNet, as the original
    assert x.shape[1:] == (3, 64, 64) and y.tolist() == FOLDER_LABELS
    with pytest.raises(ValueError, match='3 class folders but --dataset C10'):
        too_many = make_solid_folder(str(tmp_path / 'three'), {'a': 0, 'b': 0, 'c': 0})
        datasets.build_dataset(datasets.DatasetInfo('C10', 'folder', '', 32, 2, 2), too_many)


def test_index_cache_lives_beside_the_data_and_is_keyed_by_root(tmp_path):
    first = make_solid_folder(str(tmp_path / 'a' / 'img'), {'x': (1, 1, 1), 'y': (2, 2, 2)})
    second = make_solid_folder(str(tmp_path / 'b' / 'img'), {'x': (3, 3, 3), 'y': (4, 4, 4)})
    Image.new('RGB', (9, 9)).save(os.path.join(second, 'y', 'extra.png'))
    for name in ('x', 'y'):  # same class names and mtimes: only the root tells them apart
        stat = os.stat(os.path.join(first, name))
        os.utime(os.path.join(second, name), ns=(stat.st_atime_ns, stat.st_mtime_ns))
    index_dir = str(tmp_path / 'index')
    # Same folder name, same index_dir: the original would reuse the first folder's index.
    _, y1 = load_all('ImageFolder', first, resolution=32, index_dir=index_dir)
    _, y2 = load_all('ImageFolder', second, resolution=32, index_dir=index_dir)
    assert y1.tolist() == [0, 1] and y2.tolist() == [0, 1, 1]
    assert len(os.listdir(index_dir)) == 2
    # Default: beside the folder, the name carrying a hash of its path.
    path = datasets.index_cache_path(first)
    assert os.path.dirname(path) == os.path.realpath(tmp_path / 'a')
    load_all('ImageFolder', first, resolution=32)
    assert os.path.isfile(path)
    # A cache made for another folder, copied under this folder's name, is not used.
    os.replace(datasets.index_cache_path(second, index_dir), path)
    _, y1_again = load_all('ImageFolder', first, resolution=32)
    assert y1_again.tolist() == [0, 1]


def test_index_cache_is_rebuilt_when_a_class_folder_changes(tmp_path):
    root = make_solid_folder(str(tmp_path / 'img'), {'x': (1, 1, 1), 'y': (2, 2, 2)})
    assert len(load_all('ImageFolder', root, resolution=32)[1]) == 2
    Image.new('RGB', (9, 9)).save(os.path.join(root, 'y', 'new.png'))
    stat = os.stat(os.path.join(root, 'y'))  # filesystems with coarse clocks: move mtime on
    os.utime(os.path.join(root, 'y'), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_all('ImageFolder', root, resolution=32)[1].tolist() == [0, 1, 1]


@pytest.mark.parametrize('change', ['delete', 'add', 'add_folder'])
def test_index_cache_notices_changes_in_a_class_sub_folder(tmp_path, change):
    # The deepest folder of the tiny folder: cat/sub/deep/c.png. The class folder 'cat' itself
    # is not touched, so only a fingerprint of every folder read sees the change.
    root = make_image_folder(str(tmp_path / 'img'))
    assert load_all('ImageFolder', root, resolution=32)[1].tolist() == FOLDER_LABELS
    deep = os.path.join(root, 'cat', 'sub', 'deep')
    if change == 'delete':
        os.remove(os.path.join(deep, 'c.png'))
        expected = [0, 0, 1, 1]
    elif change == 'add':
        Image.new('RGB', (9, 9)).save(os.path.join(deep, 'new.png'))
        expected = [0, 0, 0, 0, 1, 1]
    else:
        os.makedirs(os.path.join(deep, 'more'))
        Image.new('RGB', (9, 9)).save(os.path.join(deep, 'more', 'new.png'))
        expected = [0, 0, 0, 0, 1, 1]
    assert load_all('ImageFolder', root, resolution=32)[1].tolist() == expected


def test_an_image_gone_mid_run_names_the_file_and_the_index(tmp_path):
    root = make_image_folder(str(tmp_path / 'img'))
    dataset = data_sources.ImageFolder(root)
    os.remove(os.path.join(root, 'cat', 'sub', 'deep', 'c.png'))
    with pytest.raises(FileNotFoundError) as err:
        dataset[2]
    message = str(err.value)
    assert 'c.png' in message and dataset.index_path in message and '--resume' in message


def test_index_cache_falls_back_to_logs_when_the_parent_is_read_only(tmp_path, monkeypatch):
    monkeypatch.setattr(data_sources.os, 'access', lambda path, mode: False)
    path = data_sources.index_cache_path(str(tmp_path / 'img'))
    assert os.path.dirname(path) == data_sources.INDEX_FALLBACK_DIR == 'logs'

# ---------------------------------------------------------------------------------------------
# Transforms


def _ramp(width, height):
    # Pixel value = 50 + position along the long edge, so a crop's offset can be read back.
    ramp = 50 + np.arange(max(width, height), dtype=np.uint8)
    pixels = np.broadcast_to(ramp if width > height else ramp[:, None], (height, width))
    return Image.fromarray(np.ascontiguousarray(pixels), 'L')


@pytest.mark.parametrize('size', [(200, 100), (100, 200), (64, 64)])
def test_random_crop_long_edge_stays_inside_the_image(size):
    img = _ramp(*size)
    crop_op = datasets.RandomCropLongEdge()
    offsets = set()
    for _ in range(1000):
        crop = np.asarray(crop_op(img))
        assert crop.shape == (min(size), min(size))
        line = crop[0] if size[0] > size[1] else crop[:, 0]
        offset = int(line[0]) - 50
        assert crop.min() >= 50  # no black padding (the original's bug added black rows)
        assert np.array_equal(line, 50 + offset + np.arange(min(size)))
        offsets.add(offset)
    # Every offset is reachable, both ends included.
    last = abs(size[0] - size[1])
    assert min(offsets) == 0 and max(offsets) == last and len(offsets) > 0.9 * (last + 1)


def test_center_crop_long_edge_takes_the_middle():
    crop = np.asarray(datasets.CenterCropLongEdge()(_ramp(200, 100)))
    assert crop.shape == (100, 100) and int(crop[0, 0]) == 50 + 50
    crop = np.asarray(datasets.CenterCropLongEdge()(_ramp(31, 40)))
    assert crop.shape == (31, 31) and int(crop[0, 0]) == 50 + 4  # round((40 - 31) / 2)


def test_augmented_folder_images_keep_shape_and_range(tmp_path):
    root = make_image_folder(str(tmp_path / 'pets'))
    x, y = load_all('ImageFolder', root, resolution=32, augment=True)
    assert x.shape == (5, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert y.tolist() == FOLDER_LABELS

# ---------------------------------------------------------------------------------------------
# HDF5 files


@pytest.mark.parametrize('load_in_mem', [False, True])
def test_hdf5_file_in_the_original_layout_loads(tmp_path, load_in_mem):
    path = str(tmp_path / 'ILSVRC64.hdf5')
    imgs, labels = random_hdf5(path, n=10, size=64, n_classes=4)
    x, y = load_all('I64_hdf5', tmp_path, load_in_mem=load_in_mem, num_workers=1)
    assert torch.equal(x, (torch.from_numpy(imgs).float() / 255 - 0.5) * 2)
    assert torch.equal(y, torch.from_numpy(labels))
    info = datasets.dataset_info('HDF5', path)
    assert (info.resolution, info.n_classes, info.classes_per_sheet) == (64, 4, 4)
    x2, _ = load_all('HDF5', path, load_in_mem=load_in_mem)
    assert torch.equal(x, x2)


@pytest.mark.parametrize('compression', [None, 'lzf'])
def test_streamed_hdf5_chunk_cache(tmp_path, compression):
    # LZF: a cache of a whole chunk, so in-order reads decompress each chunk once.
    # Uncompressed: h5py's default, so a shuffled read fetches one image, not a whole chunk.
    path = str(tmp_path / 'd.hdf5')
    with h5py.File(path, 'w') as f:
        f.create_dataset('imgs', data=np.zeros((10, 3, 64, 64), np.uint8), chunks=(10, 3, 64, 64),
                         compression=compression)
        f.create_dataset('labels', data=np.arange(10), compression=compression)
    dataset = datasets.ILSVRC_HDF5(path)
    imgs = dataset._images()
    cache = imgs.id.get_access_plist().get_chunk_cache()[1]
    with h5py.File(path, 'r') as f:
        default = f['imgs'].id.get_access_plist().get_chunk_cache()[1]
    assert cache >= 10 * 3 * 64 * 64 + 2**20 if compression else cache == default
    assert dataset._images() is imgs  # opened once per process, not per item
    assert torch.equal(dataset[3][0], -torch.ones(3, 64, 64))


def test_hdf5_augment_warns_and_changes_nothing(tmp_path):
    path = str(tmp_path / 'd.hdf5')
    random_hdf5(path)
    with pytest.warns(UserWarning, match='--augment has no effect'):
        x, _ = load_all('HDF5', path, augment=True)
    assert torch.equal(x, load_all('HDF5', path)[0])


def _bad_hdf5(path, **arrays):
    with h5py.File(path, 'w') as f:
        for key, value in arrays.items():
            f[key] = value
    return str(path)


@pytest.mark.parametrize('arrays, message', [
    ({'labels': np.zeros(2, np.int64)}, "no dataset 'imgs'"),
    ({'imgs': np.zeros((2, 3, 32, 32), np.uint8)}, "no dataset 'labels'"),
    ({'imgs': np.zeros((2, 32, 32, 3), np.uint8), 'labels': np.zeros(2, np.int64)},
     r'imgs is uint8 \(2, 32, 32, 3\)'),
    ({'imgs': np.zeros((2, 3, 32, 32), np.float32), 'labels': np.zeros(2, np.int64)},
     'imgs is float32'),
    ({'imgs': np.zeros((2, 3, 32, 32), np.uint8), 'labels': np.zeros(3, np.int64)},
     r'labels is int64 \(3,\) for 2 images'),
])
def test_bad_hdf5_files_name_the_fault(tmp_path, arrays, message):
    path = _bad_hdf5(tmp_path / 'bad.hdf5', **arrays)
    with pytest.raises(ValueError, match=message) as err:
        datasets.get_data_loaders('HDF5', path)
    assert 'bad.hdf5' in str(err.value)


def _labelled_hdf5(path, labels, n_classes=None):
    path = _bad_hdf5(path, imgs=np.zeros((len(labels), 3, 32, 32), np.uint8),
                     labels=np.array(labels, np.int64))
    if n_classes is not None:
        with h5py.File(path, 'a') as f:
            f['labels'].attrs['n_classes'] = n_classes
    return path


def test_a_stray_label_is_refused_naming_the_file(tmp_path):
    # Labels 0-2 and one 1000: without the check, 1,001 classes, 997 of them never seen.
    path = _labelled_hdf5(tmp_path / 'stray.hdf5', [0, 1, 2, 1000])
    with pytest.raises(ValueError, match=r"stray.hdf5'?: labels run to 1000 but 997 of the "
                                         r'1001 classes'):
        datasets.dataset_info('HDF5', path)
    assert datasets.dataset_info('HDF5', _labelled_hdf5(tmp_path / 'ok.hdf5',
                                                        [0, 1, 2, 2])).n_classes == 3


def test_labels_must_lie_in_the_declared_classes(tmp_path):
    path = _labelled_hdf5(tmp_path / 'declared.hdf5', [0, 1, 2, 1000], n_classes=1000)
    with pytest.raises(ValueError, match=r'1 label\(s\) outside \[0, 1000\)'):
        datasets.dataset_info('HDF5', path)
    with pytest.raises(ValueError, match='outside'):
        data_sources.ILSVRC_HDF5(path)
    # Declared classes may have no images (a subset of a larger label set).
    sparse = _labelled_hdf5(tmp_path / 'sparse.hdf5', [0, 5, 5, 7], n_classes=10)
    assert datasets.dataset_info('HDF5', sparse).n_classes == 10


def test_hdf5_size_must_fit_the_dataset_and_the_arch_tables(tmp_path):
    random_hdf5(str(tmp_path / 'ILSVRC128.hdf5'), size=32)
    with pytest.raises(ValueError, match='holds 32 x 32 images but --dataset I128_hdf5'):
        datasets.get_data_loaders('I128_hdf5', str(tmp_path))
    random_hdf5(str(tmp_path / 'ILSVRC32.hdf5'), size=32, n=1001, n_classes=1001)
    with pytest.raises(ValueError, match='has label 1000 but --dataset I32_hdf5 has 1000'):
        datasets.get_data_loaders('I32_hdf5', str(tmp_path))
    path = str(tmp_path / 'small.hdf5')
    random_hdf5(path, size=28)
    with pytest.raises(ValueError, match="image size of .*small.hdf5.* 28 has no BigGAN arch"):
        datasets.dataset_info('HDF5', path)

# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_data_roots_name_the_path(tmp_path):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        datasets.get_data_loaders('ImageFolder', missing, resolution=32)
    with pytest.raises(FileNotFoundError, match=r'nowhere/ImageNet.*--data_root'):
        datasets.get_data_loaders('I128', missing)
    with pytest.raises(FileNotFoundError, match=r'nowhere/ILSVRC128\.hdf5.*make_hdf5'):
        datasets.get_data_loaders('I128_hdf5', missing)
    with pytest.raises(FileNotFoundError, match='nowhere'):
        datasets.get_data_loaders('HDF5', missing)
    with pytest.raises(ValueError, match='is a folder: for HDF5 data --data_root names the'):
        datasets.get_data_loaders('HDF5', str(tmp_path))


def test_empty_folders_are_refused(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no class sub-folders'):
        datasets.get_data_loaders('ImageFolder', str(tmp_path / 'empty'), resolution=32)
    (tmp_path / 'noimg' / 'cls').mkdir(parents=True)
    (tmp_path / 'noimg' / 'cls' / 'a.txt').write_text('text')
    with pytest.raises(ValueError, match='found 0 images in .*noimg'):
        datasets.get_data_loaders('ImageFolder', str(tmp_path / 'noimg'), resolution=32)
    with pytest.raises(ValueError, match='needs --resolution'):
        datasets.get_data_loaders('ImageFolder', str(tmp_path / 'noimg'))


def test_a_corrupt_image_is_named(tmp_path):
    root = make_solid_folder(str(tmp_path / 'img'), {'a': (1, 2, 3), 'b': (4, 5, 6)})
    (tmp_path / 'img' / 'a' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    with pytest.raises(ValueError, match=r"1 image file.* cannot be read: .*a/broken\.png"):
        load_all('ImageFolder', root, resolution=32)


def test_a_single_class_folder_warns_of_a_folder_too_high(tmp_path):
    # Original issue #26: data_root one level above the class folders, every label 0.
    root = make_solid_folder(str(tmp_path / 'ImageNet' / 'train'), {'n01': (1, 1, 1),
                                                                    'n02': (2, 2, 2)})
    with pytest.warns(UserWarning, match="single class folder 'train'"):
        _, y = load_all('ImageFolder', os.path.dirname(root), resolution=32)
    assert y.tolist() == [0, 0]


def test_loader_arguments_are_checked(tmp_path):
    path = str(tmp_path / 'd.hdf5')
    random_hdf5(path, n=10)
    with pytest.raises(ValueError, match='hdf5=True but --dataset C10'):
        datasets.get_data_loaders('C10', str(tmp_path), hdf5=True)
    with pytest.raises(ValueError, match='--num_workers'):
        datasets.get_data_loaders('HDF5', path, num_workers=-1)
    with pytest.raises(ValueError, match='no full batch of 64'):
        datasets.get_data_loaders('HDF5', path, batch_size=64)
    with pytest.raises(ValueError, match='rank 2 / world_size 2'):
        datasets.get_data_loaders('HDF5', path, batch_size=2, rank=2, world_size=2)
