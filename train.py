"""Train BigGAN or BigGAN-deep: `python train.py --dataset C10 ...` (the original's flags).

`run(config)` wires the read-only config into the models, optimizers, data, metrics and the
training step, then loops until `--num_iters` or `--num_epochs`, saving, sampling and testing
on schedule. A resumed run (`--resume`) continues bit for bit: the weights, optimizers, RNG
states and data position all come back from the checkpoint.
"""
import dataclasses
import functools
import os
import sys
import time
import uuid
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

import atomic
import checkpoints
import datasets
import distributed
import finetune
import loggers
import preemption
import regularizers
import run_trackers
import sampling
import train_fns
import utils
from sync_batchnorm import local_statistics

# Elapsed time for --time_limit and the final report: immune to wall-clock jumps.
clock = time.monotonic
TIME_CHECK_EVERY = 10  # iterations between the ranks' --time_limit and signal decisions (torchrun)
# Flags whose change on --resume is allowed but worth a line: the run goes on differently.
NOTED_ON_RESUME = ('batch_size', 'dataset', 'data_root', 'seed', 'loss', 'num_D_steps')


def make_optimizers(G, D, config: dict, device: torch.device, fast: bool = True):
    """Adam for G and D with the original's hyper-parameters: fused on CUDA (one kernel for all
    tensors), the multi-tensor (foreach) form elsewhere; `fast=False`: PyTorch's defaults (what
    the original's code gets, for bench.py --baseline)."""
    fast = ({'fused': True} if device.type == 'cuda' else {'foreach': True}) if fast else {}
    G_optim = torch.optim.Adam(G.parameters(), lr=config['G_lr'],
                               betas=(config['G_B1'], config['G_B2']), weight_decay=0,
                               eps=config['adam_eps'], **fast)
    D_optim = torch.optim.Adam(D.parameters(), lr=config['D_lr'],
                               betas=(config['D_B1'], config['D_B2']), weight_decay=0,
                               eps=config['adam_eps'], **fast)
    return G_optim, D_optim


def build_models(config: dict, device: torch.device,
                 fast_adam: bool = True) -> train_fns.Models:
    """G, D, their optimizers, the fused G_D, and G_ema and its EMA (None without --ema), on
    `device` and in the memory layout --channels_last asks for (set before the optimizers see
    the parameters). The models take the whole config, as the original's did."""
    model = utils.model_module(config)
    G = model.Generator(**config).to(device)
    D = model.Discriminator(**config).to(device)
    G_ema, ema = None, None
    if config['ema']:
        distributed.main_process_print(f"Preparing EMA for G with decay of "
                                       f"{config['ema_decay']}")
        G_ema = model.Generator(**{**config, 'skip_init': True}).to(device)
    if config['channels_last']:
        for net in (G, D, G_ema):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    if G_ema is not None:
        ema = train_fns.EMA(G, G_ema, config['ema_decay'], config['ema_start'])
    G_optim, D_optim = make_optimizers(G, D, config, device, fast_adam)
    return train_fns.Models(G, D, G_optim, D_optim, model.G_D(G, D), G_ema, ema)


def saved_config(config: dict) -> dict:
    """The config as stored in state_dict.pth: plain values only (the original stored nn.ReLU
    objects, which the original code re-derives from G_nl/D_nl on load anyway)."""
    return {**dict(config), 'G_activation': config['G_nl'], 'D_activation': config['D_nl']}


def eval_sampler(G, config: dict, device, itr: int) -> sampling.NoiseSampler:
    """A sampler for sheets and metrics, seeded from (seed, itr) (and the rank, under several
    processes, so that each draws its own share of the metrics' images): it never touches the
    training noise stream, so saving and testing do not change what training sees."""
    entropy = [config['seed'], itr, 1]
    if distributed.world_size() > 1:
        entropy.append(distributed.rank())
    seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    return sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'], device,
                                 seed=seed)


class _Silent:
    """The loggers of ranks other than 0: they write nothing."""

    def log(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def run(config: dict, stop: Optional[preemption.StopSignals] = None) -> dict:
    """The whole training program, in one process of possibly several (torchrun). Returns the
    final training state. With `stop` (the signal handlers of --save_on_signal), a signal
    ends the loop after its iteration with a checkpoint."""
    device = distributed.setup(utils.get_device(config))
    finished = False
    try:
        distributed.check_flags(config, device)
        state = _train(config, device, stop)
        finished = True
        return state
    finally:
        distributed.teardown(wait=finished)


def take_folder(config: dict, experiment_name: str) -> Optional[atomic.RunLock]:
    """Rank 0: hold the experiment's weights folder for this run (one writer at a time), finish
    a save that a crash interrupted, and refuse to start afresh over a checkpoint. Every rank
    waits for it before reading the folder."""
    lock = None
    if distributed.is_main():
        folder = os.path.join(config['weights_root'], experiment_name)
        if config['resume'] and not os.path.isdir(folder):
            # Before the lock makes the folder: the error lists the experiments there are.
            checkpoints.checkpoint_folder(config['weights_root'], experiment_name)
        # The wait covers a trainer that is ending (its lock goes with its process).
        lock = atomic.RunLock(folder, 'train.py').acquire(wait=5.0)
        try:
            for note in checkpoints.recover(folder):
                print(note)
            if not (config['resume'] or config['overwrite']):
                existing = [f for f in ('state_dict.pth', 'G.pth')
                            if os.path.isfile(os.path.join(folder, f))]
                if existing:
                    raise ValueError(f'{folder!r} already holds a checkpoint '
                                     f'({existing[0]}): add --resume to continue that run, '
                                     f'or --overwrite to start it again from scratch (its '
                                     f'checkpoints and logs are replaced)')
        except BaseException:
            lock.release()
            raise
    distributed.barrier()
    return lock


def apply_optimizer_flags(config: dict, models: train_fns.Models) -> None:
    """The learning rates, betas and eps of the command line replace a resumed checkpoint's
    (the original kept the saved ones silently); each change is printed."""
    for net, optimizer in (('G', models.G_optim), ('D', models.D_optim)):
        wanted = {'lr': config[f'{net}_lr'], 'betas': (config[f'{net}_B1'], config[f'{net}_B2']),
                  'eps': config['adam_eps'], 'weight_decay': 0}
        for group in optimizer.param_groups:
            for key, value in wanted.items():
                have = tuple(group[key]) if key == 'betas' else group[key]
                if have != value:
                    distributed.main_process_print(
                        f'Note: {net} optimizer {key} {have} from the checkpoint becomes '
                        f'{value} (the command line)')
                    group[key] = value


def make_extras(config: dict, device: torch.device, models: train_fns.Models,
                loader=None) -> Optional[regularizers.DataEfficient]:
    """The limited-data flags' augmentations and terms (None when all are off); the fused
    G_D applies the augmentations to everything D sees. `loader` gives the iterations per
    epoch (top-k's schedule; 1 without one, as bench.py times a step)."""
    if not regularizers.wanted(config):
        return None
    per_epoch = (len(loader.dataset) // distributed.world_size() // loader.batch_size
                 if loader is not None else 1)
    extras = regularizers.DataEfficient(
        config, device, rank=distributed.rank(), iters_per_epoch=per_epoch,
        mean_over_ranks=distributed.mean_over_ranks, sum_over_ranks=distributed.sum_over_ranks)
    models.GD.augment = extras.augmenter
    return extras


def resume(config: dict, experiment_name: str, models: train_fns.Models, state_dict: dict,
           noise: sampling.NoiseSampler,
           extras: Optional[regularizers.DataEfficient] = None) -> None:
    """Load the checkpoint on every rank and put back the random states saved with it."""
    saved = checkpoints.load_weights(models.G, models.D, state_dict, config['weights_root'],
                                     experiment_name, config['load_weights'] or None,
                                     models.G_ema, G_optim=models.G_optim,
                                     D_optim=models.D_optim)
    sampling.restore_rng(saved.get('rng'), noise)
    if extras is not None:
        extras.load_state_dict(saved.get('data_efficient') or {})
    apply_optimizer_flags(config, models)
    train_fns.match_layout(models.G_optim)
    train_fns.match_layout(models.D_optim)


def make_loggers(config: dict, experiment_name: str, state_dict: dict):
    """The training and test loggers, the metadata file and the run trackers (--tensorboard,
    --wandb), which the loggers feed; silent loggers and no trackers on other ranks."""
    if not distributed.is_main():
        return _Silent(), _Silent(), run_trackers.Trackers()
    start_itr = state_dict['itr']
    train_log = loggers.MyLogger(os.path.join(config['logs_root'], experiment_name),
                                 reinitialize=not config['resume'],
                                 logstyle=config['logstyle'], start_itr=start_itr)
    test_log = loggers.MetricsLogger(os.path.join(config['logs_root'],
                                                  f'{experiment_name}_log.jsonl'),
                                     reinitialize=not config['resume'], start_itr=start_itr)
    loggers.write_metadata(config['logs_root'], experiment_name, config, state_dict)
    trackers = run_trackers.open_trackers(config, experiment_name, state_dict)
    if trackers:
        train_log = run_trackers.TrackedTrainLog(train_log, trackers)
        test_log = run_trackers.TrackedTestLog(test_log, trackers)
    return train_log, test_log, trackers


def make_loader(config: dict, start_itr: int):
    """This rank's loader: batches of every D step and accumulation of one iteration, from
    iteration `start_itr` on."""
    loader_batch = config['batch_size'] * config['num_D_steps'] * config['num_D_accumulations']
    return datasets.get_data_loaders(
        config['dataset'], data_root=config['data_root'], augment=config['augment'],
        batch_size=loader_batch, num_workers=config['num_workers'], shuffle=config['shuffle'],
        load_in_mem=config['load_in_mem'], pin_memory=config['pin_memory'], drop_last=True,
        start_itr=start_itr, num_epochs=config['num_epochs'],
        use_multiepoch_sampler=config['use_multiepoch_sampler'],
        resolution=config['resolution'], seed=config['seed'], rank=distributed.rank(),
        world_size=distributed.world_size(), data_fraction=config['data_fraction'],
        num_samples=config['num_samples'], subset_seed=config['subset_seed'])[0]


@dataclasses.dataclass
class Run:
    """What the iteration loop works with, built by `_train`."""
    config: dict
    models: train_fns.Models
    loader: Any
    train: Callable[[torch.Tensor, torch.Tensor], dict]  # one iteration (train_fns)
    noise: sampling.NoiseSampler  # the training noise, whose state checkpoints keep
    state_dict: dict
    train_log: Any
    test_log: Any
    get_inception_metrics: Callable
    fixed_z: torch.Tensor
    fixed_y: torch.Tensor
    experiment_name: str
    device: torch.device
    last_itr: int
    draw: torch.nn.Module  # the G that sheets and metrics sample: sampling.FastG on the fast path
    trackers: run_trackers.Trackers  # --tensorboard, --wandb (rank 0)
    stop: Optional[preemption.StopSignals] = None  # --save_on_signal's handlers (main only)
    extras: Optional[regularizers.DataEfficient] = None  # the limited-data flags' state

    def training_state(self) -> dict:
        """What a checkpoint keeps beside the weights: the noise's RNG state, and the
        limited-data flags' state."""
        state = {'rng': sampling.rng_state(self.noise)}
        if self.extras is not None:
            state['data_efficient'] = self.extras.state_dict()
        return state


def preflight(config: dict) -> None:
    """Build G and D on the meta device: every argument check of the models, in milliseconds,
    before minutes of building and initializing the real ones."""
    model = utils.model_module(config)
    with torch.device('meta'):
        G = model.Generator(**{**config, 'skip_init': True})
        D = model.Discriminator(**{**config, 'skip_init': True})
    finetune.check_freeze(G, D, config)
    finetune.check_source(config)
    finetune.check_copy(config, G, D)
    if config['finetune_from'] and config['resume']:
        distributed.main_process_print('Note: --resume continues from the run\'s own checkpoint;'
                                       ' --finetune_from is used at a fresh start only')


def check_resume(config: dict, saved: dict, folder: str) -> None:
    """Before anything is built: the flags that decide which files a save writes (--ema: the
    G_ema file) must be the run's, so that no save leaves a set mixed with an older file; a
    changed batch size, data set, seed, loss or number of D steps is one note each."""
    slot = config['load_weights'] or None
    has_ema = bool(saved['config'].get('ema')) or os.path.isfile(
        os.path.join(folder, checkpoints.file_name('G_ema', slot)))
    if has_ema != bool(config['ema']):
        if has_ema:
            raise ValueError(f"--resume: the run in {folder!r} was trained with --ema (its "
                             f"checkpoint holds {checkpoints.file_name('G_ema', slot)}); add "
                             f"--ema to continue it (a save without would leave an older "
                             f"G_ema beside the new files)")
        raise ValueError(f'--resume: the run in {folder!r} was trained without --ema (its '
                         f'checkpoint has no G_ema); drop --ema to continue it, or start a '
                         f'new run (--experiment_name) with it')
    for key in NOTED_ON_RESUME:
        if key in saved['config'] and saved['config'][key] != config[key]:
            distributed.main_process_print(f"Note: --{key} {saved['config'][key]} of the "
                                           f"checkpoint's run becomes {config[key]} (the "
                                           f"command line)")


def _train(config: dict, device: torch.device,
           stop: Optional[preemption.StopSignals] = None) -> dict:
    """`run` in this process, on `device`."""
    utils.setup_torch(utils.Config({**config, 'device': str(device)}))
    say = distributed.main_process_print
    if distributed.is_main():
        utils.prepare_root(config)
    experiment_name = utils.experiment_name(config)
    say(f'Experiment name is {experiment_name}')
    preflight(config)
    # A run of --num_iters knows now whether it will test: its Inception weights and moments
    # are checked before the folder is taken, so a bad one leaves nothing behind.
    metrics = prepare_metrics(config, device, config['num_iters']) if config['num_iters'] else None
    lock = take_folder(config, experiment_name)
    try:
        return _train_locked(config, device, experiment_name, metrics, stop)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(config: dict, device: torch.device, experiment_name: str,
                  get_inception_metrics: Optional[Callable] = None,
                  stop: Optional[preemption.StopSignals] = None) -> dict:
    """`_train` holding the weights folder. Everything that can fail on bad input (the data,
    the checkpoint, the metrics' files) is checked before the models are built."""
    say = distributed.main_process_print
    start_itr = 0
    if config['resume']:
        saved, path = checkpoints.read_state(config['weights_root'], experiment_name,
                                             config['load_weights'] or None)
        check_resume(config, saved, os.path.dirname(path))
        start_itr = saved['itr']
        if config['num_iters'] and start_itr >= config['num_iters']:
            # Not an error: re-running a finished job's command line is common on clusters.
            say(f"Nothing to train: the checkpoint is at iteration {start_itr}, which reaches "
                f"--num_iters {config['num_iters']} (raise --num_iters to train on)")
            return saved
    loader = make_loader(config, start_itr)
    subset = config['data_fraction'] < 1 or config['num_samples']
    data = datasets.identity(config['dataset'], config['data_root'], config['n_classes'],
                             len(loader.dataset), config['subset_seed'] if subset else None)
    if config['resume']:
        datasets.check_same_data(saved, data, path)
    last_itr = planned_iters(config, loader)
    if get_inception_metrics is None:
        get_inception_metrics = prepare_metrics(config, device, last_itr)
    models = build_models(config, device)
    classes = train_fns.sheet_classes(config, device)
    if classes is not None and config['sheet_classes'] < 0:
        say(f'Note: the class sheets at each save show the first {len(classes)} of the '
            f"{config['n_classes']} classes on the CPU (--sheet_classes 0 for all)")
    say(f'Number of params in G: {utils.count_parameters(models.G)} D: '
        f'{utils.count_parameters(models.D)}')

    # The run id (a resume takes the checkpoint's) makes the set ids of two runs differ even
    # at the same seed and iteration: a file of another run is refused at load.
    state_dict = {'itr': 0, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0.0,
                  'best_FID': 999999.0, 'config': saved_config(config), 'data': data,
                  checkpoints.RUN_KEY: uuid.uuid4().hex[:16]}
    if config['wandb']:
        state_dict['wandb_id'] = None  # the W&B run's, kept by the checkpoints (run_trackers)
    # Noise is drawn on the CPU (the same numbers on any device) and every rank draws the whole
    # batch's, so rank 0's saved sampler state resumes every rank.
    noise = sampling.NoiseSampler(models.G.dim_z, config['n_classes'], config['G_batch_size'],
                                  torch.device('cpu'), seed=config['seed'])
    extras = make_extras(config, device, models, loader)
    if config['resume']:
        resume(config, experiment_name, models, state_dict, noise, extras)
    elif config['finetune_from']:
        finetune.start_from(config, models, say)
    if finetune.freeze(models.G, models.D, config):
        say(f"Frozen: the first {config['freeze_G']} blocks of G, {config['freeze_D']} of D")
    distributed.broadcast_states(models.G, models.D, models.G_ema)
    train_log, test_log, trackers = make_loggers(config, experiment_name, state_dict)
    fixed_z, fixed_y = sampling.NoiseSampler(models.G.dim_z, config['n_classes'],
                                             config['G_batch_size'], device,
                                             seed=config['seed'] + 1).sample()
    if config['which_train_fn'] == 'GAN':
        # The step runs the fused G_D wrapped for this process (compiled, DDP); the plain
        # models.GD stays for whatever else needs it.
        train = train_fns.GAN_training_function(
            dataclasses.replace(models, GD=distributed.wrap_for_training(models.GD, config,
                                                                          device)),
            distributed.ShardedNoise(noise, device, distributed.rank(),
                                     distributed.world_size()),
            state_dict, config, precision=train_fns.Precision(config['amp'], device),
            extras=extras)
    else:
        train = train_fns.dummy_training_function()
    run = Run(config, models, loader, train, noise, state_dict, train_log, test_log,
              get_inception_metrics, fixed_z, fixed_y, experiment_name, device, last_itr,
              sampling.fast_G(train_fns.which_G(models.G, models.G_ema, config), config),
              trackers, stop, extras)
    say(f'Beginning training at epoch {state_dict["epoch"]}, iteration {state_dict["itr"]}...')
    try:
        loop(run)
    finally:
        train_log.close()
        trackers.close()
    return state_dict


def planned_iters(config: dict, loader) -> int:
    """The iteration at which this run will stop: --num_iters, else the end of the data."""
    if config['num_iters']:
        return config['num_iters']
    if config['use_multiepoch_sampler']:
        return loader.sampler.start_itr + len(loader)
    return config['num_epochs'] * loader.sampler.batches_per_epoch


def prepare_metrics(config: dict, device, last_itr: int):
    """IS/FID (KID, precision / recall) for test(). When a test falls within the run, the
    Inception weights load and the moments file is checked now, before anything is built, so
    a missing or wrong one fails at start-up, not at the first test."""
    import inception_utils
    if config['test_every'] > last_itr:
        def no_tests(*args, **kwargs):
            raise RuntimeError('no test was planned in this run (--test_every is beyond its '
                               'last iteration)')
        return no_tests
    if config['fmnist_scorer']:
        import fmnist_scorer
        return fmnist_scorer.FMNISTMetrics(config['data_root'],
                                           progress=distributed.is_main())
    # --parallel spreads the Inception net over the visible GPUs only in a single process; under
    # torchrun each process keeps to its own GPU.
    parallel = config['parallel'] and distributed.world_size() == 1
    return inception_utils.prepare_inception_metrics(
        config['dataset'], parallel, config['no_fid'],
        moments_path=config['moments_path'] or None, inception=config['inception'],
        inception_weights=config['inception_weights'] or None, device=device,
        use_kid=config['use_kid'], use_prdc=config['use_prdc'],
        use_intra_fid=config['use_intra_fid'],
        resolution=config['resolution'], start_up=True)


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


def loop(run: Run) -> None:
    """The iteration loop: train, log, test, save and sample. Every rank runs it; rank 0 alone
    shows progress and writes (the others hold silent loggers)."""
    config, state_dict, models = run.config, run.state_dict, run.models
    num_iters = config['num_iters']
    main = distributed.is_main()
    batches = _batches(run.loader, config, state_dict)
    # A run that --time_limit stops, before --num_iters or the data's end, has no known end.
    timed = bool(config['time_limit']) and not num_iters
    if config['pbar'] == 'tqdm' and main:
        batches = tqdm(batches, total=None if timed else run.last_itr, initial=state_dict['itr'],
                       dynamic_ncols=True,
                       desc=f"--time_limit {config['time_limit']:g} min" if timed else None)
    elif config['pbar'] == 'mine' and main:
        batches = loggers.progress(batches, total=run.last_itr, start=state_dict['itr'],
                                   displaytype='s1k' if config['use_multiepoch_sampler']
                                   else 'eta')
    log = loggers.DeferredLog(run.train_log, config['log_every'],
                              show=config['pbar'] == 'mine' and main)
    t_start = clock()
    time_limit = config['time_limit'] * 60
    out_of_time = signalled = False
    stop = run.stop if run.stop is not None and run.stop.numbers else None
    last_saved = state_dict['itr']
    for x, y in batches:
        if num_iters and state_dict['itr'] >= num_iters:
            break
        state_dict['itr'] += 1
        itr = state_dict['itr']
        _set_mode(True, models.G, models.D, models.G_ema)
        if config['unconditional']:
            y = torch.zeros_like(y)  # one class: the models' class parameters are a constant
        x, y = train_fns.prepare_batch(x, y, run.device, config['channels_last'])
        log.add(itr, run.train(x, y))
        if config['sv_log_interval'] > 0 and itr % config['sv_log_interval'] == 0:
            log.add(itr, {**loggers.get_SVs(models.G, 'G'), **loggers.get_SVs(models.D, 'D')},
                    losses=False)
        # Test before saving, so the saved state holds this iteration's best scores and a
        # resumed run takes the same best-checkpoint decisions as an uninterrupted one.
        if itr % config['test_every'] == 0:
            log.flush()
            _test(run, itr)
        # Every rank stops once any rank's clock has passed the limit, so all stop together.
        # Under several processes the ranks decide every TIME_CHECK_EVERY iterations: the
        # decision is an all-reduce the host waits for, which would stall every step.
        if time_limit and (distributed.world_size() == 1 or itr % TIME_CHECK_EVERY == 0):
            out_of_time = distributed.any_rank(clock() - t_start >= time_limit, run.device)
        # A stop signal, likewise: the ranks agree on which (the largest number any caught).
        if stop and (distributed.world_size() == 1 or itr % TIME_CHECK_EVERY == 0):
            signum = distributed.max_over_ranks(stop.signum or 0, run.device)
            if signum:
                stop.signum, signalled = stop.signum or signum, True
        if (itr % config['save_every'] == 0 or (num_iters and itr == num_iters)
                or out_of_time or signalled):
            log.flush()
            _save(run, itr)
            last_saved = itr
        if (num_iters and itr >= num_iters) or out_of_time or signalled:
            break
    log.flush()
    if state_dict['itr'] > last_saved:
        # The data ran out (--num_epochs) between saves: the original lost those iterations.
        _save(run, state_dict['itr'])
    if main:
        if signalled:
            print(f'\n{stop.name} received: saved the checkpoint of iteration {state_dict["itr"]}')
        elif out_of_time:
            print(f"\n--time_limit {config['time_limit']} (minutes) reached")
        elif state_dict['itr'] < (num_iters or 0):
            print(f"\nThe data ran out before --num_iters {num_iters}: epoch "
                  f"{state_dict['epoch']} reached --num_epochs {config['num_epochs']}")
        print(f"\nStopped at iteration {state_dict['itr']} ({clock() - t_start:.1f} s)")


def _test(run: Run, itr: int) -> None:
    """IS/FID (and best copies) at iteration `itr`, on every rank."""
    config, models = run.config, run.models
    if config['G_eval_mode']:
        # Both nets: the original forgot G_ema here.
        _set_mode(False, models.G, models.G_ema)
    sampler = eval_sampler(models.G, config, run.device, itr)
    sample = functools.partial(sampling.sample, run.draw, sampler)
    train_fns.test(models, sampler, run.state_dict, config, sample, run.get_inception_metrics,
                   run.experiment_name, run.test_log, training_state=run.training_state())


def _save(run: Run, itr: int) -> None:
    """Checkpoint and sheets at iteration `itr`: rank 0 writes, every rank waits for it."""
    config, models = run.config, run.models
    main = distributed.is_main()
    if config['G_eval_mode']:
        if main:
            print('Switchin G to eval mode...')
        _set_mode(False, models.G, models.G_ema)
    sheets = []
    if main:
        # Rank 0 samples alone: cross-replica BN must not wait for the other ranks.
        with local_statistics():
            sheets = train_fns.save_and_sample(
                models, eval_sampler(models.G, config, run.device, itr), run.fixed_z,
                run.fixed_y, run.state_dict, config, run.experiment_name, draw=run.draw,
                training_state=run.training_state())
        if run.trackers:
            run.trackers.scalars(itr, {f'lr/{net}': optimizer.param_groups[0]['lr'] for
                                       net, optimizer in (('G', models.G_optim),
                                                          ('D', models.D_optim))})
            run.trackers.images(itr, sheets)
    distributed.barrier()


def _set_mode(training: bool, *nets) -> None:
    """Train or eval mode for each net given (None, where there is no G_ema, is skipped)."""
    for net in nets:
        if net is not None:
            net.train(training)


def main(argv: Optional[list] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    with utils.exit_on_user_error():
        config = utils.parse_config(argv)
        distributed.check_flags(config, utils.get_device(config))
        name = utils.experiment_name(config)  # for the resume line of a stop
    if os.environ.get('RANK', '0') == '0':  # torchrun starts one process per device
        print(dict(config))
    with preemption.StopSignals(config['save_on_signal']) as stop:
        try:
            with utils.exit_on_user_error():
                run(config, stop)
        except KeyboardInterrupt:
            print(f'\n{preemption.left_behind(config, name, argv)}', file=sys.stderr)
            sys.exit(130)
        except preemption.Preempted as second:
            print(f'\n{preemption.left_behind(config, name, argv, str(second))}',
                  file=sys.stderr)
            sys.exit(preemption.exit_status(second.signum))
    if stop.signum:
        how = f'{stop.name} received'
        print(f'\n{preemption.left_behind(config, name, argv, how)}', file=sys.stderr)
        sys.exit(preemption.exit_status(stop.signum))

if __name__ == '__main__':
    main()
