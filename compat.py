"""The original's public `utils` names, as thin wrappers over this project's modules, so scripts
and notebooks written against BigGAN-PyTorch keep working:

    import BigGAN, utils
    config = utils.update_config_roots(vars(utils.prepare_parser().parse_args()))
    config.update(resolution=utils.imsize_dict[config['dataset']], ...)
    G = BigGAN.Generator(**config)                      # a whole config, as the original's
    utils.load_weights(G, None, state_dict, config['weights_root'], name, 'best0',
                       load_optim=False)
    z_, y_ = utils.prepare_z_y(config['G_batch_size'], G.dim_z, config['n_classes'])
    utils.sample_sheet(G, ...); utils.interp_sheet(G, ...)

`utils.<name>` finds the names listed in utils.ORIGINAL_NAMES here (utils.py's module
`__getattr__`); utils.py itself defines prepare_parser, add_sample_parser, update_config_roots,
seed_rng, prepare_root, name_from_config, hashname and count_parameters, and losses.py keeps
generator_loss and discriminator_loss. Each wrapper takes the original's arguments and does what
the original's did; new code should call the modules they wrap. Left out on purpose: Adam16 and
the fp16 casts (replaced by --amp), and `dset_dict` (see datasets.DATASETS).
"""
from typing import Optional

import torch
import torch.nn as nn

import checkpoints
import datasets
import layers
import loggers
import sampling
import train_fns

# The same objects under the original's names.
ema = train_fns.EMA
ortho = train_fns.ortho
toggle_grad = train_fns.toggle_grad
interp = sampling.interp
initiate_standing_stats = layers.initiate_standing_stats
accumulate_standing_stats = layers.accumulate_standing_stats
MetricsLogger, MyLogger = loggers.MetricsLogger, loggers.MyLogger
write_metadata, progress = loggers.write_metadata, loggers.progress
MultiEpochSampler = datasets.MultiEpochSampler
CenterCropLongEdge, RandomCropLongEdge = datasets.CenterCropLongEdge, datasets.RandomCropLongEdge

# The original's dataset dicts, from the one dataset table.
imsize_dict = {name: info.resolution for name, info in datasets.DATASETS.items()}
nclass_dict = {name: info.n_classes for name, info in datasets.DATASETS.items()}
classes_per_sheet_dict = {name: info.classes_per_sheet for name, info in datasets.DATASETS.items()}
root_dict = {name: info.root for name, info in datasets.DATASETS.items()}
activation_dict = {name: make() for name, make in layers.ACTIVATIONS.items()}


def _default_device() -> str:
    # The original's default was 'cuda'; a machine without one gets the CPU.
    return 'cuda' if torch.cuda.is_available() else 'cpu'


# ------------------------------------------------------------------------------------------------
# Checkpoints: the optimizers are G.optim / D.optim where a script gave the nets one
# ------------------------------------------------------------------------------------------------

def load_weights(G, D, state_dict: dict, weights_root: str, experiment_name: str,
                 name_suffix: Optional[str] = None, G_ema=None, strict: bool = True,
                 load_optim: bool = True) -> None:
    """Load a weights folder into G, D (either may be None) and G_ema; `state_dict` takes the
    saved entries. The optimizer files load into `G.optim` / `D.optim` when the nets have them
    (the original's models built their own Adam; ours do not)."""
    checkpoints.load_weights(G, D, state_dict, weights_root, experiment_name, name_suffix,
                             G_ema, strict, load_optim, G_optim=getattr(G, 'optim', None),
                             D_optim=getattr(D, 'optim', None))


def save_weights(G, D, state_dict: dict, weights_root: str, experiment_name: str,
                 name_suffix: Optional[str] = None, G_ema=None) -> None:
    """Save G, D, G_ema, `state_dict` (and `G.optim` / `D.optim` where present) as one
    checkpoint of the original's six-file layout."""
    checkpoints.save_weights(G, D, state_dict, weights_root, experiment_name, name_suffix,
                             G_ema, G_optim=getattr(G, 'optim', None),
                             D_optim=getattr(D, 'optim', None))


# ------------------------------------------------------------------------------------------------
# Noise buffers and sheets
# ------------------------------------------------------------------------------------------------

class Distribution(torch.Tensor):
    """The original's noise buffer: a tensor that refills itself in place with `sample_()`,
    normal (`mean`, `var`; `var` is used as the standard deviation, as in the original) or
    categorical (`num_categories`). Operations on it return plain tensors, so images drawn
    from it save as usual (the original's subclass leaked into every result)."""
    __torch_function__ = torch._C._disabled_torch_function_impl

    def init_distribution(self, dist_type: str, **kwargs) -> None:
        self.dist_type, self.dist_kwargs = dist_type, kwargs

    def sample_(self) -> None:
        if self.dist_type == 'normal':
            self.normal_(self.dist_kwargs['mean'], self.dist_kwargs['var'])
        elif self.dist_type == 'categorical':
            self.random_(0, self.dist_kwargs['num_categories'])
        else:
            raise ValueError(f'unknown distribution {self.dist_type!r}: normal or categorical')


def prepare_z_y(G_batch_size: int, dim_z: int, nclasses: int, device=None, fp16: bool = False,
                z_var: float = 1.0):
    """(z_, y_): `Distribution` buffers of G_batch_size noise vectors (N(0, z_var^2)) and class
    labels, on `device` (default: CUDA when there is one)."""
    device = device or _default_device()
    z_ = torch.randn(G_batch_size, dim_z, device=device,
                     dtype=torch.float16 if fp16 else torch.float32).as_subclass(Distribution)
    z_.init_distribution('normal', mean=0, var=z_var)
    y_ = torch.zeros(G_batch_size, device=device, dtype=torch.int64).as_subclass(Distribution)
    y_.init_distribution('categorical', num_categories=nclasses)
    return z_, y_


def sample(G: nn.Module, z_: Distribution, y_: Distribution, config: dict):
    """Refill z_ and y_ and draw G(z_, G.shared(y_)) without gradients: (images, labels)."""
    with torch.no_grad():
        z_.sample_()
        y_.sample_()
        if config.get('parallel') and torch.cuda.device_count() > 1:
            return nn.parallel.data_parallel(G, (z_, G.shared(y_))), y_
        return G(z_, G.shared(y_)), y_


class _GlobalNoise:
    """sampling.py's sampler interface over torch's global RNG, as the original drew sheets:
    z from `z_` (refilled) when it holds enough rows, else fresh N(0, 1)."""

    def __init__(self, dim_z: int, n_classes: int, device, z_: Optional[Distribution] = None):
        self.dim_z, self.n_classes, self.z_ = dim_z, n_classes, z_
        self.device = torch.device(device)

    def sample_z(self, n: int) -> torch.Tensor:
        if self.z_ is not None and n <= len(self.z_):
            self.z_.sample_()
            return self.z_[:n]
        return torch.randn(n, self.dim_z, device=self.device)

    def sample_y(self, n: int) -> torch.Tensor:
        return torch.randint(0, self.n_classes, (n,), device=self.device)


def _device_of(G: nn.Module):
    return next(G.parameters()).device


def sample_sheet(G: nn.Module, classes_per_sheet: int, num_classes: int,
                 samples_per_class: int, parallel: bool, samples_root: str,
                 experiment_name: str, folder_number, z_: Optional[Distribution] = None) -> None:
    """Class sheets `<samples_root>/<exp>/<folder_number>/samples<i>.jpg`, one row per class
    (`parallel` only spread the work over GPUs; sampling.sample_sheet draws the same)."""
    noise = _GlobalNoise(G.dim_z, num_classes, _device_of(G), z_)
    sampling.sample_sheet(G, classes_per_sheet, num_classes, samples_per_class, samples_root,
                          experiment_name, folder_number, noise)


def interp_sheet(G: nn.Module, num_per_sheet: int, num_midpoints: int, num_classes: int,
                 parallel: bool, samples_root: str, experiment_name: str, folder_number,
                 sheet_number: int = 0, fix_z: bool = False, fix_y: bool = False,
                 device=None) -> None:
    """`<samples_root>/<exp>/<folder_number>/interp{Z}{Y}<sheet_number>.jpg`: rows that
    interpolate z and/or the class between two random draws."""
    noise = _GlobalNoise(G.dim_z, num_classes, device or _device_of(G))
    sampling.interp_sheet(G, num_per_sheet, num_midpoints, num_classes, samples_root,
                          experiment_name, folder_number, noise, sheet_number=sheet_number,
                          fix_z=fix_z, fix_y=fix_y)


def sample_1hot(batch_size: int, num_classes: int, device=None) -> torch.Tensor:
    """Random class indices (the original's name notwithstanding, not one-hot vectors)."""
    return torch.randint(0, num_classes, (batch_size,), device=device or _default_device(),
                         dtype=torch.int64)


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------

def get_SVs(net: nn.Module, prefix: str) -> dict:
    """Every SN singular value of `net` as a float, keyed as the original's logs."""
    return {key: float(value) for key, value in loggers.get_SVs(net, prefix).items()}


def join_strings(base_string: str, strings) -> str:
    """Join the non-empty strings with `base_string`."""
    return base_string.join([item for item in strings if item])
