"""One path from an edit to what trains: a training iteration of train.py runs BigGAN.G_D's
forward, the Generator's and every GBlock's, in one process and under two processes (DDP over
gloo); and README's "Try a new block", "Add a flag" and "Add a loss" edits, applied to a copy of
the code as written there, train."""
import collections
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import BigGAN
import layers
import train
import utils
from conftest import ROOT, leave_spawned_worker
from data_helpers import random_hdf5

FLAGS = ['--dataset', 'HDF5', '--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0',
         '--dim_z', '16', '--batch_size', '2', '--num_D_steps', '1', '--num_workers', '0',
         '--pbar', 'none', '--test_every', '100000', '--save_every', '100000',
         '--num_save_copies', '0', '--sv_log_interval', '0']


def _roots(folder: str) -> list:
    return [arg for name in ('weights', 'logs', 'samples')
            for arg in (f'--{name}_root', os.path.join(folder, name))]


def _record_calls() -> collections.Counter:
    """Wrap G_D.forward, Generator.forward and layers.GBlock.forward so that each call is
    counted, with whether it came from inside G_D.forward (a training step) or not (sheets)."""
    calls = collections.Counter()
    inside = []
    real_gd, real_g, real_block = BigGAN.G_D.forward, BigGAN.Generator.forward, \
        layers.GBlock.forward

    def gd(self, *args, **kwargs):
        calls['G_D'] += 1
        inside.append(True)
        try:
            return real_gd(self, *args, **kwargs)
        finally:
            inside.pop()

    def g(self, *args, **kwargs):
        calls['Generator' if inside else 'Generator outside G_D'] += 1
        return real_g(self, *args, **kwargs)

    def block(self, *args, **kwargs):
        calls['GBlock' if inside else 'GBlock outside G_D'] += 1
        return real_block(self, *args, **kwargs)
    BigGAN.G_D.forward, BigGAN.Generator.forward, layers.GBlock.forward = gd, g, block
    return calls


def _one_iteration(tmp: str, data: str) -> collections.Counter:
    calls = _record_calls()
    config = utils.parse_config(FLAGS + ['--data_root', data, '--num_iters', '1']
                                + _roots(os.path.join(tmp, 'run')))
    train.run(config)
    return calls


def _expect_one_training_iteration(calls: collections.Counter) -> None:
    # One D step and one G step: G_D twice, G inside it each time, G's 3 blocks (32 x 32) each.
    assert calls['G_D'] == 2 and calls['Generator'] == 2, calls
    assert calls['GBlock'] == 2 * 3, calls


def test_a_training_iteration_runs_g_d_generator_and_gblock(tmp_path, monkeypatch):
    data = str(tmp_path / 'data.hdf5')
    random_hdf5(data, n=8, size=32, n_classes=3, seed=0)
    for cls, name in ((BigGAN.G_D, 'forward'), (BigGAN.Generator, 'forward'),
                      (layers.GBlock, 'forward')):
        monkeypatch.setattr(cls, name, getattr(cls, name))  # restored after the test
    _expect_one_training_iteration(_one_iteration(str(tmp_path), data))


def _worker(rank: int, tmp: str) -> None:
    dist.init_process_group('gloo', init_method=f'file://{os.path.join(tmp, "init")}',
                            rank=rank, world_size=2, timeout=timedelta(seconds=300))
    calls = _one_iteration(tmp, os.path.join(tmp, 'data.hdf5'))
    torch.save(dict(calls), os.path.join(tmp, f'calls.{rank}'))
    dist.destroy_process_group()
    leave_spawned_worker()


def test_under_two_processes_every_rank_trains_through_g_d(tmp_path):
    tmp = str(tmp_path)
    random_hdf5(os.path.join(tmp, 'data.hdf5'), n=8, size=32, n_classes=3, seed=0)
    mp.spawn(_worker, args=(tmp,), nprocs=2)
    for rank in range(2):
        _expect_one_training_iteration(collections.Counter(
            torch.load(os.path.join(tmp, f'calls.{rank}'))))


# ------------------------------------------------------------------------------------------------
# README's edits
# ------------------------------------------------------------------------------------------------

def _snippet(readme: str, section: str) -> str:
    """The first python block under README's `### <section>` heading."""
    start = readme.index(f'### {section}\n')
    return re.search(r'```python\n(.*?)```', readme[start:], re.S).group(1)


# Where README tells the reader to paste the block example: after everything in layers.py, the
# G_BLOCKS / D_BLOCKS tables included (the example adds itself to G_BLOCKS).
BLOCK_PLACE = 'at the end of `layers.py`'


def _block_snippet(readme: str) -> str:
    """README's block example: its first python block that adds to G_BLOCKS, which must follow
    the words BLOCK_PLACE."""
    blocks = [m for m in re.finditer(r'```python\n(.*?)```', readme, re.S)
              if 'G_BLOCKS[' in m.group(1)]
    assert blocks, 'README.md has no python block adding to G_BLOCKS'
    said = ' '.join(readme[:blocks[0].start()].split())
    assert BLOCK_PLACE in said, f'README.md no longer says to paste the block {BLOCK_PLACE}'
    return blocks[0].group(1)


def _apply_readme_edits(copy: str) -> None:
    readme = open(os.path.join(ROOT, 'README.md')).read()
    with open(os.path.join(copy, 'layers.py'), 'a') as f:  # BLOCK_PLACE
        f.write('\n\n' + _block_snippet(readme))
    with open(os.path.join(copy, 'losses.py'), 'a') as f:
        f.write('\n\n' + _snippet(readme, 'Add a loss'))
    path = os.path.join(copy, 'flags.py')  # "added to NEW_FLAGS in flags.py"
    text = open(path).read()
    start = text.index('NEW_FLAGS = [')
    end = text.index('\n]\n', start)
    with open(path, 'w') as f:
        f.write(text[:end] + '\n' + _snippet(readme, 'Add a flag').rstrip('\n') + text[end:])


def test_the_readme_edits_for_a_block_a_flag_and_a_loss_train(tmp_path):
    copy = str(tmp_path / 'code')
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'tests', 'logs', 'scripts', 'TFHub', 'runs', 'weights', 'samples',
        'data', '__pycache__', '*.npz'))
    _apply_readme_edits(copy)
    data = str(tmp_path / 'data.hdf5')
    random_hdf5(data, n=8, size=32, n_classes=3, seed=0)
    run = tmp_path / 'run'
    new = ['--G_block', 'ReZeroGBlock', '--G_alpha_init', '0.5', '--loss', 'ls']
    args = FLAGS + ['--data_root', data, '--num_iters', '2'] + _roots(str(run)) + new
    result = subprocess.run([sys.executable, 'train.py'] + args, cwd=copy, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    helped = subprocess.run([sys.executable, 'train.py', '--help'], cwd=copy,
                            capture_output=True, text=True).stdout
    assert '--G_alpha_init' in helped and 'ReZeroGBlock' in helped
    assert re.search(r'--loss .*choices: hinge, dcgan, ls', ' '.join(helped.split()))
    (name,) = os.listdir(run / 'weights')
    assert name.endswith('_GblockReZeroGBlock_Galpha0.5')
    G = torch.load(run / 'weights' / name / 'G.pth')
    alphas = [value for key, value in G.items() if key.endswith('.alpha')]
    assert len(alphas) == 3  # one per block; trained away from --G_alpha_init
    assert all(float(a) != 0.5 and abs(float(a) - 0.5) < 1e-2 for a in alphas)
    state = torch.load(run / 'weights' / name / 'state_dict.pth')
    assert state['config']['loss'] == 'ls' and state['config']['G_alpha_init'] == 0.5
    losses = [float(line.split(':')[1]) for line in open(run / 'logs' / name / 'G_loss.log')]
    assert len(losses) == 2 and min(losses) >= 0  # least squares: never negative
