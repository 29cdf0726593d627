"""IS, FID and KID maths on cases with known answers, and the two FID square roots."""
import itertools

import numpy as np
import pytest
import torch

from inception_metrics import (ISAccumulator, calculate_frechet_distance,
                               calculate_inception_score, calculate_kid, feature_moments)


def random_covariance(d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, 3 * d))
    return a @ a.T / (3 * d)


# --- Inception Score -------------------------------------------------------------------------

def test_is_of_uniform_predictions_is_one():
    mean, std = calculate_inception_score(np.full((50, 7), 1 / 7), num_splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('k', [2, 5, 10])
def test_is_of_confident_predictions_over_k_classes_is_k(k):
    # Each split holds every class equally often, with certainty.
    pred = np.eye(20)[np.arange(10 * k) % k]
    mean, std = calculate_inception_score(pred, num_splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_is_splits_are_consecutive_without_shuffling():
    # Sorted by class, each of 2 splits sees one class only: IS 1. Interleaved: IS 2.
    sorted_pred = np.eye(2)[[0, 0, 0, 0, 1, 1, 1, 1]]
    interleaved = np.eye(2)[[0, 1, 0, 1, 0, 1, 0, 1]]
    assert calculate_inception_score(sorted_pred, 2)[0] == pytest.approx(1.0)
    assert calculate_inception_score(interleaved, 2)[0] == pytest.approx(2.0)


def test_is_drops_the_remainder_and_uses_population_std():
    rng = np.random.default_rng(0)
    pred = rng.dirichlet(np.ones(6), size=23)
    scores = []
    for part in np.split(pred[:20], 4):  # 23 // 4 = 5 rows per split, 3 rows dropped
        p_bar = part.mean(0)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(p_bar)), 1))))
    mean, std = calculate_inception_score(pred, 4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12)
    assert std == pytest.approx(np.std(scores), rel=1e-9)


def test_is_streaming_equals_all_at_once():
    rng = np.random.default_rng(1)
    pred = rng.dirichlet(np.ones(9) * 0.3, size=37)
    acc = ISAccumulator(10, len(pred))
    for lo, hi in itertools.pairwise([0, 1, 8, 8, 20, 37]):
        acc.update(torch.from_numpy(pred[lo:hi]))
    assert acc.score() == pytest.approx(calculate_inception_score(pred, 10), rel=1e-12)


def test_is_needs_as_many_images_as_splits():
    with pytest.raises(ValueError, match='at least num_splits=10 images.*got 9'):
        calculate_inception_score(np.full((9, 3), 1 / 3), 10)


# --- FID -------------------------------------------------------------------------------------

@pytest.mark.parametrize('method', ['scipy', 'torch'])
def test_fid_of_a_gaussian_with_itself_is_zero(method):
    sigma = random_covariance(32, 0)
    mu = np.random.default_rng(1).standard_normal(32)
    fid = calculate_frechet_distance(mu, sigma, mu, sigma, method=method)
    assert abs(fid) < 1e-8 * np.trace(sigma)


@pytest.mark.parametrize('method', ['scipy', 'torch'])
def test_fid_of_shifted_means_is_squared_distance(method):
    sigma = random_covariance(16, 2)
    mu1 = np.zeros(16)
    mu2 = np.random.default_rng(3).standard_normal(16)
    fid = calculate_frechet_distance(mu1, sigma, mu2, sigma, method=method)
    assert fid == pytest.approx(float(mu2 @ mu2), rel=1e-7)


@pytest.mark.parametrize('method', ['scipy', 'torch'])
def test_fid_of_diagonal_covariances_has_closed_form(method):
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    fid = calculate_frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b),
                                     method=method)
    assert fid == pytest.approx(3 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-9)


def test_torch_and_scipy_square_roots_agree_on_features():
    # Sample covariances of correlated, non-Gaussian features (ReLU, like pool3), 64-d.
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((64, 64)) / 8
    real = np.maximum(rng.standard_normal((400, 64)) @ mix + 0.3, 0)
    fake = np.maximum(rng.standard_normal((300, 64)) @ (mix * 1.2) + 0.25, 0)
    (mu1, s1), (mu2, s2) = feature_moments(real), feature_moments(fake)
    exact = calculate_frechet_distance(mu1, s1, mu2, s2, method='scipy')
    fast = calculate_frechet_distance(mu1, s1, mu2, s2, method='torch')
    assert exact > 0.01
    assert fast == pytest.approx(exact, rel=1e-6)


def test_fid_accepts_torch_and_numpy_mixed():
    sigma = random_covariance(8, 5)
    fid_np = calculate_frechet_distance(np.zeros(8), sigma, np.ones(8), sigma * 2)
    fid_mixed = calculate_frechet_distance(torch.zeros(8), torch.from_numpy(sigma), np.ones(8),
                                           sigma * 2, method='torch')
    assert fid_mixed == pytest.approx(fid_np, rel=1e-9)


def test_fid_rejects_mismatched_shapes_and_methods():
    with pytest.raises(ValueError, match='must be D and D x D'):
        calculate_frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="'scipy' or 'torch'"):
        calculate_frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), method='ns')


def test_feature_moments_are_mean_and_unbiased_covariance():
    f = np.random.default_rng(6).standard_normal((10, 4)).astype(np.float32)
    mu, sigma = feature_moments(f)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(f.astype(np.float64), rowvar=False),
                               rtol=1e-12)


# --- KID -------------------------------------------------------------------------------------

def reference_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a . b / d + 1)^3, written out with loops."""
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_one_full_subset_equals_the_unbiased_mmd():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.5
    mean, std = calculate_kid(x, y, num_subsets=1, subset_size=6)
    assert mean == pytest.approx(reference_mmd2(x, y), rel=1e-10) and std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(8)
    f, g = np.maximum(rng.standard_normal((2, 400, 32)), 0)
    identical, _ = calculate_kid(f, f, num_subsets=50, subset_size=200)
    same_law, _ = calculate_kid(f, g, num_subsets=50, subset_size=200)
    small, _ = calculate_kid(f, g + 0.1, num_subsets=50, subset_size=200)
    large, _ = calculate_kid(f, g + 0.5, num_subsets=50, subset_size=200)
    assert abs(same_law) < 0.1 * small
    # Subsets of one set overlap, which biases the estimate a little below 0.
    assert abs(identical) < 0.01 * large
    assert 0 < small < large


def test_kid_is_reproducible_and_uses_the_smaller_set():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((30, 4)), rng.standard_normal((12, 4))
    assert calculate_kid(a, b, 5, 1000) == calculate_kid(a, b, 5, 1000)
    with pytest.raises(ValueError, match='at least 2 rows'):
        calculate_kid(a, b[:1])
