"""Data-loader throughput, in images per second, on synthetic data made in a temporary folder.

Writes an image folder of JPEGs (photo-like: smooth colour fields plus grain, 500 x 375 by
default, about ImageNet's average), converts it with make_hdf5.py, then times a shuffled pass
of the training loader (after a warm-up pass) over: the HDF5 file in memory, the HDF5 file
streamed, the image folder. Prints one JSON line per measurement.

    python scripts/utils/bench_data.py --n_images 2000 --resolution 128 --num_workers 2
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import datasets  # noqa: E402
import make_hdf5  # noqa: E402


def make_folder(root: str, n_images: int, n_classes: int, width: int, height: int,
                seed: int = 0) -> None:
    """``n_images`` JPEGs spread over ``n_classes`` class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        folder = os.path.join(root, f'class{i % n_classes:03d}')
        os.makedirs(folder, exist_ok=True)
        # Low-resolution colour noise upsampled (smooth regions, like photos) plus fine grain.
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
        pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f'{i:06d}.jpg'), quality=90)


def time_pass(loader) -> tuple[int, float]:
    """(images, seconds) of one whole pass, worker start-up included, after a warm-up pass.

    The warm-up pass builds the folder index and fills the page cache, as any epoch after
    the first of a training run finds them.
    """
    for _ in loader:
        pass
    images, start = 0, time.perf_counter()
    for x, _ in loader:
        images += len(x)
    return images, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Make the data, time each loader, print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n_images', type=int, default=2000)
    parser.add_argument('--n_classes', type=int, default=10)
    parser.add_argument('--source_size', type=int, nargs=2, default=(500, 375),
                        metavar=('W', 'H'), help='size of the synthetic JPEGs')
    parser.add_argument('--resolution', type=int, default=128)
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--num_workers', type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    common = {'device': platform.processor() or platform.machine(), 'cpus': os.cpu_count(),
              'torch': torch.__version__, 'resolution': args.resolution,
              'batch_size': args.batch_size, 'num_workers': args.num_workers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, 'images')
        start = time.perf_counter()
        make_folder(folder, args.n_images, args.n_classes, *args.source_size)
        made = time.perf_counter() - start
        hdf5_path = make_hdf5.run({'dataset': 'ImageFolder', 'data_root': folder,
                                   'resolution': args.resolution, 'batch_size': 256,
                                   'num_workers': args.num_workers, 'chunk_size': 500,
                                   'compression': False, 'out': ''})
        print(json.dumps({'setup': 'synthetic data', 'images': args.n_images,
                          'source_size': args.source_size, 'seconds_to_make': round(made, 1),
                          'hdf5_mb': round(os.path.getsize(hdf5_path) / 2**20, 1)}))
        runs = [('hdf5_in_memory', 'HDF5', hdf5_path, True),
                ('hdf5_streamed', 'HDF5', hdf5_path, False),
                ('image_folder', 'ImageFolder', folder, False)]
        for name, dataset, root, in_mem in runs:
            loader = datasets.get_data_loaders(
                dataset, root, batch_size=args.batch_size, num_workers=args.num_workers,
                shuffle=True, load_in_mem=in_mem, resolution=args.resolution,
                index_dir=tmp)[0]
            images, seconds = time_pass(loader)
            # The load average shows when other work shared the CPUs during the pass.
            print(json.dumps({'source': name, **common, 'images': images,
                              'seconds': round(seconds, 3),
                              'images_per_s': round(images / seconds, 1),
                              'load_avg_1min': round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == '__main__':
    main()
