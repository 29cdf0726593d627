"""Limited-data training on Fashion-MNIST: the demo's recipe on a class-balanced fraction of the
training split, with and without DiffAugment, LeCam and ADA, each for the same wall time,
scored by the Fashion-MNIST classifier (scripts/utils/score_fmnist.py).

    python scripts/utils/limited_data.py --minutes 8 --fractions 0.1 0.01 --seeds 0 1

The methods of one (fraction, seed) train at the same time, one CPU thread each, so that
whatever else the machine does slows them alike: equal wall time, and a method that costs more
per step gets fewer steps, as it would in practice. Each run's G_ema is scored on 10,000 samples
(class accuracy, and FID in the classifier's features against the whole training split).
Records are appended to `<out>/limited_data.jsonl`; the table is printed at the end.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import demo_sweep  # noqa: E402
import score_fmnist  # noqa: E402
import utils  # noqa: E402

# The demo's recipe (scripts/demo.sh), with the EMA starting sooner for short runs.
RECIPE = demo_sweep.variant(8, '4e-4', '8e-4', ema_start=500) + ['--mirror_augment']
# ADA's p may cross [0, 1] in 10,000 real images (paper: 500,000, for runs of millions): the
# runs here see a few tens of thousands.
METHODS = {
    'baseline': [],
    'DiffAugment': ['--DiffAugment', 'translation,cutout'],
    'DiffAugment+LeCam': ['--DiffAugment', 'translation,cutout', '--LeCam', '0.3'],
    'ADA': ['--ADA', '--ADA_kimg', '10'],
}


def launch(method: str, fraction: float, seed: int, minutes: float, out: str):
    """Start one run; (its folder, its flags, the process)."""
    folder = os.path.join(out, f'{method}_frac{fraction:g}_seed{seed}')
    args = (demo_sweep.COMMON + RECIPE + METHODS[method] + [
        '--data_fraction', str(fraction),
        # The clock ends every run, not the data, and no test falls within it.
        '--num_epochs', '100000', '--test_every', str(10 ** 9)]
        + demo_sweep.run_flags(folder, seed, minutes))
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    log = open(os.path.join(folder, 'train.out'), 'w')
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *args],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    return folder, args, process, log


def finished(folder: str, args: list, process, log, started: float) -> dict:
    """Wait for a run; its config, iterations and seconds."""
    status = process.wait()
    log.close()
    text = open(os.path.join(folder, 'train.out')).read()
    if status != 0:
        raise RuntimeError(f'{folder}: train.py failed (status {status}):\n{text[-2000:]}')
    return {'config': utils.parse_config(args), 'itr': demo_sweep.iterations(text),
            'wall_s': round(time.time() - started, 1), 'folder': folder}


def table(records: list) -> str:
    """Mean and spread over seeds, per fraction and method."""
    lines = [f"{'fraction':>8} {'method':<18} {'seeds':>5} {'iters':>6} {'accuracy':>15} "
             f"{'FID':>15}"]
    keys = sorted({(r['fraction'], r['method']) for r in records},
                  key=lambda k: (-k[0], list(METHODS).index(k[1])))
    for fraction, method in keys:
        runs = [r for r in records if r['fraction'] == fraction and r['method'] == method]
        acc = [r['accuracy'] for r in runs]
        fid = [r['FID'] for r in runs]
        iters = sum(r['itr'] for r in runs) / len(runs)
        lines.append(f"{fraction:>8g} {method:<18} {len(runs):>5} {iters:>6.0f} "
                     f"{_spread(acc, '.3f'):>15} {_spread(fid, '.2f'):>15}")
    return '\n'.join(lines)


def _spread(values: list, form: str) -> str:
    mean = sum(values) / len(values)
    return f'{mean:{form}} ({min(values):{form}}-{max(values):{form}})'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=8.0,
                        help='training time of each run (the methods of a group share the CPU)')
    parser.add_argument('--fractions', nargs='*', type=float, default=[0.1, 0.01])
    parser.add_argument('--seeds', nargs='*', type=int, default=[0, 1])
    parser.add_argument('--only', nargs='*', default=None,
                        help=f"methods to run (default all): {', '.join(METHODS)}")
    parser.add_argument('--out', default='runs/limited_data', help='folder of the runs')
    parser.add_argument('--samples', type=int, default=10000, help='samples scored per run')
    parser.add_argument('--table', action='store_true',
                        help='print the table of <out>/limited_data.jsonl and stop')
    args = parser.parse_args(argv)
    path = os.path.join(args.out, 'limited_data.jsonl')
    with utils.exit_on_user_error():
        unknown = [name for name in args.only or [] if name not in METHODS]
        if unknown:
            raise ValueError(f"--only: unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
        bad = [f for f in args.fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f'--fractions {bad}: each must be in (0, 1]')
        if args.table:
            if not os.path.isfile(path):
                raise FileNotFoundError(f'--table: {path} does not exist yet')
            print(table([json.loads(line) for line in open(path)]))
            return
        scorer = score_fmnist.Scorer()  # ready before any run starts
        os.makedirs(args.out, exist_ok=True)
        for seed in args.seeds:
            for fraction in args.fractions:
                started = time.time()
                group = {name: launch(name, fraction, seed, args.minutes, args.out)
                         for name in args.only or METHODS}
                runs = {name: finished(*launched, started) for name, launched in group.items()}
                for name, run in runs.items():
                    scores = demo_sweep.score(run, scorer, n=args.samples)
                    record = {'method': name, 'fraction': fraction, 'seed': seed,
                              'minutes': args.minutes, 'itr': run['itr'],
                              'wall_s': run['wall_s'], **scores}
                    with open(path, 'a') as f:
                        f.write(json.dumps(record) + '\n')
                    print(json.dumps(record), flush=True)
        print(table([json.loads(line) for line in open(path)]))


if __name__ == '__main__':
    main()
