"""Train BigGAN or BigGAN-deep: `python train.py --dataset C10 ...` (the original's flags).

`run(config)` wires the read-only config into the models, optimizers, data, metrics and the
training step, then loops until `--num_iters` or `--num_epochs`, saving, sampling and testing
on schedule. A resumed run (`--resume`) continues bit for bit: the weights, optimizers, RNG
states and data position all come back from the checkpoint.
"""
import functools
import os
import random
import sys
import time
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

import checkpoints
import datasets
import loggers
import sampling
import train_fns
import utils


def make_optimizers(G, D, config: dict, device: torch.device):
    """Adam for G and D with the original's hyper-parameters; fused on CUDA."""
    fused = {'fused': True} if device.type == 'cuda' else {}
    G_optim = torch.optim.Adam(G.parameters(), lr=config['G_lr'],
                               betas=(config['G_B1'], config['G_B2']), weight_decay=0,
                               eps=config['adam_eps'], **fused)
    D_optim = torch.optim.Adam(D.parameters(), lr=config['D_lr'],
                               betas=(config['D_B1'], config['D_B2']), weight_decay=0,
                               eps=config['adam_eps'], **fused)
    return G_optim, D_optim


def rng_state(train_sampler: sampling.NoiseSampler) -> dict:
    """Every random state a resumed run needs to continue exactly."""
    np_state = np.random.get_state()
    state = {'torch': torch.get_rng_state(),
             'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                       'pos': int(np_state[2]), 'has_gauss': int(np_state[3]),
                       'cached_gaussian': float(np_state[4])},
             'python': random.getstate(),
             'sampler': train_sampler.state_dict()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, train_sampler: sampling.NoiseSampler) -> None:
    """Put back the states saved by `rng_state` (absent in the original's checkpoints)."""
    if not state:
        print('Note: the checkpoint has no RNG state (written by the original code): the run '
              'continues from its weights, with fresh noise')
        return
    torch.set_rng_state(state['torch'])
    numpy = state['numpy']
    np.random.set_state(('MT19937', numpy['keys'].numpy().astype(np.uint32), numpy['pos'],
                         numpy['has_gauss'], numpy['cached_gaussian']))
    python = state['python']
    random.setstate((python[0], tuple(python[1]), python[2]))
    train_sampler.load_state_dict(state['sampler'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def saved_config(config: dict) -> dict:
    """The config as stored in state_dict.pth: plain values only (the original stored nn.ReLU
    objects, which the original code re-derives from G_nl/D_nl on load anyway)."""
    return {**dict(config), 'G_activation': config['G_nl'], 'D_activation': config['D_nl']}


def eval_sampler(G, config: dict, device, itr: int) -> sampling.NoiseSampler:
    """A sampler for sheets and metrics, seeded from (seed, itr): it never touches the
    training noise stream, so saving and testing do not change what training sees."""
    seed = int(np.random.SeedSequence([config['seed'], itr, 1]).generate_state(1)[0])
    return sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'], device,
                                 seed=seed)


def run(config: dict) -> dict:
    """The whole training program. Returns the final training state."""
    device = utils.setup_torch(config)
    utils.prepare_root(config)
    model = utils.model_module(config)
    experiment_name = utils.experiment_name(config)
    print(f'Experiment name is {experiment_name}')

    kwargs = utils.model_kwargs(config)
    G = model.Generator(**kwargs['G']).to(device)
    D = model.Discriminator(**kwargs['D']).to(device)
    G_ema, ema = None, None
    if config['ema']:
        print(f"Preparing EMA for G with decay of {config['ema_decay']}")
        G_ema = model.Generator(**{**kwargs['G'], 'skip_init': True}).to(device)
        ema = train_fns.EMA(G, G_ema, config['ema_decay'], config['ema_start'])
    G_optim, D_optim = make_optimizers(G, D, config, device)
    GD = model.G_D(G, D)
    print(f'Number of params in G: {utils.count_parameters(G)} D: '
          f'{utils.count_parameters(D)}')

    state_dict = {'itr': 0, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0.0,
                  'best_FID': 999999.0, 'config': saved_config(config)}
    train_sampler = sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'],
                                          device, seed=config['seed'])
    if config['resume']:
        saved = checkpoints.load_weights(G, D, G_optim, D_optim, state_dict,
                                         config['weights_root'], experiment_name,
                                         config['load_weights'] or None, G_ema)
        restore_rng(saved.get('rng'), train_sampler)

    start_itr = state_dict['itr']
    train_log = loggers.MyLogger(os.path.join(config['logs_root'], experiment_name),
                                 reinitialize=not config['resume'],
                                 logstyle=config['logstyle'], start_itr=start_itr)
    test_log = loggers.MetricsLogger(os.path.join(config['logs_root'],
                                                  f'{experiment_name}_log.jsonl'),
                                     reinitialize=not config['resume'], start_itr=start_itr)
    loggers.write_metadata(config['logs_root'], experiment_name, config, state_dict)

    loader_batch = config['batch_size'] * config['num_D_steps'] * config['num_D_accumulations']
    loader = datasets.get_data_loaders(
        config['dataset'], data_root=config['data_root'], augment=config['augment'],
        batch_size=loader_batch, num_workers=config['num_workers'], shuffle=config['shuffle'],
        load_in_mem=config['load_in_mem'], pin_memory=config['pin_memory'], drop_last=True,
        start_itr=start_itr, num_epochs=config['num_epochs'],
        use_multiepoch_sampler=config['use_multiepoch_sampler'],
        resolution=config['resolution'], seed=config['seed'])[0]

    last_itr = planned_iters(config, loader)
    get_inception_metrics = prepare_metrics(config, device, last_itr)
    fixed = sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'], device,
                                  seed=config['seed'] + 1)
    fixed_z, fixed_y = fixed.sample()
    precision = train_fns.Precision(config['amp'], device)
    if config['which_train_fn'] == 'GAN':
        train = train_fns.GAN_training_function(G, D, GD, train_sampler, ema, state_dict,
                                                config, G_optim, D_optim, precision)
    else:
        train = train_fns.dummy_training_function()

    print(f'Beginning training at epoch {state_dict["epoch"]}, iteration {start_itr}...')
    try:
        loop(config, G, D, G_ema, G_optim, D_optim, loader, train, train_sampler, state_dict,
             train_log, test_log, get_inception_metrics, fixed_z, fixed_y, experiment_name,
             device, last_itr)
    finally:
        train_log.close()
    return state_dict


def planned_iters(config: dict, loader) -> int:
    """The iteration at which this run will stop: --num_iters, else the end of the data."""
    if config['num_iters']:
        return config['num_iters']
    if config['use_multiepoch_sampler']:
        return loader.sampler.start_itr + len(loader)
    return config['num_epochs'] * loader.sampler.batches_per_epoch


def prepare_metrics(config: dict, device, last_itr: int):
    """IS/FID(/KID) for test(). The Inception net loads at the first test; the moments file is
    checked now, so a missing one fails at start-up, unless no test falls within the run."""
    import inception_utils
    if config['test_every'] > last_itr:
        def no_tests(*args, **kwargs):
            raise RuntimeError('no test was planned in this run (--test_every is beyond its '
                               'last iteration)')
        return no_tests
    return inception_utils.prepare_inception_metrics(
        config['dataset'], config['parallel'], config['no_fid'],
        moments_path=config['moments_path'] or None, inception=config['inception'],
        inception_weights=config['inception_weights'] or None, device=device,
        use_kid=config['use_kid'])


def _batches(loader, config: dict, state_dict: dict):
    """Yield batches until the data runs out: one pass for the multi-epoch sampler (which holds
    every epoch), else one pass per epoch up to --num_epochs."""
    if config['use_multiepoch_sampler']:
        yield from loader
        return
    while state_dict['epoch'] < config['num_epochs']:
        state_dict['epoch'] = loader.sampler.epoch
        if state_dict['epoch'] >= config['num_epochs']:
            return
        yield from loader
        state_dict['epoch'] = loader.sampler.epoch


def loop(config, G, D, G_ema, G_optim, D_optim, loader, train, train_sampler, state_dict,
         train_log, test_log, get_inception_metrics, fixed_z, fixed_y, experiment_name,
         device, total: int) -> None:
    """The iteration loop: train, log, test, save and sample."""
    num_iters = config['num_iters']
    batches = _batches(loader, config, state_dict)
    if config['pbar'] == 'tqdm':
        batches = tqdm(batches, total=total, initial=state_dict['itr'], dynamic_ncols=True)
    elif config['pbar'] == 'mine':
        batches = loggers.progress(batches, total=total, start=state_dict['itr'],
                                   displaytype='s1k' if config['use_multiepoch_sampler']
                                   else 'eta')
    t_start = time.time()
    for x, y in batches:
        if num_iters and state_dict['itr'] >= num_iters:
            break
        state_dict['itr'] += 1
        itr = state_dict['itr']
        G.train()
        D.train()
        if G_ema is not None:
            G_ema.train()
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        metrics = {k: float(v) for k, v in train(x, y).items()}
        train_fns.check_finite(metrics, itr)
        train_log.log(itr, **metrics)
        if config['sv_log_interval'] > 0 and itr % config['sv_log_interval'] == 0:
            train_log.log(itr, **get_SVs(G, 'G'), **get_SVs(D, 'D'))
        if config['pbar'] == 'mine':
            print(', '.join([f'itr: {itr}'] + [f'{k} : {v:+4.3f}' for k, v in metrics.items()]),
                  end=' ')
        # Test before saving, so the saved state holds this iteration's best scores and a
        # resumed run takes the same best-checkpoint decisions as an uninterrupted one.
        if itr % config['test_every'] == 0:
            if config['G_eval_mode']:
                G.eval()
                if G_ema is not None:
                    G_ema.eval()  # the original forgot G_ema here (spec 12.1, item 10)
            sampler = eval_sampler(G, config, device, itr)
            which = train_fns.which_G(G, G_ema, config)
            sample = functools.partial(sampling.sample, which, sampler)
            train_fns.test(G, D, G_ema, G_optim, D_optim, sampler, state_dict, config, sample,
                           get_inception_metrics, experiment_name, test_log,
                           {'rng': rng_state(train_sampler)})
        if itr % config['save_every'] == 0 or (num_iters and itr == num_iters):
            if config['G_eval_mode']:
                print('Switchin G to eval mode...')
                G.eval()
                if G_ema is not None:
                    G_ema.eval()
            train_fns.save_and_sample(G, D, G_ema, G_optim, D_optim,
                                      eval_sampler(G, config, device, itr), fixed_z, fixed_y,
                                      state_dict, config, experiment_name,
                                      {'rng': rng_state(train_sampler)})
        if num_iters and itr >= num_iters:
            break
    if state_dict['itr'] < (num_iters or 0):
        print(f"\nThe data ran out before --num_iters {num_iters}: epoch {state_dict['epoch']} "
              f"reached --num_epochs {config['num_epochs']}")
    print(f"\nStopped at iteration {state_dict['itr']} ({time.time() - t_start:.1f} s)")


def get_SVs(net, prefix: str) -> dict:
    """Every SN singular-value buffer, named as the original's logs (spec 6.2)."""
    return {f'{prefix}_{key}'.replace('.', '_'): float(value[0])
            for key, value in net.state_dict().items() if 'sv' in key}


def main(argv: Optional[list] = None) -> None:
    try:
        config = utils.parse_config(argv)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    print(dict(config))
    run(config)


if __name__ == '__main__':
    main()
