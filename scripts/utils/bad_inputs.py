"""Try every kind of bad input and fault on tiny runs and print a markdown table: the input, the
exit status, the program's error line and what is left on disk.

    python scripts/utils/bad_inputs.py [--out table.md]

Each case runs a real program (train.py, sample.py, ...) in a fresh temporary folder, on data
this script makes; a case passes when the program ends with one `error:` line and exit status 2
(130 for Ctrl-C, 143 for SIGTERM in a tool, each with one `interrupted` line; 128 + the signal
for a preemption signal in training; 0 where a fault is repaired or a run must clean up after a
killed one), no traceback, and the files it should keep are intact. The full disks are small
tmpfs mounts in a user namespace (`unshare -rm`); where the system allows none, those cases
fail, saying so.
"""
import argparse
import io
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

import atomic  # noqa: E402
from data_helpers import flip_tensor_bytes, make_image_folder, random_hdf5  # noqa: E402

TINY = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
        '--sv_log_interval', '0', '--test_every', '100000']


class Case:
    def __init__(self, tmp: str):
        self.tmp = tmp
        self.data = os.path.join(tmp, 'data.hdf5')
        random_hdf5(self.data, n=16, size=32, n_classes=3, seed=0)

    def roots(self):
        return [arg for name in ('weights', 'logs', 'samples')
                for arg in (f'--{name}_root', os.path.join(self.tmp, name))]

    def train_args(self, *extra, name='run'):
        return (['--dataset', 'HDF5', '--data_root', self.data] + TINY + self.roots()
                + ['--experiment_name', name] + list(extra))

    def run(self, program, args, wait_then=None):
        command = (program + args if isinstance(program, list)
                   else [sys.executable, os.path.join(ROOT, program)] + args)
        if wait_then is None:
            return subprocess.run(command, capture_output=True, text=True, cwd=self.tmp)
        # SIGINT as at a terminal, even where this script runs with it ignored (a background job).
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=self.tmp, preexec_fn=lambda: signal.signal(
                                       signal.SIGINT, signal.SIG_DFL))
        wait_then(process)
        out, err = process.communicate(timeout=120)
        return subprocess.CompletedProcess(command, process.returncode, out, err)

    def folder(self, name='run'):
        return os.path.join(self.tmp, 'weights', name)

    def on_disk(self, name='run') -> str:
        folder = self.folder(name)
        files = sorted(f for f in os.listdir(folder) if f.endswith('.pth')) \
            if os.path.isdir(folder) else []
        if not files:
            return 'no checkpoint'
        try:
            itr = torch.load(os.path.join(folder, 'state_dict.pth'), weights_only=False)['itr']
            return f'{len(files)} files, checkpoint at itr {itr}'
        except Exception:  # noqa: BLE001 - the table reports whatever is there
            return f'{len(files)} files'


def _trained(case: Case, name='run', *extra):
    result = case.run('train.py', case.train_args('--num_iters', '2', '--save_every', '1',
                                                  *extra, name=name))
    assert result.returncode == 0, result.stderr[-2000:]


def _jpeg(truncate: bool) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, 'JPEG')
    data = buffer.getvalue()
    return data[:len(data) // 2] if truncate else data


def _folder_with(case: Case, name: str, content: bytes = None, empty_class=False) -> list:
    root = os.path.join(case.tmp, 'images')
    make_image_folder(root)
    if content is not None:
        with open(os.path.join(root, 'cat', name), 'wb') as f:
            f.write(content)
    if empty_class:
        os.makedirs(os.path.join(root, 'zebra'))
    return (['--dataset', 'ImageFolder', '--resolution', '32', '--data_root', root] + TINY
            + case.roots())


def _sigint_after_first_save(case, signum=signal.SIGINT):
    def wait(process):
        state = os.path.join(case.folder(), 'state_dict.pth')
        deadline = time.time() + 120
        while not os.path.exists(state) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signum)
    return wait


def _nested_state(case: Case) -> None:
    level = [torch.nn.ReLU()]
    for _ in range(40):
        level = [level, level]
    torch.save({'itr': 1, 'config': {'x': level}}, os.path.join(case.folder(), 'state_dict.pth'))


def _copy_file(folder: str, src: str, dst: str, dst_folder: str = '') -> None:
    with open(os.path.join(folder, src), 'rb') as f:
        data = f.read()
    with open(os.path.join(dst_folder or folder, dst), 'wb') as f:
        f.write(data)


def _copy_between(case: Case, src_name: str, stem: str) -> None:
    _copy_file(case.folder(src_name), stem, stem, case.folder())


# (description, set-up(case) -> (program, args, wait_then or None), expected exit status)
CASES = [
    ('unknown attention resolution --G_attn 128 (32 x 32)',
     lambda c: ('train.py', c.train_args('--G_attn', '128'))),
    ('--batch_size 0', lambda c: ('train.py', c.train_args('--batch_size', '0'))),
    ('--G_lr -1', lambda c: ('train.py', c.train_args('--G_lr', '-1'))),
    ('--dataset nope', lambda c: ('train.py', ['--dataset', 'nope'] + c.roots())),
    ('--G_nl gelu (no such activation)', lambda c: ('train.py', c.train_args('--G_nl', 'gelu'))),
    ('--loss wgan (no such loss)', lambda c: ('train.py', c.train_args('--loss', 'wgan'))),
    ('--amp fp16 on the CPU', lambda c: ('train.py', c.train_args('--amp', 'fp16'))),
    ('--G_fp16 on the CPU (the original flag)',
     lambda c: ('train.py', c.train_args('--G_fp16'))),
    ('--experiment_name ../x', lambda c: ('train.py', c.train_args(name='../x'))),
    ('--experiment_name /tmp/abs', lambda c: ('train.py', c.train_args(name='/tmp/abs'))),
    ('--experiment_name of 256 characters',
     lambda c: ('train.py', c.train_args(name='a' * 256))),
    ('--hier without --G_shared', lambda c: ('train.py', c.train_args('--hier'))),
    ('--which_best FID with --no_fid',
     lambda c: ('train.py', c.train_args('--which_best', 'FID', '--no_fid'))),
    ('--logstyle "%d %d"', lambda c: ('train.py', c.train_args('--logstyle', '%d %d'))),
    ('--device tpu', lambda c: ('train.py', c.train_args('--device', 'tpu'))),
    ('--data_root that does not exist',
     lambda c: ('train.py', ['--dataset', 'I32', '--data_root', 'nowhere'] + TINY + c.roots())),
    ('HDF5 file of random bytes', lambda c: (
        open(os.path.join(c.tmp, 'bad.hdf5'), 'wb').write(os.urandom(2048)),
        ('train.py', ['--dataset', 'HDF5', '--data_root', os.path.join(c.tmp, 'bad.hdf5')]
         + TINY + c.roots()))[1]),
    ('image folder with an empty class folder',
     lambda c: ('train.py', _folder_with(c, '', empty_class=True))),
    ('image folder with a truncated JPEG',
     lambda c: ('train.py', _folder_with(c, 'broken.jpg', _jpeg(truncate=True)))),
    ('image folder with a text file named .jpg',
     lambda c: ('train.py', _folder_with(c, 'notes.jpg', b'just text'))),
    ('--resume with no checkpoint', lambda c: ('train.py', c.train_args('--resume'))),
    ('fresh start over an existing checkpoint (no --resume)',
     lambda c: (_trained(c), ('train.py', c.train_args('--num_iters', '3')))[1]),
    ('a second trainer on a folder in use', lambda c: (
        c.__setattr__('held', atomic.RunLock(c.folder(), 'another trainer').acquire()),
        ('train.py', c.train_args('--num_iters', '1')))[1]),
    ('--weights_root is a file', lambda c: (
        open(os.path.join(c.tmp, 'afile'), 'w').write('x'),
        ('train.py', c.train_args('--weights_root', os.path.join(c.tmp, 'afile'))))[1]),
    ('--resume: state_dict.pth holds G weights', lambda c: (
        _trained(c), _copy_file(c.folder(), 'G.pth', 'state_dict.pth'),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[2]),
    ('--resume: D_optim.pth of another width', lambda c: (
        _trained(c), _trained(c, 'wide', '--D_ch', '8'), _copy_between(c, 'wide', 'D_optim.pth'),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[3]),
    ('--resume: G.pth of another width', lambda c: (
        _trained(c), _trained(c, 'wide', '--G_ch', '8'), _copy_between(c, 'wide', 'G.pth'),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[3]),
    ('--resume --load_weights copy1 with copy0 G mixed in', lambda c: (
        _trained(c), os.replace(os.path.join(c.folder(), 'G_copy0.pth'),
                                os.path.join(c.folder(), 'G_copy1.pth')),
        ('train.py', c.train_args('--resume', '--load_weights', 'copy1', '--num_iters', '3')))[2]),
    ('--resume: 2 KB state_dict.pth nested 40 levels (each level twice)', lambda c: (
        _trained(c), _nested_state(c), ('train.py', c.train_args('--resume')))[2]),
    ('--resume: truncated G.pth', lambda c: (
        _trained(c), open(os.path.join(c.folder(), 'G.pth'), 'r+b').truncate(100),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[2]),
    ('--G_lr 3e38 --save_every 1 (weights become Inf)',
     lambda c: ('train.py', c.train_args('--G_lr', '3e38', '--save_every', '1',
                                        '--num_iters', '3'))),
    ('Ctrl-C (SIGINT) while training', lambda c: (
        'train.py', c.train_args('--num_iters', '100000', '--save_every', '2',
                                 '--test_every', '10000000'), _sigint_after_first_save(c)),
     130),
    ('sample.py --G_weights that does not exist',
     lambda c: ('sample.py', ['--dataset', 'C10', '--G_weights', 'nowhere.pth'] + TINY)),
    ('sample.py --use_ema on a run trained without --ema', lambda c: (
        _trained(c), ('sample.py', c.train_args('--use_ema', '--sample_random')))[1]),
    ('sample.py --sample_num_npz 0',
     lambda c: ('sample.py', c.train_args('--sample_npz', '--sample_num_npz', '0'))),
    ('sample.py --config_from_name on a missing run',
     lambda c: ('sample.py', c.train_args('--config_from_name', name='ghost'))),
    ('make_hdf5.py without the image folder',
     lambda c: ('make_hdf5.py', ['--dataset', 'I32', '--data_root', 'nowhere'])),
    ('calculate_inception_moments.py, Inception weights missing (offline)',
     lambda c: ('calculate_inception_moments.py',
                ['--dataset', 'HDF5', '--data_root', c.data, '--num_workers', '0',
                 '--inception_weights', 'missing.pth'])),
    ('plot_logs.py on an experiment with no logs',
     lambda c: ('logs/plot_logs.py', ['--logs_root', c.tmp, '--experiment_name', 'ghost'])),
]


# ------------------------------------------------------------------------------------------------
# Data files, temporaries, full disks, bad numbers, Ctrl-C and SIGTERM in every program
# ------------------------------------------------------------------------------------------------

def _write(case: Case, name: str, content) -> str:
    path = os.path.join(case.tmp, name)
    with open(path, 'w' if isinstance(content, str) else 'wb') as f:
        f.write(content)
    return path


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _labels_hdf5(case: Case, labels, n_classes=None) -> list:
    import h5py
    path = os.path.join(case.tmp, 'labels.hdf5')
    with h5py.File(path, 'w') as f:
        f['imgs'] = np.zeros((len(labels), 3, 32, 32), np.uint8)
        f['labels'] = np.array(labels, np.int64)
        if n_classes is not None:
            f['labels'].attrs['n_classes'] = n_classes
    return ['--dataset', 'HDF5', '--data_root', path] + TINY + case.roots()


def _moments(case: Case, mu, sigma) -> list:
    np.savez(os.path.join(case.tmp, 'moments.npz'), mu=mu, sigma=sigma, inception=np.array('tf'))
    np.savez(os.path.join(case.tmp, 'samples.npz'), x=np.zeros((4, 3, 32, 32), np.uint8))
    return ['--samples', os.path.join(case.tmp, 'samples.npz'), '--moments_path',
            os.path.join(case.tmp, 'moments.npz'), '--inception_weights', 'missing.pth']


def _class_map(case: Case, text: str) -> list:
    _trained(case, 'source')
    path = _write(case, 'map.json', text)
    case.on_disk = lambda name='run': f'{Case.on_disk(case, "source")} in the source'
    return case.train_args('--finetune_from', case.folder('source'), '--class_map', path,
                           '--num_iters', '1')


def _many_images(case: Case, count: int = 300) -> str:
    root = os.path.join(case.tmp, 'many')
    rng = np.random.default_rng(0)
    for i in range(count):
        os.makedirs(os.path.join(root, f'c{i % 2}'), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            os.path.join(root, f'c{i % 2}', f'{i}.png'))
    return root


def _no_temporaries(case: Case, folder: str):
    """on_disk: the files in `folder`, which must hold no temporary of ours."""
    def report(name='run'):
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        temps = [n for n in names if n.startswith(atomic.TMP_PREFIX)]
        case.problem = f'temporaries left: {temps}' if temps else None
        return f'{folder.replace(case.tmp, "<tmp>")}: {", ".join(names) or "empty"}'
    case.on_disk = report


def _make_hdf5_args(case: Case, root: str, out: str, *extra) -> list:
    return ['--dataset', 'ImageFolder', '--resolution', '64', '--data_root', root, '--out', out,
            '--num_workers', '0', '--batch_size', '4', '--chunk_size', '4', *extra]


def _signal_when(case: Case, ready, signum):
    """Send `signum` once `ready()` holds (a temporary being written, say)."""
    def wait(process):
        deadline = time.time() + 120
        while not ready() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signum)
    return wait


def _temp_in(folder: str):
    return lambda: os.path.isdir(folder) and any(
        n.startswith(atomic.TMP_PREFIX) for n in os.listdir(folder))


def _interrupted_make_hdf5(case: Case, signum) -> tuple:
    out_dir = os.path.join(case.tmp, 'out')
    _no_temporaries(case, out_dir)
    args = _make_hdf5_args(case, _many_images(case), os.path.join(out_dir, 'x.hdf5'))
    return 'make_hdf5.py', args, _signal_when(case, _temp_in(out_dir), signum)


def _interrupted_sample(case: Case, signum) -> tuple:
    _trained(case)
    folder = os.path.join(case.tmp, 'samples', 'run')
    _no_temporaries(case, folder)

    def wait(process):
        process.stdout.readline()  # the config sample.py prints once it runs
        time.sleep(3)  # G loaded, sampling under way
        process.send_signal(signum)
    return ('sample.py', case.train_args('--sample_npz', '--sample_num_npz', '2000000'), wait)


def _dead_writer_then(case: Case, folder: str, name: str, program: str, args: list) -> tuple:
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from data_helpers import leave_dead_temporary
    os.makedirs(folder, exist_ok=True)
    leave_dead_temporary(folder, name)
    _no_temporaries(case, folder)
    return program, args


def _gone_mid_training(case: Case) -> tuple:
    args = _folder_with(case, '')
    victim = os.path.join(case.tmp, 'images', 'cat', 'sub', 'deep', 'c.png')

    def wait(process):
        state = os.path.join(case.tmp, 'weights')
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None and not any(
                f == 'state_dict.pth' for _, _, files in os.walk(state) for f in files):
            time.sleep(0.1)
        os.remove(victim)
    return ('train.py', args + ['--num_iters', '99999', '--save_every', '1',
                                '--experiment_name', 'run'], wait)


def _has_user_namespaces() -> bool:
    try:
        return subprocess.run(['unshare', '-rm', 'true'], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _on_full_tmpfs(case: Case, size: str, program: str, args_of) -> tuple:
    """Run `program` with a `size` tmpfs at <tmp>/full (a user namespace's own mount), which
    vanishes with the run: what it held is listed into <tmp>/full.ls first."""
    full = os.path.join(case.tmp, 'full')
    os.makedirs(full)
    listing = full + '.ls'
    case.on_disk = lambda name='run': (
        f'<tmp>/full: {open(listing).read().split() or "empty"}' if os.path.exists(listing)
        else 'no tmpfs (no user namespaces here)')
    if not _has_user_namespaces():
        return ['false'], []
    args = ' '.join(shlex.quote(a) for a in [sys.executable, os.path.join(ROOT, program)]
                    + args_of(full))
    script = (f'mount -t tmpfs -o size={size} tmpfs {shlex.quote(full)} || exit 3; '
              f'{args}; rc=$?; find {shlex.quote(full)} -mindepth 1 -printf "%P\\n" '
              f'>{shlex.quote(listing)}; exit $rc')
    return ['unshare', '-rm', 'sh', '-c', script], []


CASES += [
    ('image deleted in a class sub-folder mid-training', _gone_mid_training),
    ('make_hdf5.py onto a full disk (300 KB tmpfs; size known: stops before writing)',
     lambda c: _on_full_tmpfs(c, '300k', 'make_hdf5.py', lambda full: _make_hdf5_args(
         c, _many_images(c, 64), os.path.join(full, 'x.hdf5')))),
    ('make_hdf5.py --compression onto a full disk (HDF5 fails mid-write; was exit 139)',
     lambda c: _on_full_tmpfs(c, '300k', 'make_hdf5.py', lambda full: _make_hdf5_args(
         c, _many_images(c, 64), os.path.join(full, 'x.hdf5'), '--compression'))),
    ('sample.py --sample_npz onto a full disk (64 KB tmpfs)', lambda c: (
        _trained(c), _on_full_tmpfs(c, '64k', 'sample.py', lambda full: c.train_args(
            '--sample_npz', '--sample_num_npz', '500', '--samples_root', full)))[1]),
    ('train.py with --logs_root on a full disk (16 KB tmpfs)', lambda c: _on_full_tmpfs(
        c, '16k', 'train.py', lambda full: c.train_args(
            '--num_iters', '99999', '--logs_root', full, '--log_every', '1'))),
    ('train.py with --weights_root on a full disk (64 KB tmpfs)', lambda c: _on_full_tmpfs(
        c, '64k', 'train.py', lambda full: c.train_args(
            '--num_iters', '4', '--save_every', '2', '--weights_root', full))),
    ('HDF5 file with one stray label 1000 (labels 0-2)',
     lambda c: ('train.py', _labels_hdf5(c, [0, 1, 2, 1000]))),
    ('HDF5 file declaring 3 classes with a label 5',
     lambda c: ('train.py', _labels_hdf5(c, [0, 1, 2, 5], n_classes=3))),
    ('HDF5 file with a negative label',
     lambda c: ('train.py', _labels_hdf5(c, [0, 1, -1, 2]))),
    ('moments file whose mu holds NaN (inception_utils.py --samples)',
     lambda c: ('inception_utils.py', _moments(c, np.array([0, np.nan]), np.eye(2)))),
    ('moments file whose sigma holds Inf',
     lambda c: ('inception_utils.py', _moments(c, np.zeros(2), np.full((2, 2), np.inf)))),
    ('--samples: an npz of Python objects', lambda c: ('inception_utils.py', (
        _moments(c, np.zeros(2), np.eye(2)), np.savez(os.path.join(c.tmp, 'samples.npz'),
                                                      x=np.array([None, {}], dtype=object)))[0])),
    ('--samples: a bare .npy array', lambda c: ('inception_utils.py', (
        _moments(c, np.zeros(2), np.eye(2)),
        _write(c, 'samples.npz', _npy_bytes(np.zeros((2, 3, 8, 8), np.uint8))))[0])),
    ('--class_map with an entry true', lambda c: ('train.py', _class_map(c, '[0, true]'))),
    ('--class_map nested 5,000 deep',
     lambda c: ('train.py', _class_map(c, '[' * 5000 + ']' * 5000))),
    ('--class_map with an entry 1.5', lambda c: ('train.py', _class_map(c, '[0, 1.5]'))),
    ('--class_map that is not UTF-8', lambda c: ('train.py', _class_map(c, b'[0, \xff]'))),
    ('--experiment_name that is not UTF-8',
     lambda c: ('train.py', c.train_args(name=os.fsdecode(b'run\xff')))),
    ('Ctrl-C in make_hdf5.py mid-write',
     lambda c: _interrupted_make_hdf5(c, signal.SIGINT), 130),
    ('SIGTERM to make_hdf5.py mid-write',
     lambda c: _interrupted_make_hdf5(c, signal.SIGTERM), 143),
    ('Ctrl-C in sample.py --sample_npz', lambda c: _interrupted_sample(c, signal.SIGINT), 130),
    ('SIGTERM to sample.py --sample_npz', lambda c: _interrupted_sample(c, signal.SIGTERM), 143),
    ('make_hdf5.py after a killed writer: its temporary is removed', lambda c: _dead_writer_then(
        c, os.path.join(c.tmp, 'out'), 'x.hdf5', 'make_hdf5.py',
        _make_hdf5_args(c, _many_images(c, 8), os.path.join(c.tmp, 'out', 'x.hdf5'))), 0),
    ('sample.py after a killed --sample_npz writer: its temporary is removed',
     lambda c: (_trained(c), _dead_writer_then(
         c, os.path.join(c.tmp, 'samples', 'run'), 'samples.npz', 'sample.py',
         c.train_args('--sample_npz', '--sample_num_npz', '8')))[1], 0),
    ('calculate_inception_moments.py after a killed writer (then: weights missing)',
     lambda c: _dead_writer_then(
         c, os.path.join(c.tmp, 'm'), 'I_inception_moments.npz', 'calculate_inception_moments.py',
         ['--dataset', 'HDF5', '--data_root', c.data, '--num_workers', '0',
          '--inception_weights', 'missing.pth', '--moments_path',
          os.path.join(c.tmp, 'm', 'I_inception_moments.npz')])),
]


# ------------------------------------------------------------------------------------------------
# Preemption, recovery, integrity and provenance, the file set of a run
# ------------------------------------------------------------------------------------------------

def _bad_journal(case: Case, foreign: bool) -> None:
    """A journal of an interrupted save naming a truncated temporary of G.pth, or one of
    another run (as a folder copied in the middle of a save)."""
    import json
    folder = case.folder()
    with open(os.path.join(folder, 'G.pth'), 'rb') as f:
        data = f.read()
    if foreign:
        _trained(case, 'other')
        with open(os.path.join(case.folder('other'), 'G.pth'), 'rb') as f:
            temp = f.read()
    else:
        temp = data[:4096]
    with open(os.path.join(folder, '.tmp-99-G.pth'), 'wb') as f:
        f.write(temp)
    state = torch.load(os.path.join(folder, 'state_dict.pth'), weights_only=False)
    journal = {'set': state['checkpoint_set'],
               'files': {'G.pth': {'temp': '.tmp-99-G.pth', 'size': len(data)}}}
    with open(os.path.join(folder, '.saving.json'), 'w') as f:
        json.dump(journal, f)


def _nan_G(case: Case) -> None:
    path = os.path.join(case.folder(), 'G.pth')
    weights = torch.load(path)
    next(t for t in weights.values() if t.is_floating_point()).view(-1)[0] = float('nan')
    torch.save(weights, path)


_LONG = ['--num_iters', '100000', '--save_every', '2', '--test_every', '10000000']

RELIABILITY_CASES = [
    ('SIGTERM while training (a scheduler stopping the job)', lambda c: (
        'train.py', c.train_args(*_LONG), _sigint_after_first_save(c, signal.SIGTERM)), 143),
    ('SIGUSR1 while training (SLURM --signal=USR1@120)', lambda c: (
        'train.py', c.train_args(*_LONG), _sigint_after_first_save(c, signal.SIGUSR1)), 138),
    ('SIGHUP while training (the terminal closed)', lambda c: (
        'train.py', c.train_args(*_LONG), _sigint_after_first_save(c, signal.SIGHUP)), 129),
    ('--save_on_signal TERM,KILL', lambda c: (
        'train.py', c.train_args('--save_on_signal', 'TERM,KILL'))),
    ('--resume: G.pth with 64 bytes flipped', lambda c: (
        _trained(c), flip_tensor_bytes(os.path.join(c.folder(), 'G.pth')),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[2]),
    ('sample.py: G.pth with 64 bytes flipped', lambda c: (
        _trained(c), flip_tensor_bytes(os.path.join(c.folder(), 'G.pth')),
        ('sample.py', c.train_args('--sample_random')))[2]),
    ('--resume: G.pth of another run, same seed and iteration', lambda c: (
        _trained(c), _trained(c, 'other'), _copy_between(c, 'other', 'G.pth'),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[3]),
    ('sample.py: G.pth of another run, same seed and iteration', lambda c: (
        _trained(c), _trained(c, 'other'), _copy_between(c, 'other', 'G.pth'),
        ('sample.py', c.train_args('--sample_random')))[3]),
    ('--resume: G.pth holding a NaN (saved by another program)', lambda c: (
        _trained(c), _nan_G(c), ('train.py', c.train_args('--resume', '--num_iters', '3')))[2]),
    ('--resume without --ema on an EMA run', lambda c: (
        _trained(c, 'run', '--ema'),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[1]),
    ('--resume --ema on a run trained without it', lambda c: (
        _trained(c), ('train.py', c.train_args('--resume', '--ema', '--num_iters', '3')))[1]),
    ('sample.py on a journal naming a truncated temporary (reads, repairs nothing)', lambda c: (
        _trained(c), _bad_journal(c, foreign=False),
        ('sample.py', c.train_args('--sample_random')))[2], 0),
    ('--resume on a journal naming a truncated temporary (discarded, G.pth kept)', lambda c: (
        _trained(c), _bad_journal(c, foreign=False),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[2], 0),
    ('--resume on a journal naming a temporary of another run (discarded)', lambda c: (
        _trained(c), _bad_journal(c, foreign=True),
        ('train.py', c.train_args('--resume', '--num_iters', '3')))[2], 0),
]
CASES += RELIABILITY_CASES

# Limited data (docs/data_efficient.md)
LIMITED_DATA_CASES = [
    ('--DiffAugment colr (no such transform)',
     lambda c: ('train.py', c.train_args('--DiffAugment', 'colr'))),
    ('--data_fraction 0', lambda c: ('train.py', c.train_args('--data_fraction', '0'))),
    ('--num_samples 100 (the data holds 16)',
     lambda c: ('train.py', c.train_args('--num_samples', '100'))),
    ('--num_samples 8 with --data_fraction 0.5',
     lambda c: ('train.py', c.train_args('--num_samples', '8', '--data_fraction', '0.5'))),
    ('--CR 10 with --bCR_real 10 (the same term)',
     lambda c: ('train.py', c.train_args('--CR', '10', '--bCR_real', '10'))),
    ('--ADA_target 1.5', lambda c: ('train.py', c.train_args('--ADA', '--ADA_target', '1.5'))),
    ('--resume on another subset (--subset_seed 1 after 0)',
     lambda c: (_trained(c, 'run', '--num_samples', '8'),
                ('train.py', c.train_args('--num_samples', '8', '--subset_seed', '1',
                                          '--resume', '--num_iters', '4')))[1]),
]
CASES += LIMITED_DATA_CASES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='', help='also write the table to this file')
    parser.add_argument('--first', type=int, default=1, help='start at this case number')
    args = parser.parse_args(argv)
    rows = ['| # | bad input or fault | exit | error line | on disk afterwards | ok |',
            '| --- | --- | --- | --- | --- | --- |']
    failures = 0
    for number, (what, setup, *expected) in enumerate(CASES, 1):
        if number < args.first:
            continue
        expected = expected[0] if expected else 2
        with tempfile.TemporaryDirectory() as tmp:
            case = Case(tmp)
            program, program_args, *wait = setup(case)
            result = case.run(program, program_args, wait[0] if wait else None)
            errors = [line for line in result.stderr.splitlines() if line.startswith('error')]
            message = errors[-1] if errors else (result.stderr.strip().splitlines() or [''])[-1]
            disk = case.on_disk()  # may note a problem (case.problem): a file left behind
            ok = (result.returncode == expected and 'Traceback' not in result.stderr
                  and len(errors) <= 1 and (errors or expected != 2)
                  and not getattr(case, 'problem', None))
            failures += not ok
            message = message.replace(tmp, '<tmp>').replace('|', '/')
            if len(message) > 160:
                message = message[:157] + '...'
            rows.append(f'| {number} | {what} | {result.returncode} | {message} | {disk} | '
                        f'{"yes" if ok else "NO"} |')
            print(rows[-1], flush=True)
    table = '\n'.join(rows)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    ran = len(CASES) - args.first + 1
    print(f'\n{ran - failures} of {ran} cases end as they should')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
