"""Training under torch.distributed, 2 processes on the CPU (gloo): one step equals one process
with the combined batch (plain, and with cross-replica BN in G); in a full run only rank 0
writes files, and every rank resumes from the same checkpoint.

One spawn runs every scenario, since starting processes is the slow part. Inputs and results
travel by file, not shared memory (scarce on small CI machines).
"""
import dataclasses
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import distributed
import sampling
import train
import train_fns
import utils
from conftest import leave_spawned_worker
from data_helpers import random_hdf5

WORLD, BATCH = 2, 3  # processes, per-process batch
# A large Adam eps keeps the first update linear in the gradient: with the default, Adam moves
# every entry by +-lr whatever its size, so float rounding of a near-zero gradient (sums over
# two halves versus one batch) could flip a whole step.
TINY = ['--dataset', 'C10', '--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0',
        '--dim_z', '16', '--adam_eps', '1e-2', '--G_shared', '--hier', '--shared_dim', '8']
# name: (flags, G in train mode, chunks of BATCH per process in the loader batch)
SCENARIOS = {
    # G in eval mode makes its output independent of how the batch is split, so D's (and G's)
    # update is the same without cross-replica BN. Two D accumulations: DDP skips the
    # gradient sync on the first.
    'plain': (['--num_D_steps', '1', '--num_D_accumulations', '2'], False, 2),
    # D runs twice per backward (fakes, then reals), through one DDP wrapper.
    'split_D': (['--num_D_steps', '1', '--split_D'], False, 1),
    # G's BN sees the global batch: the whole step, BN running statistics included, matches.
    'cross_replica': (['--cross_replica', '--num_D_steps', '2', '--num_G_accumulations', '2'],
                      True, 2),
}
RUN = ['--dataset', 'HDF5', '--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0',
       '--dim_z', '16', '--batch_size', '2', '--num_D_steps', '1', '--num_workers', '0',
       '--pbar', 'none', '--test_every', '100000', '--save_every', '2', '--sv_log_interval', '1',
       '--cross_replica', '--shuffle', '--num_save_copies', '0',
       '--time_limit', '1000']  # not reached, but every iteration takes the ranks' decision


def _step(flags, batch, x, y, G_train, rank=0, world=1):
    """One training iteration from a seeded start; the states after it and the losses."""
    config = utils.parse_config(TINY + flags + ['--batch_size', str(batch)])
    utils.seed_rng(0)
    cpu = torch.device('cpu')
    models = train.build_models(config, cpu)
    G, D = models.G, models.D
    distributed.broadcast_states(G, D)
    GD = distributed.wrap_for_training(models.GD, config, cpu)
    noise = distributed.ShardedNoise(
        sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'], seed=3),
        cpu, rank, world)
    step = train_fns.GAN_training_function(dataclasses.replace(models, GD=GD), noise,
                                           {'itr': 1}, config)
    G.train(G_train)
    D.train()
    metrics = step(x, y)
    return {'G': G.state_dict(), 'D': D.state_dict(),
            'metrics': {k: float(distributed.mean_over_ranks(v)) for k, v in metrics.items()}}


def _watch_writes(root: str, seen: list) -> None:
    """Record every file or folder this process creates, changes or removes below `root`."""
    def hook(event, args):
        path = args[0] if args else None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str) or not os.path.abspath(path).startswith(root):
            return
        if event == 'open':
            mode, flags = args[1], args[2]
            writes = (any(c in mode for c in 'wax+') if isinstance(mode, str)
                      else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
            if writes:
                seen.append(path)
        elif event in ('os.mkdir', 'os.rename', 'os.remove', 'os.rmdir', 'os.truncate'):
            seen.append(f'{event} {path}')
    sys.addaudithook(hook)


def _two_runs(tmp: str, rank: int) -> dict:
    """train.run for 2 iterations, then --resume to 3; what this rank wrote and its weights."""
    root = os.path.join(tmp, 'run')
    args = RUN + ['--data_root', os.path.join(tmp, 'data.hdf5')]
    for name in ('weights', 'logs', 'samples'):
        args += [f'--{name}_root', os.path.join(root, name)]
    built = []
    real_build = train.build_models

    def keep(*a, **k):
        built.append(real_build(*a, **k))
        return built[-1]
    train.build_models = keep
    seen: list = []
    _watch_writes(root, seen)
    first = train.run(utils.parse_config(args + ['--num_iters', '2']))
    second = train.run(utils.parse_config(args + ['--num_iters', '3', '--resume']))
    G, D = built[-1].G, built[-1].D
    return {'writes': seen, 'itrs': (first['itr'], second['itr']),
            'G': {k: v.detach().clone() for k, v in G.named_parameters()},
            'D': {k: v.detach().clone() for k, v in D.named_parameters()},
            'name': utils.experiment_name(utils.parse_config(args))}


def _worker(rank: int, tmp: str) -> None:
    inputs = torch.load(os.path.join(tmp, 'inputs'))
    dist.init_process_group('gloo', init_method=f'file://{os.path.join(tmp, "init")}',
                            rank=rank, world_size=WORLD, timeout=timedelta(seconds=300))
    results = {}
    for name, (flags, G_train, _) in SCENARIOS.items():
        x, y = inputs[name]
        results[name] = _step(flags, BATCH, x[rank].flatten(0, 1), y[rank].flatten(0, 1),
                              G_train, rank, WORLD)
    results['run'] = _two_runs(tmp, rank)
    torch.save(results, os.path.join(tmp, f'result.{rank}'))
    dist.destroy_process_group()
    leave_spawned_worker()


def _assert_states_close(one: dict, two: dict, where: str) -> None:
    assert one.keys() == two.keys(), where
    for key in one:
        if one[key].is_floating_point():
            torch.testing.assert_close(one[key], two[key], atol=2e-6, rtol=1e-5,
                                       msg=lambda m: f'{where}.{key}: {m}')
        else:
            assert torch.equal(one[key], two[key]), f'{where}.{key}'


def test_two_processes_train_like_one_with_the_combined_batch(tmp_path):
    tmp = str(tmp_path)
    generator = torch.Generator().manual_seed(5)
    inputs = {}
    for name, (_, _, chunks) in SCENARIOS.items():
        x = torch.rand(WORLD, chunks, BATCH, 3, 32, 32, generator=generator) * 2 - 1
        y = torch.randint(0, 10, (WORLD, chunks, BATCH), generator=generator)
        inputs[name] = (x, y)
    torch.save(inputs, os.path.join(tmp, 'inputs'))
    random_hdf5(os.path.join(tmp, 'data.hdf5'), n=16, size=32, n_classes=3, seed=0)
    mp.spawn(_worker, args=(tmp,), nprocs=WORLD)
    results = [torch.load(os.path.join(tmp, f'result.{r}')) for r in range(WORLD)]

    for name, (flags, G_train, _) in SCENARIOS.items():
        x, y = inputs[name]
        # Chunk j of one process's batch = chunk j of every rank, side by side.
        reference = _step(flags, BATCH * WORLD, x.transpose(0, 1).flatten(0, 2),
                          y.transpose(0, 1).flatten(0, 2), G_train)
        for rank, result in enumerate(results):
            for net in ('D', 'G'):
                _assert_states_close(result[name][net], reference[net], f'{name}/rank{rank}/{net}')
            for key, value in reference['metrics'].items():
                assert abs(result[name]['metrics'][key] - value) < 1e-5, (name, key)

    zero, one = results[0]['run'], results[1]['run']
    assert zero['itrs'] == one['itrs'] == (2, 3)
    assert one['writes'] == []  # rank 1 wrote nothing at all
    weights = os.path.join(tmp, 'run', 'weights', zero['name'])
    assert any(path.startswith(weights) for path in zero['writes'])
    for net in ('G', 'D'):
        saved = torch.load(os.path.join(weights, f'{net}.pth'))
        for key, value in zero[net].items():
            # Both ranks resumed from rank 0's checkpoint (optimizer state included) and took
            # the same averaged step after it, so the weights agree to the bit.
            assert torch.equal(value, one[net][key]), f'{net}.{key}'
            assert torch.equal(value, saved[key]), f'{net}.{key}'
    logs = os.path.join(tmp, 'run', 'logs', zero['name'], 'G_loss.log')
    assert [line.split(':')[0] for line in open(logs)] == ['1', '2', '3']
