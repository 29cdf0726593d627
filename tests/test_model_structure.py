"""Full-size models: parameter counts, state_dict keys/shapes/order and a numeric fixture (a
deterministic fill of every tensor), all against numbers measured on the original."""
import json
import math
import os

import pytest
import torch

import resample
import spectral_norm
from conftest import ROOT
from model_flags import build_models

LISTINGS = json.load(open(os.path.join(ROOT, 'tests', 'data', 'state_dict_listings.json')))

I128_FLAGS = ('--dataset I128_hdf5 --G_ch 96 --D_ch 96 --G_attn 64 --D_attn 64 --G_shared '
              '--shared_dim 128 --hier --dim_z 120 --SN_eps 1e-6 --BN_eps 1e-5 '
              '--G_nl inplace_relu --D_nl inplace_relu')
CONFIGS = {
    'biggan_c10': '--dataset C10 --G_attn 0 --D_attn 0',
    'biggan_i128': I128_FLAGS,
    'biggandeep_i128': ('--model BigGANdeep --dataset I128_hdf5 --G_ch 128 --D_ch 128 '
                        '--G_depth 2 --D_depth 2 --G_attn 64 --D_attn 64 --G_shared '
                        '--shared_dim 128 --hier --dim_z 128 --SN_eps 1e-6 --BN_eps 1e-5 '
                        '--G_nl inplace_relu --D_nl inplace_relu'),
}

# Measured on the original: (G eval sum, mean |.|, first 4), (G train ...), D outputs.
FIXTURE = {
    'biggan_c10': ((72.273758, 0.011867, [-0.000244, 0.002224, 0.002248, 0.002248]),
                   (64.334028, 0.063907, [0.019793, 0.031636, 0.049104, 0.058816]),
                   [-21.466015, -2.432892], [3, 7]),
    'biggan_i128': ((-734.206918, 0.013102, [-0.015772, -0.016452, -0.016321, -0.016297]),
                    (15.682802, 0.044317, [0.004491, 0.016724, 0.006058, -0.004914]),
                    [-20.109077, -20.090540], [3, 777]),
    'biggandeep_i128': ((3789.389599, 0.038548, [0.041006, 0.051988, 0.051994, 0.051984]),
                        (3657.974719, 0.105774, [0.080857, 0.137119, 0.159053, 0.166893]),
                        [-15.945320, -17.151699], [3, 777]),
}


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def full_models(request):
    G, D, _ = build_models(CONFIGS[request.param], skip_init=True)
    return request.param, G, D


def test_parameter_counts_and_keys(full_models):
    name, G, D = full_models
    for net, tag in ((G, 'G'), (D, 'D')):
        listing = LISTINGS[name][tag]
        assert sum(p.numel() for p in net.parameters()) == listing['params']
        params = {n for n, _ in net.named_parameters()}
        got = [[k, list(v.shape), 'P' if k in params else 'B']
               for k, v in net.state_dict().items()]
        assert got == listing['keys']


def _fill(state):
    """The fixture's deterministic fill of entry k of the state_dict, in order."""
    filled = {}
    for k, (key, value) in enumerate(state.items()):
        i = torch.arange(value.numel(), dtype=torch.float64)
        s = torch.sin(0.37 * i + k).view(value.shape)
        if key.endswith('stored_var'):
            v = 1 + 0.5 * s ** 2
        elif key.endswith('stored_mean'):
            v = 0.1 * s
        elif key.endswith('sv0'):
            v = torch.ones_like(s)
        elif key.endswith('u0'):
            v = s
        elif key.endswith('gamma'):
            v = 0.5 * s
        elif key == 'output_layer.0.gain':
            v = 1 + 0.1 * s
        elif key == 'output_layer.0.bias':
            v = 0.1 * s
        elif key == 'shared.weight':
            v = 0.5 * s
        else:
            v = 0.05 * s
        filled[key] = v.to(torch.float32)
    return filled


def _check(out, expected, rel, atol=1e-6):
    total, mean_abs, first = expected
    # The sum cancels heavily: compare it on the scale of the summed magnitudes.
    assert abs(out.sum().item() - total) <= rel * out.abs().sum().item()
    assert out.abs().mean().item() == pytest.approx(mean_abs, rel=rel)
    torch.testing.assert_close(out.flatten()[:4], torch.tensor(first), atol=atol, rtol=rel)


def test_numeric_fixture(full_models, monkeypatch):
    name, G, D = full_models
    g_eval, g_train, d_out, labels = FIXTURE[name]
    G.load_state_dict(_fill(G.state_dict()))
    D.load_state_dict(_fill(D.state_dict()))
    y = torch.tensor(labels)
    idx = torch.arange(2 * G.dim_z, dtype=torch.float64).view(2, G.dim_z)
    z = torch.sin(0.1 * idx + 0.5).float()
    with torch.no_grad():
        G.eval()
        # The rewritten blocks and SN layers that training runs (resample.py, spectral_norm.py).
        _check(G(z, G.shared(y)), g_eval, rel=1e-4)
        D.eval()
        res = D.resolution
        x = torch.sin(0.05 * torch.arange(2 * 3 * res * res, dtype=torch.float64))
        out = D(x.view(2, 3, res, res).float(), y)
        # Train-mode BN on a batch of 2 is ill-conditioned for this fill: float32 rounding alone
        # moves single outputs by up to 1e-4 (I128, index 2: float64 gives 0.005961, the original's
        # float32 run 0.006058, ours 0.005951), so the train pass is checked in the original's
        # formulation (its rounding); tests/test_golden_models.py checks the rewritten one.
        monkeypatch.setattr(resample, 'fuse', False)
        monkeypatch.setattr(spectral_norm, 'divide_outputs', False)
        G.train()
        _check(G(z, G.shared(y)), g_train, rel=1e-3, atol=2e-4)
    torch.testing.assert_close(out.flatten(), torch.tensor(d_out), atol=1e-4, rtol=1e-5)
    assert not math.isnan(out.sum().item())
