"""Fine-tuning: a new run that starts from another model's weights (`train.py --finetune_from`).

The source is one of our weights folders, a released checkpoint folder of the original (both
hold `G.pth` and `D.pth`), or a bare G state_dict file such as a TF-Hub conversion (then D
starts from its initialization). Every tensor whose key and shape fit is copied. The
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
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

import checkpoints
from safe_pickle import safe_load

Row = Tuple[str, str, str]  # (net.key, action, detail)


# ------------------------------------------------------------------------------------------------
# The source
# ------------------------------------------------------------------------------------------------

def source_states(path: str) -> Tuple[dict, Optional[dict]]:
    """(G state, D state or None) of --finetune_from: a folder with G.pth (and D.pth), or a
    G state_dict file."""
    flag = f'--finetune_from {path!r}'
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


def check_source(config: dict) -> None:
    """The cheap checks of --finetune_from and --class_map, before any model is built."""
    path = config['finetune_from']
    if not path or config['resume']:
        return
    if os.path.isdir(path):
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


def read_class_map(path: str, n_classes: int, source_classes: int) -> List[int]:
    """--class_map: a JSON list whose entry i is the source class of new class i (null: none),
    or a JSON object {"new class": source class}. Returns one source class per new class,
    -1 where there is none."""
    flag = f'--class_map {path!r}'
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as error:
        raise FileNotFoundError(f'{flag}: cannot read it ({error.strerror})') from None
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
        if not isinstance(old, int) or not 0 <= old < source_classes:
            raise ValueError(f'{flag}: source class {old!r} for class {new} is not one of the '
                             f"source's 0 to {source_classes - 1}")
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
             class_map: Optional[List[int]] = None) -> List[Row]:
    """Copy what fits from `source` into `net` (in place); returns the table's rows."""
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
                rows.append((name, *_classes(target, have, dims[key], class_map)))
            elif have.shape == target.shape:
                target.copy_(have)
                rows.append((name, 'copied', ''))
            else:
                rows.append((name, 'initialized', f'shape {tuple(have.shape)} in the source, '
                                                  f'{tuple(target.shape)} here'))
    rows += [(f'{label}.{key}', 'ignored', 'not in this model')
             for key in source if key not in own]
    return rows


def _classes(target: torch.Tensor, have: torch.Tensor, dim: int,
             class_map: Optional[List[int]]) -> Tuple[str, str]:
    """Map the class rows of one tensor; (action, detail)."""
    rest = [s for i, s in enumerate(have.shape) if i != dim]
    if rest != [s for i, s in enumerate(target.shape) if i != dim]:
        return 'initialized', f'shape {tuple(have.shape)} in the source, {tuple(target.shape)} here'
    if class_map is None:
        return 'initialized', (f'{have.shape[dim]} classes in the source, '
                               f'{target.shape[dim]} here')
    pairs = [(new, old) for new, old in enumerate(class_map) if old >= 0]
    for new, old in pairs:
        target.select(dim, new).copy_(have.select(dim, old))
    return 'mapped', f'{len(pairs)} of {target.shape[dim]} classes from the source'


def source_classes(models, G_state: dict, n_classes: int) -> int:
    """The number of classes of the source (from a class embedding of its G)."""
    for key, dim in class_dims(models.G, n_classes).items():
        if key in G_state:
            return int(G_state[key].shape[dim])
    return n_classes


def start_from(config: dict, models, say=print) -> List[Row]:
    """Load --finetune_from into models.G and models.D (and restart G_ema from G); print and
    return the table."""
    G_state, D_state = source_states(config['finetune_from'])
    n = config['n_classes']
    class_map = (read_class_map(config['class_map'], n, source_classes(models, G_state, n))
                 if config['class_map'] else None)
    rows = transfer(models.G, G_state, n, 'G', class_map)
    if D_state is None:
        say(f"Note: {config['finetune_from']!r} has no D: D starts from its initialization")
    else:
        rows += transfer(models.D, D_state, n, 'D', class_map)
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
