"""Loading checkpoints without running code from them, in bounded time and memory.

Files are read with `torch.load(weights_only=True)`; the original's `state_dict.pth` (it pickles
`nn.ReLU` objects and numpy scalars) falls back to an unpickler that admits only those types and
turns them back into plain names and floats. The result is converted with `plain`, which visits
every object once and refuses structures nested deeper than MAX_DEPTH or holding more than
MAX_OBJECTS containers and scalars: a small hostile pickle (each level referencing the previous
twice) would otherwise expand exponentially.

A file in torch's zip format is first checked against the CRC-32 its zip records carry (torch
itself never checks them, so flipped bytes in a tensor would load silently): one extra read of
the file, about a tenth of a second for a 280 MB G.pth.
"""
import _compat_pickle
import collections
import os
import pickle
import warnings
import zipfile

import numpy as np
import torch

# A checkpoint nests a few levels (state -> config -> list); a million entries is far beyond
# the largest config or optimizer state a run writes (tensors count once each).
MAX_DEPTH = 32
MAX_OBJECTS = 1_000_000


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


def check_crc(path: str) -> None:
    """ValueError naming the file when a record of a zip-format torch file does not match the
    CRC-32 stored for it. The legacy format (older torch) stores none: nothing to check."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as record:  # raises BadZipFile at the end on a mismatch
                    while record.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
            NotImplementedError) as error:
        raise ValueError(f'checkpoint file {path!r} is corrupt ({error}): its bytes changed '
                         f'after it was saved; load another copy (--load_weights copy<k>) or '
                         f'save it again') from None


def safe_load(path: str, map_location='cpu'):
    """torch.load without running code from the file, bounded (see `plain`), after its
    checksums (`check_crc`). Raises a clear ValueError naming the file for an empty, corrupt,
    hostile or oversized one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist')
    check_crc(path)
    try:
        return plain(torch.load(path, map_location=map_location, weights_only=True), path)
    except pickle.UnpicklingError:
        pass  # the original's state_dict.pth: try the restricted unpickler
    except (RuntimeError, EOFError, OSError) as error:
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
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, RecursionError,
            MemoryError) as error:
        raise ValueError(f'checkpoint file {path!r} is corrupt or not a torch file '
                         f'({type(error).__name__}: {error})') from None
    return plain(obj, path)


def plain(obj, path: str = 'checkpoint'):
    """Replace module stand-ins by activation names and numpy scalars by Python numbers.
    Shared sub-objects are converted once (and stay shared); ValueError naming `path` for a
    structure deeper than MAX_DEPTH or larger than MAX_OBJECTS."""
    done = {}

    def convert(value, depth: int):
        if isinstance(value, SavedModule):
            return value.activation_name()
        if isinstance(value, np.generic):
            return value.item()
        if not isinstance(value, (dict, list, tuple)):
            return value
        if id(value) in done:
            return done[id(value)]
        if depth > MAX_DEPTH or len(done) >= MAX_OBJECTS:
            raise ValueError(f'checkpoint file {path!r} nests its data deeper than {MAX_DEPTH} '
                             f'levels or holds more than {MAX_OBJECTS} objects: it is no '
                             f'checkpoint of this code or of the original')
        done[id(value)] = value  # a cycle refers back to the unconverted object
        if isinstance(value, dict):
            items = ((k, convert(v, depth + 1)) for k, v in value.items())
            result = (type(value)(items) if isinstance(value, collections.OrderedDict)
                      else dict(items))
            if hasattr(value, '_metadata'):  # a module state_dict's versions and set id
                result._metadata = value._metadata
        else:
            result = type(value)(convert(v, depth + 1) for v in value)
        done[id(value)] = result
        return result
    return convert(obj, 0)
