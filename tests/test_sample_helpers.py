"""sample.py's pieces on stubs and tiny generators: sheet grids, interpolation endpoints, the
truncated normal, standing statistics (and their reset in a truncation sweep), and the sample
command line's parsing rules."""
import copy
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import BigGAN
import layers
import sample
import sample_config
import sampling

RES = 32


class ClassStubG(nn.Module):
    """A G whose every pixel is its class label: shows where each class lands on a sheet."""
    G_shared = True

    def __init__(self, n_classes: int, dim_z: int = 4):
        super().__init__()
        self.n_classes, self.dim_z = n_classes, dim_z
        self.shared = nn.Embedding(n_classes, 1)
        with torch.no_grad():
            self.shared.weight.copy_(torch.arange(n_classes, dtype=torch.float).view(-1, 1))

    def forward(self, z, y):
        return y.view(-1, 1, 1, 1).expand(len(z), 3, RES, RES).clone()


def tiny_G(**kwargs) -> BigGAN.Generator:
    args = dict(G_ch=4, dim_z=16, resolution=RES, G_attn='0', n_classes=5, G_shared=True,
                shared_dim=8, hier=True)
    return BigGAN.Generator(**{**args, **kwargs})


@pytest.fixture
def captured(monkeypatch):
    """Record what the sheet helpers hand to save_image instead of encoding JPEGs."""
    calls = []
    monkeypatch.setattr(sampling, 'save_image',
                        lambda images, path, nrow: calls.append((images.clone(), path, nrow)))
    return calls


# --- sheets -----------------------------------------------------------------------------------

@pytest.mark.parametrize('classes,per_sheet,expected', [
    (None, 3, [[0, 1, 2], [3, 4, 5], [6]]),
    ((5, 1), 3, [[5, 1]]),
    ((6, 0, 3, 2), 2, [[6, 0], [3, 2]])])
def test_class_sheet_rows_are_their_classes(tmp_path, captured, classes, per_sheet, expected):
    G = ClassStubG(7)
    sampler = sampling.NoiseSampler(4, 7, 8)
    paths = sampling.sample_sheet(G, per_sheet, 7, 10, str(tmp_path), 'exp', -1, sampler,
                                  classes=classes)
    assert [p for _, p, _ in captured] == paths
    assert paths == [str(tmp_path / 'exp' / '-1' / f'samples{i}.jpg')
                     for i in range(len(expected))]
    for (images, _, nrow), rows in zip(captured, expected):
        assert nrow == 10 and images.shape == (10 * len(rows), 3, RES, RES)
        # save_image fills its grid row by row, nrow images per row.
        cells = images[:, 0, 0, 0].view(len(rows), 10)
        assert cells.tolist() == [[float(c)] * 10 for c in rows]


def test_class_sheet_file_has_a_class_per_row(tmp_path):
    """The real JPEG: rows get brighter with the class, every column of a row alike."""
    sampling.sample_sheet(ClassStubG(4), 4, 4, 10, str(tmp_path), 'exp', 0,
                          sampling.NoiseSampler(4, 4, 8))
    image = np.asarray(Image.open(tmp_path / 'exp' / '0' / 'samples0.jpg').convert('L'), float)
    cell = RES + 2  # save_image's padding of 2
    assert image.shape == (4 * cell + 2, 10 * cell + 2)
    means = np.array([[image[2 + r * cell + 8:2 + r * cell + 24, 2 + c * cell + 8:
                             2 + c * cell + 24].mean() for c in range(10)] for r in range(4)])
    assert np.ptp(means, axis=1).max() < 3  # columns alike
    assert np.all(np.diff(means[:, 0]) > 50)  # min-max normalized: 0, 85, 170, 255


@pytest.mark.parametrize('fix_z,fix_y,name', [(False, False, 'interpZY0.jpg'),
                                              (False, True, 'interpZ0.jpg'),
                                              (True, False, 'interpY0.jpg')])
def test_interp_endpoints_are_direct_samples(tmp_path, captured, fix_z, fix_y, name):
    G = tiny_G().eval()
    path = sampling.interp_sheet(G, 16, 8, 5, str(tmp_path), 'exp', 3,
                                 sampling.NoiseSampler(G.dim_z, 5, 16, seed=7),
                                 fix_z=fix_z, fix_y=fix_y)
    images, saved_path, nrow = captured[0]
    assert saved_path == path == str(tmp_path / 'exp' / '3' / name)
    assert nrow == 10 and images.shape == (160, 3, RES, RES)
    # The same draws, in the helper's order: z0 (and z1 unless fix_z), then y0 (and y1).
    again = sampling.NoiseSampler(G.dim_z, 5, 16, seed=7)
    z0 = again.sample_z(16)
    z1 = z0 if fix_z else again.sample_z(16)
    y0 = again.sample_y(16)
    y1 = y0 if fix_y else again.sample_y(16)
    grid = images.view(16, 10, 3, RES, RES)
    with torch.no_grad():
        first, last = G(z0, G.shared(y0)), G(z1, G.shared(y1))
    torch.testing.assert_close(grid[:, 0], first, atol=1e-5, rtol=0)
    torch.testing.assert_close(grid[:, -1], last, atol=1e-5, rtol=0)
    if not (fix_z and fix_y):  # the middle moves from one end to the other
        assert not torch.allclose(grid[:, 4], first, atol=1e-3)


# --- noise ------------------------------------------------------------------------------------

@pytest.mark.parametrize('threshold,z_var', [(0.1, 1.0), (0.5, 1.0), (2.0, 1.0), (0.5, 0.3)])
def test_truncated_normal_never_exceeds_the_threshold(threshold, z_var):
    sampler = sampling.NoiseSampler(120, 10, 64, z_var=z_var, truncation=threshold, seed=1)
    z = torch.cat([sampler.sample_z() for _ in range(20)])
    assert z.shape == (20 * 64, 120)
    assert z.abs().max() <= threshold * z_var
    # Resampled, not clipped: no mass piles up at the bound, and most of the range is used.
    assert (z.abs() == threshold * z_var).float().mean() < 1e-3
    assert z.abs().max() > 0.95 * threshold * z_var
    plain = sampling.NoiseSampler(120, 10, 64, z_var=z_var, seed=1).sample_z()
    assert plain.abs().max() > 2 * z_var  # the untruncated draw does exceed it


# --- standing statistics ----------------------------------------------------------------------

def _config(**overrides) -> dict:
    base = dict(n_classes=5, num_standing_accumulations=4, accumulate_stats=True, seed=0,
                z_var=1.0, truncation=None, G_batch_size=6, sample_classes=None,
                sample_trunc_sweep='z_var', trunc_values=(0.5, 1.0), use_ema=False,
                num_inception_images=6)
    return {**base, **overrides}


def test_standing_stats_average_the_batch_statistics_with_mybn():
    G = tiny_G(mybn=True)
    seen = {}

    def record(module, inputs):
        x = inputs[0].float()
        mean = x.mean((0, 2, 3))
        seen.setdefault(module, []).append((mean, (x ** 2).mean((0, 2, 3)) - mean ** 2))
    bns = [m for m in G.modules() if isinstance(m, layers.myBN)]
    assert len(bns) == 7  # two per block (3 blocks at 32 px) and the output layer's
    hooks = [m.register_forward_pre_hook(record) for m in bns]
    sample.standing_stats(G, sampling.NoiseSampler(G.dim_z, 5, 6, seed=3), _config())
    for hook in hooks:
        hook.remove()
    assert not G.training
    for bn in bns:
        means, variances = zip(*seen[bn])
        assert len(means) == 4
        torch.testing.assert_close(bn.stored_mean, torch.stack(means).mean(0))
        torch.testing.assert_close(bn.stored_var, torch.stack(variances).mean(0))
        assert not bn.accumulate_standing and bn.accumulation_counter.item() == 0


def test_standing_stats_move_the_running_statistics_without_mybn():
    G = tiny_G()
    before = {k: v.clone() for k, v in G.state_dict().items() if 'stored' in k}
    sample.standing_stats(G, sampling.NoiseSampler(G.dim_z, 5, 6), _config())
    after = G.state_dict()
    assert not G.training and before
    assert all(not torch.equal(before[k], after[k]) for k in before)


class BufferSnapshots:
    """A stand-in for get_inception_metrics that records G's BN statistics at each call."""

    def __init__(self, G):
        self.G, self.snapshots, self.last = G, [], None

    def __call__(self, sample_fn, num_images, num_splits=10):
        self.snapshots.append({k: v.clone() for k, v in self.G.state_dict().items()
                               if 'stored' in k})
        images, _ = sample_fn()
        return float(images.mean()), 0.1, 50.0 - len(self.snapshots)


@pytest.mark.parametrize('sweep,mybn', [('z_var', True), ('truncation', False)])
def test_standing_stats_are_reset_between_truncations(tmp_path, sweep, mybn):
    G = tiny_G(mybn=mybn).eval()
    start = {k: v.clone() for k, v in G.state_dict().items()}
    both, alone = BufferSnapshots(G), BufferSnapshots(G)
    config = _config(sample_trunc_sweep=sweep)
    records = sample.truncation_curves(G, config, torch.device('cpu'), both, 0, str(tmp_path))
    (tmp_path / 'alone').mkdir()
    sample.truncation_curves(G, {**config, 'trunc_values': (1.0,)}, torch.device('cpu'), alone,
                             0, str(tmp_path / 'alone'))
    # The value 1.0 sees the same statistics whether or not 0.5 ran before it ...
    for key, value in alone.snapshots[0].items():
        torch.testing.assert_close(both.snapshots[1][key], value, atol=0, rtol=0)
    # ... they are accumulated with that value's noise ...
    assert any(not torch.equal(both.snapshots[0][k], both.snapshots[1][k])
               for k in both.snapshots[0])
    # ... and the sweep leaves G as it found it.
    for key, value in G.state_dict().items():
        assert torch.equal(value, start[key]), key
    assert [r[sweep] for r in records] == [0.5, 1.0]
    assert [r['FID'] for r in records] == [49.0, 48.0]
    lines = (tmp_path / 'trunc_curves.jsonl').read_text().splitlines()
    assert len(lines) == 2 and (tmp_path / 'trunc_curves.png').stat().st_size > 1000


# --- the command line ---------------------------------------------------------------------------

def test_given_flags_are_told_apart_from_defaults():
    given = sample_config.given_flags(['--G_ch', '64', '--no_pin_memory', '--G_eval',
                                       '--seed', '0', '--sample_npz'])
    # --G_ch 64 and --seed 0 are the defaults, yet given; --G_eval is an abbreviation.
    assert given == {'G_ch', 'pin_memory', 'G_eval_mode', 'seed', 'sample_npz'}
    assert sample_config.given_flags([]) == set()


@pytest.mark.parametrize('text,expected', [
    ('0.05_0.05_1.0', [round(0.05 * i, 10) for i in range(1, 21)]),
    ('0.2_0.1_1.0', [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    ('0.5_1_0.5', [0.5]), ('', [])])
def test_trunc_curve_values_run_from_start_to_end(text, expected):
    assert list(sample_config.parse_trunc_curves(text)) == expected


@pytest.mark.parametrize('text', ['0.5_1', '0.5', 'a_b_c', '0.5_0.1_0.2', '0_0.1_1',
                                  '0.1_0_1', '0.1_0.1_inf', '0.1_-0.1_1', '1,2,3'])
def test_trunc_curves_must_be_start_step_end(text):
    with pytest.raises(ValueError, match='--sample_trunc_curves must be start_step_end'):
        sample_config.parse_trunc_curves(text)


def test_classes_parse_and_stay_in_range():
    assert sample_config.parse_classes('1, 5,9', 10) == (1, 5, 9)
    assert sample_config.parse_classes('', 10) is None
    with pytest.raises(ValueError, match=r"--classes '1,10': \[10\] out of range.*0 to 9"):
        sample_config.parse_classes('1,10', 10)
    with pytest.raises(ValueError, match='--classes .*-1'):
        sample_config.parse_classes('-1', 10)
    with pytest.raises(ValueError, match='comma-separated'):
        sample_config.parse_classes('cat,dog', 10)


def test_the_fast_sampling_path_stays_close_to_float32():
    """sample.py's G under --amp bf16 --channels_last: the same images to bf16 rounding, G's
    mode kept, G's attributes read through."""
    G = tiny_G().eval()
    fast = sampling.fast_G(copy.deepcopy(G), {'amp': 'bf16', 'channels_last': True,
                                              'compile': False, 'compile_mode': 'default'})
    assert isinstance(fast, sampling.FastG) and not fast.training
    assert fast.dim_z == G.dim_z and fast.shared is fast.G.shared
    sampler = sampling.NoiseSampler(G.dim_z, 5, 8, seed=1)
    exact, _ = sampling.sample(G, sampler)
    sampler.load_state_dict(sampling.NoiseSampler(G.dim_z, 5, 8, seed=1).state_dict())
    images, _ = sampling.sample(fast, sampler)
    assert images.dtype == torch.float32
    assert 0 < (images - exact).abs().max() < 0.05  # tanh outputs in [-1, 1]; bf16 really ran
    assert sampling.fast_G(G, {'amp': 'none', 'channels_last': False, 'compile': False}) is G


class _SmallMemoryG(nn.Module):
    """G on a device that runs out of memory above `limit` images a forward."""

    def __init__(self, G: nn.Module, limit: int):
        super().__init__()
        self.G, self.limit, self.sizes = G, limit, []
        self.shared, self.dim_z = G.shared, G.dim_z

    def forward(self, z, y):
        self.sizes.append(len(z))
        if len(z) > self.limit:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory (stand-in)')
        return self.G(z, y)


def test_a_batch_that_does_not_fit_is_drawn_in_halved_chunks(capsys):
    """FastG halves the chunk until it fits, keeps it for the next batches and says so
    once; in eval mode the chunked images are the whole batch's."""
    G = tiny_G().eval()
    small = _SmallMemoryG(copy.deepcopy(G), limit=3).eval()
    fast = sampling.FastG(small)
    sampler = sampling.NoiseSampler(G.dim_z, 5, 10, seed=2)
    z, y = sampler.sample()
    with torch.no_grad():
        exact = G(z, G.shared(y))
        images = fast(z, G.shared(y))
        again = fast(z, G.shared(y))
    torch.testing.assert_close(images, exact, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(again, exact, atol=1e-6, rtol=1e-5)
    # 10 fails, 5 fails, then chunks of 3: 3 3 3 1; the second call goes straight to chunks.
    assert small.sizes == [10, 5, 3, 3, 3, 1, 3, 3, 3, 1] and fast.chunk == 3
    notes = capsys.readouterr().out.splitlines()
    assert notes == ['Note: a batch of 10 does not fit in GPU memory: G draws 5 images at a time',
                     'Note: a batch of 5 does not fit in GPU memory: G draws 3 images at a time']
    small.limit = 0  # nothing fits: the error is the device's, not swallowed
    with pytest.raises(torch.cuda.OutOfMemoryError):
        with torch.no_grad():
            fast(z, G.shared(y))


@pytest.mark.parametrize('fix_z,fix_y', [(False, False), (False, True), (True, False)])
def test_interp_classes_give_each_rows_classes(tmp_path, captured, fix_z, fix_y):
    """--interp_classes: one row per pair, from its start class to its end class (fix_y: the
    start class throughout); z is drawn as without it."""
    G = tiny_G().eval()
    pairs = ((1, 4), (3, 3), (0, 2))
    sampling.interp_sheet(G, 16, 8, 5, str(tmp_path), 'exp', 3,
                          sampling.NoiseSampler(G.dim_z, 5, 16, seed=7), fix_z=fix_z,
                          fix_y=fix_y, pairs=pairs)
    images = captured[0][0]
    assert images.shape == (30, 3, RES, RES)
    again = sampling.NoiseSampler(G.dim_z, 5, 16, seed=7)
    z0 = again.sample_z(3)
    z1 = z0 if fix_z else again.sample_z(3)
    y0 = torch.tensor([1, 3, 0])
    y1 = y0 if fix_y else torch.tensor([4, 3, 2])
    grid = images.view(3, 10, 3, RES, RES)
    with torch.no_grad():
        first, last = G(z0, G.shared(y0)), G(z1, G.shared(y1))
    torch.testing.assert_close(grid[:, 0], first, atol=1e-5, rtol=0)
    torch.testing.assert_close(grid[:, -1], last, atol=1e-5, rtol=0)


@pytest.mark.parametrize('text,expected', [('', None), ('2:0', ((2, 0),)),
                                           ('1,0:3, 4', ((1, 1), (0, 3), (4, 4)))])
def test_interp_classes_parse(text, expected):
    assert sample_config.parse_interp_classes(text, 5) == expected


@pytest.mark.parametrize('text,problem', [('1:2:3', 'is not a list of rows'),
                                          ('a:b', 'is not a list of rows'),
                                          ('1,,2', 'is not a list of rows'),
                                          ('0:5', r'\[5\] out of range')])
def test_interp_classes_refuse_bad_rows(text, problem):
    with pytest.raises(ValueError, match=rf"^--interp_classes '{re.escape(text)}'(: | ){problem}"
                                         r".*valid: .*classes 0 to 4"):
        sample_config.parse_interp_classes(text, 5)


def test_sample_py_reads_interp_classes_into_the_config(tmp_path):
    path = tmp_path / 'g.pth'
    path.touch()
    argv = ['--G_weights', str(path), '--dataset', 'ImageFolder', '--resolution', '32',
            '--n_classes', '5', '--G_attn', '0', '--interp_classes']
    assert sample_config.parse_sample_config(argv + ['0:4,2'])['interp_pairs'] == ((0, 4), (2, 2))
    assert sample_config.parse_sample_config(argv + [''])['interp_pairs'] is None
    with pytest.raises(ValueError, match=r"--interp_classes '0:7': \[7\] out of range"):
        sample_config.parse_sample_config(argv + ['0:7'])
