"""Peak memory of a training step on a GPU, estimated on any machine: the step runs on fake
tensors (shapes and dtypes, no data, no arithmetic), and the bytes of every live storage are
summed after each operation.

    python scripts/utils/estimate_memory.py --config i128 --batch_size 256   # bf16, CUDA's path

The configs and speed flags are bench.py's. The fake step runs on the CPU's kernels with CUDA's
choices where they matter for memory: autocast to --amp, and self-attention through
scaled_dot_product_attention (the fused kernels store no score matrix). The figure is what the
tensors need at the peak, like `torch.cuda.max_memory_allocated`; the caching allocator's
rounding and fragmentation, cuDNN workspaces, CUDA graphs and torch.compile's buffer reuse are
not in it (a card reserves more: compare `peak_reserved_gib` of bench.py where one is at hand).
Prints one JSON line: the bytes of the models, EMA copy and batch before the step, the peak
during the second step (optimizer states exist from the first), and the bytes live after it.
"""
import argparse
import json
import os
import sys
import warnings
from typing import List, Optional
from unittest import mock

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import attention  # noqa: E402
import bench  # noqa: E402
import flags  # noqa: E402
import layers  # noqa: E402
import sampling  # noqa: E402
import train  # noqa: E402
import train_fns  # noqa: E402

GIB = 2 ** 30


class LiveBytes(TorchDispatchMode):
    """The bytes of the storages alive now (weakly referenced, so a freed tensor stops counting
    when its storage is freed, views and saved tensors included) and their peak."""

    def __init__(self):
        super().__init__()
        self.storages = {}
        self.now = self.peak = 0

    def add(self, tensor) -> None:
        if isinstance(tensor, torch.Tensor):
            storage = tensor.untyped_storage()
            known = self.storages.get(storage._cdata)
            if known is None or torch.UntypedStorage._expired(known[0]):
                self.storages[storage._cdata] = (storage._weak_ref(), storage.nbytes())

    def count(self) -> int:
        for key in [k for k, (ref, _) in self.storages.items()
                    if torch.UntypedStorage._expired(ref)]:
            del self.storages[key]
        self.now = sum(n for _, n in self.storages.values())
        self.peak = max(self.peak, self.now)
        return self.now

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            self.add(tensor)
        self.count()
        return out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', required=True, choices=sorted(set(bench.CONFIGS) - {'sample'}))
    parser.add_argument('--batch_size', type=int, default=256, help='per GPU')
    parser.add_argument('--amp', choices=flags.choices_of(flags.rows()['amp']), default='bf16')
    parser.add_argument('--channels_last', action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch_size must be >= 1, got {args.batch_size}')
    return args


def estimate(args: argparse.Namespace) -> dict:
    config = bench.run_config(bench.parse_args(
        ['--config', args.config, '--batch_size', str(args.batch_size), '--amp', args.amp,
         '--no-compile', '--channels_last' if args.channels_last else '--no-channels_last']),
        torch.device('cpu'))
    tracker = LiveBytes()
    # The EMA's cache keys on data pointers, which fake tensors only pretend to have.
    warnings.filterwarnings('ignore', message='Accessing the data pointer of FakeTensor')
    # Fake parameters cannot be moved (they are built where they stay); CUDA's attention.
    with FakeTensorMode(allow_non_fake_inputs=True), \
            mock.patch.object(torch.nn.Module, 'to', lambda self, *a, **k: self), \
            mock.patch.object(attention, 'attention_explicit', attention.attention_sdpa):
        models = train.build_models(config, torch.device('cpu'), fast_adam=True)
        G, D = models.G, models.D
        noise = sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'],
                                      torch.device('cpu'), seed=0)
        precision = train_fns.Precision(config['amp'], torch.device('cpu'))
        step = train_fns.GAN_training_function(models, noise, {'itr': 1}, config,
                                               precision=precision)
        n = config['batch_size'] * config['num_D_steps'] * config['num_D_accumulations']
        res = config['resolution']
        x, y = train_fns.prepare_batch(torch.rand(n, 3, res, res),
                                       torch.randint(0, config['n_classes'], (n,)),
                                       torch.device('cpu'), config['channels_last'])
        G.train()
        D.train()
        with tracker:
            for tensor in (*G.state_dict().values(), *D.state_dict().values(),
                           *models.G_ema.state_dict().values(), x, y):
                tracker.add(tensor)
            before = tracker.count()
            step(x, y)
            tracker.peak = 0
            step(x, y)
            after = tracker.count()
    return {'config': args.config, 'batch_size': args.batch_size, 'amp': config['amp'],
            'channels_last': config['channels_last'],
            'models_ema_batch_gib': round(before / GIB, 3),
            'peak_gib': round(tracker.peak / GIB, 3), 'after_step_gib': round(after / GIB, 3),
            'peak_bytes': tracker.peak, 'after_step_bytes': after,
            'method': 'fake tensors, live storage bytes'}


def main(argv: Optional[List[str]] = None) -> dict:
    record = estimate(parse_args(argv))
    print(json.dumps(record), flush=True)
    return record


if __name__ == '__main__':
    main()
