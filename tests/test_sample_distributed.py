"""sample.py under torch.distributed, 2 gloo processes on the CPU: the npz is dealt out by
batches and rank 0 writes one file equal to one process's; sheets are rank 0's alone; the
metrics are computed over both processes' images and agree on every rank."""
import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import inception_utils
import sample
import train
import utils
from conftest import leave_spawned_worker
from data_helpers import random_hdf5
from inception_testing import TinyFeatureNet, uniform_images, write_moments

TRAIN = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
         '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
         '--test_every', '100000', '--num_iters', '1', '--save_every', '1',
         '--num_save_copies', '0']
# 3 G batches of 4 for 10 images: rank 0 draws batches 0 and 2, rank 1 batch 1.
SAMPLE = ['--G_eval_mode', '--sample_npz', '--sample_num_npz', '10', '--sample_sheets',
          '--sample_random', '--sample_inception_metrics', '--num_inception_images', '16',
          '--use_kid', '--seed', '3']


def _argv(root: str, name: str, samples: str) -> list:
    return ['--dataset', 'HDF5', '--data_root', os.path.join(root, 'tiny.hdf5'),
            '--experiment_name', name, '--config_from_name', '--weights_root',
            os.path.join(root, 'weights'), '--samples_root', os.path.join(root, samples),
            '--batch_size', '4', '--pbar', 'none', '--moments_path',
            os.path.join(root, 'moments.npz')] + SAMPLE


def _tiny_inception(*args, **kwargs):
    return TinyFeatureNet()


def _worker(rank: int, root: str, name: str) -> None:
    dist.init_process_group('gloo', init_method=f"file://{os.path.join(root, 'init')}",
                            rank=rank, world_size=2, timeout=timedelta(seconds=300))
    inception_utils.load_inception_net = _tiny_inception
    out = sample.main(_argv(root, name, 'two'))  # uses the group that is there
    assert dist.is_initialized()
    torch.save({key: out[key] for key in out if key != 'npz'},
               os.path.join(root, f'out.{rank}'))
    dist.destroy_process_group()
    leave_spawned_worker()


def test_two_processes_write_one_npz_and_agree_on_the_metrics(tmp_path, monkeypatch):
    root = str(tmp_path)
    random_hdf5(os.path.join(root, 'tiny.hdf5'), n=8, size=32, n_classes=3)
    config = utils.parse_config(['--dataset', 'HDF5', '--data_root',
                                 os.path.join(root, 'tiny.hdf5'), '--weights_root',
                                 os.path.join(root, 'weights'), '--logs_root',
                                 os.path.join(root, 'logs'), '--samples_root',
                                 os.path.join(root, 'train')] + TRAIN)
    train.run(config)
    name = utils.experiment_name(config)
    write_moments(os.path.join(root, 'moments.npz'), uniform_images(40, 32))
    monkeypatch.setattr(inception_utils, 'load_inception_net', _tiny_inception)
    one = sample.main(_argv(root, name, 'one'))
    mp.spawn(_worker, args=(root, name), nprocs=2)
    first, second = (torch.load(os.path.join(root, f'out.{r}')) for r in (0, 1))

    folder = os.path.join(root, 'two', name)
    with np.load(one['npz']) as single, np.load(os.path.join(folder, 'samples.npz')) as split:
        assert split['x'].shape == (10, 3, 32, 32)
        assert np.array_equal(split['x'], single['x'])
        assert np.array_equal(split['y'], single['y'])
    assert sorted(os.listdir(folder)) == ['-1', 'random_samples.jpg', 'samples.npz']
    assert set(first) == {'sheets', 'random', 'metrics'} and set(second) == {'metrics'}
    assert first['metrics'] == second['metrics']
    assert first['metrics']['KID_mean'] is not None
    # 8 images per process (two G batches each), 16 in all, each process its own noise.
    assert first['metrics']['FID'] != one['metrics']['FID']
