"""The training step and what runs around it: the nets a run trains (`Models`), EMA, orthogonal
regularization, gradient toggling, precision, `save_and_sample` and `test`.

`GAN_training_function` returns `train(x, y)`, one full G iteration (the original's
train_fns.GAN_training_function): `num_D_steps` D steps of `num_D_accumulations` micro-batches
each, then a G step of `num_G_accumulations` micro-batches, then the EMA update. Every forward
goes through the fused `G_D`. Noise and labels come from a sampler object (`sample(n) -> (z,
y)`), so tests can inject fixed noise.
"""
import contextlib
import functools
import itertools
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

import checkpoints
import distributed
import layers
import loggers
import losses
import regularizers
import sampling


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

def toggle_grad(model: nn.Module, on_or_off: bool) -> None:
    """requires_grad on or off for every parameter, except frozen ones (finetune.freeze),
    which stay off."""
    for param in model.parameters():
        param.requires_grad = on_or_off and not getattr(param, 'frozen', False)


@torch.no_grad()
def ortho(model: nn.Module, strength: float = 1e-4, blacklist: Iterable = ()) -> None:
    """BigGAN's "modified" orthogonal regularization, added straight to the gradients: for every
    weight W (2+ dims, viewed as rows) not in `blacklist`, grad += strength * 2 *
    ((W W^T) * (1 - I)) W, the gradient of (strength / 2) ||W W^T * (1 - I)||_F^2."""
    skip = {id(p) for p in blacklist}
    for param in model.parameters():
        if param.ndim < 2 or id(param) in skip or param.grad is None:
            continue
        # reshape, not view: a channels_last weight is not contiguous.
        w = param.reshape(param.shape[0], -1).float()
        off_diagonal = 1. - torch.eye(w.shape[0], device=w.device)
        grad = 2 * torch.mm(torch.mm(w, w.t()) * off_diagonal, w)
        param.grad.add_(strength * grad.view(param.shape).to(param.grad.dtype))


class EMA:
    """Exponential moving average of every parameter AND buffer of `source` into `target` (the
    original's utils.ema, same arguments): before `start_itr` the target is a copy (decay 0).

    The tensor lists are cached and rebuilt whenever a tensor of either module was replaced or
    re-allocated (moved or cast), so casting or moving the models later is safe (the original
    held stale references); an update is one multi-tensor lerp.
    """

    def __init__(self, source: nn.Module, target: nn.Module, decay: float = 0.9999,
                 start_itr: int = 0):
        self.source, self.target = source, target
        self.decay = decay
        self.start_itr = start_itr
        self._lists, self._signature = None, None
        with torch.no_grad():
            target.load_state_dict(source.state_dict())

    def _current(self):
        """(float targets, float sources, integer pairs), by state_dict key."""
        signature = tuple((t.data_ptr(), t.dtype) for module in (self.source, self.target)
                          for t in itertools.chain(module.parameters(), module.buffers()))
        if signature != self._signature:
            source = self.source.state_dict()
            floats, counters = ([], []), []
            for key, target in self.target.state_dict().items():
                if target.is_floating_point():
                    floats[0].append(target)
                    floats[1].append(source[key])
                else:
                    counters.append((target, source[key]))
            self._lists, self._signature = (*floats, counters), signature
        return self._lists

    @torch.no_grad()
    def update(self, itr: Optional[int] = None) -> None:
        decay = 0.0 if itr and itr < self.start_itr else self.decay
        targets, sources, counters = self._current()
        for target, source in counters:
            target.copy_(source)  # integer counters are copied, not averaged
        if targets:
            # A source of another dtype (a half-precision G) is cast, the target kept.
            sources = [s if s.dtype == t.dtype else s.to(t.dtype)
                       for s, t in zip(sources, targets)]
            torch._foreach_lerp_(targets, sources, 1 - decay)


class _NoScaler:
    """Stands in for torch.amp.GradScaler when no loss scaling is needed."""

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        pass


# --amp: the autocast dtype of each mode (none: float32, no autocast).
AMP_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class Precision:
    """Autocast and loss scaling for --amp (AMP_DTYPES). Spectral norm, BN statistics, the
    attention softmax and the losses stay in float32 inside the layers."""

    def __init__(self, amp: str = 'none', device: torch.device = torch.device('cpu')):
        layers.check_choice('--amp', amp, list(AMP_DTYPES))
        self.amp, self.device_type = amp, torch.device(device).type
        fp16 = amp == 'fp16' and self.device_type == 'cuda'
        self.D_scaler = torch.amp.GradScaler('cuda') if fp16 else _NoScaler()
        self.G_scaler = torch.amp.GradScaler('cuda') if fp16 else _NoScaler()

    def autocast(self):
        if self.amp == 'none':
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=AMP_DTYPES[self.amp])


def no_sync(module: nn.Module, skip: bool):
    """DDP's no_sync (skip averaging the gradients of this backward) when `skip` and `module`
    is DDP-wrapped (compiled or not); nothing otherwise."""
    module = getattr(module, '_orig_mod', module)  # torch.compile's wrapper
    if skip and isinstance(module, nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()


def match_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state the memory layout of its parameter (a checkpoint holds
    contiguous tensors; the multi-tensor and fused kernels want matching strides)."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (torch.is_tensor(value) and value.shape == param.shape
                    and value.stride() != param.stride()):
                state[key] = torch.empty_like(param).copy_(value)


def prepare_batch(x: torch.Tensor, y: torch.Tensor, device: torch.device,
                  channels_last: bool = False):
    """Move a loader batch to the device without waiting (pinned memory), in the layout the
    nets use."""
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@dataclass
class Models:
    """What a run trains and saves: G, D, their optimizers, G_ema and its EMA (None without
    --ema), and `GD`, the fused G_D forward over G and D that the training step calls (its
    `G` and `D` may be compiled or DDP-wrapped by distributed.wrap_for_training; the plain G
    and D here are what checkpoints, the EMA and sampling use)."""
    G: nn.Module
    D: nn.Module
    G_optim: torch.optim.Optimizer
    D_optim: torch.optim.Optimizer
    GD: nn.Module
    G_ema: Optional[nn.Module] = None
    ema: Optional[EMA] = None


# ------------------------------------------------------------------------------------------------
# The training step
# ------------------------------------------------------------------------------------------------

def GAN_training_function(models: Models, sampler, state_dict: dict, config: dict, *,
                          precision: Optional[Precision] = None,
                          extras: Optional[regularizers.DataEfficient] = None) -> Callable:
    """One BigGAN iteration of `models` as a closure `train(x, y) -> metrics`, through their
    fused `GD` (BigGAN.G_D, or DataParallel over it); with `models.ema`, the EMA is updated
    after each iteration at `state_dict['itr']`. `extras` (the limited-data flags) adds its
    terms to each loss; its augmentations are the fused G_D's `augment`.

    Under DDP (GD.G and GD.D wrapped), gradient averaging is skipped on all but the last
    micro-batch of an accumulation, and always for D in the G step, where D is frozen and its
    gradients unused. Metrics are returned as 0-dim tensors, so the step never waits for the
    device.
    """
    G, D, GD, ema = models.G, models.D, models.GD, models.ema
    G_optim, D_optim = models.G_optim, models.D_optim
    discriminator_loss, generator_loss = losses.get_losses(config['loss'])
    precision = precision or Precision('none')
    batch_size = config['batch_size']
    G_batch_size = max(config['G_batch_size'], batch_size)
    n_D, n_Da, n_Ga = (config['num_D_steps'], config['num_D_accumulations'],
                       config['num_G_accumulations'])
    fused = GD.module if isinstance(GD, nn.DataParallel) else GD  # the G_D, for its G and D

    def train(x: torch.Tensor, y: torch.Tensor) -> Dict[str, torch.Tensor]:
        itr = state_dict['itr']
        if extras is not None:
            x = extras.start(itr, x)
        G_optim.zero_grad(set_to_none=True)
        D_optim.zero_grad(set_to_none=True)
        x = torch.split(x, batch_size)
        y = torch.split(y, batch_size)
        if len(x) < n_D * n_Da:
            raise ValueError(f'the batch holds {len(x)} chunks of {batch_size}, but '
                             f'--num_D_steps x --num_D_accumulations = {n_D * n_Da} are needed')
        counter = 0
        if config['toggle_grads']:
            toggle_grad(D, True)
            toggle_grad(G, False)
        for _ in range(n_D):
            D_optim.zero_grad(set_to_none=True)
            for accumulation in range(n_Da):
                z_, y_ = sampler.sample(batch_size)
                with no_sync(fused.D, accumulation < n_Da - 1):
                    with precision.autocast():
                        # G_z: G's output, where the extras need it (bCR's fakes, zCR).
                        D_fake, D_real, *G_z = GD(
                            z_, y_, x[counter], y[counter], train_G=False,
                            split_D=config['split_D'],
                            return_G_z=extras is not None and extras.needs_G_z)
                        D_loss_real, D_loss_fake = discriminator_loss(D_fake, D_real)
                        D_loss = D_loss_real + D_loss_fake
                        if extras is not None:
                            D_loss = D_loss + extras.D_terms(
                                fused, itr, D_fake, D_real, *(G_z or [None]), z_, y_,
                                x[counter], y[counter])
                        D_loss = D_loss / float(n_Da)
                    precision.D_scaler.scale(D_loss).backward()
                counter += 1
            if config['D_ortho'] > 0:
                precision.D_scaler.unscale_(D_optim)
                ortho(D, config['D_ortho'])
            precision.D_scaler.step(D_optim)
            precision.D_scaler.update()

        if config['toggle_grads']:
            toggle_grad(D, False)
            toggle_grad(G, True)
        G_optim.zero_grad(set_to_none=True)
        for accumulation in range(n_Ga):
            z_, y_ = sampler.sample(G_batch_size)
            with no_sync(fused.G, accumulation < n_Ga - 1), no_sync(fused.D, True):
                with precision.autocast():
                    if extras is None:
                        D_fake = GD(z_, y_, train_G=True, split_D=config['split_D'])
                        G_loss = generator_loss(D_fake)
                    else:
                        D_fake, G_z = GD(z_, y_, train_G=True, split_D=config['split_D'],
                                         return_G_z=True)
                        G_loss = extras.G_loss(generator_loss, fused, D_fake, G_z, z_, y_,
                                               itr)
                    G_loss = G_loss / float(n_Ga)
                precision.G_scaler.scale(G_loss).backward()
        if config['G_ortho'] > 0:
            precision.G_scaler.unscale_(G_optim)
            # The shared embedding is not orthogonalized (as in the original).
            ortho(G, config['G_ortho'], blacklist=list(G.shared.parameters()))
        precision.G_scaler.step(G_optim)
        precision.G_scaler.update()

        if ema is not None:
            ema.update(itr)
        metrics = {'G_loss': G_loss.detach(), 'D_loss_real': D_loss_real.detach(),
                   'D_loss_fake': D_loss_fake.detach()}
        if extras is not None:
            extras.end(itr)
            metrics.update(extras.metrics())
        return metrics

    return train


def dummy_training_function() -> Callable:
    """--which_train_fn dummy: a step that trains nothing (to time the data pipeline)."""
    def train(x, y):
        return {}
    return train


# ------------------------------------------------------------------------------------------------
# Saving, sampling and testing
# ------------------------------------------------------------------------------------------------

def which_G(G: nn.Module, G_ema: Optional[nn.Module], config: dict) -> nn.Module:
    """The G that samples and is tested: G_ema with --ema --use_ema, else G."""
    return G_ema if (G_ema is not None and config['use_ema']) else G


@contextlib.contextmanager
def preserve_state(net: nn.Module):
    """Run sheets and metrics without side effects on training: a G sampled in train mode
    updates its BN statistics and SN vectors (the original let those leak into training), and
    standing statistics overwrite them; both are put back afterwards, with the mode."""
    buffers = {name: buf.clone() for name, buf in net.named_buffers()}
    mode = net.training
    try:
        yield net
    finally:
        with torch.no_grad():
            for name, buf in net.named_buffers():
                buf.copy_(buffers[name])
        net.train(mode)


def _standing_stats(net: nn.Module, sampler, config: dict) -> None:
    if config['accumulate_stats']:
        z, y = sampler.sample()
        layers.accumulate_standing_stats(net, z, y, config['n_classes'],
                                         config['num_standing_accumulations'])


CPU_SHEET_CLASSES = 100  # the classes drawn in the sheets at each save on the CPU by default


def sheet_classes(config: dict, device: torch.device) -> Optional[list]:
    """The classes of the class sheets drawn at each save (--sheet_classes), None for all."""
    wanted, n_classes = config['sheet_classes'], config['n_classes']
    if wanted < 0:
        wanted = CPU_SHEET_CLASSES if torch.device(device).type == 'cpu' else 0
    return None if wanted == 0 or wanted >= n_classes else list(range(wanted))


def save_and_sample(models: Models, sampler, fixed_z, fixed_y, state_dict: dict, config: dict,
                    experiment_name: str, *, training_state: Optional[dict] = None,
                    draw: Optional[nn.Module] = None) -> List[Tuple[str, str]]:
    """Save the checkpoint (and a rotating copy), then the fixed, class and interpolation
    sheets, as the original's train_fns.save_and_sample. `training_state` (RNG states) is saved
    inside state_dict.pth; `draw` (sampling.FastG over the sampled G) draws the sheets.
    Returns the fixed and class sheets written, as (name, path) pairs."""
    # The ring counter is advanced before saving, so a resumed run writes the next slot (the
    # original saved the old value and overwrote its newest copy after a resume).
    slot = state_dict['save_num']
    if config['num_save_copies'] > 0:
        state_dict['save_num'] = (slot + 1) % config['num_save_copies']
    state = dict(state_dict, **(training_state or {}))
    save = functools.partial(checkpoints.save_weights, models.G, models.D, state,
                             config['weights_root'], experiment_name, G_ema=models.G_ema,
                             G_optim=models.G_optim, D_optim=models.D_optim)
    save(None)
    if config['num_save_copies'] > 0:
        save(f'copy{slot}')

    itr = state_dict['itr']
    folder = os.path.join(config['samples_root'], experiment_name)
    os.makedirs(folder, exist_ok=True)
    with preserve_state(which_G(models.G, models.G_ema, config)) as net:
        _standing_stats(net, sampler, config)
        net = draw or net
        with torch.no_grad():
            fixed = net(fixed_z, net.shared(fixed_y))
        fixed_path = os.path.join(folder, f'fixed_samples{itr}.jpg')
        sampling.save_image(fixed, fixed_path, nrow=int(fixed_z.shape[0] ** 0.5))
        classes = sheet_classes(config, sampler.device)
        count = len(classes) if classes is not None else config['n_classes']
        sheets = -(-count // config['classes_per_sheet'])
        show = sheets > 1 and config['pbar'] != 'none'
        class_paths = sampling.sample_sheet(
            net, config['classes_per_sheet'], config['n_classes'], 10, config['samples_root'],
            experiment_name, itr, sampler, classes=classes, progress=functools.partial(
                loggers.progress, desc='Class sheets ', displaytype='eta') if show else None)
        for fix_z, fix_y in sampling.interp_kinds(config['n_classes']):
            sampling.interp_sheet(net, 16, 8, config['n_classes'], config['samples_root'],
                                  experiment_name, itr, sampler, fix_z=fix_z, fix_y=fix_y)
    return [('fixed_samples', fixed_path)] + [
        (f'class_sheet{i}', path) for i, path in enumerate(class_paths)]


def extra_metrics(get_inception_metrics: Callable) -> Dict[str, float]:
    """KID, precision / recall / density / coverage and intra-class FID of the last metrics
    call, where computed (--use_kid, --use_prdc, --use_intra_fid), for the JSONL records."""
    last = getattr(get_inception_metrics, 'last', None) or {}
    return {key: float(last[key]) for key in EXTRA_METRICS if last.get(key) is not None}


EXTRA_METRICS = ('KID_mean', 'KID_std', 'precision', 'recall', 'density', 'coverage',
                 'intra_FID')


def test(models: Models, sampler, state_dict: dict, config: dict, sample: Callable,
         get_inception_metrics: Callable, experiment_name: str, test_log, *,
         training_state: Optional[dict] = None) -> dict:
    """IS/FID of `sample()`; keep the best `num_best_copies` checkpoints by --which_best and
    append the JSONL record, as the original's train_fns.test. A best copy holds the BN
    buffers its scores were measured with (standing statistics included), as the original's
    did; training goes on with its own. Under torch.distributed every rank samples its share
    and gets the same scores; rank 0 alone prints and writes."""
    itr = state_dict['itr']
    main = distributed.is_main()
    with preserve_state(which_G(models.G, models.G_ema, config)) as net:
        _standing_stats(net, sampler, config)
        IS_mean, IS_std, FID = get_inception_metrics(sample, config['num_inception_images'],
                                                     num_splits=10)
        if main:
            describe = getattr(get_inception_metrics, 'describe', None)  # another scorer's
            print(f'Itr {itr}: ' + (describe(IS_mean, IS_std, FID) if describe else
                                    f'Inception Score is {IS_mean:3.3f} +/- {IS_std:3.3f}, '
                                    f'FID is {FID:5.4f}'))
        improved = ((config['which_best'] == 'IS' and IS_mean > state_dict['best_IS'])
                    or (config['which_best'] == 'FID' and FID < state_dict['best_FID']))
        state_dict['best_IS'] = max(state_dict['best_IS'], float(IS_mean))
        state_dict['best_FID'] = min(state_dict['best_FID'], float(FID))
        if improved:
            slot = state_dict['save_best_num']
            state_dict['save_best_num'] = (slot + 1) % config['num_best_copies']
            if main:
                print(f"{config['which_best']} improved over previous best, saving "
                      f"checkpoint...")
                state = dict(state_dict, **(training_state or {}))
                checkpoints.save_weights(models.G, models.D, state, config['weights_root'],
                                         experiment_name, f'best{slot}', models.G_ema,
                                         G_optim=models.G_optim, D_optim=models.D_optim)
    named = getattr(get_inception_metrics, 'record', None)
    record = {'itr': int(itr), **(named(IS_mean, IS_std, FID) if named else
                                  {'IS_mean': float(IS_mean), 'IS_std': float(IS_std),
                                   'FID': float(FID), **extra_metrics(get_inception_metrics)})}
    if main:
        test_log.log(record)
    return record
