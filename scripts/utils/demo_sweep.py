"""The sweep behind scripts/demo.sh's recipe: train each variant on Fashion-MNIST for the same
wall time, score its G_ema with scripts/utils/score_fmnist.py, print a table.

    python scripts/utils/demo_sweep.py --minutes 3 --out runs/sweep
    python scripts/utils/demo_sweep.py --minutes 9 --only chosen --seeds 0 1 2

Every variant is the demo's common flags (`COMMON`) plus its own; each trains with `--time_limit`
(so a faster recipe gets more iterations, as it would in the demo), and is scored on 10,000
samples of G_ema in eval mode (class accuracy and FID in the classifier's feature space, see
score_fmnist.py). Results are appended to `<out>/sweep.jsonl`. Run it on an idle machine: the
variants compete for the same minutes.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checkpoints  # noqa: E402
import score_fmnist  # noqa: E402
import utils  # noqa: E402

# Flags every variant shares: the demo's data, a small BigGAN at 32 x 32 with a shared class
# embedding and hierarchical z, no attention, EMA sampling in eval mode.
COMMON = ['--dataset', 'FMNIST', '--G_attn', '0', '--D_attn', '0', '--G_shared', '--hier',
          '--dim_z', '120', '--shared_dim', '64', '--ema', '--use_ema', '--G_eval_mode',
          '--test_every', '1000000', '--shuffle', '--num_workers', '0', '--pbar', 'none',
          '--sv_log_interval', '0']
FAST = ['--amp', 'bf16', '--channels_last']  # measured: 1.7 to 2.2 times the float32 it/s here


def variant(batch: int, G_lr: str, D_lr: str, *, G_ch: int = 16, D_ch: int = 16,
            D_steps: int = 1, ema_start: int = 250, fast: bool = True) -> list:
    """The flags of one variant (EMA decay 0.999 throughout)."""
    return (FAST if fast else []) + [
        '--G_ch', str(G_ch), '--D_ch', str(D_ch), '--batch_size', str(batch), '--num_D_steps',
        str(D_steps), '--G_lr', G_lr, '--D_lr', D_lr, '--ema_start', str(ema_start),
        '--ema_decay', '0.999']


VARIANTS = {
    'b16': variant(16, '2e-4', '2e-4', ema_start=500, fast=False),  # the previous demo
    'b16_fast': variant(16, '2e-4', '2e-4', ema_start=500),
    'b64': variant(64, '2e-4', '2e-4'),
    'b64_ttur': variant(64, '1e-4', '4e-4'),
    'b32_d2': variant(32, '2e-4', '2e-4', D_steps=2),
    'b64_lr4': variant(64, '4e-4', '4e-4'),
    'b32_ch32': variant(32, '2e-4', '2e-4', G_ch=32, D_ch=32),
    'b32_Gch32': variant(32, '2e-4', '2e-4', G_ch=32),
    # Second round, from the best of the first (b16_fast): more updates beat larger batches.
    'b16_lr4': variant(16, '4e-4', '4e-4', ema_start=500),
    'b8': variant(8, '2e-4', '2e-4', ema_start=500),
    'b16_lr4_Dch32': variant(16, '4e-4', '4e-4', D_ch=32, ema_start=500),
    'b16_D8e4': variant(16, '4e-4', '8e-4', ema_start=500),
    'b8_D8e4': variant(8, '4e-4', '8e-4', ema_start=500),  # the demo's recipe
}


def run_flags(folder: str, seed: int, minutes: float) -> list:
    """The flags of one timed run in `folder`: its seed, --time_limit, experiment `run` under
    the folder's weights/, logs/ and samples/, no saves before the end."""
    args = ['--seed', str(seed), '--experiment_name', 'run', '--time_limit', str(minutes),
            '--save_every', '1000000', '--overwrite']
    for kind in ('weights', 'logs', 'samples'):
        args += [f'--{kind}_root', os.path.join(folder, kind)]
    return args


def iterations(stdout: str) -> int:
    """The iteration train.py stopped at, from its output (-1 where it does not say)."""
    stopped = re.findall(r'Stopped at iteration (\d+)', stdout)
    return int(stopped[-1]) if stopped else -1


def train(name: str, flags: list, minutes: float, out: str, seed: int) -> dict:
    """Run train.py for `minutes`; its config, iterations and seconds."""
    folder = os.path.join(out, f'{name}_seed{seed}')
    args = COMMON + flags + run_flags(folder, seed, minutes)
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f'{name}: train.py failed:\n{result.stderr[-2000:]}')
    return {'config': utils.parse_config(args), 'itr': iterations(result.stdout),
            'wall_s': round(time.time() - start, 1), 'folder': folder}


def score(run: dict, scorer: 'score_fmnist.Scorer', n: int = 10000) -> dict:
    """Scores of the run's G_ema on `n` samples."""
    config = run['config']
    G = utils.model_module(config).Generator(**{**config, 'skip_init': True})
    checkpoints.load_into(G, os.path.join(run['folder'], 'weights', 'run',
                                          checkpoints.file_name('G_ema')))
    return scorer.score_generator(G, n=n)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=3.0, help='training time per run')
    parser.add_argument('--out', default='runs/sweep', help='folder of the runs and sweep.jsonl')
    parser.add_argument('--only', nargs='*', default=None,
                        help=f"variants to run (default all): {', '.join(VARIANTS)}")
    parser.add_argument('--seeds', nargs='*', type=int, default=[0])
    args = parser.parse_args(argv)
    with utils.exit_on_user_error():
        unknown = [name for name in args.only or [] if name not in VARIANTS]
        if unknown:
            raise ValueError(f"--only: unknown variant(s) {unknown}; valid: "
                             f"{', '.join(VARIANTS)}")
        scorer = score_fmnist.Scorer()  # trained (minutes) before any run, not inside one
        os.makedirs(args.out, exist_ok=True)
        print(f"{'variant':<12} {'seed':>4} {'iters':>6} {'wall s':>7} {'accuracy':>8} "
              f"{'FID':>7}")
        for name in args.only or list(VARIANTS):
            for seed in args.seeds:
                run = train(name, VARIANTS[name], args.minutes, args.out, seed)
                scores = score(run, scorer)
                record = {'variant': name, 'seed': seed, 'minutes': args.minutes,
                          'itr': run['itr'], 'wall_s': run['wall_s'], **scores}
                with open(os.path.join(args.out, 'sweep.jsonl'), 'a') as f:
                    f.write(json.dumps(record) + '\n')
                print(f"{name:<12} {seed:>4} {run['itr']:>6} {run['wall_s']:>7} "
                      f"{scores['accuracy']:>8.3f} {scores['FID']:>7.2f}", flush=True)


if __name__ == '__main__':
    main()
