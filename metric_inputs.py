"""What the metrics read: moments files and saved samples, in the layouts papers use.

- Moments files: ours (`mu`, `sigma`, `kid_features`, and the provenance `inception`,
  `dataset`, `resolution`, `num_images`; per-class `class_mu`, `class_sigma`, `class_count`
  for intra-class FID), the original's (`mu`, `sigma` of the torchvision
  network, with no `inception` key) and the ADM / guided-diffusion evaluator's reference batches
  (`mu`, `sigma` of TF Inception pool3 features, plus `mu_s`, `sigma_s` and the reference images
  `arr_0`). `load_moments` checks them; `save_moments` writes atomically.
- Samples: an npz with images under `x` (sample.py) or `arr_0` (ADM) and optional labels under
  `y` or `arr_1`; uint8 N x 3 x H x W or N x H x W x 3, or float in [-1, 1] or [0, 1]; or a
  folder of image files. `sample_batches` yields uint8 or [-1, 1] float batches, N x 3 x H x W;
  `sample_labels` reads the labels.
"""
import os
import warnings
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

from atomic import atomic_write

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.webp', '.tif', '.tiff')
# The network a moments file without an `inception` key was made with: the original's
# calculate_inception_moments.py used torchvision's, ADM's evaluator TF's pool3 (its reference
# batches carry `mu_s` / `sigma_s`, the spatial features, beside `mu` and `sigma`).
ORIGINAL_NETWORK = 'torchvision'
ADM_KEYS = ('mu_s', 'sigma_s')


# --- the moments file ------------------------------------------------------------------------

def dataset_stem(dataset: str) -> str:
    """The dataset without a trailing `_hdf5`: I128_hdf5 holds I128's images.

    The original used `dataset.strip('_hdf5')`, which strips any of the characters _ h d f 5
    from both ends (so 'C5' lost its 5); this removes the suffix only.
    """
    return dataset[:-len('_hdf5')] if dataset.endswith('_hdf5') else dataset


def default_moments_path(dataset: str) -> str:
    """The original's file name: `<dataset without a trailing _hdf5>_inception_moments.npz`."""
    return f'{dataset_stem(dataset)}_inception_moments.npz'


def moments_command(dataset: str, kind: str, path: str) -> str:
    """The command line that writes the moments file a run expects."""
    return (f'python calculate_inception_moments.py --dataset {dataset} --data_root DIR '
            f'--inception {kind} --moments_path {path}')


def made_with(stored: dict) -> str:
    """The Inception network a moments file's features come from."""
    if 'inception' in stored:
        return str(stored['inception'])
    return 'tf' if all(key in stored for key in ADM_KEYS) else ORIGINAL_NETWORK


def load_moments(path: str, kind: Optional[str] = None, need_kid: bool = False,
                 hint: str = '', dataset: Optional[str] = None,
                 resolution: Optional[int] = None) -> dict:
    """Read a moments file: 'mu' (D,) and 'sigma' (D, D) as float64, 'kid_features' (K, D) when
    the file has it, 'reference_images' (the npz key, when an ADM batch holds `arr_0`) and its
    provenance. Raises a clear error for a missing file, a missing key, mismatched shapes, or
    features of another network than `kind` (a file without an `inception` key is the
    original's, made with torchvision's network). A file made from another dataset or
    resolution than the given ones is a warning naming both.
    """
    remedy = f' Make it with: {hint}' if hint else ''
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Inception moments file {path} not found.{remedy}')
    try:
        with np.load(path) as f:
            # The reference images stay on disk until KID or precision / recall want them.
            stored = {key: f[key] for key in f.files if key != 'arr_0'}
            has_images = 'arr_0' in f.files
    except Exception as err:
        raise ValueError(f'Inception moments file {path} is not a readable npz ({err})') from err
    wanted = ('mu', 'sigma') + (('kid_features',) if need_kid else ())
    missing = [key for key in wanted if key not in stored]
    if missing:
        raise ValueError(f'Inception moments file {path} lacks {", ".join(missing)} (it has: '
                         f'{", ".join(stored) or "nothing"}).{remedy}')
    network = made_with(stored)
    if kind is not None and network != kind:
        how = ('was made with --inception ' + network if 'inception' in stored else
               'has no "inception" key: it is the original\'s, made with the torchvision '
               'network')
        raise ValueError(f'Inception moments file {path} {how}; this run uses --inception '
                         f'{kind}, whose features differ. Recompute it: '
                         f'{hint or moments_command("DATASET", kind, path)}')
    mu = np.asarray(stored['mu'], np.float64).reshape(-1)
    sigma = np.asarray(stored['sigma'], np.float64)
    if sigma.shape != (len(mu), len(mu)):
        raise ValueError(f'Inception moments file {path}: mu {mu.shape} and sigma {sigma.shape} '
                         f'must be D and D x D')
    moments = {'mu': mu, 'sigma': sigma, 'inception': network}
    if 'kid_features' in stored:
        moments['kid_features'] = np.asarray(stored['kid_features'], np.float32)
    if 'class_mu' in stored and 'class_sigma' in stored:  # --per_class_moments
        moments['class_mu'] = np.asarray(stored['class_mu'], np.float64)
        moments['class_sigma'] = stored['class_sigma']
        if moments['class_sigma'].shape != (len(moments['class_mu']), len(mu), len(mu)):
            raise ValueError(f"Inception moments file {path}: class_mu "
                             f"{moments['class_mu'].shape} and class_sigma "
                             f"{moments['class_sigma'].shape} must be C x D and C x D x D")
    for key in ('mu', 'sigma', 'kid_features', 'class_mu', 'class_sigma'):
        if key in moments and not np.isfinite(moments[key]).all():
            bad = int(np.size(moments[key]) - np.isfinite(moments[key]).sum())
            raise ValueError(f'Inception moments file {path}: {key} holds {bad} NaN or '
                             f'infinite value(s); an FID against it would be NaN. Recompute '
                             f'it: {hint or moments_command("DATASET", network, path)}')
    if has_images:
        moments['reference_images'] = path
    dataset = None if dataset is None else dataset_stem(dataset)
    for key, expected in (('dataset', dataset), ('resolution', resolution)):
        if key in stored:
            moments[key] = stored[key].item()
            if expected is not None and moments[key] != expected:
                warnings.warn(f'Inception moments file {path} was made from {key} '
                              f'{moments[key]!r}; this run has {key} {expected!r}', stacklevel=2)
    return moments


def save_moments(path: str, **arrays: np.ndarray) -> None:
    """Write an npz atomically (atomic.atomic_write), so a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # np.savez into a file object: given a name, it would append '.npz' to it.
    atomic_write(path, lambda f: np.savez(f, **arrays))


# --- samples ---------------------------------------------------------------------------------

def as_images(x: np.ndarray, where: str) -> np.ndarray:
    """An image array as N x 3 x H x W: uint8 kept, floats in [0, 1] mapped to [-1, 1] (float32)
    and floats in [-1, 1] kept; anything else is refused, naming `where` and what is valid."""
    valid = ('valid: uint8 or float images, N x 3 x H x W or N x H x W x 3, floats in [-1, 1] '
             'or [0, 1]')
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise ValueError(f'{where}: shape {x.shape} ({x.dtype}) is not a batch of RGB images; '
                         f'{valid}')
    if x.shape[1] != 3:
        x = x.transpose(0, 3, 1, 2)  # N x H x W x 3 (ADM, PIL, TF)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f'{where}: dtype {x.dtype} with shape {x.shape}; {valid}')
    low, high = float(x.min()), float(x.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < -1 or high > 1:
        raise ValueError(f'{where}: float images range over [{low:g}, {high:g}], neither '
                         f'[-1, 1] nor [0, 1]; {valid}')
    x = np.ascontiguousarray(x, dtype=np.float32)
    # No negative value: the [0, 1] convention (ToTensor, ADM's float dumps).
    return x * 2 - 1 if low >= 0 else x


def npz_images(path: str, what: str = '--samples') -> np.ndarray:
    """The images of an npz: key `x` (sample.py) or `arr_0` (ADM, np.savez without names)."""
    try:
        loaded = np.load(path)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy: one bare array
            raise ValueError(f'{what} {path}: a .npy array, not an npz; save the images with '
                             f'np.savez(path, x=images)')
        with loaded as f:
            key = next((k for k in ('x', 'arr_0') if k in f.files), None)
            if key is None:
                raise ValueError(f'{what} {path}: no images under "x" or "arr_0" (it has: '
                                 f'{", ".join(f.files) or "nothing"})')
            x = f[key]
    except ValueError as err:
        if str(path) in str(err):
            raise
        # numpy's own messages (an object array, a damaged zip) name no file.
        raise ValueError(f'{what} {path}: not a readable npz of images ({err})') from None
    return as_images(x, f'{what} {path} key "{key}"')


def sample_labels(path: str) -> Optional[np.ndarray]:
    """The class labels of an npz of samples (`y`, sample.py; `arr_1`, ADM), or None (a
    folder, or an npz without them)."""
    if not os.path.isfile(path):
        return None
    try:
        loaded = np.load(path)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return None  # a bare .npy holds no labels (npz_images says what it should be)
        with loaded as f:
            key = next((k for k in ('y', 'arr_1') if k in f.files), None)
            return None if key is None else np.asarray(f[key]).reshape(-1).astype(np.int64)
    except ValueError as err:  # numpy's messages (an object array, a damaged zip) name no file
        raise ValueError(f'--samples {path}: its labels are not readable ({err}); valid: '
                         f'integer class labels under "y" or "arr_1"') from None


def _folder_images(path: str, batch_size: int) -> Tuple[int, Iterator[torch.Tensor]]:
    """(count, batches) of the image files below a folder, sorted, as uint8 N x 3 x H x W.

    Consecutive images of one size share a batch; a change of size starts a new one.
    """
    from PIL import Image
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                   for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f'--samples {path}: no image files ({", ".join(IMAGE_EXTENSIONS)})')

    def batches():
        batch = []
        for file in files:
            with Image.open(file) as image:
                x = torch.from_numpy(np.array(image.convert('RGB'))).permute(2, 0, 1)
            if batch and (len(batch) == batch_size or batch[0].shape != x.shape):
                yield torch.stack(batch)
                batch = []
            batch.append(x)
        yield torch.stack(batch)
    return len(files), batches()


def array_batches(x: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    return (torch.from_numpy(x[i:i + batch_size]) for i in range(0, len(x), batch_size))


def sample_batches(path: str, batch_size: int) -> Tuple[int, Iterator[torch.Tensor]]:
    """(count, batches) of the images of an npz or an image folder (see the module doc)."""
    if os.path.isdir(path):
        return _folder_images(path, batch_size)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--samples {path}: no such npz file or folder')
    x = npz_images(path)
    return len(x), array_batches(x, batch_size)
