"""Sample from a trained BigGAN: `python sample.py <training flags> --sample_sheets ...`.

Loads G, or with `--use_ema` G_ema, from a weights folder written by train.py or by the original
(`<weights_root>/<exp>/G[_ema][_<load_weights>].pth`, strict key check), a bare G state_dict with
`--G_weights` (e.g. a TF-Hub conversion), or a pretrained folder (config.json + *.safetensors,
pretrained_files.py) with `--G_weights`. Then, as asked and in the original's order, it writes into
`<samples_root>/<exp>/`: `samples.npz`, class sheets `<folder>/samples<i>.jpg`, interpolation sheets
`<folder>/interp{ZY,Z,Y}0.jpg`, `random_samples.jpg`, and IS/FID once or over a truncation sweep
(`trunc_curves.jsonl`, `trunc_curves.png`). Runs on the CPU without a GPU.

Every output draws its noise from its own stream of `--seed` and starts from the same G state
(a G sampled in training mode updates its BN statistics and SN vectors), so an output is the
same whatever else is asked for in the run.
"""
import contextlib
import functools
import json
import os
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

import atomic
import checkpoints
import distributed
import layers
import loggers
import pretrained_files
import sample_config
import sampling
import train_fns
import utils

# Noise stream of each output (see the module docstring).
NPZ, SHEETS, INTERPS, RANDOM, METRICS, STANDING = range(6)


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

def load_generator(config: dict, device: torch.device) -> Tuple[nn.Module, dict]:
    """Build G from the flags and load the weights asked for. Returns (G, saved state); the
    state holds at least `itr` (0 for a --G_weights file)."""
    if config['G_weights'] and pretrained_files.is_folder(config['G_weights']):
        # config.json builds G; --use_ema picks G_ema.safetensors, else G.safetensors (or
        # G_ema.safetensors when that is all the folder holds).
        folder = config['G_weights']
        ema = True if config['use_ema'] else (
            None if 'G' not in pretrained_files.present(folder) else False)
        G = pretrained_files.load(folder, ema)
        print(f'Number of params in G: {utils.count_parameters(G)}; loaded '
              f'{pretrained_files.weights_file(pretrained_files.pick_generator(folder, ema))} '
              f'from {folder}')
        return G.to(device), {'itr': 0}
    G = utils.model_module(config).Generator(**config)
    print(f'Number of params in G: {utils.count_parameters(G)}')
    if config['G_weights']:
        if config['use_ema']:
            print('Note: --use_ema does nothing with --G_weights: the file is sampled as it is')
        try:
            checkpoints.load_into(G, config['G_weights'], strict=True)
        except ValueError as error:
            raise ValueError(f'{error}. For TF-Hub conversions (biggan-<res>.pth) the flags are '
                             f'in TFHub/README.md') from None
        return G.to(device), {'itr': 0}
    name = utils.experiment_name(config)
    suffix = config['load_weights'] or None
    state = {'itr': 0}
    if config['use_ema']:
        # The original loaded G_ema only with --ema as well, and otherwise sampled a G that was
        # never trained.
        ema_path = os.path.join(config['weights_root'], name,
                                checkpoints.file_name('G_ema', suffix))
        if os.path.isdir(os.path.dirname(ema_path)) and not os.path.isfile(ema_path):
            raise FileNotFoundError(f'--use_ema: {ema_path!r} does not exist (the run was not '
                                    f'trained with --ema); leave out --use_ema to sample G')
        checkpoints.load_weights(None, None, state, config['weights_root'], name, suffix,
                                 G_ema=G, strict=True, load_optim=False)
    else:
        checkpoints.load_weights(G, None, state, config['weights_root'], name, suffix,
                                 strict=True, load_optim=False)
        if os.path.isfile(os.path.join(config['weights_root'], name,
                                       checkpoints.file_name('G_ema', suffix))):
            print('Note: this run has G_ema weights too; --use_ema samples them')
    return G.to(device), state


def noise(G: nn.Module, config: dict, device: torch.device, stream: int,
          **overrides) -> sampling.NoiseSampler:
    """The noise of one output: z ~ N(0, z_var^2), truncated at --truncation if given, labels
    from --classes; seeded from (--seed, stream), and for the metrics under several processes
    the rank too (each process draws its own share of the images). `overrides` replace
    z_var / truncation."""
    settings = {'z_var': config['z_var'], 'truncation': config['truncation'], **overrides}
    entropy = [config['seed'], stream]
    if stream == METRICS and distributed.world_size() > 1:
        entropy.append(distributed.rank())
    seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    return sampling.NoiseSampler(G.dim_z, config['n_classes'], config['G_batch_size'], device,
                                 z_var=settings['z_var'],
                                 truncation=settings['truncation'] or 0.0, seed=seed,
                                 classes=config['sample_classes'])


def standing_stats(G: nn.Module, sampler: sampling.NoiseSampler, config: dict) -> None:
    """Standing statistics, leaving G in eval mode. z is drawn as the samples are
    (z_var, truncation; the original always used N(0, 1)); the labels come from the global RNG
    in `layers`, seeded here from the sampler so the statistics are reproducible."""
    print(f"Accumulating standing stats across {config['num_standing_accumulations']} "
          f"accumulations...")
    devices = [sampler.device] if sampler.device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(sampler.generator.initial_seed())
        z, y = sampler.sample()
        layers.accumulate_standing_stats(
            G, z, y, config['n_classes'], config['num_standing_accumulations'],
            sample_z=lambda buffer: buffer.copy_(sampler.sample_z(len(buffer))))


def prepare_mode(G: nn.Module, config: dict, device: torch.device) -> None:
    """--G_eval_mode and --accumulate_stats, as the original: eval mode uses the stored BN
    statistics; training mode (the default) normalizes with each batch's own."""
    if config['G_eval_mode']:
        print('Putting G in eval mode..')
        G.eval()
    else:
        print(f'G is in {"training" if G.training else "eval"} mode')
    if config['accumulate_stats']:
        standing_stats(G, noise(G, config, device, STANDING), config)


# ------------------------------------------------------------------------------------------------
# Metrics and truncation curves
# ------------------------------------------------------------------------------------------------

def inception_metrics(config: dict, device: torch.device) -> Callable:
    """IS/FID (KID, precision / recall) for the metrics outputs; built, with the Inception
    weights loaded and the moments file checked, only when one of them is asked for (the
    original needed both even to draw a sheet)."""
    import inception_utils
    return inception_utils.prepare_inception_metrics(
        config['dataset'], config['parallel'], config['no_fid'],
        moments_path=config['moments_path'] or None, inception=config['inception'],
        inception_weights=config['inception_weights'] or None, device=device,
        use_kid=config['use_kid'], use_prdc=config['use_prdc'],
        use_intra_fid=config['use_intra_fid'],
        resolution=config['resolution'], start_up=True)


def measure(G: nn.Module, sampler: sampling.NoiseSampler, config: dict, get_metrics: Callable,
            itr: int) -> dict:
    """IS/FID of G under `sampler`; prints the original sample.py's line (without its
    "PYTORCH UNOFFICIAL": the default network is TF-exact)."""
    IS_mean, IS_std, FID = get_metrics(functools.partial(sampling.sample, G, sampler),
                                       config['num_inception_images'], num_splits=10)
    last = getattr(get_metrics, 'last', None) or {}
    clauses = [f"Using {'ema' if config['use_ema'] else 'non-ema'} weights in "
               f"{'training' if G.training else 'eval'} mode",
               f'with noise std {sampler.z_var:3.3f}'
               + (f' truncated at {sampler.truncation:g}' if sampler.truncation else ''),
               f"over {last.get('num_images', config['num_inception_images'])} images"]
    if config['accumulate_stats'] or G.training:
        clauses.append(f"with batch size {config['G_batch_size']}")
    if config['accumulate_stats']:
        clauses.append(f"using {config['num_standing_accumulations']} standing stat "
                       f"accumulations")
    record = {'itr': int(itr), 'IS_mean': float(IS_mean), 'IS_std': float(IS_std),
              'FID': float(FID), **train_fns.extra_metrics(get_metrics)}
    extra = ''
    if 'KID_mean' in record:
        extra += f", KID is {record['KID_mean']:.5f} +/- {record['KID_std']:.5f}"
    if 'intra_FID' in record:
        extra += f", intra-class FID is {record['intra_FID']:5.4f}"
    if 'precision' in record:
        extra += ', ' + ', '.join(f'{key} {record[key]:.4f}' for key in
                                  ('precision', 'recall', 'density', 'coverage'))
    print(', '.join(clauses) + f', Itr {itr}: Inception Score is {IS_mean:3.3f} +/- '
          f'{IS_std:3.3f}, FID is {FID:5.4f}{extra}')
    return record


def truncation_curves(G: nn.Module, config: dict, device: torch.device, get_metrics: Callable,
                      itr: int, folder: str) -> List[dict]:
    """IS/FID for every --sample_trunc_curves value of z_var (the original) or of the
    truncation threshold (--sample_trunc_sweep truncation). Every value starts from the same
    G state: standing statistics are re-accumulated with that value's noise, never on top of
    the previous value's. Writes trunc_curves.jsonl after each value, then trunc_curves.png."""
    key = config['sample_trunc_sweep']
    jsonl = os.path.join(folder, 'trunc_curves.jsonl')
    records = []
    for value in config['trunc_values']:
        with train_fns.preserve_state(G):
            if config['accumulate_stats']:
                standing_stats(G, noise(G, config, device, STANDING, **{key: value}), config)
            record = measure(G, noise(G, config, device, METRICS, **{key: value}), config,
                             get_metrics, itr)
        records.append({key: value, **record})
        if distributed.is_main():
            atomic.atomic_write_text(jsonl, ''.join(json.dumps(r) + '\n' for r in records))
    if distributed.is_main():
        plot_trunc_curves(records, key, os.path.join(folder, 'trunc_curves.png'))
        print(f'Truncation curves: {jsonl}')
    return records


def plot_trunc_curves(records: List[dict], key: str, path: str) -> None:
    """IS against the swept value, and FID against IS (the paper's trade-off), as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    values = [r[key] for r in records]
    IS = [r['IS_mean'] for r in records]
    left.errorbar(values, IS, yerr=[r['IS_std'] for r in records], marker='o', capsize=3)
    left.set_xlabel('z std (--z_var)' if key == 'z_var' else 'truncation threshold')
    left.set_ylabel('Inception Score')
    FID = [r['FID'] for r in records]
    if any(f != 9999.0 for f in FID):  # --no_fid reports 9999.0
        right.plot(IS, FID, marker='o')
        for value, x, y in zip(values, IS, FID):
            right.annotate(f'{value:g}', (x, y), fontsize='x-small')
    else:
        right.text(0.5, 0.5, 'no FID (--no_fid)', transform=right.transAxes, ha='center')
    right.set_xlabel('Inception Score')
    right.set_ylabel('FID')
    fig.tight_layout()
    atomic.atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))


# ------------------------------------------------------------------------------------------------
# The outputs
# ------------------------------------------------------------------------------------------------

def write_outputs(G: nn.Module, state: dict, config: dict, device: torch.device,
                  get_metrics: Optional[Callable] = None) -> dict:
    """Every output asked for, in the original's order (npz, sheets, interpolations, random
    sheet, IS/FID, truncation curves); `get_metrics`
    (from `inception_metrics`) is needed for the metrics outputs. Returns {'npz': path,
    'sheets': [paths], 'interps': [paths], 'random': path, 'metrics': record, 'trunc_curves':
    [records]} for what was written."""
    name = utils.experiment_name(config)
    folder = os.path.join(config['samples_root'], name)
    os.makedirs(folder, exist_ok=True)  # the original expected it to exist
    if distributed.is_main():
        atomic.remove_dead_temporaries(folder)  # of sample.py runs killed while writing
    progress = (None if config['pbar'] == 'none'
                else functools.partial(loggers.progress, displaytype='eta'))
    out = {}
    if config['sample_npz']:
        out['npz'] = os.path.join(folder, 'samples.npz')
        with train_fns.preserve_state(G):
            x, y = sampling.sample_npz(G, noise(G, config, device, NPZ),
                                       config['sample_num_npz'], out['npz'],
                                       progress and functools.partial(progress, desc='npz '))
        if x is not None:
            print(f"Saved x {x.shape} {x.dtype} and y {y.shape} {y.dtype} to {out['npz']}")
    if distributed.is_main():  # the sheets are one process's work
        out.update(write_sheets(G, config, device, progress))
    if wants_metrics(config):
        get_metrics = get_metrics or inception_metrics(config, device)
        if config['sample_inception_metrics']:
            with train_fns.preserve_state(G):
                out['metrics'] = measure(G, noise(G, config, device, METRICS), config,
                                         get_metrics, state['itr'])
        if config['trunc_values']:
            out['trunc_curves'] = truncation_curves(G, config, device, get_metrics,
                                                    state['itr'], folder)
    for kind in ('npz', 'random'):
        if kind in out:
            print(f'Wrote {out[kind]}')
    for kind in ('sheets', 'interps'):
        if kind in out:
            print(f"Wrote {len(out[kind])} {kind} to {os.path.dirname(out[kind][0])}")
    return out


def write_sheets(G: nn.Module, config: dict, device: torch.device,
                 progress: Optional[Callable]) -> dict:
    """The class sheets, interpolation sheets and random sheet asked for (see write_outputs)."""
    name = utils.experiment_name(config)
    sheets = (config['samples_root'], name, config['sample_sheet_folder_num'])
    out = {}
    if config['sample_sheets']:
        with train_fns.preserve_state(G):
            out['sheets'] = sampling.sample_sheet(
                G, config['classes_per_sheet'], config['n_classes'], 10, *sheets,
                noise(G, config, device, SHEETS), classes=config['sample_classes'],
                progress=progress and functools.partial(progress, desc='Class sheets '))
    if config['sample_interps']:
        sampler = noise(G, config, device, INTERPS)
        kinds = sampling.interp_kinds(config['n_classes'])
        with train_fns.preserve_state(G):
            out['interps'] = [sampling.interp_sheet(G, 16, 8, config['n_classes'], *sheets,
                                                    sampler, fix_z=fix_z, fix_y=fix_y,
                                                    pairs=config['interp_pairs'])
                              for fix_z, fix_y in (progress(kinds, desc='Interpolations ')
                                                   if progress else kinds)]
    if config['sample_random']:
        out['random'] = os.path.join(config['samples_root'], name, 'random_samples.jpg')
        with train_fns.preserve_state(G):
            images, _ = sampling.sample(G, noise(G, config, device, RANDOM))
        sampling.save_image(images, out['random'], nrow=int(config['G_batch_size'] ** 0.5))
    return out


def wants_metrics(config: dict) -> bool:
    return bool(config['sample_inception_metrics'] or config['trunc_values'])


def load(config: dict, device: Optional[torch.device] = None
         ) -> Tuple[nn.Module, dict, torch.device]:
    """Device, seeds, G loaded and in the mode asked for: everything before the outputs.
    `device`: this process's, where torchrun chose it (see `main`)."""
    configured = utils.setup_torch(config)  # seeds and backend flags
    device = device or configured
    print(f'Experiment name is {utils.experiment_name(config)}')
    G, state = load_generator(config, device)
    prepare_mode(G, config, device)
    return sampling.fast_G(G, config), state, device


def run(config: dict) -> dict:
    """The whole of sample.py for a parsed config (see `write_outputs` for what it returns)."""
    G, state, device = load(config)
    return write_outputs(G, state, config, device)


def main(argv: Optional[List[str]] = None) -> dict:
    """sample.py. Under `torchrun --nproc_per_node N sample.py ...` every process draws its
    share of the npz and of the metrics' images on its own GPU; rank 0 writes every file and
    alone prints. Returns what write_outputs returns."""
    finished = False
    with utils.exit_on_interrupt('no partial file is left'), utils.exit_on_user_error():
        config = sample_config.parse_sample_config(argv)
        device = distributed.setup(utils.get_device(config))
        try:
            with (contextlib.nullcontext() if distributed.is_main()
                  else contextlib.redirect_stdout(open(os.devnull, 'w'))):
                print(dict(config))
                # Missing Inception weights or moments stop the run now, before G is loaded,
                # not after an hour of sampling.
                get_metrics = (inception_metrics(config, device) if wants_metrics(config)
                               else None)
                G, state, device = load(config, device)
                out = write_outputs(G, state, config, device, get_metrics)
            finished = True
        finally:
            distributed.teardown(wait=finished)
    return out


if __name__ == '__main__':
    main()
