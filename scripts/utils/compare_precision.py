"""Does the fast path train as well as float32? Two runs of train.py with the same flags and seed,
one with --amp none and one with --amp bf16 (or the --amp given), then their losses side by side.

    python scripts/utils/compare_precision.py --num_iters 300
    python scripts/utils/compare_precision.py --amp bf16 -- --G_ch 16 --D_ch 16  # extra flags

By default: Fashion-MNIST (32 x 32, 10 classes) with a small BigGAN. Prints one JSON line per
run (mean losses over the first and the last --window iterations, and the run's time) and one
with the relative differences of the last-window means; logs, checkpoints and samples go to
--out. GAN losses are noisy and the two runs drift apart after a few iterations (bf16 rounding
changes every update), so "comparable" means the same level and trend, not the same numbers.
"""
import argparse
import json
import os
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import train  # noqa: E402
import utils  # noqa: E402

DEMO = ['--dataset', 'FMNIST', '--G_ch', '8', '--D_ch', '8', '--G_attn', '0', '--D_attn', '0',
        '--dim_z', '32', '--batch_size', '32', '--num_D_steps', '2', '--G_lr', '2e-4',
        '--D_lr', '2e-4', '--num_workers', '0', '--shuffle', '--pbar', 'none',
        '--test_every', '1000000', '--sv_log_interval', '0', '--num_save_copies', '0',
        '--G_init', 'N02', '--D_init', 'N02']
LOSSES = ('G_loss', 'D_loss_real', 'D_loss_fake')


def read_log(folder: str, name: str) -> List[float]:
    with open(os.path.join(folder, f'{name}.log')) as f:
        return [float(line.split(':', 1)[1]) for line in f if ':' in line]


def summarize(folder: str, window: int) -> Dict[str, Dict[str, float]]:
    out = {}
    for name in LOSSES:
        values = read_log(folder, name)
        out[name] = {'first': sum(values[:window]) / len(values[:window]),
                     'last': sum(values[-window:]) / len(values[-window:])}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--amp', default='bf16', choices=('bf16', 'fp16'))
    parser.add_argument('--num_iters', type=int, default=300)
    parser.add_argument('--window', type=int, default=50, help='iterations averaged')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='precision_check')
    parser.add_argument('--data_root', default='data')
    parser.add_argument('extra', nargs='*', help='more train.py flags (after --)')
    args = parser.parse_args(argv)
    summaries = {}
    for amp in ('none', args.amp):
        root = os.path.join(args.out, amp)
        flags = DEMO + ['--data_root', args.data_root, '--num_iters', str(args.num_iters),
                        '--seed', str(args.seed), '--amp', amp, '--save_every',
                        str(args.num_iters)] + args.extra
        for name in ('weights', 'logs', 'samples'):
            flags += [f'--{name}_root', os.path.join(root, name)]
        config = utils.parse_config(flags)
        start = time.time()
        train.run(config)
        seconds = time.time() - start
        logs = os.path.join(config['logs_root'], utils.experiment_name(config))
        summaries[amp] = summarize(logs, args.window)
        print(json.dumps({'amp': amp, 'iters': args.num_iters, 'seconds': round(seconds, 1),
                          'losses': summaries[amp]}), flush=True)
    fp32, fast = summaries['none'], summaries[args.amp]
    print(json.dumps({'relative_difference_last_window': {
        name: round(abs(fast[name]['last'] - fp32[name]['last'])
                    / max(abs(fp32[name]['last']), 1e-8), 4) for name in LOSSES}}))


if __name__ == '__main__':
    main()
