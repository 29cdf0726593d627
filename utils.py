"""Run bookkeeping: the parser, checks, read-only config and experiment names, all built from the
flag table (flags.py); seeding, root folders, device set-up and the programs' error exit.

The config is parsed and validated once (`parse_config`), then read-only. Importing this module
imports no model code; the choice lists that the parser and the checks read from layers.py,
losses.py and others are imported when they are needed. The original's other `utils` names
(`load_weights`, `prepare_z_y`, `imsize_dict`, ...) resolve to the thin wrappers in compat.py.
"""
import argparse
import contextlib
import hashlib
import importlib
import os
import random
import signal
import sys
from typing import Iterator, List, Optional, Sequence, Set

import numpy as np
import torch

import flags


# ------------------------------------------------------------------------------------------------
# The parser
# ------------------------------------------------------------------------------------------------

SWITCHES = ('Every on/off flag has an opposite (--parallel, --no_parallel; --no_fid, --fid): the '
            'last one given wins, so a flag of a launch script is undone by appending its '
            'opposite.')


class Switch(argparse.Action):
    """An on/off flag and its opposite in one option (`--parallel, --no_parallel` in --help):
    the first spelling stores `value`, the other `not value`; the last one given wins."""

    def __init__(self, option_strings, dest, value: bool, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.value = value

    def __call__(self, parser, namespace, values, option_string=None):
        on = option_string == self.option_strings[0]
        setattr(namespace, self.dest, self.value if on else not self.value)


def _switch_options(row: flags.Flag) -> List[str]:
    """The row's option and its opposite, unless a row of its own already is the opposite
    (--toggle_grads and --no_toggle_grads)."""
    names = {other.name for other in flags.all_rows()}
    opposite = flags.opposite(row.name)
    return [f'--{row.name}'] + ([] if opposite in names else [f'--{opposite}'])


def _add(parser: argparse.ArgumentParser, table: Sequence[flags.Flag]) -> None:
    groups = {}
    for group in parser._action_groups:  # reuse sections when several tables are added
        groups[group.title] = group
    for row in table:
        title = flags.USES[row.use]
        group = groups.get(title) or parser.add_argument_group(title)
        groups[title] = group
        # argparse %-formats help texts; a literal % (the --logstyle default) must be doubled.
        text = row.help
        choices = flags.choices_of(row)
        if choices:
            text += f" (choices: {', '.join(str(c) for c in choices)})"
        text = text.replace('%', '%%')
        if row.kind in (flags.FLAG, flags.OFF):
            group.add_argument(*_switch_options(row), action=Switch, default=row.default,
                               value=row.kind == flags.FLAG, dest=row.key, help=text)
        else:
            default = repr(row.default).replace('%', '%%')
            group.add_argument(f'--{row.name}', type=row.kind, default=row.default,
                               dest=row.key, help=f'{text} (default: {default})')


def prepare_parser() -> argparse.ArgumentParser:
    """The training parser: the original's 90 flags plus ours."""
    parser = argparse.ArgumentParser(
        description='BigGAN training. Flags keep the names and defaults of BigGAN-PyTorch. '
                    + SWITCHES)
    # The tables are read at each call, so a row added to flags.py (or at run time) counts.
    _add(parser, flags.ORIGINAL_FLAGS + flags.NEW_FLAGS)
    return parser


def add_sample_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add sample.py's flags to a parser."""
    _add(parser, flags.SAMPLE_FLAGS + flags.SAMPLE_NEW_FLAGS)
    return parser


def given_flags(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> Set[str]:
    """The config keys set on the command line, whatever their value (a flag given with its
    default value counts as given): argparse fills in defaults only for names the namespace
    lacks, so a namespace holding a marker for every name keeps the marker where no flag
    came."""
    unset = object()
    names = vars(parser.parse_args([]))
    parsed = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(names, unset)))
    return {name for name, value in vars(parsed).items() if value is not unset}


def defaults(sample: bool = False) -> dict:
    """Every flag's default by config key (with sample.py's flags when `sample`)."""
    parser = add_sample_parser(prepare_parser()) if sample else prepare_parser()
    return vars(parser.parse_args([]))


# ------------------------------------------------------------------------------------------------
# Checks, and the read-only config
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


def check_row(row: flags.Flag, value) -> None:
    """The row's choices or check, and its limits, for one value (ValueError naming the flag).
    Kept here, with the parser, so that flags.py (the table) imports nothing of the project."""
    import layers
    if row.check is not None:
        try:
            row.check.resolve()(value)
        except ValueError as error:
            raise ValueError(f'--{error}') from None
    elif row.choices is not None and not (row.kind is str and value == row.default == ''):
        layers.check_choice(f'--{row.name}', value, flags.choices_of(row))
    if row.limits and value is not None and not flags.LIMITS[row.limits](value):
        raise ValueError(f'--{row.name} must be {row.limits}, got {value}')


def validate(config: dict) -> None:
    """Check every value that would otherwise fail late or silently: each row's choices and
    limits, then the rules between flags. Raises ValueError naming the flag and what would be
    valid."""
    for key, row in flags.rows().items():
        if key in config:
            check_row(row, config[key])
    if config['num_epochs'] < 1 and config['num_iters'] == 0:
        raise ValueError(f"--num_epochs must be >= 1 (or give --num_iters), got "
                         f"{config['num_epochs']}")
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
    if config.get('fmnist_scorer') and config['dataset'] != 'FMNIST':
        raise ValueError(f"--fmnist_scorer scores Fashion-MNIST samples; --dataset is "
                         f"{config['dataset']!r} (use the Inception metrics there)")
    if config.get('class_map') and not config.get('finetune_from'):
        raise ValueError('--class_map maps the classes of --finetune_from: give both')
    if 'DiffAugment' in config:
        import regularizers
        regularizers.check_config(config)
    if config['use_ema'] and not config['ema']:
        print('Note: --use_ema without --ema: there is no G_ema to use, sampling and tests use G')


def update_config_roots(config: dict) -> dict:
    """With --base_root, put the data, weights, logs and samples roots under it (in place, as
    the original's function); returns the config."""
    if config['base_root']:
        print(f"Pegging all root folders to base root {config['base_root']}")
        for name in ('data', 'weights', 'logs', 'samples'):
            config[f'{name}_root'] = os.path.join(config['base_root'], name)
    return config


def parse_config(argv: Optional[List[str]] = None) -> Config:
    """Parse and validate train.py's command line; add the derived entries (resolution,
    n_classes, classes per sheet, effective batch sizes, roots). Returns the read-only Config.
    sample.py's rules are `sample_config.parse_sample_config`."""
    import datasets
    parser = prepare_parser()
    config = update_config_roots(vars(parser.parse_args(argv)))
    if config['finetune_from']:
        import finetune  # the source's architecture, for the flags not given here
        config = finetune.take_architecture(config, given_flags(parser, argv))
    validate(config)
    info = datasets.dataset_info(config['dataset'], config['data_root'],
                                 config['resolution'] or None)
    config['resolution'] = info.resolution
    config['n_classes'] = 1 if config['unconditional'] else info.n_classes
    config['classes_per_sheet'] = 1 if config['unconditional'] else info.classes_per_sheet
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


def model_module(config: dict):
    """The model family's module, by --model (one of flags.MODELS)."""
    check_row(flags.rows()['model'], config['model'])
    return importlib.import_module(config['model'])


# ------------------------------------------------------------------------------------------------
# Experiment names
# ------------------------------------------------------------------------------------------------

# The original's token order (its name_from_config); tokens of other rows follow, in table
# order, and --name_suffix comes last.
NAME_ORDER = ('which_train_fn', 'dataset', 'model', 'seed', 'G_ch', 'D_ch', 'G_depth', 'D_depth',
              'batch_size', 'G_fp16', 'D_fp16', 'num_D_steps', 'num_D_accumulations',
              'num_G_accumulations', 'G_lr', 'D_lr', 'G_B1', 'G_B2', 'D_B1', 'D_B2', 'G_nl',
              'D_nl', 'G_init', 'D_init', 'G_param', 'D_param', 'G_attn', 'D_attn', 'G_ortho',
              'D_ortho', 'norm_style', 'cross_replica', 'G_shared', 'hier', 'ema')


def name_from_config(config: dict) -> str:
    """The experiment name: the original's, token for token, for the original's flags and
    datasets; a new flag with a `tag` adds its token when `when` says so, and --dataset
    ImageFolder / HDF5 the data's name (datasets.data_name): HDF5-flowers."""
    import datasets
    table = {key: row for key, row in flags.rows().items() if row.tag and key in config}
    order = [k for k in NAME_ORDER if k in table]
    order += [k for k in table if k not in NAME_ORDER and k != 'name_suffix']
    order += ['name_suffix'] if 'name_suffix' in table else []
    tokens = [table[key].token(config[key]) for key in order]
    data = datasets.data_name(config['dataset'], config.get('data_root', '')) \
        if 'dataset' in table else ''
    if data:  # which image folder or HDF5 file: two of them, same flags, are two experiments
        tokens[order.index('dataset')] += f'-{data}'
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


MAX_NAME_BYTES = 200  # below the 255 of most file systems, with room for '_log.jsonl'


def check_experiment_name(name: str, flag: str = '--experiment_name') -> str:
    """`name` if it is one path component (a folder under each root), else a ValueError."""
    problem = None
    if not name or name in ('.', '..'):
        problem = 'is not a folder name'
    elif '/' in name or (os.altsep and os.altsep in name) or os.sep in name or '\0' in name:
        problem = 'holds a path separator: it must be one folder name under each root'
    elif any('\udc80' <= char <= '\udcff' for char in name):  # bytes the locale cannot decode
        problem = ('is not valid UTF-8 (a name made of other bytes): the logs and checkpoints '
                   'record it as text; rename it in UTF-8')
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f'is {len(name.encode())} bytes long; at most {MAX_NAME_BYTES} fit'
    if problem:
        hint = '' if flag == '--experiment_name' else '; give --experiment_name or --hashname'
        raise ValueError(f'{flag} {name!r} {problem} (runs live in <weights_root>/<name>/ and '
                         f'<logs_root>/<name>/){hint}')
    return name


def experiment_name(config: dict) -> str:
    """--experiment_name, else the config's name (hashed with --hashname); one path
    component, or a ValueError naming the flag."""
    if config['experiment_name']:
        return check_experiment_name(config['experiment_name'])
    name = name_from_config(config)
    return check_experiment_name(hashname(name) if config['hashname'] else name,
                                 '--name_suffix' if config['name_suffix'] else
                                 'the experiment name built from the flags')


# ------------------------------------------------------------------------------------------------
# Seeding, roots, device, errors
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
        if os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(f'--{key} {path!r} is a file, not a folder: give a folder '
                                     f'(it is made if missing)')
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
    """Backend flags and seeding in one place. Returns the device.

    On CUDA, float32 matmuls and convolutions use TF32 (10-bit mantissa products, float32
    accumulation: the speed of the tensor cores; bf16 autocast goes further) and cuDNN picks
    its fastest algorithms; --deterministic turns both off, for bit-reproducible runs."""
    device = get_device(config)
    seed_rng(config['seed'])
    if device.type == 'cuda':
        fast = not config.get('deterministic', False)
        torch.backends.cuda.matmul.allow_tf32 = fast
        torch.backends.cudnn.allow_tf32 = fast
        torch.backends.cudnn.benchmark = fast
        torch.backends.cudnn.deterministic = not fast
    return device


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# What a program's user can cause and fix: bad flag values, missing, unreadable or corrupt
# files, data or checkpoints that do not fit, a full disk, a folder in use, a run that
# diverged. The messages name the flag or file, so a traceback would add nothing.
USER_ERRORS = (ValueError, OSError, FloatingPointError)
DEBUG_VARIABLE = 'BIGGAN_DEBUG'  # set (to 1) for the traceback of every error


@contextlib.contextmanager
def exit_on_user_error(kinds: tuple = USER_ERRORS) -> Iterator[None]:
    """Turn the exceptions `kinds` into one `error: ...` line on stderr and exit status 2
    (with BIGGAN_DEBUG=1 in the environment, the traceback instead)."""
    try:
        yield
    except kinds as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print(f'error: {one_line(error)}', file=sys.stderr)
        sys.exit(2)


def one_line(error: BaseException) -> str:
    """The message of `error`; for one re-raised from a DataLoader worker (torch puts the
    worker's whole traceback in the message), the worker's own message."""
    message = str(error)
    if '\nOriginal Traceback' in message:
        last = message.rstrip().splitlines()[-1]
        name, sep, rest = last.partition(': ')
        message = rest if sep and name.split('.')[-1].isidentifier() else last
    return message


class Terminated(BaseException):
    """SIGTERM (or another ending signal) arrived: unwinds like Ctrl-C, so `finally` blocks and
    `except BaseException` clean-ups remove the temporaries of the write under way."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def exit_on_interrupt(what: str = 'nothing partial is left') -> Iterator[None]:
    """Ctrl-C: one `interrupted:` line and exit status 130; SIGTERM: the same line and 143
    (128 + the signal), after the clean-ups of the code inside have run. DataLoader workers
    (forked children) keep the default action of SIGTERM, so they end as before."""
    main_pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print(f'\ninterrupted (Ctrl-C): {what}', file=sys.stderr)
        sys.exit(130)
    except Terminated as stop:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print(f'\ninterrupted ({stop}): {what}', file=sys.stderr)
        sys.exit(128 + stop.signum)
    finally:
        signal.signal(signal.SIGTERM, previous)


# The original's other utils names, kept in compat.py (its UTILS_NAMES).
ORIGINAL_NAMES = frozenset({
    'load_weights', 'save_weights', 'prepare_z_y', 'Distribution', 'sample', 'sample_sheet',
    'interp', 'interp_sheet', 'sample_1hot', 'ema', 'ortho', 'toggle_grad',
    'initiate_standing_stats', 'accumulate_standing_stats', 'get_SVs', 'join_strings',
    'imsize_dict', 'nclass_dict', 'classes_per_sheet_dict', 'root_dict', 'activation_dict',
    'MetricsLogger', 'MyLogger', 'write_metadata', 'progress', 'MultiEpochSampler',
    'CenterCropLongEdge', 'RandomCropLongEdge'})


def __getattr__(name: str):
    """`utils.load_weights` and the original's other names: compat.py's, imported on first use
    (so that importing utils imports no model code)."""
    if name not in ORIGINAL_NAMES:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    import compat
    return getattr(compat, name)
