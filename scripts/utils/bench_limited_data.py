"""What each limited-data option costs per training step, side by side with the plain step.

    python scripts/utils/bench_limited_data.py --config c10 --rounds 3
    python scripts/utils/bench_limited_data.py --config c10 --device cuda --rounds 5

Each round times the plain step and then every option (bench.py's training step, with the
option's train.py flags), one after another in this process; an option's cost is its seconds
per iteration over the plain step's of the same round, the median over rounds (so that a
machine that speeds up or slows down between rounds does not bias it). A first, untimed plain
step pays the process's one-time costs. Prints the table, and one JSON line per option on
stderr.
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import bench  # noqa: E402
import utils  # noqa: E402

OPTIONS = {
    'plain step': '',
    'DiffAugment color': '--DiffAugment color',
    'DiffAugment translation': '--DiffAugment translation',
    'DiffAugment cutout': '--DiffAugment cutout',
    'DiffAugment all three': '--DiffAugment color,translation,cutout',
    'ADA': '--ADA',
    'LeCam': '--LeCam 0.3',
    'CR': '--CR 10',
    'bCR (reals and fakes)': '--bCR_real 10 --bCR_fake 10',
    'zCR (D and G)': '--zCR_dis 5 --zCR_gen 0.5',
    'top-k': '--topk',
    'mirror_augment': '--mirror_augment',
    'DiffAugment + LeCam': '--DiffAugment translation,cutout --LeCam 0.3',
}


def time_option(flags: str, args: argparse.Namespace) -> dict:
    """bench.py's record of one option (its printing silenced)."""
    argv = ['--config', args.config, '--device', args.device, '--no_flops',
            f'--train_flags={flags}']
    for name in ('batch_size', 'iters', 'ch'):
        if getattr(args, name):
            argv += [f'--{name}', str(getattr(args, name))]
    with contextlib.redirect_stdout(io.StringIO()):
        return bench.main(argv)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='c10', choices=sorted(set(bench.CONFIGS) - {'sample'}))
    parser.add_argument('--device', default='auto')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--batch_size', type=int, default=0, help="0: bench.py's default")
    parser.add_argument('--iters', type=int, default=0, help="0: bench.py's default")
    parser.add_argument('--ch', type=int, default=0, help="0: the config's width")
    parser.add_argument('--only', nargs='*', default=None,
                        help=f"options besides the plain step: {', '.join(list(OPTIONS)[1:])}")
    args = parser.parse_args(argv)
    with utils.exit_on_user_error():
        if args.rounds < 1:
            raise ValueError(f'--rounds must be >= 1, got {args.rounds}')
        unknown = [name for name in args.only or [] if name not in OPTIONS]
        if unknown:
            raise ValueError(f"--only: unknown option(s) {unknown}; valid: "
                             f"{', '.join(list(OPTIONS)[1:])}")
        names = ['plain step'] + [n for n in (args.only or list(OPTIONS)[1:]) if n != 'plain step']
        seconds = {name: [] for name in names}
        time_option('', args)  # untimed: the process's first step pays one-time set-up costs
        device = None
        for _ in range(args.rounds):
            for name in names:
                record = time_option(OPTIONS[name], args)
                seconds[name].append(record['s_per_iter'])
                device = record['device']
        plain = seconds['plain step']
        print(f"{'option':<26} {'s/iter':>8} {'x plain step':>13}   ({args.config}, {device})")
        for name in names:
            ratios = [s / p for s, p in zip(seconds[name], plain)]
            row = {'option': name, 'flags': OPTIONS[name], 'config': args.config,
                   'device': device, 's_per_iter': statistics.median(seconds[name]),
                   'ratio': round(statistics.median(ratios), 3), 'rounds': args.rounds}
            print(json.dumps(row), file=sys.stderr)
            print(f"{name:<26} {row['s_per_iter']:>8.4f} {row['ratio']:>13.2f}")


if __name__ == '__main__':
    main()
