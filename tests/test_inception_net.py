"""The Inception networks: state_dict keys, weight loading, TF1 resize, the FID pooling
variants, input handling and feature shapes (random weights: no real weights offline)."""
import io
import os
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import inception as tv_inception

import inception_net
from inception_net import (TFInceptionA, TFInceptionC, TFInceptionE, build_inception_net,
                           load_weights, resize_bilinear_tf1, resolve_weights, to_signed_unit,
                           to_uint8_values)
from inception_testing import random_inception, save_random_weights, uniform_images


@pytest.fixture(scope='module')
def tf_net():
    return random_inception('tf')


@pytest.fixture(scope='module')
def tf_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp('weights') / 'pt_inception.pth'
    net = save_random_weights(path, 'tf', seed=1)
    return path, net


# --- keys and weights ------------------------------------------------------------------------

def test_tf_keys_and_shapes_equal_torchvision_1008_without_aux():
    ours = build_inception_net('tf').state_dict()
    theirs = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False,
                                             init_weights=False).state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == \
        {k: tuple(v.shape) for k, v in theirs.items()}
    assert ours['fc.weight'].shape == (1008, 2048)


def test_tf_bn_eps_is_tf_value():
    net = build_inception_net('tf')
    eps = {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-3}


def test_weight_file_loads_strictly_and_reproduces_outputs(tf_weights):
    path, source = tf_weights
    # A torchvision-built net's state_dict is what converted files hold: it must load into ours.
    tv = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False,
                                         init_weights=False)
    tv.load_state_dict(torch.load(path, weights_only=True), strict=True)
    net = load_weights(build_inception_net('tf'), str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_weight_file_without_bn_counters_loads(tmp_path):
    # Converted files may lack num_batches_tracked; those are not weights.
    state = {k: v for k, v in random_inception('tf').state_dict().items()
             if not k.endswith('num_batches_tracked')}
    torch.save(state, tmp_path / 'w.pth')
    net = load_weights(build_inception_net('tf'), str(tmp_path / 'w.pth'))
    assert torch.equal(net.fc.weight, state['fc.weight'])


def test_torchvision_mode_loads_torchvision_layout(tmp_path):
    source = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(source.state_dict(), tmp_path / 'tv.pth')
    net = load_weights(build_inception_net('torchvision'), str(tmp_path / 'tv.pth'))
    assert torch.equal(net.net.Mixed_7c.branch_pool.conv.weight,
                       source.Mixed_7c.branch_pool.conv.weight)


def test_wrong_keys_are_named(tmp_path):
    state = random_inception('tf').state_dict()
    state['classifier.weight'] = state.pop('fc.weight')
    torch.save(state, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=r'missing keys: fc\.weight.*unexpected keys: '
                                         r'classifier\.weight') as err:
        load_weights(build_inception_net('tf'), str(tmp_path / 'bad.pth'))
    assert 'takes pt_inception-2015-12-05-6726825d.pth' in str(err.value)


def test_wrong_shapes_are_named(tmp_path):
    # torchvision's ImageNet layout (1000 classes, aux head) is not the TF graph's.
    state = torchvision.models.inception_v3(weights=None, aux_logits=True,
                                            init_weights=False).state_dict()
    torch.save(state, tmp_path / 'tv.pth')
    with pytest.raises(ValueError, match=r'unexpected keys: AuxLogits.*wrong shape keys: '
                                         r'fc\.weight \(1000, 2048\) \(want \(1008, 2048\)\)'):
        load_weights(build_inception_net('tf'), str(tmp_path / 'tv.pth'))


def test_not_a_state_dict_is_rejected(tmp_path):
    (tmp_path / 'x.pth').write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='x.pth'):
        load_weights(build_inception_net('tf'), str(tmp_path / 'x.pth'))


def test_missing_weights_offline_names_file_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def offline(url, timeout):
        assert timeout <= 30  # never wait long
        raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(inception_net.urllib.request, 'urlopen', offline)
    with pytest.raises(FileNotFoundError) as err:
        resolve_weights('tf')
    message = str(err.value)
    assert inception_net.TF_WEIGHTS_URL in message
    assert os.path.join(str(tmp_path / 'hub'), 'checkpoints',
                        'pt_inception-2015-12-05-6726825d.pth') in message
    assert '--inception_weights' in message
    assert list((tmp_path / 'hub' / 'checkpoints').iterdir()) == []  # no partial file left


def test_missing_explicit_weights_names_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match='--inception_weights .*nope.pth'):
        resolve_weights('tf', str(tmp_path / 'nope.pth'))


def test_weights_come_from_cache_then_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    payload = b'weights bytes'
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        return io.BytesIO(payload)
    monkeypatch.setattr(inception_net.urllib.request, 'urlopen', fake_urlopen)
    path = resolve_weights('torchvision')
    assert calls == [inception_net.TORCHVISION_WEIGHTS_URL]
    assert path.endswith('inception_v3_google-0cc3c7bd.pth')
    with open(path, 'rb') as f:
        assert f.read() == payload
    assert resolve_weights('torchvision') == path and len(calls) == 1  # now from the cache


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match='--inception must be one of tf, torchvision'):
        build_inception_net('pytorch')


# --- TF1 resize ------------------------------------------------------------------------------

def reference_resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 legacy bilinear, written out per pixel in float64: src = dst * in / out."""
    in_h, in_w = image.shape
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        sy = i * in_h / out_h
        y0 = int(np.floor(sy))
        y1, dy = min(y0 + 1, in_h - 1), sy - y0
        for j in range(out_w):
            sx = j * in_w / out_w
            x0 = int(np.floor(sx))
            x1, dx = min(x0 + 1, in_w - 1), sx - x0
            top = image[y0, x0] * (1 - dx) + image[y0, x1] * dx
            bottom = image[y1, x0] * (1 - dx) + image[y1, x1] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


@pytest.mark.parametrize('in_size,out_size', [((4, 4), (9, 9)), ((5, 3), (4, 7)),
                                              ((7, 7), (3, 3)), ((2, 6), (11, 5))])
def test_tf1_resize_matches_reference(in_size, out_size):
    x = uniform_images(2, seed=3)[:, :, :in_size[0], :in_size[1]].float()
    ours = resize_bilinear_tf1(x, out_size)
    assert ours.shape == (2, 3, *out_size)
    for n in range(2):
        for c in range(3):
            expected = reference_resize(x[n, c].double().numpy(), *out_size)
            np.testing.assert_allclose(ours[n, c].numpy(), expected, rtol=0, atol=1e-3)


GOLDEN = os.path.join(os.path.dirname(__file__), 'golden', 'inception', 'tf1_resize.npz')


def test_tf1_resize_equals_tensorflow_bit_for_bit():
    golden = np.load(GOLDEN)
    index = torch.from_numpy(golden['index'])
    sizes = [key for key in golden.files if key not in ('index', 'tensorflow_version')]
    assert len(sizes) == 6
    for key in sizes:
        height, width = map(int, key.split('x'))
        image = np.random.RandomState(height * 1000 + width).randint(
            0, 256, size=(3, height, width)).astype(np.uint8)
        ours = resize_bilinear_tf1(torch.from_numpy(image)[None].float(), (299, 299))[0]
        assert np.array_equal(ours[:, index][:, :, index].numpy(), golden[key]), key


def test_tf1_resize_has_no_half_pixel_shift():
    x = torch.tensor([[[[0.0, 100.0]]]])
    out = resize_bilinear_tf1(x, (1, 4))
    assert out.flatten().tolist() == [0.0, 50.0, 100.0, 100.0]
    pytorch = F.interpolate(x, size=(1, 4), mode='bilinear', align_corners=False)
    assert not torch.allclose(out, pytorch)  # PyTorch centres pixels; TF1 did not


def test_tf1_resize_same_size_is_identity():
    x = uniform_images(1, size=6).float()
    assert torch.equal(resize_bilinear_tf1(x, (6, 6)), x)


# --- the FID pooling variants ----------------------------------------------------------------

def _same_weights(block, reference):
    block.load_state_dict(reference.state_dict())
    return block.eval(), reference.eval()


def test_block_a_and_c_average_without_padding():
    torch.manual_seed(1)
    cases = [(TFInceptionA(16, pool_features=8), tv_inception.InceptionA(16, pool_features=8)),
             (TFInceptionC(16, channels_7x7=8), tv_inception.InceptionC(16, channels_7x7=8))]
    x = torch.randn(2, 16, 5, 5)
    for ours, theirs in cases:
        ours, theirs = _same_weights(ours, theirs)
        with torch.no_grad():
            a, b = ours(x), theirs(x)
            pool_channels = ours.branch_pool.conv.out_channels
            # The other branches are torchvision's, in torchvision's order.
            assert torch.allclose(a[:, :-pool_channels], b[:, :-pool_channels])
            expected = ours.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
            assert torch.allclose(a[:, -pool_channels:], expected)
            # Inside, no padding is under the window, so both agree; at the border they differ.
            assert torch.allclose(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], atol=1e-6)
            assert not torch.allclose(a[:, -pool_channels:], b[:, -pool_channels:])


@pytest.mark.parametrize('pool', ['avg', 'max'])
def test_block_e_pools(pool):
    torch.manual_seed(2)
    ours, theirs = _same_weights(TFInceptionE(16, pool=pool), tv_inception.InceptionE(16))
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
        assert torch.allclose(a[:, :-192], b[:, :-192])
        pooled = (F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) if pool == 'avg'
                  else F.max_pool2d(x, 3, 1, 1))
        assert torch.allclose(a[:, -192:], ours.branch_pool(pooled))


def test_tf_net_uses_the_graph_blocks():
    net = build_inception_net('tf')
    assert all(isinstance(getattr(net, f'Mixed_{n}'), TFInceptionA) for n in ('5b', '5c', '5d'))
    assert all(isinstance(getattr(net, f'Mixed_6{n}'), TFInceptionC) for n in 'bcde')
    assert net.Mixed_7b.pool.__name__ == '_avg_pool_same'
    assert net.Mixed_7c.pool.__name__ == '_max_pool_same'


# --- inputs and features ---------------------------------------------------------------------

def test_float_images_are_quantized_like_saved_images():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    x = u.float() / 127.5 - 1.0  # what the data loaders produce from uint8 images
    assert torch.equal(to_uint8_values(x), u.float())
    edges = torch.tensor([-1.0, 1.0, 0.0, -0.999]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert to_uint8_values(edges)[0, 0, 0].tolist() == [0.0, 255.0, 128.0, 0.0]
    assert torch.allclose(to_signed_unit(u), x)


@pytest.mark.parametrize('kind', ['tf', 'torchvision'])
@pytest.mark.parametrize('bad,match', [
    (torch.full((1, 3, 8, 8), 200.0), r'\[-1, 1\]'),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), 'dtype torch.int64'),
    (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), 'N x 3 x H x W'),
    (torch.full((1, 3, 8, 8), float('nan')), r'\[-1, 1\]'),
])
def test_bad_images_are_rejected(kind, bad, match):
    net = build_inception_net(kind)
    with pytest.raises(ValueError, match=match):
        net(bad)


def test_tf_features_shapes_and_batch_independence(tf_net):
    images = uniform_images(3, size=16, seed=5)
    with torch.no_grad():
        pool, logits = tf_net(images)
        singles = [tf_net(images[i:i + 1]) for i in range(3)]
    assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
    assert pool.dtype == logits.dtype == torch.float32
    assert pool.abs().mean() > 1e-2  # features of order 1, so the comparison below means something
    assert torch.allclose(pool, torch.cat([s[0] for s in singles]), rtol=1e-5, atol=1e-5)
    assert torch.allclose(logits, torch.cat([s[1] for s in singles]), rtol=1e-5, atol=1e-5)
    # IS logits leave out the FC bias.
    assert torch.allclose(logits, pool @ tf_net.fc.weight.t())
    assert not torch.allclose(logits, tf_net.fc(pool))


def test_torchvision_mode_features():
    net = random_inception('torchvision')
    x = uniform_images(1, size=16, seed=6).float() / 127.5 - 1.0
    with torch.no_grad():
        pool, logits = net(x)
        trunk = ((x + 1) / 2 - net.mean) / net.std
        trunk = F.interpolate(trunk, size=(299, 299), mode='bilinear', align_corners=True)
        for name in inception_net.TRUNK:
            trunk = getattr(net.net, name)(trunk)
    assert pool.shape == (1, 2048) and logits.shape == (1, 1000)
    assert torch.allclose(pool, trunk.mean((2, 3)))
    assert torch.allclose(logits, net.net.fc(pool))  # the original keeps the bias
