"""The numbers to report: inception_tf13.py's IS splits, the sample and reference layouts papers
use (ours, the original's, ADM's), moments provenance, and precision / recall / density /
coverage in the scoring command."""
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import inception_utils
from inception_metrics import (calculate_inception_score, calculate_kid, density_coverage,
                               feature_moments, precision_recall)
from inception_testing import TinyFeatureNet, tiny_features, uniform_images, write_moments
from metric_inputs import load_moments, save_moments


def _tf13_inception_score(probs: np.ndarray, splits: int = 10):
    """inception_tf13.py's loop, written out: split i is rows i N // S to (i + 1) N // S."""
    scores = []
    n = probs.shape[0]
    for i in range(splits):
        part = probs[(i * n // splits):((i + 1) * n // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def _score(path, **kw):
    return inception_utils.score_samples(str(path), net=TinyFeatureNet(), device='cpu', **kw)


def test_scoring_uses_inception_tf13_splits(tmp_path):
    images = uniform_images(48, seed=5)
    np.savez(tmp_path / 's.npz', x=images.numpy())
    result = _score(tmp_path / 's.npz')
    _, logits = tiny_features(images)
    probs = F.softmax(logits.double(), 1).numpy()
    expected = _tf13_inception_score(probs)
    assert (result['IS_mean'], result['IS_std']) == pytest.approx(expected, rel=1e-10)
    # 48 is not a multiple of 10: the monitor's rule (4 rows per split, 8 dropped) differs.
    monitor = calculate_inception_score(probs, 10, rule='monitor')
    assert abs(monitor[0] - expected[0]) > 1e-3 * expected[0]


def test_monitoring_rule_follows_the_network(tmp_path):
    assert inception_utils.is_split_rule('tf') == 'tf13'
    assert inception_utils.is_split_rule('torchvision') == 'monitor'


def test_every_layout_of_the_same_images_scores_the_same(tmp_path):
    images = uniform_images(24, seed=6)
    write_moments(tmp_path / 'm.npz', uniform_images(30, seed=7))
    nchw = images.numpy()
    layouts = {
        'ours.npz': {'x': nchw, 'y': np.arange(24)},
        'adm.npz': {'arr_0': nchw.transpose(0, 2, 3, 1), 'arr_1': np.arange(24)},
        'nhwc_x.npz': {'x': nchw.transpose(0, 2, 3, 1)},
        'unit.npz': {'x': nchw.astype(np.float32) / 255},
        'signed.npz': {'arr_0': (nchw.astype(np.float64) / 127.5 - 1).transpose(0, 2, 3, 1)},
    }
    results = {}
    for name, arrays in layouts.items():
        np.savez(tmp_path / name, **arrays)
        results[name] = _score(tmp_path / name, moments_path=str(tmp_path / 'm.npz'),
                               num_splits=4, kid_subsets=3, kid_subset_size=20)
    assert results['ours.npz'] == results['adm.npz'] == results['nhwc_x.npz']
    for name in ('unit.npz', 'signed.npz'):  # floats: the same images up to rounding
        for key, value in results['ours.npz'].items():
            if isinstance(value, float):
                assert results[name][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize('x,match', [
    (np.full((4, 3, 8, 8), 2.0, np.float32), r'range over \[2, 2\], neither \[-1, 1\] nor'),
    (np.full((4, 3, 8, 8), -1.5, np.float64), r'\[-1.5, -1.5\]'),
    (np.zeros((4, 3, 8, 8), np.int32), 'dtype int32'),
    (np.zeros((4, 8, 8), np.uint8), r'shape \(4, 8, 8\)'),
    (np.full((4, 3, 8, 8), np.nan, np.float32), 'nan'),
])
def test_bad_sample_arrays_name_key_shape_dtype_and_what_is_valid(tmp_path, x, match):
    np.savez(tmp_path / 's.npz', arr_0=x)
    with pytest.raises(ValueError, match=match) as err:
        _score(tmp_path / 's.npz', num_splits=2)
    assert 'key "arr_0"' in str(err.value) and 'valid:' in str(err.value)
    np.savez(tmp_path / 'none.npz', images=np.zeros((4, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match='no images under "x" or "arr_0" \\(it has: images\\)'):
        _score(tmp_path / 'none.npz', num_splits=2)


def _adm_reference_batch(path, images):
    """An ADM reference batch: TF pool3 moments, spatial moments and the images (N x H x W x 3),
    no network key."""
    pool, _ = tiny_features(images)
    mu, sigma = feature_moments(pool)
    np.savez(path, mu=mu.numpy(), sigma=sigma.numpy(), mu_s=np.zeros(7),
             sigma_s=np.eye(7), arr_0=images.numpy().transpose(0, 2, 3, 1))
    return pool


def test_adm_reference_batches_give_fid_kid_and_manifold_metrics(tmp_path):
    real, fake = uniform_images(30, seed=8), uniform_images(20, seed=9)
    real_pool = _adm_reference_batch(tmp_path / 'ref.npz', real)
    moments = load_moments(str(tmp_path / 'ref.npz'), kind='tf')  # ADM batches are TF pool3
    assert moments['inception'] == 'tf' and 'kid_features' not in moments
    with pytest.raises(ValueError, match='features differ'):
        load_moments(str(tmp_path / 'ref.npz'), kind='torchvision')
    np.savez(tmp_path / 'samples.npz', arr_0=fake.numpy().transpose(0, 2, 3, 1))
    result = _score(tmp_path / 'samples.npz', moments_path=str(tmp_path / 'ref.npz'),
                    num_splits=2, kid_subsets=4, kid_subset_size=15)
    pool, _ = tiny_features(fake)
    assert result['KID_mean'] == pytest.approx(calculate_kid(pool, real_pool, 4, 15)[0],
                                               rel=1e-9)
    assert (result['precision'], result['recall']) == precision_recall(real_pool, pool, k=3)
    assert (result['density'], result['coverage']) == density_coverage(real_pool, pool, k=5)
    assert 0 < result['recall'] < 1 or 0 < result['precision'] < 1  # not a trivial fixture


def test_an_adm_reference_batch_goes_through_the_network_once_per_run(tmp_path):
    """Training tests again and again: the reference images' features are computed at the
    first test and kept, and later tests give the same KID from them."""
    real, fake = uniform_images(30, seed=8), uniform_images(16, seed=9)
    _adm_reference_batch(tmp_path / 'ref.npz', real)
    net, images_seen = TinyFeatureNet(), []
    net.register_forward_hook(lambda module, args, out: images_seen.append(len(args[0])))
    metrics = inception_utils.InceptionMetrics(str(tmp_path / 'ref.npz'), use_kid=True,
                                               device='cpu', net=net)
    results = []
    for _ in range(2):
        batches = iter(fake.float().div(127.5).sub(1).split(8))
        metrics(lambda: (next(batches), None), 16, num_splits=2, prints=False)
        results.append(metrics.last['KID_mean'])
    assert sum(images_seen) == 2 * len(fake) + len(real)
    assert results[0] == results[1]


def test_our_files_give_manifold_metrics_from_their_kid_features(tmp_path, capsys):
    real, fake = uniform_images(30, seed=10), uniform_images(20, seed=11)
    write_moments(tmp_path / 'm.npz', real)
    np.savez(tmp_path / 's.npz', x=fake.numpy())
    result = _score(tmp_path / 's.npz', moments_path=str(tmp_path / 'm.npz'), num_splits=2,
                    kid_subsets=2, kid_subset_size=10)
    pool, _ = tiny_features(fake)
    real_pool, _ = tiny_features(real)
    assert (result['precision'], result['recall']) == precision_recall(real_pool, pool)
    assert (result['density'], result['coverage']) == density_coverage(real_pool, pool)
    # A file without real features: FID only, and it says why.
    mu, sigma = feature_moments(real_pool)
    save_moments(str(tmp_path / 'bare.npz'), mu=mu.numpy(), sigma=sigma.numpy(), inception='tf')
    bare = _score(tmp_path / 's.npz', moments_path=str(tmp_path / 'bare.npz'), num_splits=2)
    assert bare['FID'] == pytest.approx(result['FID']) and bare['precision'] is None
    assert 'keeps no real features' in capsys.readouterr().err


def test_provenance_mismatch_warns_naming_both(tmp_path):
    write_moments(tmp_path / 'm.npz', uniform_images(10), dataset='C10', resolution=32)
    with pytest.warns(UserWarning, match="dataset 'C10'; this run has dataset 'C100'"):
        load_moments(str(tmp_path / 'm.npz'), 'tf', dataset='C100', resolution=32)
    with pytest.warns(UserWarning, match='resolution 32; this run has resolution 64'):
        load_moments(str(tmp_path / 'm.npz'), 'tf', dataset='C10', resolution=64)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the same data under its HDF5 name: no warning
        load_moments(str(tmp_path / 'm.npz'), 'tf', dataset='C10_hdf5', resolution=32)


def test_scoring_command_prints_every_metric(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inception_utils, 'load_inception_net', lambda *a, **k: TinyFeatureNet())
    write_moments(tmp_path / 'm.npz', uniform_images(30, seed=12))
    np.savez(tmp_path / 's.npz', arr_0=uniform_images(20, seed=13).numpy().transpose(0, 2, 3, 1))
    inception_utils.main(['--samples', str(tmp_path / 's.npz'), '--moments_path',
                          str(tmp_path / 'm.npz'), '--num_splits', '2', '--kid_subsets', '2',
                          '--kid_subset_size', '10', '--device', 'cpu'])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ('IS_mean', 'FID', 'KID_mean', 'precision', 'recall', 'density', 'coverage'):
        assert isinstance(record[key], float), key


def test_training_metrics_log_manifold_metrics_with_use_prdc(tmp_path, monkeypatch):
    monkeypatch.setattr(inception_utils, 'load_inception_net', lambda *a, **k: TinyFeatureNet())
    real, fake = uniform_images(30, seed=14), uniform_images(16, seed=15)
    write_moments(tmp_path / 'm.npz', real)
    metrics = inception_utils.prepare_inception_metrics(
        'C10', moments_path=str(tmp_path / 'm.npz'), use_prdc=True, device='cpu', start_up=True)
    batches = iter(fake.float().div(127.5).sub(1).split(8))
    metrics(lambda: (next(batches), None), 16, num_splits=2, prints=False)
    pool, _ = tiny_features(fake)
    real_pool, _ = tiny_features(real)
    assert metrics.last['precision'] == precision_recall(real_pool, pool)[0]
    assert metrics.last['coverage'] == density_coverage(real_pool, pool)[1]
    import train_fns
    assert set(train_fns.extra_metrics(metrics)) == {'precision', 'recall', 'density',
                                                     'coverage'}
    # Without real features in the file, --use_prdc fails at start-up, naming the file.
    mu, sigma = feature_moments(real_pool)
    save_moments(str(tmp_path / 'bare.npz'), mu=mu.numpy(), sigma=sigma.numpy(), inception='tf')
    with pytest.raises(ValueError, match='bare.npz lacks kid_features, which precision'):
        inception_utils.prepare_inception_metrics('C10', moments_path=str(tmp_path / 'bare.npz'),
                                                  use_prdc=True)


def test_float_samples_equal_their_uint8_images_in_the_network():
    """The float [0, 1] path is the same images: the network quantizes floats the way a saved
    image is, so scores from floats and uint8 agree."""
    images = uniform_images(6, seed=16)
    as_unit = torch.from_numpy(images.numpy().astype(np.float32) / 255 * 2 - 1)
    assert torch.allclose(tiny_features(as_unit)[0], tiny_features(images)[0], atol=1e-5)


TINY_RUN = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
            '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
            '--num_iters', '4', '--test_every', '2', '--save_every', '2']


@pytest.mark.parametrize('weights', ['missing', 'corrupt'])
def test_train_that_will_test_checks_the_weights_before_anything(tmp_path, hdf5_file, weights):
    import os
    import subprocess
    import sys
    from conftest import ROOT
    path = tmp_path / 'inception.pth'
    if weights == 'corrupt':
        path.write_bytes(b'not a weight file')
    write_moments(tmp_path / 'm.npz', uniform_images(10))
    roots = {name: tmp_path / name for name in ('weights', 'logs', 'samples')}
    argv = ['--dataset', 'HDF5', '--data_root', hdf5_file, *TINY_RUN,
            '--inception_weights', str(path), '--moments_path', str(tmp_path / 'm.npz')]
    for name, root in roots.items():
        argv += [f'--{name}_root', str(root)]
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + argv,
                            capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'inception.pth' in errors[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert 'Beginning training' not in result.stdout
    written = [os.path.join(d, f) for root in roots.values() for d, _, files in os.walk(root)
               for f in files]
    assert written == []


def test_best_copies_hold_the_bn_statistics_their_scores_were_measured_with(
        tmp_path, hdf5_file, monkeypatch):
    """With --accumulate_stats the metrics run on standing statistics; the _best copy saved
    for those scores holds them, while training (and G.pth) goes on with its own."""
    import checkpoints
    import train
    import utils
    monkeypatch.setattr(inception_utils, 'load_inception_net', lambda *a, **k: TinyFeatureNet())
    measured = []
    real_call = inception_utils.InceptionMetrics.__call__

    def record(self, sample, *args, **kwargs):
        measured.append({k: v.clone() for k, v in sample.args[0].named_buffers()})
        return real_call(self, sample, *args, **kwargs)
    monkeypatch.setattr(inception_utils.InceptionMetrics, '__call__', record)
    write_moments(tmp_path / 'm.npz', uniform_images(20))
    argv = ['--dataset', 'HDF5', '--data_root', hdf5_file, *TINY_RUN, '--num_iters', '2',
            '--accumulate_stats', '--num_standing_accumulations', '2',
            '--num_inception_images', '10', '--moments_path', str(tmp_path / 'm.npz')]
    for name in ('weights', 'logs', 'samples'):
        argv += [f'--{name}_root', str(tmp_path / name)]
    config = utils.parse_config(argv)
    train.run(config)
    folder = tmp_path / 'weights' / utils.experiment_name(config)
    best = torch.load(folder / checkpoints.file_name('G', 'best0'))
    latest = torch.load(folder / checkpoints.file_name('G', None))
    assert len(measured) == 1
    stats = [key for key in measured[0] if key.endswith(('mean', 'var'))]
    assert stats
    for key in stats:
        assert torch.equal(best[key], measured[0][key]), key
    assert any(not torch.equal(latest[key], measured[0][key]) for key in stats)
