"""Safe runs in a shared lab: one writer per weights folder, readers that never see or cause a
mixed checkpoint, nothing non-finite saved, bounded loading, one clear error line for bad input,
checked before the models are built."""
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

import atomic
import checkpoints
import train
import utils
from conftest import ROOT, one_error_line
from data_helpers import make_image_folder
from safe_pickle import safe_load

TINY = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
        '--sv_log_interval', '0', '--test_every', '100000', '--num_save_copies', '0']


def _args(tmp, hdf5_file, *extra):
    return (['--dataset', 'HDF5', '--data_root', hdf5_file] + TINY
            + ['--weights_root', str(tmp / 'weights'), '--logs_root', str(tmp / 'logs'),
               '--samples_root', str(tmp / 'samples')] + list(extra))


def _cli(argv, cwd, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + argv,
                          capture_output=True, text=True, cwd=str(cwd),
                          env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------------------------
# One writer, whole sets for readers
# ------------------------------------------------------------------------------------------------

WRITER = r'''
import sys, torch
sys.path.insert(0, {root!r})
import atomic, checkpoints
root, saves = sys.argv[1], int(sys.argv[2])
class M:
    def __init__(self, v): self.v = v
    def state_dict(self): return self.v
lock = atomic.RunLock(root + '/exp', 'writer').acquire()
print('locked', flush=True)
for i in range(1, saves + 1):
    w = {{'w': torch.full((64, 64), float(i))}}
    checkpoints.save_weights(M(w), M(w), {{'itr': i, 'config': {{}}}}, root, 'exp',
                             G_optim=M({{'state': {{}}, 'param_groups': []}}))
print('done', flush=True)
'''


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(64, 64))


def test_readers_polling_during_saves_see_whole_sets_and_break_nothing(tmp_path):
    root = str(tmp_path)
    script = tmp_path / 'writer.py'
    script.write_text(WRITER.format(root=ROOT))
    writer = subprocess.Popen([sys.executable, str(script), root, '150'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == 'locked'
    G, D, seen = Holder(), Holder(), set()
    while writer.poll() is None:
        try:
            state = {'itr': 0}
            checkpoints.load_weights(G, D, state, root, 'exp', load_optim=False)
            seen_state, _ = checkpoints.read_state(root, 'exp')
        except FileNotFoundError:
            continue  # before the first save
        # G, D and state_dict.pth of one load come from the same save.
        assert G.w[0, 0].item() == D.w[0, 0].item() == state['itr']
        assert seen_state['itr'] >= state['itr']
        seen.add(state['itr'])
    out, err = writer.communicate()
    assert writer.returncode == 0 and out.strip() == 'done', err[-2000:]  # never broken
    assert len(seen) > 3 and checkpoints.leftovers(os.path.join(root, 'exp')) == []


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path, hdf5_file):
    args = _args(tmp_path, hdf5_file, '--num_iters', '1', '--experiment_name', 'busy')
    holder = atomic.RunLock(str(tmp_path / 'weights' / 'busy'), 'a test').acquire()
    try:
        result = _cli(args, tmp_path)
    finally:
        holder.release()
    one_error_line(result, 'is in use by PID', 'a test', '--experiment_name')
    assert not (tmp_path / 'logs' / 'busy').exists()  # the holder's logs are not touched


def test_a_mixed_set_is_refused_by_name(tmp_path, hdf5_file):
    args = _args(tmp_path, hdf5_file, '--experiment_name', 'mix', '--save_every', '1')
    train.run(utils.parse_config(args + ['--num_iters', '1', '--num_save_copies', '2']))
    train.run(utils.parse_config(args + ['--num_iters', '2', '--num_save_copies', '2',
                                         '--resume']))
    folder = tmp_path / 'weights' / 'mix'
    os.replace(folder / 'G_copy0.pth', folder / 'G_copy1.pth')  # iteration 1's G into copy1
    with pytest.raises(ValueError, match=r'mixes files of different saves \(G\b'):
        train.run(utils.parse_config(args + ['--num_iters', '3', '--resume', '--load_weights',
                                             'copy1']))


def test_a_fresh_start_over_a_checkpoint_is_refused(tmp_path, hdf5_file):
    args = _args(tmp_path, hdf5_file, '--experiment_name', 'run', '--num_iters', '1')
    train.run(utils.parse_config(args))
    before = (tmp_path / 'weights' / 'run' / 'G.pth').read_bytes()
    logs = (tmp_path / 'logs' / 'run' / 'G_loss.log').read_text()
    one_error_line(_cli(args, tmp_path), 'already holds a checkpoint', '--resume',
                    '--overwrite')
    assert (tmp_path / 'weights' / 'run' / 'G.pth').read_bytes() == before
    assert (tmp_path / 'logs' / 'run' / 'G_loss.log').read_text() == logs
    train.run(utils.parse_config(args + ['--overwrite', '--seed', '1']))
    assert (tmp_path / 'weights' / 'run' / 'G.pth').read_bytes() != before


# ------------------------------------------------------------------------------------------------
# Nothing poisoned saved, bounded loading
# ------------------------------------------------------------------------------------------------

def test_non_finite_weights_are_never_saved(tmp_path, hdf5_file):
    # The losses of iteration 1 are finite (computed before the update); G's weights are not.
    args = _args(tmp_path, hdf5_file, '--G_lr', '3e38', '--save_every', '1', '--num_iters', '3')
    result = _cli(args, tmp_path)
    one_error_line(result, 'non-finite values', 'nothing was saved')
    for path in (tmp_path / 'weights').rglob('*.pth'):
        for _, tensor in checkpoints._tensors(safe_load(str(path))):
            assert torch.isfinite(tensor).all(), path


def _nested(depth: int) -> object:
    level = [nn.ReLU()]
    for _ in range(depth):
        level = [level, level]  # each level refers to the previous one twice
    return level


@pytest.mark.parametrize('depth, refused', [(40, True), (24, False)])
def test_a_small_hostile_pickle_loads_or_fails_in_well_under_a_second(tmp_path, depth, refused):
    path = str(tmp_path / 'state_dict.pth')
    torch.save({'itr': 1, 'config': {'G_activation': _nested(depth)}}, path)
    assert os.path.getsize(path) < 5000
    start = time.perf_counter()
    if refused:
        with pytest.raises(ValueError, match='nests its data deeper than 32 levels'):
            safe_load(path)
    else:
        loaded = safe_load(path)  # shared levels are converted once: linear, not 2**24
        assert loaded['config']['G_activation'][0][1] is loaded['config']['G_activation'][0][0]
    assert time.perf_counter() - start < 1.0


def test_files_of_the_wrong_kind_are_refused_at_load(tmp_path, hdf5_file):
    args = _args(tmp_path, hdf5_file, '--experiment_name', 'kind', '--num_iters', '1')
    train.run(utils.parse_config(args))
    folder = tmp_path / 'weights' / 'kind'
    good = (folder / 'state_dict.pth').read_bytes()
    (folder / 'state_dict.pth').write_bytes((folder / 'G.pth').read_bytes())
    with pytest.raises(ValueError, match='holds no training state'):
        train.run(utils.parse_config(args + ['--resume', '--num_iters', '2']))
    (folder / 'state_dict.pth').write_bytes(good)
    other = _args(tmp_path / 'wide', hdf5_file, '--experiment_name', 'kind', '--num_iters',
                  '1', '--D_ch', '8')
    train.run(utils.parse_config(other))
    # Without its set id (as the original's files): another run's would be refused as such.
    wide = safe_load(str(tmp_path / 'wide' / 'weights' / 'kind' / 'D_optim.pth'))
    del wide[checkpoints.SET_KEY]
    torch.save(wide, folder / 'D_optim.pth')
    with pytest.raises(ValueError, match=r"D_optim\.pth': the state 'exp_avg' of parameter"):
        train.run(utils.parse_config(args + ['--resume', '--num_iters', '2']))


def test_a_full_disk_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    real_save = torch.save

    def no_room(obj, f, *args, **kwargs):
        if isinstance(f, io.BytesIO):  # in memory (the set id's digest): no disk involved
            return real_save(obj, f, *args, **kwargs)
        # What torch.save's C++ writer says when write() fails with ENOSPC.
        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0')
    monkeypatch.setattr(checkpoints.torch, 'save', no_room)
    monkeypatch.setattr(atomic.shutil, 'disk_usage',
                        lambda path: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(atomic.DiskFullError, match="disk is full writing 'G.pth'"):
        checkpoints.save_weights(Holder(), Holder(), {'itr': 1}, str(tmp_path), 'exp')
    assert os.listdir(tmp_path / 'exp') == []


# ------------------------------------------------------------------------------------------------
# Names, errors, resume flags
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, problem', [('../x', 'path separator'), ('/tmp/x', 'separator'),
                                           ('.', 'not a folder name'),
                                           ('a' * 256, '256 bytes long')])
def test_experiment_names_are_one_folder(tmp_path, hdf5_file, name, problem):
    result = _cli(_args(tmp_path, hdf5_file, '--experiment_name', name), tmp_path)
    one_error_line(result, '--experiment_name', problem)
    assert not (tmp_path / 'weights').exists() or not any((tmp_path / 'weights').iterdir())


def test_bad_input_is_one_line_before_the_models_are_built(tmp_path, hdf5_file, monkeypatch):
    folder = tmp_path / 'images'
    make_image_folder(str(folder))
    (folder / 'cat' / 'truncated.jpg').write_bytes(_truncated_jpeg())
    argv = ['--dataset', 'ImageFolder', '--resolution', '32', '--data_root', str(folder)] + TINY
    one_error_line(_cli(argv, tmp_path), 'cannot be read', 'truncated.jpg')
    (folder / 'cat' / 'truncated.jpg').unlink()
    (folder / 'empty').mkdir()
    one_error_line(_cli(argv, tmp_path), 'hold no images', 'empty')
    built = []
    monkeypatch.setattr(train, 'build_models', lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match="G_attn='128'"):
        train.run(utils.parse_config(_args(tmp_path, hdf5_file, '--G_attn', '128')))
    with pytest.raises(ValueError, match='hold no images'):
        train.run(utils.parse_config(argv))
    assert built == []  # both refused before the models were built
    debug = _cli(_args(tmp_path, hdf5_file, '--G_attn', '128'), tmp_path,
                 env={utils.DEBUG_VARIABLE: '1'})
    assert debug.returncode == 1 and 'Traceback' in debug.stderr  # BIGGAN_DEBUG=1


def _truncated_jpeg() -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, 'JPEG')
    return buffer.getvalue()[:buffer.tell() // 2]


def test_optimizer_flags_given_with_resume_take_effect(tmp_path, hdf5_file, capsys):
    args = _args(tmp_path, hdf5_file, '--experiment_name', 'lr', '--save_every', '1')
    train.run(utils.parse_config(args + ['--num_iters', '1']))
    train.run(utils.parse_config(args + ['--num_iters', '2', '--resume', '--G_lr', '1e-3',
                                         '--D_B2', '0.99']))
    assert 'Note: G optimizer lr 5e-05 from the checkpoint becomes 0.001' in capsys.readouterr().out
    G_optim = safe_load(str(tmp_path / 'weights' / 'lr' / 'G_optim.pth'))
    D_optim = safe_load(str(tmp_path / 'weights' / 'lr' / 'D_optim.pth'))
    assert G_optim['param_groups'][0]['lr'] == 1e-3
    assert tuple(D_optim['param_groups'][0]['betas']) == (0.0, 0.99)


def test_ctrl_c_names_the_last_checkpoint_and_the_resume_command(tmp_path, hdf5_file):
    args = _args(tmp_path, hdf5_file, '--experiment_name', 'stop', '--num_iters', '100000',
                 '--save_every', '2', '--pbar', 'mine', '--test_every', '1000000')
    # A shell runs background jobs with SIGINT ignored, and a child inherits that: give it the
    # default handling, as at a terminal.
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py')] + args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=str(tmp_path),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = tmp_path / 'weights' / 'stop' / 'state_dict.pth'
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # as Ctrl-C
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-3000:]
    assert 'Traceback' not in err
    itr = safe_load(str(state))['itr']
    assert 'the newest checkpoint in' in err and f'is iteration {itr}' in err
    assert 'resume with:' in err and err.rstrip().endswith('--resume')


def test_pickle_module_is_the_only_route_for_legacy_objects(tmp_path):
    """Unknown classes in a checkpoint are refused by name (nothing runs)."""
    path = str(tmp_path / 'evil.pth')
    with open(path, 'wb') as f:
        pickle.dump({'itr': 1, 'config': {'x': os.system}}, f)
    with pytest.raises(ValueError, match='corrupt or not a torch file|refusing'):
        safe_load(path)
