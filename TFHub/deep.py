"""Convert DeepMind's TF-Hub BigGAN-deep generators (biggan-deep-128/256/512, version 1) to
`BigGANdeep.Generator` state_dicts.

The same approach as `converter.py` for the BigGAN modules: `convert_variables` is a pure function
of a {TF name: array} mapping, every variable is taken by name and checked against the shape the
module has, and the result holds every key of `BigGANdeep.Generator(**get_config(res))` in its
order, so it loads with strict=True. The command line is `converter.py --model deep`.

The modules, as data (`MODULES`, `CH`, ...): ch 128, dim_z 128, a 128-d class embedding, two
bottleneck blocks per stage (G_depth 2), self-attention at 64 x 64, eps 1e-4 for every BN and SN.

How the TF graph differs from `BigGANdeep.Generator`, and what the mapping does about it:

1. Conditioning vector: TF feeds cat([z, class embedding]) to G_linear and to every BN;
   BigGANdeep.Generator uses cat([class embedding, z]): the input columns of those weights move
   the class half first.
2. G_linear's output is an NHWC map (4, 4, 16 ch): its rows go to channel-major (as for BigGAN).
3. The output conv `conv_to_rgb` has 128 output channels, spectrally normalized together, of
   which the graph keeps the first 3; BigGANdeep's has 3. The 3 kept rows are taken, and their
   SN vector u is set from TF's power iteration; the two sigmas (TF's over 128 rows, ours over 3)
   differ, and since ReLU commutes with a positive scale, their ratio is folded into the output
   BN's gain and bias: the same images while the SN vectors are not updated (eval mode).
4. BN statistics: the modules keep one table per BN of statistics for the 51 truncations k / 50
   (k = 0..50) as constants in the module graph, not among the variables; the converted G holds
   one row of each, so it is the TF-Hub generator at one truncation (`truncation`, default 1).
   `extract_bn_statistics` reads the tables from a module folder (TensorFlow); an .h5 dump written
   by `converter.py --model deep` keeps them as `<BN scope>/accumulated_mean` / `accumulated_var`
   of shape (51, C). A (C,) vector under those names (statistics of one truncation) is taken
   as it is.
5. The output BN's eps: TF 1e-4, BigGANdeep's output layer 1e-5 by default; `get_config` sets
   G_output_eps 1e-4 (flag --G_output_eps), as for BigGAN.

Not part of the graph: the noise. TF-Hub samples z as `truncation * truncnorm(-2, 2)`
(`biggan_v1.truncated_z_sample`, the same for both families) and feeds the truncation to the
module, which uses it only to pick the BN statistics.
"""
import os
import re
from collections import ChainMap, OrderedDict
from collections.abc import Mapping
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import BigGANdeep
from TFHub.tf_reader import (BOTTOM, IGNORED_LEAVES, TF_EPS, ConversionError, Reader, attention,
                             conditional_gains, conv, g_linear, gblock_count, problems,
                             put_sn, sigma)
from TFHub.variables import canonical_name, import_optional

# ------------------------------------------------------------------------------------------------
# The modules, as data
# ------------------------------------------------------------------------------------------------

RESOLUTIONS = (128, 256, 512)
MODULES = {  # resolution: channel multipliers (x CH) entering and leaving each stage
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
    512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1]),
}
CH = 128
DIM_Z = 128
SHARED_DIM = 128      # class embedding size
N_CLASSES = 1000
G_DEPTH = 2           # blocks per stage: the first keeps the width, the second upsamples
ATTENTION = 64        # attention after the stage that reaches 64 x 64 (TF: before GBlock_8)
EPS = TF_EPS          # every BN and SN
RGB_CHANNELS = CH     # conv_to_rgb's output channels in TF; the graph keeps the first 3
N_STATS = 51          # BN statistics per truncation k / (N_STATS - 1), k = 0..N_STATS - 1
MODULE_URL = 'https://tfhub.dev/deepmind/biggan-deep-{}/1'
EMA_SUFFIX = 'ema_0.9999'
EMA_LEAVES = ('w', 'b', 'gamma', 'scale', 'offset')   # the variables that have an EMA variant
STATS_LEAVES = ('accumulated_mean', 'accumulated_var')


def check_resolution(resolution: int) -> None:
    """ValueError unless a TF-Hub BigGAN-deep module exists at `resolution`."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f'resolution={resolution!r}: TF-Hub BigGAN-deep modules exist for '
                         f'{list(RESOLUTIONS)} only')


def module_name(resolution: int) -> str:
    return f'biggan-deep-{resolution}'


def get_config(resolution: int) -> dict:
    """`BigGANdeep.Generator` keyword arguments of the TF-Hub module at `resolution`.

    The flag equivalent: --model BigGANdeep --G_ch 128 --G_depth 2 --dim_z 128 --shared_dim 128
    --G_shared --hier --G_attn 64 --G_nl inplace_relu --BN_eps 1e-4 --SN_eps 1e-4
    --G_output_eps 1e-4 (TF's eps for the output BN too; BigGANdeep's default is 1e-5).
    """
    check_resolution(resolution)
    return dict(G_ch=CH, G_depth=G_DEPTH, dim_z=DIM_Z, resolution=resolution,
                G_attn=str(ATTENTION), n_classes=N_CLASSES, G_shared=True,
                shared_dim=SHARED_DIM, hier=True, cross_replica=False, mybn=False,
                G_activation='inplace_relu', BN_eps=EPS, SN_eps=EPS, num_G_SVs=1,
                num_G_SV_itrs=1, G_init='ortho', skip_init=True, G_param='SN', norm_style='bn',
                G_output_eps=EPS)


def blocks(resolution: int) -> List[Tuple[str, int, int, bool]]:
    """(TF scope, in channels, out channels, attention after it) of each GBlock, in order."""
    ins, outs = MODULES[resolution]
    out = []
    for stage, (m_in, m_out) in enumerate(zip(ins, outs)):
        for depth in range(G_DEPTH):
            index = stage * G_DEPTH + depth
            last = depth == G_DEPTH - 1
            reaches = BOTTOM * 2 ** (stage + 1)     # the stage's output resolution
            out.append(('Generator/GBlock' + (f'_{index}' if index else ''), m_in * CH,
                        (m_out if last else m_in) * CH, last and reaches == ATTENTION))
    return out


def bn_scopes(resolution: int) -> List[Tuple[str, int]]:
    """(TF scope, channels) of every BN in the order the graph runs them: four per GBlock
    (BatchNorm, BatchNorm_1..3), then the output BN."""
    out = []
    for scope, c_in, _, _ in blocks(resolution):
        hidden = c_in // 4
        out += [(f'{scope}/BatchNorm', c_in)] + [(f'{scope}/BatchNorm_{j}', hidden)
                                                 for j in (1, 2, 3)]
    return out + [('Generator/BatchNorm', CH)]


def is_deep_module(variables: Mapping) -> bool:
    """Whether `variables` are those of a BigGAN-deep module (its own scope names)."""
    return any(re.match(r'Generator/(GenZ|conv_to_rgb)/', canonical_name(name))
               for name in variables)


def module_resolution(variables: Mapping) -> Optional[int]:
    """The resolution whose deep module has as many GBlocks as `variables` (None if none)."""
    return {len(MODULES[r][0]) * G_DEPTH: r for r in RESOLUTIONS}.get(gblock_count(variables))


def statistics_row(truncation: float) -> int:
    """The row of the BN statistics tables for `truncation`: k for k / 50, k = 1..50.

    Other values fall between two rows, which the graph mixes (so does the public PyTorch port
    of these modules); that is not reproduced here, so they are refused.
    """
    steps = N_STATS - 1
    k = round(truncation * steps) if np.isfinite(truncation) else -1
    if not (1 <= k <= steps and abs(truncation * steps - k) < 1e-6):
        raise ValueError(f'truncation={truncation!r}: the BigGAN-deep modules store BN statistics '
                         f'for truncations k/{steps} only (0.02, 0.04, ..., 1.0); pick one')
    return k


# ------------------------------------------------------------------------------------------------
# The mapping
# ------------------------------------------------------------------------------------------------

def _statistics(src: Reader, scope: str, channels: int, row: int) -> Dict[str, torch.Tensor]:
    """stored_mean / stored_var of one BN: row `row` of a (N_STATS, C) table, or a (C,) vector."""
    out = {}
    for ours, leaf in zip(('stored_mean', 'stored_var'), STATS_LEAVES):
        name = f'{scope}/{leaf}'
        shape: Tuple[int, ...] = (channels,)
        if not src.dry and name in src.names:
            ndim = np.ndim(src.variables[src.names[name]])
            shape = (N_STATS, channels) if ndim == 2 else shape
        value = src.read(scope, leaf, shape)   # of `shape`, zeros when noted as misshapen
        out[ours] = (value[row] if len(shape) == 2 else value).contiguous()
    return out


def _conditional_bn(src: Reader, out: Dict, key: str, scope: str, channels: int,
                    row: int) -> None:
    src.log(f'{key} <- {scope} (columns to [class | z])')
    for name, value in _statistics(src, scope, channels, row).items():
        out[f'{key}.{name}'] = value
    conditional_gains(src, out, key, scope, ('scale', 'offset'), DIM_Z + SHARED_DIM, DIM_Z,
                      channels)


def _block(src: Reader, out: Dict, key: str, scope: str, c_in: int, c_out: int,
           row: int) -> None:
    hidden = c_in // 4
    # TF's conv0..conv3 are BigGANdeep's conv1..conv4; BatchNorm, BatchNorm_1..3 its bn1..bn4.
    for index, (a, b, k) in enumerate(((c_in, hidden, 1), (hidden, hidden, 3),
                                       (hidden, hidden, 3), (hidden, c_out, 1))):
        conv(src, out, f'{key}.conv{index + 1}', f'{scope}/conv{index}', a, b, k)
    for index, channels in enumerate((c_in, hidden, hidden, hidden)):
        bn = f'{scope}/BatchNorm' + (f'_{index}' if index else '')
        _conditional_bn(src, out, f'{key}.bn{index + 1}', bn, channels, row)


def _output_layer(src: Reader, out: Dict, row: int) -> None:
    scope, conv = 'Generator/BatchNorm', 'Generator/conv_to_rgb'
    src.log(f'output_layer <- {scope}, {conv} (first 3 of {RGB_CHANNELS} output channels; '
            f'the SN ratio folded into the BN)')
    gain = src.read(scope, 'scale', (CH,))
    bias = src.read(scope, 'offset', (CH,))
    stats = _statistics(src, scope, CH, row)
    kernel = src.read(conv, 'w', (3, 3, CH, RGB_CHANNELS)).permute(3, 2, 0, 1)  # HWIO -> OIHW
    u_tf = src.read(conv, 'u0', (1, RGB_CHANNELS), any_layout=True)
    rgb = kernel[:3].contiguous()
    # TF's one power-iteration step over all 128 rows gives v; v's image under the 3 kept rows,
    # normalized, is a u close to their top singular vector (what SN would converge to).
    v = F.normalize(u_tf @ kernel.reshape(RGB_CHANNELS, -1), eps=EPS)
    u_rgb = F.normalize(v @ rgb.reshape(3, -1).t(), eps=EPS)
    if not src.dry and float(u_rgb.norm()) < 0.5:   # v orthogonal to the kept rows: any u does
        u_rgb = torch.full((1, 3), 3 ** -0.5)
    # The graph divides the kernel by sigma over 128 rows; BigGANdeep divides the 3 kept rows by
    # their own sigma. relu(s * x) = s * relu(x) for s > 0, so scaling the BN's output by
    # s = sigma_3 / sigma_128 makes conv(relu(bn(x)), rgb / sigma_3) = TF's conv exactly.
    sigma_3, sigma_tf = sigma(rgb, u_rgb), sigma(kernel, u_tf.reshape(1, -1))
    # An all-zero kernel (TF would divide by 0) keeps the BN as it is rather than turn it NaN.
    ratio = torch.where(sigma_tf > 0, sigma_3 / sigma_tf, torch.ones_like(sigma_tf))
    out['output_layer.0.gain'] = gain * ratio
    out['output_layer.0.bias'] = bias * ratio
    out['output_layer.0.stored_mean'] = stats['stored_mean']
    out['output_layer.0.stored_var'] = stats['stored_var']
    put_sn(out, 'output_layer.2', rgb, src.read(conv, 'b', (RGB_CHANNELS,))[:3], u_rgb)


def _map(src: Reader, resolution: int, row: int) -> 'OrderedDict[str, torch.Tensor]':
    """Read the module through `src`, in the state_dict order of BigGANdeep.Generator."""
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    src.log('shared <- linear')
    # The one-hot class linear (classes, 128) as (in, out): its rows are the embedding table.
    out['shared.weight'] = src.read('linear', 'w', (N_CLASSES, SHARED_DIM))
    table = blocks(resolution)
    g_linear(src, out, 'Generator/GenZ/G_linear', DIM_Z + SHARED_DIM, table[0][1], DIM_Z)
    for index, (scope, c_in, c_out, has_attention) in enumerate(table):
        _block(src, out, f'blocks.{index}.0', scope, c_in, c_out, row)
        if has_attention:
            attention(src, out, f'blocks.{index}.1', c_out)
    _output_layer(src, out, row)
    return out


def convert_variables(variables: Mapping, resolution: int, ema: bool = True,
                      truncation: float = 1.0, log: Optional[Callable[[str], None]] = None
                      ) -> 'OrderedDict[str, torch.Tensor]':
    """Map the variables of the TF-Hub `biggan-deep-<resolution>` module to a
    `BigGANdeep.Generator` state_dict, with the BN statistics of `truncation`.

    `variables` maps TF names (with or without `module/` and `:0`) to arrays, BN statistics
    included (see the module docstring). `ema` picks the `/ema_0.9999` weights (the ones TF-Hub
    samples with); else the raw ones. The result holds every key of
    `BigGANdeep.Generator(**get_config(resolution))` in its order, `sv0` included, so it loads
    with strict=True. ConversionError lists every missing or misshapen variable.
    """
    check_resolution(resolution)
    row = statistics_row(truncation)
    if not is_deep_module(variables) and len(variables):
        raise ConversionError('the variables are not those of a BigGAN-deep module (no '
                              'Generator/GenZ or Generator/conv_to_rgb scope): convert BigGAN '
                              'modules with --model biggan (converter.convert_variables)')
    found = module_resolution(variables)
    if found is not None and found != resolution:
        raise ConversionError(f'the variables are those of the {module_name(found)} module, '
                              f'not {module_name(resolution)}: convert them with resolution '
                              f'{found}')
    reader = dict(ema=ema, ema_suffix=EMA_SUFFIX, ema_leaves=EMA_LEAVES)
    dry_run = Reader(variables, dry=True, **reader)
    _map(dry_run, resolution, row)
    if dry_run.missing:
        message = problems(dry_run, resolution, module_name(resolution))
        if any(name.rsplit('/', 1)[-1] in STATS_LEAVES for name in dry_run.missing):
            message += ('; the BN statistics are constants of the module graph, not variables: '
                        'convert from the module folder (needs TensorFlow) or from an .h5 dump '
                        'that `converter.py --model deep` wrote from one')
        raise ConversionError(message)
    src = Reader(variables, log=log, **reader)
    out = _map(src, resolution, row)
    if src.misshapen:
        raise ConversionError(problems(src, resolution, module_name(resolution)))
    ignored = sorted(set(src.names) - src.used)
    src.log(f'read {len(src.used)} variables; {len(ignored)} not needed (the other EMA variant, '
            f'{", ".join(IGNORED_LEAVES)})')
    unknown = [n for n in ignored if n.rsplit('/', 1)[-1] not in IGNORED_LEAVES + EMA_LEAVES
               and not n.endswith(EMA_SUFFIX)]
    if unknown:
        src.log(f'unexpected variables, not converted: {", ".join(unknown)}')
    return out


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------

def missing_arch_message(resolution: int) -> Optional[str]:
    """Why BigGANdeep cannot build the `resolution` module's G, or None when it can."""
    if resolution in BigGANdeep.G_arch(CH, '0'):
        return None
    ins, outs = MODULES[resolution]
    return (f'BigGANdeep.G_arch has no {resolution} table, so {module_name(resolution)} '
            f'converts but cannot be built: it needs the entry {resolution}: in_channels '
            f'{ins}, out_channels {outs} (x ch), upsample at every stage, attention keys '
            f'{[2 ** i for i in range(3, 3 + len(ins))]} (the BigGAN.G_arch {resolution} table)')


def build_generator(resolution: int,
                    state_dict: Optional[Mapping] = None) -> BigGANdeep.Generator:
    """`BigGANdeep.Generator(**get_config(resolution))` (output BN eps 1e-4, TF's), loaded
    strictly from `state_dict` if given."""
    check_resolution(resolution)
    problem = missing_arch_message(resolution)
    if problem:
        raise ValueError(problem)
    G = BigGANdeep.Generator(**get_config(resolution))
    if state_dict is not None:
        G.load_state_dict(state_dict, strict=True)
    return G


# ------------------------------------------------------------------------------------------------
# BN statistics from a module folder
# ------------------------------------------------------------------------------------------------

def assign_statistics(tables: Sequence[np.ndarray], resolution: int) -> Dict[str, np.ndarray]:
    """Name the BN statistics tables of the `resolution` module, given in graph order (mean,
    variance, mean, variance, ... for the BNs in the order they run): {<scope>/accumulated_mean
    and accumulated_var: table}. ConversionError when the count or a shape does not fit."""
    scopes = bn_scopes(resolution)
    if len(tables) != 2 * len(scopes):
        raise ConversionError(f'found {len(tables)} BN statistics tables, but '
                              f'{module_name(resolution)} has {len(scopes)} BNs with a mean and '
                              f'a variance table each ({2 * len(scopes)})')
    out = {}
    for index, (scope, channels) in enumerate(scopes):
        for offset, leaf in enumerate(STATS_LEAVES):
            table = np.asarray(tables[2 * index + offset], dtype=np.float32)
            if table.shape != (N_STATS, channels):
                raise ConversionError(f'BN statistics table {2 * index + offset} ({scope}/{leaf})'
                                      f' has shape {table.shape}, expected '
                                      f'{(N_STATS, channels)}')
            out[f'{scope}/{leaf}'] = table
    return out


def extract_bn_statistics(folder: str, resolution: int) -> Dict[str, np.ndarray]:
    """The BN statistics tables of a module folder by variable-style name (needs TensorFlow).

    They are the graph's (51, C) `stack` tensors, constants that need neither inputs nor
    variables, in the order of their names' numbers (mean, then variance, per BN in the order
    the BNs run). `assign_statistics` checks their count and every shape.
    """
    tf = import_optional('tensorflow', f'Reading the BN statistics of the module in {folder}')
    from tensorflow.core.protobuf import saved_model_pb2
    with open(os.path.join(folder, 'saved_model.pb'), 'rb') as handle:
        saved = saved_model_pb2.SavedModel.FromString(handle.read())
    # One meta graph per tag set; the default (no tags) is the one the module samples with.
    metas = [m for m in saved.meta_graphs if not m.meta_info_def.tags] or list(saved.meta_graphs)
    with tf.Graph().as_default() as graph:
        tf.compat.v1.import_graph_def(metas[0].graph_def, name='')
        found = []
        for op in graph.get_operations():
            match = re.fullmatch(r'(?:.*/)?stack(?:_(\d+))?', op.name)
            shape = op.outputs[0].shape if len(op.outputs) == 1 else None
            if match and shape is not None and shape.rank == 2 and shape[0] == N_STATS:
                found.append((int(match.group(1) or 0), op.outputs[0]))
        found.sort(key=lambda item: item[0])
        with tf.compat.v1.Session(graph=graph) as session:
            tables = session.run([tensor for _, tensor in found])
    return assign_statistics(tables, resolution)


def with_folder_statistics(variables: Mapping, path: str) -> Mapping:
    """`variables` of a module folder with its BN statistics added (an .h5 dump has them)."""
    if not os.path.isdir(path):
        return variables
    resolution = module_resolution(variables)
    if resolution is None:
        raise ConversionError(f'{path} holds no BigGAN-deep generator of a known resolution')
    return ChainMap(extract_bn_statistics(path, resolution), variables)
