"""Noise, labels and image sheets: what train.py and sample.py draw from G.

`NoiseSampler` replaces the original's `Distribution` tensor subclass (which broke
`save_image` on current PyTorch): plain tensors from its own seeded generator, so runs are
reproducible and resume exactly. Sheets and the npz export keep the original's file names and
layouts (its utils.sample_sheet / interp_sheet, sample.py); every file is written atomically.
`rng_state` / `restore_rng`: every random state a checkpoint keeps, so a resumed run goes on
exactly.
"""
import os
import random
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import distributed
from atomic import atomic_write


class NoiseSampler:
    """z ~ N(0, z_var^2) (or a truncated normal) and uniform class labels.

    Draws on the CPU from a private `torch.Generator` (device-independent, and its state goes
    into checkpoints), then moves to `device`. `truncation` > 0 resamples every |z| above it
    (the paper's truncation trick) before scaling by `z_var`. `classes` restricts the labels.
    """

    def __init__(self, dim_z: int, n_classes: int, batch_size: int,
                 device: torch.device = torch.device('cpu'), z_var: float = 1.0,
                 truncation: float = 0.0, seed: int = 0,
                 classes: Optional[Sequence[int]] = None):
        if truncation < 0:
            raise ValueError(f'truncation must be > 0 (0 for none), got {truncation}')
        self.dim_z, self.n_classes, self.batch_size = dim_z, n_classes, batch_size
        self.device = device
        self.z_var = z_var
        self.truncation = truncation
        self.classes = None if classes is None else torch.as_tensor(list(classes))
        self.generator = torch.Generator().manual_seed(seed)

    def sample_z(self, n: Optional[int] = None) -> torch.Tensor:
        n = n or self.batch_size
        z = torch.randn(n, self.dim_z, generator=self.generator)
        if self.truncation > 0:
            z = truncate_(z, self.truncation, self.generator)
        return (z * self.z_var).to(self.device, non_blocking=True)

    def sample_y(self, n: Optional[int] = None) -> torch.Tensor:
        n = n or self.batch_size
        if self.classes is None:
            y = torch.randint(0, self.n_classes, (n,), generator=self.generator)
        else:
            y = self.classes[torch.randint(0, len(self.classes), (n,), generator=self.generator)]
        return y.to(self.device, non_blocking=True)

    def sample(self, n: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.sample_z(n), self.sample_y(n)

    def state_dict(self) -> dict:
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state['generator'])


def truncate_(z: torch.Tensor, threshold: float, generator: torch.Generator) -> torch.Tensor:
    """Resample, in place, every entry of z whose magnitude exceeds `threshold`."""
    mask = z.abs() > threshold
    while mask.any():
        z[mask] = torch.randn(int(mask.sum()), generator=generator)
        mask = z.abs() > threshold
    return z


def class_vectors(G: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """G's conditioning for labels y: the shared embedding, or one-hot vectors for a G without
    one (its per-layer embeddings then mix when interpolated)."""
    if getattr(G, 'G_shared', True):
        return G.shared(y)
    return F.one_hot(y, G.n_classes).float()


@torch.no_grad()
def sample(G: nn.Module, sampler: NoiseSampler, n: Optional[int] = None):
    """A batch of images in [-1, 1] and their labels (the metrics' `sample()`)."""
    z, y = sampler.sample(n)
    return G(z, G.shared(y)).float(), y


class FastG(nn.Module):
    """G as sample.py, the training-time metrics and sheets, and bench.py draw from it, on the
    fast path the flags ask for: channels-last weights (--channels_last), a compiled forward
    (--compile, static shapes), autocast (--amp; images come back float32), and with
    --parallel on several visible GPUs each batch split over them (DataParallel's scatter and
    gather). A batch that does not fit in GPU memory is drawn in chunks, halved until they
    fit; the chunk size is kept for later batches and said once. In eval mode chunks give the
    same images as one batch; in training mode BN normalizes over each chunk. G's attributes
    (`shared`, `dim_z`, ...) read through, so every helper here takes either."""

    def __init__(self, G: nn.Module, amp: str = 'none', channels_last: bool = False,
                 compile_mode: Optional[str] = None, parallel: bool = False):
        super().__init__()
        if channels_last:
            G.to(memory_format=torch.channels_last)
        self.G = G
        device = next(G.parameters()).device
        # Under torchrun each process drives its own GPU already.
        self.replicas = (torch.cuda.device_count() if parallel and device.type == 'cuda'
                         and distributed.world_size() == 1 else 1)
        if compile_mode and self.replicas > 1:
            # DataParallel replicates G's modules for every batch; a compiled G is not
            # replicated, so the GPUs win here.
            print(f'Note: sampling on {self.replicas} GPUs (--parallel) runs G uncompiled')
            compile_mode = None
        self.forward_G = torch.compile(G, mode=compile_mode, dynamic=False) \
            if compile_mode else G
        self.dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
        self.chunk: Optional[int] = None  # set by the first batch that does not fit
        self.train(G.training)  # the wrapper's mode is G's (eval mode, standing statistics)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules['G'], name)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        while True:
            chunk = self.chunk or len(z)
            try:
                if chunk >= len(z):
                    return self._draw(z, y)
                return torch.cat([self._draw(z[i:i + chunk], y[i:i + chunk])
                                  for i in range(0, len(z), chunk)])
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                torch.cuda.empty_cache()
                self.chunk = -(-chunk // 2)
                print(f'Note: a batch of {chunk} does not fit in GPU memory: G draws '
                      f'{self.chunk} images at a time')

    def _draw(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            if self.replicas > 1:
                return nn.parallel.data_parallel(self.G, (z, y)).float()
            return self.forward_G(z, y).float()


def fast_G(G: nn.Module, config: dict) -> nn.Module:
    """`G` wrapped in FastG when a speed flag or --parallel is set, or G is on a GPU (which
    may run out of memory), else `G` itself."""
    on_gpu = next(G.parameters()).device.type == 'cuda'
    if (config['amp'] == 'none' and not config['channels_last'] and not config['compile']
            and not config.get('parallel') and not on_gpu):
        return G
    return FastG(G, config['amp'], config['channels_last'],
                 config['compile_mode'] if config['compile'] else None,
                 parallel=bool(config.get('parallel')))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8, rounded to the nearest of the 256 levels as a saved image
    is (the original's npz truncated, moving 1 in 255 levels down); the same quantization as
    the Inception input, so scoring an npz matches scoring the float images."""
    from inception_net import to_uint8_values
    return to_uint8_values(images).to(torch.uint8)


@torch.no_grad()
def sample_npz(G: nn.Module, sampler: NoiseSampler, num: int, path: str,
               progress: Optional[Callable[[Iterable], Iterable]] = None):
    """`num` samples in the original's samples.npz layout: `x` uint8 N x 3 x H x W,
    `y` int64 N, drawn in whole G batches and cut to `num`; written atomically. Returns
    (x, y). `progress` wraps the batch loop (e.g. loggers.progress).

    Under torch.distributed the batches are dealt out over the processes (batch i to rank
    i mod world size) and rank 0 writes the one file; every rank draws every batch's noise,
    so the file holds the images of one process's run, in the same order (exactly so with G
    in eval mode; in training mode each process's SN vectors advance with its own batches).
    Ranks other than 0 return (None, None)."""
    size = sampler.batch_size
    count = -(-num // size)
    world, rank = distributed.world_size(), distributed.rank()
    mine = [i for i in range(count) if i % world == rank]
    total = sum(min(size, num - i * size) for i in mine)
    x = y = None
    done = 0
    for i in (progress(range(count)) if progress else range(count)):
        z, labels = sampler.sample()
        if i % world != rank:  # another process draws these; the noise stream moves on
            continue
        n = min(size, num - i * size)
        images = to_uint8(G(z, G.shared(labels))[:n]).cpu().numpy()
        if x is None:  # filled in place: one copy of the samples in memory, not two
            x = np.empty((total, *images.shape[1:]), np.uint8)
            y = np.empty(total, np.int64)
        x[done:done + n] = images
        y[done:done + n] = labels[:n].cpu().numpy()
        done += n
    if world == 1:
        atomic_write(path, lambda f: np.savez(f, x=x, y=y))
        return x, y
    if x is None:  # fewer batches than processes: this one drew none
        x, y = np.zeros((0, 0), np.uint8), np.zeros(0, np.int64)
    # Each process leaves its share beside the output; rank 0 puts the batches in order.
    atomic_write(f'{path}.part{rank}', lambda f: np.savez(f, x=x, y=y))
    distributed.barrier()
    if rank != 0:
        distributed.barrier()
        return None, None
    whole_x = np.empty((num, *x.shape[1:]), np.uint8)
    whole_y = np.empty(num, np.int64)
    for r in range(world):
        with np.load(f'{path}.part{r}', allow_pickle=False) as share:
            share_x, share_y = share['x'], share['y']
        done = 0
        for i in range(r, count, world):
            start, n = i * size, min(size, num - i * size)
            whole_x[start:start + n] = share_x[done:done + n]
            whole_y[start:start + n] = share_y[done:done + n]
            done += n
    atomic_write(path, lambda f: np.savez(f, x=whole_x, y=whole_y))
    for r in range(world):
        os.remove(f'{path}.part{r}')
    distributed.barrier()
    return whole_x, whole_y


def save_image(images: torch.Tensor, path: str, nrow: int) -> None:
    """A min-max normalized grid (as the original: over the whole grid), written atomically."""
    fmt = os.path.splitext(path)[1].lstrip('.').lower().replace('jpg', 'jpeg') or 'jpeg'
    images = images.detach().float().cpu()
    atomic_write(path, lambda f: torchvision.utils.save_image(images, f, nrow=nrow,
                                                              normalize=True, format=fmt))


@torch.no_grad()
def sample_sheet(G: nn.Module, classes_per_sheet: int, num_classes: int,
                 samples_per_class: int, samples_root: str, experiment_name: str,
                 folder_number, sampler: NoiseSampler, *,
                 classes: Optional[Sequence[int]] = None,
                 progress: Optional[Callable[[Iterable], Iterable]] = None) -> list:
    """Class sheets `<samples_root>/<exp>/<folder>/samples<i>.jpg`: one row per class, one
    column per sample. `classes` (default all) is cut into sheets of `classes_per_sheet`;
    `progress` wraps the loop over sheets (e.g. loggers.progress)."""
    folder = os.path.join(samples_root, experiment_name, str(folder_number))
    os.makedirs(folder, exist_ok=True)
    classes = list(range(num_classes)) if classes is None else list(classes)
    if num_classes == 1:  # unconditional: one square sheet, every row of the one class
        classes, classes_per_sheet = [0] * samples_per_class, samples_per_class
    paths = []
    starts = range(0, len(classes), classes_per_sheet)
    for i in (progress(starts) if progress else starts):
        y = torch.tensor(classes[i:i + classes_per_sheet], device=sampler.device)
        columns = [G(sampler.sample_z(len(y)), G.shared(y)).float()
                   for _ in range(samples_per_class)]
        # (samples, classes, C, H, W) -> rows are classes.
        grid = torch.stack(columns, 1).flatten(0, 1)
        path = os.path.join(folder, f'samples{i // classes_per_sheet}.jpg')
        save_image(grid, path, nrow=samples_per_class)
        paths.append(path)
    return paths


def interp_kinds(n_classes: int) -> Tuple[Tuple[bool, bool], ...]:
    """(fix_z, fix_y) of the interpolation sheets: z and class, class only, z only (the
    original's three); with one class only z moves, so one sheet (interpZ)."""
    if n_classes == 1:
        return ((False, True),)
    return ((False, False), (False, True), (True, False))


def interp(x0: torch.Tensor, x1: torch.Tensor, num_midpoints: int) -> torch.Tensor:
    """Linear interpolation: x0, x1 of shape (N, 1, D) -> (N, num_midpoints + 2, D)."""
    weights = torch.linspace(0, 1.0, num_midpoints + 2, device=x0.device).to(x0.dtype)
    return x0 * (1 - weights.view(1, -1, 1)) + x1 * weights.view(1, -1, 1)


@torch.no_grad()
def interp_sheet(G: nn.Module, num_per_sheet: int, num_midpoints: int, num_classes: int,
                 samples_root: str, experiment_name: str, folder_number, sampler: NoiseSampler,
                 *, sheet_number: int = 0, fix_z: bool = False, fix_y: bool = False,
                 pairs: Optional[Sequence[Tuple[int, int]]] = None) -> str:
    """`interp<Z><Y><sheet>.jpg`: each row interpolates z (unless fix_z) and the class vector
    (unless fix_y) between two random draws, over num_midpoints + 2 columns. `pairs` gives
    each row's (start, end) class instead (one row per pair; with fix_y the start class)."""
    n, m = (num_per_sheet if pairs is None else len(pairs)), num_midpoints + 2
    if fix_z:
        zs = sampler.sample_z(n).unsqueeze(1).repeat(1, m, 1)
    else:
        zs = interp(sampler.sample_z(n).unsqueeze(1), sampler.sample_z(n).unsqueeze(1),
                    num_midpoints)
    if pairs is None:
        starts, ends = sampler.sample_y(n), None
    else:
        starts, ends = (torch.tensor(side, device=sampler.device) for side in zip(*pairs))
    first = class_vectors(G, starts).unsqueeze(1)
    if fix_y:
        ys = first.repeat(1, m, 1)
    else:
        ends = sampler.sample_y(n) if ends is None else ends
        ys = interp(first, class_vectors(G, ends).unsqueeze(1), num_midpoints)
    images = G(zs.flatten(0, 1), ys.flatten(0, 1)).float()
    folder = os.path.join(samples_root, experiment_name, str(folder_number))
    os.makedirs(folder, exist_ok=True)
    name = f"interp{'' if fix_z else 'Z'}{'' if fix_y else 'Y'}{sheet_number}.jpg"
    path = os.path.join(folder, name)
    save_image(images, path, nrow=m)
    return path


# ------------------------------------------------------------------------------------------------
# The random states of a run
# ------------------------------------------------------------------------------------------------

def rng_state(train_sampler: 'NoiseSampler') -> dict:
    """Every random state a resumed run needs to continue exactly."""
    np_state = np.random.get_state()
    state = {'torch': torch.get_rng_state(),
             'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                       'pos': int(np_state[2]), 'has_gauss': int(np_state[3]),
                       'cached_gaussian': float(np_state[4])},
             'python': random.getstate(),
             'sampler': train_sampler.state_dict()}
    # One process per GPU does not save the CUDA states: reading them would open a context on
    # every GPU from each process, and training draws no random numbers on the GPU.
    if torch.cuda.is_available() and distributed.world_size() == 1:
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, train_sampler: 'NoiseSampler') -> None:
    """Put back the states saved by `rng_state` (absent in the original's checkpoints)."""
    if not state:
        print('Note: the checkpoint has no RNG state (written by the original code): the run '
              'continues from its weights, with fresh noise')
        return
    torch.set_rng_state(state['torch'])
    numpy = state['numpy']
    np.random.set_state(('MT19937', numpy['keys'].numpy().astype(np.uint32), numpy['pos'],
                         numpy['has_gauss'], numpy['cached_gaussian']))
    python = state['python']
    random.setstate((python[0], tuple(python[1]), python[2]))
    train_sampler.load_state_dict(state['sampler'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
