"""Weights folders in the original's layout: `<weights_root>/<exp>/{G, G_optim, D, D_optim,
state_dict, G_ema}[_<suffix>].pth`, saved as one unit and loaded safely.

A save checks every tensor is finite, writes each file to a temporary name and fsyncs it, writes a
journal naming the set (each temporary, its size and the set id), then renames the files into
place holding the folder's set lock exclusively, and removes the journal. Every file of a set
carries the same set id (in a module state_dict's metadata, as an extra key in the others; the
original's loaders ignore both): the run's id (minted when the run starts, kept across resumes)
and a digest of the training state, so that files of two runs with the same seed and iteration
differ too.

Only the process that holds the folder's run lock (atomic.RunLock: the trainer) touches a save
that a crash interrupted (`recover`): it finishes one whose journal's temporaries are all there,
of the journal's size, loadable and of the journal's set, and otherwise discards the save,
keeping the files in place. Readers never change the folder: they hold the set lock shared while
reading, so they see a whole set; a set mixed anyway (by hand, or a crash mid-rename not yet
recovered) is refused by its ids.

Loading never runs code from a file (safe_pickle, which also checks each file's CRC-32s) and
checks what it finds: a state file that holds no training state, weights or optimizer states of
another shape, mixed sets, files of another run.
"""
import collections
import hashlib
import io
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

import atomic
from safe_pickle import safe_load

WEIGHT_FILES = ('G', 'G_optim', 'D', 'D_optim', 'state_dict', 'G_ema')
SET_KEY = 'checkpoint_set'  # the id shared by the files of one save
RUN_KEY = 'run_id'  # the training state's id of the run, minted at its start
_JOURNAL = '.saving{}.json'


def file_name(stem: str, suffix: Optional[str] = None) -> str:
    """'G', 'copy0' -> 'G_copy0.pth'; no suffix -> 'G.pth'."""
    return f'{stem}_{suffix}.pth' if suffix else f'{stem}.pth'


# ------------------------------------------------------------------------------------------------
# Saving a set
# ------------------------------------------------------------------------------------------------

def save_set(objects: Dict[str, object], folder: str, tag: str = '',
             set_id: Optional[str] = None) -> None:
    """Save {file name: object} into `folder` as one unit (see the module docstring). An
    exception while the temporaries are written (a second signal, a full disk) leaves the files
    in place as they were; the journal and renames run to their end (atomic.uninterrupted)."""
    os.makedirs(folder, exist_ok=True)
    temps = {}
    try:
        for name, obj in objects.items():
            temps[name] = atomic.write_temp(folder, name, lambda f, o=obj: torch.save(o, f))
    except BaseException:
        for tmp in temps.values():
            atomic.remove(tmp)
        raise
    journal = os.path.join(folder, _JOURNAL.format(tag))
    files = {name: {'temp': os.path.basename(tmp), 'size': os.path.getsize(tmp)}
             for name, tmp in temps.items()}
    with atomic.uninterrupted():
        atomic.atomic_write_text(journal, json.dumps({'set': set_id, 'files': files}))
        with atomic.set_lock(folder, shared=False):
            _roll_forward(folder, journal, files)


def _read_journal(journal: str) -> Tuple[Optional[str], Dict[str, dict]]:
    """(set id, {file name: {temp, size}}); older code's journal was {file name: temp}."""
    with open(journal) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError('not a journal')
    if isinstance(data.get('files'), dict):
        return data.get('set'), data['files']
    return None, {name: {'temp': tmp, 'size': None} for name, tmp in data.items()}


def _roll_forward(folder: str, journal: str, files: Dict[str, dict]) -> None:
    for name, entry in files.items():
        tmp_path = os.path.join(folder, entry['temp'])
        if os.path.exists(tmp_path):
            os.replace(tmp_path, os.path.join(folder, name))
    atomic.fsync_dir(folder)
    atomic.remove(journal)


def _incomplete(folder: str, set_id: Optional[str], files: Dict[str, dict]) -> Optional[str]:
    """Why a journal's save cannot be finished (None when it can): each file, as a temporary
    or already renamed into place, must have the size recorded, load, and carry the set id."""
    ids = set()
    for name, entry in files.items():
        path = os.path.join(folder, os.path.basename(str(entry.get('temp', ''))))
        if not os.path.isfile(path):
            path = os.path.join(folder, name)  # renamed before the interruption, or missing
        if not os.path.isfile(path):
            return f'{name} is missing'
        size = entry.get('size')
        if size is not None and os.path.getsize(path) != size:
            return (f'{os.path.basename(path)} has {os.path.getsize(path)} bytes, the save '
                    f'wrote {size}')
        try:
            ids.add(set_id_of(safe_load(path)))
        except (ValueError, OSError) as error:
            return str(error)
        if set_id is not None and ids != {set_id}:
            return f'{os.path.basename(path)} belongs to another save'
    if set_id is None and (len(ids) != 1 or None in ids):
        return 'its files belong to different saves'
    return None


def leftovers(folder: str) -> list:
    """Journals and temporaries of saves that have not finished (or were interrupted)."""
    if not os.path.isdir(folder):
        return []
    return sorted(entry for entry in os.listdir(folder)
                  if entry.startswith(atomic.TMP_PREFIX)
                  or (entry.startswith('.saving') and entry.endswith('.json')))


def recover(folder: str) -> List[str]:
    """Finish a save that was interrupted after its journal was written when all its files are
    whole and its own, else discard it; discard temporaries of saves interrupted before. Call
    only holding the folder's RunLock. Returns a note for each journal found."""
    notes = []
    with atomic.set_lock(folder, shared=False):
        for entry in leftovers(folder):
            if not entry.startswith('.saving'):
                continue
            journal = os.path.join(folder, entry)
            try:
                set_id, files = _read_journal(journal)
                problem = _incomplete(folder, set_id, files)
            except (ValueError, OSError, KeyError, TypeError, AttributeError):
                problem = 'its journal is torn'  # written before any rename
            if problem is None:
                _roll_forward(folder, journal, files)
                notes.append(f'Note: finished the save that was interrupted in {folder!r}')
            else:
                atomic.remove(journal)
                notes.append(f'Note: discarded the interrupted save in {folder!r} ({problem}); '
                             f'the files in place are kept')
        for entry in leftovers(folder):
            atomic.remove(os.path.join(folder, entry))
    return notes


def _tensors(obj, prefix: str = ''):
    """(name, tensor) of every floating-point tensor in a state_dict or optimizer state."""
    if torch.is_tensor(obj):
        if obj.is_floating_point():
            yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f'{prefix}.{i}')


def non_finite(objects: Dict[str, object]) -> Optional[Tuple[str, str, int]]:
    """(file, tensor, count) of the first tensor holding a NaN or Inf, else None (one device
    sync per device, not one per tensor)."""
    found = [(name, key, t) for name, obj in objects.items() for key, t in _tensors(obj)]
    by_device = collections.defaultdict(list)
    for entry in found:
        by_device[entry[2].device].append(entry)
    for entries in by_device.values():
        ok = torch.stack([torch.isfinite(t).all() for _, _, t in entries]).tolist()
        for (name, key, t), good in zip(entries, ok):
            if not good:
                return name, key, int((~torch.isfinite(t)).sum())
    return None


def check_finite_tensors(objects: Dict[str, object], itr) -> None:
    """FloatingPointError naming the file, tensor and iteration when any tensor about to be
    saved holds a NaN or Inf."""
    bad = non_finite(objects)
    if bad:
        raise FloatingPointError(
            f'iteration {itr}: {bad[0]} {bad[1]} holds {bad[2]} non-finite values (NaN or '
            f'Inf); nothing was saved and the last checkpoint stays the newest. Lower '
            f'the learning rates, or resume from a copy')


def state_id(state_dict: dict, name_suffix: Optional[str] = None) -> str:
    """The set id of a save: `<run id>:<digest>`, the digest of its slot and training state
    (iteration, epoch, ring counters, best scores, the training noise's state, the run id), so
    saves at different points or of different runs get different ids while a resumed run
    saving the same state gets the same one. Left out: the config (it records --resume) and
    torch's global RNG (a resumed loader draws its seed from it, and training draws nothing
    else from it)."""
    state = {key: value for key, value in state_dict.items() if key not in ('config', 'rng')}
    state['sampler'] = (state_dict.get('rng') or {}).get('sampler')
    buffer = io.BytesIO()
    torch.save({'slot': name_suffix or '', 'state': state}, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
    run_id = state_dict.get(RUN_KEY)
    return f'{run_id}:{digest}' if run_id else digest


def run_of(set_id: Optional[str]) -> Optional[str]:
    """The run id within a set id (None for a set id of older code)."""
    return set_id.split(':')[0] if set_id and ':' in set_id else None


def _with_set_id(obj: dict, set_id: str, weights: bool) -> dict:
    """The object to save, carrying the set id: for weights in the state_dict's metadata (a
    key among the weights would break strict loading), else as an extra key."""
    if not weights:
        return {**obj, SET_KEY: set_id}
    metadata = dict(getattr(obj, '_metadata', {}))
    obj = collections.OrderedDict(obj)
    obj._metadata = metadata
    metadata[''] = {**metadata.get('', {}), SET_KEY: set_id}
    return obj


def save_weights(G, D, state_dict: dict, weights_root: str, experiment_name: str,
                 name_suffix: Optional[str] = None, G_ema=None, *, G_optim=None,
                 D_optim=None) -> None:
    """Save the six files of one checkpoint as one unit: `<weights_root>/<experiment_name>/`
    {G, G_optim, D, D_optim, state_dict, G_ema}[_<name_suffix>].pth, the original's layout
    (its utils.save_weights, whose arguments these are; the optimizers were G.optim and
    D.optim there). A file whose object is None is not written; nothing is written when a
    tensor is not finite."""
    folder = os.path.join(weights_root, experiment_name)
    objects = {}
    for stem, obj in (('G', G), ('G_optim', G_optim), ('D', D), ('D_optim', D_optim),
                      ('state_dict', None), ('G_ema', G_ema)):
        if stem == 'state_dict':
            objects[file_name(stem, name_suffix)] = state_dict
        elif obj is not None:
            objects[file_name(stem, name_suffix)] = obj.state_dict()
    check_finite_tensors(objects, state_dict.get('itr', '?'))
    set_id = state_id(state_dict, name_suffix)
    weights = {file_name(stem, name_suffix) for stem in ('G', 'D', 'G_ema')}
    save_set({name: _with_set_id(obj, set_id, name in weights) for name, obj in objects.items()},
             folder, tag=name_suffix or '', set_id=set_id)


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

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


def check_state(state, path: str) -> dict:
    """`state` if it is a training state (a dict with an integer `itr` and a `config` dict),
    else a ValueError naming the file and what it holds instead."""
    if (isinstance(state, dict) and isinstance(state.get('itr'), int)
            and isinstance(state.get('config', {}), dict)):
        return state
    keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
    raise ValueError(f'{path!r} holds no training state (itr, config, ...) but {keys}: a '
                     f'weights file saved under that name? Load another copy (--load_weights)')


def set_id_of(obj) -> Optional[str]:
    """The set id a loaded file carries (None for the original's files)."""
    metadata = getattr(obj, '_metadata', None)
    if metadata is not None:
        return metadata.get('', {}).get(SET_KEY)
    return obj.get(SET_KEY) if isinstance(obj, dict) else None


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


def load_into(module: nn.Module, path: str, strict: bool = True, state=None) -> None:
    """Load a state_dict file (or its already loaded `state`) into `module`, with a clear error
    when the architecture differs."""
    state = safe_load(path) if state is None else state
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


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict, path: str) -> None:
    """Load an optimizer state; a ValueError naming the file when it belongs to other
    parameters (another width or architecture), instead of a failure at the first step."""
    state = {key: value for key, value in state.items() if key != SET_KEY}
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f'{path!r} does not fit this optimizer ({error}); it belongs to '
                         f'another architecture: check the flags, or resume without it') from None
    for group in optimizer.param_groups:
        for index, param in enumerate(group['params']):
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                    raise ValueError(f'{path!r}: the state {key!r} of parameter {index} has '
                                     f'shape {tuple(value.shape)}, the parameter '
                                     f'{tuple(param.shape)}; the file belongs to another '
                                     f'width or architecture')


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
    with atomic.set_lock(folder, shared=True):
        state = safe_load(path)
    return upgrade_state(check_state(state, path)), path


def _check_one_set(loaded: Dict[str, object], paths: Dict[str, str], folder: str) -> None:
    """All files of one save carry one set id; files without one (the original's) pass. The
    error names the files that differ from the state file (another run, or another save)."""
    ids = {name: set_id_of(obj) for name, obj in loaded.items()}
    found = {i for i in ids.values() if i}
    if len(found) <= 1:
        return
    groups = collections.defaultdict(list)
    for name, set_id in ids.items():
        groups[set_id or 'none'].append(name)
    reference = ids.get('state_dict') or max(groups, key=lambda i: len(groups[i]))
    odd = [name for name, set_id in ids.items() if set_id and set_id != reference]
    other_run = any(run_of(ids[name]) != run_of(reference) for name in odd)
    described = '; '.join(f"{', '.join(names)} from save {set_id.split(':')[-1][:8]}"
                          for set_id, names in groups.items())
    pending = (' (an interrupted save is pending: train.py --resume finishes or discards it)'
               if any(entry.startswith('.saving') for entry in leftovers(folder)) else '')
    raise ValueError(f"{', '.join(repr(paths[name]) for name in odd)} "
                     f"{'is' if len(odd) == 1 else 'are'} from "
                     f"{'another run' if other_run else 'another save'}: the checkpoint in "
                     f'{folder!r} mixes files of different saves ({described}){pending}; load a '
                     f'complete copy (--load_weights copy<k> or best<k>)')


def load_weights(G, D, state_dict: dict, weights_root: str, experiment_name: str,
                 name_suffix: Optional[str] = None, G_ema=None, strict: bool = True,
                 load_optim: bool = True, *, G_optim=None, D_optim=None) -> dict:
    """Load a checkpoint written by us or by the original, with the original's arguments (its
    utils.load_weights; the optimizers were G.optim and D.optim there). A net or optimizer
    given as None is not loaded. Every file is read (one whole set, under the set lock) and
    checked before any is applied. Returns the saved training state (upgraded); `state_dict`
    is updated in place with its entries, as the original did."""
    folder = checkpoint_folder(weights_root, experiment_name, name_suffix)
    path = lambda stem: os.path.join(folder, file_name(stem, name_suffix))  # noqa: E731
    print(f"Loading {name_suffix or 'latest'} weights from {folder}...")
    wanted = {'G': G, 'D': D, 'G_ema': G_ema, 'state_dict': True}
    if load_optim:
        wanted.update(G_optim=G_optim if G is not None else None,
                      D_optim=D_optim if D is not None else None)
    if G_ema is not None and not os.path.isfile(path('G_ema')):
        raise FileNotFoundError(f"{path('G_ema')!r} does not exist: the run was not trained "
                                f"with --ema")
    with atomic.set_lock(folder, shared=True):
        loaded = {stem: safe_load(path(stem)) for stem, target in wanted.items()
                  if target is not None}
    _check_one_set(loaded, {stem: path(stem) for stem in loaded}, folder)
    bad = non_finite({path(stem): state for stem, state in loaded.items()})
    if bad:  # saved so elsewhere (this code never saves one), or changed since
        raise ValueError(f'{bad[0]!r} holds {bad[2]} non-finite values (NaN or Inf) in '
                         f'{bad[1]}: these weights cannot train or sample; load another copy '
                         f'(--load_weights copy<k> or best<k>)')
    saved = upgrade_state(check_state(loaded.pop('state_dict'), path('state_dict')))
    for stem, state in loaded.items():
        if stem.endswith('optim'):
            load_optimizer(wanted[stem], state, path(stem))
        else:
            load_into(wanted[stem], path(stem), strict, state=state)
    for key in list(state_dict):
        if key in saved and key != 'config':
            state_dict[key] = saved[key]
    return saved
