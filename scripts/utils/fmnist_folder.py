"""Export the first N Fashion-MNIST training images of each class as an image folder.

    python scripts/utils/fmnist_folder.py --out data/fmnist_folder --per_class 10

writes `<out>/<class name>/<index>.png` (28 x 28 grey PNGs), the layout `--dataset ImageFolder`
and `make_hdf5.py --dataset ImageFolder` read: a small, real data set for trying the ImageNet
launch scripts, fine-tuning or custom-data training on a machine without ImageNet. The images
come from the Fashion-MNIST files train.py reads (`--data_root`, default `data`: Debian's
dataset-fashion-mnist where no files are there). Existing files of the same names are replaced.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import data_sources  # noqa: E402
import datasets  # noqa: E402
import utils  # noqa: E402

CLASS_NAMES = ('tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker',
               'bag', 'ankle_boot')


def export(data_root: str, out: str, per_class: int) -> int:
    """Write `per_class` images of each class to `out`; return how many were written."""
    folder = datasets.fmnist_folder(data_root)
    data = data_sources.FashionMNIST(folder)
    labels = np.asarray(data.labels)
    written = 0
    for label, name in enumerate(CLASS_NAMES):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for index in np.flatnonzero(labels == label)[:per_class]:
            image = data.images[index, 0, 2:-2, 2:-2].numpy()  # the 28 x 28 original, unpadded
            Image.fromarray(image, mode='L').save(os.path.join(out, name, f'{index:05d}.png'))
            written += 1
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='the folder to write')
    parser.add_argument('--per_class', type=int, default=10,
                        help='images per class, 1 to 6000 (default 10)')
    parser.add_argument('--data_root', default='data', help='where the Fashion-MNIST files are')
    args = parser.parse_args(argv)
    if not 1 <= args.per_class <= 6000:
        parser.error(f'--per_class must be in 1..6000 (each class has 6,000 training images), '
                     f'got {args.per_class}')
    with utils.exit_on_user_error():
        written = export(args.data_root, args.out, args.per_class)
    print(f'{written} images in {len(CLASS_NAMES)} class folders under {args.out}')


if __name__ == '__main__':
    main()
