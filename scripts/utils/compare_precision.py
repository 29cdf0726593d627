"""Does the fast path train as well as float32? Two runs of train.py with the same flags and seed,
one with --amp none and one with --amp bf16 (or the --amp given), then their losses and a sample
quality score side by side.

    python scripts/utils/compare_precision.py                      # the first demo config, 2500 its
    python scripts/utils/compare_precision.py --num_iters 300 -- --G_ch 8 --D_ch 8  # extra flags

By default: the model and data of the first scripts/demo.sh (Fashion-MNIST, 32 x 32, 10
classes). Prints one JSON line per run: mean losses over the first and the last --window
iterations, the run's time, and two sample-quality scores of its final G_ema in eval mode
against the real images (no Inception weights needed, so it runs offline):
- `pixel_fd`: the Frechet distance between 16 x 16 grey versions of 5,000 samples and 5,000
  real images (lower is better; `real_pixel_fd`, between two disjoint sets of real images,
  is the floor);
- `class_mean_rmse`: the RMS difference between the mean image of each class's samples and of
  its real images, averaged over classes (does the class conditioning work).
A last line holds the relative differences of the fast run from the float32 one. GAN losses
are noisy and the two runs drift apart after a few iterations (bf16 rounding changes every
update), so "comparable" means the same level and trend, not the same numbers. The sample sheets
are in --out/<amp>/samples/.
"""
import argparse
import json
import os
import sys
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import checkpoints  # noqa: E402
import datasets  # noqa: E402
import inception_metrics  # noqa: E402
import sampling  # noqa: E402
import train  # noqa: E402
import train_fns  # noqa: E402
import utils  # noqa: E402

# The model and schedule of the first demo (batch 16, learning rates 2e-4; README's table of
# this comparison was measured with them; scripts/demo.sh has since moved to batch 8).
DEMO = ['--dataset', 'FMNIST', '--G_ch', '16', '--D_ch', '16', '--G_attn', '0', '--D_attn', '0',
        '--G_shared', '--hier', '--dim_z', '120', '--shared_dim', '64', '--batch_size', '16',
        '--num_D_steps', '1', '--G_lr', '2e-4', '--D_lr', '2e-4', '--ema', '--use_ema',
        '--ema_start', '500', '--ema_decay', '0.999', '--G_eval_mode', '--shuffle',
        '--num_workers', '0', '--pbar', 'none', '--test_every', '1000000',
        '--sv_log_interval', '0', '--num_save_copies', '0']
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


def grey16(images: torch.Tensor) -> torch.Tensor:
    """N x C x 32 x 32 in [-1, 1] -> N x 256 (channel mean, 2 x 2 average pooling)."""
    return F.avg_pool2d(images.float().mean(1, keepdim=True), 2).flatten(1).double()


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    mu_a, sigma_a = inception_metrics.feature_moments(a)
    mu_b, sigma_b = inception_metrics.feature_moments(b)
    return inception_metrics.calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.stack([features[labels == c].mean(0) for c in range(n_classes)])


def real_features(config, n: int, seed: int):
    """2n real images (two disjoint halves), as features, with their labels."""
    info = datasets.dataset_info(config['dataset'], config['data_root'])
    dataset = datasets.build_dataset(info, config['data_root'])
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:2 * n]
    images, labels = zip(*(dataset[int(i)] for i in order))
    return grey16(torch.stack(images)), torch.tensor(labels)


@torch.no_grad()
def sample_features(config, n: int, seed: int):
    """n samples of the run's final G_ema (G without --ema), in eval mode, as features."""
    G = utils.model_module(config).Generator(**config)
    stem = 'G_ema' if config['ema'] else 'G'
    folder = os.path.join(config['weights_root'], utils.experiment_name(config))
    checkpoints.load_into(G, os.path.join(folder, checkpoints.file_name(stem)))
    G.eval()
    sampler = sampling.NoiseSampler(G.dim_z, config['n_classes'], 500, seed=seed)
    feats, labels = [], []
    for _ in range(n // 500):
        images, y = sampling.sample(G, sampler)
        feats.append(grey16(images))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def quality(config, real, n: int, seed: int) -> Dict[str, float]:
    (real_x, real_y), n_classes = real, config['n_classes']
    fake_x, fake_y = sample_features(config, n, seed)
    rmse = (class_means(fake_x, fake_y, n_classes)
            - class_means(real_x[:n], real_y[:n], n_classes)).pow(2).mean(1).sqrt().mean()
    return {'pixel_fd': round(frechet(fake_x, real_x[:n]), 3),
            'class_mean_rmse': round(float(rmse), 4)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--amp', default='bf16',  # the mixed modes of train_fns.AMP_DTYPES
                        choices=[mode for mode in train_fns.AMP_DTYPES if mode != 'none'])
    parser.add_argument('--num_iters', type=int, default=2500)
    parser.add_argument('--window', type=int, default=100, help='iterations averaged')
    parser.add_argument('--num_samples', type=int, default=5000, help='per quality score '
                        '(a multiple of 500)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='precision_check')
    parser.add_argument('--data_root', default='data')
    parser.add_argument('extra', nargs='*', help='more train.py flags (after --)')
    args = parser.parse_args(argv)
    if args.num_samples < 500 or args.num_samples % 500:
        parser.error(f'--num_samples must be a positive multiple of 500, got {args.num_samples}')
    summaries, real = {}, None
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
        if real is None:
            real = real_features(config, args.num_samples, args.seed)
            n = args.num_samples
            print(json.dumps({'real_pixel_fd': round(frechet(real[0][:n], real[0][n:]), 3)}))
        logs = os.path.join(config['logs_root'], utils.experiment_name(config))
        summaries[amp] = {'losses': summarize(logs, args.window),
                          **quality(config, real, args.num_samples, args.seed + 1)}
        print(json.dumps({'amp': amp, 'iters': args.num_iters, 'seconds': round(seconds, 1),
                          **summaries[amp]}), flush=True)
    fp32, fast = summaries['none'], summaries[args.amp]
    relative = {name: abs(fast['losses'][name]['last'] - fp32['losses'][name]['last'])
                / max(abs(fp32['losses'][name]['last']), 1e-8) for name in LOSSES}
    relative.update({key: abs(fast[key] - fp32[key]) / max(abs(fp32[key]), 1e-8)
                     for key in ('pixel_fd', 'class_mean_rmse')})
    print(json.dumps({'relative_difference': {k: round(v, 4) for k, v in relative.items()}}))


if __name__ == '__main__':
    main()
