"""fmnist_scorer.py and scripts/utils/score_fmnist.py on synthetic Fashion-MNIST files (no data set
needed): real images score high and near the floor, noise and wrong labels do not, every input
layout gives the same numbers, the cache is reused and a stale one retrained, and the command
line prints one JSON line or one `error:` line with exit status 2."""
import gzip
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import fmnist_scorer
from conftest import ROOT
from data_helpers import write_fmnist

sys.path.insert(0, os.path.join(ROOT, 'scripts', 'utils'))
import score_fmnist  # noqa: E402

SCRIPT = os.path.join(ROOT, 'scripts', 'utils', 'score_fmnist.py')
# A short schedule: 1,000 training images in batches of 50, 8 epochs (160 steps).
OPTIONS = {'epochs': 8, 'batch_size': 50}


def _pattern(k: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Class k's shape on a grid of offsets (y, x) from the image centre."""
    r = np.hypot(y, x)
    shapes = [np.floor(y / 3) % 2 == 0,                     # horizontal stripes
              np.floor(x / 3) % 2 == 0,                     # vertical stripes
              (abs(y) < 8) & (abs(x) < 8),                  # square
              abs(r - 9) < 2,                               # ring
              np.floor((x + y) / 4) % 2 == 0,               # diagonal stripes
              (abs(y) < 2.5) | (abs(x) < 2.5),              # plus
              y < 0,                                        # top half
              x < 0,                                        # left half
              (np.floor(y / 5) + np.floor(x / 5)) % 2 == 0,  # checkerboard
              (abs(abs(y) - abs(x)) < 2) & (r < 12)]        # X
    return shapes[k].astype(np.float64)


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 28 x 28 images, classes balanced: a shape per class, randomly shifted by up to
    2 pixels, of random brightness, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    grid_y, grid_x = np.mgrid[0:28, 0:28] - 13.5
    images = np.empty((n, 28, 28))
    for i, k in enumerate(labels):
        dy, dx = rng.integers(-2, 3, 2)
        images[i] = (_pattern(k, grid_y - dy, grid_x - dx) * rng.uniform(120, 255)
                     + rng.normal(0, 25, (28, 28)))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def served(images: np.ndarray) -> np.ndarray:
    """28 x 28 grey -> uint8 N x 3 x 32 x 32, as the data set serves them (black padding)."""
    return np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, None], 3, axis=1)


def write_split(folder: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    with gzip.open(os.path.join(folder, f'{split}-labels-idx1-ubyte.gz'), 'wb') as f:
        f.write(struct.pack('>II', 2049, len(labels)) + labels.astype(np.uint8).tobytes())
    with gzip.open(os.path.join(folder, f'{split}-images-idx3-ubyte.gz'), 'wb') as f:
        f.write(struct.pack('>IIII', 2051, len(images), 28, 28) + images.tobytes())


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """(data folder, trained scorer, held-out images uint8 N x 3 x 32 x 32, their labels)."""
    root = str(tmp_path_factory.mktemp('fmnist'))
    write_fmnist(root, *synthetic(1000, seed=1))     # both splits, then a distinct test split
    write_split(root, 't10k', *synthetic(500, seed=2))
    held_images, held_labels = synthetic(1000, seed=3)
    # One thread: the same numbers from every call, whatever the machine's load.
    scorer = fmnist_scorer.Scorer(root, progress=False, threads=1, **OPTIONS)
    return root, scorer, served(held_images), held_labels


class Retrained(Exception):
    pass


def _no_training(*args, **kwargs):
    raise Retrained


def test_real_images_score_high_and_near_the_floor(setup):
    _, scorer, images, labels = setup
    floor = scorer.floor()
    assert scorer.test_accuracy > 0.9
    assert floor['accuracy'] == scorer.test_accuracy and floor['num_images'] == 1000
    assert 0 <= floor['FID'] < 5
    score = scorer.score(images, labels)
    assert score['num_images'] == 1000
    assert abs(score['accuracy'] - scorer.test_accuracy) < 0.05
    assert score['FID'] < 2 * floor['FID'] + 1


@pytest.mark.filterwarnings('ignore::scipy.linalg.LinAlgWarning')  # features the noise never sets
def test_noise_scores_near_chance_and_far_from_the_floor(setup):
    _, scorer, images, labels = setup
    noise = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    score = scorer.score(noise, labels)
    assert score['accuracy'] < 0.35
    assert score['FID'] > 10 * max(scorer.floor()['FID'], scorer.score(images, labels)['FID'])


def test_wrong_labels_lower_accuracy_not_fid(setup):
    _, scorer, images, labels = setup
    right = scorer.score(images, labels)
    shuffled = scorer.score(images, np.random.default_rng(0).permutation(labels))
    assert shuffled['accuracy'] < 0.35
    assert shuffled['FID'] == right['FID']


def test_every_input_layout_scores_the_same(setup):
    _, scorer, images, labels = setup
    images, labels = images[:300], labels[:300]
    signed = torch.from_numpy(images).float() / 127.5 - 1
    layouts = [torch.from_numpy(images.transpose(0, 2, 3, 1).copy()), signed,
               signed.double().numpy()]
    feats, pred = scorer.features(images)
    for other in layouts:
        other_feats, other_pred = scorer.features(other)
        assert torch.equal(other_feats, feats) and torch.equal(other_pred, pred)
    assert scorer.score(signed, torch.from_numpy(labels)) == scorer.score(images, labels.tolist())


@pytest.mark.parametrize('images, match', [
    (np.zeros((4, 3, 28, 28), np.uint8), r'shape \(4, 3, 28, 28\).*valid: uint8'),
    (np.zeros((4, 32, 32), np.uint8), r'shape \(4, 32, 32\)'),
    (np.full((4, 3, 32, 32), 2.0, np.float32), r'float values in \[2, 2\], not \[-1, 1\]'),
    (np.zeros((4, 3, 32, 32), np.int32), r'dtype torch.int32'),
])
def test_bad_images_are_refused(setup, images, match):
    with pytest.raises(ValueError, match=match):
        setup[1].score(images, np.zeros(4, np.int64))


@pytest.mark.parametrize('labels, match', [
    (np.zeros(3, np.int64), r'shape \(3,\) for 4 images'),
    (np.full(4, 10), r'values in \[10, 10\]'),
    (np.zeros(4, np.float32), r'dtype torch.float32'),
])
def test_bad_labels_are_refused(setup, labels, match):
    with pytest.raises(ValueError, match=match):
        setup[1].score(np.zeros((4, 3, 32, 32), np.uint8), labels)


def test_the_cache_is_reused_and_a_stale_one_retrained(setup, monkeypatch, tmp_path):
    root, scorer, images, labels = setup
    path = os.path.join(root, fmnist_scorer.CACHE_NAME)  # the default: beside the data
    assert os.path.isfile(path)
    monkeypatch.setattr(fmnist_scorer, 'train_classifier', _no_training)
    again = fmnist_scorer.Scorer(root, progress=False, threads=1, **OPTIONS)
    assert again.score(images, labels) == scorer.score(images, labels)
    assert again.floor() == scorer.floor()
    for kwargs in ({'retrain': True}, {'epochs': 9}):  # asked for, other settings
        with pytest.raises(Retrained):
            fmnist_scorer.Scorer(root, progress=False, **{**OPTIONS, **kwargs})
    state = torch.load(path, weights_only=True)
    stale = str(tmp_path / 'stale.pth')
    for broken in ({**state, 'version': 'fmnist-scorer-0'}, {**state, 'data': 'other'}):
        fmnist_scorer.save_cache(stale, broken)
        with pytest.raises(Retrained):
            fmnist_scorer.Scorer(root, cache=stale, progress=False, **OPTIONS)
    with open(stale, 'wb') as f:
        f.write(b'not a cache')
    with pytest.raises(Retrained):
        fmnist_scorer.Scorer(root, cache=stale, progress=False, **OPTIONS)
    # Without the data the cache is taken as it is: scoring needs no data.
    fmnist_scorer.save_cache(stale, state)
    alone = fmnist_scorer.Scorer(str(tmp_path / 'no-data'), cache=stale, progress=False,
                                threads=1, **OPTIONS)
    assert alone.floor() == scorer.floor()


class TemplateG(nn.Module):
    """A stand-in G: one held-out image per class, picked by the (one-hot) class vector."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        super().__init__()
        self.dim_z, self.n_classes = 8, 10
        self.shared = nn.Embedding(10, 10, _weight=torch.eye(10))
        first = [int(np.flatnonzero(labels == k)[0]) for k in range(10)]
        self.register_buffer('templates', torch.from_numpy(images[first]).float() / 127.5 - 1)

    def forward(self, z, y):
        assert not self.training and not torch.is_grad_enabled()
        return self.templates[y.argmax(1)] + 0 * z.sum()


def test_score_generator_draws_balanced_classes_in_eval_mode(setup):
    _, scorer, images, labels = setup
    G = TemplateG(images, labels)
    score = scorer.score_generator(G, n=1000, batch_size=300)
    assert G.training and score['num_images'] == 1000
    assert score['accuracy'] > 0.9
    sheet = scorer.score(G.templates, torch.arange(10))
    assert score['accuracy'] == sheet['accuracy']


@pytest.mark.filterwarnings('ignore::scipy.linalg.LinAlgWarning')  # 40 images, 128 features
def test_score_generator_runs_a_biggan_generator(setup):
    import BigGAN
    from model_flags import parse_flags
    config = parse_flags('--dataset FMNIST --G_ch 4 --G_attn 0 --G_shared --hier --dim_z 20 '
                         '--shared_dim 8')
    G = BigGAN.Generator(**{**config, 'resolution': 32, 'n_classes': 10})
    score = setup[1].score_generator(G, n=40, batch_size=16)
    assert score['num_images'] == 40 and 0 <= score['accuracy'] <= 1 and score['FID'] > 0


def _write_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_cli_prints_one_json_line(setup, tmp_path):
    root, scorer, images, labels = setup
    npz = _write_npz(tmp_path / 'samples.npz', x=images, y=labels)
    run = subprocess.run([sys.executable, SCRIPT, '--npz', npz, '--data_root', root],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    score, floor = scorer.score(images, labels), scorer.floor()
    # Another thread count may round the features differently in the last bits.
    assert out == {'npz': npz, **score, 'FID': pytest.approx(score['FID'], rel=1e-6),
                   'floor_accuracy': floor['accuracy'], 'floor_FID': floor['FID'],
                   'floor_num_images': floor['num_images'],
                   'classifier_test_accuracy': scorer.test_accuracy}


def _main(capsys, *argv) -> tuple[int, list, list]:
    """(exit status, stdout lines, stderr lines) of main() run in this process."""
    status = 0
    try:
        score_fmnist.main(list(argv))
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def test_cli_reads_arr_keys_and_nhwc_and_prints_the_floor(setup, tmp_path, capsys,
                                                          monkeypatch):
    root, scorer, images, labels = setup
    monkeypatch.setattr(fmnist_scorer, 'train_classifier', _no_training)
    npz = _write_npz(tmp_path / 'adm.npz', arr_0=images.transpose(0, 2, 3, 1), arr_1=labels)
    status, out, err = _main(capsys, '--npz', npz, '--data_root', root)
    assert status == 0 and len(out) == 1, err
    assert json.loads(out[0])['FID'] == pytest.approx(scorer.score(images, labels)['FID'],
                                                      rel=1e-6)
    status, out, err = _main(capsys, '--floor', '--data_root', root)
    assert status == 0 and len(out) == 1, err
    assert json.loads(out[0]) == {'floor_accuracy': scorer.test_accuracy,
                                  'floor_FID': scorer.floor()['FID'], 'floor_num_images': 1000,
                                  'classifier_test_accuracy': scorer.test_accuracy}


@pytest.mark.parametrize('arrays, match', [
    ({'images': np.zeros((4, 3, 32, 32), np.uint8), 'y': np.zeros(4, np.int64)},
     r'no images under "x" or "arr_0" \(it has: images, y\)'),
    ({'x': np.zeros((4, 3, 32, 32), np.uint8)}, r'no labels under "y" or "arr_1" \(it has: x\)'),
    ({'x': np.zeros((4, 3, 64, 64), np.uint8), 'y': np.zeros(4, np.int64)},
     r'key "x": shape \(4, 3, 64, 64\): 64 x 64 images; valid: uint8'),
    ({'x': np.zeros((4, 3, 32, 32), np.uint8), 'y': np.zeros(5, np.int64)},
     r'key "y": shape \(5,\) for 4 images'),
    ({'x': np.zeros((1, 32, 32, 3), np.uint8), 'y': np.zeros(1, np.int64)},
     r'key "x": 1 image\(s\); FID needs at least 2'),
    (None, r'is not a readable npz file'),
    ('npy', r'is a single .npy array, not an npz file'),
    ('missing', r'no such file'),
])
def test_cli_refuses_a_bad_npz_with_one_error_line(setup, tmp_path, capsys, monkeypatch,
                                                   arrays, match):
    monkeypatch.setattr(fmnist_scorer, 'train_classifier', _no_training)
    monkeypatch.delenv('BIGGAN_DEBUG', raising=False)
    path = str(tmp_path / 'bad.npz')
    if arrays is None:
        with open(path, 'w') as f:
            f.write('not an npz')
    elif arrays == 'npy':
        with open(path, 'wb') as f:
            np.save(f, np.zeros((4, 3, 32, 32), np.uint8))
    elif arrays != 'missing':
        _write_npz(path, **arrays)
    status, out, err = _main(capsys, '--npz', path, '--data_root', setup[0])
    assert status == 2 and out == [] and len(err) == 1
    assert err[0].startswith('error: --npz ') and path in err[0]
    assert re.search(match, err[0]), err[0]


def test_train_logs_the_classifier_scores_at_each_test(setup, tmp_path, capsys):
    """train.py --fmnist_scorer tests with the cached classifier, no Inception weights: the
    JSONL record and the console line carry its accuracy and FID."""
    import train
    import utils
    root, _, _, _ = setup
    argv = ['--dataset', 'FMNIST', '--data_root', root, '--G_ch', '4', '--D_ch', '4',
            '--G_attn', '0', '--D_attn', '0', '--dim_z', '16', '--batch_size', '4',
            '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none', '--num_iters', '2',
            '--test_every', '2', '--save_every', '100', '--num_inception_images', '50',
            '--fmnist_scorer', '--inception_weights', str(tmp_path / 'no_such_weights.pth')]
    for name in ('weights', 'logs', 'samples'):
        argv += [f'--{name}_root', str(tmp_path / name)]
    config = utils.parse_config(argv)
    train.run(config)
    log = tmp_path / 'logs' / f'{utils.experiment_name(config)}_log.jsonl'
    record = json.loads(log.read_text().splitlines()[-1])
    assert set(record) >= {'itr', 'fmnist_accuracy', 'fmnist_FID'} and 'IS_mean' not in record
    assert record['itr'] == 2 and 0 <= record['fmnist_accuracy'] <= 1
    assert record['fmnist_FID'] > 0
    assert 'Itr 2: Fashion-MNIST classifier accuracy is' in capsys.readouterr().out
    with pytest.raises(ValueError, match='--fmnist_scorer scores Fashion-MNIST samples'):
        utils.parse_config(['--dataset', 'C10', '--fmnist_scorer'])


def test_the_shipped_classifier_serves_debians_files(monkeypatch, tmp_path):
    """The classifier in scripts/utils/ is found and used, untrained, for the data files it was
    trained on (Debian's dataset-fashion-mnist): the demo's first run trains none."""
    import datasets
    if not fmnist_scorer.data_sources.has_fmnist(datasets.FMNIST_SYSTEM_DIR):
        pytest.skip('Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)')
    monkeypatch.chdir(tmp_path)  # no data/ and no logs/ here: only the shipped file can serve
    monkeypatch.setattr(fmnist_scorer, 'train_classifier', _no_training)
    state = fmnist_scorer.load_or_train('data', progress=False)
    assert state['data'] == fmnist_scorer.data_fingerprint('data')
    assert state['version'] == fmnist_scorer.VERSION
    assert state['config'] == fmnist_scorer.DEFAULTS and state['test_accuracy'] > 0.9
    assert fmnist_scorer.default_cache_paths('data')[0][-1] == fmnist_scorer.SHIPPED
