"""The step time of train.py with and without the run trackers (--tensorboard, --wandb).

    python scripts/utils/bench_trackers.py --iters 60 --reps 4 [--wandb] [-- TRAIN.PY FLAGS]

Runs train.py's `run` in this process on a small synthetic HDF5 data set, the arms alternating
(none, tensorboard[, wandb], none, ...) so that a shared machine's load falls on all alike. An
iteration's time is the time between the starts of consecutive iterations (the step, the log
read-back and whatever the trackers do with it); each run gives the median over its iterations
after the first five. Also reported: the time spent inside the trackers' calls per iteration
over the same iterations.
Prints one JSON line per run, then a summary line per arm.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

import run_trackers  # noqa: E402
import train  # noqa: E402
import train_fns  # noqa: E402
import utils  # noqa: E402
from data_helpers import random_hdf5  # noqa: E402

SMALL = ['--G_ch', '8', '--D_ch', '8', '--G_attn', '0', '--D_attn', '0', '--batch_size', '8',
         '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none', '--load_in_mem',
         '--save_every', '100000', '--test_every', '100000']


def timed_run(argv: list) -> dict:
    """One train.py run: per-iteration times and the time inside the trackers."""
    starts, inside = [], []  # iteration starts; (start, duration) of each tracker call
    real_prepare, real_scalars = train_fns.prepare_batch, run_trackers.Trackers.scalars

    def prepare(*args, **kwargs):
        starts.append(time.perf_counter())
        return real_prepare(*args, **kwargs)

    def scalars(self, *args, **kwargs):
        t = time.perf_counter()
        real_scalars(self, *args, **kwargs)
        inside.append((t, time.perf_counter() - t))

    train_fns.prepare_batch, run_trackers.Trackers.scalars = prepare, scalars
    try:
        train.run(utils.parse_config(argv))
    finally:
        train_fns.prepare_batch, run_trackers.Trackers.scalars = real_prepare, real_scalars
    # The same window for both: the iterations after the fifth, up to the last one's start.
    steps = [b - a for a, b in zip(starts, starts[1:])][5:]
    tracked = sum(d for t, d in inside if starts[5] <= t < starts[-1])
    return {'s_per_iter': statistics.median(steps),
            'tracker_s_per_iter': tracked / len(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=60)
    parser.add_argument('--reps', type=int, default=4)
    parser.add_argument('--wandb', action='store_true', help='also time a --wandb arm')
    parser.add_argument('train_flags', nargs='*', help='more train.py flags, after --')
    args = parser.parse_args()
    os.environ.setdefault('WANDB_SILENT', 'true')
    arms = {'none': [], 'tensorboard': ['--tensorboard']}
    if args.wandb:
        arms['wandb'] = ['--wandb']
    results = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, 'data.hdf5')
        random_hdf5(data, n=64, size=32, n_classes=4, seed=0)
        for rep in range(args.reps):
            for arm, extra in arms.items():
                folder = os.path.join(tmp, f'{arm}{rep}')
                argv = (['--dataset', 'HDF5', '--data_root', data, '--num_iters',
                         str(args.iters)] + SMALL + extra + args.train_flags
                        + [f'--{n}_root={folder}/{n}' for n in ('weights', 'logs', 'samples')])
                result = dict(arm=arm, rep=rep, **timed_run(argv))
                results[arm].append(result)
                print(json.dumps(result), flush=True)
    base = statistics.median(r['s_per_iter'] for r in results['none'])
    for arm, runs in results.items():
        median = statistics.median(r['s_per_iter'] for r in runs)
        print(json.dumps({'arm': arm, 'median_s_per_iter': round(median, 5),
                          'ratio_to_none': round(median / base, 4),
                          'tracker_ms_per_iter': round(1000 * statistics.median(
                              r['tracker_s_per_iter'] for r in runs), 4)}))


if __name__ == '__main__':
    main()
