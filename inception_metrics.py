"""The maths of IS, FID and KID, on arrays already computed (no network, no files).

- Inception Score: `calculate_inception_score` and its streaming form `ISAccumulator`
  (10 consecutive splits of N // 10 rows, in order, remainder dropped, as improved-GAN's code).
- Frechet distance: `calculate_frechet_distance` with scipy's exact `sqrtm` (reported numbers) or a
  fast float64 torch route through symmetric eigendecompositions (monitoring during training).
- Kernel Inception Distance: `calculate_kid`, the unbiased MMD^2 with the cubic polynomial kernel
  `(x . y / d + 1) ** 3`, averaged over random subsets.
- `feature_moments`: mean and unbiased covariance in float64.
Inputs may be numpy arrays or torch tensors; torch work stays on the tensors' device.
"""
import sys
from typing import Optional, Tuple, Union

import numpy as np
import scipy.linalg
import torch

Array = Union[np.ndarray, torch.Tensor]


def _as_float64(x: Array, device: Optional[torch.device] = None) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


# --- Inception Score -------------------------------------------------------------------------

class ISAccumulator:
    """Inception Score over a stream of class-probability batches, without keeping them.

    Row i of the stream (counting from 0) belongs to split i // (num_images // num_splits); rows
    past num_splits whole splits are dropped, so the result equals scoring all rows at once.
    Per split it keeps the sum of p, the sum of p log p and the row count, because
        mean_i KL(p_i || p_bar) = mean_i sum_j p_ij log p_ij - sum_j p_bar_j log p_bar_j.
    `sums()` exposes those tensors so that processes can add theirs together.
    """

    def __init__(self, num_splits: int, num_images: int) -> None:
        if num_splits < 1:
            raise ValueError(f'num_splits must be at least 1; got {num_splits}')
        if num_images < num_splits:
            raise ValueError(f'the Inception Score needs at least num_splits={num_splits} '
                             f'images (one per split); got {num_images}')
        self.num_splits = num_splits
        self.split_size = num_images // num_splits
        self.seen = 0
        self.sum_p: Optional[torch.Tensor] = None
        self.sum_plogp: Optional[torch.Tensor] = None
        self.count: Optional[torch.Tensor] = None

    def update(self, probs: Array) -> 'ISAccumulator':
        """Add a batch of N x C class probabilities (rows summing to 1)."""
        p = _as_float64(probs)
        if p.dim() != 2:
            raise ValueError(f'class probabilities must be N x C; got shape {tuple(p.shape)}')
        if self.sum_p is None:
            self.sum_p = p.new_zeros(self.num_splits, p.shape[1])
            self.sum_plogp = p.new_zeros(self.num_splits)
            self.count = p.new_zeros(self.num_splits)
        split = torch.arange(self.seen, self.seen + len(p), device=p.device) // self.split_size
        self.seen += len(p)
        keep = split < self.num_splits
        p, split = p[keep], split[keep]
        self.sum_p.index_add_(0, split, p)
        # xlogy gives 0 for p = 0, where p * log(p) would give NaN.
        self.sum_plogp.index_add_(0, split, torch.special.xlogy(p, p).sum(1))
        self.count.index_add_(0, split, torch.ones_like(split, dtype=p.dtype))
        return self

    def sums(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sum of p per split, sum of p log p per split, rows per split)."""
        if self.sum_p is None:
            raise ValueError('the Inception Score got no images')
        return self.sum_p, self.sum_plogp, self.count

    def score(self) -> Tuple[float, float]:
        """(mean, population std) of exp(mean KL) over the splits."""
        sum_p, sum_plogp, count = self.sums()
        if (count == 0).any():
            raise ValueError(f'the Inception Score got {int(count.sum())} images, fewer than '
                             f'num_splits={self.num_splits} splits of {self.split_size}')
        p_bar = sum_p / count[:, None]
        kl = sum_plogp / count - torch.special.xlogy(p_bar, p_bar).sum(1)
        scores = torch.exp(kl)
        return float(scores.mean()), float(scores.std(unbiased=False))


def calculate_inception_score(pred: Array, num_splits: int = 10) -> Tuple[float, float]:
    """IS of N x C class probabilities: mean and std over `num_splits` consecutive splits."""
    return ISAccumulator(num_splits, len(pred)).update(pred).score()


# --- Frechet distance ------------------------------------------------------------------------

def feature_moments(features: Array) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased (1 / (N - 1)) covariance of N x D features, in float64."""
    f = _as_float64(features)
    if f.dim() != 2 or len(f) < 2:
        raise ValueError(f'moments need an N x D feature matrix with N >= 2; got '
                         f'{tuple(f.shape)}')
    return f.mean(0), torch.cov(f.t())


def _trace_sqrt_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """tr(sqrtm(sigma1 sigma2)) with scipy, retrying with eps on the diagonals if singular."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        print(f'FID: sqrtm of a singular product; adding {eps} to the covariance diagonals',
              file=sys.stderr)
        offset = np.eye(len(sigma1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Rounding can leave a tiny imaginary part; a large one means the inputs are not
        # covariance matrices.
        worst = np.abs(np.diagonal(covmean).imag).max()
        if worst > 1e-3:
            raise ValueError(f'FID: the matrix square root has an imaginary part of {worst:.3g}; '
                             f'are both sigmas symmetric positive semi-definite?')
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_torch(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """tr(sqrtm(sigma1 sigma2)) = sum sqrt(eig(R sigma2 R)) with R = sigma1^(1/2).

    sigma1 sigma2 is similar to the symmetric R sigma2 R, so two symmetric eigendecompositions
    give its eigenvalues exactly, with none of Newton-Schulz's convergence trouble.
    """
    w, v = torch.linalg.eigh(sigma1)
    root = (v * w.clamp(min=0).sqrt()) @ v.t()
    m = root @ sigma2 @ root
    return torch.linalg.eigvalsh((m + m.t()) / 2).clamp(min=0).sqrt().sum()


def calculate_frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array,
                               method: str = 'scipy') -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    `method='scipy'`: scipy.linalg.sqrtm, the reference computation (use it for reported
    numbers). `method='torch'`: float64 eigendecompositions on the inputs' device, fast on a GPU.
    """
    if method not in ('scipy', 'torch'):
        raise ValueError(f"FID method must be 'scipy' or 'torch'; got {method!r}")
    device = next((x.device for x in (mu1, sigma1, mu2, sigma2)
                   if isinstance(x, torch.Tensor)), None)
    mu1, mu2 = _as_float64(mu1, device).reshape(-1), _as_float64(mu2, device).reshape(-1)
    sigma1, sigma2 = _as_float64(sigma1, device), _as_float64(sigma2, device)
    d = len(mu1)
    if len(mu2) != d or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f'FID: mu1 {tuple(mu1.shape)}, sigma1 {tuple(sigma1.shape)}, mu2 '
                         f'{tuple(mu2.shape)} and sigma2 {tuple(sigma2.shape)} must be D and '
                         f'D x D for one D')
    diff = mu1 - mu2
    if method == 'scipy':
        tr_covmean = _trace_sqrt_scipy(sigma1.cpu().numpy(), sigma2.cpu().numpy())
    else:
        tr_covmean = float(_trace_sqrt_torch(sigma1, sigma2))
    return float(diff @ diff + torch.trace(sigma1) + torch.trace(sigma2)) - 2.0 * tr_covmean


# --- Kernel Inception Distance ---------------------------------------------------------------

def calculate_kid(feats1: Array, feats2: Array, num_subsets: int = 100, subset_size: int = 1000,
                  seed: int = 0) -> Tuple[float, float]:
    """KID: mean and std over `num_subsets` random subsets of the unbiased MMD^2 estimate.

    The kernel is k(x, y) = (x . y / D + 1) ** 3. Each subset draws min(subset_size, N1, N2)
    rows from each set without replacement (numpy RNG seeded with `seed`, so reruns agree).
    """
    device = next((x.device for x in (feats1, feats2) if isinstance(x, torch.Tensor)), None)
    f1, f2 = _as_float64(feats1, device), _as_float64(feats2, device)
    if f1.dim() != 2 or f2.dim() != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f'KID needs two N x D feature sets with one D; got {tuple(f1.shape)} '
                         f'and {tuple(f2.shape)}')
    m = min(subset_size, len(f1), len(f2))
    if m < 2 or num_subsets < 1:
        raise ValueError(f'KID needs subsets of at least 2 rows and at least 1 subset; got '
                         f'{m} rows ({len(f1)} and {len(f2)} features) and {num_subsets} subsets')
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    mmds = []
    for _ in range(num_subsets):
        x = f1[torch.as_tensor(rng.choice(len(f1), m, replace=False), device=f1.device)]
        y = f2[torch.as_tensor(rng.choice(len(f2), m, replace=False), device=f2.device)]
        k_xx = (x @ x.t() / d + 1) ** 3
        k_yy = (y @ y.t() / d + 1) ** 3
        k_xy = (x @ y.t() / d + 1) ** 3
        # Unbiased: the within-set sums leave out the diagonal (a sample with itself).
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
        mmds.append(within - 2 * k_xy.mean())
    mmds = torch.stack(mmds)
    return float(mmds.mean()), float(mmds.std(unbiased=False))
