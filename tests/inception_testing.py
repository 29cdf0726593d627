"""Helpers for the Inception tests: random-weight networks and a tiny stand-in network.

No real Inception weights exist offline, so the tests check plumbing and maths with random
weights. PyTorch's default conv init shrinks activations by a constant factor per layer
(pool3 would be about 1e-8), so `random_inception` re-draws the convs with He init, which keeps
the features of order 1 and the comparisons meaningful.
"""
import torch
import torch.nn as nn

from inception_metrics import feature_moments
from inception_net import build_inception_net, to_signed_unit, weights_target
from inception_utils import save_moments


def random_inception(kind: str = 'tf', seed: int = 0) -> nn.Module:
    """An Inception network of `kind` with He-initialized random weights, in eval mode."""
    net = build_inception_net(kind)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
    return net


def save_random_weights(path, kind: str = 'tf', seed: int = 0) -> nn.Module:
    """Save a random network's weight file (the layout of the real file) and return the net."""
    net = random_inception(kind, seed)
    torch.save(weights_target(net).state_dict(), path)
    return net


class TinyFeatureNet(nn.Module):
    """A fast stand-in for Inception: images -> (pool N x dim, logits N x classes).

    Accepts what the real networks accept (uint8, or float in [-1, 1]) through the same checks.
    """

    def __init__(self, dim: int = 8, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer('proj', torch.randn(3 * 4 * 4, dim, generator=generator))
        self.register_buffer('head', torch.randn(dim, classes, generator=generator))

    def forward(self, images: torch.Tensor):
        x = nn.functional.adaptive_avg_pool2d(to_signed_unit(images), 4).flatten(1)
        pool = x @ self.proj
        return pool, pool @ self.head


def uniform_images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """n random uint8 images, 3 x size x size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def tiny_features(images):
    with torch.no_grad():
        return TinyFeatureNet()(images)


def write_moments(path, images, **extra):
    """A moments file of `images` under the tiny network, with KID features, marked as made
    with the TF network (unless `extra` says otherwise)."""
    pool, _ = tiny_features(images)
    mu, sigma = feature_moments(pool)
    save_moments(str(path), **{'mu': mu.numpy(), 'sigma': sigma.numpy(),
                               'kid_features': pool.numpy(), 'inception': 'tf', **extra})


class Sampler:
    """sample() for the metrics: fixed float batches in [-1, 1], counting its calls."""

    def __init__(self, images, batch_size):
        self.batches = [(images[i:i + batch_size].float() / 127.5 - 1, None)
                        for i in range(0, len(images), batch_size)]
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.batches[(self.calls - 1) % len(self.batches)]
