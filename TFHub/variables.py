"""Read and dump the variables of a TF-Hub BigGAN module.

Every source opens as a read-only mapping from canonical names to numpy arrays, read lazily. A
canonical name is the TF variable name without the `module/` scope that `hub.Module` adds and
without the `:0` output suffix, e.g. `Generator/GBlock_1/conv0/w/ema_b999900`. Sources:

- an HDF5 dump, one dataset per variable named as `hub.Module` names it
  (`module/Generator/...:0`): the original converter's `biggan-<res>.h5` layout, so dumps of
  either tool serve both. Needs h5py only.
- a TF-Hub module folder (`tfhub_module.pb`, `saved_model.pb`, `variables/variables.*`): read with
  TensorFlow's checkpoint reader (TF 1.x or 2.x; no graph is built).
- a module URL: fetched and cached by `tensorflow_hub`, then read as a folder.

TensorFlow and tensorflow_hub are optional: imported only for the last two, with a message that
says what to install or what to pass instead.
"""
import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Dict, Iterator

import h5py
import numpy as np

from atomic import new_file_mode

MODULE_SCOPE = 'module/'
OUTPUT_SUFFIX = ':0'
INDEX_FILE = os.path.join('variables', 'variables.index')
WHAT_MODULE_PATH_TAKES = ('a TF-Hub module folder (holding variables/variables.index) or an .h5 '
                          'dump of its variables')


class ModulePathError(ValueError):
    """A module path that exists but is neither a TF-Hub module folder nor an .h5 dump."""


def canonical_name(name: str) -> str:
    """'module/Generator/linear/w:0' -> 'Generator/linear/w' (either part may be absent)."""
    name = name.lstrip('/')
    if name.startswith(MODULE_SCOPE):
        name = name[len(MODULE_SCOPE):]
    if name.endswith(OUTPUT_SUFFIX):
        name = name[:-len(OUTPUT_SUFFIX)]
    return name


def _load_torch_compiler_first() -> None:
    """Import torch's compiler stack before TensorFlow. torch imports it (and triton with it)
    lazily, e.g. for the meta tensors of the converters' dry runs; with TensorFlow already
    loaded, that import crashed the process (a segmentation fault in triton's import, torch 2.14
    with TensorFlow 2.21). Imported before TensorFlow, both work."""
    if 'tensorflow' in sys.modules:
        return
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:   # a torch without the compiler stack: nothing to load
        pass


def import_optional(package: str, purpose: str):
    """Import TensorFlow or tensorflow_hub, or raise an ImportError saying how to do without."""
    _load_torch_compiler_first()
    try:
        return importlib.import_module(package)
    except ImportError as error:
        pip_name = {'tensorflow': 'tensorflow', 'tensorflow_hub': 'tensorflow-hub'}[package]
        raise ImportError(
            f'{purpose} needs the optional package {package} (pip install {pip_name}), which '
            f'could not be imported ({error}). Without TensorFlow and tensorflow_hub, pass '
            f'--module_path with an .h5 dump of the module variables; with TensorFlow alone, '
            f'download and unpack the module yourself and pass its folder (TFHub/README.md).'
        ) from error


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, so a
    crash never leaves a half-written file under the final name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    # Keep the extension: writers such as torchvision's save_image pick the format from it.
    handle, tmp = tempfile.mkstemp(prefix=f'.{base}.', suffix=f'.tmp{ext}', dir=folder)
    os.fchmod(handle, new_file_mode())  # the umask's mode, as any file the user makes
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class H5Variables(Mapping):
    """The variables of an HDF5 dump, by canonical name. Use as a context manager."""

    def __init__(self, path: str):
        self.path = path
        self._file = h5py.File(path, 'r')
        self._datasets: Dict[str, str] = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                self._datasets[canonical_name(name)] = name
        self._file.visititems(visit)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._file[self._datasets[name]][()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._datasets)

    def __len__(self) -> int:
        return len(self._datasets)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CheckpointVariables(Mapping):
    """The variables of a TF-Hub module folder, by canonical name (needs TensorFlow)."""

    def __init__(self, folder: str):
        tf = import_optional('tensorflow', f'Reading the TF-Hub module folder {folder}')
        self.path = folder
        self._reader = tf.train.load_checkpoint(os.path.join(folder, 'variables', 'variables'))
        self._names = {canonical_name(n): n for n in self._reader.get_variable_to_shape_map()}

    def __getitem__(self, name: str) -> np.ndarray:
        return np.asarray(self._reader.get_tensor(self._names[name]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_variables(path: str):
    """Open a module folder or an .h5 dump as a mapping (a context manager).

    FileNotFoundError when `path` does not exist; ModulePathError when it is neither.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f'module path {path!r} does not exist; give '
                                f'{WHAT_MODULE_PATH_TAKES}')
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, INDEX_FILE)):
            raise ModulePathError(f'module path {path!r} is a folder without {INDEX_FILE}, '
                                  f'so not a TF-Hub module; give {WHAT_MODULE_PATH_TAKES}')
        return CheckpointVariables(path)
    if h5py.is_hdf5(path):
        return H5Variables(path)
    if path.endswith(('.tar.gz', '.tgz', '.tar')):
        raise ModulePathError(f'module path {path!r} is an archive: unpack it first (mkdir '
                              f'biggan && tar xzf {os.path.basename(path)} -C biggan) and '
                              f'pass the folder')
    raise ModulePathError(f'module path {path!r} is not an HDF5 file; give '
                          f'{WHAT_MODULE_PATH_TAKES}')


def download_module(url: str) -> str:
    """Fetch (or find in tensorflow_hub's cache) the module at `url`; return its local folder."""
    import_optional('tensorflow', f'Downloading {url}')
    hub = import_optional('tensorflow_hub', f'Downloading {url}')
    if not hasattr(hub, 'resolve'):
        raise ImportError(f'Downloading {url} needs tensorflow_hub >= 0.7 (hub.resolve); '
                          f'upgrade it, or download and unpack the module yourself and pass '
                          f'--module_path')
    return hub.resolve(url)


def dump_to_hdf5(variables: Mapping, path: str) -> None:
    """Write every variable to `path` (atomically) under its `module/...:0` name."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, 'w') as h5:
            for name in sorted(variables):
                full = MODULE_SCOPE + canonical_name(name) + OUTPUT_SUFFIX
                h5.create_dataset(full, data=np.asarray(variables[name]))
