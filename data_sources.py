"""The dataset classes: image folders (with their index cache), HDF5 files, CIFAR, Fashion-MNIST.

Every item is ``(image, label)``: a float tensor 3 x S x S in [-1, 1] (after the transform, for
image folders and CIFAR) and an int. ``datasets.py`` picks the class and the transform.
"""
import gzip
import hashlib
import os
import warnings
from collections.abc import Callable

import h5py
import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset

from atomic import atomic_write

# The original's list plus the TIFF and WebP forms torchvision's folders accept.
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
# Where the index cache goes when the folder beside the data is read-only: the original's
# default --logs_root, relative to the working directory.
INDEX_FALLBACK_DIR = 'logs'
# 2: only images that decode are indexed; 3: every folder read is fingerprinted.
_INDEX_VERSION = 3
# Largest HDF5 chunk cache per open file (one per DataLoader worker).
_MAX_CHUNK_CACHE = 256 * 2**20


def to_unit_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1], as ToTensor + Normalize(0.5, 0.5) computes it."""
    return (images_u8.float() / 255 - 0.5) * 2


def is_image_file(filename: str) -> bool:
    """True when the name ends in one of IMG_EXTENSIONS (case-insensitive)."""
    return filename.lower().endswith(IMG_EXTENSIONS)


def pil_loader(path: str) -> Image.Image:
    """Open an image as RGB; a file PIL cannot decode raises ValueError naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert('RGB')
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f'cannot read image file {path!r}: {err}') from err

# ---------------------------------------------------------------------------------------------
# Image folders


FLAT = ''  # the one class of a flat folder: its images lie in ``root`` itself


def find_classes(root: str) -> list[str]:
    """Sorted names of the class sub-folders of ``root`` (hidden folders are not classes), or
    ``[FLAT]`` for a flat folder (images directly in ``root``, no sub-folders): one class, for
    unconditional training."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f'image folder {root!r} does not exist (check --data_root)')
    entries = [entry for entry in os.scandir(root) if not entry.name.startswith('.')]
    classes = sorted(entry.name for entry in entries if entry.is_dir())
    if not classes and any(entry.is_file() and is_image_file(entry.name) for entry in entries):
        return [FLAT]
    if not classes:
        raise ValueError(f'image folder {root!r} has no class sub-folders and no images: '
                         f'expected {os.path.join(root, "<class>", "<image>")} or, for one '
                         f'class, {os.path.join(root, "<image>")}')
    return classes


def _walk(root: str, classes: list[str]) -> tuple[list[str], list[int], list[str]]:
    """scan_images plus every folder read (relative to root), for the index's fingerprint."""
    paths, labels, folders = [], [], []
    for label, name in enumerate(classes):
        walked = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, name), followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith('.')]  # prunes the walk
            walked.append((dirpath, filenames))
        for dirpath, filenames in sorted(walked):
            folders.append(os.path.relpath(dirpath, root))
            for filename in sorted(filenames):
                if is_image_file(filename) and not filename.startswith('.'):
                    paths.append(os.path.relpath(os.path.join(dirpath, filename), root))
                    labels.append(label)
    return paths, labels, folders


def scan_images(root: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """(paths relative to root, labels) of every image under each class folder, in sorted order.

    Folders are walked in sorted order of their paths and files in sorted order of their names,
    as the original does, so the order (and an HDF5 file made from it) matches the original's.
    Hidden files and folders (``.name``, e.g. macOS's ``._x.jpg``) are skipped.
    """
    paths, labels, _ = _walk(root, classes)
    _check_found(root, classes, paths, labels)
    return paths, labels


def _check_found(root: str, classes: list[str], paths: list[str], labels: list[int]) -> None:
    if not paths:
        raise ValueError(f'found 0 images in {root!r} (classes {classes[:5]}...; extensions '
                         f'{", ".join(IMG_EXTENSIONS)})')
    empty = [name for label, name in enumerate(classes) if label not in set(labels)]
    if empty:
        shown = ', '.join(repr(os.path.join(root, name)) for name in empty[:5])
        raise ValueError(f'{len(empty)} class folder(s) hold no images: {shown}; a class '
                         f'without images would get a label and never be seen. Remove the '
                         f'folder(s) or add images')


def _unreadable(path: str) -> str | None:
    """Why PIL cannot decode the image at `path`, or None."""
    try:
        with Image.open(path) as img:
            img.load()  # decodes the whole file: a truncated one fails here, not at open
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f'{type(err).__name__}: {err}'


def check_images(root: str, paths: list[str]) -> None:
    """Decode every image once, on a thread per core (PIL decodes without the GIL); a
    ValueError listing the files that cannot be read. Run when the index is built, so a bad
    file stops the run before training, not when its batch comes up."""
    from concurrent.futures import ThreadPoolExecutor
    full = [os.path.join(root, p) for p in paths]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        problems = [(p, why) for p, why in zip(full, pool.map(_unreadable, full, chunksize=64))
                    if why]
    if problems:
        shown = '; '.join(f'{p!r} ({why})' for p, why in problems[:5])
        more = f' and {len(problems) - 5} more' if len(problems) > 5 else ''
        raise ValueError(f'{len(problems)} image file(s) in {root!r} cannot be read: '
                         f'{shown}{more}. Remove or replace them')


def index_cache_path(root: str, index_dir: str | None = None) -> str:
    """Where the index of image folder ``root`` is cached.

    The file name carries a hash of the folder's real path, so two folders never share a
    cache. ``index_dir`` None means beside the folder (its parent) when that is writable, else
    INDEX_FALLBACK_DIR.
    """
    real_root = os.path.realpath(root)
    key = hashlib.sha1(os.fsencode(real_root)).hexdigest()[:12]  # any name, UTF-8 or not
    if index_dir is None:
        parent = os.path.dirname(real_root)
        index_dir = parent if os.access(parent, os.W_OK) else INDEX_FALLBACK_DIR
    return os.path.join(index_dir, f'{os.path.basename(real_root)}_{key}_imgs.npz')


def _fingerprint(root: str, folders: list[str]) -> np.ndarray | None:
    """Each folder's modification time (ns) and number of entries: adding, removing or renaming
    anything in a folder changes both or one (the count guards file systems with coarse
    times). None when a folder is gone."""
    rows = []
    try:
        for folder in folders:
            path = os.path.join(root, folder)
            rows.append((os.stat(path).st_mtime_ns, len(os.listdir(path))))
    except OSError:
        return None
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _load_index(path: str, root: str,
                classes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached index when it was made for this folder and nothing in any folder it read
    (the class folders and all their sub-folders) has changed since; else None."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            if (int(cached['version']) != _INDEX_VERSION
                    or str(cached['root']) != os.path.realpath(root)
                    or cached['classes'].tolist() != classes):
                return None
            folders = [os.fsdecode(f) for f in cached['folders'].tolist()]
            now = _fingerprint(root, folders)
            if now is None or not np.array_equal(cached['fingerprint'], now):
                return None
            return cached['paths'], cached['labels']
    except (OSError, KeyError, ValueError):
        pass  # unreadable or from another version: rebuilt below
    return None


def _save_index(path: str, root: str, classes: list[str], folders: list[str],
                fingerprint: np.ndarray, paths: np.ndarray, labels: np.ndarray) -> None:
    folder = os.path.dirname(path) or '.'
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda f: np.savez(  # readers never see a half-written index
            f, version=_INDEX_VERSION, root=os.path.realpath(root), classes=np.array(classes),
            folders=np.array([os.fsencode(p) for p in folders]), fingerprint=fingerprint,
            paths=paths, labels=labels))
    except OSError as err:
        warnings.warn(f'could not write the image index cache {path!r} ({err}); the folder '
                      'will be scanned again next time (pass index_dir to choose a place)',
                      stacklevel=2)


def _has_subfolders(folder: str) -> bool:
    return any(entry.is_dir() for entry in os.scandir(folder))


class ImageFolder(Dataset):
    """Images in ``root/<class>/**/<image>``; classes are the sorted sub-folder names.

    The (path, label) index is cached in ``index_cache_path(root, index_dir)`` and reused only
    for the same folder when no folder it read (each class folder and every sub-folder) has
    changed since (the original kept it in the working directory and reused it for any folder).
    ``load_in_mem`` decodes and transforms every image once here, so augmentation is frozen,
    as in the original.
    """

    def __init__(self, root: str, transform: Callable | None = None,
                 target_transform: Callable | None = None,
                 loader: Callable[[str], Image.Image] = pil_loader, load_in_mem: bool = False,
                 index_dir: str | None = None) -> None:
        self.root = root
        self.classes = find_classes(root)
        if len(self.classes) == 1 and _has_subfolders(os.path.join(root, self.classes[0])):
            # A common slip (original issue #26): one folder too high, every label 0.
            warnings.warn(f'{root!r} has a single class folder {self.classes[0]!r}; if its '
                          'sub-folders are the classes, point --data_root at it instead',
                          stacklevel=2)
        self.index_path = index_cache_path(root, index_dir)
        index = _load_index(self.index_path, root, self.classes)
        if index is None:
            paths, labels, folders = _walk(root, self.classes)
            # Taken before the images are read: a change during the check is seen next time.
            fingerprint = _fingerprint(root, folders)
            _check_found(root, self.classes, paths, labels)
            check_images(root, paths)  # once: the index is cached only for readable images
            # Byte strings in one numpy array: 1 byte a character, and no per-item Python
            # objects whose reference counts would copy the list into every worker.
            index = (np.array([os.fsencode(p) for p in paths]), np.array(labels, np.int64))
            if fingerprint is not None:
                _save_index(self.index_path, root, self.classes, folders, fingerprint, *index)
        self.paths, self.labels = index  # paths relative to root, as bytes
        self.transform, self.target_transform, self.loader = transform, target_transform, loader
        self.data = None
        if load_in_mem:
            self.data = [self._load(i) for i in range(len(self.paths))]

    def _load(self, index: int):
        path = os.path.join(self.root, os.fsdecode(self.paths[index]))
        try:
            img = self.loader(path)
        except (OSError, ValueError):
            if os.path.exists(path):
                raise
            raise FileNotFoundError(
                f'image file {path!r} is gone: {self.root!r} changed after its index '
                f'{self.index_path!r} was read. Start again (with --resume) to index the folder '
                f'afresh; the index is rebuilt when anything in the folder changes') from None
        return self.transform(img) if self.transform is not None else img

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        img = self.data[index] if self.data is not None else self._load(index)
        label = int(self.labels[index])
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label

# ---------------------------------------------------------------------------------------------
# HDF5 files (make_hdf5.py's layout)


def read_hdf5_layout(path: str) -> tuple[int, int, np.ndarray, int | None]:
    """Check that ``path`` holds ``imgs`` uint8 N x 3 x S x S and ``labels`` N integers in
    ``[0, n_classes)``.

    n_classes is the file's own (``labels.attrs['n_classes']``, which make_hdf5.py writes), or
    None for a file without it (the original's; see ``implied_classes``).
    Returns (N, S, labels, n_classes). Raises FileNotFoundError or ValueError naming the file
    and the fault.
    """
    if os.path.isdir(path):
        raise ValueError(f'{path!r} is a folder: for HDF5 data --data_root names the .hdf5 file')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'HDF5 file {path!r} does not exist (check --data_root; '
                                'make one with make_hdf5.py)')
    expected = 'expected imgs uint8 N x 3 x S x S and labels int64 N (make_hdf5.py layout)'
    try:
        f = h5py.File(path, 'r')
    except OSError as err:
        raise ValueError(f'{path!r} is not a readable HDF5 file: {err}') from err
    with f:
        for key in ('imgs', 'labels'):
            if not isinstance(f.get(key), h5py.Dataset):
                raise ValueError(f'HDF5 file {path!r} has no dataset {key!r} (found '
                                 f'{sorted(f.keys())}); {expected}')
        imgs, labels = f['imgs'], f['labels']
        shape = imgs.shape
        if (len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[0] == 0
                or imgs.dtype != np.uint8):
            raise ValueError(f'HDF5 file {path!r}: imgs is {imgs.dtype} {shape}; {expected}')
        if labels.shape != (shape[0],) or labels.dtype.kind not in 'iu':
            raise ValueError(f'HDF5 file {path!r}: labels is {labels.dtype} {labels.shape} for '
                             f'{shape[0]} images; {expected}')
        label_array = labels[:].astype(np.int64)
        declared = labels.attrs.get('n_classes')
    if label_array.min() < 0:
        raise ValueError(f'HDF5 file {path!r}: negative label {label_array.min()}; labels '
                         f'must lie in [0, number of classes)')
    top = int(label_array.max())
    if declared is not None:
        if (np.ndim(declared) != 0 or not np.issubdtype(np.asarray(declared).dtype, np.integer)
                or int(declared) < 1):
            raise ValueError(f'HDF5 file {path!r}: labels.attrs["n_classes"] is {declared!r}, '
                             f'not a positive integer')
        if top >= int(declared):
            count = int((label_array >= int(declared)).sum())
            raise ValueError(f'HDF5 file {path!r}: {count} label(s) outside [0, {int(declared)})'
                             f' (the largest is {top}), the range its labels.attrs["n_classes"] '
                             f'declares; fix the labels or remake the file with make_hdf5.py')
        return shape[0], shape[2], label_array, int(declared)
    return shape[0], shape[2], label_array, None


def implied_classes(path: str, labels: np.ndarray) -> int:
    """The number of classes of an HDF5 file that declares none (the original's files): max
    label + 1, when every class up to it has images. A gap is refused, naming the file: most
    likely a stray label, which would give the model classes it never sees."""
    top = int(labels.max())
    present = np.zeros(top + 1, bool)
    present[labels] = True
    if not present.all():
        missing = np.flatnonzero(~present)
        shown = ', '.join(str(c) for c in missing[:5]) + (', ...' if len(missing) > 5 else '')
        raise ValueError(f'HDF5 file {path!r}: labels run to {top} but {len(missing)} of the '
                         f'{top + 1} classes this implies have no image ({shown}): a stray '
                         f'label would give the model classes it never sees. Fix the labels, '
                         f'or declare the classes: labels.attrs["n_classes"] = N (h5py)')
    return top + 1


class ILSVRC_HDF5(Dataset):
    """Images and labels from an HDF5 file in make_hdf5.py's layout (the original's too).

    ``load_in_mem`` reads both arrays into RAM; otherwise each DataLoader worker opens the file
    once, on its first item (the original reopened it for every item and kept a handle open in
    the main process, which h5py cannot share across fork). Items are ``((u8 / 255) - 0.5) * 2``;
    ``transform``, when given, applies to that tensor (the original ignored it).
    """

    def __init__(self, root: str, transform: Callable | None = None,
                 target_transform: Callable | None = None, load_in_mem: bool = False) -> None:
        self.root = root
        _, self.resolution, self.labels, self.n_classes = read_hdf5_layout(root)
        self.transform, self.target_transform = transform, target_transform
        with h5py.File(root, 'r') as f:
            self.data = f['imgs'][:] if load_in_mem else None
            compressed = f['imgs'].compression is not None
            chunk_bytes = int(np.prod(f['imgs'].chunks or (0,)))
        # Compressed files get a chunk cache that holds one whole chunk, so in-order reads
        # decompress each chunk once instead of once per image. Uncompressed files keep
        # h5py's small cache: HDF5 then reads just the image asked for, where a cached chunk
        # would read all of its 500 images for each shuffled access.
        self._cache_bytes = min(chunk_bytes + 2**20, _MAX_CHUNK_CACHE) if compressed else 0
        self._file, self._imgs, self._pid = None, None, None

    def _images(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.root, 'r'), os.getpid()
            self._imgs = self._file['imgs']
            if self._cache_bytes:
                # The size must go on the dataset's access list: h5py's
                # File(rdcc_nbytes=) does not reach a dataset opened as f['imgs'] (h5py 3.16).
                access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                access.set_chunk_cache(521, self._cache_bytes, 0.75)
                self._imgs = h5py.Dataset(h5py.h5d.open(self._file.id, b'imgs', access))
        return self._imgs

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_file'] = state['_imgs'] = None  # h5py handles do not pickle; workers reopen
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        img_u8 = self.data[index] if self.data is not None else self._images()[index]
        img = to_unit_range(torch.from_numpy(img_u8))
        if self.transform is not None:
            img = self.transform(img)
        label = int(self.labels[index])
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label

# ---------------------------------------------------------------------------------------------
# CIFAR (through torchvision)


def cifar(root: str, n_classes: int, transform: Callable | None = None,
          download: bool = True) -> Dataset:
    """The CIFAR-10 or CIFAR-100 training split (50,000 images) from ``root``.

    Where the files are missing and ``download`` is on, torchvision downloads them (needs the
    internet); otherwise FileNotFoundError says where to put them.
    """
    cls = {10: torchvision.datasets.CIFAR10, 100: torchvision.datasets.CIFAR100}[n_classes]
    hint = (f'CIFAR-{n_classes} is not in {os.path.join(root, cls.base_folder)!r}: extract '
            f'{cls.filename} ({cls.url}) into {root!r} (check --data_root)')
    try:
        return cls(root, train=True, transform=transform, download=False)
    except RuntimeError as err:
        if not download:
            raise FileNotFoundError(hint) from err
    try:
        return cls(root, train=True, transform=transform, download=True)
    except (OSError, RuntimeError) as err:
        raise FileNotFoundError(f'{hint}; the download failed: {err}') from err

# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian package dataset-fashion-mnist)


FMNIST_SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
FMNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')
FMNIST_INSTALL_HINT = ('install it with `apt-get install dataset-fashion-mnist` (as root; files go '
                       f'to {FMNIST_SYSTEM_DIR}), or pass --data_root to a folder holding the four '
                       f'.gz files ({", ".join(FMNIST_FILES)})')


def has_fmnist(folder: str) -> bool:
    """True when ``folder`` holds the Fashion-MNIST training files."""
    return all(os.path.isfile(os.path.join(folder, name)) for name in FMNIST_FILES[:2])


def _read_idx(path: str, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    header = 8 + 4 * len(item_shape)  # labels: offset 8; images: offset 16
    values = np.frombuffer(raw, dtype='>u4', count=header // 4) if len(raw) >= header else []
    if len(values) == 0 or values[0] != magic or tuple(values[2:]) != item_shape:
        raise ValueError(f'{path!r} is not an idx file of {item_shape} uint8 items')
    n = int(values[1])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != n * int(np.prod(item_shape, dtype=np.int64)):
        raise ValueError(f'{path!r} is truncated: {data.size} bytes for {n} items')
    return data.reshape(n, *item_shape)


class FashionMNIST(Dataset):
    """Fashion-MNIST's 60,000 training images as 3 x 32 x 32 in [-1, 1], 10 classes.

    The 28 x 28 grey images are padded to 32 x 32 with black (their own background) and the
    channel is repeated to RGB. ``transform`` (augmentation) applies to the padded uint8 tensor
    1 x 32 x 32, before the scaling.
    """

    def __init__(self, folder: str, transform: Callable | None = None) -> None:
        if not has_fmnist(folder):
            raise FileNotFoundError(f'Fashion-MNIST not found in {folder!r}: {FMNIST_INSTALL_HINT}')
        self.folder = folder
        labels = _read_idx(os.path.join(folder, FMNIST_FILES[1]), 2049, ())
        images = _read_idx(os.path.join(folder, FMNIST_FILES[0]), 2051, (28, 28))
        if len(images) != len(labels):
            raise ValueError(f'Fashion-MNIST in {folder!r}: {len(images)} images but '
                             f'{len(labels)} labels')
        self.images = torch.from_numpy(np.pad(images, ((0, 0), (2, 2), (2, 2))))[:, None]
        self.labels = labels.astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        img = self.images[index]
        if self.transform is not None:
            img = self.transform(img)
        return to_unit_range(img).expand(3, -1, -1), int(self.labels[index])
