"""Speed of the paper's configurations on random data: one JSON line per run.

    python bench.py --config i128                    # the fast path, defaults for this device
    python bench.py --config i128 --baseline         # plain float32 eager, as the original ran
    torchrun --nproc_per_node 8 bench.py --config i128   # DDP: images/s of all processes

Configs: `i128` (launch_BigGAN_bs256x8.sh's model, one accumulation), `deep128`
(launch_BigGAN_deep.sh's), `c10` (launch_cifar_ema.sh: batch 50, 4 D steps, EMA) and `sample`
(G_ema of i128 drawing images in eval mode, through sample.py's code). A training iteration is
what `train.py` runs: the D steps, the G step and the EMA update, through the same code. After a
warm-up (which compiles, with --compile: `first_iter_s` and `warmup_s` say how long it took),
the timed iterations run in blocks of --log_every (CUDA: 5, CPU and --baseline: 1, train.py's
default, unless given), each ending with the read-back of the losses that train.py makes; the
median block gives `s_per_iter`. The JSON line is printed as soon as the timing ends; then
`torch.utils.flop_counter.FlopCounterMode` counts the FLOPs of one more, eager, float32
iteration and the line is printed again with `tflops`, `gflop_per_iter` and `gflop_per_image`
(per image of the batch) filled in (the last line is the complete one; a failure in the count,
such as running out of memory, cannot lose the timing; --no_flops skips the count). On GPUs
`peak_reserved_gib` (the caching allocator's peak) sits beside the peak allocated.

`--baseline` times the same code with every speed feature off: float32, eager, the models' own
fused G_D, PyTorch's default Adam, noise copied from pageable memory and the losses read back
every iteration. Without it, each speed flag defaults per device (CUDA: bf16, channels_last,
compile; CPU: bf16 where oneDNN runs it natively, channels_last, no compile). `--ch N` sets
G_ch and D_ch to N: a quick run of the code path at a small width (scripts/gpu_check.sh
--dry-run), not a figure of the paper's models. `--train_flags '--DiffAugment color'` adds
train.py flags to the step: what a limited-data option costs
(scripts/utils/bench_limited_data.py compares each with the plain step).
"""
import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

import distributed
import flags
import sampling
import train
import train_fns
import utils

# The original's launch scripts (scripts/launch_*.sh), less what does not change the step: data,
# parallelism and bookkeeping flags. The benchmark runs one accumulation (--num_*_accumulations 1).
I128 = ('--dataset I128_hdf5 --num_G_accumulations 1 --num_D_accumulations 1 --num_D_steps 1 '
        '--G_lr 1e-4 --D_lr 4e-4 --D_B2 0.999 --G_B2 0.999 --G_attn 64 --D_attn 64 '
        '--G_nl inplace_relu --D_nl inplace_relu --SN_eps 1e-6 --BN_eps 1e-5 --adam_eps 1e-6 '
        '--G_ortho 0.0 --G_shared --G_init ortho --D_init ortho --hier --dim_z 120 '
        '--shared_dim 128 --G_eval_mode --G_ch 96 --D_ch 96 --ema --use_ema --ema_start 20000')
DEEP128 = ('--model BigGANdeep --dataset I128_hdf5 --num_G_accumulations 1 '
           '--num_D_accumulations 1 --num_D_steps 1 --G_lr 1e-4 --D_lr 4e-4 --D_B2 0.999 '
           '--G_B2 0.999 --G_attn 64 --D_attn 64 --G_ch 128 --D_ch 128 --G_depth 2 --D_depth 2 '
           '--G_nl inplace_relu --D_nl inplace_relu --SN_eps 1e-6 --BN_eps 1e-5 '
           '--adam_eps 1e-6 --G_ortho 0.0 --G_shared --G_init ortho --D_init ortho --hier '
           '--dim_z 128 --shared_dim 128 --ema --use_ema --ema_start 20000 --G_eval_mode')
C10 = ('--num_G_accumulations 1 --num_D_accumulations 1 --num_D_steps 4 --G_lr 2e-4 '
       '--D_lr 2e-4 --dataset C10 --G_ortho 0.0 --G_attn 0 --D_attn 0 --G_init N02 --D_init N02 '
       '--ema --use_ema --ema_start 1000')
CONFIGS = {'i128': I128, 'deep128': DEEP128, 'c10': C10, 'sample': I128}
# Per device: batch size, warm-up iterations, timed iterations, iterations per read-back.
DEFAULTS = {
    'cuda': {'batch': {'i128': 256, 'deep128': 256, 'c10': 50, 'sample': 256},
             'warmup': 5, 'iters': 30, 'log_every': 5},
    'cpu': {'batch': {'i128': 2, 'deep128': 2, 'c10': 8, 'sample': 8},
            'warmup': 1, 'iters': 3, 'log_every': 1},
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', required=True, choices=sorted(CONFIGS))
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--batch_size', type=int, default=0, help='per process (0: default)')
    parser.add_argument('--iters', type=int, default=0, help='timed iterations (0: default)')
    parser.add_argument('--warmup', type=int, default=-1, help='untimed iterations first')
    parser.add_argument('--log_every', type=int, default=0,
                        help='iterations per read-back of the losses (0: default)')
    parser.add_argument('--amp', choices=flags.choices_of(flags.rows()['amp']), default=None)
    parser.add_argument('--channels_last', action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument('--compile', action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument('--compile_mode', default='default',
                        choices=flags.choices_of(flags.rows()['compile_mode']))
    parser.add_argument('--baseline', action='store_true',
                        help='float32 eager with every speed feature off (the original as run)')
    parser.add_argument('--no_flops', action='store_true',
                        help='skip the FLOP count (one more eager float32 iteration)')
    parser.add_argument('--train_flags', default='',
                        help="more train.py flags for the step, e.g. '--DiffAugment color "
                             "--LeCam 0.3' (what an option costs per step)")
    parser.add_argument('--ch', type=int, default=0,
                        help='G_ch and D_ch (0: the config\'s; smaller: a quick smoke run)')
    args = parser.parse_args(argv)
    for name in ('batch_size', 'iters', 'log_every', 'ch'):
        if getattr(args, name) < 0:
            parser.error(f'--{name} must be >= 0 (0: the default for the device)')
    if args.baseline and (args.amp not in (None, 'none') or args.channels_last
                          or args.compile):
        parser.error('--baseline runs float32 eager: drop --amp/--channels_last/--compile')
    return args


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively (CUDA from Ampere on; AVX512-BF16 or AMX)."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def run_config(args: argparse.Namespace, device: torch.device) -> utils.Config:
    """The training config of `args.config` with this run's batch size and speed flags."""
    kind = 'cuda' if device.type == 'cuda' else 'cpu'
    if args.baseline:
        amp, channels_last, compile_ = 'none', False, False
    else:
        amp = args.amp or ('bf16' if bf16_is_native(device) else 'none')
        channels_last = True if args.channels_last is None else args.channels_last
        compile_ = kind == 'cuda' if args.compile is None else args.compile
    batch = args.batch_size or DEFAULTS[kind]['batch'][args.config]
    flags = CONFIGS[args.config].split() + ['--batch_size', str(batch), '--amp', amp,
                                            '--device', str(device),
                                            '--compile_mode', args.compile_mode]
    flags += ['--channels_last'] * channels_last + ['--compile'] * compile_
    if args.ch:
        flags += ['--G_ch', str(args.ch), '--D_ch', str(args.ch)]
    return utils.parse_config(flags + args.train_flags.split())


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = platform.processor() or 'CPU'
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        model = names[0] if names else model
    return f'{model} ({torch.get_num_threads()} threads)'


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------
# What is timed
# ------------------------------------------------------------------------------------------------

def training_step(config: dict, device: torch.device, baseline: bool):
    """(step, eager_step): one training iteration on random data, through train.py's code, and
    the same iteration eager in float32 (for the FLOP count)."""
    models = train.build_models(config, device, fast_adam=not baseline)
    extras = train.make_extras(config, device, models)  # the limited-data flags, if any
    G, D = models.G, models.D
    distributed.broadcast_states(G, D, models.G_ema)
    noise = sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'],
                                  device if baseline else torch.device('cpu'), seed=0)
    GD = models.GD
    if not baseline:
        noise = distributed.ShardedNoise(noise, device, distributed.rank(),
                                         distributed.world_size())
        # models.GD stays plain, for eager_step.
        GD = utils.model_module(config).G_D(G, D, augment=models.GD.augment)
        GD = distributed.wrap_for_training(GD, config, device)
    # Far into a run, so that every term with a start iteration (--LeCam_start) counts.
    state = {'itr': 10 ** 6}
    step = train_fns.GAN_training_function(
        dataclasses.replace(models, GD=GD), noise, state, config,
        precision=train_fns.Precision(config['amp'], device), extras=extras)
    eager = train_fns.GAN_training_function(models, noise, state, config, extras=extras)
    n = config['batch_size'] * config['num_D_steps'] * config['num_D_accumulations']
    x = torch.rand(n, 3, config['resolution'], config['resolution']) * 2 - 1
    y = torch.randint(0, config['n_classes'], (n,))
    x, y = train_fns.prepare_batch(x, y, device, config['channels_last'])
    G.train()
    D.train()
    return (lambda: step(x, y)), (lambda: eager(x, y))


def sampling_step(config: dict, device: torch.device, baseline: bool):
    """(step, eager_step): G_ema drawing a batch in eval mode, as sample.py and the metrics do."""
    G_ema = train.build_models(config, device).G_ema
    G_ema.eval()
    noise = sampling.NoiseSampler(G_ema.dim_z, config['n_classes'], config['G_batch_size'],
                                  device, seed=0)
    draw = G_ema if baseline else sampling.fast_G(G_ema, config)  # what sample.py draws from

    def step():
        return {'images': sampling.sample(draw, noise)[0]}

    def eager_step():
        return sampling.sample(G_ema, noise)
    return step, eager_step


def time_steps(step: Callable[[], Dict[str, torch.Tensor]], device: torch.device, warmup: int,
               iters: int, log_every: int) -> Tuple[List[float], List[float]]:
    """(blocks, warm-up): seconds per iteration of each block of `log_every` timed iterations,
    and the seconds of each warm-up iteration (the first compiles, with --compile). A block
    ends where train.py reads the losses back (which waits for the device)."""
    warmup_seconds = []
    for _ in range(warmup):
        start = time.perf_counter()
        [float(v.float().mean()) for v in step().values()]
        warmup_seconds.append(time.perf_counter() - start)
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(max(iters // log_every, 1)):
        start = time.perf_counter()
        outputs = [step() for _ in range(log_every)]
        [float(v.float().mean()) for out in outputs for v in out.values()]  # the read-back
        seconds.append((time.perf_counter() - start) / log_every)
    return seconds, warmup_seconds


def count_flops(eager_step: Callable) -> float:
    with FlopCounterMode(display=False) as counter:
        eager_step()
    return float(counter.get_total_flops())


def peak_memory_gib(device: torch.device) -> Tuple[float, Optional[float]]:
    """(allocated, reserved): the peak GPU memory allocated while timing and the peak the
    caching allocator reserved (what the card must have); on the CPU, the process's peak
    resident size, and None."""
    if device.type == 'cuda':
        return (torch.cuda.max_memory_allocated(device) / 2 ** 30,
                torch.cuda.max_memory_reserved(device) / 2 ** 30)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, None  # KiB on Linux


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    try:
        device = distributed.setup(utils.get_device({'device': args.device}))
        if args.baseline and distributed.world_size() > 1:
            raise ValueError('--baseline times one process (the original ran one); for '
                             'scaling, compare torchrun runs with one run of the default path')
        config = run_config(args, device)
        distributed.check_flags(config, device)
    except ValueError as error:
        distributed.teardown(wait=False)
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    finished = False
    try:
        utils.setup_torch(utils.Config({**config, 'device': str(device)}))
        kind = 'cuda' if device.type == 'cuda' else 'cpu'
        warmup = args.warmup if args.warmup >= 0 else DEFAULTS[kind]['warmup']
        iters = args.iters or DEFAULTS[kind]['iters']
        # --baseline: every iteration, as the original.
        log_every = 1 if args.baseline else (args.log_every or DEFAULTS[kind]['log_every'])
        log_every = min(log_every, iters)
        build = sampling_step if args.config == 'sample' else training_step
        start = time.perf_counter()
        step, eager_step = build(config, device, args.baseline)
        setup_s = time.perf_counter() - start
        seconds, warmup_seconds = time_steps(step, device, warmup, iters, log_every)
        memory, reserved = peak_memory_gib(device)
        s_per_iter = statistics.median(seconds)
        batch = config['G_batch_size'] if args.config == 'sample' else config['batch_size']
        images = batch * distributed.world_size()
        record = {
            'config': args.config, 'device': device_name(device),
            'images_per_s': round(images / s_per_iter, 2),
            's_per_iter': round(s_per_iter, 4), 'peak_mem_gib': round(memory, 2),
            'peak_reserved_gib': None if reserved is None else round(reserved, 2),
            'tflops': None, 'batch_size': batch, 'processes': distributed.world_size(),
            'baseline': args.baseline, 'amp': config['amp'],
            'channels_last': config['channels_last'], 'compile': config['compile'],
            'compile_mode': config['compile_mode'], 'G_ch': config['G_ch'],
            'D_ch': config['D_ch'], 'iters': len(seconds) * log_every, 'log_every': log_every,
            'setup_s': round(setup_s, 2),
            'first_iter_s': round(warmup_seconds[0], 3) if warmup_seconds else None,
            'warmup_s': round(sum(warmup_seconds), 3), 'warmup': len(warmup_seconds),
            'gflop_per_iter': None, 'gflop_per_image': None, 'torch': torch.__version__,
            'train_flags': args.train_flags}
        # The timing first: the count runs one more eager float32 step, which may not fit.
        if distributed.is_main():
            print(json.dumps(record), flush=True)
        if not args.no_flops:
            flops = count_flops(eager_step) * distributed.world_size()
            record.update(tflops=round(flops / s_per_iter / 1e12, 3),
                          gflop_per_iter=round(flops / 1e9, 2),
                          gflop_per_image=round(flops / 1e9 / images, 2))
            if distributed.is_main():
                print(json.dumps(record), flush=True)
        finished = True
        return record
    finally:
        distributed.teardown(wait=finished)


if __name__ == '__main__':
    main()
