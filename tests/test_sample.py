"""sample.py end to end: on a tiny run written by train.py (no data on disk when sampling), on a
folder in the original's layout, on a bare G state_dict; the files it writes, the metrics
outputs with a stand-in Inception, and bad input."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import BigGAN
import inception_utils
import sample
import sample_config
import sampling
import train
import utils
from conftest import ROOT
from data_helpers import random_hdf5
from safe_pickle import safe_load
from script_runner import script_argv
from model_flags import assert_builds_exactly
from inception_testing import TinyFeatureNet, uniform_images, write_moments
from original_checkpoint import make_original_i128_folder

TRAIN = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
         '--G_shared', '--hier', '--shared_dim', '8', '--batch_size', '4', '--num_D_steps', '1',
         '--num_workers', '0', '--pbar', 'none', '--test_every', '100000', '--num_iters', '1',
         '--save_every', '1', '--num_save_copies', '0', '--ema']
N_CLASSES, RES = 3, 32


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A one-iteration run of train.py on a tiny HDF5 file, which is deleted afterwards: the
    sampling tests work without the data."""
    root = tmp_path_factory.mktemp('run')
    data = root / 'tiny.hdf5'
    random_hdf5(str(data), n=8, size=RES, n_classes=N_CLASSES)
    config = utils.parse_config(['--dataset', 'HDF5', '--data_root', str(data),
                                 '--weights_root', str(root / 'weights'), '--logs_root',
                                 str(root / 'logs'), '--samples_root', str(root / 'train')]
                                + TRAIN)
    train.run(config)
    data.unlink()
    return root, utils.experiment_name(config)


def _argv(run_dir, *extra):
    root, name = run_dir
    return ['--dataset', 'HDF5', '--data_root', str(root / 'tiny.hdf5'), '--experiment_name',
            name, '--config_from_name', '--weights_root', str(root / 'weights'),
            '--samples_root', str(root / 'samples'), '--batch_size', '4', '--pbar', 'none',
            *extra]


def _sample(argv):
    config = sample_config.parse_sample_config(argv)
    return config, sample.run(config)


def _size(path):
    with Image.open(path) as image:
        return image.size


def _grid(rows, cols, res=RES):
    """(width, height) of a save_image grid: padding 2 around every image."""
    return cols * (res + 2) + 2, rows * (res + 2) + 2


# --- the outputs --------------------------------------------------------------------------------

def test_every_output_has_the_original_name_shape_and_size(run_dir):
    root, name = run_dir
    config, out = _sample(_argv(run_dir, '--use_ema', '--G_eval_mode', '--sample_npz',
                                '--sample_num_npz', '7', '--sample_sheets', '--sample_interps',
                                '--sample_random', '--sample_sheet_folder_num', '5'))
    # The data are gone: resolution and classes came from the saved config.
    assert (config['resolution'], config['n_classes'], config['G_ch']) == (RES, N_CLASSES, 4)
    folder = root / 'samples' / name
    assert out['npz'] == str(folder / 'samples.npz')
    with np.load(out['npz']) as f:
        assert sorted(f.files) == ['x', 'y']
        x, y = f['x'], f['y']
    assert x.shape == (7, 3, RES, RES) and x.dtype == np.uint8 and x.std() > 0
    assert y.shape == (7,) and y.dtype == np.int64 and set(y) <= set(range(N_CLASSES))
    assert out['sheets'] == [str(folder / '5' / 'samples0.jpg')]
    assert _size(out['sheets'][0]) == _grid(N_CLASSES, 10)
    assert out['interps'] == [str(folder / '5' / f'interp{s}0.jpg') for s in ('ZY', 'Z', 'Y')]
    assert all(_size(p) == _grid(16, 10) for p in out['interps'])
    assert out['random'] == str(folder / 'random_samples.jpg')
    assert _size(out['random']) == _grid(2, 2)  # G_batch_size 4: nrow int(sqrt(4))
    assert sorted(os.listdir(folder)) == ['5', 'random_samples.jpg', 'samples.npz']


def _npz(run_dir, *extra):
    _, out = _sample(_argv(run_dir, '--use_ema', '--G_eval_mode', '--sample_npz',
                           '--sample_num_npz', '6', *extra))
    with np.load(out['npz']) as f:
        return f['x'], f['y']


def test_npz_holds_the_samples_rounded(run_dir):
    """x is G's output rounded to the nearest level (the original truncated)."""
    x, y = _npz(run_dir)
    config = sample_config.parse_sample_config(_argv(run_dir, '--use_ema', '--G_eval_mode'))
    G, _, device = sample.load(config)
    sampler = sample.noise(G, config, device, sample.NPZ)
    images, labels = zip(*[sampling.sample(G, sampler) for _ in range(2)])  # two batches of 4
    images, labels = torch.cat(images)[:6], torch.cat(labels)[:6]
    assert y.tolist() == labels.tolist()
    levels = (images + 1) * 127.5
    assert np.array_equal(x, torch.floor(levels + 0.5).to(torch.uint8).numpy())
    assert not np.array_equal(x, levels.to(torch.uint8).numpy())  # truncation differs


def test_seed_makes_samples_reproducible(run_dir):
    first = _npz(run_dir, '--seed', '3')
    again = _npz(run_dir, '--seed', '3', '--sample_sheets')  # other outputs do not matter
    other = _npz(run_dir, '--seed', '4')
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_classes_restrict_sheets_and_samples(run_dir):
    _, out = _sample(_argv(run_dir, '--classes', '2,0', '--sample_sheets', '--sample_npz',
                           '--sample_num_npz', '12'))
    assert _size(out['sheets'][0]) == _grid(2, 10)
    with np.load(out['npz']) as f:
        assert set(f['y']) == {0, 2}


def test_use_ema_loads_G_ema_and_never_an_untrained_G(run_dir, tmp_path):
    root, name = run_dir
    saved = {stem: safe_load(str(root / 'weights' / name / f'{stem}.pth'))
             for stem in ('G', 'G_ema')}
    for flags, stem in (([], 'G'), (['--use_ema'], 'G_ema')):
        G, _, _ = sample.load(sample_config.parse_sample_config(_argv(run_dir, *flags)))
        state = G.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved[stem].items()), stem
    assert any(not torch.equal(saved['G'][k], v) for k, v in saved['G_ema'].items())
    # A run trained without --ema: --use_ema is refused, not silently ignored.
    shutil.copytree(root / 'weights' / name, tmp_path / name)
    os.remove(tmp_path / name / 'G_ema.pth')
    config = sample_config.parse_sample_config(
        _argv(run_dir, '--use_ema', '--weights_root', str(tmp_path)))
    with pytest.raises(FileNotFoundError, match='G_ema.pth.*leave out --use_ema'):
        sample.load(config)


def test_config_from_name_keeps_the_flags_given(run_dir):
    config = sample_config.parse_sample_config(_argv(run_dir, '--G_eval_mode', '--seed', '0',
                                                     '--dim_z', '32', '--z_var', '0.5'))
    assert config['dim_z'] == 32 and config['z_var'] == 0.5  # given: kept
    assert config['G_ch'] == 4 and config['shared_dim'] == 8 and config['hier']  # saved
    assert config['batch_size'] == 4 and config['G_batch_size'] == 4  # never from the save
    with pytest.raises(ValueError, match='does not fit this model.*shape mismatch.*dim_z'):
        sample.load(config)  # the given dim_z does not match the weights


# --- the original's folders and bare state_dicts --------------------------------------------

LAUNCH = ['--G_ch', '16', '--G_shared', '--shared_dim', '128', '--hier', '--dim_z', '120',
          '--G_attn', '64', '--SN_eps', '1e-6', '--G_nl', 'inplace_relu']


@pytest.fixture(scope='module')
def original_root(tmp_path_factory):
    """The released I128 folder's layout (legacy CUDA-tagged files, 'model': 'model',
    dataset_root, nn.ReLU in the config) at width 16, plus a best0 copy of it."""
    root = str(tmp_path_factory.mktemp('original'))
    folder = make_original_i128_folder(root, 'released', with_optim=False, ch=16)
    for stem in ('G', 'G_ema', 'state_dict'):
        os.link(os.path.join(folder, f'{stem}.pth'), os.path.join(folder, f'{stem}_best0.pth'))
    return root


@pytest.mark.parametrize('flags', [['--config_from_name'], LAUNCH + ['--load_weights', 'best0']])
def test_original_folder_loads_strictly_and_samples(original_root, tmp_path, capsys, flags):
    argv = ['--experiment_name', 'released', '--weights_root', original_root, '--samples_root',
            str(tmp_path), '--use_ema', '--G_eval_mode', '--batch_size', '4', '--sample_random',
            '--pbar', 'none'] + flags
    config = sample_config.parse_sample_config(argv)
    assert (config['model'], config['G_ch'], config['dim_z'], config['SN_eps']) == \
        ('BigGAN', 16, 120, 1e-6)
    G, state, device = sample.load(config)
    assert state['itr'] == 138000
    ema = safe_load(os.path.join(original_root, 'released', 'G_ema.pth'))
    assert list(G.state_dict()) == list(ema)
    assert all(torch.equal(G.state_dict()[k], v) for k, v in ema.items())
    out = sample.write_outputs(G, state, config, device)
    assert _size(out['random']) == _grid(2, 2, 128)
    if flags == ['--config_from_name']:
        assert "names the model 'model', which is no model" in capsys.readouterr().out


def test_bare_G_state_dict_samples_at_any_resolution(tmp_path):
    """--G_weights: a G-only file (as TFHub/converter.py writes); with it, --resolution may
    differ from the dataset's."""
    G_flags = ['--G_ch', '4', '--G_attn', '0', '--dim_z', '16', '--G_shared', '--hier',
               '--shared_dim', '8', '--dataset', 'I128_hdf5', '--resolution', '64']
    G = BigGAN.Generator(G_ch=4, G_attn='0', dim_z=16, G_shared=True, hier=True, shared_dim=8,
                         resolution=64, n_classes=1000)
    path = tmp_path / 'biggan-tiny.pth'
    torch.save(G.state_dict(), path)
    argv = G_flags + ['--G_weights', str(path), '--samples_root', str(tmp_path), '--G_eval_mode',
                      '--batch_size', '9', '--sample_random']
    config, out = _sample(argv)
    assert config['n_classes'] == 1000 and config['experiment_name'] == 'biggan-tiny'
    assert out['random'] == str(tmp_path / 'biggan-tiny' / 'random_samples.jpg')
    assert _size(out['random']) == _grid(3, 3, 64)
    with pytest.raises(ValueError, match='does not fit this model'):
        sample.load(sample_config.parse_sample_config(argv[:1] + ['8'] + argv[2:]))


TFHUB = '--G_ch 96 --G_shared --shared_dim 128 --hier --G_nl inplace_relu --BN_eps 1e-4 ' \
        '--SN_eps 1e-4 --G_output_eps 1e-4'


@pytest.mark.parametrize('resolution,flags', [(128, '--dim_z 120 --G_attn 64'),
                                              (256, '--dim_z 140 --G_attn 128'),
                                              (512, '--dim_z 128 --G_attn 64')])
def test_documented_tfhub_flags_build_the_converters_generator(tmp_path, resolution, flags):
    """The sample.py flags that TFHub/README.md gives for biggan-<res>.pth make the
    generator TFHub/converter.py converts into (same keyword arguments)."""
    from TFHub import converter
    path = tmp_path / f'biggan-{resolution}.pth'
    path.touch()
    config = sample_config.parse_sample_config(
        f'{TFHUB} {flags} --G_weights {path} --resolution {resolution}'.split())
    assert_builds_exactly(BigGAN.Generator, config, converter.get_config(resolution))
    assert config['experiment_name'] == f'biggan-{resolution}'


@pytest.mark.parametrize('script,name', [
    ('sample_BigGAN_bs256x8.sh', 'BigGAN_I128_hdf5_seed0_Gch96_Dch96_bs256_nDa8_nGa8_Glr1.0e-04_'
     'Dlr4.0e-04_Gnlinplace_relu_Dnlinplace_relu_Ginitortho_Dinitortho_Gattn64_Dattn64_Gshared_'
     'hier_ema'),
    ('sample_cifar_ema.sh', 'BigGAN_C10_seed0_Gch64_Dch64_bs50_nDs4_Glr2.0e-04_Dlr2.0e-04_'
     'Gnlrelu_Dnlrelu_GinitN02_DinitN02_ema')])
def test_the_original_sample_scripts_find_their_runs(script, name):
    """The scripts' flags parse and rebuild the training run's name (the original's
    name_from_config)."""
    program, *argv = script_argv(script)
    assert program == 'sample.py'
    config = sample_config.parse_sample_config(argv)
    assert utils.experiment_name(config) == name
    assert len(config['trunc_values']) == (20 if 'bs256' in script else 0)


# --- metrics ------------------------------------------------------------------------------------

@pytest.fixture
def tiny_inception(monkeypatch, tmp_path):
    """The tiny stand-in network for Inception, and a moments file made with it."""
    calls = []

    def fake_load(kind, weights_path, device, parallel):
        calls.append(kind)
        return TinyFeatureNet()
    monkeypatch.setattr(inception_utils, 'load_inception_net', fake_load)
    moments = tmp_path / 'moments.npz'
    write_moments(moments, uniform_images(40, RES))
    return calls, str(moments)


def test_metrics_and_truncation_curves(run_dir, tiny_inception, capsys):
    calls, moments = tiny_inception
    root, name = run_dir
    _, out = _sample(_argv(run_dir, '--G_eval_mode', '--sample_inception_metrics',
                           '--sample_trunc_curves', '0.5_0.25_1.0', '--num_inception_images',
                           '12', '--moments_path', moments, '--use_kid'))
    assert calls == ['tf']
    assert set(out['metrics']) == {'itr', 'IS_mean', 'IS_std', 'FID', 'KID_mean', 'KID_std'}
    assert out['metrics']['itr'] == 1 and out['metrics']['FID'] > 0
    assert [r['z_var'] for r in out['trunc_curves']] == [0.5, 0.75, 1.0]
    lines = (root / 'samples' / name / 'trunc_curves.jsonl').read_text().splitlines()
    assert len(lines) == 3 and '"z_var": 0.75' in lines[1]
    with Image.open(root / 'samples' / name / 'trunc_curves.png') as plot:
        assert plot.format == 'PNG'
    assert 'Using non-ema weights in eval mode, with noise std 0.750, over 12 images' in \
        capsys.readouterr().out


def test_inception_is_loaded_only_for_metrics(run_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('the metrics were prepared without being asked for')
    monkeypatch.setattr(inception_utils, 'prepare_inception_metrics', refuse)
    _, out = _sample(_argv(run_dir, '--sample_random', '--moments_path', '/no/such.npz'))
    assert set(out) == {'random'}


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize('flags,error,match', [
    (['--truncation', '0'], ValueError, '--truncation must be > 0'),
    (['--truncation', '-0.5'], ValueError, '--truncation must be > 0'),
    (['--z_var', '0'], ValueError, '--z_var must be > 0'),
    (['--classes', '1,3'], ValueError, r'--classes .*\[3\] out of range.*3 classes'),
    (['--sample_trunc_curves', '0.5_1.0'], ValueError, 'start_step_end'),
    (['--sample_trunc_sweep', 'std'], ValueError, "choose one of \\['z_var', 'truncation'\\]"),
    (['--sample_num_npz', '0'], ValueError, '--sample_num_npz must be >= 1'),
    (['--sample_inception_metrics', '--num_inception_images', '5'], ValueError,
     '--num_inception_images must be >= 10'),
    (['--experiment_name', 'nope'], FileNotFoundError, r"no checkpoint for experiment 'nope'"
                                                       r".*holds: BigGAN_HDF5-\w+_seed0"),
    (['--weights_root', '/no/such/root'], FileNotFoundError, 'does not exist either'),
    (['--load_weights', 'best3'], FileNotFoundError, r'has no G_best3.pth.*holds: .*G_ema.pth'),
])
def test_bad_input_is_named(run_dir, flags, error, match):
    with pytest.raises(error, match=match):
        sample_config.parse_sample_config(_argv(run_dir, *flags))


def test_no_data_no_saved_config_asks_for_the_sizes(run_dir, tmp_path):
    root, name = run_dir
    argv = ['--dataset', 'HDF5', '--data_root', str(tmp_path / 'gone.hdf5'), '--experiment_name',
            name, '--weights_root', str(root / 'weights')]
    with pytest.raises(ValueError, match='give --resolution and --n_classes, or '
                                         '--config_from_name'):
        sample_config.parse_sample_config(argv)
    config = sample_config.parse_sample_config(argv + ['--resolution', '32', '--n_classes', '3'])
    assert (config['resolution'], config['n_classes'], config['classes_per_sheet']) == (32, 3, 3)
    with pytest.raises(ValueError, match='--resolution 64 does not match --dataset C10'):
        sample_config.parse_sample_config(['--dataset', 'C10', '--resolution', '64'])
    with pytest.raises(ValueError, match='--G_weights .*no such file'):
        sample_config.parse_sample_config(['--G_weights', str(tmp_path / 'none.pth')])


def test_a_missing_moments_file_stops_before_any_sampling(run_dir, capsys):
    root, name = run_dir
    with pytest.raises(SystemExit) as stop:
        sample.main(_argv(run_dir, '--sample_npz', '--sample_inception_metrics', '--moments_path',
                          '/no/such/moments.npz', '--samples_root', str(root / 'early')))
    assert stop.value.code == 2
    assert 'error: Inception moments file /no/such/moments.npz not found' in \
        capsys.readouterr().err
    assert not (root / 'early').exists()


def test_command_line_reports_errors_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), '--experiment_name',
                             'missing', '--weights_root', str(tmp_path), '--sample_random'],
                            capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert result.returncode == 2
    assert "error: no checkpoint for experiment 'missing'" in result.stderr
    assert 'Traceback' not in result.stderr
