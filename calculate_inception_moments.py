"""Inception moments of a dataset's images: the reference `mu` and `sigma` that FID compares to.

`python calculate_inception_moments.py --dataset I128_hdf5 --data_root data` runs the Inception
network over every image of the dataset (any dataset of `datasets.py`, including
`--dataset ImageFolder --data_root DIR --resolution R`), prints the real data's Inception Score
and writes an npz with the original's keys `mu` (2048,) and `sigma` (2048, 2048), plus
`kid_features` (a uniform random subset of the features, for KID and precision / recall) and
the provenance `inception` (which network), `dataset`, `resolution` and `num_images`; with
`--per_class_moments` each class's moments too (`class_mu`, `class_sigma`, `class_count`), for
intra-class FID. Unlike
the original it streams: only float64 sums of the features and of their outer products are
kept, never all activations. Under torchrun every process takes its
share of the images and the sums are added up across processes; rank 0 writes the file.
Entry points: `accumulate_statistics` (the core, on any iterable of (images, labels) batches),
`run(config)`, `main()`.
"""
import argparse
import collections
import os
import sys
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import atomic
from distributed import all_gather_rows, all_reduce_sum, rank, world_size
from inception_metrics import ISAccumulator
from inception_net import KINDS, check_kind
from inception_utils import Device, forward_batches, load_inception_net
from metric_inputs import dataset_stem, default_moments_path, save_moments
from utils import exit_on_interrupt, exit_on_user_error


def prepare_parser() -> argparse.ArgumentParser:
    """The original's flags (same names and defaults) plus the new ones."""
    parser = argparse.ArgumentParser(description='Inception moments (mu, sigma) of a dataset')
    parser.add_argument('--dataset', default='I128_hdf5',
                        help='a dataset name of datasets.py (default: %(default)s)')
    parser.add_argument('--data_root', default='data', help='default: %(default)s')
    parser.add_argument('--batch_size', type=int, default=64, help='default: %(default)s')
    parser.add_argument('--parallel', action='store_true',
                        help='DataParallel over all visible GPUs')
    parser.add_argument('--augment', action='store_true', help='augment the images as in training')
    # The original's 8, or the machine's cores where it has fewer.
    parser.add_argument('--num_workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='DataLoader workers (default: 8, at most the cores: %(default)s)')
    parser.add_argument('--shuffle', action='store_true',
                        help='shuffle the images (data in label order underestimates the IS that '
                             'is printed; the moments do not change)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seeds the shuffle and the KID feature subset (default: %(default)s)')
    # New flags.
    parser.add_argument('--resolution', type=int, default=None,
                        help='image size for custom folders (--dataset ImageFolder)')
    parser.add_argument('--inception', default='tf', choices=KINDS,
                        help='tf: the TF-exact network of published FIDs (default); '
                             'torchvision: the original monitoring network')
    parser.add_argument('--inception_weights', default=None,
                        help='weight file (default: torch hub cache, else download)')
    parser.add_argument('--moments_path', default=None,
                        help='output npz (default: <dataset without _hdf5>_inception_moments.npz '
                             'in the current folder, the original\'s name)')
    parser.add_argument('--per_class_moments', action='store_true',
                        help='also store each class\'s moments (class_mu C x D, class_sigma '
                             'C x D x D float32, class_count C), for intra-class FID; needs C x '
                             'D x D float64 sums in memory (33.6 MB a class for the 2048 '
                             'Inception features)')
    parser.add_argument('--num_kid_features', type=int, default=10000,
                        help='features kept (a uniform random subset) for KID; 0 keeps none '
                             '(default: %(default)s, 80 MB)')
    return parser


class _Reservoir:
    """A uniform random subset of at most `size` rows from a stream (reservoir sampling)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seen = size, 0
        self.rng = np.random.default_rng(seed)
        self.rows: Optional[np.ndarray] = None

    def add(self, rows: np.ndarray) -> None:
        if self.size <= 0:
            return
        if self.rows is None:
            self.rows = np.empty((self.size, rows.shape[1]), np.float32)
        # Row t of the stream (0-based) replaces a random kept row with probability size/(t+1).
        slots = self.rng.integers(0, np.arange(self.seen + 1, self.seen + len(rows) + 1))
        for t, (slot, row) in enumerate(zip(slots, rows), start=self.seen):
            if t < self.size:
                self.rows[t] = row
            elif slot < self.size:
                self.rows[slot] = row
        self.seen += len(rows)

    def result(self) -> np.ndarray:
        if self.rows is None:
            return np.empty((0, 0), np.float32)
        return self.rows[:min(self.seen, self.size)]


class _ClassSums:
    """Per-class float64 sums of features and of their outer products, streamed."""

    LIMIT = 64 * 2 ** 30  # bytes of sums: past this, say so rather than swap

    def __init__(self) -> None:
        self.count, self.total, self.outer = None, None, None

    def _grow(self, n_classes: int, like: torch.Tensor) -> None:
        dim = like.shape[1]
        have = 0 if self.count is None else len(self.count)
        if n_classes <= have:
            return
        need = n_classes * dim * dim * 8
        if need > self.LIMIT:
            raise ValueError(f'--per_class_moments: {n_classes} classes of {dim} features need '
                             f'{need / 2 ** 30:.1f} GiB of sums in memory, more than '
                             f'{self.LIMIT // 2 ** 30} GiB')
        extra = n_classes - have
        parts = [(self.count, like.new_zeros(extra)),
                 (self.total, like.new_zeros(extra, dim)),
                 (self.outer, like.new_zeros(extra, dim, dim))]
        self.count, self.total, self.outer = (new if old is None else torch.cat([old, new])
                                              for old, new in parts)

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if labels is None:
            raise ValueError('--per_class_moments needs labelled data')
        labels = torch.as_tensor(labels).reshape(-1).to(features.device).long()
        self._grow(int(labels.max()) + 1, features)
        for c in torch.unique(labels).tolist():
            rows = features[labels == c]
            self.count[c] += len(rows)
            self.total[c] += rows.sum(0)
            self.outer[c] += rows.t() @ rows

    def moments(self) -> dict:
        """class_mu, class_sigma (float32), class_count, summed over processes."""
        n_classes = int(all_gather_rows(torch.tensor([[len(self.count)]], device=self.count
                                                     .device)).max())
        self._grow(n_classes, self.total)
        count, total, outer = (all_reduce_sum(x) for x in (self.count, self.total, self.outer))
        n = count[:, None]
        mu = total / n.clamp(min=1)
        sigma = (outer - n[:, :, None] * mu[:, :, None] * mu[:, None, :]) / (n[:, :, None] - 1)
        sigma[count < 2] = float('nan')
        return {'class_mu': mu.cpu().numpy(), 'class_sigma': sigma.float().cpu().numpy(),
                'class_count': count.long().cpu().numpy()}


def accumulate_statistics(batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], net: nn.Module,
                          device: Device = 'cpu', num_images: Optional[int] = None,
                          num_splits: int = 10, num_kid_features: int = 10000, seed: int = 0,
                          progress: bool = False, per_class: bool = False) -> dict:
    """Stream (images, labels) batches through `net`; return the dataset statistics.

    Returns a dict with `mu` (D,) and `sigma` (D, D) (unbiased) in float64, `num_images`,
    `resolution` (the images' width, -1 if they had several),
    `kid_features` (up to `num_kid_features` rows, float32) and `IS_mean`/`IS_std` (None unless
    `num_images`, this process's image count, is given: the IS splits need it up front).
    Under torch.distributed the sums are added over all processes and every process gets the
    same result; pass each process's own image count. With `per_class`, also `class_mu`
    (C x D, float64), `class_sigma` (C x D x D, float32; NaN for a class of fewer than 2
    images) and `class_count` (C) for the classes 0 .. C - 1 up to the largest label.
    """
    count, total, outer = 0, None, None
    classes = _ClassSums() if per_class else None
    labels = collections.deque()  # each batch's labels, until its features come out
    inception_score = (ISAccumulator(num_splits, num_images)
                       if num_images is not None and num_images >= num_splits else None)
    # Each process keeps its share, so the gathered subset has about num_kid_features rows.
    reservoir = _Reservoir(-(-num_kid_features // world_size()), seed + rank())
    sizes = set()  # the image sizes seen (the moments' resolution)
    images = (sizes.add(batch[0].shape[-1]) or labels.append(batch[1]) or batch[0]
              for batch in batches)
    with tqdm(total=num_images, unit='img', disable=not progress, file=sys.stderr) as bar:
        for pool, logits in forward_batches(net, images, device):
            features = pool.double()
            if total is None:
                total = features.new_zeros(features.shape[1])
                outer = features.new_zeros(features.shape[1], features.shape[1])
            # float64 sums: the covariance below subtracts two large, nearly equal numbers.
            total += features.sum(0)
            outer += features.t() @ features
            count += len(features)
            batch_labels = labels.popleft()
            if classes is not None:
                classes.add(features, batch_labels)
            if inception_score is not None:
                inception_score.update(F.softmax(logits.double(), 1))
            reservoir.add(pool.cpu().numpy())
            bar.update(len(pool))
    if total is None:
        raise ValueError('no images to compute Inception moments of')
    count_t = all_reduce_sum(torch.tensor([float(count)], dtype=torch.float64,
                                          device=total.device))
    n = int(count_t.item())
    if n < 2:
        raise ValueError(f'Inception moments need at least 2 images; got {n}')
    mu = all_reduce_sum(total) / n
    sigma = (all_reduce_sum(outer) - n * torch.outer(mu, mu)) / (n - 1)
    stats = {'mu': mu.cpu().numpy(), 'sigma': sigma.cpu().numpy(), 'num_images': n,
             'IS_mean': None, 'IS_std': None,
             'resolution': max(sizes) if len(sizes) == 1 else -1}  # -1: mixed sizes
    if inception_score is not None:
        for part in inception_score.sums():
            all_reduce_sum(part)
        stats['IS_mean'], stats['IS_std'] = inception_score.score()
    if classes is not None:
        stats.update(classes.moments())
    kept = torch.from_numpy(reservoir.result()).to(total.device)
    stats['kid_features'] = all_gather_rows(kept).cpu().numpy()[:num_kid_features]
    return stats


def _setup_distributed() -> torch.device:
    """Join the torchrun process group if launched by torchrun; return this process's device."""
    launched = int(os.environ.get('WORLD_SIZE', '1')) > 1
    if torch.cuda.is_available():
        local = int(os.environ.get('LOCAL_RANK', '0'))
        torch.cuda.set_device(local)
        device = torch.device('cuda', local)
    else:
        device = torch.device('cpu')
    if launched and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return device


def run(config: dict) -> dict:
    """Compute and save the moments of `config['dataset']`; returns the statistics."""
    kind = check_kind(config['inception'])
    path = config.get('moments_path') or default_moments_path(config['dataset'])
    device = _setup_distributed()
    if rank() == 0:  # of runs killed while writing their moments
        atomic.remove_dead_temporaries(os.path.dirname(os.path.abspath(path)))
    import datasets  # the data layer; imported here so the metrics work without it
    loader = datasets.get_data_loaders(
        config['dataset'], data_root=config['data_root'], augment=config['augment'],
        batch_size=config['batch_size'], num_workers=config['num_workers'],
        shuffle=config['shuffle'], load_in_mem=False, pin_memory=False, drop_last=False,
        use_multiepoch_sampler=False, resolution=config.get('resolution'), seed=config['seed'],
        rank=rank(), world_size=world_size())[0]
    net = load_inception_net(kind, config.get('inception_weights'), device, config['parallel'])
    try:
        num_images = len(loader.sampler)  # this process's share
    except TypeError:
        num_images = None
    stats = accumulate_statistics(loader, net, device, num_images,
                                  num_kid_features=config.get('num_kid_features', 10000),
                                  seed=config['seed'], progress=rank() == 0,
                                  per_class=config.get('per_class_moments', False))
    if rank() == 0:
        if stats['IS_mean'] is not None:
            print(f'Training data from dataset {config["dataset"]} has IS of '
                  f'{stats["IS_mean"]:5.5f} +/- {stats["IS_std"]:5.5f}')
        else:
            print(f'No Inception Score: {num_images} images per process, fewer than 10 splits')
        # Provenance: which network, data and size these moments describe (load_moments checks).
        arrays = {'mu': stats['mu'], 'sigma': stats['sigma'],
                  'num_images': np.int64(stats['num_images']), 'inception': np.array(kind),
                  'dataset': np.array(dataset_stem(config['dataset'])),
                  'resolution': np.int64(stats['resolution'])}
        if len(stats['kid_features']):
            arrays['kid_features'] = stats['kid_features']
        for key in ('class_mu', 'class_sigma', 'class_count'):
            if key in stats:
                arrays[key] = stats[key]
        save_moments(path, **arrays)
        print(f'Saved the Inception moments of {stats["num_images"]} images to {path}')
    return stats


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the flags and run."""
    with exit_on_interrupt('no partial moments file is left'), exit_on_user_error():
        run(vars(prepare_parser().parse_args(argv)))


if __name__ == '__main__':
    main()
