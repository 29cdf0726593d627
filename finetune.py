"""Fine-tuning: a new run that starts from another model's weights (`train.py --finetune_from`).

The source is one of our weights folders, a released checkpoint folder of the original (both
hold `G.pth` and `D.pth`), a pretrained folder (config.json + G.safetensors or
G_ema.safetensors, and D.safetensors when exported with it), or a bare G state_dict file such as
a TF-Hub conversion (then D starts from its initialization). A folder's saved config
(`state_dict.pth`, or a pretrained folder's config.json) gives the new run's architecture: every
architecture flag not given on the command line takes the source's value.
Every tensor is copied; a start that would leave any tensor other than the class rows uncopied
(the architectures differ) is refused, naming the tensors, unless --finetune_partial. The
class-dependent tensors, the rows of each class embedding (G's shared embedding, or each
class-conditional BN's gain and bias embeddings without --G_shared, and D's projection
embedding), are re-initialized for the new number of classes, or, with `--class_map`, copied
row by row from the source classes the map names. The optimizers, the EMA, the iteration
counter and the best scores start afresh; a table says what was copied, mapped,
re-initialized and ignored. `--freeze_G N` / `--freeze_D N` keep the first N residual blocks
of G (next to z) or D (next to the image) fixed.
"""
import json
import os
import sys
from typing import Dict, List, Optional, Set, Tuple

import torch
import torch.nn as nn

import checkpoints
import flags
import pretrained_files
from safe_pickle import safe_load

Row = Tuple[str, str, str]  # (net.key, action, detail)


# ------------------------------------------------------------------------------------------------
# The source
# ------------------------------------------------------------------------------------------------

def source_states(path: str) -> Tuple[dict, Optional[dict]]:
    """(G state, D state or None) of --finetune_from: a folder with G.pth (and D.pth), a
    pretrained folder, or a G state_dict file."""
    flag = f'--finetune_from {path!r}'
    if pretrained_files.is_folder(path):
        # G.safetensors (the trained G, as G.pth of a run) when there, else G_ema.safetensors.
        have = pretrained_files.present(path)
        G_name = 'G' if 'G' in have else pretrained_files.pick_generator(path, True)
        return (pretrained_files.read_weights(have[G_name]),
                pretrained_files.read_weights(have['D']) if 'D' in have else None)
    if os.path.isdir(path):
        G_path, D_path = (os.path.join(path, checkpoints.file_name(stem)) for stem in 'GD')
        if not os.path.isfile(G_path):
            have = sorted(f for f in os.listdir(path) if f.endswith('.pth'))
            raise FileNotFoundError(f'{flag}: the folder has no G.pth (a weights folder of '
                                    f'train.py or the original holds one); it holds: '
                                    f"{', '.join(have) or 'nothing'}")
        return _state(G_path, flag), (_state(D_path, flag) if os.path.isfile(D_path) else None)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{flag} does not exist: give a weights folder (with G.pth) or '
                                f'a G state_dict file')
    return _state(path, flag), None


# The flags of the architecture: what G and D (or every residual block) read, except the data's
# image size and class count, the initialization (what is not copied starts fresh anyway) and
# cross-replica BN (a matter of this run's devices).
ARCHITECTURE_USES = ('G', 'D', 'GD', 'G_block', 'D_block')
NOT_ARCHITECTURE = frozenset({'resolution', 'n_classes', 'G_init', 'D_init', 'skip_init',
                              'cross_replica'})


def architecture_keys() -> Set[str]:
    """The config keys that a fine-tuning run takes from its source's saved config."""
    return {'model'} | {key for key, row in flags.rows().items()
                        if row.use in ARCHITECTURE_USES and key not in NOT_ARCHITECTURE}


def source_config(path: str) -> Tuple[Optional[dict], str]:
    """(saved config, its file) of a --finetune_from folder with a state_dict.pth (ours or the
    original's) or a pretrained folder's config.json (G's arguments and D's, when it has D);
    (None, '') for a bare G file or a folder without one."""
    folder = os.path.normpath(path)
    if pretrained_files.is_folder(folder):
        saved = pretrained_files.read_config(folder)
        return ({**pretrained_files.model_arguments(saved), **(saved.get('D') or {}),
                 'model': saved['model']}, os.path.join(folder, pretrained_files.CONFIG))
    if not os.path.isfile(os.path.join(folder, checkpoints.file_name('state_dict'))):
        return None, ''
    state, state_path = checkpoints.read_state(os.path.dirname(folder) or '.',
                                               os.path.basename(folder))
    return state['config'], state_path


def take_architecture(config: dict, given: Set[str], say=print) -> dict:
    """`config` with the source's architecture: each architecture flag that the command line
    (`given`, config keys) does not set takes the value saved with the source."""
    saved, path = source_config(config['finetune_from'])
    if not saved:
        return config
    taken = {key: saved[key] for key in architecture_keys() - given if key in saved}
    if taken.get('model', flags.MODELS[0]) not in flags.MODELS:
        del taken['model']  # the original's released configs name no model module there
    changed = sorted(key for key, value in taken.items() if config[key] != value)
    kept = sorted(key for key in architecture_keys() & given if key in saved
                  and saved[key] != config[key])
    if changed or kept:
        say(f'Fine-tuning: the architecture of {path}'
            + (': ' + ', '.join(f'{key} {taken[key]!r}' for key in changed) if changed else '')
            + (f"; kept from the command line: {', '.join(f'--{key}' for key in kept)}"
               if kept else ''))
    return {**config, **taken}


def check_source(config: dict) -> None:
    """The cheap checks of --finetune_from and --class_map, before any model is built."""
    path = config['finetune_from']
    if not path or config['resume']:
        return
    if pretrained_files.is_folder(path):
        pretrained_files.pick_generator(path, None)  # raises when it holds no G weights
    elif os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, checkpoints.file_name('G'))):
            source_states(path)  # raises, listing what the folder holds
    elif not os.path.isfile(path):
        raise FileNotFoundError(f'--finetune_from {path!r} does not exist: give a weights '
                                f'folder (with G.pth) or a G state_dict file')
    if config['class_map']:
        read_class_map(config['class_map'], config['n_classes'], sys.maxsize)


def _state(path: str, flag: str) -> dict:
    state = safe_load(path)
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f'{flag}: {path!r} does not hold a state_dict of tensors')
    return state


def _nesting(text: str) -> int:
    """The deepest nesting of JSON lists and objects in `text` (brackets inside strings do
    not count), found without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == '\\':
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in '[{':
            depth += 1
            deepest = max(deepest, depth)
        elif char in ']}':
            depth -= 1
    return deepest


def read_class_map(path: str, n_classes: int, source_classes: int) -> List[int]:
    """--class_map: a JSON list whose entry i is the source class of new class i (null: none),
    or a JSON object {"new class": source class}. Returns one source class per new class,
    -1 where there is none."""
    flag = f'--class_map {path!r}'
    valid = ('valid: a list [source class of class 0, ...] or an object '
             '{"new class": source class}')
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
        if _nesting(text) > 1:  # checked before parsing: json recurses once per level
            raise ValueError(f'{flag}: nested lists or objects; {valid}, of integers or null')
        data = json.loads(text)
    except OSError as error:
        raise FileNotFoundError(f'{flag}: cannot read it ({error.strerror})') from None
    except UnicodeDecodeError as error:
        raise ValueError(f'{flag}: not UTF-8 text ({error.reason} at byte {error.start})') \
            from None
    except json.JSONDecodeError as error:
        raise ValueError(f'{flag}: not JSON ({error}); valid: a list [source class of class 0, '
                         f'...] or an object {{"new class": source class}}') from None
    if isinstance(data, list):
        if len(data) > n_classes:
            raise ValueError(f'{flag}: {len(data)} entries for {n_classes} classes')
        pairs = list(enumerate(data))
    elif isinstance(data, dict):
        try:
            pairs = [(int(new), old) for new, old in data.items()]
        except ValueError:
            raise ValueError(f'{flag}: keys must be class numbers, got '
                             f'{sorted(data)[:5]}') from None
    else:
        raise ValueError(f'{flag}: a JSON {type(data).__name__}; valid: a list or an object')
    mapping = [-1] * n_classes
    for new, old in pairs:
        if old is None:
            continue
        if not 0 <= new < n_classes:
            raise ValueError(f'{flag}: new class {new} out of range 0 to {n_classes - 1}')
        # bool is an int to Python: JSON's true and false are refused by name.
        if type(old) is not int or not 0 <= old < source_classes:
            valid = (f"one of the source's 0 to {source_classes - 1}"
                     if source_classes < sys.maxsize else 'a class number (an integer, 0 or more)')
            raise ValueError(f'{flag}: source class {json.dumps(old)} for class {new} is not '
                             f'{valid}')
        mapping[new] = old
    return mapping


# ------------------------------------------------------------------------------------------------
# The transfer
# ------------------------------------------------------------------------------------------------

def class_dims(net: nn.Module, n_classes: int) -> Dict[str, int]:
    """Key -> class dimension of every class-dependent tensor of `net`: each class embedding's
    weight (rows) and its spectral-norm vectors `u<i>` (one entry per class)."""
    dims = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings == n_classes:
            prefix = f'{name}.' if name else ''
            dims[prefix + 'weight'] = 0
            for buffer, _ in module.named_buffers(recurse=False):
                if buffer.startswith('u'):
                    dims[prefix + buffer] = 1
    return dims


def transfer(net: nn.Module, source: dict, n_classes: int, label: str,
             class_map: Optional[List[int]] = None, copy: bool = True) -> List[Row]:
    """Copy what fits from `source` into `net` (in place); returns the table's rows. With
    `copy` False nothing is written: the rows of a copy that would happen (`net` may be on the
    meta device)."""
    rows: List[Row] = []
    dims = class_dims(net, n_classes)
    own = net.state_dict()
    with torch.no_grad():
        for key, target in own.items():
            name = f'{label}.{key}'
            have = source.get(key)
            if have is None:
                rows.append((name, 'initialized', 'not in the source'))
            elif key in dims and (class_map is not None or have.shape != target.shape):
                rows.append((name, *_classes(target, have, dims[key], class_map, copy)))
            elif have.shape == target.shape:
                if copy:
                    target.copy_(have)
                rows.append((name, 'copied', ''))
            else:
                rows.append((name, 'initialized', f'shape {tuple(have.shape)} in the source, '
                                                  f'{tuple(target.shape)} here'))
    rows += [(f'{label}.{key}', 'ignored', 'not in this model')
             for key in source if key not in own]
    return rows


NEW_CLASSES = 'classes in the source'  # the detail of class rows re-initialized on purpose


def _classes(target: torch.Tensor, have: torch.Tensor, dim: int,
             class_map: Optional[List[int]], copy: bool = True) -> Tuple[str, str]:
    """Map the class rows of one tensor; (action, detail)."""
    rest = [s for i, s in enumerate(have.shape) if i != dim]
    if rest != [s for i, s in enumerate(target.shape) if i != dim]:
        return 'initialized', f'shape {tuple(have.shape)} in the source, {tuple(target.shape)} here'
    if class_map is None:
        return 'initialized', f'{have.shape[dim]} {NEW_CLASSES}, {target.shape[dim]} here'
    pairs = [(new, old) for new, old in enumerate(class_map) if old >= 0]
    for new, old in pairs if copy else ():
        target.select(dim, new).copy_(have.select(dim, old))
    return 'mapped', f'{len(pairs)} of {target.shape[dim]} classes from the source'


def source_classes(G: nn.Module, G_state: dict, n_classes: int) -> int:
    """The number of classes of the source (from a class embedding of its G)."""
    for key, dim in class_dims(G, n_classes).items():
        if key in G_state:
            return int(G_state[key].shape[dim])
    return n_classes


def _transfer_both(config: dict, G: nn.Module, D: nn.Module, copy: bool) -> List[Row]:
    """The rows of copying --finetune_from into G and D (copying only when `copy`)."""
    G_state, D_state = source_states(config['finetune_from'])
    n = config['n_classes']
    class_map = (read_class_map(config['class_map'], n, source_classes(G, G_state, n))
                 if config['class_map'] else None)
    rows = transfer(G, G_state, n, 'G', class_map, copy)
    if D_state is not None:
        rows += transfer(D, D_state, n, 'D', class_map, copy)
    return rows


def uncopied(rows: List[Row]) -> List[Row]:
    """The rows of tensors that a copy leaves behind other than class rows: initialized here
    or ignored in the source."""
    return [row for row in rows if row[1] == 'ignored'
            or (row[1] == 'initialized' and NEW_CLASSES not in row[2])]


def check_copy(config: dict, G: nn.Module, D: nn.Module) -> None:
    """Refuse a fine-tuning start that copies less than every tensor but the class rows (the
    architectures differ), naming the tensors; --finetune_partial allows it. `G` and `D` may
    be on the meta device."""
    if not config['finetune_from'] or config['resume'] or config['finetune_partial']:
        return
    left = uncopied(_transfer_both(config, G, D, copy=False))
    if left:
        shown = '; '.join(f'{name} {action} ({detail})' for name, action, detail in left[:4])
        more = f'; and {len(left) - 4} more' if len(left) > 4 else ''
        raise ValueError(f"--finetune_from {config['finetune_from']!r}: {len(left)} tensors "
                         f"other than the class rows would not be copied: {shown}{more}. The "
                         f"architectures differ: drop the architecture flags that disagree "
                         f"with the source, or add --finetune_partial to start so on purpose")


def start_from(config: dict, models, say=print) -> List[Row]:
    """Load --finetune_from into models.G and models.D (and restart G_ema from G); print and
    return the table."""
    rows = _transfer_both(config, models.G, models.D, copy=True)
    if not any(name.startswith('D.') for name, _, _ in rows):
        say(f"Note: {config['finetune_from']!r} has no D: D starts from its initialization")
    if models.G_ema is not None:
        models.G_ema.load_state_dict(models.G.state_dict())  # the EMA starts afresh from G
    say(table(rows, config['finetune_from']))
    return rows


def table(rows: List[Row], source: str) -> str:
    """Counts per net and action, then every tensor that was not simply copied."""
    lines = [f'Fine-tuning from {source}:']
    for net in ('G', 'D'):
        counts: Dict[str, int] = {}
        for name, action, _ in rows:
            if name.startswith(net + '.'):
                counts[action] = counts.get(action, 0) + 1
        if counts:
            lines.append(f'  {net}: ' + ', '.join(f'{count} {action}'
                                                  for action, count in sorted(counts.items())))
    width = max((len(name) for name, action, _ in rows if action != 'copied'), default=0)
    lines += [f'  {name:<{width}}  {action:<11}  {detail}'.rstrip()
              for name, action, detail in rows if action != 'copied']
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# Frozen blocks
# ------------------------------------------------------------------------------------------------

def check_freeze(G: nn.Module, D: nn.Module, config: dict) -> None:
    """--freeze_G / --freeze_D within the number of residual blocks."""
    for flag, net in (('freeze_G', G), ('freeze_D', D)):
        if config[flag] > len(net.blocks):
            raise ValueError(f'--{flag} {config[flag]}: this model has {len(net.blocks)} '
                             f'residual blocks (valid: 0 to {len(net.blocks)})')


def freeze(G: nn.Module, D: nn.Module, config: dict) -> int:
    """Mark the parameters of the first --freeze_G / --freeze_D blocks frozen: they never get
    gradients (train_fns.toggle_grad leaves them off). Returns how many tensors."""
    count = 0
    for flag, net in (('freeze_G', G), ('freeze_D', D)):
        for block in net.blocks[:config[flag]]:
            for param in block.parameters():
                param.requires_grad = False
                param.frozen = True
                count += 1
    return count
