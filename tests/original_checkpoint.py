"""Fixture builder: a weights folder in the original's six-file layout, shaped like the authors'
released ImageNet-128 checkpoints (keys, shapes, optimizer and state files as the authors
saved them), for the loading tests.

    folder = make_original_i128_folder(tmp_path, 'BigGAN_I128_released', ch=16)

writes `<root>/<experiment_name>/{G, G_ema, D, G_optim, D_optim, state_dict}.pth`:
- G/G_ema/D: the keys, order and shapes of the original's I128 model (tests/data/
  state_dict_listings.json, listed from the original) at
  width `ch`. At ch 96 they are the released shapes (G 70.4M, D 88.0M parameters, ~1 GB for the
  three files, ~2.2 GB with the optimizers). A smaller `ch` (a multiple of 8) keeps the same
  keys: every dimension that is a multiple of 12 is a channel count (ch, ch/8 or ch/2 times a
  power of two) and scales by ch / 96; 1000 classes, 128 shared, 148 = 128 + 20, 3 and 1 stay.
  Small random values; stored_var, sv0 > 0. G and G_ema differ.
- G_optim/D_optim: Adam state_dicts as PyTorch 1.0 wrote them: state keyed by Python `id()`
  integers, int `step`, param_groups without the keys newer torch adds.
- state_dict.pth: itr, epoch, save_num, save_best_num, best_IS (numpy float32), best_FID (a 0-dim
  tensor), config: the original parser's 90 flags with `launch_BigGAN_bs256x8.sh`'s values and
  the derived keys, and the quirks of the authors' run: `dataset_root` instead of `data_root`,
  `'model': 'model'`, a `BN_sync` key, `experiment_name` 'Jade_BigGAN_B1_bs256x8_fp32', and
  `nn.ReLU(inplace=True)` objects for G_activation / D_activation. Its exact key set beyond these
  is not known; this one is the documented parser's.

All files use the legacy (pre-1.6) serialization with storages tagged `storage_device`
('cuda:0' by default, as the authors saved them from GPUs): loading them on a CPU-only machine
needs `map_location`, and state_dict.pth needs `weights_only=False` (nn.ReLU, numpy scalar).
"""
import json
import os
from collections import OrderedDict
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn

LISTINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data',
                        'state_dict_listings.json')
RELEASED_CH = 96
RELEASED_EXPERIMENT = 'Jade_BigGAN_B1_bs256x8_fp32'

# The original parser's 90 flags and their defaults (its utils.prepare_parser).
PARSER_DEFAULTS = dict(
    dataset='I128_hdf5', augment=False, num_workers=8, pin_memory=True, shuffle=False,
    load_in_mem=False, use_multiepoch_sampler=False, model='BigGAN', G_param='SN', D_param='SN',
    G_ch=64, D_ch=64, G_depth=1, D_depth=1, D_wide=True, G_shared=False, shared_dim=0,
    dim_z=128, z_var=1.0, hier=False, cross_replica=False, mybn=False, G_nl='relu', D_nl='relu',
    G_attn='64', D_attn='64', norm_style='bn', seed=0, G_init='ortho', D_init='ortho',
    skip_init=False, G_lr=5e-5, D_lr=2e-4, G_B1=0.0, D_B1=0.0, G_B2=0.999, D_B2=0.999,
    adam_eps=1e-8, batch_size=64, G_batch_size=0, num_G_accumulations=1, num_D_steps=2,
    num_D_accumulations=1, split_D=False, num_epochs=100, parallel=False, G_fp16=False,
    D_fp16=False, D_mixed_precision=False, G_mixed_precision=False, accumulate_stats=False,
    num_standing_accumulations=16, G_eval_mode=False, save_every=2000, num_save_copies=2,
    num_best_copies=2, which_best='IS', no_fid=False, test_every=5000,
    num_inception_images=50000, hashname=False, base_root='', data_root='data',
    weights_root='weights', logs_root='logs', samples_root='samples', pbar='mine',
    name_suffix='', experiment_name='', config_from_name=False, logstyle='%3.3e',
    log_G_spectra=False, log_D_spectra=False, sv_log_interval=10, ema=False, ema_decay=0.9999,
    use_ema=False, ema_start=0, BN_eps=1e-5, SN_eps=1e-8, num_G_SVs=1, num_D_SVs=1,
    num_G_SV_itrs=1, num_D_SV_itrs=1, G_ortho=0.0, D_ortho=0.0, toggle_grads=True,
    which_train_fn='GAN', load_weights='', resume=False)

# scripts/launch_BigGAN_bs256x8.sh, as the original ships it.
LAUNCH_FLAGS = dict(
    dataset='I128_hdf5', parallel=True, shuffle=True, num_workers=8, batch_size=256,
    load_in_mem=True, num_G_accumulations=8, num_D_accumulations=8, num_D_steps=1, G_lr=1e-4,
    D_lr=4e-4, D_B2=0.999, G_B2=0.999, G_attn='64', D_attn='64', G_nl='inplace_relu',
    D_nl='inplace_relu', SN_eps=1e-6, BN_eps=1e-5, adam_eps=1e-6, G_ortho=0.0, G_shared=True,
    G_init='ortho', D_init='ortho', hier=True, dim_z=120, shared_dim=128, G_eval_mode=True,
    G_ch=96, D_ch=96, ema=True, use_ema=True, ema_start=20000, test_every=2000,
    save_every=1000, num_best_copies=5, num_save_copies=2, seed=0, use_multiepoch_sampler=True)


def i128_shapes(ch: int = RELEASED_CH) -> Tuple[Dict[str, tuple], Dict[str, tuple]]:
    """(G, D) key -> (shape, is_parameter), in the original's state_dict order, at width ch."""
    if ch < 8 or ch % 8:
        raise ValueError(f'ch={ch}: the width must be a positive multiple of 8 (attention '
                         f'needs ch/8 channels)')
    with open(LISTINGS) as f:
        listing = json.load(f)['biggan_i128']

    def scaled(dims):
        return tuple(d * ch // RELEASED_CH if d % 12 == 0 else d for d in dims)
    return tuple(OrderedDict((key, (scaled(shape), kind == 'P'))
                             for key, shape, kind in listing[net]['keys'])
                 for net in ('G', 'D'))


def _values(shapes: Dict[str, tuple], seed: int) -> 'OrderedDict[str, torch.Tensor]':
    """Small random values of a plausible kind per key (positive variances and sigmas)."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, (shape, _) in shapes.items():
        if key.endswith('stored_var'):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith('sv0'):
            value = 1 + torch.rand(shape, generator=gen)
        elif key.endswith('u0'):
            value = torch.randn(shape, generator=gen)
        elif key == 'output_layer.0.gain':
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            value = 0.02 * torch.randn(shape, generator=gen)
        state[key] = value
    return state


def _adam_state(shapes: Dict[str, tuple], lr: float, step: int, seed: int,
                id_base: int) -> dict:
    """An Adam state_dict of PyTorch 1.0: id() keys, int steps, the old param_group keys."""
    gen = torch.Generator().manual_seed(seed)
    ids = [id_base + 64 * k for k, (_, is_param) in enumerate(shapes.values()) if is_param]
    params = [shape for shape, is_param in shapes.values() if is_param]
    state = {i: {'step': step, 'exp_avg': 1e-3 * torch.randn(shape, generator=gen),
                 'exp_avg_sq': 1e-6 * torch.rand(shape, generator=gen)}
             for i, shape in zip(ids, params)}
    group = {'lr': lr, 'betas': (0.0, 0.999), 'eps': 1e-6, 'weight_decay': 0,
             'amsgrad': False, 'params': ids}
    return {'state': state, 'param_groups': [group]}


def released_config(ch: int = RELEASED_CH) -> dict:
    """The saved config of the authors' run, quirks included (see the module docstring)."""
    config = {**PARSER_DEFAULTS, **LAUNCH_FLAGS, 'G_ch': ch, 'D_ch': ch}
    config['dataset_root'] = config.pop('data_root')
    config.update(model='model', BN_sync=False, experiment_name=RELEASED_EXPERIMENT,
                  resolution=128, n_classes=1000, G_activation=nn.ReLU(inplace=True),
                  D_activation=nn.ReLU(inplace=True))
    return config


def _save_legacy(obj, path: str, storage_device: str) -> None:
    """torch.save in the pre-1.6 format, storages tagged with `storage_device`."""
    tag = torch.serialization.location_tag
    if storage_device != 'cpu':
        # The location tag is what torch.load maps back to a device; faking it is the only way
        # to write a "GPU" file without a GPU.
        torch.serialization.location_tag = lambda storage: storage_device
    try:
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    finally:
        torch.serialization.location_tag = tag


def make_original_i128_folder(root: str, experiment_name: str, with_optim: bool = True,
                              ch: int = RELEASED_CH, itr: int = 138000, seed: int = 0,
                              storage_device: str = 'cuda:0') -> str:
    """Write the six files (four without `with_optim`) and return the folder's path."""
    G_shapes, D_shapes = i128_shapes(ch)
    folder = os.path.join(root, experiment_name)
    os.makedirs(folder, exist_ok=True)
    files = {'G.pth': _values(G_shapes, seed), 'G_ema.pth': _values(G_shapes, seed + 1),
             'D.pth': _values(D_shapes, seed + 2)}
    if with_optim:
        # num_D_steps 1: D took as many Adam steps as G.
        files['G_optim.pth'] = _adam_state(G_shapes, 1e-4, itr, seed + 3, 139_800_000_000_000)
        files['D_optim.pth'] = _adam_state(D_shapes, 4e-4, itr, seed + 4, 139_900_000_000_000)
    files['state_dict.pth'] = {
        'itr': itr, 'epoch': 0, 'save_num': 0, 'save_best_num': 2,
        'best_IS': np.float32(93.0914), 'best_FID': torch.tensor(9.7706),
        'config': released_config(ch)}
    for name, obj in files.items():
        _save_legacy(obj, os.path.join(folder, name), storage_device)
    return folder
