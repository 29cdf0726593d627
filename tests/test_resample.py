"""The fused resampling convolutions (resample.py) compute what the original's blocks compute:
exactly in float64 (1e-12), within float32 rounding in float32, with the same SN updates; layers
they do not cover fall back to the original formulation."""
import copy
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import BigGANdeep
import layers
import resample

F64 = torch.float64


@pytest.fixture(autouse=True)
def always_fuse(monkeypatch):
    """Fuse whatever the input's size (training at small inputs runs the original way)."""
    monkeypatch.setattr(resample, 'MIN_POSITIONS', 0)


@pytest.fixture
def reference():
    """Run a callable with the original formulation (fuse off), then restore."""
    def run(fn, *args):
        old, resample.fuse = resample.fuse, False
        try:
            return fn(*args)
        finally:
            resample.fuse = old
    return run


@pytest.mark.parametrize('sn', [False, True])
def test_upsample_conv_and_conv_avgpool_are_exact_in_float64(sn):
    make = (functools.partial(layers.SNConv2d, kernel_size=3, padding=1) if sn
            else functools.partial(nn.Conv2d, kernel_size=3, padding=1))
    conv = make(5, 7).double().eval()  # eval: SN does not move u, so both calls see one W
    x = torch.randn(3, 5, 6, 4, dtype=F64)
    up = conv(F.interpolate(x, scale_factor=2))
    assert (resample.upsample_conv(x, conv) - up).abs().max() < 1e-12
    pooled = F.avg_pool2d(conv(x), 2)
    assert (resample.conv_avgpool(x, conv) - pooled).abs().max() < 1e-12


def _same_grads(one: nn.Module, two: nn.Module, tol: float) -> None:
    """Relative to the largest gradient: conv biases in front of a BN get true gradients of 0
    and rounding noise, which no elementwise tolerance would accept."""
    scale = max(p.grad.abs().max() for p in one.parameters() if p.grad is not None)
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert (p.grad - q.grad).abs().max() / scale < tol, name


def _blocks(dtype):
    conv = functools.partial(layers.SNConv2d, kernel_size=3, padding=1)
    bn = functools.partial(layers.ccbn, input_size=6, which_linear=nn.Linear)
    relu = nn.ReLU()
    return {
        'G': (layers.GBlock(8, 4, which_conv=conv, which_bn=bn, activation=relu,
                            upsample=resample.upsample_nearest), 'y'),
        'G same width': (layers.GBlock(4, 4, which_conv=conv, which_bn=bn, activation=relu,
                                       upsample=resample.upsample_nearest), 'y'),
        'D first': (layers.DBlock(3, 8, which_conv=conv, activation=relu, preactivation=False,
                                  downsample=nn.AvgPool2d(2)), None),
        'D preactivated': (layers.DBlock(4, 8, which_conv=conv, activation=relu,
                                         preactivation=True, downsample=nn.AvgPool2d(2)), None),
        'deep G': (BigGANdeep.GBlock(8, 4, which_conv=conv, which_bn=bn, activation=relu,
                                     upsample=resample.upsample_nearest), 'y'),
    }


@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('kind', ['G', 'G same width', 'D first', 'D preactivated', 'deep G'])
def test_blocks_fused_equal_the_original_formulation(reference, kind, dtype, tol):
    """Train mode (batch statistics, SN updates), forward and every gradient."""
    block, conditional = _blocks(dtype)[kind]
    block = block.to(dtype).train()
    twin = copy.deepcopy(block)
    channels = block.in_channels
    x = torch.randn(4, channels, 8, 8, dtype=dtype)
    y = torch.randn(4, 6, dtype=dtype)
    args = (x, y) if conditional else (x,)
    fused = block(*args)
    original = reference(twin, *args)
    assert (fused - original).abs().max() / original.abs().max() < tol
    grad = torch.randn_like(fused)
    fused.backward(grad)
    original.backward(grad)
    _same_grads(block, twin, 50 * tol)  # a gradient sums many products: more rounding
    for (name, buf), twin_buf in zip(block.named_buffers(), twin.buffers()):
        assert torch.allclose(buf, twin_buf, rtol=tol, atol=tol), name  # one SN step each


def test_layers_the_rewrites_do_not_cover_run_the_original_way(reference):
    conv5 = functools.partial(nn.Conv2d, kernel_size=5, padding=2)
    block = layers.GBlock(4, 4, which_conv=conv5, which_bn=layers.bn, activation=nn.ReLU(),
                          upsample=resample.upsample_nearest).double()
    x = torch.randn(2, 4, 4, 4, dtype=F64)
    assert not resample.fusable_upsample(x, block.conv1, block.upsample)
    assert torch.allclose(block(x, None), reference(block, x, None), rtol=1e-12, atol=1e-12)
    pool3 = layers.DBlock(4, 4, which_conv=layers.SNConv2d, activation=nn.ReLU(),
                          preactivation=True, downsample=nn.AvgPool2d(3))
    assert not resample.fusable_avgpool(x, pool3.conv2, pool3.downsample)
    conv3 = functools.partial(nn.Conv2d, kernel_size=3, padding=1)
    custom_up = layers.GBlock(4, 4, which_conv=conv3, which_bn=layers.bn,
                              activation=nn.ReLU(), upsample=nn.Upsample(scale_factor=2))
    assert not resample.fusable_upsample(x, custom_up.conv1, custom_up.upsample)


def test_fused_blocks_count_fewer_flops():
    from torch.utils.flop_counter import FlopCounterMode
    block, _ = _blocks(torch.float32)['G']
    x, y = torch.randn(2, 8, 8, 8), torch.randn(2, 6)

    def flops(fuse):
        old, resample.fuse = resample.fuse, fuse
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                block(x, y)
            return counter.get_total_flops()
        finally:
            resample.fuse = old
    # Batch 2, 16 x 16 out: conv1 does 16 / 36 of its multiply-adds, the shortcut 1 / 4.
    conv1, shortcut = 2 * 9 * 8 * 4 * 256, 2 * 8 * 4 * 256
    saved = conv1 - conv1 * 16 // 36 + shortcut - shortcut // 4
    assert flops(False) - flops(True) == 2 * saved  # 2 FLOPs a multiply-add


def test_small_inputs_in_training_run_the_original_way(monkeypatch):
    """Below MIN_POSITIONS the kernel build would cost more than it saves, while it is rebuilt
    at every call; in eval mode without gradients the kernel is cached, so any size fuses."""
    monkeypatch.setattr(resample, 'MIN_POSITIONS', 1024)
    conv = layers.SNConv2d(4, 4, kernel_size=3, padding=1)
    small, large = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32, 32)
    assert not resample.fusable_upsample(small, conv, resample.upsample_nearest)
    assert resample.fusable_upsample(large, conv, resample.upsample_nearest)
    conv.eval()
    with torch.no_grad():
        assert resample.fusable_upsample(small, conv, resample.upsample_nearest)
    assert not resample.fusable_upsample(small, conv, resample.upsample_nearest)  # gradients


def test_eval_kernels_are_cached_until_the_weights_change(reference):
    conv = layers.SNConv2d(6, 5, kernel_size=3, padding=1).double().eval()
    x = torch.randn(2, 6, 4, 4, dtype=F64)
    with torch.no_grad():
        first = resample.upsample_conv(x, conv)
        kernel = conv.__dict__['_fused_kernel'][1]
        assert resample.upsample_conv(x, conv) is not first
        assert conv.__dict__['_fused_kernel'][1] is kernel  # reused
        conv.weight.mul_(2)  # an optimizer step or a checkpoint load changes it in place
        again = resample.upsample_conv(x, conv)
    assert conv.__dict__['_fused_kernel'][1] is not kernel
    expected = reference(lambda: conv(F.interpolate(x, scale_factor=2)))
    assert (again - expected).abs().max() < 1e-12
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        resample.upsample_conv(x.float(), conv.float())
    assert conv.__dict__['_fused_kernel'][1].dtype == torch.bfloat16  # cast once, kept


@pytest.mark.parametrize('width', [3, 8])  # 3: the query/key width is padded to 8
def test_attention_through_sdpa_equals_the_explicit_softmax(width):
    theta = torch.randn(2, width, 64, dtype=F64)
    phi, g = torch.randn(2, width, 16, dtype=F64), torch.randn(2, 12, 16, dtype=F64)
    explicit = layers.attention_explicit(theta, phi, g)
    assert (layers.attention_sdpa(theta, phi, g) - explicit).abs().max() < 1e-12
    # The explicit form upcasts half-precision scores only: float64 stays exact.
    scores = torch.softmax(theta.transpose(1, 2) @ phi, -1)
    assert (explicit - g @ scores.transpose(1, 2)).abs().max() < 1e-12
