"""The models reproduce the original's outputs, buffers, losses and gradients (tests/golden/).

Two formulations of the blocks: the original's (upsample then conv, conv then pool, weights
divided by sigma), which reproduces the golden run to float32 rounding, and the rewritten one
that training runs (resample.py; SN outputs divided by sigma, spectral_norm.py), checked in
float64: its float32 rounding differs from the original's, and train-mode BN on a batch of 4
amplifies that in a few gradient entries (in eval mode the two agree to 4e-6; in float64 to
1e-14, tests/test_resample.py), while its float64 numbers meet the golden run's at the same
tolerances.
"""
import glob
import os

import pytest
import torch

import resample
import spectral_norm
from conftest import GOLDEN_DIR
from model_flags import build_models

CASES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(GOLDEN_DIR, '*.pt')))
ACT = dict(atol=1e-5, rtol=1e-4, check_dtype=False)
GRAD = dict(atol=1e-5, rtol=1e-3, check_dtype=False)


def test_all_cases_present():
    assert CASES == ['biggan32_2svs', 'biggan32_c10', 'biggan32_shared_hier_attn',
                     'biggan64_attn', 'biggandeep32']


FORMULATIONS = {'original float32': (False, torch.float32),
                'rewritten float64': (True, torch.float64)}


@pytest.fixture(scope='module', params=[(c, f) for c in CASES for f in FORMULATIONS],
                ids=lambda p: f'{p[0]}-{p[1]}')
def case(request):
    name, formulation = request.param
    fuse, dtype = FORMULATIONS[formulation]
    golden = torch.load(os.path.join(GOLDEN_DIR, name + '.pt'), weights_only=True)
    G, D, _ = build_models(golden['flags'], n_classes=golden['n_classes'],
                           resolution=golden['resolution'], skip_init=True)
    G.load_state_dict(golden['G_state'], strict=True)
    D.load_state_dict(golden['D_state'], strict=True)
    G, D = G.to(dtype), D.to(dtype)
    for key in ('z', 'x'):
        golden[key] = golden[key].to(dtype)
    # Fused at every size (training at small inputs otherwise runs the original way).
    old = resample.fuse, resample.MIN_POSITIONS, spectral_norm.divide_outputs
    resample.fuse, resample.MIN_POSITIONS, spectral_norm.divide_outputs = fuse, 0, fuse
    yield golden, G, D
    resample.fuse, resample.MIN_POSITIONS, spectral_norm.divide_outputs = old


def test_parameter_counts(case):
    golden, G, D = case
    assert sum(p.numel() for p in G.parameters()) == golden['params_G']
    assert sum(p.numel() for p in D.parameters()) == golden['params_D']


def test_eval_and_train_forward_backward(case):
    golden, G, D = case
    z, y, x = golden['z'], golden['y'], golden['x']
    G.eval()
    D.eval()
    with torch.no_grad():
        torch.testing.assert_close(G(z, G.shared(y)), golden['G_out_eval'], **ACT)
        torch.testing.assert_close(D(x, y), golden['D_out_eval'], **ACT)

    # Train mode: G once, D on the fakes then on the reals, as the golden run did.
    G.train()
    D.train()
    G_z = G(z, G.shared(y))
    D_fake = D(G_z, y)
    D_real = D(x, y)
    torch.testing.assert_close(G_z, golden['G_out_train'], **ACT)
    torch.testing.assert_close(D_fake, golden['D_fake_train'], **ACT)
    torch.testing.assert_close(D_real, golden['D_real_train'], **ACT)
    for net, key in ((G, 'G_buffers_after_train_forward'), (D, 'D_buffers_after_train_forward')):
        buffers = dict(net.named_buffers())
        assert set(buffers) == set(golden[key])
        for name, expected in golden[key].items():
            torch.testing.assert_close(buffers[name], expected, **ACT, msg=name)

    D_loss = torch.relu(1 - D_real).mean() + torch.relu(1 + D_fake).mean()
    G_loss = -D_fake.mean()
    torch.testing.assert_close(D_loss, golden['D_loss_hinge'], **ACT)
    torch.testing.assert_close(G_loss, golden['G_loss_hinge'], **ACT)
    D_params = dict(D.named_parameters())
    G_params = dict(G.named_parameters())
    D_grads = torch.autograd.grad(D_loss, list(D_params.values()), retain_graph=True)
    G_grads = torch.autograd.grad(G_loss, list(G_params.values()))
    for params, grads, key in ((D_params, D_grads, 'D_grads_hinge'),
                               (G_params, G_grads, 'G_grads_hinge')):
        assert set(params) == set(golden[key])
        for name, grad in zip(params, grads):
            torch.testing.assert_close(grad, golden[key][name], **GRAD, msg=name)
