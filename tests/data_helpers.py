"""Tiny data sets that the data-layer tests write into a temporary folder."""
import gzip
import os
import struct

import h5py
import numpy as np
from PIL import Image

# (relative path, size (W, H), PIL mode, format) of the tiny image folder; labels follow the
# sorted class folders: cat = 0, dog = 1. Odd sizes, both orientations, grey and RGBA, nesting.
FOLDER_IMAGES = [
    ('cat/a.png', (37, 23), 'RGB', 'PNG'),
    ('cat/b.JPG', (50, 64), 'L', 'JPEG'),
    ('cat/sub/deep/c.png', (40, 40), 'RGBA', 'PNG'),
    ('dog/x.jpeg', (64, 30), 'RGB', 'JPEG'),
    ('dog/y é.bmp', (33, 35), 'RGB', 'BMP'),  # a space and a non-ASCII letter
]
FOLDER_LABELS = [0, 0, 0, 1, 1]


def make_image_folder(root: str, seed: int = 0) -> str:
    """Write the tiny folder, plus files that are no images of it: a text file, hidden files
    and folders, an image outside the class folders."""
    rng = np.random.default_rng(seed)
    for rel, (width, height), mode, fmt in FOLDER_IMAGES:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        channels = {'RGB': 3, 'RGBA': 4, 'L': 1}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path, fmt)
    with open(os.path.join(root, 'dog', 'notes.txt'), 'w') as f:
        f.write('not an image\n')
    for hidden in ('.hidden', os.path.join('cat', '.thumbs')):  # hidden folders are skipped
        os.makedirs(os.path.join(root, hidden), exist_ok=True)
        Image.new('RGB', (8, 8)).save(os.path.join(root, hidden, 'z.png'))
    with open(os.path.join(root, 'dog', '._x.jpeg'), 'wb') as f:  # macOS metadata, no image
        f.write(b'\x00\x05\x16\x07')
    Image.new('RGB', (8, 8)).save(os.path.join(root, 'loose.png'))
    return root


def make_solid_folder(root: str, colours: dict[str, tuple[int, int, int]],
                      size: tuple[int, int] = (45, 31)) -> str:
    """One image of a single colour per class folder."""
    for name, colour in colours.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        Image.new('RGB', size, colour).save(os.path.join(root, name, 'img.png'))
    return root


def write_hdf5(path: str, imgs: np.ndarray, labels: np.ndarray) -> str:
    """An HDF5 file the way the original's make_hdf5.py grows one: batch by batch, resized."""
    n, batch = len(imgs), 3
    with h5py.File(path, 'w') as f:
        img_set = f.create_dataset('imgs', imgs[:batch].shape, dtype='uint8',
                                   maxshape=imgs.shape, chunks=(min(n, 500), *imgs.shape[1:]))
        label_set = f.create_dataset('labels', labels[:batch].shape, dtype='int64',
                                     maxshape=labels.shape, chunks=(min(n, 500),))
        img_set[...], label_set[...] = imgs[:batch], labels[:batch]
        for start in range(batch, n, batch):
            end = min(start + batch, n)
            img_set.resize(end, axis=0)
            label_set.resize(end, axis=0)
            img_set[start:end], label_set[start:end] = imgs[start:end], labels[start:end]
    return path


def random_hdf5(path: str, n: int = 10, size: int = 32, n_classes: int = 4, seed: int = 0):
    """A random HDF5 data set in the original's layout; returns (imgs, labels)."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % n_classes
    write_hdf5(path, imgs, labels)
    return imgs, labels


def write_fmnist(folder: str, images: np.ndarray, labels: np.ndarray) -> str:
    """The four Fashion-MNIST .gz idx files (the test split reuses the training arrays)."""
    os.makedirs(folder, exist_ok=True)
    for split in ('train', 't10k'):
        with gzip.open(os.path.join(folder, f'{split}-labels-idx1-ubyte.gz'), 'wb') as f:
            f.write(struct.pack('>II', 2049, len(labels)) + labels.astype(np.uint8).tobytes())
        with gzip.open(os.path.join(folder, f'{split}-images-idx3-ubyte.gz'), 'wb') as f:
            f.write(struct.pack('>IIII', 2051, len(images), 28, 28)
                    + images.astype(np.uint8).tobytes())
    return folder


def leave_dead_temporary(folder: str, name: str) -> str:
    """The temporary that a writer of `name` in `folder` leaves when it is killed: made by a
    process that has ended by the time this returns. Returns its path."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ('import sys, atomic; path = atomic.temp_path(sys.argv[1], sys.argv[2]); '
            'open(path, "wb").write(b"partial"); print(path)')
    result = subprocess.run([sys.executable, '-c', code, folder, name], cwd=root, check=True,
                            capture_output=True, text=True)
    return result.stdout.strip()


def flip_tensor_bytes(path: str, count: int = 64) -> None:
    """Damage a torch file as a bad disk or copy would: invert `count` bytes in the middle of
    its largest zip record (a tensor's data), leaving the zip's structure readable."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 26)  # the local header's name and extra-field lengths
        name_length, extra_length = struct.unpack('<HH', f.read(4))
        start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        f.seek(start)
        data = f.read(count)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))
