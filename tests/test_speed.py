"""The fast path computes what the plain one does: bf16 autocast stays close to float32 (and
keeps SN, BN statistics and losses in float32), the training units equal the original's G_D,
torch.compile matches eager and saves the plain keys, metrics read back late are logged as if
read at once, and speed flags that cannot work say so."""
import copy
import dataclasses
import os

import pytest
import torch

import BigGAN
import checkpoints
import distributed
import loggers
import sampling
import train
import train_fns
import utils

CPU = torch.device('cpu')
# Attention at 16 px puts the float32 softmax on the path; ortho and EMA run too.
SMALL = ['--dataset', 'C10', '--G_ch', '8', '--D_ch', '8', '--G_attn', '16', '--D_attn', '16',
         '--dim_z', '16', '--G_shared', '--hier', '--shared_dim', '8', '--num_D_steps', '1',
         '--batch_size', '8', '--G_ortho', '1e-4', '--ema']
TINY = ['--dataset', 'C10', '--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0',
        '--dim_z', '16', '--G_shared', '--hier', '--shared_dim', '8']

# The stated tolerances of bf16 against float32 after one full step (measured: losses within
# 0.5 %, gradients 5 % (G) and 1.7 % (D); G's largest errors sit on conv biases that the next
# BN cancels, whose float32 gradient is rounding noise around 0).
LOSS_RTOL, G_GRAD_RTOL, D_GRAD_RTOL = 0.02, 0.12, 0.05


def _nets(flags):
    config = utils.parse_config(flags)
    utils.seed_rng(0)
    return config, train.build_models(config, CPU)


def _full_step(amp: str):
    config, models = _nets(SMALL)
    G, D = models.G, models.D
    GD = distributed.wrap_for_training(models.GD, config, CPU)
    noise = distributed.ShardedNoise(sampling.NoiseSampler(G.dim_z, 10, 8, seed=3), CPU)
    step = train_fns.GAN_training_function(dataclasses.replace(models, GD=GD), noise,
                                           {'itr': 1}, config,
                                           precision=train_fns.Precision(amp, CPU))
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 32, 32, generator=generator) * 2 - 1
    y = torch.randint(0, 10, (8,), generator=generator)
    G.train()
    D.train()
    metrics = step(x, y)
    # After the step, .grad holds G's gradient (G step) and D's (the D step).
    grads = {net: torch.cat([p.grad.flatten() for p in module.parameters()])
             for net, module in (('G', G), ('D', D))}
    return metrics, grads


def test_bf16_step_stays_close_to_float32():
    fp32, fp32_grads = _full_step('none')
    bf16, bf16_grads = _full_step('bf16')
    for key, value in fp32.items():
        assert bf16[key].dtype == torch.float32  # losses are computed in float32
        assert abs(float(bf16[key]) - float(value)) <= LOSS_RTOL * abs(float(value)), key
    for net, rtol in (('G', G_GRAD_RTOL), ('D', D_GRAD_RTOL)):
        error = (bf16_grads[net] - fp32_grads[net]).norm() / fp32_grads[net].norm()
        assert 0 < error <= rtol, (net, float(error))  # > 0: bf16 really ran


def test_bf16_keeps_spectral_norm_and_bn_statistics_in_float32():
    _, models = _nets(SMALL)
    G, D = models.G, models.D
    G32, D32 = copy.deepcopy(G), copy.deepcopy(D)
    z, y = torch.randn(8, G.dim_z), torch.randint(0, 10, (8,))
    with torch.no_grad():
        reference = D32(G32(z, G32.shared(y)), y)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            images = G(z, G.shared(y))
            scores = D(images, y)
    assert images.dtype == torch.bfloat16  # autocast really ran
    # bf16 rounds the operands, so the error scales with the largest scores, not each one (an
    # elementwise 5 % failed for 1 seed in 6, whichever formulation of the blocks; this holds
    # for 12 of 12, measured at 0.8 % at most).
    assert (scores.float() - reference).abs().max() <= 0.02 * reference.abs().max()
    for net, net32 in ((G, G32), (D, D32)):
        for (name, buf), buf32 in zip(net.named_buffers(), net32.buffers()):
            assert buf.dtype == buf32.dtype, name
            if name.split('.')[-1].startswith(('u', 'sv')):
                # The power iteration sees the float32 weight: the same vectors, to the bit.
                assert torch.equal(buf, buf32), name
            elif buf.is_floating_point():
                torch.testing.assert_close(buf, buf32, rtol=0.02, atol=0.02, msg=name)


def test_one_process_trains_through_the_models_own_g_d():
    """Without compile and DDP the training step calls the model's G_D itself, unwrapped."""
    config, models = _nets(TINY)
    assert type(models.GD) is BigGAN.G_D
    assert models.GD.G is models.G and models.GD.D is models.D
    assert distributed.wrap_for_training(models.GD, config, CPU) is models.GD


def test_compiled_g_and_d_match_eager_and_save_the_plain_keys(tmp_path):
    config, models = _nets(TINY + ['--compile'])
    G, D = models.G, models.D
    eager_G, eager_D = copy.deepcopy(G), copy.deepcopy(D)
    GD = distributed.wrap_for_training(models.GD, config, CPU)
    assert GD is models.GD and GD.G is not G and GD.G._orig_mod is G  # compiled in place
    z, y = torch.randn(4, G.dim_z), torch.randint(0, 10, (4,))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # train mode: SN and BN update their buffers inside the graph
        images = GD.G(z, GD.G.shared(y))
        scores = GD.D(x, y)
        eager_images = eager_G(z, eager_G.shared(y))
        eager_scores = eager_D(x, y)
    torch.testing.assert_close(images, eager_images, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, eager_scores, rtol=1e-5, atol=1e-5)
    for net, eager in ((G, eager_G), (D, eager_D)):
        for (name, buf), eager_buf in zip(net.named_buffers(), eager.buffers()):
            torch.testing.assert_close(buf, eager_buf, rtol=1e-5, atol=1e-5, msg=name)
    checkpoints.save_weights(G, D, {'itr': 1, 'config': {}}, str(tmp_path), 'exp',
                             G_optim=models.G_optim, D_optim=models.D_optim)
    for stem, eager in (('G', eager_G), ('D', eager_D)):
        saved = torch.load(os.path.join(str(tmp_path), 'exp', f'{stem}.pth'))
        assert list(saved) == list(eager.state_dict())  # no _orig_mod. or module. prefixes


BAD_FLAGS = [
    (['--amp', 'fp16'], r'--amp fp16: float16 .* needs a CUDA device.*--amp bf16'),
    (['--G_fp16', '--D_fp16'], r'--G_fp16, --D_fp16 \(mapped to --amp fp16\).*CUDA'),
]


@pytest.mark.parametrize('flags, message', BAD_FLAGS)
def test_precision_that_cannot_run_on_the_cpu_is_refused(flags, message):
    config = utils.parse_config(['--dataset', 'C10'] + flags)
    with pytest.raises(ValueError, match=message):
        distributed.check_flags(config, CPU)


def test_compile_without_a_compiler_is_refused(monkeypatch):
    config = utils.parse_config(['--dataset', 'C10', '--compile'])
    monkeypatch.delenv('CXX', raising=False)
    monkeypatch.setattr(distributed.shutil, 'which', lambda name: None)
    with pytest.raises(ValueError, match=r'--compile: .*C\+\+ compiler.*drop --compile'):
        distributed.check_flags(config, CPU)


@pytest.mark.parametrize('flags, message', [
    (['--amp', 'fp8'], r"--amp='fp8' is not valid.*'bf16'"),
    (['--compile_mode', 'fast'], r"--compile_mode='fast'.*reduce-overhead"),
    (['--log_every', '0'], r'--log_every must be >= 1'),
])
def test_bad_speed_flags_name_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        utils.parse_config(['--dataset', 'C10'] + flags)


class _Lines:
    def __init__(self):
        self.lines = []

    def log(self, itr, **values):
        self.lines.extend((itr, k, v) for k, v in values.items())


def test_deferred_log_reads_back_every_n_and_logs_every_iteration():
    lines = _Lines()
    log = loggers.DeferredLog(lines, every=3)
    for itr in (1, 2):
        log.add(itr, {'G_loss': torch.tensor(float(itr))})
        log.add(itr, {'G_sv0': torch.tensor([0.5])[0]}, losses=False)
    assert lines.lines == []  # nothing read back yet
    log.add(3, {'G_loss': torch.tensor(3.0)})
    assert lines.lines == [(1, 'G_loss', 1.0), (1, 'G_sv0', 0.5), (2, 'G_loss', 2.0),
                           (2, 'G_sv0', 0.5), (3, 'G_loss', 3.0)]
    log.add(4, {'G_loss': torch.tensor(4.0)})
    log.add(5, {'G_loss': torch.tensor(float('nan'))})
    with pytest.raises(FloatingPointError, match='iteration 5'):
        log.flush()  # train.py flushes before any save: no checkpoint of a NaN state
    assert lines.lines[-1] == (4, 'G_loss', 4.0)
