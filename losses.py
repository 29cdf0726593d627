"""GAN losses, chosen by --loss: hinge (the original's default) and DCGAN (non-saturating).

Each entry is (discriminator_loss, generator_loss). The discriminator loss returns the real and
fake parts separately, as the original logs them. Losses are computed in float32 whatever the
autocast dtype.
"""
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F


def loss_hinge_dis(dis_fake: torch.Tensor, dis_real: torch.Tensor):
    loss_real = torch.mean(F.relu(1. - dis_real.float()))
    loss_fake = torch.mean(F.relu(1. + dis_fake.float()))
    return loss_real, loss_fake


def loss_hinge_gen(dis_fake: torch.Tensor) -> torch.Tensor:
    return -torch.mean(dis_fake.float())


def loss_dcgan_dis(dis_fake: torch.Tensor, dis_real: torch.Tensor):
    loss_real = torch.mean(F.softplus(-dis_real.float()))
    loss_fake = torch.mean(F.softplus(dis_fake.float()))
    return loss_real, loss_fake


def loss_dcgan_gen(dis_fake: torch.Tensor) -> torch.Tensor:
    return torch.mean(F.softplus(-dis_fake.float()))


LOSSES: Dict[str, Tuple[Callable, Callable]] = {
    'hinge': (loss_hinge_dis, loss_hinge_gen),
    'dcgan': (loss_dcgan_dis, loss_dcgan_gen),
}


# The original's module-level names (it always trained with hinge); training picks by --loss.
discriminator_loss, generator_loss = LOSSES['hinge']


def get_losses(name: str) -> Tuple[Callable, Callable]:
    """(discriminator_loss, generator_loss) for --loss name."""
    if name not in LOSSES:
        raise ValueError(f'--loss {name!r} is not a loss; choose one of {sorted(LOSSES)}')
    return LOSSES[name]
