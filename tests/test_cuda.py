"""The CUDA paths, where a GPU is present (skipped elsewhere; scripts/gpu_check.sh runs these
after its benchmarks, with a time limit per test): the golden vectors, the fused blocks
against the original formulation, attention through scaled_dot_product_attention (the
memory-efficient kernel on either layout), and a compiled, mixed-precision training step."""
import copy
import dataclasses
import glob
import os

import pytest
import torch

import distributed
import layers
import resample
import sampling
import train
import train_fns
import utils
from conftest import GOLDEN_DIR
from model_flags import build_models

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
CUDA = torch.device('cuda')
CASES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(GOLDEN_DIR, '*.pt')))
TINY = ['--dataset', 'C10', '--G_ch', '8', '--D_ch', '8', '--G_attn', '16', '--D_attn', '16',
        '--dim_z', '16', '--G_shared', '--hier', '--shared_dim', '8', '--num_D_steps', '1',
        '--batch_size', '8', '--device', 'cuda']


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 while comparing with float32 references."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize('fuse', [False, True])
@pytest.mark.parametrize('name', CASES)
def test_golden_outputs_on_cuda(name, fuse, monkeypatch):
    monkeypatch.setattr(resample, 'fuse', fuse)
    golden = torch.load(os.path.join(GOLDEN_DIR, name + '.pt'), weights_only=True)
    G, D, _ = build_models(golden['flags'], n_classes=golden['n_classes'],
                           resolution=golden['resolution'], skip_init=True)
    G.load_state_dict(golden['G_state'])
    D.load_state_dict(golden['D_state'])
    G, D = G.to(CUDA).eval(), D.to(CUDA).eval()
    z, y, x = golden['z'].to(CUDA), golden['y'].to(CUDA), golden['x'].to(CUDA)
    with torch.no_grad():
        torch.testing.assert_close(G(z, G.shared(y)).cpu(), golden['G_out_eval'], atol=1e-4,
                                   rtol=1e-3)
        torch.testing.assert_close(D(x, y).cpu(), golden['D_out_eval'], atol=1e-4, rtol=1e-3)


def test_fused_resampling_is_exact_on_cuda():
    conv = layers.SNConv2d(16, 8, kernel_size=3, padding=1).to(CUDA).double().eval()
    x = torch.randn(4, 16, 8, 8, dtype=torch.float64, device=CUDA)
    up = conv(torch.nn.functional.interpolate(x, scale_factor=2))
    assert (resample.upsample_conv(x, conv) - up).abs().max() < 1e-12
    pooled = torch.nn.functional.avg_pool2d(conv(x), 2)
    assert (resample.conv_avgpool(x, conv) - pooled).abs().max() < 1e-12


@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_attention_through_sdpa_on_cuda(dtype, tol):
    theta = torch.randn(4, 24, 4096, device=CUDA, dtype=dtype)
    phi, g = (torch.randn(4, 24, 1024, device=CUDA, dtype=dtype),
              torch.randn(4, 96, 1024, device=CUDA, dtype=dtype))
    exact = layers.attention_explicit(theta.double(), phi.double(), g.double())
    fused = layers.attention_sdpa(theta, phi, g).double()
    assert (fused - exact).abs().max() / exact.abs().max() < tol


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_attention_runs_the_efficient_kernel_on_every_layout(layout, dtype, tol):
    """BigGAN-128's attention at 64 x 64 on activations as the convolutions leave them (NCHW or
    channels-last), with only the memory-efficient kernel allowed: it must accept q, k and v
    (PyTorch raises where no allowed kernel does) and match the explicit softmax."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def activations(channels, size):
        x = torch.randn(4, channels, size, size, device=CUDA, dtype=dtype)
        return x.contiguous(memory_format=layout).reshape(4, channels, size * size)
    theta, phi, g = activations(24, 64), activations(24, 32), activations(96, 32)
    exact = layers.attention_explicit(theta.double(), phi.double(), g.double())
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        fused = layers.attention_sdpa(theta, phi, g).double()
    assert (fused - exact).abs().max() / exact.abs().max() < tol


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_compiled_mixed_precision_step_on_cuda(amp):
    config = utils.parse_config(TINY + ['--amp', amp, '--channels_last', '--compile'])
    utils.seed_rng(0)
    models = train.build_models(config, CUDA)
    eager = copy.deepcopy(models.G)
    GD = distributed.wrap_for_training(models.GD, config, CUDA)
    noise = sampling.NoiseSampler(models.G.dim_z, 10, 8, CUDA, seed=3)
    step = train_fns.GAN_training_function(
        dataclasses.replace(models, GD=GD), noise, {'itr': 1}, config,
        precision=train_fns.Precision(amp, CUDA))
    x = (torch.rand(8, 3, 32, 32, device=CUDA) * 2 - 1).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,), device=CUDA)
    for _ in range(3):
        metrics = step(x, y)
    assert all(torch.isfinite(v) for v in metrics.values())
    moved = [(p - q).abs().max() for p, q in zip(models.G.parameters(), eager.parameters())]
    assert max(moved) > 0  # it trained
