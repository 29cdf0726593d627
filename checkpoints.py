"""Checkpoints in the original's layout, written atomically and read safely.

A save writes `<weights_root>/<exp>/{G, G_optim, D, D_optim, state_dict, G_ema}[_<suffix>].pth` (the
original's six files) as one unit: every file goes to a temporary name and is fsynced, a journal
naming the set is written, then the files are renamed into place and the journal removed. A crash
before the journal leaves the previous set untouched (the temporaries are discarded on the next
load); a crash after it is rolled forward on the next load. Either way the set on disk is complete.

Loading never runs code from a checkpoint: files are read with `weights_only=True`, or, for the
original's `state_dict.pth` (it pickles `nn.ReLU` objects and numpy scalars), with an unpickler
that admits only those types, which are turned back into plain names and floats.
"""
import _compat_pickle
import collections
import json
import os
import pickle
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

WEIGHT_FILES = ('G', 'G_optim', 'D', 'D_optim', 'state_dict', 'G_ema')
_JOURNAL = '.saving{}.json'
_TMP = '.tmp-'


def file_name(stem: str, suffix: Optional[str] = None) -> str:
    """'G', 'copy0' -> 'G_copy0.pth'; no suffix -> 'G.pth'."""
    return f'{stem}_{suffix}.pth' if suffix else f'{stem}.pth'


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------

def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_file_mode() -> int:
    """The permissions a file created now gets from the umask (0o644 under umask 022), for
    files made with tempfile.mkstemp: it always makes them 0o600, so a data set or weights file
    renamed into place would be readable by its owner alone, whatever the lab's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_temp(folder: str, name: str, write) -> str:
    tmp = os.path.join(folder, f'{_TMP}{os.getpid()}-{name}')
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def atomic_write(path: str, write) -> None:
    """Write a file through `write(fileobj)` to a temporary name, fsync, rename into place."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = _write_temp(folder, os.path.basename(path), write)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def save_set(objects: Dict[str, object], folder: str, tag: str = '') -> None:
    """Save {file name: object} into `folder` as one unit (see the module docstring)."""
    os.makedirs(folder, exist_ok=True)
    temps = {}
    try:
        for name, obj in objects.items():
            temps[name] = _write_temp(folder, name, lambda f, o=obj: torch.save(o, f))
    except BaseException:
        for tmp in temps.values():
            _remove(tmp)
        raise
    journal = os.path.join(folder, _JOURNAL.format(tag))
    atomic_write_text(journal, json.dumps({name: os.path.basename(tmp)
                                           for name, tmp in temps.items()}))
    _roll_forward(folder, journal)


def _roll_forward(folder: str, journal: str) -> None:
    with open(journal) as f:
        pending = json.load(f)
    for name, tmp in pending.items():
        tmp_path = os.path.join(folder, tmp)
        if os.path.exists(tmp_path):
            os.replace(tmp_path, os.path.join(folder, name))
    _fsync_dir(folder)
    _remove(journal)


def recover(folder: str) -> None:
    """Finish a save that was interrupted after its journal was written; discard temporaries
    of saves interrupted before."""
    if not os.path.isdir(folder):
        return
    for entry in sorted(os.listdir(folder)):
        if entry.startswith('.saving') and entry.endswith('.json'):
            try:
                _roll_forward(folder, os.path.join(folder, entry))
            except (ValueError, OSError):
                _remove(os.path.join(folder, entry))  # a torn journal: nothing was renamed
    for entry in os.listdir(folder):
        if entry.startswith(_TMP):
            _remove(os.path.join(folder, entry))


# ------------------------------------------------------------------------------------------------
# Safe loading
# ------------------------------------------------------------------------------------------------

class SavedModule:
    """Stands in for a pickled nn.Module (the original's config stores its activations as
    nn.ReLU objects): keeps the class name and state, runs nothing."""

    def __init__(self, name: str = ''):
        self.class_name = name
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {'state': state}

    def activation_name(self) -> str:
        inplace = self.state.get('inplace', False)
        return 'inplace_relu' if inplace else 'relu'


def _saved_module_class(name):
    return type(name, (SavedModule,), {'__init__': lambda self: SavedModule.__init__(self, name)})


def _thnn_backend(*args):
    return None


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('torch._utils', '_rebuild_tensor'): torch._utils._rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): torch._utils._rebuild_parameter,
    ('torch', 'Size'): torch.Size,
    ('torch.nn.backends.thnn', '_get_thnn_function_backend'): _thnn_backend,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): __import__('codecs').encode,  # bytes under pickle protocol 2
}


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray
    return multiarray


for _module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    _ALLOWED[(_module, 'scalar')] = _numpy_multiarray().scalar
    _ALLOWED[(_module, '_reconstruct')] = _numpy_multiarray()._reconstruct
for _dtype in ('Float32DType', 'Float64DType', 'Int64DType', 'Int32DType', 'BoolDType'):
    if hasattr(np, 'dtypes') and hasattr(np.dtypes, _dtype):
        _ALLOWED[('numpy.dtypes', _dtype)] = getattr(np.dtypes, _dtype)
_ALLOWED[('numpy', 'ndarray')] = np.ndarray


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # Python 2 names, as pickle protocol 2 writes them (e.g. __builtin__.set).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module.startswith('torch.nn.modules.'):
            return _saved_module_class(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == 'torch' and name.endswith('Storage'):
            return getattr(torch, name)
        raise pickle.UnpicklingError(
            f'refusing to load {module}.{name}: checkpoints may hold only tensors, numbers, '
            f'strings, containers and activation modules')


class _RestrictedPickle:
    """A `pickle_module` for torch.load that admits only the types above."""
    Unpickler = _RestrictedUnpickler
    __name__ = 'restricted_pickle'

    @staticmethod
    def load(f, **kwargs):
        return _RestrictedUnpickler(f, **kwargs).load()


def safe_load(path: str, map_location='cpu'):
    """torch.load without running code from the file. Raises a clear error for a missing,
    empty or corrupt file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass  # the original's state_dict.pth: try the restricted unpickler
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(f'checkpoint file {path!r} is corrupt or not a torch file '
                         f'({type(error).__name__}: {error})') from None
    try:
        with warnings.catch_warnings():
            # The legacy format stores each module's source and compares it with the loaded
            # class; our stand-ins have none, which is the point.
            warnings.filterwarnings('ignore', message="Couldn't retrieve source code")
            obj = torch.load(path, map_location=map_location, weights_only=False,
                             pickle_module=_RestrictedPickle)
    except pickle.UnpicklingError as error:
        if str(error).startswith('refusing'):
            raise ValueError(f'checkpoint file {path!r}: {error}') from None
        raise ValueError(f'checkpoint file {path!r} is corrupt or truncated ({error})') from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        raise ValueError(f'checkpoint file {path!r} is corrupt or not a torch file '
                         f'({type(error).__name__}: {error})') from None
    return plain(obj)


def plain(obj):
    """Replace module stand-ins by activation names and numpy/0-dim tensor scalars by floats."""
    if isinstance(obj, SavedModule):
        return obj.activation_name()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, plain(v)) for k, v in obj.items()) \
            if isinstance(obj, collections.OrderedDict) else {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def upgrade_state(state: dict) -> dict:
    """Bring an original `state_dict.pth` to our form: float metrics (the original stored a
    numpy IS and, in its released run, a tensor FID), `dataset_root` renamed `data_root`."""
    state = dict(state)
    for key in ('best_IS', 'best_FID'):
        value = state.get(key)
        if torch.is_tensor(value) and value.numel() == 1:
            state[key] = float(value.item())
        elif isinstance(value, (np.generic, int)):
            state[key] = float(value)
    config = dict(state.get('config') or {})
    if 'dataset_root' in config and 'data_root' not in config:
        config['data_root'] = config.pop('dataset_root')
    state['config'] = config
    return state


# ------------------------------------------------------------------------------------------------
# Weights folders
# ------------------------------------------------------------------------------------------------

def describe_mismatch(module: nn.Module, state: dict) -> str:
    """Human-readable key and shape differences between a module and a state_dict."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state and hasattr(state[k], 'shape')
              and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for title, items in (('missing from the file', missing), ('not in the model', unexpected),
                         ('shape mismatch', shapes)):
        if items:
            shown = ', '.join(items[:6]) + (f', ... ({len(items)} in all)' if len(items) > 6
                                            else '')
            parts.append(f'{title}: {shown}')
    return '; '.join(parts)


def load_into(module: nn.Module, path: str, strict: bool = True) -> None:
    """Load a state_dict file into `module`, with a clear error when the architecture differs."""
    state = safe_load(path)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f'{path!r} does not hold a state_dict')
    mismatch = describe_mismatch(module, state)
    shape_problem = 'shape mismatch' in mismatch
    if mismatch and (strict or shape_problem):
        raise ValueError(f'{path!r} does not fit this model ({mismatch}). Check the '
                         f'architecture flags (--model, --dataset/--resolution, --G_ch/--D_ch, '
                         f'--G_attn/--D_attn, --G_shared, --hier, --dim_z, --shared_dim, '
                         f'--num_G_SVs/--num_D_SVs, --mybn, --cross_replica)')
    module.load_state_dict(state, strict=strict)


def save_weights(G, D, state_dict: dict, weights_root: str, experiment_name: str,
                 name_suffix: Optional[str] = None, G_ema=None, *, G_optim=None,
                 D_optim=None) -> None:
    """Save the six files of one checkpoint as one unit: `<weights_root>/<experiment_name>/`
    {G, G_optim, D, D_optim, state_dict, G_ema}[_<name_suffix>].pth, the original's layout
    (its utils.save_weights, whose arguments these are; the optimizers were G.optim and
    D.optim there). A file whose object is None is not written."""
    folder = os.path.join(weights_root, experiment_name)
    objects = {}
    for stem, obj in (('G', G), ('G_optim', G_optim), ('D', D), ('D_optim', D_optim),
                      ('state_dict', None), ('G_ema', G_ema)):
        if stem == 'state_dict':
            objects[file_name(stem, name_suffix)] = state_dict
        elif obj is not None:
            objects[file_name(stem, name_suffix)] = obj.state_dict()
    save_set(objects, folder, tag=name_suffix or '')


def checkpoint_folder(weights_root: str, experiment_name: str, name_suffix: Optional[str] = None,
                      what: str = 'checkpoint') -> str:
    """The experiment's weights folder; a clear error listing what is there when absent."""
    folder = os.path.join(weights_root, experiment_name)
    if not os.path.isdir(folder):
        if os.path.isdir(weights_root):
            there = sorted(os.listdir(weights_root))
            listing = f"holds: {', '.join(there[:20]) if there else 'nothing'}"
            listing += f', ... ({len(there)} in all)' if len(there) > 20 else ''
        else:
            listing = 'does not exist either; see --weights_root / --base_root'
        raise FileNotFoundError(f'no {what} for experiment {experiment_name!r}: {folder!r} does '
                                f'not exist ({weights_root!r} {listing}). Pass '
                                f'--experiment_name, or the same flags as the training run')
    recover(folder)
    if not os.path.isfile(os.path.join(folder, file_name('G', name_suffix))):
        have = sorted(f for f in os.listdir(folder) if f.endswith('.pth'))
        raise FileNotFoundError(f"{folder!r} has no {file_name('G', name_suffix)} "
                                f"(--load_weights {name_suffix or repr('')}); it holds: "
                                f"{', '.join(have) or 'nothing'}")
    return folder


def read_state(weights_root: str, experiment_name: str,
               name_suffix: Optional[str] = None) -> Tuple[dict, str]:
    """The saved training state of a weights folder (upgraded, config included) and its path,
    without loading any weights: what `sample.py --config_from_name` reads first."""
    folder = checkpoint_folder(weights_root, experiment_name, name_suffix)
    path = os.path.join(folder, file_name('state_dict', name_suffix))
    if not os.path.isfile(path):
        have = sorted(f for f in os.listdir(folder) if f.endswith('.pth'))
        raise FileNotFoundError(f"{folder!r} has no {file_name('state_dict', name_suffix)}, "
                                f"which holds the saved config; it holds: {', '.join(have)}")
    return upgrade_state(safe_load(path)), path


def load_weights(G, D, state_dict: dict, weights_root: str, experiment_name: str,
                 name_suffix: Optional[str] = None, G_ema=None, strict: bool = True,
                 load_optim: bool = True, *, G_optim=None, D_optim=None) -> dict:
    """Load a checkpoint written by us or by the original, with the original's arguments (its
    utils.load_weights; the optimizers were G.optim and D.optim there). A net or optimizer
    given as None is not loaded. Returns the saved training state (upgraded); `state_dict` is
    updated in place with its entries, as the original did."""
    folder = checkpoint_folder(weights_root, experiment_name, name_suffix)
    path = lambda stem: os.path.join(folder, file_name(stem, name_suffix))  # noqa: E731
    print(f"Loading {name_suffix or 'latest'} weights from {folder}...")
    if G is not None:
        load_into(G, path('G'), strict)
        if load_optim and G_optim is not None:
            G_optim.load_state_dict(safe_load(path('G_optim')))
    if D is not None:
        load_into(D, path('D'), strict)
        if load_optim and D_optim is not None:
            D_optim.load_state_dict(safe_load(path('D_optim')))
    if G_ema is not None:
        if not os.path.isfile(path('G_ema')):
            raise FileNotFoundError(f"{path('G_ema')!r} does not exist: the run was not trained "
                                    f"with --ema")
        load_into(G_ema, path('G_ema'), strict)
    saved = upgrade_state(safe_load(path('state_dict')))
    for key in list(state_dict):
        if key in saved and key != 'config':
            state_dict[key] = saved[key]
    return saved
