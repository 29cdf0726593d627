"""SN layers that divide their output by sigma (where the output is smaller than the weight)
compute what the original computes with the divided weight: exactly in float64 (1e-12) for the
outputs, every gradient and the u/sv buffers, in the same dtype under autocast and for half
weights."""
import copy

import pytest
import torch
import torch.nn.functional as F

import layers
import resample
import spectral_norm

F64 = torch.float64


def _conv(x_shape, **kw):
    return layers.SNConv2d(x_shape[1], 6, **kw), torch.randn(*x_shape)


CASES = {
    'conv 3x3': lambda: _conv((1, 4, 4, 4), kernel_size=3, padding=1),
    'conv strided dilated': lambda: _conv((1, 4, 9, 7), kernel_size=3, padding=2, stride=2,
                                          dilation=2),
    'conv no bias': lambda: _conv((1, 4, 3, 3), kernel_size=3, padding=1, bias=False),
    'linear': lambda: (layers.SNLinear(40, 30), torch.randn(3, 40)),
    'linear 3-d input': lambda: (layers.SNLinear(40, 30), torch.randn(2, 3, 40)),
    'linear two svs': lambda: (layers.SNLinear(40, 30, num_svs=2, num_itrs=2),
                               torch.randn(3, 40)),
    'embedding': lambda: (layers.SNEmbedding(50, 8), torch.tensor([[3, 7], [0, 49]])),
    'fused upsample': lambda: _conv((1, 8, 3, 3), kernel_size=3, padding=1),
    'fused pool': lambda: _conv((1, 8, 6, 6), kernel_size=3, padding=1),
}


def _call(name, layer, x):
    if name == 'fused upsample':
        return resample.upsample_conv(x, layer)
    if name == 'fused pool':
        return resample.conv_avgpool(x, layer)
    return layer(x)


def _run(name, layer, x, divide, monkeypatch):
    """Output, gradients and buffers after a training-mode forward and backward."""
    monkeypatch.setattr(spectral_norm, 'divide_outputs', divide)
    layer = copy.deepcopy(layer).train()
    if divide:
        # The point of the test: the output path must be the one taken.
        monkeypatch.setattr(layer, 'W_', lambda: pytest.fail('W_ used where the output is '
                                                             'smaller than the weight'))
    x = x.clone().requires_grad_(x.is_floating_point())
    y = _call(name, layer, x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y))
    grads = {n: p.grad for n, p in layer.named_parameters()}
    if x.is_floating_point():
        grads['input'] = x.grad
    return y, grads, {n: b.clone() for n, b in layer.named_buffers()}


@pytest.mark.parametrize('name', CASES)
def test_dividing_the_output_is_exact_in_float64(name, monkeypatch):
    torch.manual_seed(0)
    layer, x = CASES[name]()
    layer = layer.double()
    x = x.double() if x.is_floating_point() else x
    y0, g0, b0 = _run(name, layer, x, False, monkeypatch)
    y1, g1, b1 = _run(name, layer, x, True, monkeypatch)
    assert y1.dtype == y0.dtype and y1.shape == y0.shape
    assert (y1 - y0).abs().max() < 1e-12
    assert g0.keys() == g1.keys()
    for key in g0:
        assert (g1[key] - g0[key]).abs().max() < 1e-12, key
    for key in b0:
        assert torch.equal(b1[key], b0[key]), key


def test_large_outputs_divide_the_weight(monkeypatch):
    """At a batch whose output outnumbers the weight, the weight is divided, as the original
    does (the cheaper of the two)."""
    layer = layers.SNConv2d(2, 3, kernel_size=3, padding=1)
    calls = []
    monkeypatch.setattr(layer, 'W_', lambda: calls.append(1) or layer.weight)
    layer(torch.randn(4, 2, 8, 8))  # 768 output elements, 54 weights
    assert calls == [1]
    layer(torch.randn(1, 2, 1, 1))  # 3 output elements
    assert calls == [1]


@pytest.mark.parametrize('half', [torch.bfloat16, torch.float16])
def test_half_weights_and_autocast_keep_the_original_dtypes(half, monkeypatch):
    torch.manual_seed(0)
    layer = layers.SNConv2d(8, 4, kernel_size=3, padding=1)
    x = torch.randn(1, 8, 2, 2)
    outs = {}
    for divide in (False, True):
        monkeypatch.setattr(spectral_norm, 'divide_outputs', divide)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs['autocast', divide] = copy.deepcopy(layer).eval()(x)
        outs['half', divide] = copy.deepcopy(layer).to(half).eval()(x.to(half))
    for kind in ('autocast', 'half'):
        ref, new = outs[kind, False], outs[kind, True]
        assert new.dtype == ref.dtype == (torch.bfloat16 if kind == 'autocast' else half)
        assert (new.float() - ref.float()).abs().max() <= 2e-2 * ref.float().abs().max()


def test_conv_out_numel_matches_the_convolution():
    for kw in (dict(kernel_size=3, padding=1), dict(kernel_size=1), dict(kernel_size=4, stride=3),
               dict(kernel_size=3, padding=2, dilation=2, stride=2)):
        conv = torch.nn.Conv2d(3, 5, **kw)
        x = torch.randn(2, 3, 11, 9)
        assert spectral_norm.conv_out_numel(x, conv) == F.conv2d(
            x, conv.weight, None, conv.stride, conv.padding, conv.dilation).numel()


def test_channels_last_weights_give_the_same_sigma_and_u_in_float64():
    torch.manual_seed(0)
    layer = layers.SNConv2d(6, 5, kernel_size=3, padding=1).double().train()
    other = copy.deepcopy(layer).to(memory_format=torch.channels_last)
    assert not other.weight.is_contiguous()
    x = torch.randn(2, 6, 4, 4, dtype=F64)
    for _ in range(3):
        assert (layer(x) - other(x)).abs().max() < 1e-12
    assert (layer.u0 - other.u0).abs().max() < 1e-12
    assert (layer.sv0 - other.sv0).abs().max() < 1e-12
