"""regularizers.py: LeCam's penalty and moving averages, consistency terms, CR's transform,
top-k, and DataEfficient's D and G terms against direct computations (the same generator
draws replayed), plus the checks between the flags."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import augment
import BigGAN
import flags
import losses
import regularizers
from conftest import ROOT, one_error_line


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread is fastest


def _config(**changes) -> dict:
    """Every flag at its default (all limited-data flags off), then `changes`."""
    config = {key: row.default for key, row in flags.rows().items()}
    config.update(changes)
    return config


class TinyG(nn.Module):
    """A deterministic stand-in for G: G(z, G.shared(y)) -> N x 3 x 8 x 8 in [-1, 1]."""

    def __init__(self, dim_z: int = 6, n_classes: int = 3):
        super().__init__()
        self.dim_z = dim_z
        self.shared = nn.Embedding(n_classes, 4)
        self.linear = nn.Linear(dim_z + 4, 3 * 8 * 8)

    def forward(self, z, y):
        return torch.tanh(self.linear(torch.cat([z, y], 1))).view(-1, 3, 8, 8)


class TinyD(nn.Module):
    """A deterministic stand-in for D (no spectral norm: two calls give the same)."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.linear = nn.Linear(4, 1)
        self.embed = nn.Embedding(n_classes, 4)

    def forward(self, x, y):
        h = torch.relu(self.conv(x)).sum([2, 3])
        return self.linear(h) + (self.embed(y) * h).sum(1, keepdim=True)


def _batch(n: int = 6):
    torch.manual_seed(3)
    G, D = TinyG(), TinyD()
    z, gy = torch.randn(n, G.dim_z), torch.randint(0, 3, (n,))
    x, dy = torch.rand(n, 3, 8, 8) * 2 - 1, torch.randint(0, 3, (n,))
    return G, D, z, gy, x, dy


def _replay(seed: int, itr: int, rank: int = 0) -> torch.Generator:
    """The generator DataEfficient draws from at iteration `itr`, made afresh."""
    return torch.Generator().manual_seed(augment.iteration_seed(seed, itr, rank) % 2**63)


# ------------------------------------------------------------------------------------------------
# The terms on fixed tensors
# ------------------------------------------------------------------------------------------------

def test_lecam_penalty_value_and_gradient():
    real = [0.5, -0.2, 1.5, 0.05]
    fake = [-1.0, 0.3, 0.0, -0.1, 0.8]
    a_R, a_F = 0.25, 0.1
    D_real = torch.tensor(real, requires_grad=True)
    D_fake = torch.tensor(fake, requires_grad=True)
    value = regularizers.lecam_penalty(D_real, D_fake, torch.tensor(a_R), torch.tensor(a_F))
    want = (sum(max(r - a_F, 0) ** 2 for r in real) / len(real)
            + sum(max(a_R - f, 0) ** 2 for f in fake) / len(fake))
    assert float(value.detach()) == pytest.approx(want, rel=1e-6)
    value.backward()
    assert D_real.grad.tolist() == pytest.approx(
        [2 * max(r - a_F, 0) / len(real) for r in real], rel=1e-6)
    assert D_fake.grad.tolist() == pytest.approx(
        [-2 * max(a_R - f, 0) / len(fake) for f in fake], rel=1e-6)


def test_lecam_averages_copy_then_average_and_the_term_starts_after_start():
    weight, decay, start = 0.3, 0.9, 3
    lecam = regularizers.LeCam(weight, decay, start)
    real, fake = 0., 0.
    generator = torch.Generator().manual_seed(0)
    for itr in range(1, 7):
        D_real = torch.randn(5, 1, generator=generator) + itr
        D_fake = torch.randn(5, 1, generator=generator) - itr
        D_real.requires_grad_(True)
        term = lecam(D_real, D_fake, itr)
        m_real, m_fake = float(D_real.detach().mean()), float(D_fake.mean())
        if itr < start:
            real, fake = m_real, m_fake
            assert float(lecam.real) == pytest.approx(m_real, abs=1e-7)
            assert float(lecam.fake) == pytest.approx(m_fake, abs=1e-7)
        else:
            real, fake = decay * real + (1 - decay) * m_real, decay * fake + (1 - decay) * m_fake
            assert float(lecam.real) == pytest.approx(real, rel=1e-5)
            assert float(lecam.fake) == pytest.approx(fake, rel=1e-5)
        if itr <= start:
            assert float(term) == 0.0
            continue
        penalty = (sum(max(r - fake, 0) ** 2 for r in D_real.flatten().tolist()) / 5
                   + sum(max(real - f, 0) ** 2 for f in D_fake.flatten().tolist()) / 5)
        assert penalty > 0
        assert float(term.detach()) == pytest.approx(weight * penalty, rel=1e-5)
        term.backward()
        assert D_real.grad.abs().sum() > 0


def test_lecam_state_round_trip():
    lecam = regularizers.LeCam(0.5, 0.8, 1)
    for itr in (1, 2, 3):
        lecam(torch.randn(4, 1) + 1, torch.randn(4, 1) - 1, itr)
    state = lecam.state_dict()
    assert all(type(value) is float for value in state.values())
    other = regularizers.LeCam(0.5, 0.8, 1)
    other.load_state_dict(state)
    assert other.state_dict() == state
    D_real, D_fake = torch.randn(4, 1), torch.randn(4, 1)
    assert torch.equal(lecam(D_real, D_fake, 4), other(D_real, D_fake, 4))
    assert other.state_dict() == lecam.state_dict()


def test_consistency_is_the_mean_squared_difference():
    a = torch.tensor([[1., 2.], [3., 4.]])
    b = torch.tensor([[1.5, 0.], [3., 7.]], dtype=torch.float64)
    value = regularizers.consistency(a, b)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx((0.25 + 4 + 0 + 9) / 4)
    assert float(regularizers.consistency(a, a.clone())) == 0.0


def test_cr_transform_is_a_flip_and_a_shift():
    n, side = 32, 16
    x = (torch.arange(n * 2 * side * side, dtype=torch.float32) + 1).view(n, 2, side, side)
    out = regularizers.cr_transform(x, torch.Generator().manual_seed(2))
    limit = int(side / 8 + 0.5)
    found = []
    for i in range(n):
        matches = [(flipped, dy, dx) for flipped in (False, True)
                   for dy in range(-limit, limit + 1) for dx in range(-limit, limit + 1)
                   if torch.equal(out[i:i + 1], augment.translate(
                       x[i:i + 1].flip(3) if flipped else x[i:i + 1], torch.tensor([dy]),
                       torch.tensor([dx])))]
        assert len(matches) == 1, i
        found.append(matches[0])
    assert {f for f, _, _ in found} == {False, True}
    shifts = [d for _, dy, dx in found for d in (dy, dx)]
    assert min(shifts) == -limit and max(shifts) == limit


def test_topk_count_schedule():
    # ceil(B gamma^epoch), never below ceil(nu B), never above B.
    assert regularizers.topk_count(16, 0, 0.99, 0.5) == 16
    assert regularizers.topk_count(16, 10, 0.99, 0.5) == 15  # 16 * 0.904 = 14.47
    assert regularizers.topk_count(16, 100, 0.99, 0.5) == 8  # 16 * 0.366 = 5.9 < 8
    assert regularizers.topk_count(10, 1, 0.5, 0.25) == 5
    assert regularizers.topk_count(10, 2, 0.5, 0.25) == 3  # ceil(2.5)
    assert regularizers.topk_count(10, 3, 0.5, 0.25) == 3  # ceil(1.25) = 2 < ceil(2.5)
    assert regularizers.topk_count(10, 3, 0.5, 0.05) == 2
    assert regularizers.topk_count(7, 0, 1.0, 1.0) == 7
    assert regularizers.topk_count(1, 50, 0.5, 0.01) == 1
    ks = [regularizers.topk_count(64, epoch, 0.9, 0.3) for epoch in range(60)]
    assert ks[0] == 64 and ks[-1] == 20  # ceil(19.2)
    assert all(a >= b for a, b in zip(ks, ks[1:])) and len(set(ks)) > 10


def test_topk_picks_the_k_largest():
    D_fake = torch.tensor([[0.3], [-1.], [2.5], [0.7], [-0.2], [1.1]], requires_grad=True)
    best = regularizers.topk(D_fake, 3)
    assert sorted(best.tolist(), reverse=True) == pytest.approx([2.5, 1.1, 0.7])
    best.sum().backward()
    assert D_fake.grad.flatten().tolist() == [0., 0., 1., 1., 0., 1.]


# ------------------------------------------------------------------------------------------------
# DataEfficient
# ------------------------------------------------------------------------------------------------

def _d_terms(config, itr=5, with_G_z=False):
    G, D, z, gy, x, dy = _batch()
    extras = regularizers.DataEfficient(config, torch.device('cpu'))
    x = extras.start(itr, x)
    G_z = G(z, G.shared(gy)).detach()
    D_fake, D_real = D(G_z, gy), D(x, dy)
    GD = BigGAN.G_D(G, D, augment=extras.augmenter)
    term = extras.D_terms(GD, itr, D_fake, D_real, G_z if with_G_z else None, z, gy, x, dy)
    return term, (G, D, z, gy, x, dy, G_z, D_fake, D_real), extras


def test_no_weights_no_term():
    term, _, extras = _d_terms(_config())
    assert float(term) == 0.0
    assert not extras.augmenter and extras.ada is None and extras.lecam is None
    assert extras.state_dict() == {} and extras.metrics() == {}


def test_cr_term_is_the_consistency_of_D_on_transformed_reals():
    seed, itr = 4, 5
    term, (G, D, z, gy, x, dy, G_z, D_fake, D_real), _ = _d_terms(_config(CR=2.5, seed=seed),
                                                                  itr)
    moved = regularizers.cr_transform(x, _replay(seed, itr))
    want = 2.5 * ((D_real - D(moved, dy)) ** 2).mean()
    assert float(term.detach()) > 0
    assert torch.allclose(term, want, rtol=1e-6)
    # The term trains D: its gradient reaches D's weights (the output bias cancels out of
    # the difference).
    term.backward()
    for weight in (D.conv.weight, D.conv.bias, D.linear.weight, D.embed.weight):
        assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert float(D.linear.bias.grad.abs().sum()) < 1e-6
    # bCR's term on reals is the same term.
    same, _, _ = _d_terms(_config(bCR_real=2.5, seed=seed), itr)
    assert torch.equal(same, term)
    # Another iteration transforms otherwise.
    other, _, _ = _d_terms(_config(CR=2.5, seed=seed), itr + 1)
    assert not torch.equal(other, term)


def test_cr_with_diffaugment_shows_D_the_augmented_transform():
    seed, itr = 1, 2
    term, (G, D, z, gy, x, dy, G_z, D_fake, D_real), _ = _d_terms(
        _config(CR=1.0, DiffAugment='color,cutout', seed=seed), itr)
    generator = _replay(seed, itr)
    moved = augment.diff_augment(regularizers.cr_transform(x, generator), 'color,cutout',
                                 generator)
    assert torch.allclose(term, ((D_real - D(moved, dy)) ** 2).mean(), rtol=1e-6)


def test_bcr_fake_and_zcr_dis_terms():
    seed, itr = 0, 9
    term, (G, D, z, gy, x, dy, G_z, D_fake, D_real), extras = _d_terms(
        _config(bCR_fake=1.5, zCR_dis=3.0, zCR_sigma=0.1, seed=seed), itr, with_G_z=True)
    assert extras.needs_G_z
    generator = _replay(seed, itr)
    bcr = 1.5 * ((D_fake - D(regularizers.cr_transform(G_z, generator), gy)) ** 2).mean()
    dz = torch.randn(z.shape, generator=generator) * 0.1
    zcr = 3.0 * ((D_fake - D(G(z + dz, G.shared(gy)), gy)) ** 2).mean()
    assert float(bcr.detach()) > 0 and float(zcr.detach()) > 0
    assert torch.allclose(term, bcr + zcr, rtol=1e-6)


def test_ada_observes_the_reals_in_the_d_step():
    _, (G, D, z, gy, x, dy, G_z, D_fake, D_real), extras = _d_terms(_config(ADA=True))
    assert float(extras.ada.count) == D_real.numel()
    assert float(extras.ada.signs) == float(torch.sign(D_real.detach()).sum())


def test_zcr_gen_lowers_the_g_loss_by_its_term():
    seed, itr = 2, 7
    G, D, z, gy, x, dy = _batch()
    _, generator_loss = losses.get_losses('hinge')
    losses_at = {}
    for weight in (0., 0.5):
        extras = regularizers.DataEfficient(_config(zCR_gen=weight, zCR_sigma=0.2, seed=seed),
                                            torch.device('cpu'))
        extras.start(itr, x)
        G.zero_grad()
        G_z = G(z, G.shared(gy))
        loss = extras.G_loss(generator_loss, BigGAN.G_D(G, D), D(G_z, gy), G_z, z, gy, itr)
        loss.backward()
        losses_at[weight] = loss.detach()
    dz = torch.randn(z.shape, generator=_replay(seed, itr)) * 0.2
    with torch.no_grad():
        G_z = G(z, G.shared(gy))
        difference = ((G_z - G(z + dz, G.shared(gy))) ** 2).mean()
    assert float(difference) > 0
    assert losses_at[0.5] < losses_at[0.]
    assert torch.allclose(losses_at[0.5], losses_at[0.] - 0.5 * difference, rtol=1e-6)


def test_topk_g_loss_uses_the_k_best_fakes_by_epoch():
    _, generator_loss = losses.get_losses('hinge')
    extras = regularizers.DataEfficient(_config(topk=True, topk_gamma=0.5, topk_nu=0.25),
                                        torch.device('cpu'), iters_per_epoch=2)
    D_fake = torch.tensor([[0.1], [0.9], [-0.4], [0.3], [2.0], [-1.0], [0.5], [0.2]])
    for itr, k in ((1, 8), (2, 8), (3, 4), (5, 2), (7, 2), (20, 2)):
        loss = extras.G_loss(generator_loss, None, D_fake, None, None, None, itr)
        assert extras.k == k
        best = sorted(D_fake.flatten().tolist(), reverse=True)[:k]
        assert float(loss) == pytest.approx(-sum(best) / k)
    assert extras.state_dict() == {'topk_k': 2}
    assert float(extras.metrics()['topk_k']) == 2.0


def test_state_dict_round_trip():
    config = _config(ADA=True, ADA_interval=1, ADA_kimg=0.01, LeCam=0.3, LeCam_start=0,
                     topk=True)
    one = regularizers.DataEfficient(config, torch.device('cpu'))
    G, D, z, gy, x, dy = _batch()
    D_fake, D_real = D(G(z, G.shared(gy)), gy), D(x, dy)
    one.start(1, x)
    GD = BigGAN.G_D(G, D, augment=one.augmenter)
    one.D_terms(GD, 1, D_fake, D_real, None, z, gy, x, dy)
    one.G_loss(lambda d: -d.mean(), GD, D_fake, None, z, gy, 1)
    one.end(1)
    state = one.state_dict()
    assert set(state) == {'ADA', 'LeCam', 'topk_k'}
    two = regularizers.DataEfficient(config, torch.device('cpu'))
    two.load_state_dict(state)
    assert two.state_dict() == state
    assert set(one.metrics()) == {'ADA_p', 'ADA_rt', 'LeCam_real', 'LeCam_fake', 'topk_k'}


# ------------------------------------------------------------------------------------------------
# Flag checks
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('changes, names', [
    ({'num_samples': 10, 'data_fraction': 0.5}, ('--num_samples', '--data_fraction')),
    ({'CR': 1.0, 'bCR_real': 1.0}, ('--CR', '--bCR_real'))])
def test_check_config(changes, names):
    regularizers.check_config(_config())
    regularizers.check_config(_config(num_samples=10))
    regularizers.check_config(_config(CR=1.0, bCR_fake=1.0))
    with pytest.raises(ValueError) as error:
        regularizers.check_config(_config(**changes))
    assert all(name in str(error.value) for name in names)


def test_a_cli_conflict_is_one_error_line():
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--CR', '1',
                             '--bCR_real', '1'], capture_output=True, text=True, cwd=ROOT)
    one_error_line(result, '--CR', '--bCR_real')
