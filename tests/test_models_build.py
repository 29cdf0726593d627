"""Every resolution of BigGAN and BigGAN-deep builds, runs forward and backward; bad arguments are
clear errors; optional norms give the original's state_dict keys."""
import pytest
import torch

import BigGAN
import BigGANdeep
import utils

TINY_G = dict(G_ch=2, dim_z=24, G_shared=True, hier=True, shared_dim=8, n_classes=3)
TINY_D = dict(D_ch=4, n_classes=3)


def _step(G, D, resolution):
    z = torch.randn(2, G.dim_z)
    y = torch.tensor([0, 2])
    x = G(z, G.shared(y))
    assert x.shape == (2, 3, resolution, resolution)
    out = D(x, y)
    assert out.shape == (2, 1)
    out.sum().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize('resolution', [32, 64, 128, 256])
def test_biggan_every_resolution(resolution):
    G = BigGAN.Generator(resolution=resolution, G_attn='16', **TINY_G)
    D = BigGAN.Discriminator(resolution=resolution, D_attn='16', **TINY_D)
    _step(G, D, resolution)


def test_biggan_512_generator():
    # The original's 512 G (for the TF-Hub port); D and BigGAN-deep at 512: tests/test_res512.py.
    G = BigGAN.Generator(resolution=512, G_attn='16', **TINY_G)
    x = G(torch.randn(2, G.dim_z), G.shared(torch.tensor([0, 2])))
    assert x.shape == (2, 3, 512, 512)
    x.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())


@pytest.mark.parametrize('resolution', [32, 64, 128, 256])
def test_biggandeep_every_resolution(resolution):
    G = BigGANdeep.Generator(resolution=resolution, G_attn='16', G_depth=2, **TINY_G)
    D = BigGANdeep.Discriminator(resolution=resolution, D_attn='16', D_depth=2,
                                 **dict(TINY_D, D_ch=2))
    _step(G, D, resolution)


def test_biggandeep_depth_three_works():
    G = BigGANdeep.Generator(resolution=32, G_attn='0', G_depth=3, G_ch=8, dim_z=16,
                             G_shared=True, hier=True, n_classes=3)
    D = BigGANdeep.Discriminator(resolution=32, D_attn='0', D_depth=3, D_ch=8, n_classes=3)
    assert len(G.blocks) == 9
    _step(G, D, 32)


def test_hier_rounds_dim_z():
    G = BigGAN.Generator(resolution=128, G_ch=4, dim_z=128, G_attn='0', G_shared=True,
                         hier=True, n_classes=3, skip_init=True)
    assert (G.dim_z, G.num_slots, G.z_chunk_size) == (126, 6, 21)
    G = BigGAN.Generator(resolution=64, G_ch=4, dim_z=128, G_attn='0', G_shared=True,
                         hier=True, n_classes=3, skip_init=True)
    assert G.dim_z == 125
    G = BigGAN.Generator(resolution=64, G_ch=4, dim_z=128, G_attn='0', n_classes=3,
                         G_shared=False, skip_init=True)
    assert G.dim_z == 128 and isinstance(G.shared, torch.nn.Identity)


def test_G_D_concatenated_and_split_agree():
    G = BigGAN.Generator(resolution=32, G_attn='0', **TINY_G)
    D = BigGAN.Discriminator(resolution=32, D_attn='0', **TINY_D)
    GD = BigGAN.G_D(G, D)
    GD.eval()
    z, y = torch.randn(3, G.dim_z), torch.tensor([0, 1, 2])
    x, dy = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([1, 1])
    fake, real = GD(z, y, x, dy)
    fake_s, real_s = GD(z, y, x, dy, split_D=True)
    torch.testing.assert_close(fake, fake_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(real, real_s, atol=1e-5, rtol=1e-5)
    assert fake.shape == (3, 1) and real.shape == (2, 1)
    assert not fake.requires_grad or fake.grad_fn is not None
    out, G_z = GD(z, y, train_G=True, return_G_z=True)
    assert G_z.shape == (3, 3, 32, 32) and G_z.requires_grad
    assert BigGANdeep.G_D is BigGAN.G_D


BAD = [
    (BigGAN.Generator, dict(resolution=48), r'resolution=48.*\[32, 64, 128, 256, 512\]'),
    (BigGAN.Discriminator, dict(resolution=1024), r'resolution=1024.*\[32, 64, 128, 256, 512\]'),
    (BigGANdeep.Generator, dict(resolution=1024, hier=True),
     r'resolution=1024.*\[32, 64, 128, 256, 512\]'),
    (BigGAN.Generator, dict(resolution=32, G_attn='64_128'), r"G_attn='64_128'.*\[8, 16, 32\]"),
    (BigGAN.Discriminator, dict(resolution=64, D_attn='128'),
     r"D_attn='128'.*\[4, 8, 16, 32, 64\]"),
    (BigGAN.Generator, dict(resolution=32, G_attn='x'), r"G_attn='x'"),
    (BigGAN.Generator, dict(resolution=32, G_ch=1, G_attn='16'), r'G_attn.*4 channels.*8'),
    (BigGAN.Discriminator, dict(resolution=32, D_ch=1, D_attn='16'), r'D_attn.*4 channels'),
    (BigGAN.Generator, dict(resolution=32, G_attn='0', G_shared=False, hier=True),
     r'hier=True needs G_shared=True'),
    (BigGANdeep.Generator, dict(resolution=32, G_attn='0', hier=False), r'needs hier=True'),
    (BigGAN.Generator, dict(resolution=32, G_attn='0', G_init='kaiming'),
     r"G_init='kaiming'.*'ortho', 'N02', 'glorot', 'xavier'"),
    (BigGAN.Discriminator, dict(resolution=32, D_attn='0', D_init='he'), r"D_init='he'"),
    (BigGAN.Generator, dict(resolution=32, G_attn='0', norm_style='ln'), r"norm_style='ln'"),
    (BigGAN.Generator, dict(resolution=32, G_attn='0', G_param='SNN'), r"G_param='SNN'"),
    (BigGAN.Generator, dict(resolution=32, G_attn='0', G_activation='gelu'),
     r"G_activation='gelu'"),
    (BigGAN.Generator, dict(resolution=32, G_attn='0', num_G_SVs=0), r'num_svs >= 1'),
]


@pytest.mark.parametrize('cls, kwargs, message', BAD)
def test_bad_arguments_are_value_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"Generator\(\) got an unexpected keyword .*'G_chh'"):
        BigGAN.Generator(resolution=32, G_attn='0', G_chh=4)
    with pytest.raises(TypeError, match="'D_chh'"):
        BigGANdeep.Discriminator(resolution=32, D_attn='0', D_chh=4)


@pytest.mark.parametrize('module', [BigGAN, BigGANdeep])
def test_a_whole_config_builds_the_models_as_its_flags_say(module):
    """`Generator(**config)` as in the original: flags that are no argument of the model are
    left out, --G_nl / --D_nl give the activations, the original's `no_optim` is accepted."""
    flags = ['--dataset', 'C10', '--G_ch', '8', '--D_ch', '8', '--G_shared', '--hier',
             '--shared_dim', '8', '--G_nl', 'inplace_relu', '--D_nl', 'ir', '--G_lr', '1e-3',
             '--model', module.__name__, '--G_init', 'N02']
    config = utils.parse_config(flags)
    G = module.Generator(**config, no_optim=True)
    D = module.Discriminator(**config)
    assert G.activation.inplace and D.activation.inplace
    assert (G.ch, G.resolution, G.n_classes, G.init, D.ch) == (8, 32, 10, 'N02', 8)
    depth = {'G_depth': 1} if module is BigGANdeep else {}  # the parser's default, not 2
    explicit = module.Generator(G_ch=8, resolution=32, n_classes=10, G_shared=True, hier=True,
                                shared_dim=8, G_attn='0', SN_eps=1e-8, dim_z=128, **depth)
    assert {k: v.shape for k, v in G.state_dict().items()} == \
        {k: v.shape for k, v in explicit.state_dict().items()}


def _g_keys(**kwargs):
    G = BigGAN.Generator(resolution=32, G_attn='0', G_ch=2, dim_z=8, n_classes=3,
                         skip_init=True, **kwargs)
    return G.state_dict()


def test_optional_norm_keys_match_original():
    keys = _g_keys(mybn=True)
    assert 'blocks.0.0.bn1.stored_mean' not in keys
    for key in ('blocks.0.0.bn1.bn.stored_mean', 'blocks.0.0.bn1.bn.stored_var',
                'output_layer.0.bn.stored_mean', 'output_layer.0.bn.accumulation_counter'):
        assert key in keys
    assert keys['blocks.0.0.bn1.bn.accumulation_counter'].shape == (1,)
    keys = _g_keys(cross_replica=True)
    for key in ('blocks.0.0.bn1.bn.running_mean', 'blocks.0.0.bn1.bn.running_var',
                'output_layer.0.bn.running_var'):
        assert key in keys
    counter = keys['blocks.0.0.bn2.bn.num_batches_tracked']
    assert counter.dtype == torch.int64 and counter.dim() == 0
    keys = _g_keys(norm_style='nonorm')
    assert not any('bn1.stored' in k for k in keys)
    keys = _g_keys(num_G_SVs=2)
    assert {'linear.u0', 'linear.sv0', 'linear.u1', 'linear.sv1'} <= set(keys)
    keys = _g_keys(G_param='SVD')
    assert not any(k.endswith(('u0', 'sv0')) for k in keys)


def test_cross_replica_single_process_equals_plain_bn():
    """One process: cross-replica BN is plain BN with the gain multiplied (the original added
    it, issue #96)."""
    plain = BigGAN.Generator(resolution=32, G_attn='0', G_ch=4, dim_z=16, n_classes=3,
                             G_shared=True)
    synced = BigGAN.Generator(resolution=32, G_attn='0', G_ch=4, dim_z=16, n_classes=3,
                              G_shared=True, cross_replica=True)
    state = {}
    for key, value in plain.state_dict().items():
        key = key.replace('stored_mean', 'bn.running_mean').replace('stored_var',
                                                                     'bn.running_var')
        state[key] = value
    missing, unexpected = synced.load_state_dict(state, strict=False)
    assert all(k.endswith('num_batches_tracked') for k in missing) and not unexpected
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    for mode in ('train', 'eval'):
        getattr(plain, mode)()
        getattr(synced, mode)()
        with torch.no_grad():
            torch.testing.assert_close(synced(z, synced.shared(y)), plain(z, plain.shared(y)),
                                       atol=1e-5, rtol=1e-4)


def test_every_block_name_means_one_class_and_each_model_keeps_its_own():
    import layers
    for table in (layers.G_BLOCKS, layers.D_BLOCKS):
        assert len({id(block) for block in table.values()}) == len(table)
    assert BigGANdeep.GBlock is layers.G_BLOCKS['DeepGBlock'] is not layers.G_BLOCKS['GBlock']
    assert BigGANdeep.DBlock is layers.D_BLOCKS['DeepDBlock'] is not layers.D_BLOCKS['DBlock']
    deep = dict(TINY_G, G_ch=8, resolution=32, G_attn='0')
    # Naming BigGAN-deep's own block builds the default net, weight for weight.
    own, named = (BigGANdeep.Generator(**deep, G_block=block) for block in ('', 'DeepGBlock'))
    assert type(own.blocks[0][0]) is type(named.blocks[0][0]) is BigGANdeep.GBlock
    torch.manual_seed(0)
    own = BigGANdeep.Generator(**deep)
    torch.manual_seed(0)
    named = BigGANdeep.Generator(**deep, G_block='DeepGBlock')
    assert all(torch.equal(a, b) for a, b in zip(own.state_dict().values(),
                                                 named.state_dict().values()))
    # 'GBlock' is BigGAN's block whatever the model.
    other = BigGANdeep.Generator(**deep, G_block='GBlock')
    assert type(other.blocks[0][0]) is layers.GBlock
    D = BigGAN.Discriminator(**TINY_D, resolution=32, D_attn='0', D_block='DeepDBlock')
    assert type(D.blocks[0][0]) is BigGANdeep.DBlock
    # The model's own block ('') gives no experiment-name token; a named one does.
    base = ['--dataset', 'C10', '--model', 'BigGANdeep', '--hier', '--G_shared']
    assert 'block' not in utils.name_from_config(utils.parse_config(base))
    assert utils.name_from_config(utils.parse_config(base + ['--G_block', 'GBlock'])).endswith(
        '_GblockGBlock')
