"""Inception metrics for training, sampling and scoring: IS, FID and KID end to end.

- `load_inception_net`: the TF-exact (default) or torchvision Inception with its weights.
- `prepare_inception_metrics` -> `get_inception_metrics(sample, num_inception_images, ...)`, the
  original's monitoring call: loads the net on its first call only, works on the CPU, gathers
  features across processes under torch.distributed, and returns (IS_mean, IS_std, FID).
- The moments file (`mu`, `sigma`, and optionally `kid_features`, `num_images`, `inception`):
  `default_moments_path`, `load_moments`, `save_moments` (atomic).
- Scoring without TensorFlow (replaces the original's `inception_tf13.py`):
  `python inception_utils.py --samples FILE.npz|DIR --moments_path M.npz` prints one JSON line.
The maths lives in `inception_metrics.py`, the networks and weights in `inception_net.py`.
"""
import argparse
import itertools
import json
import os
import sys
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from atomic import atomic_write
from distributed import all_gather_rows, rank, world_size
from inception_metrics import (calculate_frechet_distance, calculate_inception_score,  # noqa: F401
                               calculate_kid, feature_moments)
from inception_net import KINDS, build_inception_net, check_kind, load_weights, resolve_weights

Device = Union[str, torch.device]  # 'cpu', 'cuda', 'cuda:1' or a torch.device
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.webp', '.tif', '.tiff')


def load_inception_net(kind: str = 'tf', weights_path: Optional[str] = None,
                       device: Device = 'cpu', parallel: bool = False) -> nn.Module:
    """The Inception network of `kind` ('tf' or 'torchvision') with its weights, in eval mode.

    Weights come from `weights_path` (--inception_weights), else the torch hub cache, else a
    download; see `inception_net.resolve_weights`. The module maps uint8 images in [0, 255] or
    float images in [-1, 1] (N x 3 x H x W) to (pool N x 2048, logits N x 1008 or N x 1000).
    `parallel` wraps it in DataParallel when more than one GPU is visible.
    """
    net = build_inception_net(kind)
    load_weights(net, resolve_weights(kind, weights_path))
    net = net.to(device)
    if parallel and torch.device(device).type == 'cuda' and torch.cuda.device_count() > 1:
        net = nn.DataParallel(net)
    return net


def default_device() -> torch.device:
    """This process's GPU if there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


# --- the moments file ------------------------------------------------------------------------

def default_moments_path(dataset: str) -> str:
    """The original's file name: `<dataset without a trailing _hdf5>_inception_moments.npz`.

    The original used `dataset.strip('_hdf5')`, which strips any of the characters _ h d f 5
    from both ends (so 'C5' lost its 5); this removes the suffix only.
    """
    name = dataset[:-len('_hdf5')] if dataset.endswith('_hdf5') else dataset
    return f'{name}_inception_moments.npz'


def moments_command(dataset: str, kind: str, path: str) -> str:
    """The command line that writes the moments file a run expects."""
    return (f'python calculate_inception_moments.py --dataset {dataset} --data_root DIR '
            f'--inception {kind} --moments_path {path}')


def load_moments(path: str, kind: Optional[str] = None, need_kid: bool = False,
                 hint: str = '') -> dict:
    """Read a moments file: 'mu' (D,) and 'sigma' (D, D) as float64, plus 'kid_features' (K, D)
    when the file has it. Raises a clear error for a missing file, a missing key, mismatched
    shapes, or a file made with another `--inception` network than `kind`.
    """
    remedy = f' Make it with: {hint}' if hint else ''
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Inception moments file {path} not found.{remedy}')
    try:
        with np.load(path) as f:
            stored = {key: f[key] for key in f.files}
    except Exception as err:
        raise ValueError(f'Inception moments file {path} is not a readable npz ({err})') from err
    wanted = ('mu', 'sigma') + (('kid_features',) if need_kid else ())
    missing = [key for key in wanted if key not in stored]
    if missing:
        raise ValueError(f'Inception moments file {path} lacks {", ".join(missing)} (it has: '
                         f'{", ".join(stored) or "nothing"}).{remedy}')
    made_with = str(stored['inception']) if 'inception' in stored else None
    if kind is not None and made_with is not None and made_with != kind:
        raise ValueError(f'Inception moments file {path} was made with --inception {made_with}; '
                         f'this run uses --inception {kind}, whose features differ')
    mu = np.asarray(stored['mu'], np.float64).reshape(-1)
    sigma = np.asarray(stored['sigma'], np.float64)
    if sigma.shape != (len(mu), len(mu)):
        raise ValueError(f'Inception moments file {path}: mu {mu.shape} and sigma {sigma.shape} '
                         f'must be D and D x D')
    moments = {'mu': mu, 'sigma': sigma}
    if 'kid_features' in stored:
        moments['kid_features'] = np.asarray(stored['kid_features'], np.float32)
    return moments


def save_moments(path: str, **arrays: np.ndarray) -> None:
    """Write an npz atomically (atomic.atomic_write), so a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # np.savez into a file object: given a name, it would append '.npz' to it.
    atomic_write(path, lambda f: np.savez(f, **arrays))


# --- features --------------------------------------------------------------------------------

def forward_batches(net: nn.Module, batches: Iterable[torch.Tensor], device: Device,
                    limit: Optional[int] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Yield (pool, logits) in float32 for each image batch; stop once `limit` images are done.

    The next batch is only drawn while fewer than `limit` images were seen, so a sampler is not
    called once more than needed.
    """
    seen, batches = 0, iter(batches)
    with torch.no_grad():
        while limit is None or seen < limit:
            images = next(batches, None)
            if images is None:
                return
            if len(images) == 0:
                raise ValueError('got an empty image batch')
            pool, logits = net(images.to(device))
            seen += len(pool)
            yield pool.float(), logits.float()


def extract_features(net: nn.Module, batches: Iterable[torch.Tensor], device: Device,
                     limit: Optional[int] = None, progress: bool = False,
                     total: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """All (pool, logits) of `batches` (whole batches until `limit` images), concatenated.
    `total` only sizes the progress bar."""
    pools, logits = [], []
    with tqdm(total=total or limit, unit='img', disable=not progress, file=sys.stderr) as bar:
        for pool, logit in forward_batches(net, batches, device, limit):
            pools.append(pool)
            logits.append(logit)
            bar.update(len(pool))
    if not pools:
        raise ValueError('no images to compute Inception features of')
    return torch.cat(pools), torch.cat(logits)


# --- the training-time metrics ---------------------------------------------------------------

class InceptionMetrics:
    """The original's `get_inception_metrics`, as a callable object (see
    `prepare_inception_metrics`). After each call `last` holds a dict with IS_mean, IS_std,
    FID, KID_mean, KID_std (None unless use_kid) and num_images.
    """

    def __init__(self, moments_path: str, no_fid: bool = False, inception: str = 'tf', *,
                 inception_weights: Optional[str] = None, device: Optional[Device] = None,
                 parallel: bool = False, use_kid: bool = False, net: Optional[nn.Module] = None,
                 hint: str = '') -> None:
        self.kind = check_kind(inception)
        self.moments_path = moments_path
        self.no_fid, self.use_kid = no_fid, use_kid
        self.weights_path, self.parallel = inception_weights, parallel
        self.device = torch.device(device) if device is not None else default_device()
        self.hint = hint
        self._net = net  # None until the first call (training start-up needs no weights)
        self._reference: Optional[dict] = None
        self.last: Optional[dict] = None

    @property
    def net(self) -> nn.Module:
        """The Inception network, loaded (weights included) on first use."""
        if self._net is None:
            self._net = load_inception_net(self.kind, self.weights_path, self.device,
                                           self.parallel)
        return self._net

    def reference(self) -> dict:
        """The dataset's moments, read on first use."""
        if self._reference is None:
            self._reference = load_moments(self.moments_path, self.kind, self.use_kid, self.hint)
        return self._reference

    def __call__(self, sample: Callable[[], Tuple[torch.Tensor, torch.Tensor]],
                 num_inception_images: int, num_splits: int = 10, prints: bool = True,
                 use_torch: bool = True) -> Tuple[float, float, float]:
        """IS mean, IS std and FID (9999.0 with no_fid) of images drawn from `sample()`.

        `sample()` returns (images in [-1, 1], labels); whole batches are drawn until at least
        `num_inception_images` images (split evenly over processes under torch.distributed).
        `use_torch` picks the fast torch matrix square root; False, scipy's exact sqrtm.
        """
        if num_inception_images < num_splits:
            raise ValueError(f'--num_inception_images {num_inception_images} must be at least '
                             f'the number of IS splits ({num_splits})')
        say = print if prints and rank() == 0 else (lambda *args: None)
        say('Gathering activations...')
        per_process = -(-num_inception_images // world_size())
        images = (sample()[0] for _ in itertools.count())
        pool, logits = extract_features(self.net, images, self.device, per_process)
        pool, logits = all_gather_rows(pool), all_gather_rows(logits)
        say('Calculating Inception Score...')
        is_mean, is_std = calculate_inception_score(F.softmax(logits.double(), 1), num_splits)
        fid, kid = 9999.0, (None, None)
        if not self.no_fid:
            say('Calculating means and covariances...')
            mu, sigma = feature_moments(pool)
            reference = self.reference()
            say('Covariances calculated, getting FID...')
            fid = calculate_frechet_distance(mu, sigma, reference['mu'], reference['sigma'],
                                             method='torch' if use_torch else 'scipy')
        if self.use_kid:
            kid = calculate_kid(pool, self.reference()['kid_features'])
        self.last = {'IS_mean': is_mean, 'IS_std': is_std, 'FID': fid, 'KID_mean': kid[0],
                     'KID_std': kid[1], 'num_images': len(pool)}
        return is_mean, is_std, fid


def prepare_inception_metrics(dataset: str, parallel: bool = False, no_fid: bool = False,
                              moments_path: Optional[str] = None, inception: str = 'tf',
                              inception_weights: Optional[str] = None,
                              device: Optional[Device] = None,
                              use_kid: bool = False) -> InceptionMetrics:
    """Return `get_inception_metrics(sample, num_inception_images, num_splits=10, prints=True,
    use_torch=True) -> (IS_mean, IS_std, FID)` for `train.py` and `sample.py`.

    Nothing heavy happens here: the network (and its weights) load on the first call. The
    moments file (default `default_moments_path(dataset)`) is checked now, when FID or KID
    needs it, so a missing one fails at start-up with the command that makes it.
    """
    kind = check_kind(inception)
    path = moments_path or default_moments_path(dataset)
    hint = moments_command(dataset, kind, path)
    metrics = InceptionMetrics(path, no_fid, kind, inception_weights=inception_weights,
                               device=device, parallel=parallel, use_kid=use_kid, hint=hint)
    if not no_fid or use_kid:
        metrics.reference()
    return metrics


# --- scoring saved samples -------------------------------------------------------------------

def _npz_batches(path: str, batch_size: int) -> Tuple[int, Iterator[torch.Tensor]]:
    """(count, batches) of the images under key 'x' of a sample.py npz (N x 3 x H x W)."""
    with np.load(path) as f:
        if 'x' not in f.files:
            raise ValueError(f'--samples {path}: no key "x" (it has: {", ".join(f.files)})')
        x = f['x']
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f'--samples {path}: "x" must be N x 3 x H x W; got shape {x.shape}')
    batches = (torch.from_numpy(x[i:i + batch_size]) for i in range(0, len(x), batch_size))
    return len(x), batches


def _folder_batches(path: str, batch_size: int) -> Tuple[int, Iterator[torch.Tensor]]:
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


def score_samples(samples: str, moments_path: Optional[str] = None, inception: str = 'tf', *,
                  inception_weights: Optional[str] = None, batch_size: int = 64,
                  num_splits: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000,
                  device: Optional[Device] = None, net: Optional[nn.Module] = None) -> dict:
    """IS, FID and KID of an npz of samples or a folder of images, FID with scipy's sqrtm.

    FID and KID are None without a moments file; KID is None when the file has no
    `kid_features` (older files, or ones made with --num_kid_features 0).
    """
    kind = check_kind(inception)
    if batch_size < 1:
        raise ValueError(f'--batch_size must be at least 1; got {batch_size}')
    device = torch.device(device) if device is not None else default_device()
    moments = load_moments(moments_path, kind) if moments_path is not None else None
    if os.path.isdir(samples):
        count, batches = _folder_batches(samples, batch_size)
    elif os.path.isfile(samples):
        count, batches = _npz_batches(samples, batch_size)
    else:
        raise FileNotFoundError(f'--samples {samples}: no such npz file or folder')
    if count < num_splits:
        raise ValueError(f'--samples {samples}: {count} images are fewer than --num_splits '
                         f'{num_splits}')
    if net is None:
        net = load_inception_net(kind, inception_weights, device)
    pool, logits = extract_features(net, batches, device, progress=True, total=count)
    is_mean, is_std = calculate_inception_score(F.softmax(logits.double(), 1), num_splits)
    result = {'IS_mean': is_mean, 'IS_std': is_std, 'FID': None, 'KID_mean': None,
              'KID_std': None, 'num_images': len(pool), 'inception': kind}
    if moments is not None:
        mu, sigma = feature_moments(pool)
        result['FID'] = calculate_frechet_distance(mu, sigma, moments['mu'], moments['sigma'])
        if 'kid_features' in moments:
            result['KID_mean'], result['KID_std'] = calculate_kid(
                pool, moments['kid_features'], kid_subsets, kid_subset_size)
        else:
            print(f'KID skipped: {moments_path} has no kid_features; remake it with '
                  f'calculate_inception_moments.py', file=sys.stderr)
    return result


def prepare_parser() -> argparse.ArgumentParser:
    """Flags of the scoring command."""
    parser = argparse.ArgumentParser(
        description='IS / FID / KID of saved samples with the TF-exact Inception (one JSON line)')
    parser.add_argument('--samples', required=True,
                        help='an npz with key x (uint8 N x 3 x H x W, as sample.py writes) or a '
                             'folder of images')
    parser.add_argument('--moments_path', default=None,
                        help='the dataset moments npz (calculate_inception_moments.py); without '
                             'it only IS is computed')
    parser.add_argument('--inception', default='tf', choices=KINDS,
                        help='tf: the TF-exact network of published numbers (default); '
                             'torchvision: the original monitoring network')
    parser.add_argument('--inception_weights', default=None,
                        help='weight file (default: torch hub cache, else download)')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--num_splits', type=int, default=10, help='IS splits')
    parser.add_argument('--kid_subsets', type=int, default=100)
    parser.add_argument('--kid_subset_size', type=int, default=1000)
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Score --samples and print one JSON line."""
    args = prepare_parser().parse_args(argv)
    result = score_samples(args.samples, args.moments_path, args.inception,
                           inception_weights=args.inception_weights, batch_size=args.batch_size,
                           num_splits=args.num_splits, kid_subsets=args.kid_subsets,
                           kid_subset_size=args.kid_subset_size, device=args.device)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
