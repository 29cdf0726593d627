"""The TF-Hub BigGAN-deep converter (TFHub/deep.py): synthetic modules with the published variable
names and shapes (tfhub_deep_synthetic.py) convert and load strictly into BigGANdeep.Generator,
the converted G computes what the TF graph computes (an independent float64 implementation of
the graph below, reading the TF variables by name), bad input is named, and the command line
converts an .h5 dump end to end."""
import os
import re
import sys
from typing import Mapping

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import BigGAN
import BigGANdeep
import sample_config
from model_flags import assert_builds_exactly

from tfhub_deep_synthetic import (ATTENTION_BEFORE, EMA, N_STATS, SyntheticDeepModule,
                                  layers, module_variable_shapes)
from tfhub_synthetic import Without
from TFHub import biggan_v1, converter, deep, variables

KEY_COUNTS = {128: (380, 126), 256: (452, 150), 512: (524, 174)}  # converted keys, sv0s
NO_DEEP_512 = 512 not in BigGANdeep.G_arch()
WHY_NO_512 = ('BigGANdeep.G_arch has no 512 table (deep.missing_arch_message(512) names the '
              'entry); test_512_with_the_proposed_arch_entry checks 512 with it patched in')


def tf(module, name, ema=True):
    """A variable of the synthetic module by short name, as a tensor."""
    suffix = f'/{EMA}' if ema and name.rsplit('/', 1)[-1] in deep.EMA_LEAVES else ''
    return torch.from_numpy(np.asarray(module[f'module/{name}{suffix}:0']))


@pytest.fixture(scope='module')
def module128():
    return SyntheticDeepModule(128, seed=1)


@pytest.fixture(scope='module')
def converted128(module128):
    return deep.convert_variables(module128, 128)


@pytest.fixture
def deep_512_table(monkeypatch):
    """BigGANdeep.G_arch with the 512 entry the converter asks for (BigGAN.G_arch's 512)."""
    own = BigGANdeep.G_arch

    def with_512(ch=64, attention='64', arg='G_attn'):
        arch = own(ch, attention, arg)
        arch[512] = BigGAN.G_arch(ch, attention, arg)[512]
        return arch
    monkeypatch.setattr(BigGANdeep, 'G_arch', with_512)


# ------------------------------------------------------------------------------------------------
# Names and shapes: every module converts and loads strictly
# ------------------------------------------------------------------------------------------------

def _check_strict(state, G, resolution):
    assert list(state) == list(G.state_dict())
    result = G.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in G.state_dict().items():
        assert torch.equal(value, state[key]), key
    sv_count = sum(k.endswith('sv0') for k in state)
    assert (len(state) - sv_count, sv_count) == KEY_COUNTS[resolution]


def test_128_converts_and_loads_strictly(converted128):
    G = deep.build_generator(128, converted128)
    _check_strict(converted128, G, 128)
    assert sum(p.numel() for p in G.parameters()) == 50_244_484


@pytest.mark.parametrize('resolution', [
    256, pytest.param(512, marks=pytest.mark.skipif(NO_DEEP_512, reason=WHY_NO_512))])
def test_256_and_512_convert_and_load_strictly(resolution):
    state = deep.convert_variables(SyntheticDeepModule(resolution, zeros=True), resolution)
    _check_strict(state, deep.build_generator(resolution), resolution)


def test_512_with_the_proposed_arch_entry(deep_512_table):
    """The 512 module converts, and loads strictly once BigGANdeep.G_arch has the entry that
    deep.missing_arch_message names (patched in here)."""
    state = deep.convert_variables(SyntheticDeepModule(512, zeros=True), 512)
    G = deep.build_generator(512)
    _check_strict(state, G, 512)
    assert G.blocks[7][1].ch == 512 and len(G.blocks) == 14


def test_512_without_the_arch_entry_names_it(monkeypatch, tmp_path, capsys):
    """Where BigGANdeep.G_arch stops at 256 (as the original's), the 512 module still converts,
    and building it names the table entry it needs."""
    own = BigGANdeep.G_arch

    def without_512(*args, **kwargs):
        arch = own(*args, **kwargs)
        arch.pop(512, None)
        return arch
    monkeypatch.setattr(BigGANdeep, 'G_arch', without_512)
    state = deep.convert_variables(SyntheticDeepModule(512, zeros=True), 512)
    assert sum(not k.endswith('sv0') for k in state) == KEY_COUNTS[512][0]
    with pytest.raises(ValueError, match=r'no 512 table.*in_channels \[16, 16, 8, 8, 4, 2, 1\]'
                                         r', out_channels \[16, 8, 8, 4, 2, 1, 1\]'):
        deep.build_generator(512, state)
    # The command line says so before it downloads anything.
    with pytest.raises(SystemExit):
        converter.main(['--model', 'deep', '-r', '512', '--weights_dir', str(tmp_path)])
    assert 'no 512 table' in capsys.readouterr().err and not os.listdir(tmp_path)


def test_the_synthetic_module_has_the_published_names():
    shapes = module_variable_shapes(128)
    for name, shape in (('linear/w/ema_0.9999', (1000, 128)),
                        ('Generator/GenZ/G_linear/w/ema_0.9999', (256, 32768)),
                        ('Generator/GenZ/G_linear/u0', (1, 32768)),
                        ('Generator/GBlock/conv0/w/ema_0.9999', (1, 1, 2048, 512)),
                        ('Generator/GBlock_3/conv3/w/ema_0.9999', (1, 1, 512, 1024)),
                        ('Generator/GBlock_9/BatchNorm_3/offset/w/ema_0.9999', (256, 64)),
                        ('Generator/attention/o_conv/w/ema_0.9999', (1, 1, 128, 256)),
                        ('Generator/attention/gamma/ema_0.9999', (1,)),
                        ('Generator/BatchNorm/scale/ema_0.9999', (128,)),
                        ('Generator/conv_to_rgb/w/ema_0.9999', (3, 3, 128, 128))):
        assert shapes[f'module/{name}:0'] == shape, name
    # 172 weights with an EMA variant: the embedding, G_linear's 2, 16 per GBlock, attention's
    # 5, the output BN's 2 and conv's 2; 208 without (SN vectors u0, BN statistics tables).
    assert sum(n.endswith('/ema_0.9999:0') for n in shapes) == 172 and len(shapes) == 552


# ------------------------------------------------------------------------------------------------
# Where given weights land
# ------------------------------------------------------------------------------------------------

def test_conditioning_columns_move_class_first(module128, converted128):
    w = tf(module128, 'Generator/GBlock_4/BatchNorm_2/scale/w')      # (128 z + 128 class, C)
    got = converted128['blocks.4.0.bn3.gain.weight']                  # (C, 128 class + 128 z)
    assert torch.equal(got[:, :128], w[128:].t()) and torch.equal(got[:, 128:], w[:128].t())
    assert torch.equal(converted128['blocks.4.0.bn3.bias.u0'],
                       tf(module128, 'Generator/GBlock_4/BatchNorm_2/offset/u0'))
    g = tf(module128, 'Generator/GenZ/G_linear/w')                     # (256, 4 * 4 * 2048)
    for c, row, col in ((0, 0, 0), (2047, 3, 3), (700, 1, 2)):
        ours, theirs = c * 16 + row * 4 + col, (row * 4 + col) * 2048 + c
        assert torch.equal(converted128['linear.weight'][ours, :128], g[128:, theirs])
        assert torch.equal(converted128['linear.weight'][ours, 128:], g[:128, theirs])
        assert converted128['linear.bias'][ours] == tf(module128,
                                                       'Generator/GenZ/G_linear/b')[theirs]


def test_convolutions_statistics_and_attention(module128, converted128):
    for i, ours in enumerate(('conv1', 'conv2', 'conv3', 'conv4')):
        assert torch.equal(converted128[f'blocks.6.0.{ours}.weight'],
                           tf(module128, f'Generator/GBlock_6/conv{i}/w').permute(3, 2, 0, 1))
        assert torch.equal(converted128[f'blocks.6.0.{ours}.bias'],
                           tf(module128, f'Generator/GBlock_6/conv{i}/b'))
    mean = tf(module128, 'Generator/GBlock/BatchNorm_1/accumulated_mean')
    assert mean.shape == (N_STATS, 512)
    assert torch.equal(converted128['blocks.0.0.bn2.stored_mean'], mean[50])
    half = deep.convert_variables(module128, 128, truncation=0.5)
    assert torch.equal(half['blocks.0.0.bn2.stored_mean'], mean[25])
    assert torch.equal(half['blocks.0.0.bn2.gain.weight'],
                       converted128['blocks.0.0.bn2.gain.weight'])
    assert torch.equal(converted128['blocks.7.1.o.weight'][:, :, 0, 0],
                       tf(module128, 'Generator/attention/o_conv/w')[0, 0].t())
    assert converted128['blocks.7.1.gamma'].shape == ()
    assert converted128['blocks.7.1.gamma'] == tf(module128, 'Generator/attention/gamma')[0]
    assert torch.equal(converted128['shared.weight'], tf(module128, 'linear/w'))


def test_output_conv_keeps_three_channels_and_folds_the_sn_ratio(module128, converted128):
    kernel = tf(module128, 'Generator/conv_to_rgb/w').permute(3, 2, 0, 1).double()
    assert torch.equal(converted128['output_layer.2.weight'], kernel[:3].float())
    assert torch.equal(converted128['output_layer.2.bias'],
                       tf(module128, 'Generator/conv_to_rgb/b')[:3])

    def one_step_sigma(W, u):
        v = F.normalize(u @ W)
        return (v @ W.t() @ F.normalize(v @ W.t()).t()).item()
    sigma_tf = one_step_sigma(kernel.reshape(128, -1),
                              tf(module128, 'Generator/conv_to_rgb/u0').double())
    sigma_3 = one_step_sigma(kernel[:3].reshape(3, -1),
                             converted128['output_layer.2.u0'].double())
    ratio = converted128['output_layer.0.gain'] / tf(module128, 'Generator/BatchNorm/scale')
    expected = torch.full((128,), sigma_3 / sigma_tf, dtype=torch.float64)
    assert torch.allclose(ratio.double(), expected, rtol=1e-5)
    # The chosen u is close to the top singular vector of the 3 kept rows.
    assert sigma_3 > 0.99 * torch.linalg.matrix_norm(kernel[:3].reshape(3, -1), 2).item()


def test_no_ema_takes_the_raw_weights(module128):
    raw = deep.convert_variables(module128, 128, ema=False)
    assert torch.equal(raw['shared.weight'], tf(module128, 'linear/w', ema=False))
    assert torch.equal(raw['blocks.2.0.conv2.weight'],
                       tf(module128, 'Generator/GBlock_2/conv1/w', ema=False).permute(3, 2, 0, 1))
    assert not torch.equal(raw['shared.weight'], tf(module128, 'linear/w'))


# ------------------------------------------------------------------------------------------------
# The converted generator computes what the TF graph computes
# ------------------------------------------------------------------------------------------------

class TFGraph:
    """The biggan-deep graph in float64 and TF's NHWC layout, reading the TF variables by name.
    Only the graph's own facts are used: cat([z, embedding]) conditioning, SN by one power
    iteration from u0 over the (-1, out) kernel, BN with the statistics of the truncation's row,
    bottleneck GBlocks whose second block of a stage upsamples and drops channels on the
    shortcut, attention before GBlock 8, a 128-channel conv_to_rgb of which 3 are kept."""

    def __init__(self, module: Mapping, truncation: float = 1.0, eps: float = 1e-4):
        self.module, self.eps = module, eps
        self.row = round(truncation * (N_STATS - 1))

    def var(self, name: str) -> torch.Tensor:
        ema = f'/{EMA}' if f'module/{name}/{EMA}:0' in self.module else ''
        return torch.from_numpy(np.asarray(self.module[f'module/{name}{ema}:0'])).double()

    def sn(self, scope: str) -> torch.Tensor:
        w = self.var(f'{scope}/w')
        mat = w.reshape(-1, w.shape[-1])
        u = self.var(f'{scope}/u0').reshape(1, -1)
        v = u @ mat.t()
        v = v / v.norm().clamp_min(self.eps)
        u = v @ mat
        u = u / u.norm().clamp_min(self.eps)
        return w / (v @ mat @ u.t())

    def dense(self, x, scope, bias=True):
        y = x @ self.sn(scope)
        return y + self.var(f'{scope}/b') if bias else y

    def conv(self, x, scope, bias=True):
        w = self.sn(scope)
        y = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), padding=w.shape[0] // 2)
        y = y.permute(0, 2, 3, 1)
        return y + self.var(f'{scope}/b') if bias else y

    def bn(self, x, scope, cond=None):
        mean = self.var(f'{scope}/accumulated_mean')[self.row]
        var = self.var(f'{scope}/accumulated_var')[self.row]
        x = (x - mean) / torch.sqrt(var + self.eps)
        if cond is None:
            return x * self.var(f'{scope}/scale') + self.var(f'{scope}/offset')
        gain = 1 + self.dense(cond, f'{scope}/scale', bias=False)
        return x * gain[:, None, None, :] + self.dense(cond, f'{scope}/offset', bias=False)[
            :, None, None, :]

    @staticmethod
    def up(x):
        return x.repeat_interleave(2, 1).repeat_interleave(2, 2)

    @staticmethod
    def pool(x):
        return F.max_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)

    def attention(self, x):
        n, h, w, c = x.shape
        s = 'Generator/attention'
        theta = self.conv(x, f'{s}/theta', False).reshape(n, h * w, c // 8)
        phi = self.pool(self.conv(x, f'{s}/phi', False)).reshape(n, h * w // 4, c // 8)
        g = self.pool(self.conv(x, f'{s}/g', False)).reshape(n, h * w // 4, c // 2)
        attn = torch.softmax(theta @ phi.transpose(1, 2), -1)
        o = self.conv((attn @ g).reshape(n, h, w, c // 2), f'{s}/o_conv', False)
        return x + self.var(f'{s}/gamma') * o

    def block(self, x, scope, cond, upsample):
        relu = torch.relu
        h = self.conv(relu(self.bn(x, f'{scope}/BatchNorm', cond)), f'{scope}/conv0')
        h = relu(self.bn(h, f'{scope}/BatchNorm_1', cond))
        h = self.conv(self.up(h) if upsample else h, f'{scope}/conv1')
        h = self.conv(relu(self.bn(h, f'{scope}/BatchNorm_2', cond)), f'{scope}/conv2')
        h = self.conv(relu(self.bn(h, f'{scope}/BatchNorm_3', cond)), f'{scope}/conv3')
        if h.shape[-1] != x.shape[-1]:
            x = x[..., :x.shape[-1] // 2]
        return h + (self.up(x) if upsample else x)

    def pre_tanh(self, z, class_vectors, resolution):
        cond = torch.cat([z.double(), class_vectors.double() @ self.var('linear/w')], 1)
        h = self.dense(cond, 'Generator/GenZ/G_linear').reshape(len(z), 4, 4, -1)
        for i, (upsample, _, _) in enumerate(layers(resolution)):
            if i == ATTENTION_BEFORE:
                h = self.attention(h)
            h = self.block(h, 'Generator/GBlock' + (f'_{i}' if i else ''), cond, upsample)
        h = torch.relu(self.bn(h, 'Generator/BatchNorm'))
        return self.conv(h, 'Generator/conv_to_rgb')[..., :3].permute(0, 3, 1, 2)


def _pre_tanh(G, z, y):
    captured = {}
    handle = G.output_layer.register_forward_hook(lambda m, i, o: captured.update(x=o))
    with torch.no_grad():
        images = G(z, G.shared(y))
    handle.remove()
    return images, captured['x']


@pytest.mark.parametrize('truncation', [1.0, 0.4])
def test_converted_generator_matches_the_tf_graph(module128, truncation):
    state = deep.convert_variables(module128, 128, truncation=truncation)
    G = deep.build_generator(128, state).eval()
    z = torch.from_numpy(biggan_v1.truncated_z_sample(2, 128, truncation, seed=3))
    y = torch.tensor([3, 777])
    reference = TFGraph(module128, truncation).pre_tanh(z, biggan_v1.one_hot(y), 128)
    images, pre = _pre_tanh(G, z, y)
    assert images.shape == (2, 3, 128, 128) and torch.isfinite(images).all()
    # Not saturated, and the two samples differ: the comparison below means something.
    assert reference.abs().max() < 3 and (reference[0] - reference[1]).abs().mean() > 0.05
    assert torch.allclose(pre.double(), reference, atol=1e-4, rtol=0)
    # With BigGANdeep's own output BN eps (1e-5) only that BN's scale moves, a little.
    default = BigGANdeep.Generator(**{**deep.get_config(128), 'G_output_eps': 1e-5})
    default.load_state_dict(state)
    default.eval()
    assert not torch.allclose(_pre_tanh(default, z, y)[1].double(), reference, atol=1e-7, rtol=0)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

def test_missing_variables_are_listed(module128):
    gone = ['module/Generator/GBlock_2/conv0/w/ema_0.9999:0',
            'module/Generator/GBlock_5/BatchNorm_3/scale/u0:0']
    with pytest.raises(converter.ConversionError) as error:
        deep.convert_variables(Without(module128, gone), 128)
    message = str(error.value)
    assert 'lack 2 that the biggan-deep-128 module has' in message
    assert 'Generator/GBlock_2/conv0/w/ema_0.9999' in message
    assert 'Generator/GBlock_5/BatchNorm_3/scale/u0' in message


def test_missing_statistics_say_where_they_are(module128):
    gone = [n for n in module128 if 'accumulated_' in n]
    with pytest.raises(converter.ConversionError, match=r'lack 82 .*constants of the module '
                                                        r'graph.*module folder'):
        deep.convert_variables(Without(module128, gone), 128)


def test_missing_ema_weights_suggest_no_ema(module128):
    gone = [name for name in module128 if EMA in name]
    with pytest.raises(converter.ConversionError, match='--no_ema'):
        deep.convert_variables(Without(module128, gone), 128)


def test_misshapen_variables_are_named(module128):
    bad = dict(module128.items())
    bad['module/Generator/GBlock_1/BatchNorm_2/offset/w/ema_0.9999:0'] = np.zeros((256, 7))
    bad['module/Generator/BatchNorm/accumulated_var:0'] = np.ones((50, 128))
    with pytest.raises(converter.ConversionError) as error:
        deep.convert_variables(bad, 128)
    message = str(error.value)
    assert 'Generator/GBlock_1/BatchNorm_2/offset/w/ema_0.9999 has shape (256, 7), expected ' \
           '(256, 512)' in message
    assert 'Generator/BatchNorm/accumulated_var has shape (50, 128), expected (51, 128)' in message


def test_wrong_module_resolution_or_truncation(module128):
    with pytest.raises(converter.ConversionError, match='biggan-deep-128 module, not '
                                                        'biggan-deep-256'):
        deep.convert_variables(module128, 256)
    from tfhub_synthetic import SyntheticModule
    with pytest.raises(converter.ConversionError, match='not those of a BigGAN-deep module'):
        deep.convert_variables(SyntheticModule(128, zeros=True), 128)
    with pytest.raises(ValueError, match=r'\[128, 256, 512\]'):
        deep.convert_variables(module128, 64)
    for bad in (0.33, 0.0, 1.5, float('nan')):
        with pytest.raises(ValueError, match='truncations k/50 only'):
            deep.convert_variables(module128, 128, truncation=bad)
    assert deep.module_resolution(module128) == 128 and deep.is_deep_module(module128)


def test_statistics_tables_are_named_in_graph_order():
    scopes = deep.bn_scopes(128)
    assert len(scopes) == 41 and scopes[-1] == ('Generator/BatchNorm', 128)
    assert scopes[1] == ('Generator/GBlock/BatchNorm_1', 512)
    tables = [np.full((N_STATS, c), 2 * i + k, np.float32)
              for i, (_, c) in enumerate(scopes) for k in (0, 1)]
    named = deep.assign_statistics(tables, 128)
    assert named['Generator/GBlock/BatchNorm_1/accumulated_mean'][0, 0] == 2
    assert named['Generator/GBlock/BatchNorm_1/accumulated_var'][0, 0] == 3
    assert named['Generator/BatchNorm/accumulated_var'][0, 0] == 81
    with pytest.raises(converter.ConversionError, match='found 81 .* 41 BNs'):
        deep.assign_statistics(tables[:-1], 128)
    with pytest.raises(converter.ConversionError, match=r'table 2 \(Generator/GBlock/BatchNorm_1'
                                                        r'/accumulated_mean\) has shape'):
        deep.assign_statistics(tables[:2] + [tables[0]] + tables[3:], 128)


def test_folder_statistics_need_tensorflow(tmp_path, monkeypatch, module128):
    monkeypatch.setitem(sys.modules, 'tensorflow', None)
    with pytest.raises(ImportError, match='BN statistics.*pip install tensorflow'):
        deep.with_folder_statistics(module128, str(tmp_path))
    assert deep.with_folder_statistics(module128, str(tmp_path / 'x.h5')) is module128


# ------------------------------------------------------------------------------------------------
# Command line and sampling flags
# ------------------------------------------------------------------------------------------------

def test_cli_converts_an_h5_dump(module128, converted128, tmp_path, capsys):
    needed = {n: module128[n] for n in module128
              if EMA in n or n.rsplit('/', 1)[-1].split(':')[0] not in deep.EMA_LEAVES}
    h5_path = str(tmp_path / 'biggan-deep-128.h5')
    variables.dump_to_hdf5(needed, h5_path)
    weights, samples = tmp_path / 'weights', tmp_path / 'samples'
    argv = ['--module_path', h5_path, '--weights_dir', str(weights), '--samples_dir',
            str(samples), '--verbose']
    assert converter.main(argv + ['--generate_samples', '--batch_size', '1']) == 0
    out = capsys.readouterr().out
    assert 'biggan-deep-128: converting' in out and 'blocks.0.0.conv1 <- Generator/GBlock/conv0' \
        in out
    assert sorted(os.listdir(weights)) == ['biggan-deep-128.pth']   # no temporary file left
    saved = torch.load(weights / 'biggan-deep-128.pth', weights_only=True)
    assert list(saved) == list(converted128)
    assert all(torch.equal(saved[k], converted128[k]) for k in converted128)
    assert os.listdir(samples) == ['biggan-deep128_samples.jpg']
    assert converter.main(argv + ['--model', 'deep', '--truncation', '0.5']) == 0
    assert sorted(os.listdir(weights)) == ['biggan-deep-128-t0.5.pth', 'biggan-deep-128.pth']


def test_cli_bad_deep_input(module128, tmp_path, capsys):
    h5_path = str(tmp_path / 'deep.h5')
    variables.dump_to_hdf5({n: module128[n] for n in list(module128)[:5]}, h5_path)
    cases = [(['--module_path', h5_path, '--model', 'biggan'], 'BigGAN-deep module.*--model deep'),
             (['--module_path', h5_path], 'no BigGAN-deep generator of a known resolution'),
             (['--truncation', '0.5'], '--truncation .*--model deep'),
             (['--model', 'deep', '--truncation', '0.33'], 'truncations k/50 only')]
    for argv, pattern in cases:
        with pytest.raises(SystemExit) as exit_info:
            converter.main(argv + ['--weights_dir', str(tmp_path / 'w')])
        assert exit_info.value.code == 2
        assert re.search(pattern, capsys.readouterr().err), argv


SAMPLE_FLAGS = ('--model BigGANdeep --G_ch 128 --G_depth 2 --dim_z 128 --shared_dim 128 '
                '--G_shared --hier --G_attn 64 --G_nl inplace_relu --BN_eps 1e-4 --SN_eps 1e-4 '
                '--G_output_eps 1e-4')


@pytest.mark.parametrize('resolution', [128, 256, 512])
def test_documented_sample_flags_build_the_converters_generator(tmp_path, resolution):
    """The sample.py flags given in the README for biggan-deep-<res>.pth make exactly the
    generator the converter loads into."""
    path = tmp_path / f'biggan-deep-{resolution}.pth'
    path.touch()
    config = sample_config.parse_sample_config(
        f'{SAMPLE_FLAGS} --G_weights {path} --resolution {resolution}'.split())
    assert_builds_exactly(BigGANdeep.Generator, config, deep.get_config(resolution))
    assert config['model'] == 'BigGANdeep'


def test_sample_py_reproduces_the_converters_sheet(module128, tmp_path, monkeypatch):
    """A converted deep G loaded by sample.py with the documented flags (the output BN's eps
    1e-4 included) draws what the converter drew: its config carries TF's output eps."""
    needed = {n: module128[n] for n in module128
              if EMA in n or n.rsplit('/', 1)[-1].split(':')[0] not in deep.EMA_LEAVES}
    h5_path = str(tmp_path / 'biggan-deep-128.h5')
    variables.dump_to_hdf5(needed, h5_path)
    drawn = []
    draw = converter.generate_samples
    monkeypatch.setattr(converter, 'generate_samples',
                        lambda *args, **kwargs: drawn.append(draw(*args, **kwargs)))
    assert converter.main(['--module_path', h5_path, '--weights_dir', str(tmp_path),
                           '--samples_dir', str(tmp_path), '--generate_samples',
                           '--batch_size', '2', '--seed', '5']) == 0
    import sample
    config = sample_config.parse_sample_config(
        f'{SAMPLE_FLAGS} --G_weights {tmp_path / "biggan-deep-128.pth"} --resolution 128 '
        f'--G_eval_mode --samples_root {tmp_path}'.split())
    G, _, device = sample.load(config)
    assert G.output_layer[0].eps == 1e-4
    images = draw(G, 2, str(tmp_path / 'again.jpg'), seed=5, truncation=1.0, device=str(device))
    assert torch.equal(images, drawn[0])
