"""Convert a dataset (an image folder, usually ImageNet) into one HDF5 file for fast loading.

Layout, as the original's: dataset ``imgs`` uint8 N x 3 x S x S and ``labels`` int64 N, chunked
``chunk_size`` images along N, optionally LZF-compressed. The default output is
``<data_root>/ILSVRC<S>.hdf5`` (``<folder><S>.hdf5`` beside the folder for ``--dataset
ImageFolder``). Two changes: pixels are rounded back to uint8 (the original truncated, moving
63 of the 256 values one down), and the file is written under a temporary name and renamed at
the end, so a crash never leaves a half-written file under the final name.

    python make_hdf5.py --dataset I128 --data_root data --batch_size 256
"""
import argparse
import os
import shutil
import sys

import h5py
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import atomic
from datasets import check_resolution, dataset_info, get_data_loaders
from utils import exit_on_interrupt, exit_on_user_error


def prepare_parser() -> argparse.ArgumentParser:
    """The original's six flags plus --out and --resolution."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dataset', type=str, default='I128',
                        help='dataset to convert: a table name without _hdf5 (I32 ... I256), or '
                             'ImageFolder with --resolution (default: %(default)s)')
    parser.add_argument('--data_root', type=str, default='data',
                        help='dataset root; for ImageFolder the folder itself '
                             '(default: %(default)s)')
    parser.add_argument('--batch_size', type=int, default=256,
                        help='images per loader batch (default: %(default)s)')
    # The original's 16, or the machine's cores where it has fewer.
    parser.add_argument('--num_workers', type=int, default=min(16, os.cpu_count() or 1),
                        help='DataLoader workers decoding images (default: 16, at most the '
                             'cores: %(default)s)')
    parser.add_argument('--chunk_size', type=int, default=500,
                        help='HDF5 chunk length along N (default: %(default)s)')
    parser.add_argument('--compression', action='store_true', default=False,
                        help='LZF-compress the datasets (smaller, slower to read)')
    parser.add_argument('--out', type=str, default='',
                        help='output file (default: <data_root>/ILSVRC<S>.hdf5)')
    parser.add_argument('--resolution', type=int, default=None,
                        help='image size S for --dataset ImageFolder')
    return parser


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8, rounded: the exact inverse of the loaders' u8 / 255 scaling."""
    return torch.round(255 * ((images + 1) / 2)).clamp_(0, 255).to(torch.uint8)


def default_output(dataset: str, data_root: str, resolution: int) -> str:
    """``<data_root>/ILSVRC<S>.hdf5``, or ``<folder><S>.hdf5`` beside a custom ImageFolder."""
    if dataset == 'ImageFolder':
        folder = os.path.normpath(data_root)
        return os.path.join(os.path.dirname(folder), f'{os.path.basename(folder)}{resolution}.hdf5')
    return os.path.join(data_root, f'ILSVRC{resolution}.hdf5')


_UNCLOSABLE = []  # h5py files that failed on a full disk (see _fill)


def _check_room(folder: str, path: str, n: int, resolution: int, compression: bool) -> None:
    """Refuse before writing when the uncompressed file cannot fit in the free space."""
    if compression:
        return  # its size is unknown until written
    need = n * (3 * resolution * resolution + 8)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise atomic.DiskFullError(
            f'{path!r} needs about {need / 2**20:,.1f} MiB ({n} images of {resolution} x '
            f'{resolution}) but {folder!r} has {free / 2**20:,.1f} MiB free; free some space, '
            f'pass --out on a larger disk, or add --compression')


def _fill(tmp: str, path: str, loader: DataLoader, resolution: int, chunk: int,
          compression: bool, n_classes: int | None) -> None:
    n = len(loader.dataset)
    f = h5py.File(tmp, 'w')
    imgs = labels = None
    try:
        imgs = f.create_dataset('imgs', shape=(n, 3, resolution, resolution), dtype='uint8',
                                chunks=(chunk, 3, resolution, resolution),
                                compression='lzf' if compression else None)
        labels = f.create_dataset('labels', shape=(n,), dtype='int64', chunks=(chunk,),
                                  compression='lzf' if compression else None)
        if n_classes is not None:  # the range readers check the labels against
            labels.attrs['n_classes'] = n_classes
        start = 0
        for x, y in tqdm(loader, desc=f'writing {os.path.basename(path)}', unit='batch'):
            imgs[start:start + len(x)] = to_uint8(x).numpy()
            labels[start:start + len(y)] = y.numpy()
            start += len(x)
        if start != n:
            raise RuntimeError(f'the loader gave {start} images for {n} items')
        f.flush()  # a full disk fails here, while the file is open, or in a write above
        f.close()
    except BaseException as error:
        full = atomic.disk_full_error(error, path) if isinstance(error, Exception) else None
        if full is None:
            f.close()
            raise
        # HDF5 cannot close a file whose cached chunks it cannot write, and freeing the h5py
        # objects then crashes the interpreter (exit 139): they are kept alive here, and
        # main() ends the process without freeing them.
        _UNCLOSABLE.append((f, imgs, labels, error))  # its traceback holds h5py objects
        raise full from None


def write_hdf5(loader: DataLoader, path: str, resolution: int, chunk_size: int = 500,
               compression: bool = False, n_classes: int | None = None) -> None:
    """Stream ``loader`` (images in [-1, 1], labels) into ``path``, atomically: under a
    temporary name (atomic.temp_path) renamed at the end; on any failure, Ctrl-C or SIGTERM
    the temporary is removed. A full disk is a DiskFullError naming ``path``."""
    n = len(loader.dataset)
    chunk = max(1, min(chunk_size, n))  # HDF5 forbids chunks longer than a fixed-size axis
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic.remove_dead_temporaries(folder)  # of make_hdf5.py runs killed before this one
    _check_room(folder, path, n, resolution, compression)
    tmp = atomic.temp_path(folder, os.path.basename(path))
    full = None
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, atomic.new_file_mode()))
        _fill(tmp, path, loader, resolution, chunk, compression, n_classes)
        os.replace(tmp, path)
    except BaseException as error:
        atomic.remove(tmp)
        full = error if isinstance(error, atomic.DiskFullError) else \
            atomic.disk_full_error(error, path)
        if full is None:
            raise
    if full is not None:
        raise full
    atomic.fsync_dir(folder)


def run(config: dict) -> str:
    """Build the loader the config names and write its HDF5 file; return the file's path."""
    dataset = config['dataset']
    if 'hdf5' in dataset.lower():
        raise ValueError(f'--dataset {dataset} is already HDF5; name the source dataset '
                         '(e.g. I128 or ImageFolder)')
    for flag in ('batch_size', 'chunk_size'):
        if config[flag] < 1:
            raise ValueError(f'--{flag} must be at least 1, got {config[flag]}')
    info = dataset_info(dataset, config['data_root'], config['resolution'])
    resolution = check_resolution(info.resolution)
    # In order, unaugmented, every image (the short final batch included).
    loader = get_data_loaders(dataset, config['data_root'], augment=False,
                              batch_size=config['batch_size'], num_workers=config['num_workers'],
                              shuffle=False, pin_memory=False, drop_last=False,
                              resolution=config['resolution'])[0]
    out = config['out'] or default_output(dataset, config['data_root'], resolution)
    write_hdf5(loader, out, resolution, config['chunk_size'], config['compression'],
               info.n_classes)
    print(f'wrote {len(loader.dataset)} images of {resolution} x {resolution} to {out}')
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run."""
    try:
        with exit_on_interrupt('no partial HDF5 file is left'), exit_on_user_error():
            run(vars(prepare_parser().parse_args(argv)))
    except SystemExit as stop:
        if _UNCLOSABLE:  # the error line is out and the temporary removed (see _fill)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(stop.code if isinstance(stop.code, int) else 2)
        raise


if __name__ == '__main__':
    main()
