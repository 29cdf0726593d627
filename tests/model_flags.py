"""Build G and D from a reference command line, for the tests: the real parser's defaults (not
the constructors' own, as the original's train.py does) and the dataset table's resolution and
class count, handed to the models as a whole config."""
import inspect
import shlex

import datasets
import utils
from flags import model_arguments


def parse_flags(flags: str) -> dict:
    """'--G_ch 8 --G_shared ...' -> the parsed config dict (no data set is read)."""
    return vars(utils.prepare_parser().parse_args(shlex.split(flags)))


def build_models(flags: str, n_classes=None, resolution=None, **overrides):
    """G, D and the model module for a reference command line."""
    config = parse_flags(flags)
    info = datasets.DATASETS.get(config['dataset'])
    config.update(resolution=resolution or info.resolution,
                  n_classes=n_classes or info.n_classes, **overrides)
    module = utils.model_module(config)
    return module.Generator(**config), module.Discriminator(**config), module


def assert_builds_exactly(generator_class, config: dict, expected: dict) -> None:
    """The generator keyword arguments `config` gives are `expected` and, for every other
    argument, the constructor's default (a converter's G, built from documented flags)."""
    params = inspect.signature(generator_class).parameters
    args, block_flags = model_arguments('Generator', 'G', list(params), config)
    assert {key: args[key] for key in expected} == expected and not block_flags
    assert all(value == params[key].default for key, value in args.items()
               if key not in expected)
