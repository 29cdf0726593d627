"""Run bookkeeping: the command-line parser, the read-only config, experiment names, seeding,
root folders and device set-up.

Every flag of the original keeps its name, type, default and meaning (spec 1.1, 1.2), so the
original launch scripts run unchanged; new flags are additions, listed in README.md. The config is
parsed and validated once by `parse_config`, then read-only: a new flag touches the table below
and the place that reads it.
"""
import argparse
import contextlib
import hashlib
import os
import random
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch

import layers

# ------------------------------------------------------------------------------------------------
# Flags
# ------------------------------------------------------------------------------------------------

_FLAG, _ = 'flag', None  # marker for store_true flags

# (name, type or 'flag', default, help). Order and defaults follow the original's parser.
SHARED_FLAGS = [
    # Data and loader
    ('dataset', str, 'I128_hdf5', 'dataset name (see README: I32..I256, their _hdf5 forms, C10, '
                                  'C100, FMNIST, or ImageFolder / HDF5 for your own data)'),
    ('augment', _FLAG, False, 'random crop and flip augmentation (image folders and CIFAR)'),
    ('num_workers', int, 8, 'DataLoader workers'),
    ('shuffle', _FLAG, False, 'shuffle the data every epoch'),
    ('load_in_mem', _FLAG, False, 'load the whole dataset into RAM'),
    ('use_multiepoch_sampler', _FLAG, False,
     'one sampler for all epochs (resumes at the exact batch)'),
    # Model
    ('model', str, 'BigGAN', 'model family: BigGAN or BigGANdeep'),
    ('G_param', str, 'SN', 'G parameterization: SN, or SVD/none for plain layers'),
    ('D_param', str, 'SN', 'D parameterization: SN, or SVD/none for plain layers'),
    ('G_ch', int, 64, 'G channel multiplier'),
    ('D_ch', int, 64, 'D channel multiplier'),
    ('G_depth', int, 1, 'resblocks per stage in G (BigGANdeep)'),
    ('D_depth', int, 1, 'resblocks per stage in D (BigGANdeep)'),
    ('G_shared', _FLAG, False, 'shared class embedding in G'),
    ('shared_dim', int, 0, 'shared embedding size (0: dim_z)'),
    ('dim_z', int, 128, 'noise size (with --hier, rounded down to a multiple of the chunks)'),
    ('z_var', float, 1.0, 'sample.py: standard deviation of z (named "var" by the original)'),
    ('hier', _FLAG, False, 'hierarchical z (needs --G_shared)'),
    ('cross_replica', _FLAG, False, 'cross-replica (synchronized) BN in G across processes'),
    ('mybn', _FLAG, False, 'BN with standing statistics in G'),
    ('G_nl', str, 'relu', 'G activation: relu, inplace_relu or ir'),
    ('D_nl', str, 'relu', 'D activation: relu, inplace_relu or ir'),
    ('G_attn', str, '64', "G self-attention resolutions, e.g. '64' or '32_64'; '0' for none"),
    ('D_attn', str, '64', "D self-attention resolutions, e.g. '64'; '0' for none"),
    ('norm_style', str, 'bn', 'G ccbn normalizer: bn, in, gn (gn_ch_N, gn_grp_N) or nonorm'),
    # Init
    ('seed', int, 0, 'random seed'),
    ('G_init', str, 'ortho', 'G init: ortho, N02, glorot or xavier'),
    ('D_init', str, 'ortho', 'D init: ortho, N02, glorot or xavier'),
    ('skip_init', _FLAG, False, 'skip weight init (forced by --resume)'),
    # Optimizer
    ('G_lr', float, 5e-5, 'G learning rate'),
    ('D_lr', float, 2e-4, 'D learning rate'),
    ('G_B1', float, 0.0, 'G Adam beta1'),
    ('D_B1', float, 0.0, 'D Adam beta1'),
    ('G_B2', float, 0.999, 'G Adam beta2'),
    ('D_B2', float, 0.999, 'D Adam beta2'),
    ('adam_eps', float, 1e-8, 'Adam epsilon (both nets)'),
    # Batch, loop, parallelism, precision
    ('batch_size', int, 64, 'batch size (per process, per D step and accumulation)'),
    ('G_batch_size', int, 0, 'G batch size (effective: max(G_batch_size, batch_size))'),
    ('num_G_accumulations', int, 1, 'G gradient accumulations per G step'),
    ('num_D_steps', int, 2, 'D steps per G step'),
    ('num_D_accumulations', int, 1, 'D gradient accumulations per D step'),
    ('split_D', _FLAG, False, 'run D on fakes and reals separately'),
    ('num_epochs', int, 100, 'number of epochs'),
    ('parallel', _FLAG, False, 'use all visible GPUs of this process (see README)'),
    ('G_fp16', _FLAG, False, 'half precision for G (now: --amp fp16)'),
    ('D_fp16', _FLAG, False, 'half precision for D (now: --amp fp16)'),
    ('D_mixed_precision', _FLAG, False, 'mixed precision for D (now: --amp fp16)'),
    ('G_mixed_precision', _FLAG, False, 'mixed precision for G (now: --amp fp16)'),
    ('accumulate_stats', _FLAG, False, 'standing statistics before saving and testing'),
    ('num_standing_accumulations', int, 16, 'forward passes for standing statistics'),
    # Bookkeeping
    ('G_eval_mode', _FLAG, False, 'G in eval mode for sampling and testing'),
    ('save_every', int, 2000, 'save a checkpoint and sample sheets every N iterations'),
    ('num_save_copies', int, 2, 'rotating checkpoint copies copy0.. (0: none)'),
    ('num_best_copies', int, 2, 'rotating best checkpoints best0..'),
    ('which_best', str, 'IS', 'metric that decides the best checkpoints: IS or FID'),
    ('no_fid', _FLAG, False, 'compute IS only (FID reported as 9999.0)'),
    ('test_every', int, 5000, 'compute IS/FID every N iterations'),
    ('num_inception_images', int, 50000, 'generated images for IS/FID'),
    ('hashname', _FLAG, False, 'name the experiment by a stable hash of its config'),
    ('base_root', str, '', 'if set, the default root for data, weights, logs and samples'),
    ('data_root', str, 'data', 'dataset folder (or file for --dataset HDF5)'),
    ('weights_root', str, 'weights', 'checkpoint folder'),
    ('logs_root', str, 'logs', 'log folder'),
    ('samples_root', str, 'samples', 'sample image folder'),
    ('pbar', str, 'mine', "progress display: mine (the original's), tqdm or none"),
    ('name_suffix', str, '', 'suffix appended to the experiment name'),
    ('experiment_name', str, '', 'experiment name (default: built from the config)'),
    ('config_from_name', _FLAG, False,
     "sample.py: take the saved experiment's config (flags given here still win)"),
    ('logstyle', str, '%3.3e', 'printf format of the training logs'),
    ('log_G_spectra', _FLAG, False, 'unused, kept for compatibility'),
    ('log_D_spectra', _FLAG, False, 'unused, kept for compatibility'),
    ('sv_log_interval', int, 10, 'log singular values every N iterations (<= 0: never)'),
    # EMA
    ('ema', _FLAG, False, 'keep an exponential moving average of G (G_ema)'),
    ('ema_decay', float, 0.9999, 'EMA decay'),
    ('use_ema', _FLAG, False, 'sample and test with G_ema'),
    ('ema_start', int, 0, 'iteration at which the EMA starts averaging'),
    # Numerics
    ('BN_eps', float, 1e-5, "eps of G's class-conditional BN"),
    ('SN_eps', float, 1e-8, 'eps of the spectral-norm power iteration'),
    ('num_G_SVs', int, 1, 'singular values tracked per SN layer in G'),
    ('num_D_SVs', int, 1, 'singular values tracked per SN layer in D'),
    ('num_G_SV_itrs', int, 1, 'power iterations per forward in G'),
    ('num_D_SV_itrs', int, 1, 'power iterations per forward in D'),
    # Regularization, training function, resume
    ('G_ortho', float, 0.0, 'modified orthogonal regularization strength for G (paper: 1e-4)'),
    ('D_ortho', float, 0.0, 'modified orthogonal regularization strength for D'),
    ('toggle_grads', _FLAG, True, 'freeze the net not being trained (default on)'),
    ('which_train_fn', str, 'GAN', 'training function: GAN (or dummy, for data benchmarks)'),
    ('load_weights', str, '', 'checkpoint suffix to load, e.g. copy0 or best3'),
    ('resume', _FLAG, False, 'resume the experiment from its checkpoint'),
]

SAMPLE_FLAGS = [
    ('sample_npz', _FLAG, False, 'save sample_num_npz samples to samples.npz'),
    ('sample_num_npz', int, 50000, 'number of samples in samples.npz'),
    ('sample_sheets', _FLAG, False, 'write class-conditional sample sheets'),
    ('sample_interps', _FLAG, False, 'write interpolation sheets'),
    ('sample_sheet_folder_num', int, -1, 'folder number for sheets and interpolations'),
    ('sample_random', _FLAG, False, 'write one random sample sheet'),
    ('sample_trunc_curves', str, '', 'truncation sweep start_step_end, e.g. 0.2_0.1_1.0'),
    ('sample_inception_metrics', _FLAG, False, 'compute IS/FID once'),
]

# Flags this project adds (documented in README.md).
NEW_FLAGS = [
    ('num_iters', int, 0, 'stop when the iteration counter reaches N (across resumes; 0: run '
                          'num_epochs)'),
    ('time_limit', float, 0.0, 'stop (and save) after M minutes of training, e.g. before a '
                               "cluster job's wall-time limit (0: none)"),
    ('loss', str, 'hinge', 'GAN loss: hinge or dcgan'),
    ('resolution', int, 0, 'image size for --dataset ImageFolder / HDF5 (0: from the dataset)'),
    ('device', str, 'auto', 'auto (cuda when available), cpu, cuda or cuda:N'),
    ('inception', str, 'tf', 'Inception for IS/FID: tf (TF-exact, reported) or torchvision '
                             "(the original's monitoring net)"),
    ('inception_weights', str, '', 'path of the Inception weights (default: torch hub cache)'),
    ('moments_path', str, '', 'dataset Inception moments file (default: <dataset>_inception_'
                              'moments.npz)'),
    ('use_kid', _FLAG, False, 'also compute KID at each test (the moments file must hold KID '
                              'features)'),
    # Speed (README: Speed and scale)
    ('amp', str, 'none', 'mixed precision: none (float32), bf16, or fp16 (CUDA only, with loss '
                         'scaling); SN, BN statistics, softmax and losses stay float32'),
    ('channels_last', _FLAG, False, 'channels-last layout for G, D and the images'),
    ('compile', _FLAG, False, 'torch.compile the G and D training forwards (slow first steps)'),
    ('compile_mode', str, 'default', 'torch.compile mode: default, reduce-overhead (CUDA '
                                     'graphs) or max-autotune'),
    ('log_every', int, 1, 'read the training losses back from the device every N iterations '
                          '(every iteration is still logged; N > 1 saves a wait per step)'),
]

# sample.py's own additions (README, "Sampling").
SAMPLE_NEW_FLAGS = [
    ('G_weights', str, '', 'sample from this bare G state_dict file (e.g. a TF-Hub conversion) '
                           'instead of a weights folder; the flags give the architecture'),
    ('n_classes', int, 0, 'number of classes for --dataset ImageFolder / HDF5 when neither the '
                          'data nor a saved config is at hand (0: from those)'),
    ('truncation', float, None, "truncated normal z: resample every |z| above this threshold "
                                "(the paper's truncation trick; default: none)"),
    ('classes', str, '', "only these classes in sheets and samples, e.g. '1,5,9' (default: "
                         "all)"),
    ('sample_trunc_sweep', str, 'z_var', "what --sample_trunc_curves varies: z_var (the "
                                         "original: z's std) or truncation (the threshold)"),
]


def _add(parser: argparse.ArgumentParser, table: Iterable) -> None:
    for name, kind, default, help_text in table:
        # argparse %-formats help texts; a literal % (the --logstyle default) must be doubled.
        help_text = help_text.replace('%', '%%')
        default_text = repr(default).replace('%', '%%')
        if kind == _FLAG:
            parser.add_argument(f'--{name}', action='store_true', default=default,
                                help=help_text)
        else:
            parser.add_argument(f'--{name}', type=kind, default=default,
                                help=f'{help_text} (default: {default_text})')


def prepare_parser() -> argparse.ArgumentParser:
    """The training parser: the original's 90 flags plus ours."""
    parser = argparse.ArgumentParser(
        description='BigGAN training. Flags keep the names and defaults of BigGAN-PyTorch.')
    _add(parser, SHARED_FLAGS)
    # Flags whose original form stores into another name.
    parser.add_argument('--no_pin_memory', action='store_false', dest='pin_memory',
                        default=True, help='do not pin DataLoader memory')
    parser.add_argument('--D_thin', action='store_false', dest='D_wide', default=True,
                        help='SN-GAN channel pattern in D (hidden = in_channels)')
    parser.add_argument('--no_toggle_grads', action='store_false', dest='toggle_grads',
                        help='do not freeze the net not being trained')
    _add(parser, NEW_FLAGS)
    return parser


def add_sample_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add sample.py's flags to a parser."""
    _add(parser, SAMPLE_FLAGS)
    _add(parser, SAMPLE_NEW_FLAGS)
    return parser


# ------------------------------------------------------------------------------------------------
# The read-only config
# ------------------------------------------------------------------------------------------------

class Config(dict):
    """The parsed, validated configuration: a dict (as the original's `config`) that also
    reads as attributes, and refuses changes once built."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f'config has no entry {name!r}') from None

    def _read_only(self, *args, **kwargs):
        raise TypeError('the config is read-only once parsed; derive a new one with '
                        'Config({**config, key: value})')

    __setitem__ = __delitem__ = __setattr__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self):
        return (Config, (dict(self),))


MODELS = ('BigGAN', 'BigGANdeep')
LOSSES = ('hinge', 'dcgan')
INCEPTIONS = ('tf', 'torchvision')
PBARS = ('mine', 'tqdm', 'none')
AMP_MODES = ('none', 'bf16', 'fp16')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune')


def _positive(config: dict, names: Sequence[str], minimum: int = 1) -> None:
    for name in names:
        if config[name] < minimum:
            raise ValueError(f'--{name} must be >= {minimum}, got {config[name]}')


def validate(config: dict) -> None:
    """Check every value that would otherwise fail late or silently. Raises ValueError naming
    the flag and what would be valid."""
    _positive(config, ('batch_size', 'num_G_accumulations', 'num_D_accumulations',
                       'num_D_steps', 'save_every', 'test_every', 'num_inception_images',
                       'log_every',
                       'num_best_copies', 'num_standing_accumulations', 'G_ch', 'D_ch',
                       'dim_z', 'G_depth', 'D_depth', 'num_G_SVs', 'num_D_SVs',
                       'num_G_SV_itrs', 'num_D_SV_itrs'))
    _positive(config, ('G_batch_size', 'num_save_copies', 'num_workers', 'num_iters',
                       'shared_dim', 'ema_start', 'resolution'), minimum=0)
    if config['num_epochs'] < 1 and config['num_iters'] == 0:
        raise ValueError(f"--num_epochs must be >= 1 (or give --num_iters), got "
                         f"{config['num_epochs']}")
    for name in ('G_lr', 'D_lr', 'adam_eps', 'BN_eps', 'SN_eps'):
        if not config[name] > 0:
            raise ValueError(f'--{name} must be > 0, got {config[name]}')
    for name in ('G_B1', 'D_B1', 'G_B2', 'D_B2', 'ema_decay'):
        if not 0 <= config[name] < 1 and not (name == 'ema_decay' and config[name] == 1):
            raise ValueError(f'--{name} must be in [0, 1), got {config[name]}')
    for name in ('G_ortho', 'D_ortho', 'time_limit'):
        if config[name] < 0:
            raise ValueError(f'--{name} must be >= 0, got {config[name]}')
    layers.check_choice('--model', config['model'], MODELS)
    layers.check_choice('--loss', config['loss'], LOSSES)
    layers.check_choice('--which_best', config['which_best'], ('IS', 'FID'))
    layers.check_choice('--inception', config['inception'], INCEPTIONS)
    layers.check_choice('--pbar', config['pbar'], PBARS)
    layers.check_choice('--which_train_fn', config['which_train_fn'], ('GAN', 'dummy'))
    layers.check_choice('--amp', config['amp'], AMP_MODES)
    layers.check_choice('--compile_mode', config['compile_mode'], COMPILE_MODES)
    for name in ('G_nl', 'D_nl'):
        layers.check_choice(f'--{name}', config[name], sorted(layers.ACTIVATIONS))
    for name in ('G_init', 'D_init'):
        layers.check_choice(f'--{name}', config[name], layers.INIT_STYLES)
    for name in ('G_param', 'D_param'):
        layers.check_choice(f'--{name}', config[name], ('SN', 'SVD', 'none'))
    try:
        layers.check_norm_style(config['norm_style'])
    except ValueError as error:
        raise ValueError(f'--{error}') from None
    if config['hier'] and not config['G_shared']:
        raise ValueError('--hier needs --G_shared: hierarchical z is concatenated with the '
                         'shared class embedding')
    if config['model'] == 'BigGANdeep' and not (config['hier'] and config['G_shared']):
        raise ValueError('--model BigGANdeep needs --hier and --G_shared')
    if config['no_fid'] and config['which_best'] == 'FID':
        raise ValueError('--which_best FID needs FID: drop --no_fid or use --which_best IS')
    try:
        config['logstyle'] % 1.0
    except (TypeError, ValueError):
        raise ValueError(f"--logstyle {config['logstyle']!r} is not a printf format for one "
                         f"number, e.g. '%3.3e'") from None
    if config['use_ema'] and not config['ema']:
        print('Note: --use_ema without --ema: there is no G_ema to use, sampling and tests use G')


def parse_config(argv: Optional[List[str]] = None, sample: bool = False) -> Config:
    """Parse and validate the command line; add the derived entries (resolution, n_classes,
    effective attention and batch sizes, roots). Returns the read-only Config."""
    if sample:
        # sample.py's rules: flags given win over a saved config, and no data set is needed.
        import sample_config
        return sample_config.parse_sample_config(argv)
    import datasets
    args = prepare_parser().parse_args(argv)
    config = vars(args)
    if config['base_root']:
        for name in ('data', 'weights', 'logs', 'samples'):
            config[f'{name}_root'] = os.path.join(config['base_root'], name)
    validate(config)
    info = datasets.dataset_info(config['dataset'], config['data_root'],
                                 config['resolution'] or None)
    config['resolution'] = info.resolution
    config['n_classes'] = info.n_classes
    config['classes_per_sheet'] = info.classes_per_sheet
    config['G_batch_size'] = max(config['G_batch_size'], config['batch_size'])
    config['skip_init'] = config['skip_init'] or config['resume']
    config['amp'] = amp_mode(config)
    return Config(config)


def amp_mode(config: dict) -> str:
    """The autocast mode: the original's fp16 flags map onto --amp fp16."""
    amp = config.get('amp', 'none')
    legacy = [f for f in ('G_fp16', 'D_fp16', 'G_mixed_precision', 'D_mixed_precision')
              if config.get(f)]
    if legacy and amp == 'none':
        print(f"Note: {', '.join('--' + f for f in legacy)} now mean mixed precision with "
              f"autocast (--amp fp16), which trains stably; the original's half casts did not")
        return 'fp16'
    return amp


# ------------------------------------------------------------------------------------------------
# Model arguments
# ------------------------------------------------------------------------------------------------

G_KWARGS = ('G_ch', 'dim_z', 'resolution', 'n_classes', 'num_G_SVs', 'num_G_SV_itrs',
            'G_shared', 'shared_dim', 'hier', 'cross_replica', 'mybn', 'BN_eps', 'SN_eps',
            'G_init', 'skip_init', 'G_param', 'norm_style')
D_KWARGS = ('D_ch', 'D_wide', 'resolution', 'n_classes', 'num_D_SVs', 'num_D_SV_itrs',
            'SN_eps', 'D_init', 'skip_init', 'D_param')
DEFAULT_ATTN = '64'


def effective_attention(config: dict, which: str) -> str:
    """The attention string handed to the model. The original silently ignored the default
    '64' at resolutions without a 64 entry (e.g. CIFAR); any other missing entry is an error."""
    module = model_module(config)
    tables = module.G_arch(1, '0') if which == 'G' else module.D_arch(1, '0')
    value = config[f'{which}_attn']
    table = tables.get(config['resolution'])
    if value == DEFAULT_ATTN and table is not None and 64 not in table['attention_keys']:
        return '0'
    return value


def model_kwargs(config: dict) -> Dict[str, dict]:
    """Keyword arguments of the Generator and Discriminator for this config."""
    g = {k: config[k] for k in G_KWARGS}
    d = {k: config[k] for k in D_KWARGS}
    g['G_attn'] = effective_attention(config, 'G')
    d['D_attn'] = effective_attention(config, 'D')
    g['G_activation'] = config['G_nl']
    d['D_activation'] = config['D_nl']
    if config['model'] == 'BigGANdeep':
        g['G_depth'] = config['G_depth']
        d['D_depth'] = config['D_depth']
    return {'G': g, 'D': d}


def model_module(config: dict):
    """The model family's module (no dynamic import of a saved string)."""
    import BigGAN
    import BigGANdeep
    return {'BigGAN': BigGAN, 'BigGANdeep': BigGANdeep}[config['model']]


# ------------------------------------------------------------------------------------------------
# Experiment names
# ------------------------------------------------------------------------------------------------

def name_from_config(config: dict) -> str:
    """The original's experiment name (spec 5.6), token for token."""
    c = config
    tokens = [
        f"Big{c['which_train_fn']}",
        c['dataset'],
        c['model'] if c['model'] != 'BigGAN' else None,
        f"seed{c['seed']}",
        f"Gch{c['G_ch']}",
        f"Dch{c['D_ch']}",
        f"Gd{c['G_depth']}" if c['G_depth'] > 1 else None,
        f"Dd{c['D_depth']}" if c['D_depth'] > 1 else None,
        f"bs{c['batch_size']}",
        'Gfp16' if c['G_fp16'] else None,
        'Dfp16' if c['D_fp16'] else None,
        f"nDs{c['num_D_steps']}" if c['num_D_steps'] > 1 else None,
        f"nDa{c['num_D_accumulations']}" if c['num_D_accumulations'] > 1 else None,
        f"nGa{c['num_G_accumulations']}" if c['num_G_accumulations'] > 1 else None,
        'Glr%2.1e' % c['G_lr'],
        'Dlr%2.1e' % c['D_lr'],
        'GB%3.3f' % c['G_B1'] if c['G_B1'] else None,
        'GBB%3.3f' % c['G_B2'] if c['G_B2'] != 0.999 else None,
        'DB%3.3f' % c['D_B1'] if c['D_B1'] else None,
        'DBB%3.3f' % c['D_B2'] if c['D_B2'] != 0.999 else None,
        f"Gnl{c['G_nl']}",
        f"Dnl{c['D_nl']}",
        f"Ginit{c['G_init']}",
        f"Dinit{c['D_init']}",
        f"G{c['G_param']}" if c['G_param'] != 'SN' else None,
        f"D{c['D_param']}" if c['D_param'] != 'SN' else None,
        f"Gattn{c['G_attn']}" if c['G_attn'] != '0' else None,
        f"Dattn{c['D_attn']}" if c['D_attn'] != '0' else None,
        'Gortho%2.1e' % c['G_ortho'] if c['G_ortho'] > 0 else None,
        'Dortho%2.1e' % c['D_ortho'] if c['D_ortho'] > 0 else None,
        c['norm_style'] if c['norm_style'] != 'bn' else None,
        'cr' if c['cross_replica'] else None,
        'Gshared' if c['G_shared'] else None,
        'hier' if c['hier'] else None,
        'ema' if c['ema'] else None,
        c['name_suffix'] or None,
    ]
    return '_'.join(t for t in tokens if t)


def hashname(name: str) -> str:
    """A short memorable name from a stable hash of `name` (adjective + gerund + animal).

    The original used Python's per-process salted `hash`, so every run got a new name and
    `--resume` could not find the experiment; this digest is the same on every run.
    """
    from animal_hash import adjectives, animals, gerunds
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], 'big')
    a, h = h % len(adjectives), h // len(adjectives)
    b, h = h % len(gerunds), h // len(gerunds)
    return adjectives[a] + gerunds[b] + animals[h % len(animals)]


def experiment_name(config: dict) -> str:
    """--experiment_name, else the config's name (hashed with --hashname)."""
    if config['experiment_name']:
        return config['experiment_name']
    name = name_from_config(config)
    return hashname(name) if config['hashname'] else name


# ------------------------------------------------------------------------------------------------
# Seeding, roots, device
# ------------------------------------------------------------------------------------------------

def seed_rng(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_root(config: dict) -> None:
    """Create the weights, logs and samples roots (and their parents); fail clearly when one
    cannot be written."""
    for key in ('weights_root', 'logs_root', 'samples_root'):
        path = config[key]
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise OSError(f'--{key} {path!r} cannot be created: {error.strerror}') from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f'--{key} {path!r} is not writable; give a folder you can '
                                  f'write to')


def get_device(config: dict) -> torch.device:
    """--device auto picks CUDA when available, else the CPU."""
    name = config['device']
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") \
            from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: CUDA is not available on this machine; use cpu')
    return device


def setup_torch(config: dict) -> torch.device:
    """Backend flags and seeding in one place. Returns the device."""
    device = get_device(config)
    seed_rng(config['seed'])
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    return device


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main_process_print(*args, **kwargs) -> None:
    """print on rank 0 only."""
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(*args, **kwargs)
        sys.stdout.flush()


# What a program's user can cause and fix (bad flags, missing or corrupt files, unwritable
# folders): the messages name the flag or file, so a traceback would add nothing.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError)


@contextlib.contextmanager
def exit_on_user_error(kinds: tuple = USER_ERRORS) -> Iterator[None]:
    """Turn the exceptions `kinds` into one `error: ...` line on stderr and exit status 2."""
    try:
        yield
    except kinds as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
