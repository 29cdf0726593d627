"""Inception metrics for training, sampling and scoring: IS, FID, KID, precision / recall and
density / coverage, end to end.

- `load_inception_net`: the TF-exact (default) or torchvision Inception with its weights.
- `prepare_inception_metrics` -> `get_inception_metrics(sample, num_inception_images, ...)`, the
  original's monitoring call: works on the CPU, gathers features across processes under
  torch.distributed, and returns (IS_mean, IS_std, FID); `start_up=True` loads the network
  and checks the moments file at once, so a run that will test fails before it trains.
- Scoring without TensorFlow (replaces the original's `inception_tf13.py`, with its IS splits):
  `python inception_utils.py --samples FILE.npz|DIR --moments_path M.npz` prints one JSON line.
The maths lives in `inception_metrics.py`, the networks and weights in `inception_net.py`, the
moments files and sample formats in `metric_inputs.py`.
"""
import argparse
import itertools
import json
import sys
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from distributed import all_gather_rows, rank, world_size
from inception_metrics import (calculate_frechet_distance, calculate_inception_score,  # noqa: F401
                               calculate_kid, density_coverage, feature_moments,
                               intra_class_fid, precision_recall)
from inception_net import KINDS, build_inception_net, check_kind, load_weights, resolve_weights
# The moments files and sample formats; their names stay importable from here.
from metric_inputs import (IMAGE_EXTENSIONS, default_moments_path, load_moments,  # noqa: F401
                           moments_command, npz_images, array_batches, sample_batches,
                           sample_labels, save_moments)

Device = Union[str, torch.device]  # 'cpu', 'cuda', 'cuda:1' or a torch.device


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

def is_split_rule(kind: str) -> str:
    """The IS split rule of monitoring with `kind`: the torchvision network keeps the original
    monitor's (N // splits rows per split, the rest dropped), so its numbers compare with the
    original's logs; the TF network uses inception_tf13.py's (boundaries i N // splits, every
    row used), the rule of the numbers papers report."""
    return 'monitor' if kind == 'torchvision' else 'tf13'


def real_features(moments: dict, net: nn.Module, device: Device, batch_size: int = 64,
                  need: str = 'KID') -> np.ndarray:
    """The real features a moments file keeps (`kid_features`), or those of an ADM reference
    batch's images (`arr_0`), computed with `net`."""
    if 'kid_features' in moments:
        return moments['kid_features']
    if 'reference_images' in moments:
        x = npz_images(moments['reference_images'], 'reference batch')
        return extract_features(net, array_batches(x, batch_size), device)[0].numpy()
    raise ValueError(f'{need} needs real features: the moments file has neither kid_features '
                     f'nor reference images (arr_0); remake it with calculate_inception_moments.py')


def check_class_moments(moments: dict, path: str, hint: str = '') -> None:
    """ValueError unless the moments file holds per-class moments (intra-class FID)."""
    if 'class_mu' not in moments:
        raise ValueError(f'intra-class FID needs per-class moments, which {path} lacks: make '
                         f'it with calculate_inception_moments.py --per_class_moments'
                         + (f' ({hint} --per_class_moments)' if hint else ''))


def manifold_metrics(fake: torch.Tensor, real: np.ndarray) -> dict:
    """Precision and recall (k = 3) and density and coverage (k = 5) of fake features against
    real ones (see inception_metrics)."""
    precision, recall = precision_recall(real, fake, k=3)
    density, coverage = density_coverage(real, fake, k=5)
    return {'precision': precision, 'recall': recall, 'density': density,
            'coverage': coverage}


class InceptionMetrics:
    """The original's `get_inception_metrics`, as a callable object (see
    `prepare_inception_metrics`). After each call `last` holds a dict with IS_mean, IS_std,
    FID, KID_mean, KID_std (None unless use_kid), precision, recall, density, coverage (None
    unless use_prdc), intra_FID (None unless use_intra_fid: the samples' labels are kept and
    each class is compared with its real moments) and num_images.
    """

    def __init__(self, moments_path: str, no_fid: bool = False, inception: str = 'tf', *,
                 inception_weights: Optional[str] = None, device: Optional[Device] = None,
                 parallel: bool = False, use_kid: bool = False, use_prdc: bool = False,
                 net: Optional[nn.Module] = None, hint: str = '', dataset: Optional[str] = None,
                 resolution: Optional[int] = None, use_intra_fid: bool = False) -> None:
        self.kind = check_kind(inception)
        self.moments_path = moments_path
        self.no_fid, self.use_kid, self.use_prdc = no_fid, use_kid, use_prdc
        self.use_intra_fid = use_intra_fid
        self.weights_path, self.parallel = inception_weights, parallel
        self.device = torch.device(device) if device is not None else default_device()
        self.hint, self.dataset, self.resolution = hint, dataset, resolution
        self._net = net  # None until first needed
        self._reference: Optional[dict] = None
        self._real: Optional[np.ndarray] = None
        self.last: Optional[dict] = None

    @property
    def net(self) -> nn.Module:
        """The Inception network, loaded (weights included) on first use."""
        if self._net is None:
            self._net = load_inception_net(self.kind, self.weights_path, self.device,
                                           self.parallel)
        return self._net

    def needs_moments(self) -> bool:
        return not self.no_fid or self.use_kid or self.use_prdc or self.use_intra_fid

    def real(self) -> np.ndarray:
        """The real features KID and precision / recall compare with: kept once computed (an
        ADM reference batch's images would otherwise go through the network at every test)."""
        if self._real is None:
            self._real = real_features(self.reference(), self.net, self.device)
        return self._real

    def reference(self) -> dict:
        """The dataset's moments, read on first use."""
        if self._reference is None:
            self._reference = load_moments(self.moments_path, self.kind, False, self.hint,
                                           self.dataset, self.resolution)
            for wanted, flag in ((self.use_kid, 'KID'), (self.use_prdc, 'precision / recall')):
                if wanted and not {'kid_features', 'reference_images'} & set(self._reference):
                    raise ValueError(f'Inception moments file {self.moments_path} lacks '
                                     f'kid_features, which {flag} needs. Make it with: '
                                     f'{self.hint}')
            if self.use_intra_fid:
                check_class_moments(self._reference, self.moments_path, self.hint)
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
        labels = []  # of the batches drawn, for intra-class FID

        def draw() -> torch.Tensor:
            x, y = sample()
            if self.use_intra_fid:
                if y is None:
                    raise ValueError('intra-class FID needs the labels of the samples')
                labels.append(y.reshape(-1).to(self.device))
            return x
        images = (draw() for _ in itertools.count())
        # A bar on a terminal only: minutes of sampling at 50k images, no clutter in log files.
        pool, logits = extract_features(self.net, images, self.device, per_process,
                                        progress=bool(prints and rank() == 0
                                                      and sys.stderr.isatty()))
        pool, logits = all_gather_rows(pool), all_gather_rows(logits)
        say('Calculating Inception Score...')
        is_mean, is_std = calculate_inception_score(F.softmax(logits.double(), 1), num_splits,
                                                    rule=is_split_rule(self.kind))
        fid = 9999.0
        if not self.no_fid:
            say('Calculating means and covariances...')
            mu, sigma = feature_moments(pool)
            reference = self.reference()
            say('Covariances calculated, getting FID...')
            fid = calculate_frechet_distance(mu, sigma, reference['mu'], reference['sigma'],
                                             method='torch' if use_torch else 'scipy')
        self.last = {'IS_mean': is_mean, 'IS_std': is_std, 'FID': fid, 'KID_mean': None,
                     'KID_std': None, 'num_images': len(pool), 'precision': None,
                     'recall': None, 'density': None, 'coverage': None, 'intra_FID': None}
        if self.use_intra_fid:
            reference = self.reference()
            say('Calculating intra-class FID...')
            self.last['intra_FID'] = intra_class_fid(
                pool, all_gather_rows(torch.cat(labels)), reference['class_mu'],
                reference['class_sigma'], method='torch' if use_torch else 'scipy')[0]
        if self.use_kid or self.use_prdc:
            real = self.real()
            if self.use_kid:
                self.last['KID_mean'], self.last['KID_std'] = calculate_kid(pool, real)
            if self.use_prdc:
                self.last.update(manifold_metrics(pool, real))
        return is_mean, is_std, fid


def prepare_inception_metrics(dataset: str, parallel: bool = False, no_fid: bool = False,
                              moments_path: Optional[str] = None, inception: str = 'tf',
                              inception_weights: Optional[str] = None,
                              device: Optional[Device] = None, use_kid: bool = False, *,
                              use_prdc: bool = False, resolution: Optional[int] = None,
                              start_up: bool = False,
                              use_intra_fid: bool = False) -> InceptionMetrics:
    """Return `get_inception_metrics(sample, num_inception_images, num_splits=10, prints=True,
    use_torch=True) -> (IS_mean, IS_std, FID)` for `train.py` and `sample.py`.

    The moments file (default `default_moments_path(dataset)`) is checked now, when FID, KID or
    precision / recall need it, so a missing or mismatched one fails with the command that
    makes it. With `start_up` the Inception weights are resolved and loaded now too (a run that
    will test checks them before it builds anything); otherwise at the first call.
    """
    kind = check_kind(inception)
    path = moments_path or default_moments_path(dataset)
    hint = moments_command(dataset, kind, path)
    metrics = InceptionMetrics(path, no_fid, kind, inception_weights=inception_weights,
                               device=device, parallel=parallel, use_kid=use_kid,
                               use_prdc=use_prdc, hint=hint, dataset=dataset,
                               resolution=resolution, use_intra_fid=use_intra_fid)
    if metrics.needs_moments():
        metrics.reference()
    if start_up:
        metrics.net
    return metrics


# --- scoring saved samples -------------------------------------------------------------------

def score_samples(samples: str, moments_path: Optional[str] = None, inception: str = 'tf', *,
                  inception_weights: Optional[str] = None, batch_size: int = 64,
                  num_splits: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000,
                  device: Optional[Device] = None, net: Optional[nn.Module] = None,
                  intra_fid: Optional[bool] = None) -> dict:
    """IS (inception_tf13.py's splits), FID (scipy's sqrtm), KID, precision / recall,
    density / coverage and intra-class FID of saved samples (metric_inputs: npz layouts, image
    folders).

    FID is None without a moments file; KID and the manifold metrics are None when the file
    keeps no real features (`kid_features`, or an ADM batch's images `arr_0`). Intra-class FID
    (`intra_FID`, over `intra_FID_classes` classes) is computed when the moments hold per-class
    moments and the samples their labels (`intra_fid` None), always (True: a ValueError when it
    cannot be), or never (False).
    """
    kind = check_kind(inception)
    if batch_size < 1:
        raise ValueError(f'--batch_size must be at least 1; got {batch_size}')
    device = torch.device(device) if device is not None else default_device()
    moments = load_moments(moments_path, kind) if moments_path is not None else None
    labels = sample_labels(samples) if intra_fid is not False else None
    if intra_fid:
        if moments is None:
            raise ValueError('--intra_fid needs --moments_path (with per-class moments)')
        check_class_moments(moments, moments_path)
        if labels is None:
            raise ValueError(f'--intra_fid needs the labels of the samples: {samples} has none '
                             f'(an npz with y or arr_1, as sample.py --sample_npz writes)')
    count, batches = sample_batches(samples, batch_size)
    if count < num_splits:
        raise ValueError(f'--samples {samples}: {count} images are fewer than --num_splits '
                         f'{num_splits}')
    if net is None:
        net = load_inception_net(kind, inception_weights, device)
    pool, logits = extract_features(net, batches, device, progress=True, total=count)
    is_mean, is_std = calculate_inception_score(F.softmax(logits.double(), 1), num_splits,
                                                rule='tf13')
    result = {'IS_mean': is_mean, 'IS_std': is_std, 'FID': None, 'KID_mean': None,
              'KID_std': None, 'precision': None, 'recall': None, 'density': None,
              'coverage': None, 'intra_FID': None, 'intra_FID_classes': None,
              'num_images': len(pool), 'inception': kind}
    if moments is not None:
        mu, sigma = feature_moments(pool)
        result['FID'] = calculate_frechet_distance(mu, sigma, moments['mu'], moments['sigma'])
        if {'kid_features', 'reference_images'} & set(moments):
            real = real_features(moments, net, device, batch_size)
            result['KID_mean'], result['KID_std'] = calculate_kid(
                pool, real, kid_subsets, kid_subset_size)
            result.update(manifold_metrics(pool, real))
        else:
            print(f'KID, precision / recall skipped: {moments_path} keeps no real features; '
                  f'remake it with calculate_inception_moments.py', file=sys.stderr)
        if labels is not None and 'class_mu' in moments:
            if len(labels) != len(pool):
                raise ValueError(f'--samples {samples}: {len(pool)} images but {len(labels)} '
                                 f'labels')
            result['intra_FID'], per_class = intra_class_fid(
                pool, labels, moments['class_mu'], moments['class_sigma'])
            result['intra_FID_classes'] = len(per_class)
    return result


def prepare_parser() -> argparse.ArgumentParser:
    """Flags of the scoring command."""
    parser = argparse.ArgumentParser(
        description='IS / FID / KID of saved samples with the TF-exact Inception (one JSON line)')
    parser.add_argument('--samples', required=True,
                        help='an npz with images under x (sample.py) or arr_0 (ADM): uint8 '
                             'N x 3 x H x W or N x H x W x 3, or float in [-1, 1] or [0, 1]; '
                             'or a folder of images')
    parser.add_argument('--moments_path', default=None,
                        help='the dataset moments npz (calculate_inception_moments.py, the '
                             "original's with --inception torchvision, or an ADM reference "
                             'batch); without it only IS is computed')
    parser.add_argument('--inception', default='tf', choices=KINDS,
                        help='tf: the TF-exact network of published numbers (default); '
                             'torchvision: the original monitoring network')
    parser.add_argument('--inception_weights', default=None,
                        help='weight file (default: torch hub cache, else download)')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--num_splits', type=int, default=10, help='IS splits')
    parser.add_argument('--kid_subsets', type=int, default=100)
    parser.add_argument('--kid_subset_size', type=int, default=1000)
    parser.add_argument('--intra_fid', action='store_true', default=None,
                        help='require intra-class FID (computed anyway when the moments file '
                             'has per-class moments and the npz labels): an error when it '
                             'cannot be')
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Score --samples and print one JSON line."""
    from utils import exit_on_interrupt, exit_on_user_error
    args = prepare_parser().parse_args(argv)
    with exit_on_interrupt('nothing was written'), exit_on_user_error():
        result = score_samples(args.samples, args.moments_path, args.inception,
                               inception_weights=args.inception_weights,
                               batch_size=args.batch_size, num_splits=args.num_splits,
                               kid_subsets=args.kid_subsets,
                               kid_subset_size=args.kid_subset_size, device=args.device,
                               intra_fid=args.intra_fid)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
