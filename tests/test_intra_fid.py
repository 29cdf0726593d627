"""Intra-class FID: calculate_inception_moments.py --per_class_moments stores each class's
moments; the scoring command, and the metrics of train.py / sample.py (--use_intra_fid), give
the mean of the per-class FIDs computed directly, here with the tiny stand-in network."""
import sys
import types

import numpy as np
import pytest
import scipy.linalg
import torch

import calculate_inception_moments as cim
import inception_utils
import sample
import sample_config
from inception_testing import TinyFeatureNet, tiny_features, uniform_images, write_moments

N_CLASSES, SIZE = 3, 8


def _labelled(n_per_class: int, seed: int, shift: float):
    """uint8 images of three classes that differ in brightness, classes interleaved."""
    images = uniform_images(N_CLASSES * n_per_class, SIZE, seed).float()
    labels = torch.arange(len(images)) % N_CLASSES
    images = (images * (0.5 + 0.2 * labels[:, None, None, None]) + shift).clamp(0, 255)
    return images.to(torch.uint8), labels


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets, written out: |mu_a - mu_b|^2 + tr(Sa + Sb - 2 (Sa Sb)^1/2)."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sa @ sb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * root))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Per-class moments made by the command from 60 real images, 36 labelled fake ones in
    sample.py's npz layout, and the expected intra-class FID computed directly."""
    root = tmp_path_factory.mktemp('intra')
    real, real_y = _labelled(20, seed=1, shift=0)
    fake, fake_y = _labelled(12, seed=2, shift=20)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(real, real_y),
                                         batch_size=7)  # batches cut across the classes
    patch = pytest.MonkeyPatch()
    patch.setitem(sys.modules, 'datasets',
                  types.SimpleNamespace(get_data_loaders=lambda *a, **k: [loader]))
    patch.setattr(cim, 'load_inception_net', lambda *args: TinyFeatureNet())
    moments = str(root / 'moments.npz')
    try:
        cim.main(['--dataset', 'C10', '--moments_path', moments, '--per_class_moments',
                  '--num_workers', '0'])
    finally:
        patch.undo()
    npz = str(root / 'samples.npz')
    np.savez(npz, x=fake.numpy(), y=fake_y.numpy())
    real_f = tiny_features(real)[0].double().numpy()
    fake_f = tiny_features(fake)[0].double().numpy()
    per_class = [_fid(fake_f[fake_y == c], real_f[real_y == c]) for c in range(N_CLASSES)]
    return {'moments': moments, 'npz': npz, 'fake': fake, 'fake_y': fake_y, 'real_f': real_f,
            'real_y': real_y.numpy(), 'per_class': per_class, 'root': root}


def test_per_class_moments_are_each_class_mean_and_covariance(data):
    with np.load(data['moments']) as f:
        assert list(f['class_count']) == [20] * N_CLASSES
        for c in range(N_CLASSES):
            rows = data['real_f'][data['real_y'] == c]
            np.testing.assert_allclose(f['class_mu'][c], rows.mean(0), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(f['class_sigma'][c], np.cov(rows, rowvar=False),
                                       rtol=1e-4, atol=1e-4)


def test_scoring_gives_the_mean_of_the_per_class_fids(data):
    result = inception_utils.score_samples(data['npz'], data['moments'], net=TinyFeatureNet(),
                                           device='cpu', num_splits=2)
    expected = float(np.mean(data['per_class']))
    assert result['intra_FID'] == pytest.approx(expected, rel=1e-5)
    assert result['intra_FID_classes'] == N_CLASSES
    # Not the FID of all classes pooled, nor any single class's.
    assert abs(result['intra_FID'] - result['FID']) > 1e-3 * expected
    assert min(abs(result['intra_FID'] - f) for f in data['per_class']) > 1e-3 * expected
    skipped = inception_utils.score_samples(data['npz'], data['moments'], net=TinyFeatureNet(),
                                            device='cpu', num_splits=2, intra_fid=False)
    assert skipped['intra_FID'] is None and skipped['FID'] == result['FID']


def test_monitoring_metrics_give_the_same_number(data):
    """The metrics object of train.py and sample.py (--use_intra_fid) keeps the labels."""
    metrics = inception_utils.InceptionMetrics(data['moments'], net=TinyFeatureNet(),
                                               device='cpu', use_intra_fid=True)
    batches = [(data['fake'][i:i + 6].float() / 127.5 - 1, data['fake_y'][i:i + 6])
               for i in range(0, len(data['fake']), 6)]
    draws = iter(batches)
    metrics(lambda: next(draws), len(data['fake']), num_splits=2, prints=False, use_torch=False)
    assert metrics.last['intra_FID'] == pytest.approx(np.mean(data['per_class']), rel=1e-5)


def test_missing_per_class_moments_or_labels_are_named(data, tmp_path, capsys):
    plain = tmp_path / 'plain.npz'
    write_moments(plain, data['fake'])
    cases = [(['--samples', data['npz'], '--moments_path', str(plain)], '--per_class_moments'),
             (['--samples', data['npz']], '--intra_fid needs --moments_path')]
    unlabelled = tmp_path / 'unlabelled.npz'
    np.savez(unlabelled, x=data['fake'].numpy())
    cases.append((['--samples', str(unlabelled), '--moments_path', data['moments']],
                  'needs the labels of the samples'))
    for argv, match in cases:
        with pytest.raises(SystemExit) as stop:
            inception_utils.main(argv + ['--intra_fid'])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(err) == 1 and match in err[0], err
    # sample.py --use_intra_fid checks the moments file before it samples anything.
    config = sample_config.parse_sample_config(['--dataset', 'C10', '--moments_path', str(plain),
                                                '--use_intra_fid',
                                                '--sample_inception_metrics'])
    with pytest.raises(ValueError, match='--per_class_moments'):
        sample.inception_metrics(config, torch.device('cpu'))
