"""What the limited-data flags add to BigGAN's losses: LeCam (--LeCam), consistency
regularization on reals and fakes (--CR, --bCR_real, --bCR_fake), latent consistency
(--zCR_dis, --zCR_gen) and top-k training of G (--topk); and `DataEfficient`, which holds them
with the augmentations (augment.py) for the training step and its checkpoint.

- LeCam (Tseng et al. 2021): lambda * (E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2]), a_R
  and a_F moving averages (decay --LeCam_decay) of D's mean output on reals and fakes. The
  relu is the authors' code's (their paper writes a plain square); averages are plain copies
  of the last batch before --LeCam_start and the term counts after it, as in that code.
- CR (Zhang et al. 2020): lambda * E[(D(x) - D(T(x)))^2], T a random x-flip and a shift of up
  to 1/8 of the side (zero fill). bCR (Zhao et al. 2021) adds the same on fakes (G(z) held
  fixed); its real term is CR's.
- zCR (Zhao et al. 2021): D gets zCR_dis * E[(D(G(z)) - D(G(z + dz)))^2], G gets
  -zCR_gen * E[(G(z) - G(z + dz))^2] (mean over pixels), dz ~ N(0, zCR_sigma^2).
- top-k (Sinha et al. 2020): G's loss from the k fakes D scores highest; k = the G batch
  times --topk_gamma per epoch, never below --topk_nu of it.
Every term is computed in float32 and D sees the augmented images (augment.Augmenter) in each.
"""
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import augment

# ------------------------------------------------------------------------------------------------
# The terms, on fixed tensors
# ------------------------------------------------------------------------------------------------


def lecam_penalty(D_real: torch.Tensor, D_fake: torch.Tensor, average_real: torch.Tensor,
                  average_fake: torch.Tensor) -> torch.Tensor:
    """E[relu(D_real - average_fake)^2] + E[relu(average_real - D_fake)^2]."""
    return (F.relu(D_real.float() - average_fake).pow(2).mean()
            + F.relu(average_real - D_fake.float()).pow(2).mean())


def consistency(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean squared difference of two equally shaped tensors, in float32."""
    return (a.float() - b.float()).pow(2).mean()


def cr_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """CR's T: each image mirrored with probability 1/2, then shifted by up to 1/8 of the side
    on each axis (zero fill)."""
    x = augment.random_flip(x, generator)
    return augment.diff_translation(x, generator)


def topk_count(batch: int, epoch: int, gamma: float, nu: float) -> int:
    """How many of `batch` fakes G learns from at `epoch`: ceil(batch * gamma^epoch), never
    fewer than ceil(nu * batch)."""
    return min(batch, max(math.ceil(batch * gamma ** epoch), math.ceil(nu * batch)))


def topk(D_fake: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest of D's outputs on the fakes."""
    return D_fake.reshape(-1).topk(k).values


class LeCam:
    """The LeCam term with its moving averages (0-dim tensors on the device)."""

    def __init__(self, weight: float, decay: float = 0.99, start: int = 1000,
                 device: torch.device = torch.device('cpu')):
        self.weight, self.decay, self.start = weight, decay, start
        self.real = torch.zeros((), device=device)
        self.fake = torch.zeros((), device=device)

    def __call__(self, D_real: torch.Tensor, D_fake: torch.Tensor, itr: int,
                 mean_over_ranks: Callable = lambda t: t) -> torch.Tensor:
        """Update the averages with this batch (averaged over the ranks, so that every rank
        holds the same), then the weighted term (zero until `start`)."""
        decay = self.decay if itr >= self.start else 0.
        means = mean_over_ranks(torch.stack([D_real.detach().float().mean(),
                                             D_fake.detach().float().mean()]))
        self.real = torch.lerp(means[0], self.real, decay)
        self.fake = torch.lerp(means[1], self.fake, decay)
        if itr <= self.start:
            return torch.zeros((), device=D_real.device)
        return self.weight * lecam_penalty(D_real, D_fake, self.real, self.fake)

    def state_dict(self) -> dict:
        return {'real': float(self.real), 'fake': float(self.fake)}

    def load_state_dict(self, state: dict) -> None:
        self.real = torch.full((), state['real'], device=self.real.device)
        self.fake = torch.full((), state['fake'], device=self.fake.device)


# ------------------------------------------------------------------------------------------------
# What the training step holds
# ------------------------------------------------------------------------------------------------

# The flags that turn something here on, with the value that leaves it off (their defaults
# in flags.py; restated here because flags.py reaches this module through train_fns' choices,
# and reading the table back would be an import cycle).
FLAGS_OFF = {'DiffAugment': '', 'ADA': False, 'LeCam': 0., 'CR': 0., 'bCR_real': 0.,
             'bCR_fake': 0., 'zCR_dis': 0., 'zCR_gen': 0., 'topk': False, 'mirror_augment': False}


def check_config(config: dict) -> None:
    """The rules between the limited-data flags (ValueError naming them)."""
    if config['num_samples'] and config['data_fraction'] != 1.0:
        raise ValueError(f"--num_samples {config['num_samples']} and --data_fraction "
                         f"{config['data_fraction']} both choose the subset; give one")
    if config['CR'] and config['bCR_real']:
        raise ValueError('--CR and --bCR_real are the same term on the reals; give one')


def wanted(config: dict) -> bool:
    """Whether any limited-data flag is on."""
    return any(config.get(key, off) != off for key, off in FLAGS_OFF.items())


class DataEfficient:
    """The augmentations and extra terms of one run, and their state: ADA's p, LeCam's
    averages and top-k's k, which checkpoints keep (`state_dict`), so a resumed run goes on
    exactly. Random numbers (augmentations, CR's transforms, zCR's noise) come from
    generators seeded by (seed, iteration, rank): nothing to save."""

    def __init__(self, config: dict, device: torch.device, *, rank: int = 0,
                 iters_per_epoch: int = 1,
                 mean_over_ranks: Callable = lambda t: t,
                 sum_over_ranks: Callable = lambda t: t):
        self.config, self.rank, self.device = config, rank, device
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.mean_over_ranks, self.sum_over_ranks = mean_over_ranks, sum_over_ranks
        self.ada = (augment.ADAController(config['ADA_target'], config['ADA_interval'],
                                          config['ADA_kimg'], device)
                    if config['ADA'] else None)
        self.augmenter = augment.Augmenter(config['DiffAugment'], self.ada, config['seed'], rank)
        self.lecam = (LeCam(config['LeCam'], config['LeCam_decay'], config['LeCam_start'],
                            device) if config['LeCam'] else None)
        self.k = None  # top-k's k at the last G step

    @property
    def needs_G_z(self) -> bool:
        """Whether the D step needs the fakes themselves (bCR on fakes, zCR)."""
        return bool(self.config['bCR_fake'] or self.config['zCR_dis'])

    def start(self, itr: int, x: torch.Tensor) -> torch.Tensor:
        """Begin iteration `itr`: seed the generators, and mirror the reals (--mirror_augment)."""
        self.augmenter.start(itr)
        if self.config['mirror_augment']:
            x = augment.mirror(x, self.config['seed'], itr, self.rank)
        return x

    def _noise(self, z: torch.Tensor) -> torch.Tensor:
        """zCR's dz ~ N(0, sigma^2), as z."""
        generator = self.augmenter.generator(z.device)
        return torch.randn(z.shape, generator=generator, device=z.device,
                           dtype=z.dtype) * self.config['zCR_sigma']

    def D_terms(self, GD, itr: int, D_fake: torch.Tensor, D_real: torch.Tensor,
                G_z: Optional[torch.Tensor], z: torch.Tensor, gy: torch.Tensor,
                x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        """The extra D loss of one D micro-batch (ADA also takes its sign statistics here).
        `GD` is the fused G_D: D sees every image through its `discriminate`."""
        config, G = self.config, GD.G
        total = torch.zeros((), device=D_real.device)
        if self.ada is not None:
            self.ada.observe(D_real)
        if self.lecam is not None:
            total = total + self.lecam(D_real, D_fake, itr, self.mean_over_ranks)
        generator = self.augmenter.generator(x.device)
        for weight in (config['CR'], config['bCR_real']):
            if weight:
                total = total + weight * consistency(
                    D_real, GD.discriminate(cr_transform(x, generator), dy))
        if config['bCR_fake']:
            fakes = cr_transform(G_z.detach(), generator)
            total = total + config['bCR_fake'] * consistency(D_fake, GD.discriminate(fakes, gy))
        if config['zCR_dis']:
            with torch.no_grad():
                moved = G(z + self._noise(z), G.shared(gy)).to(G_z.dtype)
            total = total + config['zCR_dis'] * consistency(D_fake, GD.discriminate(moved, gy))
        return total

    def G_loss(self, generator_loss: Callable, GD, D_fake: torch.Tensor,
               G_z: Optional[torch.Tensor], z: torch.Tensor, gy: torch.Tensor,
               itr: int) -> torch.Tensor:
        """G's loss of one G micro-batch: top-k of the fakes' scores, minus zCR's term."""
        config = self.config
        if config['topk']:
            epoch = (itr - 1) // self.iters_per_epoch
            self.k = topk_count(D_fake.shape[0], epoch, config['topk_gamma'], config['topk_nu'])
            D_fake = topk(D_fake, self.k)
        loss = generator_loss(D_fake)
        if config['zCR_gen']:
            moved = GD.G(z + self._noise(z), GD.G.shared(gy))
            loss = loss - config['zCR_gen'] * consistency(G_z, moved)
        return loss

    def end(self, itr: int) -> None:
        """After the iteration: ADA's p update, every --ADA_interval iterations."""
        if self.ada is not None:
            self.ada.step(itr, self.sum_over_ranks)

    def metrics(self) -> dict:
        """What the training log records at each iteration (0-dim tensors, read later)."""
        out = {}
        if self.ada is not None:
            out.update(ADA_p=self.ada.p, ADA_rt=self.ada.r_t)
        if self.lecam is not None:
            out.update(LeCam_real=self.lecam.real, LeCam_fake=self.lecam.fake)
        if self.k is not None:
            out['topk_k'] = torch.tensor(float(self.k), device=self.device)
        return out

    def state_dict(self) -> dict:
        """Plain numbers, so that the checkpoint stays readable anywhere (the original's code
        ignores the key)."""
        state = {}
        if self.ada is not None:
            state['ADA'] = self.ada.state_dict()
        if self.lecam is not None:
            state['LeCam'] = self.lecam.state_dict()
        if self.k is not None:
            state['topk_k'] = self.k
        return state

    def load_state_dict(self, state: dict) -> None:
        """Put back a checkpoint's state; what it lacks (a flag turned on at resume) starts
        fresh."""
        if self.ada is not None and 'ADA' in state:
            self.ada.load_state_dict(state['ADA'])
        if self.lecam is not None and 'LeCam' in state:
            self.lecam.load_state_dict(state['LeCam'])
        self.k = state.get('topk_k', self.k) if self.config['topk'] else None
