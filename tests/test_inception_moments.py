"""calculate_inception_moments.py: streamed moments equal the mean and covariance of the
features computed directly; the command writes the original's keys; the KID subset is uniform."""
import sys
import types

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

import calculate_inception_moments as cim
from inception_metrics import calculate_inception_score, feature_moments
from inception_testing import (TinyFeatureNet, random_inception, save_random_weights,
                               tiny_features, uniform_images)
from inception_utils import load_moments


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """Two classes, five 20 x 20 RGB images in all."""
    root = tmp_path_factory.mktemp('folder')
    images = uniform_images(5, size=20, seed=4)
    for i, image in enumerate(images):
        (root / f'class{i % 2}').mkdir(exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / f'class{i % 2}' / f'{i}.png')
    return root


def folder_loader(root, batch_size):
    # What the data layer yields: float images in [-1, 1] and int64 labels.
    to_signed = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3,
                                                                                [0.5] * 3)])
    dataset = torchvision.datasets.ImageFolder(str(root), transform=to_signed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


def test_streamed_moments_equal_direct_mean_and_covariance(image_folder):
    net = random_inception('tf')
    loader = folder_loader(image_folder, batch_size=2)  # batches of 2, 2, 1
    stats = cim.accumulate_statistics(loader, net, 'cpu', num_images=5, num_splits=2,
                                      num_kid_features=3)
    images = torch.cat([x for x, _ in loader])
    with torch.no_grad():
        pool, logits = net(images)
    pool64 = pool.double().numpy()
    assert stats['num_images'] == 5
    assert stats['mu'].shape == (2048,) and stats['sigma'].shape == (2048, 2048)
    np.testing.assert_allclose(stats['mu'], pool64.mean(0), rtol=1e-4, atol=1e-6)
    scale = np.abs(np.cov(pool64, rowvar=False)).max()
    np.testing.assert_allclose(stats['sigma'], np.cov(pool64, rowvar=False), rtol=0,
                               atol=1e-4 * scale)
    expected_is = calculate_inception_score(torch.softmax(logits.double(), 1), 2)
    assert (stats['IS_mean'], stats['IS_std']) == pytest.approx(expected_is, rel=1e-4)
    # KID keeps 3 of the 5 feature rows.
    kept = stats['kid_features']
    assert kept.shape == (3, 2048)
    distances = np.abs(kept[:, None, :] - pool.numpy()[None]).max(-1)
    assert (distances.min(1) < 1e-4).all()


def test_reservoir_keeps_a_uniform_subset():
    counts = np.zeros(10)
    for seed in range(2000):
        reservoir = cim._Reservoir(3, seed)
        for lo, hi in ((0, 4), (4, 5), (5, 10)):
            reservoir.add(np.arange(lo, hi, dtype=np.float32)[:, None])
        kept = reservoir.result()[:, 0]
        assert len(set(kept)) == 3
        counts[kept.astype(int)] += 1
    np.testing.assert_allclose(counts / 2000, 0.3, atol=0.04)  # every row kept with p = 3/10
    small = cim._Reservoir(8, 0)
    small.add(np.ones((5, 2), np.float32))
    assert small.result().shape == (5, 2)


def test_command_writes_the_original_keys(image_folder, tmp_path, monkeypatch, capsys):
    # A stand-in data layer, so that the command runs before datasets.py exists.
    calls = []

    def get_data_loaders(dataset, **kwargs):
        calls.append((dataset, kwargs))
        return [folder_loader(kwargs['data_root'], kwargs['batch_size'])]
    monkeypatch.setitem(sys.modules, 'datasets',
                        types.SimpleNamespace(get_data_loaders=get_data_loaders))
    # The tiny network keeps this fast; the real one is covered above and in the scoring test.
    loaded = []

    def load_inception_net(kind, weights_path, device, parallel):
        loaded.append((kind, weights_path, parallel))
        return TinyFeatureNet()
    monkeypatch.setattr(cim, 'load_inception_net', load_inception_net)
    out = tmp_path / 'moments' / 'folder.npz'
    cim.main(['--dataset', 'ImageFolder', '--data_root', str(image_folder), '--resolution', '20',
              '--batch_size', '4', '--num_workers', '0', '--inception_weights', 'w.pth',
              '--moments_path', str(out), '--num_kid_features', '2'])
    assert loaded == [('tf', 'w.pth', False)]
    dataset, kwargs = calls[0]
    assert dataset == 'ImageFolder' and kwargs['resolution'] == 20
    assert kwargs['drop_last'] is False and kwargs['shuffle'] is False
    with np.load(out) as f:
        assert {'mu', 'sigma', 'num_images', 'inception', 'kid_features', 'dataset',
                'resolution'} == set(f.files)
        assert int(f['num_images']) == 5 and str(f['inception']) == 'tf'
        assert str(f['dataset']) == 'ImageFolder' and int(f['resolution']) == 20
    moments = load_moments(str(out), kind='tf', need_kid=True)
    pool, _ = tiny_features(torch.cat([x for x, _ in folder_loader(image_folder, 5)]))
    mu, sigma = feature_moments(pool)
    np.testing.assert_allclose(moments['mu'], mu.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(moments['sigma'], sigma.numpy(), rtol=1e-6, atol=1e-9)
    assert moments['kid_features'].shape == (2, pool.shape[1])
    assert 'Saved the Inception moments of 5 images' in capsys.readouterr().out


def test_command_on_the_data_layer(image_folder, tmp_path, monkeypatch):
    datasets = pytest.importorskip('datasets')
    if not hasattr(datasets, 'get_data_loaders'):
        pytest.skip('the data layer (datasets.py) is not merged yet')
    monkeypatch.chdir(tmp_path)  # whatever the data layer caches in the current folder lands here
    weights = tmp_path / 'w.pth'
    net = save_random_weights(weights, seed=3)
    out = tmp_path / 'm.npz'
    cim.main(['--dataset', 'ImageFolder', '--data_root', str(image_folder), '--resolution', '32',
              '--batch_size', '2', '--num_workers', '0', '--inception_weights', str(weights),
              '--moments_path', str(out)])
    loader = datasets.get_data_loaders('ImageFolder', data_root=str(image_folder),
                                       batch_size=5, num_workers=0, shuffle=False,
                                       drop_last=False, resolution=32)[0]
    with torch.no_grad():
        pool = torch.cat([net(x)[0] for x, _ in loader]).double().numpy()
    moments = load_moments(str(out), kind='tf')
    np.testing.assert_allclose(moments['mu'], pool.mean(0), rtol=1e-4, atol=1e-6)
    scale = np.abs(np.cov(pool, rowvar=False)).max()
    np.testing.assert_allclose(moments['sigma'], np.cov(pool, rowvar=False), atol=1e-4 * scale)
