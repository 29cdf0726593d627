"""train.py end to end on tiny models: files, resume (exact), --num_iters, crashes mid-save,
non-finite losses and bad input."""
import os
import subprocess
import sys

import pytest
import torch

import checkpoints
import train
import train_fns
import utils
from conftest import ROOT, assert_same_state
from safe_pickle import safe_load

FMNIST_DIR = '/usr/share/datasets/fashion-mnist'
TINY = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
        '--sv_log_interval', '2', '--test_every', '100000']


def _roots(tmp):
    return ['--weights_root', str(tmp / 'weights'), '--logs_root', str(tmp / 'logs'),
            '--samples_root', str(tmp / 'samples')]


def _hdf5_args(tmp, hdf5_file, *extra):
    return ['--dataset', 'HDF5', '--data_root', hdf5_file] + TINY + _roots(tmp) + list(extra)


def _run(argv):
    config = utils.parse_config(argv)
    return config, train.run(config)


def _folder(tmp, config):
    return os.path.join(str(tmp / 'weights'), utils.experiment_name(config))


@pytest.mark.skipif(not os.path.isdir(FMNIST_DIR),
                    reason='Fashion-MNIST missing: apt-get install dataset-fashion-mnist')
def test_short_fmnist_run_writes_files_and_resumes(tmp_path):
    args = ['--dataset', 'FMNIST'] + TINY + _roots(tmp_path) + ['--save_every', '2', '--ema',
                                                                '--use_ema']
    config, state = _run(args + ['--num_iters', '4'])
    assert state['itr'] == 4
    name = utils.experiment_name(config)
    folder = _folder(tmp_path, config)
    for stem in checkpoints.WEIGHT_FILES:
        for suffix in (None, 'copy0', 'copy1'):
            assert os.path.isfile(os.path.join(folder, checkpoints.file_name(stem, suffix)))
    samples = tmp_path / 'samples' / name
    for itr in (2, 4):
        assert (samples / f'fixed_samples{itr}.jpg').is_file()
        for sheet in ('samples0.jpg', 'interpZY0.jpg', 'interpZ0.jpg', 'interpY0.jpg'):
            assert (samples / str(itr) / sheet).is_file()
    logs = tmp_path / 'logs' / name
    assert (logs / 'metalog.txt').is_file()
    assert (logs / 'G_sv0.log').is_file() is False  # names follow the state keys:
    assert (logs / 'G_linear_sv0.log').is_file() and (logs / 'D_embed_sv0.log').is_file()

    _, state = _run(args + ['--num_iters', '6', '--resume'])
    assert state['itr'] == 6
    lines = (logs / 'G_loss.log').read_text().splitlines()
    assert [int(line.split(':')[0]) for line in lines] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize('sampler', [['--shuffle'], ['--use_multiepoch_sampler']])
def test_resume_is_exact(tmp_path, hdf5_file, sampler):
    """N iterations straight == N/2, then --resume for N/2: bitwise equal states."""
    extra = sampler + ['--ema', '--ema_start', '2', '--save_every', '3', '--G_shared',
                       '--hier', '--shared_dim', '8', '--load_in_mem', '--num_epochs', '3']
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    config, _ = _run(_hdf5_args(straight, hdf5_file, *extra, '--num_iters', '6'))
    _run(_hdf5_args(resumed, hdf5_file, *extra, '--num_iters', '3'))
    _run(_hdf5_args(resumed, hdf5_file, *extra, '--num_iters', '6', '--resume'))
    a, b = _folder(straight, config), _folder(resumed, config)
    for stem in ('G', 'D', 'G_ema', 'G_optim', 'D_optim'):
        one = torch.load(os.path.join(a, stem + '.pth'))
        two = torch.load(os.path.join(b, stem + '.pth'))
        assert_same_state(one, two, stem)


def test_num_iters_counts_across_resumes_and_epochs_stop(tmp_path, hdf5_file):
    config, state = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '5', '--save_every',
                                    '100'))
    assert state['itr'] == 5  # the final state is saved even off the save_every grid
    _, state = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '5', '--resume'))
    assert state['itr'] == 5
    # --num_epochs alone: 24 images, batch 4 -> 6 iterations per epoch.
    config, state = _run(_hdf5_args(tmp_path / 'epochs', hdf5_file, '--num_epochs', '2',
                                    '--save_every', '100'))
    assert state['itr'] == 12 and state['epoch'] == 2
    # ... and the end of the data is saved too, off the save_every grid (the original lost it).
    saved = safe_load(os.path.join(_folder(tmp_path / 'epochs', config), 'state_dict.pth'))
    assert saved['itr'] == 12


def test_resume_past_num_iters_says_so_and_trains_nothing(tmp_path, hdf5_file, capsys):
    config, _ = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '3', '--pbar', 'mine'))
    log = os.path.join(str(tmp_path / 'logs'), utils.experiment_name(config), 'G_loss.log')
    before = open(log).read()
    capsys.readouterr()
    _, state = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '2', '--resume', '--pbar',
                               'mine'))
    out = capsys.readouterr().out
    assert state['itr'] == 3 and open(log).read() == before
    assert ('Nothing to train: the checkpoint is at iteration 3, which reaches --num_iters 2 '
            '(raise --num_iters to train on)') in out
    assert '3/2' not in out and '150.00%' not in out


def test_g_eval_mode_tests_both_generators_in_eval_mode(tmp_path, hdf5_file, monkeypatch):
    """With --G_eval_mode a test sees G and G_ema in eval mode (the original left G_ema in
    train mode unless a save happened in the same iteration), and training goes on in train
    mode afterwards."""
    modes = []
    monkeypatch.setattr(train, 'prepare_metrics', lambda *args: None)
    monkeypatch.setattr(train_fns, 'test', lambda models, *rest, **kw: modes.append(
        (models.G.training, models.G_ema.training, models.D.training)))
    real_step = train_fns.GAN_training_function

    def step(models, *args, **kwargs):
        train_step = real_step(models, *args, **kwargs)
        G, D = models.G, models.D
        return lambda x, y: (modes.append(('step', G.training, D.training)),
                             train_step(x, y))[1]
    monkeypatch.setattr(train_fns, 'GAN_training_function', step)
    _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '3', '--save_every', '100',
                    '--test_every', '2', '--G_eval_mode', '--ema', '--use_ema'))
    assert modes == [('step', True, True), ('step', True, True), (False, False, True),
                     ('step', True, True)]


def test_time_limit_stops_and_saves(tmp_path, hdf5_file, monkeypatch):
    """--time_limit stops after the iteration that crosses it, saving off the save_every grid;
    --resume then carries on from that iteration."""
    clock = iter(range(0, 10 ** 6, 25))  # each reading of the clock: 25 s later
    monkeypatch.setattr(train, 'clock', lambda: float(next(clock)))
    args = _hdf5_args(tmp_path, hdf5_file, '--num_iters', '50', '--save_every', '100')
    config, state = _run(args + ['--time_limit', '1.5'])  # 90 s: the 4th iteration crosses it
    assert state['itr'] == 4
    saved = torch.load(os.path.join(_folder(tmp_path, config), 'state_dict.pth'),
                       weights_only=False)
    assert saved['itr'] == 4
    monkeypatch.undo()
    _, state = _run(args + ['--resume'])
    assert state['itr'] == 50
    with pytest.raises(ValueError, match='--time_limit must be >= 0'):
        utils.parse_config(args + ['--time_limit', '-1'])


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, hdf5_file, monkeypatch):
    config, _ = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '2', '--save_every', '2'))
    folder = _folder(tmp_path, config)
    before = open(os.path.join(folder, 'G.pth'), 'rb').read()
    real = train_fns.GAN_training_function

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)

        def train_step(x, y):
            metrics = step(x, y)
            metrics['G_loss'] = metrics['G_loss'] * float('nan')
            return metrics
        return train_step

    monkeypatch.setattr(train_fns, 'GAN_training_function', poisoned)
    with pytest.raises(FloatingPointError, match='iteration 3'):
        _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '4', '--save_every', '1',
                        '--resume'))
    assert open(os.path.join(folder, 'G.pth'), 'rb').read() == before


KILL_SCRIPT = r'''
import os, sys, time, torch
sys.path.insert(0, {root!r})
import checkpoints
phase = sys.argv[2]
real_replace = os.replace
def slow_replace(src, dst):
    real_replace(src, dst)
    if phase == 'rename' and dst.endswith('G.pth'):
        print('renamed', flush=True)
        time.sleep(60)
real_save = torch.save
def slow_save(obj, f, *a, **k):
    real_save(obj, f, *a, **k)
    if phase == 'write' and isinstance(obj, dict) and 'itr' in obj:
        print('written', flush=True)
        time.sleep(60)
os.replace = slow_replace
checkpoints.torch.save = slow_save
state = {{'itr': 2, 'epoch': 0, 'config': {{}}}}
w = {{'w': torch.full((4,), 2.0)}}
class M:
    def __init__(self, v): self.v = v
    def state_dict(self): return self.v
checkpoints.save_weights(M(w), M(w), state, sys.argv[1], 'exp', G_optim=M({{}}),
                         D_optim=M({{}}))
'''


@pytest.mark.parametrize('phase, expected_itr', [('write', 1), ('rename', 2)])
def test_kill_during_save_leaves_a_complete_checkpoint(tmp_path, phase, expected_itr):
    # A complete checkpoint at iteration 1.
    root = str(tmp_path)
    state = {'itr': 1, 'epoch': 0, 'config': {}}

    class M:
        def __init__(self, v):
            self.v = v

        def state_dict(self):
            return self.v
    w = {'w': torch.full((4,), 1.0)}
    checkpoints.save_weights(M(w), M(w), state, root, 'exp', G_optim=M({}), D_optim=M({}))
    script = tmp_path / 'kill.py'
    script.write_text(KILL_SCRIPT.format(root=ROOT))
    child = subprocess.Popen([sys.executable, str(script), root, phase], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() in ('written', 'renamed')
    child.kill()  # SIGKILL in the middle of the save
    child.wait()
    folder = os.path.join(root, 'exp')
    checkpoints.recover(folder)
    # Nothing left but the folder's lock files (empty, held by no one).
    assert not [f for f in os.listdir(folder) if f.startswith('.')
                and f not in ('.lock', '.set-lock')]
    saved = safe_load(os.path.join(folder, 'state_dict.pth'))
    assert saved['itr'] == expected_itr
    for stem in ('G', 'D'):
        weights = safe_load(os.path.join(folder, f'{stem}.pth'))
        assert torch.equal(weights['w'], torch.full((4,), float(expected_itr)))


def test_failing_save_leaves_previous_checkpoint(tmp_path, hdf5_file, monkeypatch):
    config, _ = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '2', '--save_every', '2'))
    folder = _folder(tmp_path, config)
    before = {f: open(os.path.join(folder, f), 'rb').read() for f in os.listdir(folder)}
    real = torch.save
    calls = []

    def failing(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, 'No space left on device')
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, 'save', failing)
    with pytest.raises(OSError, match='No space left'):
        _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '4', '--save_every', '4',
                        '--resume'))
    after = {f: open(os.path.join(folder, f), 'rb').read() for f in os.listdir(folder)}
    assert after == before  # no temporaries left, nothing overwritten


def test_other_architecture_checkpoint_names_keys(tmp_path, hdf5_file):
    _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '1', '--save_every', '1',
                    '--experiment_name', 'exp'))
    with pytest.raises(ValueError, match=r'shape mismatch: .*linear.weight.*--G_ch'):
        _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '2', '--resume', '--experiment_name',
                        'exp', '--G_ch', '8'))
    with pytest.raises(ValueError, match=r'missing from the file: .*blocks.1.1.gamma'):
        _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '2', '--resume', '--experiment_name',
                        'exp', '--G_attn', '16', '--G_ch', '8', '--D_ch', '4'))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, hdf5_file):
    config, _ = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '1', '--save_every', '1'))
    path = os.path.join(_folder(tmp_path, config), 'D.pth')
    with open(path, 'r+b') as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=r'D.pth.*corrupt'):
        _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '2', '--resume'))


BAD_ARGS = [
    (['--dataset', 'I129'], ValueError, r'I129.*I128'),
    (['--batch_size', '0'], ValueError, r'--batch_size must be >= 1'),
    (['--num_D_accumulations', '0'], ValueError, r'--num_D_accumulations must be >= 1'),
    (['--num_G_accumulations', '-1'], ValueError, r'--num_G_accumulations'),
    (['--num_best_copies', '0'], ValueError, r'--num_best_copies'),
    (['--G_nl', 'gelu'], ValueError, r"--G_nl='gelu'.*inplace_relu"),
    (['--model', 'BigGAN2'], ValueError, r"--model='BigGAN2'.*BigGANdeep"),
    (['--loss', 'wgan'], ValueError, r"--loss='wgan'.*hinge"),
    (['--which_best', 'KID'], ValueError, r"--which_best='KID'"),
    (['--no_fid', '--which_best', 'FID'], ValueError, r'--which_best FID needs FID'),
    (['--hier'], ValueError, r'--hier needs --G_shared'),
    (['--logstyle', 'pickle'], ValueError, r"--logstyle 'pickle'"),
    (['--ema_decay', '1.5'], ValueError, r'--ema_decay must be in'),
    (['--G_lr', '0'], ValueError, r'--G_lr must be > 0'),
    (['--norm_style', 'ln'], ValueError, r"norm_style='ln'"),
    (['--G_init', 'he'], ValueError, r"--G_init='he'"),
    (['--device', 'tpu'], ValueError, r'--device'),
    (['--resolution', '64'], ValueError, r'--resolution 64 does not match the 32 x 32'),
]


@pytest.mark.parametrize('args, error, message', BAD_ARGS)
def test_bad_arguments(tmp_path, hdf5_file, args, error, message):
    argv = ['--dataset', 'HDF5', '--data_root', hdf5_file] + _roots(tmp_path) + args
    if args[0] == '--dataset':
        argv = _roots(tmp_path) + args
    with pytest.raises(error, match=message):
        _run(argv)


def test_missing_data_and_missing_checkpoint(tmp_path, hdf5_file):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        _run(['--dataset', 'I32', '--data_root', str(tmp_path / 'nowhere')] + TINY)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for experiment 'ghost'"):
        _run(_hdf5_args(tmp_path, hdf5_file, '--resume', '--experiment_name', 'ghost'))


def test_unwritable_weights_root(tmp_path, hdf5_file):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    with pytest.raises(OSError, match='--weights_root'):
        _run(_hdf5_args(tmp_path, hdf5_file) + ['--weights_root', str(blocker / 'w')])


def test_cli_unknown_flag_and_wrong_type():
    for args, message in ((['--batch_sizee', '4'], 'unrecognized arguments: --batch_sizee'),
                          (['--batch_size', 'four'], "invalid int value: 'four'"),
                          (['--dataset', 'nope'],
                           "error: --dataset='nope' is not valid; choose one of ['C10'")):
        result = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + args,
                                capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 2
        assert message in result.stderr


def test_resume_from_the_original_released_layout(tmp_path, monkeypatch):
    """A six-file folder as the authors released it (legacy pickles, CUDA storages, nn.ReLU
    objects, numpy IS, tensor FID, dataset_root) resumes training with strict key checks."""
    # 1000 classes at 128 x 128 make 50 class sheets: too slow for a CPU test, and not its point.
    monkeypatch.setattr(train_fns.sampling, 'sample_sheet', lambda *a, **k: [])
    monkeypatch.setattr(train_fns.sampling, 'interp_sheet', lambda *a, **k: '')
    import h5py
    import numpy as np
    from original_checkpoint import make_original_i128_folder
    make_original_i128_folder(str(tmp_path / 'weights'), 'released', ch=16, itr=138000)
    data = tmp_path / 'data'
    data.mkdir()
    with h5py.File(data / 'ILSVRC128.hdf5', 'w') as f:
        f['imgs'] = np.random.default_rng(0).integers(0, 256, (4, 3, 128, 128), dtype=np.uint8)
        f['labels'] = np.array([0, 1, 2, 999], dtype=np.int64)
    args = ['--dataset', 'I128_hdf5', '--data_root', str(data), '--G_ch', '16', '--D_ch', '16',
            '--G_attn', '64', '--D_attn', '64', '--G_shared', '--hier', '--dim_z', '120',
            '--shared_dim', '128', '--G_nl', 'inplace_relu', '--D_nl', 'inplace_relu',
            '--SN_eps', '1e-6', '--adam_eps', '1e-6', '--ema', '--use_ema', '--ema_start',
            '20000', '--batch_size', '2', '--num_D_steps', '1', '--num_workers', '0',
            '--pbar', 'none', '--experiment_name', 'released', '--resume', '--num_iters',
            '138001', '--num_save_copies', '0', '--test_every', '1000000', '--num_epochs',
            '1000000'] + _roots(tmp_path)
    config, state = _run(args)
    assert state['itr'] == 138001
    assert isinstance(state['best_IS'], float) and isinstance(state['best_FID'], float)
    saved = torch.load(tmp_path / 'weights' / 'released' / 'state_dict.pth', weights_only=True)
    assert saved['itr'] == 138001 and saved['config']['G_activation'] == 'inplace_relu'


def test_two_image_folders_give_two_names(tmp_path):
    """Two image folders (or HDF5 files) trained with the same flags are two experiments, each
    named after its data; the table's datasets keep the original's names."""
    from data_helpers import make_image_folder, random_hdf5
    names = []
    for folder in ('roses', 'my tulips'):
        root = make_image_folder(str(tmp_path / folder))
        config = utils.parse_config(['--dataset', 'ImageFolder', '--data_root', root,
                                     '--resolution', '32'] + TINY + _roots(tmp_path))
        names.append(utils.experiment_name(config))
    assert names[0].startswith('BigGAN_ImageFolder-roses_seed0_Gch4_')
    assert names[1].startswith('BigGAN_ImageFolder-my-tulips_seed0_Gch4_')
    random_hdf5(str(tmp_path / 'ten_classes.hdf5'), n_classes=10)
    config = utils.parse_config(['--dataset', 'HDF5', '--data_root',
                                 str(tmp_path / 'ten_classes.hdf5')])
    assert utils.experiment_name(config).startswith('BigGAN_HDF5-ten-classes_seed0_Gch64_')
    config = utils.parse_config(['--dataset', 'C10', '--data_root', str(tmp_path)])
    assert utils.experiment_name(config).startswith('BigGAN_C10_seed0_Gch64_')


def test_resume_on_other_data_is_exit_2(tmp_path, hdf5_file):
    """--resume of a run (same --experiment_name) on other data: one error line naming the
    checkpoint's data and the data given, before anything is built or written."""
    from data_helpers import random_hdf5
    args = TINY + _roots(tmp_path) + ['--experiment_name', 'run', '--num_iters', '1',
                                      '--save_every', '1']
    config, _ = _run(['--dataset', 'HDF5', '--data_root', hdf5_file] + args)
    state = safe_load(os.path.join(_folder(tmp_path, config), 'state_dict.pth'))
    assert state['data']['data_name'] and state['data']['n_images'] > 0
    other = str(tmp_path / 'other.hdf5')
    random_hdf5(other, n=state['data']['n_images'] + 4, n_classes=state['data']['n_classes'])
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / 'weights' / 'run').glob('*.pth')}
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--dataset', 'HDF5',
                             '--data_root', other, *args, '--num_iters', '2', '--resume'],
                            capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr[-2000:]
    n = state['data']['n_images']
    assert f"was trained on HDF5 '{state['data']['data_name']}' (" in errors[0]
    assert f"{n} images), the data here is HDF5 'other' (" in errors[0]
    assert f'{n + 4} images)' in errors[0]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / 'weights' / 'run').glob('*.pth')} == before
