"""sample.py's configuration: which flags were given, what a saved config fills in, and the image
size and class count without a data set on disk.

sample.py takes the training flags, the original's eight sample flags and ours
(`utils.SAMPLE_NEW_FLAGS`). With `--config_from_name` it reads the experiment's `state_dict.pth`
and fills every flag the command line did not give; the original copied the saved config over
nearly all of them, `--load_weights` and `--num_inception_images` included.
Resolution and class count come from the dataset table, the flags or the saved config; the data
are read only for `--dataset ImageFolder / HDF5` when none of those says.
"""
import argparse
import math
import os
from typing import List, Optional, Set, Tuple

import checkpoints
import datasets
import flags
import pretrained_files
import utils

# Never taken from a saved config: the original sample.py's six, and what belongs to this
# machine or to this sampling run rather than to the trained model.
SAMPLE_TIME_KEYS = frozenset({
    'z_var', 'base_root', 'batch_size', 'G_batch_size', 'use_ema', 'G_eval_mode',
    'load_weights', 'config_from_name', 'experiment_name', 'resume', 'weights_root',
    'logs_root', 'samples_root', 'moments_path', 'inception_weights', 'parallel', 'device',
    'num_workers', 'pbar'})


def sample_parser() -> argparse.ArgumentParser:
    """The training parser plus the sample flags."""
    parser = utils.add_sample_parser(utils.prepare_parser())
    parser.description = ('Sample from a trained BigGAN: npz export, class and interpolation '
                          'sheets, IS/FID and truncation curves. Training flags keep their '
                          'names; see docs/sampling.md. ' + utils.SWITCHES)
    return parser


def given_flags(argv: Optional[List[str]] = None) -> Set[str]:
    """The config keys set on sample.py's command line (utils.given_flags)."""
    return utils.given_flags(sample_parser(), argv)


def fill_from_saved(config: dict, given: Set[str]) -> Tuple[dict, str]:
    """Fill the flags not given from the experiment's saved config; return the new config and
    the state file's path. The experiment is found with the flags as given (as in the
    original), and keeps that name."""
    if config['G_weights']:
        raise ValueError('--config_from_name reads the state_dict.pth of a weights folder, and '
                         'a --G_weights file has none: give the architecture flags instead')
    name = utils.experiment_name(config)
    state, path = checkpoints.read_state(config['weights_root'], name,
                                         config['load_weights'] or None)
    copyable = set(utils.defaults()) | {'n_classes'}
    filled = {}
    for key, value in (state.get('config') or {}).items():
        if key in given or key in SAMPLE_TIME_KEYS or key not in copyable:
            continue
        if key == 'model' and value not in flags.MODELS:
            # The released checkpoints say 'model'; the original imported whatever was there.
            print(f"Note: {path} names the model {value!r}, which is no model; using --model "
                  f"{config['model']}")
            continue
        filled[key] = value
    changed = sorted(k for k, v in filled.items() if config.get(k) != v)
    print(f"Config from {path}: {len(changed)} flags differ from the defaults"
          f"{': ' + ', '.join(changed) if changed else ''}; the {len(given)} flags given on "
          f"the command line are kept")
    return {**config, **filled, 'experiment_name': name}, path


def fill_from_pretrained(config: dict, given: Set[str]) -> dict:
    """The flags of a --G_weights pretrained folder's config.json (G is built from that file;
    the flags serve the rest of sample.py). A flag given on the command line that differs from
    it is a ValueError: the folder's architecture is fixed."""
    saved = pretrained_files.read_config(config['G_weights'])
    filled = {key: value for key, value in pretrained_files.model_arguments(saved).items()
              if key in config}
    filled['model'] = saved['model']
    clash = sorted(key for key in given if key in filled and config[key] != filled[key])
    if clash:
        shown = ', '.join(f'--{key} {config[key]!r} (config.json: {filled[key]!r})'
                          for key in clash)
        raise ValueError(f"{shown}: the architecture of --G_weights {config['G_weights']!r} "
                         f'is fixed by its config.json; leave those flags out')
    return {**config, **filled}


def check_sample_flags(config: dict) -> None:
    """The sample flags' checks between flags and files (ValueError naming the flag); each
    flag's own choices and limits are checked from its row (utils.validate)."""
    metrics = config['sample_inception_metrics'] or config['sample_trunc_curves']
    if metrics and config['num_inception_images'] < 10:
        raise ValueError(f"--num_inception_images must be >= 10 (the IS splits) for the metrics, "
                         f"got {config['num_inception_images']}")
    weights = config['G_weights']
    if weights and not (os.path.isfile(weights) or pretrained_files.is_folder(weights)):
        raise ValueError(f"--G_weights {weights!r}: no such file or pretrained folder (a G "
                         f"state_dict, e.g. pretrained_weights/biggan-128.pth from "
                         f"TFHub/converter.py, or a folder with config.json)")


def parse_trunc_curves(text: str) -> Tuple[float, ...]:
    """'start_step_end' -> every value from start to end inclusive, step apart. The original's
    np.arange(start, end + step, step) could add a value past end by float rounding."""
    if not text:
        return ()
    hint = ("--sample_trunc_curves must be start_step_end with start > 0, step > 0 and "
            "end >= start, e.g. 0.2_0.1_1.0 or 0.05_0.05_1.0")
    try:
        start, step, end = (float(part) for part in text.split('_'))
    except ValueError:
        raise ValueError(f'{hint}; got {text!r}') from None
    if not (all(map(math.isfinite, (start, step, end))) and start > 0 and step > 0
            and end >= start):
        raise ValueError(f'{hint}; got {text!r}')
    count = int(math.floor((end - start) / step + 1e-9)) + 1
    return tuple(round(start + i * step, 10) for i in range(count))


def parse_classes(text: str, n_classes: int) -> Optional[Tuple[int, ...]]:
    """'1,5,9' -> (1, 5, 9), each in [0, n_classes); '' -> None (every class)."""
    if not text:
        return None
    try:
        classes = tuple(int(part) for part in text.split(','))
    except ValueError:
        raise ValueError(f"--classes {text!r} is not a comma-separated list of class indices, "
                         f"e.g. '1,5,9'") from None
    bad = [c for c in classes if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f'--classes {text!r}: {bad} out of range; this model has {n_classes} '
                         f'classes, 0 to {n_classes - 1}')
    return classes


def parse_interp_classes(text: str, n_classes: int) -> Optional[Tuple[Tuple[int, int], ...]]:
    """'207:208,1' -> ((207, 208), (1, 1)): each interpolation row's start and end class, each
    in [0, n_classes); '' -> None (random classes)."""
    if not text:
        return None
    valid = (f"valid: comma-separated rows 'A:B' (class A to class B) or 'A' (class A "
             f"throughout), classes 0 to {n_classes - 1}, e.g. '0:1,2'")
    try:
        pairs = tuple((int(row.split(':')[0]), int(row.split(':')[-1]))
                      for row in text.split(',') if row.count(':') <= 1)
    except ValueError:
        pairs = ()
    if len(pairs) != len(text.split(',')):
        raise ValueError(f'--interp_classes {text!r} is not a list of rows; {valid}')
    bad = sorted({c for pair in pairs for c in pair if not 0 <= c < n_classes})
    if bad:
        raise ValueError(f'--interp_classes {text!r}: {bad} out of range; {valid}')
    return pairs


def sample_dataset(config: dict) -> Tuple[int, int, int]:
    """(resolution, n_classes, classes per sheet), reading the data only when nothing else says.

    Table datasets fix both; with --G_weights (a bare G, no training run behind it) --resolution
    and --n_classes may differ from the table, e.g. --resolution 512 for biggan-512.pth.
    """
    if config.get('unconditional'):  # one class whatever the data has: one row per sheet
        resolution = sample_dataset({**config, 'unconditional': False, 'n_classes': 0})[0]
        return resolution, 1, 1
    dataset, resolution, n_classes = config['dataset'], config['resolution'], config['n_classes']
    if dataset in datasets.DATASETS:
        info = datasets.DATASETS[dataset]
        for flag, value, own in (('resolution', resolution, info.resolution),
                                 ('n_classes', n_classes, info.n_classes)):
            if value and value != own and not config['G_weights']:
                raise ValueError(f'--{flag} {value} does not match --dataset {dataset} ({own}); '
                                 f'drop --{flag}, use --dataset ImageFolder / HDF5 for other '
                                 f'data, or sample a bare G file with --G_weights')
        resolution, n_classes = resolution or info.resolution, n_classes or info.n_classes
        if n_classes == info.n_classes:
            return datasets.check_resolution(resolution), n_classes, info.classes_per_sheet
    elif dataset in datasets.CUSTOM_DATASETS:
        if not (resolution and n_classes):
            if not os.path.exists(config['data_root']):
                raise ValueError(
                    f"--dataset {dataset} without its data (--data_root "
                    f"{config['data_root']!r} does not exist): give --resolution and "
                    f"--n_classes, or --config_from_name to take them from the saved config")
            info = datasets.dataset_info(dataset, config['data_root'], resolution or None)
            resolution, n_classes = info.resolution, n_classes or info.n_classes
    else:
        datasets.dataset_info(dataset)  # raises the data layer's error, with the valid names
    datasets.check_resolution(resolution)
    # The data layer's sheet layout for data without a table row (20 or 50 per sheet).
    return resolution, n_classes, datasets._sheet_classes(n_classes, resolution)


def parse_sample_config(argv: Optional[List[str]] = None) -> utils.Config:
    """Parse sample.py's command line into the read-only Config (see the module docstring).

    Derived entries: resolution, n_classes, classes_per_sheet, sample_classes (tuple or None),
    interp_pairs (the --interp_classes rows or None),
    trunc_values (the --sample_trunc_curves values), G_batch_size (at least batch_size),
    skip_init (always), experiment_name (with --G_weights: the file's name by default).
    """
    config = utils.update_config_roots(vars(sample_parser().parse_args(argv)))
    given = given_flags(argv)
    saved_from = ''
    if config['config_from_name']:
        config, saved_from = fill_from_saved(config, given)
    elif config['G_weights'] and pretrained_files.is_folder(config['G_weights']):
        config = fill_from_pretrained(config, given)
        saved_from = os.path.join(config['G_weights'], pretrained_files.CONFIG)
    try:
        # sample.py loads G_ema.pth by --use_ema alone, so train.py's note on --use_ema
        # without --ema does not apply here.
        utils.validate({**config, 'use_ema': False})
        check_sample_flags(config)
        resolution, n_classes, per_sheet = sample_dataset(config)
        config.update(sample_classes=parse_classes(config['classes'], n_classes),
                      interp_pairs=parse_interp_classes(config['interp_classes'], n_classes),
                      trunc_values=parse_trunc_curves(config['sample_trunc_curves']))
    except ValueError as error:
        if saved_from:
            raise ValueError(f'{error} (flags not given on the command line came from '
                             f'{saved_from})') from None
        raise
    config.update(resolution=resolution, n_classes=n_classes, classes_per_sheet=per_sheet,
                  G_batch_size=max(config['G_batch_size'], config['batch_size']),
                  skip_init=True)
    if config['G_weights'] and not config['experiment_name']:
        stem = os.path.splitext(os.path.basename(os.path.normpath(config['G_weights'])))[0]
        config['experiment_name'] = stem
    config['amp'] = utils.amp_mode(config)
    return utils.Config(config)
