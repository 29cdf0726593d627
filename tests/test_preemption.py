"""--save_on_signal: a scheduler's signal ends training after the iteration with a checkpoint
that resumes bit for bit, and the signal's exit status; a second signal during that save leaves
the previous checkpoint the newest."""
import os
import signal
import subprocess
import sys

import pytest
import torch

import checkpoints
import preemption
import train
import utils
from conftest import ROOT, assert_same_state
from safe_pickle import safe_load

TINY = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
        '--sv_log_interval', '0', '--test_every', '10000000', '--num_save_copies', '0',
        '--shuffle', '--experiment_name', 'run']


def _args(tmp, hdf5_file, *extra):
    return (['--dataset', 'HDF5', '--data_root', hdf5_file] + TINY
            + ['--weights_root', str(tmp / 'weights'), '--logs_root', str(tmp / 'logs'),
               '--samples_root', str(tmp / 'samples')] + list(extra))


def _start(argv, cwd, program=None):
    """train.py (or a driver script) with unbuffered output, SIGINT at its default."""
    command = [sys.executable, program or os.path.join(ROOT, 'train.py')] + argv
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(cwd), env={**os.environ, 'PYTHONUNBUFFERED': '1'},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(process, text):
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f'{text!r} never printed: {process.stderr.read()[-3000:]}')


def _weights(folder):
    return {stem: torch.load(os.path.join(folder, f'{stem}.pth'))
            for stem in ('G', 'D', 'G_optim', 'D_optim')}


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_saves_and_the_run_resumes_exactly(tmp_path, hdf5_file, signum):
    stopped, straight = tmp_path / 'stopped', tmp_path / 'straight'
    process = _start(_args(stopped, hdf5_file, '--num_iters', '1000', '--save_every', '1000'),
                     tmp_path)
    _wait_for(process, 'Beginning training')
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err[-3000:]
    assert 'Traceback' not in err
    folder = stopped / 'weights' / 'run'
    itr = safe_load(str(folder / 'state_dict.pth'))['itr']
    assert itr >= 1 and f'{signal.Signals(signum).name} received' in out
    # The resume line works from any directory: it changes to the run's and names train.py
    # by its absolute path.
    line = err.strip().splitlines()[-1]
    assert f'is iteration {itr}; resume with: cd {tmp_path}' in line
    assert f"{os.path.join(ROOT, 'train.py')} " in line and line.endswith('--resume')
    assert checkpoints.leftovers(str(folder)) == []

    end = str(itr + 2)
    train.run(utils.parse_config(_args(straight, hdf5_file, '--num_iters', end)))
    train.run(utils.parse_config(_args(stopped, hdf5_file, '--num_iters', end, '--resume',
                                       '--save_every', '1000')))
    one, two = _weights(straight / 'weights' / 'run'), _weights(folder)
    for stem in one:
        assert_same_state(one[stem], two[stem], stem)


SECOND_SIGNAL = r'''
import os, signal, sys
sys.path.insert(0, {root!r})
import atomic, train, train_fns
real_step, real_write = train_fns.GAN_training_function, atomic.write_temp
def step_then_signal(*args, **kwargs):
    step = real_step(*args, **kwargs)
    def train_step(x, y):
        metrics = step(x, y)
        if args[2]['itr'] == 3:  # the state_dict: the first signal in iteration 3
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics
    return train_step
def write_then_signal(folder, name, write):
    if name == 'D.pth' and train_fns_state['itr'] == 3:  # the second, mid-save
        os.kill(os.getpid(), signal.SIGUSR1)
    return real_write(folder, name, write)
train_fns_state = {{'itr': 0}}
real_save = train._save
def save(run, itr):
    train_fns_state['itr'] = itr
    real_save(run, itr)
train._save, atomic.write_temp = save, write_then_signal
train_fns.GAN_training_function = step_then_signal
train.main(sys.argv[1:])
'''


def test_a_second_signal_during_the_save_keeps_the_previous_checkpoint(tmp_path, hdf5_file):
    script = tmp_path / 'driver.py'
    script.write_text(SECOND_SIGNAL.format(root=ROOT))
    process = _start(_args(tmp_path, hdf5_file, '--num_iters', '1000', '--save_every', '2'),
                     tmp_path, program=str(script))
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert 'Traceback' not in err and 'that save was abandoned' in err
    assert 'the newest checkpoint in' in err and 'is iteration 2' in err
    folder = tmp_path / 'weights' / 'run'
    assert checkpoints.leftovers(str(folder)) == []  # no temporary of the abandoned save
    # The iteration-2 set is whole: every file loads and carries one set id.
    ids = {checkpoints.set_id_of(safe_load(str(folder / name)))
           for name in os.listdir(folder) if name.endswith('.pth')}
    assert len(ids) == 1 and safe_load(str(folder / 'state_dict.pth'))['itr'] == 2


def test_save_on_signal_none_leaves_the_default_and_bad_names_are_refused(tmp_path, hdf5_file):
    assert preemption.parse('none') == []
    assert preemption.parse('sigterm, USR1') == [signal.SIGTERM, signal.SIGUSR1]
    with pytest.raises(ValueError, match=r"--save_on_signal 'TERM,KILL': 'KILL' is not"):
        utils.parse_config(_args(tmp_path, hdf5_file, '--save_on_signal', 'TERM,KILL'))
    process = _start(_args(tmp_path, hdf5_file, '--num_iters', '1000', '--save_every', '1000',
                           '--save_on_signal', 'none'), tmp_path)
    _wait_for(process, 'Beginning training')
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM  # killed at once, as before the flag
    assert not (tmp_path / 'weights' / 'run' / 'G.pth').exists()
