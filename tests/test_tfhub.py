"""The TF-Hub converter: every variable of a synthetic module (built from the modules' naming rules
in tfhub_synthetic.py) lands where it should, the converted BigGAN.Generator loads strictly and
computes what the TF-layout generator of TFHub/biggan_v1.py computes, bad input is named, and
TF-Hub's truncated noise."""
import os
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import truncnorm

import layers

from tfhub_synthetic import EMA, SyntheticModule, Without
from TFHub import biggan_v1, converter, variables

KEY_COUNTS = {128: (125, 41), 256: (146, 48), 512: (167, 55)}  # converted keys, sv0s


def tf(module, name, ema=True):
    """A variable of the synthetic module by short name, as a tensor."""
    suffix = f'/{EMA}' if ema and name.rsplit('/', 1)[-1] in ('w', 'b', 'gamma', 'beta') else ''
    return torch.from_numpy(np.asarray(module[f'module/{name}{suffix}:0']))


@pytest.fixture(scope='module')
def module128():
    return SyntheticModule(128, seed=1)


@pytest.fixture(scope='module')
def converted128(module128):
    return converter.convert_variables(module128, 128)


@pytest.fixture(scope='module')
def G128(converted128):
    return converter.build_generator(128, converted128).eval()


# ------------------------------------------------------------------------------------------------
# Names, shapes, where each weight lands
# ------------------------------------------------------------------------------------------------

def test_128_loads_strictly_with_every_key_in_order(converted128, G128):
    assert list(converted128) == list(G128.state_dict())
    for key, value in G128.state_dict().items():
        assert torch.equal(value, converted128[key]), key
    sv_keys = [k for k in converted128 if k.endswith('sv0')]
    assert (len(converted128) - len(sv_keys), len(sv_keys)) == KEY_COUNTS[128]


def test_convolutions_go_from_hwio_to_oihw(module128, converted128):
    w = tf(module128, 'Generator/GBlock_2/conv1/w')          # TF conv1 is our conv2
    ours = converted128['blocks.2.0.conv2.weight']
    assert tuple(w.shape) == (3, 3, 384, 384) and ours.shape == (384, 384, 3, 3)
    assert ours[5, 7, 0, 2] == w[0, 2, 7, 5] and ours[5, 7, 2, 1] == w[2, 1, 7, 5]
    assert torch.equal(converted128['blocks.0.0.conv1.weight'],
                       tf(module128, 'Generator/GBlock/conv0/w').permute(3, 2, 0, 1))
    assert torch.equal(converted128['blocks.4.0.conv_sc.weight'][:, :, 0, 0],
                       tf(module128, 'Generator/GBlock_4/conv_sc/w')[0, 0].t())
    assert torch.equal(converted128['blocks.1.0.conv2.bias'],
                       tf(module128, 'Generator/GBlock_1/conv1/b'))
    assert torch.equal(converted128['blocks.3.0.conv1.u0'],
                       tf(module128, 'Generator/GBlock_3/conv0/u0'))
    assert torch.equal(converted128['output_layer.2.weight'],
                       tf(module128, 'Generator/conv_2d/w').permute(3, 2, 0, 1))
    assert converted128['output_layer.2.u0'].shape == (1, 3)


def test_attention_and_class_embedding(module128, converted128):
    assert torch.equal(converted128['blocks.3.1.o.weight'][:, :, 0, 0],
                       tf(module128, 'Generator/attention/o_conv/w')[0, 0].t())
    assert torch.equal(converted128['blocks.3.1.theta.u0'],
                       tf(module128, 'Generator/attention/theta/u0'))
    assert converted128['blocks.3.1.gamma'].shape == ()
    assert converted128['blocks.3.1.gamma'] == tf(module128, 'Generator/attention/gamma')
    # The one-hot linear (1000 in, 128 out) is the embedding table itself: row c is class c.
    table = tf(module128, 'linear/w')
    assert converted128['shared.weight'].shape == (1000, 128)
    assert torch.equal(converted128['shared.weight'][777], table[777])
    assert torch.equal(converted128['shared.weight'], table)


def test_hyper_bn_columns_move_class_first(module128, converted128):
    for ours, theirs in (('bn1.gain', 'HyperBN/gamma'), ('bn1.bias', 'HyperBN/beta'),
                         ('bn2.gain', 'HyperBN_1/gamma'), ('bn2.bias', 'HyperBN_1/beta')):
        w = tf(module128, f'Generator/GBlock_1/{theirs}/w')   # (20 z + 128 class, C) in TF
        got = converted128[f'blocks.1.0.{ours}.weight']       # (C, 128 class + 20 z)
        assert got.shape == (w.shape[1], 148)
        assert torch.equal(got[:, :128], w[20:].t()) and torch.equal(got[:, 128:], w[:20].t())
        assert torch.equal(converted128[f'blocks.1.0.{ours}.u0'],
                           tf(module128, f'Generator/GBlock_1/{theirs}/u0'))


def test_bn_statistics(module128, converted128):
    assert torch.equal(converted128['blocks.4.0.bn2.stored_var'],
                       tf(module128, 'Generator/GBlock_4/CrossReplicaBN_1/accumulated_var'))
    assert torch.equal(converted128['blocks.0.0.bn1.stored_mean'],
                       tf(module128, 'Generator/GBlock/CrossReplicaBN/accumulated_mean'))
    stats = 'Generator/ScaledCrossReplicaBNbn/accumulated_'
    assert torch.equal(converted128['output_layer.0.stored_mean'], tf(module128, stats + 'mean'))
    assert torch.equal(converted128['output_layer.0.stored_var'], tf(module128, stats + 'var'))
    assert torch.equal(converted128['output_layer.0.gain'],
                       tf(module128, 'Generator/ScaledCrossReplicaBN/gamma'))
    assert torch.equal(converted128['output_layer.0.bias'],
                       tf(module128, 'Generator/ScaledCrossReplicaBN/beta'))


def test_g_linear_rows_become_channel_major(module128, converted128):
    w = tf(module128, 'Generator/G_Z/G_linear/w')     # (20, 4 * 4 * 1536), NHWC order
    b = tf(module128, 'Generator/G_Z/G_linear/b')
    u = tf(module128, 'Generator/G_Z/G_linear/u0')
    for c, row, col in ((0, 0, 0), (1535, 3, 3), (700, 1, 2), (5, 2, 0)):
        ours, theirs = c * 16 + row * 4 + col, (row * 4 + col) * 1536 + c
        assert torch.equal(converted128['linear.weight'][ours], w[:, theirs])
        assert converted128['linear.bias'][ours] == b[theirs]
        assert converted128['linear.u0'][0, ours] == u[0, theirs]


def test_sv0_is_one_power_iteration_from_u(converted128):
    W = converted128['blocks.2.0.conv1.weight'].reshape(384, -1).double()
    u = converted128['blocks.2.0.conv1.u0'].double()
    v = F.normalize(u @ W)
    u_next = F.normalize(v @ W.t())
    expected = (v @ W.t() @ u_next.t()).item()
    assert converted128['blocks.2.0.conv1.sv0'].item() == pytest.approx(expected, rel=1e-4)
    assert all(converted128[k].item() > 0 for k in converted128 if k.endswith('sv0'))


def test_no_ema_takes_the_raw_weights(module128):
    raw = converter.convert_variables(module128, 128, ema=False)
    assert torch.equal(raw['shared.weight'], tf(module128, 'linear/w', ema=False))
    assert torch.equal(raw['blocks.2.0.conv2.weight'],
                       tf(module128, 'Generator/GBlock_2/conv1/w', ema=False).permute(3, 2, 0, 1))
    assert not torch.equal(raw['shared.weight'], tf(module128, 'linear/w'))
    # Statistics and SN vectors have no EMA variant: the same in both.
    assert torch.equal(raw['blocks.0.0.bn1.stored_var'],
                       tf(module128, 'Generator/GBlock/CrossReplicaBN/accumulated_var'))


@pytest.mark.parametrize('resolution', [256, 512])
def test_256_and_512_key_counts(resolution):
    state = converter.convert_variables(SyntheticModule(resolution, zeros=True), resolution)
    sv_count = sum(k.endswith('sv0') for k in state)
    assert (len(state) - sv_count, sv_count) == KEY_COUNTS[resolution]
    G = converter.build_generator(resolution, state)
    assert list(G.state_dict()) == list(state)
    assert G.dim_z == converter.Z_DIMS[resolution]


# ------------------------------------------------------------------------------------------------
# The converted generator computes what TF-Hub's does
# ------------------------------------------------------------------------------------------------

def _pre_tanh(model, output_module, *inputs):
    captured = {}
    handle = output_module.register_forward_hook(lambda m, i, o: captured.update(x=o))
    with torch.no_grad():
        images = model(*inputs)
    handle.remove()
    return images, captured['x']


def test_converted_generator_matches_the_tf_layout_generator(module128, converted128):
    V = biggan_v1.load_tf_variables(biggan_v1.Generator(128), module128).eval()
    exact = converter.build_generator(128, converted128).eval()
    z = torch.from_numpy(biggan_v1.truncated_z_sample(2, 120, truncation=1.0, seed=3))
    y = torch.tensor([3, 777])
    reference, ref_pre = _pre_tanh(V, V.conv_2d, z, biggan_v1.one_hot(y))
    images, pre = _pre_tanh(exact, exact.output_layer, z, exact.shared(y))
    assert images.shape == (2, 3, 128, 128) and torch.isfinite(images).all()
    # Not saturated, and the two samples differ: the comparison below means something.
    assert ref_pre.abs().max() < 3 and (ref_pre[0] - ref_pre[1]).abs().mean() > 0.05
    assert torch.allclose(pre, ref_pre, atol=1e-4, rtol=1e-4)
    # TF's eps in every BN, the output BN included (the original fixed that one at 1e-5).
    assert {m.eps for m in exact.modules() if isinstance(m, layers.ccbn)} == {1e-4}
    assert exact.output_layer[0].eps == 1e-4


def test_tf_layout_loader_names_a_missing_variable(module128):
    gone = 'module/Generator/GBlock_3/HyperBN_1/beta/w/ema_b999900:0'
    with pytest.raises(KeyError, match='GBlock_3/HyperBN_1/beta/w'):
        biggan_v1.load_tf_variables(biggan_v1.Generator(128), Without(module128, [gone]))


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

def test_missing_variables_are_listed(module128):
    gone = ['module/Generator/GBlock_2/conv0/w/ema_b999900:0',
            'module/Generator/GBlock_4/CrossReplicaBN_1/accumulated_var:0']
    with pytest.raises(converter.ConversionError) as error:
        converter.convert_variables(Without(module128, gone), 128)
    message = str(error.value)
    assert 'lack 2' in message
    assert 'Generator/GBlock_2/conv0/w/ema_b999900' in message
    assert 'Generator/GBlock_4/CrossReplicaBN_1/accumulated_var' in message


def test_missing_ema_weights_suggest_no_ema(module128):
    gone = [name for name in module128 if EMA in name]
    with pytest.raises(converter.ConversionError, match='--no_ema'):
        converter.convert_variables(Without(module128, gone), 128)


def test_misshapen_variable_is_named(module128):
    name = 'module/Generator/GBlock_1/HyperBN/gamma/w/ema_b999900:0'
    bad = dict(module128.items())
    bad[name] = np.zeros((148, 7), np.float32)
    with pytest.raises(converter.ConversionError, match=r'HyperBN/gamma/w/ema_b999900 has '
                                                        r'shape \(148, 7\), expected \(148, 1536'):
        converter.convert_variables(bad, 128)


def test_wrong_or_unknown_resolution(module128):
    with pytest.raises(converter.ConversionError, match='biggan-128 module, not biggan-256'):
        converter.convert_variables(module128, 256)
    for call in (lambda: converter.convert_variables(module128, 300),
                 lambda: converter.get_config(64), lambda: biggan_v1.Generator(300)):
        with pytest.raises(ValueError, match=r'\[128, 256, 512\]'):
            call()
    assert converter.module_resolution({'module/Generator/GBlock_9/conv0/w:0': 0}) is None


def test_module_path_that_is_missing_or_not_a_module(tmp_path):
    missing = str(tmp_path / 'nowhere.h5')
    with pytest.raises(FileNotFoundError, match='nowhere.h5.*does not exist'):
        variables.open_variables(missing)
    with pytest.raises(ValueError, match=r'variables[/\\]variables.index'):
        variables.open_variables(str(tmp_path))
    text = tmp_path / 'notes.txt'
    text.write_text('not a module')
    with pytest.raises(ValueError, match='not an HDF5 file'):
        variables.open_variables(str(text))
    archive = tmp_path / 'biggan-128.tar.gz'
    archive.write_bytes(b'\x1f\x8b')
    with pytest.raises(ValueError, match='unpack it first'):
        variables.open_variables(str(archive))


def test_cli_bad_input_exits_with_the_flag_named(tmp_path, capsys):
    cases = [(['--module_path', str(tmp_path / 'x.h5')], '--module_path.*does not exist'),
             (['-r', '300'], "invalid choice: 300"),
             (['--batch_size', '0'], '--batch_size'),
             (['--module_path', str(tmp_path), '--redownload'], '--redownload')]
    for argv, pattern in cases:
        with pytest.raises(SystemExit) as exit_info:
            converter.main(argv + ['--weights_dir', str(tmp_path / 'w')])
        assert exit_info.value.code == 2
        assert re.search(pattern, capsys.readouterr().err), argv


def test_without_tensorflow_the_message_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'tensorflow', None)   # import tensorflow -> ImportError
    monkeypatch.setitem(sys.modules, 'tensorflow_hub', None)
    folder = tmp_path / 'biggan-128'
    (folder / 'variables').mkdir(parents=True)
    (folder / 'variables' / 'variables.index').write_bytes(b'')
    with pytest.raises(ImportError, match=r'pip install tensorflow.*\.h5 dump'):
        variables.open_variables(str(folder))
    # No module and no dump: the download needs tensorflow_hub, and says so before any network.
    with pytest.raises(SystemExit):
        converter.main(['-r', '128', '--weights_dir', str(tmp_path / 'w')])
    assert 'pip install tensorflow' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'w' / 'biggan-128.pth')


# ------------------------------------------------------------------------------------------------
# The command line, end to end, from an .h5 dump
# ------------------------------------------------------------------------------------------------

def test_cli_converts_an_h5_dump_and_draws_samples(module128, converted128, tmp_path, capsys):
    needed = {name: module128[name] for name in module128
              if EMA in name or name.rsplit('/', 1)[-1].split(':')[0] not in ('w', 'b', 'gamma',
                                                                               'beta')}
    h5_path = str(tmp_path / 'biggan-128.h5')
    variables.dump_to_hdf5(needed, h5_path)
    with variables.open_variables(h5_path) as dump:
        assert 'Generator/GBlock_4/conv_sc/u1' in dump and len(dump) == len(needed)
        assert np.array_equal(dump['linear/w/ema_b999900'], module128[f'module/linear/w/{EMA}:0'])
    weights, samples = tmp_path / 'weights', tmp_path / 'samples'
    assert converter.main(['--module_path', h5_path, '--weights_dir', str(weights),
                           '--samples_dir', str(samples), '--generate_samples',
                           '--batch_size', '1', '--verbose']) == 0
    out = capsys.readouterr().out
    assert 'blocks.0.0.conv1 <- Generator/GBlock/conv0' in out
    assert sorted(os.listdir(weights)) == ['biggan-128.pth']   # no temporary file left
    saved = torch.load(weights / 'biggan-128.pth', weights_only=True)
    assert list(saved) == list(converted128)
    assert all(torch.equal(saved[k], converted128[k]) for k in converted128)
    from PIL import Image
    with Image.open(samples / 'biggan128_samples.jpg') as sheet:
        assert sheet.format == 'JPEG' and sheet.size == (128, 128)


# ------------------------------------------------------------------------------------------------
# TF-Hub's truncated noise
# ------------------------------------------------------------------------------------------------

def test_truncated_z_sample():
    z = biggan_v1.truncated_z_sample(1000, 120, truncation=0.5, seed=0)
    assert z.shape == (1000, 120) and z.dtype == np.float32
    assert np.abs(z).max() <= 1.0 and np.abs(z).max() > 0.95
    expected = 0.5 * truncnorm.rvs(-2, 2, size=(1000, 120), random_state=np.random.RandomState(0))
    assert np.allclose(z, expected)
    # A scaled truncnorm(-2, 2), not truncnorm(-1, 1): the spreads differ (0.440 vs 0.540).
    assert abs(z.std() - 0.5 * truncnorm.std(-2, 2)) < 0.005
    assert np.array_equal(z, biggan_v1.truncated_z_sample(1000, 120, 0.5, seed=0))
    assert not np.array_equal(z, biggan_v1.truncated_z_sample(1000, 120, 0.5, seed=1))
    assert np.abs(biggan_v1.truncated_z_sample(64, 128, truncation=0.02)).max() <= 0.04
    with pytest.raises(ValueError, match='truncation'):
        biggan_v1.truncated_z_sample(4, 120, truncation=0)
