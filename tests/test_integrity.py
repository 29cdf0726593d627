"""Checkpoints that prove where they come from: recovery that never destroys a good file,
CRC-32s checked at load, files of another run refused, and a file set fixed by the run."""
import json
import os
import subprocess
import sys

import pytest

import checkpoints
import sample
import sample_config
import train
import utils
from conftest import ROOT, one_error_line
from data_helpers import flip_tensor_bytes
from safe_pickle import safe_load

TINY = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
        '--sv_log_interval', '0', '--test_every', '100000', '--num_save_copies', '0',
        '--save_every', '1']


def _args(tmp, hdf5_file, name, *extra):
    return (['--dataset', 'HDF5', '--data_root', hdf5_file, '--experiment_name', name] + TINY
            + ['--weights_root', str(tmp / 'weights'), '--logs_root', str(tmp / 'logs'),
               '--samples_root', str(tmp / 'samples')] + list(extra))


def _cli(program, argv, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, program)] + argv,
                          capture_output=True, text=True, cwd=str(cwd))


def _files(folder):
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)
            if name.endswith('.pth') and not name.startswith('.')}


def _sample(tmp, hdf5_file, name, *extra):
    """sample.py's loading, as --config_from_name does it: a reader of the weights folder."""
    argv = ['--dataset', 'HDF5', '--data_root', hdf5_file, '--experiment_name', name,
            '--config_from_name', '--weights_root', str(tmp / 'weights'), '--samples_root',
            str(tmp / 'samples'), '--batch_size', '4', '--pbar', 'none', *extra]
    return sample.load(sample_config.parse_sample_config(argv))


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory, hdf5_file):
    """Two runs of the same flags and seed, each one iteration ('a' and 'b')."""
    tmp = tmp_path_factory.mktemp('runs')
    for name in ('a', 'b'):
        train.run(utils.parse_config(_args(tmp, hdf5_file, name, '--num_iters', '1')))
    return tmp


def _copy_run(tmp, source, dest):
    (dest / 'weights' / 'a').mkdir(parents=True)
    for name in os.listdir(source / 'weights' / 'a'):
        if name.endswith('.pth'):
            (dest / 'weights' / 'a' / name).write_bytes((source / 'weights' / 'a' / name)
                                                        .read_bytes())
    return dest / 'weights' / 'a'


# ------------------------------------------------------------------------------------------------
# Recovery never destroys
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['truncated', 'foreign', 'truncated, older journal'])
def test_a_journal_of_bad_temporaries_leaves_the_good_files(tmp_path, hdf5_file, two_runs,
                                                           kind):
    folder = _copy_run(tmp_path, two_runs, tmp_path)
    good = _files(folder)
    state = safe_load(str(folder / 'state_dict.pth'))
    if kind == 'foreign':  # a whole temporary of run b's save at the same iteration
        temp = (two_runs / 'weights' / 'b' / 'G.pth').read_bytes()
    else:  # as a folder copied in the middle of a save: the first 4 KB
        temp = good['G.pth'][:4096]
    (folder / '.tmp-99-G.pth').write_bytes(temp)
    if kind == 'truncated, older journal':
        journal = {'G.pth': '.tmp-99-G.pth'}
    else:
        journal = {'set': checkpoints.set_id_of(state),
                   'files': {'G.pth': {'temp': '.tmp-99-G.pth', 'size': len(good['G.pth'])
                                       if kind == 'truncated' else len(temp)}}}
    (folder / '.saving.json').write_text(json.dumps(journal))
    # A reader loads the complete set in place and changes nothing.
    _sample(tmp_path, hdf5_file, 'a')
    assert _files(folder) == good and (folder / '.saving.json').exists()
    # The trainer discards the save: the files in place stay byte for byte.
    result = _cli('train.py', _args(tmp_path, hdf5_file, 'a', '--num_iters', '1', '--resume'),
                  tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'discarded the interrupted save' in result.stdout
    assert _files(folder) == good and checkpoints.leftovers(str(folder)) == []


# ------------------------------------------------------------------------------------------------
# Integrity and provenance
# ------------------------------------------------------------------------------------------------

def test_flipped_bytes_are_refused_naming_the_file(tmp_path, hdf5_file, two_runs):
    folder = _copy_run(tmp_path, two_runs, tmp_path)
    flip_tensor_bytes(folder / 'G.pth')
    line = one_error_line(_cli('train.py', _args(tmp_path, hdf5_file, 'a', '--num_iters', '2',
                                                  '--resume'), tmp_path),
                           f"{folder / 'G.pth'}", 'is corrupt', 'CRC-32')
    assert 'load another copy' in line


def test_a_same_iteration_file_of_another_run_is_refused(tmp_path, hdf5_file, two_runs):
    folder = _copy_run(tmp_path, two_runs, tmp_path)
    (folder / 'G.pth').write_bytes((two_runs / 'weights' / 'b' / 'G.pth').read_bytes())
    before = _files(folder)
    one_error_line(_cli('train.py', _args(tmp_path, hdf5_file, 'a', '--num_iters', '2',
                                           '--resume'), tmp_path),
                    f"'{folder / 'G.pth'}' is from another run", 'mixes files')
    one_error_line(_cli('sample.py', ['--experiment_name', 'a', '--config_from_name',
                                       '--weights_root', str(tmp_path / 'weights'),
                                       '--sample_random'], tmp_path),
                    f"'{folder / 'G.pth'}' is from another run")
    assert _files(folder) == before
    # The runs' own files, same seed and iteration, carry different run ids.
    runs = [checkpoints.run_of(checkpoints.set_id_of(safe_load(str(two_runs / 'weights' / name
                                                                   / 'G.pth'))))
            for name in 'ab']
    assert None not in runs and runs[0] != runs[1]


def test_the_run_id_is_kept_across_resumes(tmp_path, hdf5_file, two_runs):
    folder = _copy_run(tmp_path, two_runs, tmp_path)
    run_id = safe_load(str(folder / 'state_dict.pth'))[checkpoints.RUN_KEY]
    train.run(utils.parse_config(_args(tmp_path, hdf5_file, 'a', '--num_iters', '2',
                                       '--resume')))
    assert safe_load(str(folder / 'state_dict.pth'))[checkpoints.RUN_KEY] == run_id
    assert checkpoints.run_of(checkpoints.set_id_of(safe_load(str(folder / 'G.pth')))) == run_id


# ------------------------------------------------------------------------------------------------
# The file set is the run's
# ------------------------------------------------------------------------------------------------

def test_a_resume_without_ema_on_an_ema_run_is_refused_and_the_run_stays_loadable(
        tmp_path, hdf5_file):
    ema = ['--ema', '--ema_start', '0']
    train.run(utils.parse_config(_args(tmp_path, hdf5_file, 'e', '--num_iters', '1', *ema)))
    folder = tmp_path / 'weights' / 'e'
    before = _files(folder)
    one_error_line(_cli('train.py', _args(tmp_path, hdf5_file, 'e', '--num_iters', '2',
                                           '--resume'), tmp_path),
                    'trained with --ema', 'G_ema.pth', 'add --ema')
    assert _files(folder) == before
    G, state, _ = _sample(tmp_path, hdf5_file, 'e', '--use_ema')
    assert state['itr'] == 1
    train.run(utils.parse_config(_args(tmp_path, hdf5_file, 'e', '--num_iters', '2',
                                       '--resume', *ema)))
    assert _sample(tmp_path, hdf5_file, 'e', '--use_ema')[1]['itr'] == 2
    # And the other way round: --ema on a run trained without it.
    train.run(utils.parse_config(_args(tmp_path, hdf5_file, 'p', '--num_iters', '1')))
    one_error_line(_cli('train.py', _args(tmp_path, hdf5_file, 'p', '--num_iters', '2',
                                           '--resume', '--ema'), tmp_path),
                    'trained without --ema', 'drop --ema')


def test_a_resume_that_changes_the_training_notes_each_change(tmp_path, hdf5_file, capsys):
    train.run(utils.parse_config(_args(tmp_path, hdf5_file, 'n', '--num_iters', '1')))
    capsys.readouterr()
    train.run(utils.parse_config(_args(tmp_path, hdf5_file, 'n', '--num_iters', '2', '--resume',
                                       '--seed', '3', '--loss', 'dcgan')))
    out = capsys.readouterr().out
    assert "Note: --seed 0 of the checkpoint's run becomes 3 (the command line)" in out
    assert "Note: --loss hinge of the checkpoint's run becomes dcgan" in out
    assert 'Note: --batch_size' not in out
