"""Two gloo processes: get_inception_metrics gathers features and every process returns the
numbers one process gets on all images; the moments sums add up across processes."""
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import calculate_inception_moments as cim
import inception_utils
from inception_metrics import calculate_inception_score, feature_moments
from inception_testing import Sampler, TinyFeatureNet, tiny_features, uniform_images, write_moments
from inception_utils import InceptionMetrics


def rank_images(rank):
    return uniform_images(16, seed=10 + rank)  # each process draws its own images


def batches_of(images, size):
    return [(images[i:i + size].float() / 127.5 - 1, torch.zeros(0))
            for i in range(0, len(images), size)]


def _worker(rank, store, out_dir, moments):
    torch.distributed.init_process_group('gloo', init_method=f'file://{store}', rank=rank,
                                         world_size=2)
    try:
        rows = inception_utils.all_gather_rows(torch.full((rank + 1, 2), float(rank)))
        assert rows.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        metrics = InceptionMetrics(moments, use_kid=True, device='cpu', net=TinyFeatureNet())
        # 32 images asked for: 16 per process, in batches of 8.
        result = metrics(Sampler(rank_images(rank), 8), 32, num_splits=4, prints=False)
        stats = cim.accumulate_statistics(batches_of(rank_images(rank), 6), TinyFeatureNet(),
                                          num_images=16, num_splits=4, num_kid_features=6)
        np.savez(os.path.join(out_dir, f'{rank}.npz'), metrics=np.array(result),
                 kid=metrics.last['KID_mean'], num_images=metrics.last['num_images'],
                 mu=stats['mu'], sigma=stats['sigma'], n=stats['num_images'],
                 inception_score=np.array([stats['IS_mean'], stats['IS_std']]),
                 kid_features=stats['kid_features'])
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    write_moments(tmp / 'm.npz', uniform_images(40, seed=1))
    mp.spawn(_worker, args=(str(tmp / 'store'), str(tmp), str(tmp / 'm.npz')), nprocs=2)
    return tmp, [dict(np.load(tmp / f'{rank}.npz')) for rank in range(2)]


def test_metrics_agree_across_processes_and_with_one_process(results):
    tmp, (first, second) = results
    for key in first:
        assert np.array_equal(first[key], second[key]), key
    # One process drawing rank 0's images, then rank 1's, gets the same numbers.
    single = InceptionMetrics(str(tmp / 'm.npz'), use_kid=True, device='cpu',
                              net=TinyFeatureNet())
    both = torch.cat([rank_images(0), rank_images(1)])
    expected = single(Sampler(both, 8), 32, num_splits=4, prints=False)
    np.testing.assert_allclose(first['metrics'], expected, rtol=1e-6)
    assert first['kid'] == pytest.approx(single.last['KID_mean'], rel=1e-6)
    assert first['num_images'] == 32


def test_moments_add_up_across_processes(results):
    _, (first, _) = results
    pool, logits = tiny_features(torch.cat([rank_images(0), rank_images(1)]))
    mu, sigma = feature_moments(pool)
    assert first['n'] == 32
    np.testing.assert_allclose(first['mu'], mu.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(first['sigma'], sigma.numpy(), rtol=1e-6, atol=1e-9)
    # IS split k is the union of every process's split k: rows 4k..4k+3 of each process.
    probs = torch.softmax(logits.double(), 1)
    order = torch.cat([torch.arange(4 * k, 4 * k + 4) + 16 * r for k in range(4) for r in (0, 1)])
    expected = calculate_inception_score(probs[order], 4)
    np.testing.assert_allclose(first['inception_score'], expected, rtol=1e-9)
    assert first['kid_features'].shape == (6, pool.shape[1])  # 3 kept by each process
