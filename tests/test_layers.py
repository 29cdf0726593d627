"""Layers: spectral norm, init schemes, batch norms, standing statistics, attention."""
import pytest
import torch
import torch.nn as nn

import attention
import layers


def _converge(layer, steps=300):
    layer.train()
    for _ in range(steps):
        layer.W_()


def test_sn_sigma_matches_largest_singular_value():
    layer = layers.SNLinear(24, 16, num_svs=1)
    nn.init.normal_(layer.weight)
    _converge(layer)
    expected = torch.linalg.matrix_norm(layer.weight.detach(), 2)
    torch.testing.assert_close(layer.sv0[0], expected, rtol=1e-4, atol=0)
    # The normalized weight has spectral norm 1.
    torch.testing.assert_close(torch.linalg.matrix_norm(layer.W_().detach(), 2),
                               torch.tensor(1.0), rtol=1e-4, atol=0)


def test_sn_two_singular_values_and_conv_reshape():
    layer = layers.SNConv2d(6, 10, kernel_size=3, padding=1, num_svs=2, num_itrs=2)
    nn.init.normal_(layer.weight)
    _converge(layer, 400)
    svals = torch.linalg.svdvals(layer.weight.detach().view(10, -1))
    torch.testing.assert_close(layer.sv0[0], svals[0], rtol=1e-4, atol=0)
    torch.testing.assert_close(layer.sv1[0], svals[1], rtol=1e-3, atol=0)
    assert [n for n, _ in layer.named_buffers()] == ['u0', 'sv0', 'u1', 'sv1']


def test_sn_embedding_normalizes_class_matrix():
    layer = layers.SNEmbedding(7, 12)
    _converge(layer)
    torch.testing.assert_close(layer.sv0[0], torch.linalg.matrix_norm(layer.weight.detach(), 2),
                               rtol=1e-4, atol=0)
    assert layer.u0.shape == (1, 7)


def test_sn_updates_u_only_in_training_mode():
    layer = layers.SNLinear(8, 5)
    before = layer.u0.clone()
    layer.eval()
    layer(torch.randn(3, 8))
    assert torch.equal(layer.u0, before) and torch.equal(layer.sv0, torch.ones(1))
    layer.train()
    layer(torch.randn(3, 8))
    assert not torch.equal(layer.u0, before)
    assert layer.sv0.item() != 1.0


def test_sn_gradient_flows_through_sigma():
    layer = layers.SNLinear(6, 4)
    layer.train()
    layer.W_()  # converge u a little so the reference below sees the same vectors
    u = layer.u0.clone()
    R = torch.randn(4, 6)
    (layer.W_() * R).sum().backward()
    # The same iteration by hand: u, v constants, sigma = v W^T u^T differentiable in W.
    W = layer.weight.detach().clone().requires_grad_(True)
    with torch.no_grad():
        v = torch.nn.functional.normalize(u @ W, eps=1e-12)
        u_new = torch.nn.functional.normalize(v @ W.t(), eps=1e-12)
    sigma = (v @ W.t() @ u_new.t()).squeeze()
    (W / sigma * R).sum().backward()
    torch.testing.assert_close(layer.weight.grad, W.grad, rtol=1e-5, atol=1e-6)
    # ... and differs from treating sigma as a constant.
    assert not torch.allclose(layer.weight.grad, R / sigma.detach(), atol=1e-4)


def _weights(module):
    return [m.weight for m in module.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]


def test_ortho_init_orthonormal_rows_or_columns():
    import BigGAN
    G = BigGAN.Generator(G_ch=4, dim_z=20, resolution=32, G_attn='16', n_classes=5,
                         G_shared=True, hier=True, G_init='ortho')
    for w in _weights(G):
        W = w.detach().view(w.shape[0], -1)
        gram = W @ W.t() if W.shape[0] <= W.shape[1] else W.t() @ W
        torch.testing.assert_close(gram, torch.eye(gram.shape[0]), atol=1e-5, rtol=0)


def test_N02_and_glorot_statistics():
    import BigGAN
    D = BigGAN.Discriminator(D_ch=16, resolution=32, D_attn='0', n_classes=10, D_init='N02')
    flat = torch.cat([w.detach().flatten() for w in _weights(D)])
    assert abs(flat.mean().item()) < 1e-3
    assert flat.std().item() == pytest.approx(0.02, rel=0.02)
    D = BigGAN.Discriminator(D_ch=16, resolution=32, D_attn='0', n_classes=10, D_init='glorot')
    for w in _weights(D):
        if w.numel() < 2000:
            continue
        fan_in = w[0].numel()
        fan_out = w.shape[0] * (w[0][0].numel() if w.dim() > 2 else 1)
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert w.abs().max().item() <= bound
        assert w.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.05)
    # Biases keep PyTorch's default init (non-zero), as in the original.
    assert D.blocks[0][0].conv1.bias.abs().sum().item() > 0


def test_attention_shapes_and_identity_at_start():
    att = layers.Attention(16, layers.SNConv2d)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(att(x), x)  # gamma starts at 0
    att.gamma.data.fill_(1.0)
    out = att(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert [n for n, _ in att.named_parameters()] == ['gamma', 'theta.weight', 'phi.weight',
                                                      'g.weight', 'o.weight']
    with pytest.raises(ValueError, match='at least 8 channels'):
        layers.Attention(4, layers.SNConv2d)


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_attention_hands_the_fused_kernels_unit_channel_strides(layout, monkeypatch):
    """CUDA's fused attention kernels take q, k and v only with unit stride along the channels
    (else PyTorch runs the math kernel, which stores the score matrix). Activations in either
    layout reach scaled_dot_product_attention so, and give the explicit attention's output."""
    att = layers.Attention(64, layers.SNConv2d).double().eval()  # eval: SN's u stays put
    att.gamma.data.fill_(1.0)
    x = torch.randn(2, 64, 8, 8, dtype=torch.float64).contiguous(memory_format=layout)
    explicit = att(x)  # the CPU runs the explicit form
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q, k, v))
        return sdpa(q, k, v, **kwargs)
    monkeypatch.setattr(attention.F, 'scaled_dot_product_attention', spy)
    monkeypatch.setattr(attention, 'attention_explicit', attention.attention_sdpa)  # CUDA's
    fused = att(x)
    assert len(seen) == 1
    for t in seen[0]:
        assert t.stride(-1) == 1 and t.is_contiguous(), t.stride()
        if layout == torch.channels_last:
            assert t._base is not None  # a view of the activations: nothing was copied
    assert (fused - explicit).abs().max() < 1e-12


def test_ccbn_gain_is_multiplied():
    norm = layers.ccbn(6, 10, which_linear=lambda i, o: nn.Linear(i, o, bias=False))
    nn.init.zeros_(norm.gain.weight)
    nn.init.zeros_(norm.bias.weight)
    x = torch.randn(8, 6, 4, 4) * 3 + 2
    out = norm(x, torch.randn(8, 10))
    # gain 1 + 0, bias 0: plain batch norm.
    torch.testing.assert_close(out, nn.functional.batch_norm(x, None, None, training=True),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('style', ['in', 'nonorm', 'gn', 'gn_grp_2', 'gn_ch_3'])
def test_ccbn_norm_styles(style):
    norm = layers.ccbn(6, 4, which_linear=nn.Embedding, norm_style=style)
    out = norm(torch.randn(2, 6, 4, 4), torch.tensor([1, 3]))
    assert out.shape == (2, 6, 4, 4) and torch.isfinite(out).all()
    assert ('stored_mean' in dict(norm.named_buffers())) == (style == 'in')


@pytest.mark.parametrize('style', ['ln', 'gn_x_2', 'batch'])
def test_unknown_norm_style_is_an_error(style):
    with pytest.raises(ValueError, match='norm_style'):
        layers.ccbn(6, 4, which_linear=nn.Embedding, norm_style=style)


def test_mybn_matches_batch_norm_and_standing_stats_average():
    mybn = layers.myBN(5)
    x = torch.randn(6, 5, 3, 3)
    gain, bias = torch.rand(1, 5, 1, 1) + 0.5, torch.randn(1, 5, 1, 1)
    mybn.train()
    out = mybn(x, gain, bias)
    ref = nn.functional.batch_norm(x, None, None, gain.flatten(), bias.flatten(), training=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)

    batches = [torch.randn(4, 5, 3, 3) * (i + 1) + i for i in range(3)]
    layers.initiate_standing_stats(mybn)
    for b in batches:
        mybn(b)
    mybn.finish_standing()
    means = torch.stack([b.mean([0, 2, 3]) for b in batches]).mean(0)
    varis = torch.stack([b.var([0, 2, 3], unbiased=False) for b in batches]).mean(0)
    torch.testing.assert_close(mybn.stored_mean, means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mybn.stored_var, varis, atol=1e-5, rtol=1e-5)
    # Standing mode is left: the next training batch is a momentum update, not a sum.
    assert not mybn.accumulate_standing and mybn.accumulation_counter.item() == 0
    mybn(batches[0])
    torch.testing.assert_close(mybn.stored_mean, 0.9 * means + 0.1 * batches[0].mean([0, 2, 3]),
                               atol=1e-5, rtol=1e-5)


def test_accumulate_standing_stats_on_generator():
    import BigGAN
    G = BigGAN.Generator(G_ch=4, dim_z=16, resolution=32, G_attn='0', n_classes=3,
                         G_shared=True, mybn=True, skip_init=True)
    z, y = torch.zeros(4, G.dim_z), torch.zeros(4, dtype=torch.long)
    layers.accumulate_standing_stats(G, z, y, 3, num_accumulations=3)
    assert not G.training
    mybns = [m for m in G.modules() if isinstance(m, layers.myBN)]
    assert len(mybns) == 7  # two per block, one at the output
    for m in mybns:
        assert not m.accumulate_standing
        assert (m.stored_var > 0).all()


def test_activation_table():
    assert layers.get_activation('ir').inplace
    assert not layers.get_activation('relu').inplace
    tanh = nn.Tanh()
    assert layers.get_activation(tanh) is tanh
    with pytest.raises(ValueError, match="G_activation='gelu'.*inplace_relu"):
        layers.get_activation('gelu', 'G_activation')
