"""scripts/utils/estimate_memory.py: the fake-tensor step holds exactly the bytes a real step
leaves behind, and its peak grows with the batch."""
import os
import sys

import torch

import bench
import sampling
import train
import train_fns
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'scripts', 'utils'))
import estimate_memory  # noqa: E402

ARGS = ['--config', 'c10', '--amp', 'none', '--no-channels_last']


def _real_bytes_after_two_steps(batch_size: int) -> int:
    config = bench.run_config(bench.parse_args(
        ['--config', 'c10', '--batch_size', str(batch_size), '--amp', 'none', '--no-compile',
         '--no-channels_last']), torch.device('cpu'))
    torch.manual_seed(0)
    models = train.build_models(config, torch.device('cpu'), fast_adam=True)
    noise = sampling.NoiseSampler(models.G.dim_z, config['n_classes'], config['G_batch_size'],
                                  torch.device('cpu'), seed=0)
    step = train_fns.GAN_training_function(models, noise, {'itr': 1}, config)
    n = config['batch_size'] * config['num_D_steps']
    x, y = torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))
    for _ in range(2):
        step(x, y)
    tensors = [x, y]
    for net in (models.G, models.D, models.G_ema):
        tensors += list(net.state_dict().values())
        tensors += [p.grad for p in net.parameters() if p.grad is not None]
    for optim in (models.G_optim, models.D_optim):
        tensors += [t for state in optim.state.values() for t in state.values()
                    if isinstance(t, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def test_bytes_after_a_step_match_a_real_step():
    record = estimate_memory.main(ARGS + ['--batch_size', '2'])
    assert record['after_step_bytes'] == _real_bytes_after_two_steps(2)
    assert record['models_ema_batch_gib'] < record['after_step_gib'] < record['peak_gib']


def test_peak_grows_with_the_batch():
    small = estimate_memory.main(ARGS + ['--batch_size', '2'])
    large = estimate_memory.main(ARGS + ['--batch_size', '8'])
    assert large['peak_gib'] > small['peak_gib']
    # Only the batch is kept between steps: 6 more images of 3 x 32 x 32 floats, 6 labels.
    assert large['after_step_bytes'] - small['after_step_bytes'] == 4 * 6 * (3 * 32 * 32 * 4 + 8)
