"""Inception feature-extraction throughput: images / s, one JSON line per setting.

    python scripts/utils/bench_inception.py --kind tf torchvision --resolution 32 128 \
        --batch_size 16

Random weights (speed does not depend on their values), uint8 input for `tf` and float input
in [-1, 1] for `torchvision`, as each mode is fed. Times whole forward passes (resize included)
after `--warmup` untimed ones; reports the median over `--iters` passes.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from inception_net import KINDS, build_inception_net  # noqa: E402


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU with its thread count."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'cpu ({torch.get_num_threads()} threads)'


def bench(kind: str, resolution: int, batch_size: int, device: torch.device, iters: int,
          warmup: int) -> dict:
    """Median time of one forward pass of `batch_size` images; returns a JSON-able dict."""
    net = build_inception_net(kind).to(device)
    images = torch.randint(0, 256, (batch_size, 3, resolution, resolution), dtype=torch.uint8,
                           device=device)
    if kind == 'torchvision':
        images = images.float() / 127.5 - 1.0
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            net(images)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {'kind': kind, 'device': device_name(device), 'resolution': resolution,
            'batch_size': batch_size, 's_per_batch': round(seconds, 4),
            'images_per_s': round(batch_size / seconds, 2), 'iters': iters,
            'torch': torch.__version__}


def main(argv=None) -> None:
    """Parse the flags; bench every (kind, resolution) pair."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--kind', nargs='+', default=list(KINDS), choices=KINDS)
    parser.add_argument('--resolution', type=int, nargs='+', default=[32, 128])
    parser.add_argument('--batch_size', type=int, default=16)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    for kind in args.kind:
        for resolution in args.resolution:
            result = bench(kind, resolution, args.batch_size, torch.device(args.device),
                           args.iters, args.warmup)
            print(json.dumps(result), flush=True)


if __name__ == '__main__':
    main()
