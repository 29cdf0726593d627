"""Augmentations of what D sees, for training with little data: DiffAugment's policies
(--DiffAugment), ADA's pipeline (--ADA) and the mirror of the data (--mirror_augment).

Every transform is a batched tensor operation on the device, differentiable in the images, so G
gets gradients through whatever D sees. Each image draws its own parameters from a
`torch.Generator` that `Augmenter` seeds from (seed, iteration, rank): the draws depend on
nothing but the iteration, so a resumed run augments exactly as an uninterrupted one, with no
generator state to save. Images are in [-1, 1], N x C x H x W (any memory layout).

DiffAugment (Zhao et al. 2020): `color` (brightness, saturation, contrast), `translation` (up
to 1/8 of the side, zero fill) and `cutout` (a square of half the side, zeroed).
ADA (Karras et al. 2020), written from the paper: each of x-flip, 90-degree rotation, integer
translation (up to 1/8, reflected fill), brightness, contrast, saturation and cutout is applied
to each image with probability p, which `ADAController` adjusts to keep D's sign on the reals
near a target.
"""
import threading
from typing import Callable, Dict, Optional

import numpy as np
import torch

# ------------------------------------------------------------------------------------------------
# Random numbers
# ------------------------------------------------------------------------------------------------


def _uniform(x: torch.Tensor, generator: torch.Generator, *shape) -> torch.Tensor:
    """U[0, 1) per image, shaped (N, *shape), float32 on x's device."""
    return torch.rand((x.shape[0], *shape), generator=generator, device=x.device)


def _normal(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn((x.shape[0],), generator=generator, device=x.device)


def _integers(x: torch.Tensor, generator: torch.Generator, low: int, high: int) -> torch.Tensor:
    """One integer in [low, high) per image."""
    return torch.randint(low, high, (x.shape[0],), generator=generator, device=x.device)


def _per_image(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) values broadcast against N x C x H x W images, in their dtype."""
    return values.to(x.dtype).view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------------------
# The transforms
# ------------------------------------------------------------------------------------------------

def brightness(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Add `shift` (one per image) to every pixel."""
    return x + _per_image(shift, x)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's distance from its mean over the channels by `factor`."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_image(factor, x) + mean


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's distance from its mean over all pixels and channels by `factor`."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_image(factor, x) + mean


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              fill: str = 'zero') -> torch.Tensor:
    """Move image i down by dy[i] and right by dx[i] whole pixels: out[i, :, h, w] =
    x[i, :, h - dy[i], w - dx[i]]; pixels that come from outside are zero (`fill` 'zero') or
    the image mirrored at its border ('reflect')."""
    n, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, -1) - dy.view(-1, 1)  # N x H
    cols = torch.arange(width, device=x.device).view(1, -1) - dx.view(-1, 1)  # N x W
    if fill == 'reflect':
        rows, cols = _reflect(rows, height), _reflect(cols, width)
        inside = None
    else:
        inside = (((rows >= 0) & (rows < height)).view(n, 1, height, 1)
                  & ((cols >= 0) & (cols < width)).view(n, 1, 1, width))
        rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indexing puts the indexed dims first: N x H x W x C, back to N x C x H x W.
    out = x.permute(0, 2, 3, 1)[batch, rows.view(n, height, 1), cols.view(n, 1, width)]
    out = out.permute(0, 3, 1, 2)
    return out if inside is None else out * inside.to(x.dtype)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range indices at the border (-1 -> 1, size -> size - 2), for shifts of
    less than the size."""
    if size == 1:
        return torch.zeros_like(index)
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def cutout(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a `size` x `size` square of each image whose top-left corner is (top[i], left[i]);
    the part outside the image is dropped."""
    n, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, -1) - top.view(-1, 1)
    cols = torch.arange(width, device=x.device).view(1, -1) - left.view(-1, 1)
    inside = (((rows >= 0) & (rows < size)).view(n, 1, height, 1)
              & ((cols >= 0) & (cols < size)).view(n, 1, 1, width))
    return x * (~inside).to(x.dtype)


def flip(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Mirror the images where `which` (N booleans) is set, left to right."""
    return torch.where(which.view(-1, 1, 1, 1), x.flip(3), x)


def rotate90(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate image i by turns[i] quarter turns (0 to 3) counter-clockwise (square images)."""
    out = x
    for k in (1, 2, 3):
        out = torch.where((turns == k).view(-1, 1, 1, 1), torch.rot90(x, k, dims=(2, 3)), out)
    return out


# ------------------------------------------------------------------------------------------------
# DiffAugment
# ------------------------------------------------------------------------------------------------

TRANSLATION_RATIO = 0.125  # the largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5  # the cutout square's side, as a fraction of the image's


def _shift_limit(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> int:
    return int(x.shape[2] * ratio + 0.5)


def _cutout_size(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> int:
    return int(x.shape[2] * ratio + 0.5)


def diff_color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness shift U[-0.5, 0.5), saturation factor U[0, 2), contrast factor U[0.5, 1.5)."""
    x = brightness(x, _uniform(x, generator) - 0.5)
    x = saturation(x, _uniform(x, generator) * 2)
    return contrast(x, _uniform(x, generator) + 0.5)


def diff_translation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A shift of each axis by an integer in [-S, S], S = 1/8 of the side; zero fill."""
    limit = _shift_limit(x)
    dy = _integers(x, generator, -limit, limit + 1)
    dx = _integers(x, generator, -limit, limit + 1)
    return translate(x, dy, dx, fill='zero')


def diff_cutout(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A square of half the side zeroed, its centre anywhere in the image (clipped at the
    border)."""
    size = _cutout_size(x)
    # The centre lies in [0, H] for an even side, [0, H - 1] for an odd one.
    top = _integers(x, generator, 0, x.shape[2] + (1 - size % 2)) - size // 2
    left = _integers(x, generator, 0, x.shape[3] + (1 - size % 2)) - size // 2
    return cutout(x, top, left, size)


DIFF_AUGMENT: Dict[str, Callable] = {
    'color': diff_color, 'translation': diff_translation, 'cutout': diff_cutout}


def parse_policy(policy: str) -> list:
    """The transforms of a --DiffAugment policy ('color,translation,cutout'), in order."""
    return [name.strip() for name in policy.split(',') if name.strip()]


def check_policy(policy: str) -> None:
    """ValueError unless every name in the comma list is a DiffAugment transform."""
    names = parse_policy(policy)
    wrong = [name for name in names if name not in DIFF_AUGMENT]
    if wrong or (policy.strip() and not names):
        raise ValueError(f'DiffAugment {policy!r}: {", ".join(map(repr, wrong)) or "empty"} '
                         f'is no transform; give a comma list of {", ".join(DIFF_AUGMENT)}')
    if len(set(names)) != len(names):
        raise ValueError(f'DiffAugment {policy!r} names a transform twice')


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """The --DiffAugment policy's transforms, in the order given, each to every image."""
    for name in parse_policy(policy):
        x = DIFF_AUGMENT[name](x, generator)
    return x


# ------------------------------------------------------------------------------------------------
# ADA's pipeline
# ------------------------------------------------------------------------------------------------

ADA_BRIGHTNESS_STD = 0.2  # brightness: add N(0, 0.2^2)
ADA_CONTRAST_STD = 0.5 * np.log(2)  # contrast: multiply by lognormal(0, (0.5 ln 2)^2)
ADA_SATURATION_STD = np.log(2)  # saturation: multiply by lognormal(0, (ln 2)^2)


def ada_augment(x: torch.Tensor, p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ADA's pipeline at probability `p` (a 0-dim tensor, so that no step waits to read it):
    each transform is applied to each image with probability p, with the paper's parameter
    distributions. With p = 0 the images come back unchanged (every draw is still made, so the
    generator advances alike whatever p is)."""
    p = p.to(x.device, torch.float32)

    def chosen() -> torch.Tensor:
        return _uniform(x, generator) < p

    # Pixel blitting: x-flip, quarter turns, integer translation.
    x = flip(x, chosen() & (_integers(x, generator, 0, 2) == 1))
    if x.shape[2] == x.shape[3]:
        x = rotate90(x, torch.where(chosen(), _integers(x, generator, 0, 4), 0))
    limit = _shift_limit(x)
    move, dy, dx = (chosen(), _integers(x, generator, -limit, limit + 1),
                    _integers(x, generator, -limit, limit + 1))
    x = translate(x, dy * move, dx * move, fill='reflect')
    # Colour.
    x = brightness(x, torch.where(chosen(), _normal(x, generator) * ADA_BRIGHTNESS_STD, 0.))
    # Contrast and saturation only where chosen: a factor of 1, (x - mean) * 1 + mean, is
    # not x to the last bit.
    which = chosen().view(-1, 1, 1, 1)
    x = torch.where(which, contrast(x, torch.exp(_normal(x, generator) * ADA_CONTRAST_STD)), x)
    which = chosen().view(-1, 1, 1, 1)
    x = torch.where(which, saturation(x, torch.exp(_normal(x, generator)
                                                   * ADA_SATURATION_STD)), x)
    # Cutout, the centre anywhere in the image.
    size, cut = _cutout_size(x), chosen()
    top = (_uniform(x, generator) * x.shape[2]).long() - size // 2
    left = (_uniform(x, generator) * x.shape[3]).long() - size // 2
    # An image not chosen gets its square far outside.
    top = torch.where(cut, top, -2 * size - x.shape[2])
    return cutout(x, top, left, size)


class ADAController:
    """ADA's p: after every `interval` iterations, r_t = E[sign(D(reals))] over them, and p
    moves by sign(r_t - target) * (images in the interval) / (kimg * 1000), clamped to [0, 1]:
    p can cross [0, 1] in `kimg` thousand real images. The sums stay on the device until the
    update (one read every `interval` iterations); under torch.distributed they are summed
    over the ranks first, so every rank holds the same p."""

    def __init__(self, target: float = 0.6, interval: int = 4, kimg: float = 500.,
                 device: torch.device = torch.device('cpu')):
        self.target, self.interval, self.kimg = target, interval, kimg
        self.p = torch.zeros((), device=device)
        self.signs = torch.zeros((), device=device)  # sum of sign(D(reals)) since the update
        self.count = torch.zeros((), device=device)  # the images they were taken over
        self.r_t = torch.zeros((), device=device)  # the last update's r_t

    def observe(self, D_real: torch.Tensor) -> None:
        """Add one D step's outputs on the (augmented) reals."""
        D_real = D_real.detach().float()
        self.signs += torch.sign(D_real).sum()
        self.count += D_real.numel()

    def step(self, itr: int, sum_over_ranks: Callable = lambda t: t) -> None:
        """Update p at the end of iteration `itr` when it closes an interval."""
        if itr % self.interval:
            return
        signs, count = sum_over_ranks(torch.stack([self.signs, self.count])).unbind()
        if float(count) == 0:
            return
        self.r_t = signs / count
        adjust = torch.sign(self.r_t - self.target) * count / (self.kimg * 1000)
        self.p = (self.p + adjust).clamp(0, 1)
        self.signs.zero_()
        self.count.zero_()

    def state_dict(self) -> dict:
        return {'p': float(self.p), 'signs': float(self.signs), 'count': float(self.count),
                'r_t': float(self.r_t)}

    def load_state_dict(self, state: dict) -> None:
        for key in ('p', 'signs', 'count', 'r_t'):
            getattr(self, key).fill_(state[key])


# ------------------------------------------------------------------------------------------------
# What the training step calls
# ------------------------------------------------------------------------------------------------

def iteration_seed(seed: int, itr: int, rank: int) -> int:
    """The augmentation generators' seed at iteration `itr` on `rank` (a 63-bit hash, so that
    nearby seeds and iterations give unrelated streams)."""
    state = np.random.SeedSequence([seed % 2**63, itr, rank, 0xA06]).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


class Augmenter:
    """What G_D applies to every batch D sees (`__call__`), and the mirror of the data.

    `start(itr)` begins an iteration: from then on each device draws from its own generator
    seeded by (seed, itr, rank, device), so a resumed run draws the same numbers, and under
    DataParallel each replica's thread draws on its own device.
    """

    def __init__(self, policy: str = '', ada: Optional[ADAController] = None, seed: int = 0,
                 rank: int = 0):
        self.policy, self.ada, self.seed, self.rank = policy, ada, seed, rank
        self.itr = 0
        self._generators: Dict[torch.device, torch.Generator] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.policy) or self.ada is not None

    def start(self, itr: int) -> None:
        self.itr, self._generators = itr, {}

    def generator(self, device: torch.device) -> torch.Generator:
        with self._lock:
            if device not in self._generators:
                index = device.index or 0
                # Even offsets: the mirror's stream is the odd one (+1), so that no device's
                # draws repeat the mirror's (cuda:1 had its seed).
                seed = iteration_seed(self.seed, self.itr, self.rank) + 2 * index
                self._generators[device] = torch.Generator(device).manual_seed(seed % 2**63)
            return self._generators[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        generator = self.generator(x.device)
        if self.policy:
            x = diff_augment(x, self.policy, generator)
        if self.ada is not None:
            x = ada_augment(x, self.ada.p, generator)
        return x


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left to right with probability 1/2."""
    return flip(x, _uniform(x, generator) < 0.5)


def mirror(x: torch.Tensor, seed: int, itr: int, rank: int) -> torch.Tensor:
    """--mirror_augment: each image of iteration `itr`'s batch mirrored with probability 1/2,
    drawn from its own (seed, itr, rank) stream (so any data set, HDF5 too, resumes exactly)."""
    generator = torch.Generator(x.device).manual_seed(
        (iteration_seed(seed, itr, rank) + 1) % 2**63)
    return random_flip(x, generator)
