"""Precision/recall and density/coverage against literal brute force, ties, duplicates, chunking."""
import numpy as np
import pytest
import torch

import inception_metrics
from inception_metrics import density_coverage, knn_radii, precision_recall

CHUNKS = [1, 7, 1000]  # one row at a time, chunks that do not divide N or M, all rows at once


def dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def brute_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k-th smallest distance to the other rows (self left out by index)."""
    radii = []
    for i in range(len(x)):
        others = sorted(dist(x[i], x[j]) for j in range(len(x)) if j != i)
        radii.append(others[k - 1])
    return np.array(radii)


def brute_prdc(real: np.ndarray, fake: np.ndarray, k: int):
    """(precision, recall, density, coverage) straight from the papers' definitions, with loops."""
    n, m = len(real), len(fake)
    d = np.array([[dist(real[i], fake[j]) for j in range(m)] for i in range(n)])  # N x M
    r_real, r_fake = brute_radii(real, k), brute_radii(fake, k)
    precision = np.mean([any(d[i, j] <= r_real[i] for i in range(n)) for j in range(m)])
    recall = np.mean([any(d[i, j] <= r_fake[j] for j in range(m)) for i in range(n)])
    density = sum(d[i, j] < r_real[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = np.mean([any(d[i, j] < r_real[i] for j in range(m)) for i in range(n)])
    return precision, recall, density, coverage


def prdc(real, fake, k: int, chunk: int = 1024):
    return (*precision_recall(real, fake, k, chunk), *density_coverage(real, fake, k, chunk))


def random_sets(seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((20, 4))
    fake = rng.standard_normal((25, 4)) * 1.3 + 0.4  # overlapping, but not the same law
    return real, fake


# --- Against brute force ---------------------------------------------------------------------

@pytest.mark.parametrize('chunk', CHUNKS)
@pytest.mark.parametrize('k', [1, 3, 5])
def test_knn_radii_equal_brute_force(k, chunk):
    real, fake = random_sets()
    for x in (real, fake):
        radii = knn_radii(x, k, chunk)
        assert radii.dtype == torch.float64 and radii.shape == (len(x),)
        np.testing.assert_allclose(radii.numpy(), brute_radii(x, k), rtol=1e-12)


@pytest.mark.parametrize('chunk', CHUNKS)
@pytest.mark.parametrize('k', [1, 3, 5])
def test_all_four_equal_brute_force(k, chunk):
    real, fake = random_sets(1)
    expected = brute_prdc(real, fake, k)
    got = prdc(real, fake, k, chunk)
    assert all(isinstance(v, float) for v in got)
    assert got == pytest.approx(expected, abs=1e-12)
    # The fixture must not be degenerate: something strictly between 0 and 1 for each metric.
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1 and 0 < expected[3] < 1
    assert expected[2] > 0


def test_chunking_does_not_change_results():
    real, fake = random_sets(2)
    results = [prdc(real, fake, 3, chunk) for chunk in [1, 2, 7, 19, 20, 25, 1024]]
    assert all(r == results[0] for r in results)
    radii = [knn_radii(fake, 4, chunk) for chunk in [1, 7, 1024]]
    assert all(torch.equal(r, radii[0]) for r in radii)


def test_distances_are_computed_chunk_rows_at_a_time(monkeypatch):
    real, fake = random_sets(3)
    rows = []
    original = inception_metrics._pairwise_distances

    def recording(a, b):
        rows.append(len(a))
        return original(a, b)
    monkeypatch.setattr(inception_metrics, '_pairwise_distances', recording)
    prdc(real, fake, 2, chunk=6)
    assert rows and max(rows) == 6


# --- Ties: closed balls for precision/recall, open balls for density/coverage ----------------

def test_point_on_a_sphere_counts_for_precision_recall_not_density_coverage():
    # Integer coordinates, k = 1, so every distance below is exact.
    #   real r0 (0,0), r1 (2,0), r2 (10,0), r3 (10,3): radii 2, 2, 3, 3.
    #   fake f0 (0,2), f1 (0,4): radii 2, 2; f2 (10,1), f3 (11,1): radii 1, 1; f4, f5 far: 1, 1.
    # Precision (closed): f0 is at 2 = r_1(r0) from r0, on its sphere: in. f2 (1 from r2) and
    #   f3 (sqrt 2 from r2) are in; f1 (4 from r0, sqrt 20 from r1), f4, f5 are out: 3 / 6.
    # Recall (closed): r0 is at 2 = r_1(f0) from f0 and r2 at 1 = r_1(f2) from f2, both on
    #   spheres: in. r1 (sqrt 8 from f0) and r3 (2 from f2, sqrt 5 from f3) are out: 2 / 4.
    # Density (open): f0 on r0's sphere counts nowhere; f2 is strictly inside r2's (1 < 3) and
    #   r3's (2 < 3) balls, f3 too (sqrt 2 < 3, sqrt 5 < 3); the rest nowhere: 4 / (1 * 6).
    # Coverage (open): r2 and r3 hold a fake strictly inside; r0 only on its sphere: 2 / 4.
    real = np.array([[0, 0], [2, 0], [10, 0], [10, 3]])
    fake = np.array([[0, 2], [0, 4], [10, 1], [11, 1], [30, 0], [30, 1]])
    assert knn_radii(real, 1).tolist() == [2, 2, 3, 3]
    assert knn_radii(fake, 1).tolist() == [2, 2, 1, 1, 1, 1]
    for chunk in CHUNKS:
        assert precision_recall(real, fake, k=1, chunk=chunk) == (3 / 6, 2 / 4)
        assert density_coverage(real, fake, k=1, chunk=chunk) == (4 / 6, 2 / 4)
    assert prdc(real, fake, 1) == pytest.approx(brute_prdc(real, fake, 1), abs=0)


# --- Duplicates, identical and separated sets ------------------------------------------------

def test_duplicate_rows_are_neighbours_at_distance_zero():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((12, 4))
    real = np.concatenate([base, base[[0, 3, 3, 7]]])  # row 3 three times, rows 0 and 7 twice
    fake = np.concatenate([rng.standard_normal((14, 4)), real[[0, 3]]])  # two fakes on them
    twins = {0, 3, 7, 12, 13, 14, 15}
    radii = knn_radii(real, 1)
    assert [i for i in range(len(real)) if radii[i] == 0] == sorted(twins)
    np.testing.assert_allclose(radii.numpy(), brute_radii(real, 1), rtol=1e-12)
    # Row 3 has two twins, so its second neighbour is at 0 too; rows 0 and 7 have one.
    radii2 = knn_radii(real, 2).numpy()
    assert radii2[3] == radii2[13] == radii2[14] == 0 and radii2[0] > 0 and radii2[7] > 0
    for k in [1, 2, 3]:
        for chunk in CHUNKS:
            assert prdc(real, fake, k, chunk) == pytest.approx(brute_prdc(real, fake, k),
                                                               abs=1e-12)
    # k = 1 on the twin pairs (0, 12) and (3, 13) alone: every real radius is 0. The fakes on
    # rows 0 and 3 sit in zero-radius closed balls, but an open ball of radius 0 is empty.
    pairs, on_them = real[[0, 12, 3, 13]], fake[-2:]
    assert knn_radii(pairs, 1).tolist() == [0, 0, 0, 0]
    precision, _ = precision_recall(pairs, on_them, k=1)
    assert (precision, *density_coverage(pairs, on_them, k=1)) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize('k', [1, 3, 5])
def test_identical_sets(k):
    real, _ = random_sets(5)
    precision, recall, density, coverage = prdc(real, real.copy(), k)
    # Every fake is a real centre (distance 0 <= radius) and every real centre holds its own
    # copy (0 < radius, the rows being distinct).
    assert precision == recall == coverage == 1.0
    assert density == pytest.approx(brute_prdc(real, real, k)[2], abs=1e-12)


def test_well_separated_sets_score_zero():
    real, fake = random_sets(6)
    assert prdc(real, fake + 100.0, 3) == (0.0, 0.0, 0.0, 0.0)


# --- Inputs ----------------------------------------------------------------------------------

def test_torch_and_numpy_inputs_agree():
    real, fake = random_sets(7)
    expected = prdc(real, fake, 3)
    assert prdc(torch.from_numpy(real), torch.from_numpy(fake), 3) == expected
    assert prdc(torch.from_numpy(real), fake, 3) == expected
    assert torch.equal(knn_radii(torch.from_numpy(real), 3), knn_radii(real, 3))
    # float32 features are widened to float64 before any arithmetic.
    real32, fake32 = real.astype(np.float32), fake.astype(np.float32)
    assert (prdc(torch.from_numpy(real32), torch.from_numpy(fake32), 3)
            == prdc(real32.astype(np.float64), fake32.astype(np.float64), 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_agrees_with_cpu():
    real, fake = random_sets(8)
    radii = knn_radii(torch.from_numpy(real).cuda(), 3, chunk=7)
    assert radii.device.type == 'cuda'
    assert torch.equal(radii.cpu(), knn_radii(real, 3))
    gpu = prdc(torch.from_numpy(real).cuda(), torch.from_numpy(fake).cuda(), 3, chunk=7)
    assert gpu == pytest.approx(prdc(real, fake, 3), abs=1e-12)
    tie_real = torch.tensor([[0, 0], [2, 0], [10, 0], [10, 3]], device='cuda')
    tie_fake = torch.tensor([[0, 2], [0, 4], [10, 1], [11, 1], [30, 0], [30, 1]], device='cuda')
    assert prdc(tie_real, tie_fake, 1) == (3 / 6, 2 / 4, 4 / 6, 2 / 4)


def test_bad_inputs_raise_value_errors_naming_the_problem():
    real, fake = random_sets(9)
    with pytest.raises(ValueError, match=r'real must be an N x D feature matrix; got shape \(4,\)'):
        precision_recall(real[0], fake)
    with pytest.raises(ValueError, match=r'fake must be an N x D .*got shape \(2, 25, 4\)'):
        density_coverage(real, fake[None].repeat(2, 0))
    with pytest.raises(ValueError, match=r'features must be an N x D'):
        knn_radii(np.zeros(5), 1)
    with pytest.raises(ValueError, match=r'same feature size D; got shapes \(20, 4\) and \(25, 3'):
        precision_recall(real, fake[:, :3])
    with pytest.raises(ValueError, match=r'same feature size D'):
        density_coverage(real, fake[:, :3])
    too_many = r'k must be at least 1 and less than the number of rows of {} \({}\); got k={}'
    with pytest.raises(ValueError, match=too_many.format('real', 20, 20)):
        precision_recall(real, fake, k=20)
    with pytest.raises(ValueError, match=too_many.format('fake', 5, 5)):
        precision_recall(real, fake[:5], k=5)
    with pytest.raises(ValueError, match=too_many.format('real', 20, 0)):
        density_coverage(real, fake, k=0)
    with pytest.raises(ValueError, match=too_many.format('features', 3, 3)):
        knn_radii(real[:3], 3)
    with pytest.raises(ValueError, match=too_many.format('features', 20, -1)):
        knn_radii(real, -1)
    with pytest.raises(ValueError, match=r'chunk must be at least 1 row; got chunk=0'):
        precision_recall(real, fake, chunk=0)
    with pytest.raises(ValueError, match=r'fake must have at least 1 row; got shape \(0, 4\)'):
        density_coverage(real, fake[:0])
    # density/coverage give balls to real rows only, so a small fake set is fine.
    assert density_coverage(real, fake[:1], k=5)[0] >= 0
