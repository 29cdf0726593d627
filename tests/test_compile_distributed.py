"""--cross_replica --compile under two processes (gloo): the compiled G and D trace with no graph
break and compile once per input shape (no recompiles across iterations), and train like eager.
"""
import dataclasses
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import leave_spawned_worker

# A large Adam eps keeps the updates linear in the gradients: with the default, Adam moves every
# entry by +-lr whatever its size, so rounding of a near-zero gradient could flip a whole step.
FLAGS = ['--dataset', 'C10', '--G_ch', '4', '--D_ch', '4', '--G_attn', '16', '--D_attn', '16',
         '--dim_z', '16', '--G_shared', '--hier', '--shared_dim', '8', '--cross_replica',
         '--batch_size', '3', '--num_D_steps', '1', '--adam_eps', '1e-2']


def _train_two_steps(rank: int, compiled: bool) -> dict:
    import distributed
    import sampling
    import train
    import train_fns
    import utils
    from torch._dynamo.utils import counters
    config = utils.parse_config(FLAGS + ['--compile'] * compiled)
    utils.seed_rng(0)
    cpu = torch.device('cpu')
    models = train.build_models(config, cpu)
    distributed.broadcast_states(models.G, models.D)
    GD = distributed.wrap_for_training(models.GD, config, cpu)
    noise = distributed.ShardedNoise(sampling.NoiseSampler(models.G.dim_z, 10, 3, seed=3), cpu,
                                     rank, 2)
    step = train_fns.GAN_training_function(dataclasses.replace(models, GD=GD), noise,
                                           {'itr': 1}, config)
    generator = torch.Generator().manual_seed(rank)
    x = torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1
    y = torch.randint(0, 10, (3,), generator=generator)
    models.G.train()
    models.D.train()
    counters.clear()
    graphs = []
    for _ in range(2):
        step(x, y)
        graphs.append(counters['stats']['unique_graphs'])
    return {'G': models.G.state_dict(), 'D': models.D.state_dict(),
            'graph_breaks': dict(counters['graph_break']), 'graphs': graphs}


def _worker(rank: int, tmp: str) -> None:
    dist.init_process_group('gloo', init_method=f'file://{os.path.join(tmp, "init")}',
                            rank=rank, world_size=2, timeout=timedelta(seconds=600))
    results = {'eager': _train_two_steps(rank, False), 'compiled': _train_two_steps(rank, True)}
    torch.save(results, os.path.join(tmp, f'result.{rank}'))
    dist.destroy_process_group()
    leave_spawned_worker()


def test_cross_replica_compiles_without_graph_breaks_and_trains_like_eager(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=2)
    for rank in range(2):
        result = torch.load(os.path.join(str(tmp_path), f'result.{rank}'))
        compiled = result['compiled']
        assert compiled['graph_breaks'] == {}
        # G with and without gradients, D on fakes + reals and on fakes: 4 graphs, compiled in
        # the first iteration; the second reuses them.
        assert compiled['graphs'] == [4, 4]
        for net in ('G', 'D'):
            for key, value in result['eager'][net].items():
                torch.testing.assert_close(compiled[net][key], value, rtol=1e-4, atol=2e-5,
                                           msg=f'rank {rank} {net}.{key}')
