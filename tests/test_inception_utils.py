"""The metrics pipeline: moments files, prepare_inception_metrics (lazy, no_fid, KID, several
processes) and the scoring command. Most tests use a tiny stand-in network for speed."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import inception_utils
from inception_metrics import (calculate_frechet_distance, calculate_inception_score,
                               calculate_kid, feature_moments)
from inception_testing import (Sampler, TinyFeatureNet, save_random_weights, tiny_features,
                               uniform_images, write_moments)
from inception_utils import (default_moments_path, load_moments,
                             prepare_inception_metrics, save_moments, score_samples)


@pytest.fixture
def tiny_net(monkeypatch):
    """Make load_inception_net hand out the tiny network, recording its calls."""
    calls = []

    def fake_load(kind, weights_path, device, parallel):
        calls.append((kind, weights_path))
        return TinyFeatureNet()
    monkeypatch.setattr(inception_utils, 'load_inception_net', fake_load)
    return calls


# --- moments files ---------------------------------------------------------------------------

@pytest.mark.parametrize('dataset,expected', [
    ('I128_hdf5', 'I128_inception_moments.npz'), ('C10', 'C10_inception_moments.npz'),
    ('Food5_hdf5', 'Food5_inception_moments.npz'),  # str.strip('_hdf5') would give 'Foo'
    ('hdf5_faces', 'hdf5_faces_inception_moments.npz')])
def test_default_moments_path_strips_the_suffix_only(dataset, expected):
    assert default_moments_path(dataset) == expected


def test_moments_round_trip_and_atomic_write(tmp_path, monkeypatch):
    path = tmp_path / 'sub' / 'm.npz'
    save_moments(str(path), mu=np.arange(3.0), sigma=np.eye(3), inception=np.array('tf'))
    moments = load_moments(str(path), kind='tf')
    assert moments['mu'].tolist() == [0.0, 1.0, 2.0] and moments['sigma'].shape == (3, 3)
    assert os.listdir(tmp_path / 'sub') == ['m.npz']

    def broken_savez(f, **arrays):
        f.write(b'half a fi')
        raise OSError('disk full')
    monkeypatch.setattr(inception_utils.np, 'savez', broken_savez)
    with pytest.raises(OSError, match='disk full'):
        save_moments(str(path), mu=np.zeros(3), sigma=np.eye(3))
    assert os.listdir(tmp_path / 'sub') == ['m.npz']  # the old file survives, no temp file
    assert load_moments(str(path))['mu'].tolist() == [0.0, 1.0, 2.0]


TF = {'inception': np.array('tf')}


@pytest.mark.parametrize('arrays,match', [
    ({'mu': np.zeros(3), **TF}, 'lacks sigma'),
    ({'sigma': np.eye(3), **TF}, 'lacks mu'),
    ({'mu': np.zeros(3), 'sigma': np.eye(4), **TF}, 'must be D and D x D'),
    ({'mu': np.zeros(3), 'sigma': np.eye(3), 'inception': np.array('torchvision')},
     'made with --inception torchvision'),
    # The original's files have no network key: torchvision features, refused under tf.
    ({'mu': np.zeros(3), 'sigma': np.eye(3)}, 'has no "inception" key: it is the original'),
    ({'mu': np.array([0, np.nan, 0]), 'sigma': np.eye(3), **TF}, 'mu holds 1 NaN or infinite'),
    ({'mu': np.zeros(3), 'sigma': np.full((3, 3), np.inf), **TF}, 'sigma holds 9 NaN'),
])
def test_bad_moments_files_are_explained(tmp_path, arrays, match):
    save_moments(str(tmp_path / 'm.npz'), **arrays)
    with pytest.raises(ValueError, match=match):
        load_moments(str(tmp_path / 'm.npz'), kind='tf')


def test_missing_moments_fail_at_start_up_with_the_command(tmp_path, tiny_net):
    path = str(tmp_path / 'nope.npz')
    with pytest.raises(FileNotFoundError) as err:
        prepare_inception_metrics('C10', moments_path=path)
    assert path in str(err.value)
    assert 'calculate_inception_moments.py --dataset C10' in str(err.value)
    # KID needs kid_features in the file.
    save_moments(path, mu=np.zeros(8), sigma=np.eye(8), inception='tf')
    with pytest.raises(ValueError, match='lacks kid_features'):
        prepare_inception_metrics('C10', moments_path=path, use_kid=True)
    assert tiny_net == []  # none of this loads the network


# --- get_inception_metrics -------------------------------------------------------------------

def test_metrics_match_a_direct_computation(tmp_path, tiny_net):
    real, fake = uniform_images(40, seed=1), uniform_images(30, seed=2)
    write_moments(tmp_path / 'm.npz', real)
    get_metrics = prepare_inception_metrics('C10', moments_path=str(tmp_path / 'm.npz'),
                                            inception_weights='w.pth', use_kid=True,
                                            device='cpu')
    assert tiny_net == []  # lazy: nothing loaded before the first call
    sample = Sampler(fake, batch_size=8)
    is_mean, is_std, fid = get_metrics(sample, 20, num_splits=5, prints=False)
    assert tiny_net == [('tf', 'w.pth')]
    assert sample.calls == 3  # whole batches until >= 20 images: 24 images
    used = torch.cat([b[0] for b in sample.batches])[:24]
    pool, logits = tiny_features(used)
    expected_is = calculate_inception_score(F.softmax(logits.double(), 1), 5, rule='tf13')
    assert (is_mean, is_std) == pytest.approx(expected_is, rel=1e-12)
    ref_pool, _ = tiny_features(real)
    mu, sigma = feature_moments(pool)
    mu_r, sigma_r = feature_moments(ref_pool)
    assert fid == pytest.approx(calculate_frechet_distance(mu, sigma, mu_r, sigma_r), rel=1e-6)
    assert get_metrics.last['num_images'] == 24 and get_metrics.last['FID'] == fid
    assert get_metrics.last['KID_mean'] == pytest.approx(calculate_kid(pool, ref_pool)[0])
    exact = get_metrics(Sampler(fake, 8), 20, num_splits=5, prints=False, use_torch=False)[2]
    assert exact == pytest.approx(fid, rel=1e-6)
    assert tiny_net == [('tf', 'w.pth')]  # loaded once


def test_no_fid_returns_9999_without_moments(tiny_net, capsys):
    get_metrics = prepare_inception_metrics('C10', no_fid=True, moments_path='nowhere.npz')
    is_mean, _, fid = get_metrics(Sampler(uniform_images(10), 5), 10, num_splits=2)
    assert fid == 9999.0 and is_mean >= 1.0
    assert get_metrics.last['KID_mean'] is None
    assert 'Gathering activations' in capsys.readouterr().out


def test_fewer_images_than_splits_are_refused(tiny_net):
    get_metrics = prepare_inception_metrics('C10', no_fid=True)
    with pytest.raises(ValueError, match='--num_inception_images 5 must be at least'):
        get_metrics(Sampler(uniform_images(10), 5), 5, num_splits=10)


def test_real_network_loads_lazily_from_a_weight_file(tmp_path):
    weights = tmp_path / 'w.pth'
    save_random_weights(weights)
    get_metrics = prepare_inception_metrics('C10', no_fid=True, inception_weights=str(weights),
                                            device='cpu')
    assert get_metrics._net is None
    is_mean, is_std, fid = get_metrics(Sampler(uniform_images(2, size=16), 2), 2, num_splits=2,
                                       prints=False)
    assert get_metrics._net is not None and fid == 9999.0 and np.isfinite(is_mean)


# --- scoring saved samples -------------------------------------------------------------------

def test_score_an_npz_and_a_folder(tmp_path):
    real, fake = uniform_images(40, seed=1), uniform_images(12, seed=3)
    write_moments(tmp_path / 'm.npz', real)
    np.savez(tmp_path / 'samples.npz', x=fake.numpy(), y=np.zeros(12, np.int64))
    folder = tmp_path / 'images'
    folder.mkdir()
    for i, image in enumerate(fake):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f'{i:03d}.png')
    from_npz = score_samples(str(tmp_path / 'samples.npz'), str(tmp_path / 'm.npz'),
                             batch_size=5, num_splits=3, kid_subsets=3, device='cpu',
                             net=TinyFeatureNet())
    from_folder = score_samples(str(folder), str(tmp_path / 'm.npz'), batch_size=5,
                                num_splits=3, kid_subsets=3, device='cpu', net=TinyFeatureNet())
    assert from_npz == from_folder
    pool, logits = tiny_features(fake)
    ref_pool, _ = tiny_features(real)
    assert from_npz['num_images'] == 12
    assert from_npz['IS_mean'] == pytest.approx(
        calculate_inception_score(F.softmax(logits.double(), 1), 3, rule='tf13')[0], rel=1e-12)
    assert from_npz['FID'] == pytest.approx(calculate_frechet_distance(
        *feature_moments(pool), *feature_moments(ref_pool)), rel=1e-9)
    assert from_npz['KID_mean'] == pytest.approx(calculate_kid(pool, ref_pool, 3)[0], rel=1e-9)


def test_bad_samples_are_explained(tmp_path):
    np.savez(tmp_path / 'float.npz', x=np.full((4, 3, 8, 8), 200.0, np.float32))
    with pytest.raises(ValueError, match=r'\[-1, 1\]'):
        score_samples(str(tmp_path / 'float.npz'), num_splits=2, net=TinyFeatureNet())
    np.savez(tmp_path / 'rgba.npz', x=np.zeros((4, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match='N x 3 x H x W or N x H x W x 3'):
        score_samples(str(tmp_path / 'rgba.npz'), num_splits=2, net=TinyFeatureNet())
    np.savez(tmp_path / 'few.npz', x=np.zeros((4, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match='4 images are fewer than --num_splits 10'):
        score_samples(str(tmp_path / 'few.npz'), net=TinyFeatureNet())
    with pytest.raises(ValueError, match='--batch_size must be at least 1'):
        score_samples(str(tmp_path / 'few.npz'), batch_size=0, net=TinyFeatureNet())
    with pytest.raises(FileNotFoundError, match='--samples'):
        score_samples(str(tmp_path / 'none.npz'), net=TinyFeatureNet())


def test_scoring_command_prints_one_json_line(tmp_path, capsys):
    weights = tmp_path / 'w.pth'
    save_random_weights(weights)
    np.savez(tmp_path / 'samples.npz', x=uniform_images(2, size=16).numpy())
    inception_utils.main(['--samples', str(tmp_path / 'samples.npz'), '--inception_weights',
                          str(weights), '--num_splits', '2', '--device', 'cpu'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) >= {'IS_mean', 'IS_std', 'FID', 'KID_mean', 'KID_std', 'num_images'}
    assert result['num_images'] == 2 and result['FID'] is None and result['IS_mean'] >= 1.0
