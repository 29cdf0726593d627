"""The fixture builder of the released ImageNet-128 checkpoints (tests/original_checkpoint.py):
the keys and shapes are the original's, the files load the way the released ones do (and fail the
way they do), and the weights load with strict=True into BigGAN.Generator / Discriminator."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

import BigGAN
from conftest import ROOT
from original_checkpoint import (LAUNCH_FLAGS, PARSER_DEFAULTS, RELEASED_EXPERIMENT,
                                 i128_shapes, make_original_i128_folder)

SMALL_CH = 16
FILES = ['D.pth', 'D_optim.pth', 'G.pth', 'G_ema.pth', 'G_optim.pth', 'state_dict.pth']


def launch_models(ch):
    """G and D of launch_BigGAN_bs256x8.sh at width ch."""
    G = BigGAN.Generator(G_ch=ch, dim_z=120, resolution=128, G_attn='64', n_classes=1000,
                         G_shared=True, shared_dim=128, hier=True, BN_eps=1e-5, SN_eps=1e-6,
                         G_activation='inplace_relu', skip_init=True)
    D = BigGAN.Discriminator(D_ch=ch, resolution=128, D_attn='64', n_classes=1000,
                             SN_eps=1e-6, D_activation='inplace_relu', skip_init=True)
    return G, D


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return make_original_i128_folder(str(tmp_path_factory.mktemp('weights')),
                                     'BigGAN_I128_released', ch=SMALL_CH)


def test_released_width_has_the_listed_keys_and_shapes():
    with open(os.path.join(ROOT, 'tests', 'data', 'state_dict_listings.json')) as f:
        listing = json.load(f)['biggan_i128']
    for shapes, net in zip(i128_shapes(96), ('G', 'D')):
        assert [[k, list(s), 'P' if p else 'B'] for k, (s, p) in shapes.items()] == \
            listing[net]['keys']
        assert sum(np.prod(s) for s, p in shapes.values() if p) == listing[net]['params']


def test_small_width_keeps_the_structure():
    G, D = launch_models(SMALL_CH)
    for shapes, net in zip(i128_shapes(SMALL_CH), (G, D)):
        assert {k: s for k, (s, _) in shapes.items()} == \
            {k: tuple(v.shape) for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match='multiple of 8'):
        i128_shapes(12)


def test_six_files_that_load_strictly(folder):
    assert sorted(os.listdir(folder)) == FILES
    G, D = launch_models(SMALL_CH)
    G_state = torch.load(os.path.join(folder, 'G.pth'), map_location='cpu', weights_only=True)
    G.load_state_dict(G_state, strict=True)
    ema_state = torch.load(os.path.join(folder, 'G_ema.pth'), map_location='cpu',
                           weights_only=True)
    assert list(ema_state) == list(G_state)
    assert not torch.equal(ema_state['shared.weight'], G_state['shared.weight'])
    D.load_state_dict(torch.load(os.path.join(folder, 'D.pth'), map_location='cpu',
                                 weights_only=True), strict=True)
    assert all((v > 0).all() for k, v in G_state.items() if k.endswith(('stored_var', 'sv0')))
    with torch.no_grad():
        images = G.eval()(torch.randn(2, G.dim_z), G.shared(torch.tensor([1, 999])))
        assert torch.isfinite(D.eval()(images, torch.tensor([1, 999]))).all()


def test_files_are_legacy_gpu_files(folder):
    path = os.path.join(folder, 'G.pth')
    with open(path, 'rb') as f:
        assert f.read(2) != b'PK'          # not the zip format of torch >= 1.6
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='CUDA'):
            torch.load(path, weights_only=True)


def test_optimizer_files_are_pytorch_1_0_adam_states(folder):
    G, _ = launch_models(SMALL_CH)
    saved = torch.load(os.path.join(folder, 'G_optim.pth'), map_location='cpu',
                       weights_only=True)
    ids = saved['param_groups'][0]['params']
    assert len(ids) == 62 and ids == sorted(ids) and ids[0] > 2 ** 40   # id() integers
    assert set(saved['state']) == set(ids)
    assert all(type(s['step']) is int and s['step'] == 138000 for s in saved['state'].values())
    assert saved['param_groups'][0]['lr'] == 1e-4 and saved['param_groups'][0]['eps'] == 1e-6
    optim = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.999), eps=1e-6)
    optim.load_state_dict(saved)           # positional mapping onto the current parameters
    first = next(iter(optim.state.values()))
    assert first['exp_avg'].shape == G.shared.weight.shape
    D_saved = torch.load(os.path.join(folder, 'D_optim.pth'), map_location='cpu',
                         weights_only=True)
    assert len(D_saved['state']) == 42 and D_saved['param_groups'][0]['lr'] == 4e-4


def test_state_dict_has_the_released_quirks(folder):
    path = os.path.join(folder, 'state_dict.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu', weights_only=True)
    state = torch.load(path, map_location='cpu', weights_only=False)
    assert state['itr'] == 138000 and {'epoch', 'save_num', 'save_best_num'} < set(state)
    assert type(state['best_IS']) is np.float32
    assert torch.is_tensor(state['best_FID']) and state['best_FID'].dim() == 0
    config = state['config']
    assert 'dataset_root' in config and 'data_root' not in config
    assert config['model'] == 'model' and 'BN_sync' in config
    assert config['experiment_name'] == RELEASED_EXPERIMENT
    for key in ('G_activation', 'D_activation'):
        assert isinstance(config[key], nn.ReLU) and config[key].inplace
    assert config['G_ch'] == config['D_ch'] == SMALL_CH and config['dim_z'] == 120
    assert config['resolution'] == 128 and config['n_classes'] == 1000
    # Every flag of the parser but the renamed data_root, plus the quirk and derived keys.
    assert set(PARSER_DEFAULTS) - set(config) == {'data_root'}
    assert set(LAUNCH_FLAGS) <= set(config) and len(PARSER_DEFAULTS) == 90


def test_without_optimizers(tmp_path):
    folder = make_original_i128_folder(str(tmp_path), 'run', with_optim=False, ch=8,
                                       itr=100000, storage_device='cpu')
    assert sorted(os.listdir(folder)) == ['D.pth', 'G.pth', 'G_ema.pth', 'state_dict.pth']
    assert torch.load(os.path.join(folder, 'state_dict.pth'), weights_only=False)['itr'] == 100000
    torch.load(os.path.join(folder, 'G.pth'), weights_only=True)   # CPU-tagged: no map_location


def test_released_size_folder_loads(tmp_path):
    folder = make_original_i128_folder(str(tmp_path), 'full', with_optim=False)
    G, D = launch_models(96)
    G.load_state_dict(torch.load(os.path.join(folder, 'G_ema.pth'), map_location='cpu',
                                 weights_only=True), strict=True)
    D.load_state_dict(torch.load(os.path.join(folder, 'D.pth'), map_location='cpu',
                                 weights_only=True), strict=True)
    assert sum(p.numel() for p in G.parameters()) == 70433988
