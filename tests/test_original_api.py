"""The original's public names keep working: `utils.<name>` for the names of the original's
utils.py (compat.py), losses' module-level losses, `Generator(**config)` with a whole config
(an original `state_dict['config']` included), and a sampling script written the original's way
against a tiny trained run."""
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import BigGAN
import checkpoints
import compat
import layers
import losses
import train
import train_fns
import utils
from conftest import ROOT
from data_helpers import random_hdf5
from original_checkpoint import make_original_i128_folder, released_config


def test_every_original_utils_name_resolves_and_nothing_else_does():
    for name in utils.ORIGINAL_NAMES:
        assert getattr(utils, name) is getattr(compat, name), name
    assert utils.ema is train_fns.EMA and utils.ortho is train_fns.ortho
    assert utils.toggle_grad is train_fns.toggle_grad
    assert utils.accumulate_standing_stats is layers.accumulate_standing_stats
    assert (utils.imsize_dict['I128_hdf5'], utils.nclass_dict['C100'],
            utils.classes_per_sheet_dict['I64'], utils.root_dict['I32']) == (128, 100, 50,
                                                                            'ImageNet')
    assert utils.activation_dict['ir'].inplace and not utils.activation_dict['relu'].inplace
    assert utils.join_strings('_', ['a', '', 'b', None]) == 'a_b'
    with pytest.raises(AttributeError, match='no attribute'):
        utils.Adam16  # replaced by --amp, on purpose


def test_module_level_losses_are_the_originals_hinge():
    fake, real = torch.tensor([[0.5], [-2.0]]), torch.tensor([[0.2], [1.5]])
    assert losses.discriminator_loss is losses.loss_hinge_dis
    assert losses.generator_loss is losses.loss_hinge_gen
    loss_real, loss_fake = losses.discriminator_loss(fake, real)
    assert (float(loss_real), float(loss_fake)) == pytest.approx((0.4, 0.75))
    assert float(losses.generator_loss(fake)) == pytest.approx(0.75)


def test_prepare_z_y_buffers_refill_in_place_and_draw_plain_tensors():
    z_, y_ = utils.prepare_z_y(4000, 8, 5, device='cpu', z_var=0.5)
    before = z_.clone()
    z_.sample_()
    y_.sample_()
    assert not torch.equal(before, z_) and z_.shape == (4000, 8)
    assert z_.std().item() == pytest.approx(0.5, rel=0.05)  # z_var is the std, as the original
    assert y_.dtype == torch.int64 and 0 <= int(y_.min()) and int(y_.max()) == 4
    assert type(z_ * 2) is torch.Tensor  # results are plain tensors (they save as images)
    assert utils.sample_1hot(6, 3, device='cpu').dtype == torch.int64


def test_the_released_config_builds_the_released_generator(tmp_path):
    """An original state_dict['config'] (nn.ReLU objects, dataset_root, BN_sync, 'model':
    'model') builds G and D that take the released weights strictly, as it is and as
    checkpoints.read_state upgrades it."""
    root = str(tmp_path)
    folder = make_original_i128_folder(root, 'released', with_optim=False, ch=16)
    upgraded, _ = checkpoints.read_state(root, 'released')
    for config in (released_config(16), upgraded['config']):
        G = BigGAN.Generator(**{**config, 'skip_init': True, 'no_optim': True})
        D = BigGAN.Discriminator(**{**config, 'skip_init': True})
        for net, stem in ((G, 'G'), (D, 'D')):
            net.load_state_dict(torch.load(os.path.join(folder, f'{stem}.pth'),
                                           map_location='cpu', weights_only=True), strict=True)
        assert G.activation.inplace and G.dim_z == 120 and G.shared_dim == 128
    with pytest.raises(TypeError, match="'G_chanels'"):
        BigGAN.Generator(**{**released_config(16), 'G_chanels': 96})


def test_a_script_written_the_original_way_samples_a_trained_run(tmp_path):
    data = tmp_path / 'run' / 'data'  # --base_root puts every root below it
    data.mkdir(parents=True)
    random_hdf5(str(data / 'ILSVRC32.hdf5'), n=16, size=32, n_classes=3, seed=0)
    flags = ['--dataset', 'I32_hdf5', '--G_ch', '4', '--D_ch', '4',
             '--G_attn', '0', '--D_attn', '0', '--dim_z', '16', '--G_shared', '--hier',
             '--shared_dim', '8', '--batch_size', '4', '--num_D_steps', '1', '--ema',
             '--use_ema', '--G_eval_mode', '--seed', '3', '--num_workers', '0',
             '--base_root', str(tmp_path / 'run')]
    config = utils.parse_config(flags + ['--num_iters', '2', '--save_every', '2',
                                         '--pbar', 'none', '--test_every', '1000'])
    train.run(config)
    name = utils.experiment_name(config)
    script = os.path.join(ROOT, 'tests', 'original_way_sample.py')
    result = subprocess.run([sys.executable, script] + flags + ['--sample_sheet_folder_num', '7'],
                            capture_output=True, text=True, cwd=str(tmp_path),
                            env={**os.environ, 'BIGGAN_ROOT': ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record['experiment_name'] == name and record['itr'] == 2  # the saved state loaded
    G_ema = torch.load(os.path.join(config['weights_root'], name, 'G_ema.pth'))
    checksum = sum(float(v.double().sum()) for v in G_ema.values() if v.is_floating_point())
    assert record['checksum'] == pytest.approx(checksum, rel=1e-9)  # G_ema went into G
    assert record['images'] == [4, 3, 32, 32] and record['labels_max'] < 1000
    assert (record['z_type'], record['image_type'], record['training']) == \
        ('Distribution', 'Tensor', False)
    sheets = tmp_path / 'run' / 'samples' / name / '7'
    assert sorted(p.name for p in sheets.glob('samples*.jpg')) == \
        sorted(f'samples{i}.jpg' for i in range(20))  # 1000 classes, 50 per sheet
    assert Image.open(sheets / 'samples0.jpg').size == (10 * 34 + 2, 50 * 34 + 2)
    for sheet in ('interpZY0.jpg', 'interpZ0.jpg', 'interpY0.jpg'):
        assert Image.open(sheets / sheet).size == (10 * 34 + 2, 16 * 34 + 2)
