"""augment.py: the pixel transforms against direct loops, DiffAugment's parameter ranges, the
policy check, gradients into G through every augmentation, ADA's pipeline and controller, and
the (seed, itr, rank) determinism of Augmenter and mirror."""
import itertools
import math

import pytest
import torch

import augment
import BigGAN
import utils


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread is fastest


def _distinct(n: int, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    """Images whose pixels are all different and all positive (so zero means 'filled')."""
    return (torch.arange(n * c * h * w, dtype=torch.float32) + 1).view(n, c, h, w)


def _reflect(j: int, size: int) -> int:
    if j < 0:
        j = -j
    if j >= size:
        j = 2 * (size - 1) - j
    return j


def _translate_loop(x, dy, dx, fill):
    n, c, height, width = x.shape
    out = torch.zeros_like(x)
    for i in range(n):
        for h in range(height):
            for w in range(width):
                src_h, src_w = h - int(dy[i]), w - int(dx[i])
                if fill == 'reflect':
                    src_h, src_w = _reflect(src_h, height), _reflect(src_w, width)
                elif not (0 <= src_h < height and 0 <= src_w < width):
                    continue
                out[i, :, h, w] = x[i, :, src_h, src_w]
    return out


# ------------------------------------------------------------------------------------------------
# The transforms with given parameters
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fill', ['zero', 'reflect'])
def test_translate_moves_pixels_as_a_direct_loop(fill):
    x = _distinct(6, h=7, w=9)
    dy = torch.tensor([0, 1, -2, 3, -1, 6])
    dx = torch.tensor([0, -3, 2, 1, 8, -4])
    expected = _translate_loop(x, dy, dx, fill)
    assert torch.equal(augment.translate(x, dy, dx, fill=fill), expected)
    # A plain shift, spelled out: image 1 moved one row down and three columns left.
    if fill == 'zero':
        out = augment.translate(x, dy, dx)
        assert torch.equal(out[1, :, 1:, :6], x[1, :, :-1, 3:])
        assert (out[1, :, 0] == 0).all() and (out[1, :, :, 6:] == 0).all()


def test_translate_works_on_channels_last_images():
    x = _distinct(3, h=6, w=6)
    dy, dx = torch.tensor([1, -1, 2]), torch.tensor([2, 0, -3])
    last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(augment.translate(last, dy, dx), augment.translate(x, dy, dx))


def test_cutout_zeroes_exactly_the_square_clipped_at_the_border():
    x = _distinct(5, h=10, w=12)
    top = torch.tensor([2, -2, 7, 0, -20])
    left = torch.tensor([3, 9, -1, 0, 0])
    size = 4
    out = augment.cutout(x, top, left, size)
    for i in range(5):
        for h in range(10):
            for w in range(12):
                inside = (int(top[i]) <= h < int(top[i]) + size
                          and int(left[i]) <= w < int(left[i]) + size)
                want = torch.zeros(3) if inside else x[i, :, h, w]
                assert torch.equal(out[i, :, h, w], want), (i, h, w)
    assert (out[0] == 0).sum() == 3 * size * size  # inside the image: the whole square
    assert (out[1] == 0).sum() == 3 * 2 * 3  # rows 0-1, columns 9-11
    assert torch.equal(out[4], x[4])  # the square is outside the image


def test_flip_and_rotate90_match_torch_per_image():
    x = _distinct(4, h=5, w=5)
    which = torch.tensor([True, False, True, False])
    out = augment.flip(x, which)
    for i in range(4):
        want = torch.flip(x[i], dims=(2,)) if which[i] else x[i]
        assert torch.equal(out[i], want)
    turns = torch.tensor([0, 1, 2, 3])
    out = augment.rotate90(x, turns)
    for i in range(4):
        assert torch.equal(out[i], torch.rot90(x[i], int(turns[i]), dims=(1, 2)))


# ------------------------------------------------------------------------------------------------
# DiffAugment
# ------------------------------------------------------------------------------------------------

def _slope(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, the least-squares factor f with b = f * a."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1) / (a * a).sum(1)


def test_color_parameters_lie_in_their_ranges():
    torch.manual_seed(1)
    n = 256
    x = torch.rand(n, 3, 6, 6) * 2 - 1
    out = augment.diff_color(x, torch.Generator().manual_seed(5))
    # Brightness b moves every mean by b; saturation keeps each pixel's channel mean, so
    # contrast c scales the channel means' spread around the image mean, and c * s the
    # pixels' spread around their channel mean.
    shift = (out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))).double()
    pixel_x, pixel_out = x.mean(1, keepdim=True), out.mean(1, keepdim=True)
    contrast = _slope(pixel_x - x.mean(dim=(1, 2, 3), keepdim=True),
                      pixel_out - out.mean(dim=(1, 2, 3), keepdim=True))
    saturation = _slope(x - pixel_x, out - pixel_out) / contrast
    for values, low, high in ((shift, -0.5, 0.5), (saturation, 0., 2.), (contrast, 0.5, 1.5)):
        assert values.min() >= low - 1e-4 and values.max() < high + 1e-4
        # Spread over the range, not stuck at one value.
        assert values.min() < low + 0.1 * (high - low) and values.max() > high - 0.1 * (high - low)

    # The same numbers, replayed from the generator through the single transforms.
    replay = torch.Generator().manual_seed(5)
    b = torch.rand(n, generator=replay) - 0.5
    s = torch.rand(n, generator=replay) * 2
    c = torch.rand(n, generator=replay) + 0.5
    assert torch.allclose(shift, b.double(), atol=1e-4)
    assert torch.allclose(saturation, s.double(), atol=1e-3)
    assert torch.allclose(contrast, c.double(), atol=1e-4)
    assert torch.equal(out, augment.contrast(augment.saturation(augment.brightness(x, b), s), c))


def test_single_colour_transforms_recover_their_parameters():
    x = torch.rand(4, 3, 5, 5) * 2 - 1
    values = torch.tensor([-0.5, 0.1, 0.25, 0.49])
    assert torch.allclose(augment.brightness(x, values) - x, values.view(-1, 1, 1, 1)
                          .expand_as(x))
    mean = x.mean(1, keepdim=True)
    out = augment.saturation(x, values + 1)
    assert torch.allclose(out.mean(1, keepdim=True), mean, atol=1e-6)
    assert torch.allclose(_slope(x - mean, out - mean).float(), values + 1, atol=1e-5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = augment.contrast(x, values + 1)
    assert torch.allclose(_slope(x - mean, out - mean).float(), values + 1, atol=1e-5)


def _recover_shift(x: torch.Tensor, out: torch.Tensor):
    """(dy, dx) of an image of distinct positive pixels moved with zero fill."""
    h, w = (out[0] != 0).nonzero()[0].tolist()
    source = (x[0] == out[0, h, w]).nonzero()
    assert len(source) == 1
    return h - int(source[0, 0]), w - int(source[0, 1])


@pytest.mark.parametrize('side', [16, 20])
def test_diff_translation_shifts_by_at_most_an_eighth(side):
    n = 64
    x = _distinct(n, c=2, h=side, w=side)
    out = augment.diff_translation(x, torch.Generator().manual_seed(3))
    limit = int(side / 8 + 0.5)
    shifts = []
    for i in range(n):
        dy, dx = _recover_shift(x[i], out[i])
        assert abs(dy) <= limit and abs(dx) <= limit
        assert torch.equal(out[i:i + 1], augment.translate(x[i:i + 1], torch.tensor([dy]),
                                                           torch.tensor([dx]), 'zero'))
        shifts.append((dy, dx))
    for axis in zip(*shifts):  # the whole range is drawn, on each axis
        assert min(axis) == -limit and max(axis) == limit


@pytest.mark.parametrize('side', [16, 18])
def test_diff_cutout_zeroes_a_square_of_half_the_side(side):
    n = 256
    x = _distinct(n, c=2, h=side, w=side)
    out = augment.diff_cutout(x, torch.Generator().manual_seed(4))
    size = int(side / 2 + 0.5)
    whole, clipped = 0, {}
    for i in range(n):
        zero = out[i, 0] == 0
        assert torch.equal(zero, out[i, 1] == 0)  # every channel alike
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        # One rectangle of consecutive rows and columns, zero inside, untouched outside.
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()
        box = torch.zeros_like(zero)
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        assert torch.equal(zero, box)
        assert torch.equal(out[i][:, ~box], x[i][:, ~box])
        for axis, index in enumerate((rows, cols)):
            assert len(index) <= size
            if len(index) < size:  # clipped: it touches the border
                assert index[0] == 0 or index[-1] == side - 1
                border = (axis, int(index[0]) == 0)
                clipped[border] = min(clipped.get(border, size), len(index))
            assert len(index) >= size - size // 2  # the centre is inside the image
        whole += len(rows) == size and len(cols) == size
    # Squares wholly inside, and squares clipped at each of the four borders, down to the
    # centre on the border (DiffAugment's centre lies in [0, side] for an even size).
    assert whole
    assert clipped == {(axis, top): size - size // 2 for axis in (0, 1) for top in (0, 1)}


def test_check_policy():
    for good in ('color,translation,cutout', 'translation,cutout', 'cutout', ' color ', ''):
        augment.check_policy(good)
    for bad in ('colr', 'color,colr', 'color,color', ',', 'translation, ,translation'):
        with pytest.raises(ValueError, match='DiffAugment'):
            augment.check_policy(bad)


def test_the_parser_rejects_an_unknown_transform():
    """The flag table's check (train.py turns the ValueError into one `error:` line and exit
    status 2, as tests/test_regularizers.py checks for its flags)."""
    with pytest.raises(ValueError, match="--DiffAugment 'colr'"):
        utils.parse_config(['--DiffAugment', 'colr'])


# ------------------------------------------------------------------------------------------------
# Gradients into G
# ------------------------------------------------------------------------------------------------

def _tiny_nets():
    torch.manual_seed(0)
    G = BigGAN.Generator(G_ch=4, dim_z=16, resolution=32, G_attn='0', n_classes=3)
    D = BigGAN.Discriminator(D_ch=4, resolution=32, D_attn='0', n_classes=3)
    return G, D


@pytest.mark.parametrize('how', ['color', 'translation', 'cutout', 'ADA'])
def test_gradients_reach_G_through_every_transform(how):
    G, D = _tiny_nets()
    if how == 'ADA':
        ada = augment.ADAController()
        ada.p.fill_(1.)
        augmenter = augment.Augmenter('', ada, seed=0)
    else:
        augmenter = augment.Augmenter(how, seed=0)
    augmenter.start(1)
    seen = []
    D.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    GD = BigGAN.G_D(G, D, augment=augmenter)
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    D_fake, G_z = GD(z, y, train_G=True, return_G_z=True)
    assert not torch.equal(seen[0], G_z.detach())  # D saw augmented fakes
    (-D_fake.mean()).backward()
    grads = {name: p.grad for name, p in G.named_parameters()}
    assert all(g is not None for g in grads.values())
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    assert all(grad.abs().sum() > 0 for grad in grads.values()), \
        [name for name, grad in grads.items() if grad.abs().sum() == 0]


# ------------------------------------------------------------------------------------------------
# ADA
# ------------------------------------------------------------------------------------------------

def test_ada_augment_p0_is_identity_p1_changes_and_seed_repeats():
    x = torch.rand(16, 3, 16, 16) * 2 - 1
    same = augment.ada_augment(x, torch.tensor(0.), torch.Generator().manual_seed(0))
    assert torch.equal(same, x)
    one = augment.ada_augment(x, torch.tensor(1.), torch.Generator().manual_seed(0))
    assert not torch.equal(one, x)
    assert all(not torch.equal(one[i], x[i]) for i in range(16))  # every image transformed
    again = augment.ada_augment(x, torch.tensor(1.), torch.Generator().manual_seed(0))
    assert torch.equal(one, again)
    other = augment.ada_augment(x, torch.tensor(1.), torch.Generator().manual_seed(1))
    assert not torch.equal(one, other)


def test_ada_augment_is_the_papers_pipeline_per_image():
    """Replayed from the generator: each transform applied where its draw is below p, with
    the paper's parameters (x-flip, quarter turns, integer translation up to 1/8 with
    reflection, brightness N(0, 0.2^2), contrast lognormal(0, (0.5 ln 2)^2), saturation
    lognormal(0, (ln 2)^2), cutout of half the side)."""
    n, side, p = 64, 16, 0.5
    x = torch.rand(n, 3, side, side) * 2 - 1
    out = augment.ada_augment(x, torch.tensor(p), torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)

    def uniform():
        return torch.rand(n, generator=g)

    def integers(low, high):
        return torch.randint(low, high, (n,), generator=g)

    def normal():
        return torch.randn(n, generator=g)

    def where(which, y, x):
        return torch.where(which.view(-1, 1, 1, 1), y, x)
    want = augment.flip(x, (uniform() < p) & (integers(0, 2) == 1))
    want = augment.rotate90(want, torch.where(uniform() < p, integers(0, 4), 0))
    move, dy, dx = uniform() < p, integers(-2, 3), integers(-2, 3)
    want = augment.translate(want, dy * move, dx * move, fill='reflect')
    want = where(uniform() < p, augment.brightness(want, normal() * 0.2), want)
    want = where(uniform() < p, augment.contrast(want, torch.exp(normal() * 0.5
                                                                 * math.log(2))), want)
    want = where(uniform() < p, augment.saturation(want, torch.exp(normal() * math.log(2))),
                 want)
    cut = uniform() < p
    top = (uniform() * side).long() - 4
    left = (uniform() * side).long() - 4
    want = where(cut, augment.cutout(want, top, left, 8), want)
    assert torch.allclose(out, want, atol=1e-6)
    assert 0 < int(cut.sum()) < n and 0 < int(move.sum()) < n


def test_ada_augment_draws_alike_whatever_p():
    """Every draw is made at any p: the generator ends in the same state."""
    x = torch.rand(4, 3, 8, 8)
    states = []
    for p in (0., 0.3, 1.):
        generator = torch.Generator().manual_seed(7)
        augment.ada_augment(x, torch.tensor(p), generator)
        states.append(generator.get_state())
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], states[2])


def test_ada_controller_sign_rule():
    kimg, interval, batch = 0.5, 3, 4
    ada = augment.ADAController(target=0.6, interval=interval, kimg=kimg)
    step = interval * batch / (kimg * 1000)
    positive = torch.full((batch, 1), 2.)
    for itr in range(1, 2 * interval + 1):
        ada.observe(positive)
        ada.step(itr)
        if itr % interval:  # no update inside an interval
            assert float(ada.count) == batch * (itr % interval)
        else:
            assert float(ada.count) == 0 and float(ada.signs) == 0
        assert float(ada.p) == pytest.approx(step * (itr // interval), rel=1e-6)
    assert float(ada.r_t) == 1.0
    # Mostly negative outputs: r_t is the mean sign, and p falls by the same step.
    mixed = torch.tensor([[-1.], [-3.], [0.5], [-0.1]])
    for itr in range(2 * interval + 1, 3 * interval + 1):
        ada.observe(mixed)
        ada.step(itr)
    assert float(ada.r_t) == pytest.approx(-0.5)
    assert float(ada.p) == pytest.approx(step, rel=1e-5)
    for itr in range(3 * interval + 1, 6 * interval + 1):
        ada.observe(-positive)
        ada.step(itr)
    assert float(ada.p) == 0.0 and float(ada.r_t) == -1.0  # clamped at 0


def test_ada_controller_clamps_at_one_and_skips_empty_intervals():
    ada = augment.ADAController(target=0.6, interval=2, kimg=0.001)  # one step: 8 / 1
    ada.observe(torch.ones(8))
    ada.step(1)
    assert float(ada.p) == 0.0
    ada.step(2)
    assert float(ada.p) == 1.0
    ada.observe(torch.ones(8))
    ada.step(4)
    assert float(ada.p) == 1.0
    ada.step(6)  # nothing observed: nothing to update on
    assert float(ada.p) == 1.0 and float(ada.r_t) == 1.0


def test_ada_controller_state_round_trip():
    ada = augment.ADAController(target=0.6, interval=4, kimg=0.1)
    for itr in range(1, 7):
        ada.observe(torch.tensor([1., 1., 2., 3.]) * (1 if itr <= 4 else -1))
        ada.step(itr)
    state = ada.state_dict()
    assert all(type(v) is float for v in state.values())
    assert state['count'] == 8 and state['signs'] == -8 and state['p'] == pytest.approx(0.16)
    other = augment.ADAController(target=0.6, interval=4, kimg=0.1)
    other.load_state_dict(state)
    assert other.state_dict() == state
    for controller in (ada, other):
        controller.observe(torch.tensor([1., 1., 1., -1.]))
        controller.observe(torch.tensor([1., 1., 1., -1.]))
        controller.step(8)
    assert other.state_dict() == ada.state_dict()


# ------------------------------------------------------------------------------------------------
# Augmenter and mirror
# ------------------------------------------------------------------------------------------------

def _augmented(seed, itr, rank, x):
    ada = augment.ADAController()
    ada.p.fill_(0.5)
    augmenter = augment.Augmenter('color,translation,cutout', ada, seed=seed, rank=rank)
    augmenter.start(itr)
    return augmenter(x)


def test_augmenter_depends_on_seed_iteration_and_rank_only():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    base = _augmented(0, 5, 0, x)
    torch.rand(100)  # the global RNG plays no part
    assert torch.equal(base, _augmented(0, 5, 0, x))
    for seed, itr, rank in ((0, 6, 0), (0, 5, 1), (1, 5, 0)):
        assert not torch.equal(base, _augmented(seed, itr, rank, x))
    # Each start begins the stream again; calls within one iteration go on along it.
    augmenter = augment.Augmenter('color', seed=0)
    augmenter.start(3)
    first, second = augmenter(x), augmenter(x)
    assert not torch.equal(first, second)
    augmenter.start(3)
    assert torch.equal(augmenter(x), first)
    assert not augment.Augmenter() and augment.Augmenter('cutout')


def test_mirror_flips_about_half_deterministically():
    n = 200
    x = _distinct(n, c=1, h=4, w=4)
    out = augment.mirror(x, seed=0, itr=7, rank=0)
    flipped = [not torch.equal(out[i], x[i]) for i in range(n)]
    for i in range(n):
        assert torch.equal(out[i], x[i].flip(2) if flipped[i] else x[i])
    assert 70 < sum(flipped) < 130
    assert torch.equal(out, augment.mirror(x, seed=0, itr=7, rank=0))
    for seed, itr, rank in ((0, 8, 0), (0, 7, 1), (2, 7, 0)):
        assert not torch.equal(out, augment.mirror(x, seed=seed, itr=itr, rank=rank))


def test_iteration_seeds_differ():
    seeds = {augment.iteration_seed(seed, itr, rank)
             for seed, itr, rank in itertools.product(range(3), range(20), range(2))}
    assert len(seeds) == 3 * 20 * 2
