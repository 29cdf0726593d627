"""512 x 512: the D rows that extend the original's tables (BigGAN and BigGAN-deep) and
BigGAN-deep's 512 G build, run forward and backward, follow the other resolutions' state_dict
pattern and place attention where their tables say; one iteration trains through train.run."""
import math
import os
import re

import pytest
import torch

import BigGAN
import BigGANdeep
import layers
import sampling
import train
import utils
from data_helpers import random_hdf5

# Width 4: BigGAN-deep's bottleneck blocks keep a quarter of the channels, so its 1 x ch stages
# need 4 channels; attention at 64 then sees 8 (BigGAN D) or more channels.
TINY_G = dict(G_ch=4, dim_z=16, G_shared=True, hier=True, shared_dim=8, n_classes=3)
TINY_D = dict(D_ch=4, n_classes=3)
DEPTH = {BigGAN: ({}, {}), BigGANdeep: ({'G_depth': 2}, {'D_depth': 2})}
MODULES = pytest.mark.parametrize('module', [BigGAN, BigGANdeep], ids=lambda m: m.__name__)

DOWN = [True] * 7 + [False]
RESOLUTIONS = [256, 128, 64, 32, 16, 8, 4, 4]
KEYS = [4, 8, 16, 32, 64, 128, 256]
# (in multipliers, out multipliers) of the 512 D rows; BigGAN's first block takes the RGB input,
# BigGAN-deep's stem conv maps 3 -> in_0 x ch.
D512 = {BigGAN: (['rgb', 1, 1, 2, 4, 8, 8, 16], [1, 1, 2, 4, 8, 8, 16, 16]),
        BigGANdeep: ([1, 1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16])}


def _models(module, resolution=512, G_attn='0', D_attn='0'):
    g_depth, d_depth = DEPTH[module]
    G = module.Generator(resolution=resolution, G_attn=G_attn, **TINY_G, **g_depth)
    D = module.Discriminator(resolution=resolution, D_attn=D_attn, **TINY_D, **d_depth)
    return G, D


@MODULES
def test_512_d_row_is_the_256_row_with_one_more_block_in_front(module):
    ch = 4
    tables = module.D_arch(ch, '0')
    row, row256 = tables[512], tables[256]
    ins, outs = D512[module]
    assert row['in_channels'] == [3 if m == 'rgb' else m * ch for m in ins]
    assert row['out_channels'] == [m * ch for m in outs]
    assert (row['downsample'], row['resolution'], row['attention_keys']) == (DOWN, RESOLUTIONS,
                                                                              KEYS)
    # Block 0 of BigGAN (3 -> ch) and stage 0 of BigGAN-deep (ch -> ch) come first; the blocks
    # after the new ch -> ch one are the 256 row's.
    first = 1 if module is BigGAN else 0
    assert row['in_channels'][first + 1:] == row256['in_channels'][first:]
    assert row['out_channels'][1:] == row256['out_channels']
    assert row['resolution'][1:] == row256['resolution']


def test_biggandeep_512_g_has_biggan_512_widths():
    deep, plain = BigGANdeep.G_arch(4, '64')[512], BigGAN.G_arch(4, '64')[512]
    for key in ('in_channels', 'out_channels', 'upsample', 'resolution', 'attention_keys'):
        assert deep[key] == plain[key], key
    assert [c // 4 for c in deep['in_channels']] == [16, 16, 8, 8, 4, 2, 1]
    assert [c // 4 for c in deep['out_channels']] == [16, 8, 8, 4, 2, 1, 1]


@MODULES
def test_g_and_d_at_512_run_forward_and_backward(module):
    G, D = _models(module, G_attn='64', D_attn='64')
    y = torch.tensor([0, 2])
    fake = G(torch.randn(2, G.dim_z), G.shared(y))
    assert fake.shape == (2, 3, 512, 512)
    real = torch.rand(2, 3, 512, 512) * 2 - 1
    out = D(torch.cat([fake, real]), torch.cat([y, y]))
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    out.sum().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name


def _pattern(net):
    """State_dict keys with the outer block index masked, and the number of outer blocks."""
    keys = net.state_dict()
    blocks = {int(k.split('.')[1]) for k in keys if k.startswith('blocks.')}
    assert blocks == set(range(len(blocks)))
    return {re.sub(r'^blocks\.\d+\.', 'blocks.<i>.', k) for k in keys}, len(blocks)


@MODULES
def test_512_state_dict_follows_the_other_resolutions(module):
    G, D = _models(module)
    G256, D256 = _models(module, resolution=256)
    g_depth = 2 if module is BigGANdeep else 1
    (g_keys, g_blocks), (g_keys256, g_blocks256) = _pattern(G), _pattern(G256)
    (d_keys, d_blocks), (d_keys256, d_blocks256) = _pattern(D), _pattern(D256)
    assert g_keys == g_keys256 and d_keys == d_keys256
    assert (g_blocks, g_blocks256) == (7 * g_depth, 6 * g_depth)
    assert (d_blocks, d_blocks256) == ((8, 7) if module is BigGAN else (7, 6))

    state = D.state_dict()
    ins, outs = D.arch['in_channels'], D.arch['out_channels']
    for i, (c_in, c_out) in enumerate(zip(ins, outs)):
        if module is BigGAN:  # wide: conv1 in -> out, 3x3; a 1x1 shortcut conv where needed
            assert state[f'blocks.{i}.0.conv1.weight'].shape == (c_out, c_in, 3, 3)
            has_sc = c_in != c_out or D.arch['downsample'][i]
            assert (f'blocks.{i}.0.conv_sc.weight' in state) == has_sc, i
        else:  # bottleneck: conv1 in -> out/4, 1x1; the shortcut conv adds out - in channels
            assert state[f'blocks.{i}.0.conv1.weight'].shape == (c_out // 4, c_in, 1, 1)
            assert state[f'blocks.{i}.1.conv1.weight'].shape == (c_out // 4, c_out, 1, 1)
            sc = state.get(f'blocks.{i}.0.conv_sc.weight')
            assert (sc is None) if c_in == c_out else sc.shape == (c_out - c_in, c_in, 1, 1), i
    if module is BigGANdeep:
        assert state['input_conv.weight'].shape == (4, 3, 3, 3)
    assert state['linear.weight'].shape == (1, 64) and state['embed.weight'].shape == (3, 64)


@MODULES
def test_attention_at_64_joins_the_block_that_ends_at_64(module):
    G, D = _models(module, G_attn='64', D_attn='64')
    depth = D.D_depth if module is BigGANdeep else 1
    assert [len(stage) for stage in D.blocks] == [depth + (i == 2) for i in range(len(D.blocks))]
    attention = D.blocks[2][depth]
    assert isinstance(attention, layers.Attention)
    # BigGAN: after the ch -> 2ch block; BigGAN-deep: after the 2ch -> 4ch stage (as at 256).
    assert attention.ch == D.arch['out_channels'][2] == (8 if module is BigGAN else 16)
    assert f'blocks.2.{depth}.gamma' in D.state_dict()
    # G: the stage whose output is 64 x 64 (the fourth), its last block.
    g_depth = G.G_depth if module is BigGANdeep else 1
    with_attention = [i for i, stage in enumerate(G.blocks) if len(stage) == 2]
    assert with_attention == [4 * g_depth - 1]
    assert G.blocks[with_attention[0]][1].ch == 16

    D = module.Discriminator(resolution=512, D_attn='256', **dict(TINY_D, D_ch=8),
                             **DEPTH[module][1])
    assert isinstance(D.blocks[0][-1], layers.Attention)
    assert sum(isinstance(block, layers.Attention) for stage in D.blocks for block in stage) == 1
    with pytest.raises(ValueError, match=r"D_attn='512'.*\[4, 8, 16, 32, 64, 128, 256\]"):
        module.Discriminator(resolution=512, D_attn='512', **TINY_D, **DEPTH[module][1])


@MODULES
def test_one_training_iteration_at_512(module, tmp_path, monkeypatch):
    """train.run on a 512 x 512 HDF5 set: one step, the checkpoint and the fixed samples. The
    class and interpolation sheets (about 400 images at 512 x 512) are left out for speed."""
    sheets = []
    monkeypatch.setattr(sampling, 'sample_sheet', lambda *args, **kw: sheets.append('class') or [])
    monkeypatch.setattr(sampling, 'interp_sheet', lambda *args, **kw: sheets.append('interp'))
    data = str(tmp_path / 'tiny512.hdf5')
    random_hdf5(data, n=4, size=512, n_classes=3, seed=0)
    argv = ['--dataset', 'HDF5', '--data_root', data, '--model', module.__name__,
            '--G_ch', '4', '--D_ch', '4', '--G_attn', '64', '--D_attn', '64', '--dim_z', '16',
            '--G_shared', '--hier', '--shared_dim', '8', '--batch_size', '2',
            '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
            '--test_every', '100000', '--num_iters', '1']
    for name in ('weights', 'logs', 'samples'):
        argv += [f'--{name}_root', str(tmp_path / name)]
    config = utils.parse_config(argv)
    assert config['resolution'] == 512
    state = train.run(config)
    assert state['itr'] == 1 and sheets == ['class', 'interp', 'interp', 'interp']

    name = utils.experiment_name(config)
    D_state = torch.load(tmp_path / 'weights' / name / 'D.pth', weights_only=True)
    last = 7 if module is BigGAN else 6
    assert f'blocks.{last}.0.conv1.weight' in D_state
    assert f'blocks.{last + 1}.0.conv1.weight' not in D_state
    assert os.path.isfile(tmp_path / 'samples' / name / 'fixed_samples1.jpg')
    for loss in ('G_loss', 'D_loss_real', 'D_loss_fake'):
        line = (tmp_path / 'logs' / name / f'{loss}.log').read_text().splitlines()[0]
        assert line.startswith('1:') and math.isfinite(float(line.split(':')[1])), line
