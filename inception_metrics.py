"""The maths of IS, FID, KID, precision/recall and density/coverage, on arrays already computed
(no network, no files).

- Inception Score: `calculate_inception_score` and its streaming form `ISAccumulator`, over
  consecutive splits by one of two rules: 'tf13', the original's inception_tf13.py (split i
  holds rows i N // S up to (i + 1) N // S, every row used: the numbers papers report), and
  'monitor', the original's PyTorch monitor (N // S rows per split, the remainder dropped).
- Frechet distance: `calculate_frechet_distance` with scipy's exact `sqrtm` (reported numbers) or a
  fast float64 torch route through symmetric eigendecompositions (monitoring during training);
  `intra_class_fid`, its per-class mean against per-class real moments (StudioGAN's iFID).
- Kernel Inception Distance: `calculate_kid`, the unbiased MMD^2 with the cubic polynomial kernel
  `(x . y / d + 1) ** 3`, averaged over random subsets.
- `feature_moments`: mean and unbiased covariance in float64.
- Precision and recall (Kynkaanniemi et al. 2019, closed balls): `precision_recall`; density and
  coverage (Naeem et al. 2020, open balls): `density_coverage`. Both rest on `knn_radii`, exact
  float64 distances to the k-th nearest neighbour, computed `chunk` rows at a time.
Inputs may be numpy arrays or torch tensors; torch work stays on the tensors' device.
"""
import sys
from typing import Dict, Optional, Tuple, Union

import numpy as np
import scipy.linalg
import torch

Array = Union[np.ndarray, torch.Tensor]


def _as_float64(x: Array, device: Optional[torch.device] = None) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


# --- Inception Score -------------------------------------------------------------------------

IS_SPLIT_RULES = ('tf13', 'monitor')


class ISAccumulator:
    """Inception Score over a stream of class-probability batches, without keeping them.

    Row r of the stream (counting from 0) belongs to split floor(((r + 1) S - 1) / N) under the
    'tf13' rule (the split i with i N // S <= r < (i + 1) N // S), or to split r // (N // S)
    under 'monitor', which drops the rows past S whole splits; either way the result equals
    scoring all rows at once. Per split it keeps the sum of p, the sum of p log p and the row
    count, because
        mean_i KL(p_i || p_bar) = mean_i sum_j p_ij log p_ij - sum_j p_bar_j log p_bar_j.
    `sums()` exposes those tensors so that processes can add theirs together.
    """

    def __init__(self, num_splits: int, num_images: int, rule: str = 'monitor') -> None:
        if num_splits < 1:
            raise ValueError(f'num_splits must be at least 1; got {num_splits}')
        if num_images < num_splits:
            raise ValueError(f'the Inception Score needs at least num_splits={num_splits} '
                             f'images (one per split); got {num_images}')
        if rule not in IS_SPLIT_RULES:
            raise ValueError(f'IS split rule {rule!r} is not one of {list(IS_SPLIT_RULES)}')
        self.num_splits, self.num_images, self.rule = num_splits, num_images, rule
        self.split_size = num_images // num_splits
        self.seen = 0
        self.sum_p: Optional[torch.Tensor] = None
        self.sum_plogp: Optional[torch.Tensor] = None
        self.count: Optional[torch.Tensor] = None

    def _splits(self, rows: torch.Tensor) -> torch.Tensor:
        if self.rule == 'tf13':
            return ((rows + 1) * self.num_splits - 1) // self.num_images
        return rows // self.split_size

    def update(self, probs: Array) -> 'ISAccumulator':
        """Add a batch of N x C class probabilities (rows summing to 1)."""
        p = _as_float64(probs)
        if p.dim() != 2:
            raise ValueError(f'class probabilities must be N x C; got shape {tuple(p.shape)}')
        if self.sum_p is None:
            self.sum_p = p.new_zeros(self.num_splits, p.shape[1])
            self.sum_plogp = p.new_zeros(self.num_splits)
            self.count = p.new_zeros(self.num_splits)
        split = self._splits(torch.arange(self.seen, self.seen + len(p), device=p.device))
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


def calculate_inception_score(pred: Array, num_splits: int = 10,
                              rule: str = 'monitor') -> Tuple[float, float]:
    """IS of N x C class probabilities: mean and std over `num_splits` consecutive splits, cut
    by `rule` ('tf13' or 'monitor', see ISAccumulator)."""
    return ISAccumulator(num_splits, len(pred), rule).update(pred).score()


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


def intra_class_fid(features: Array, labels: Array, class_mu: Array, class_sigma: Array,
                    method: str = 'scipy') -> Tuple[float, Dict[int, float]]:
    """Intra-class FID (StudioGAN's iFID): the FID of each class's features against the real
    moments of that class (`class_mu[c]`, `class_sigma[c]`), averaged over the classes the
    features hold. Returns (mean, {class: FID}); a ValueError when a class has fewer than two
    feature rows or no real moments."""
    labels = torch.as_tensor(np.asarray(labels)).reshape(-1).long()
    f = _as_float64(features)
    if len(labels) != len(f):
        raise ValueError(f'intra-class FID: {len(f)} feature rows but {len(labels)} labels')
    per_class = {}
    for c in torch.unique(labels).tolist():
        rows = f[labels == c]
        if len(rows) < 2:
            raise ValueError(f'intra-class FID: class {c} has {len(rows)} image(s); each '
                             f'class needs at least 2 (sample more images)')
        if not 0 <= c < len(class_mu) or not np.isfinite(np.asarray(class_sigma[c])).all():
            raise ValueError(f'intra-class FID: the real per-class moments have no (or too '
                             f'few images for) class {c}')
        mu, sigma = feature_moments(rows)
        per_class[c] = calculate_frechet_distance(mu, sigma, class_mu[c], class_sigma[c],
                                                  method)
    if not per_class:
        raise ValueError('intra-class FID: no features')
    return float(np.mean(list(per_class.values()))), per_class


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


# --- Precision, recall, density and coverage -------------------------------------------------

def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The matmul route, sqrt(|a|^2 + |b|^2 - 2 a.b), rounds: a point exactly on a k-NN sphere may
    # land either side of it and a row's distance to its twin need not be 0. The direct route sums
    # (a - b)^2, which is exact for equal rows and for small integer coordinates.
    return torch.cdist(a, b, compute_mode='donot_use_mm_for_euclid_dist')


def _feature_matrix(x: Array, name: str, device: Optional[torch.device] = None) -> torch.Tensor:
    f = _as_float64(x, device)
    if f.dim() != 2:
        raise ValueError(f'{name} must be an N x D feature matrix; got shape {tuple(f.shape)}')
    return f


def _check_k_and_chunk(k: int, rows: int, name: str, chunk: int) -> None:
    if not 1 <= k < rows:
        raise ValueError(f'k must be at least 1 and less than the number of rows of {name} '
                         f'({rows}); got k={k}')
    if chunk < 1:
        raise ValueError(f'chunk must be at least 1 row; got chunk={chunk}')


def _feature_pair(real: Array, fake: Array) -> Tuple[torch.Tensor, torch.Tensor]:
    device = next((x.device for x in (real, fake) if isinstance(x, torch.Tensor)), None)
    r, f = _feature_matrix(real, 'real', device), _feature_matrix(fake, 'fake', device)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f'real and fake must have the same feature size D; got shapes '
                         f'{tuple(r.shape)} and {tuple(f.shape)}')
    return r, f


def knn_radii(features: Array, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each of the N rows to its k-th nearest other row, in float64 (1 <= k < N).

    The row itself is excluded; a duplicate row counts as a neighbour at distance 0. Each row's
    distances to all N rows include its own 0, so the answer is their (k + 1)-th smallest; with
    duplicates any of the zeros may play "self", which gives the same value. Distances are
    computed for `chunk` rows at a time (chunk x N), never as the whole N x N matrix.
    """
    f = _feature_matrix(features, 'features')
    _check_k_and_chunk(k, len(f), 'features', chunk)
    return torch.cat([torch.kthvalue(_pairwise_distances(f[i:i + chunk], f), k + 1, dim=1).values
                      for i in range(0, len(f), chunk)])


def _inside_balls(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int,
                  closed: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per point, how many balls (centres[i], radii[i]) hold it; per ball, whether any point is in.

    A point p is in ball i when ||p - centres[i]|| <= radii[i] (closed) or < radii[i] (open).
    `chunk` points at a time against all centres, so memory is chunk x len(centres).
    """
    counts = []
    hit = torch.zeros(len(centres), dtype=torch.bool, device=centres.device)
    for i in range(0, len(points), chunk):
        d = _pairwise_distances(points[i:i + chunk], centres)
        inside = d <= radii if closed else d < radii
        counts.append(inside.sum(1))
        hit |= inside.any(0)
    return torch.cat(counts), hit


def precision_recall(real: Array, fake: Array, k: int = 3,
                     chunk: int = 1024) -> Tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of N x D real, M x D fake features.

    With r_k(x_i) the distance from x_i to its k-th nearest other row of its own set (`knn_radii`):
        precision = (1 / M) #{j : ||f_j - r_i|| <= r_k(r_i) for some real i}
        recall    = (1 / N) #{i : ||r_i - f_j|| <= r_k(f_j) for some fake j}
    The balls are closed, as in the authors' code and the ADM (guided-diffusion) evaluator: a
    point exactly on a sphere counts. Both sets need more than k rows; `chunk` rows at a time.
    """
    r, f = _feature_pair(real, fake)
    _check_k_and_chunk(k, len(r), 'real', chunk)
    _check_k_and_chunk(k, len(f), 'fake', chunk)
    in_real, _ = _inside_balls(f, r, knn_radii(r, k, chunk), chunk, closed=True)
    in_fake, _ = _inside_balls(r, f, knn_radii(f, k, chunk), chunk, closed=True)
    return float((in_real > 0).double().mean()), float((in_fake > 0).double().mean())


def density_coverage(real: Array, fake: Array, k: int = 5,
                     chunk: int = 1024) -> Tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of N x D real and M x D fake features.

    With r_k(r_i) the distance from real row i to its k-th nearest other real row (`knn_radii`):
        density  = (1 / (k M)) sum_j #{i : ||f_j - r_i|| < r_k(r_i)}
        coverage = (1 / N) #{i : ||f_j - r_i|| < r_k(r_i) for some fake j}
    The balls are open (strict <), as in the authors' code: a fake point exactly on a real
    point's sphere does not count. Only real rows get balls, so real needs more than k rows and
    fake at least 1; `chunk` fake rows at a time.
    """
    r, f = _feature_pair(real, fake)
    _check_k_and_chunk(k, len(r), 'real', chunk)
    if len(f) < 1:
        raise ValueError(f'fake must have at least 1 row; got shape {tuple(f.shape)}')
    counts, covered = _inside_balls(f, r, knn_radii(r, k, chunk), chunk, closed=False)
    # The count is an exact integer; dividing the int64 tensor would give float32.
    return int(counts.sum()) / (k * len(f)), float(covered.double().mean())
