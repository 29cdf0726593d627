"""Score Fashion-MNIST samples offline: class accuracy and FID in a small classifier's feature
space, and the real data's floor (the classifier and its cache: fmnist_scorer.py).

    python scripts/utils/score_fmnist.py --npz samples/EXP/samples.npz   # from sample.py
    python scripts/utils/score_fmnist.py --floor

Each prints one JSON line; bad input is one `error:` line and exit status 2.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import metric_inputs  # noqa: E402
import utils  # noqa: E402
from fmnist_scorer import (CACHE_NAME, FALLBACK_DIR, SIZE, VALID_IMAGES, Scorer,  # noqa: E402,F401
                           as_labels, save_cache)


def read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of an npz: images under `x` or `arr_0`, labels under `y` or `arr_1`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--npz {path}: no such file')
    try:
        f = np.load(path, allow_pickle=False)
    except Exception as err:  # not a zip, a truncated file, a pickle
        raise ValueError(f'--npz {path} is not a readable npz file ({err})') from err
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f'--npz {path} is a single .npy array, not an npz file; valid: '
                         f'np.savez(path, x=images, y=labels)')
    with f:
        keys = list(f.files)
        image_key = next((k for k in ('x', 'arr_0') if k in keys), None)
        label_key = next((k for k in ('y', 'arr_1') if k in keys), None)
        if image_key is None or label_key is None:
            missing = ('images under "x" or "arr_0"' if image_key is None
                       else 'labels under "y" or "arr_1"')
            raise ValueError(f'--npz {path}: no {missing} (it has: '
                             f'{", ".join(keys) or "nothing"})')
        try:
            x, y = f[image_key], f[label_key]
        except Exception as err:  # a corrupt member, an object array
            raise ValueError(f'--npz {path}: cannot read "{image_key}" and "{label_key}" '
                             f'({err})') from err
    where = f'--npz {path} key "{image_key}"'
    x = metric_inputs.as_images(x, where)  # NHWC -> NCHW, [0, 1] floats -> [-1, 1]
    if x.shape[2:] != (SIZE, SIZE):
        raise ValueError(f'{where}: shape {x.shape}: {x.shape[2]} x {x.shape[3]} images; '
                         f'{VALID_IMAGES}')
    if len(x) < 2:
        raise ValueError(f'{where}: {len(x)} image(s); FID needs at least 2 (thousands for a '
                         f'number worth comparing)')
    return x, as_labels(y, len(x), f'--npz {path} key "{label_key}"').numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--npz', help='samples to score: images under x (or arr_0), uint8 '
                      'N x 3 x 32 x 32 or N x 32 x 32 x 3, labels under y (or arr_1)')
    what.add_argument('--floor', action='store_true',
                      help="print only the floor: the scores of real images")
    parser.add_argument('--data_root', default='data',
                        help='where Fashion-MNIST is looked for, as train.py (default: data)')
    parser.add_argument('--cache', default=None,
                        help=f'the classifier cache (default: <data_root>/{CACHE_NAME}, or '
                        f'{FALLBACK_DIR}/{CACHE_NAME} where data_root is not writable)')
    parser.add_argument('--retrain', action='store_true',
                        help='train the classifier anew, ignoring a cached one')
    parser.add_argument('--summary', action='store_true',
                        help='one sentence for people instead of the JSON line')
    args = parser.parse_args(argv)
    with utils.exit_on_user_error():
        images = labels = None
        if args.npz:  # checked before a possibly long training
            images, labels = read_npz(args.npz)
        scorer = Scorer(args.data_root, args.cache, args.retrain)
        floor = scorer.floor()
        out = {}
        if args.npz:
            out = {'npz': args.npz, **scorer.score(images, labels)}
        out.update({'floor_accuracy': floor['accuracy'], 'floor_FID': floor['FID'],
                    'floor_num_images': floor['num_images'],
                    'classifier_test_accuracy': scorer.test_accuracy})
        if args.summary and args.npz:
            print(f"Score of {out['num_images']:,} samples: classifier accuracy "
                  f"{out['accuracy']:.3f} (real images: {out['floor_accuracy']:.3f}), FID in "
                  f"its features {out['FID']:.2f} (real images: {out['floor_FID']:.2f})")
        else:
            print(json.dumps(out))


if __name__ == '__main__':
    main()
