"""Synthetic TF-Hub BigGAN-deep modules (deepmind/biggan-deep-<res>/1) for the converter tests,
built from the published modules' naming rules and layer list, not from TFHub/deep.py's tables,
so the two can disagree.

`module_variable_shapes(resolution)` lists every variable with its TF shape (conv kernels HWIO,
dense weights (in, out), SN vectors (1, out), attention gamma (1,)) under the names a `hub.Module`
gives them (`module/...:0`), EMA (`/ema_0.9999`) variants included, plus the BN statistics
tables (51 truncations x channels) under `<BN scope>/accumulated_mean|accumulated_var`, where
the converter's .h5 dumps keep them (the modules hold them as graph constants).
`SyntheticDeepModule` fills them with random values; a raw (non-EMA) weight is minus its EMA
variant, computed only when read, so a test can tell which one the converter took.
"""
from typing import Dict, List, Tuple

from tfhub_synthetic import SyntheticModule, hub_names

EMA = 'ema_0.9999'
EMA_LEAVES = ('w', 'b', 'gamma', 'scale', 'offset')
CH = 128
DIM_Z = 128
EMBED = 128
N_CLASSES = 1000
N_STATS = 51

# The published layer lists: (upsample, in multiplier, out multiplier) per GBlock, attention
# before GBlock 8 in all three.
_LAYERS = {
    128: [(16, 16), (16, 8), (8, 4), (4, 2), (2, 1)],
    256: [(16, 16), (16, 8), (8, 8), (8, 4), (4, 2), (2, 1)],
    512: [(16, 16), (16, 8), (8, 8), (8, 4), (4, 2), (2, 1), (1, 1)],
}
ATTENTION_BEFORE = 8


def layers(resolution: int) -> List[Tuple[bool, int, int]]:
    """(upsample, in channels, out channels) of every GBlock: per stage (a, b), a block a -> a
    without upsampling, then a -> b with it."""
    out = []
    for a, b in _LAYERS[resolution]:
        out += [(False, a * CH, a * CH), (True, a * CH, b * CH)]
    return out


def _sn_layer(scope: str, w_shape: Tuple[int, ...], bias: bool) -> Dict[str, tuple]:
    shapes = {f'{scope}/w': w_shape, f'{scope}/u0': (1, w_shape[-1])}
    if bias:
        shapes[f'{scope}/b'] = (w_shape[-1],)
    return shapes


def _stats(scope: str, channels: int) -> Dict[str, tuple]:
    return {f'{scope}/accumulated_mean': (N_STATS, channels),
            f'{scope}/accumulated_var': (N_STATS, channels)}


def base_variable_shapes(resolution: int) -> Dict[str, tuple]:
    """Every variable and statistics table (no EMA variants), short names (no module/, :0)."""
    cond = DIM_Z + EMBED
    table = layers(resolution)
    shapes = {'linear/w': (N_CLASSES, EMBED)}
    shapes.update(_sn_layer('Generator/GenZ/G_linear', (cond, 4 * 4 * table[0][1]), True))
    for i, (_, c_in, c_out) in enumerate(table):
        block = 'Generator/GBlock' + (f'_{i}' if i else '')
        mid = c_in // 4
        for j, (k, a, b) in enumerate(((1, c_in, mid), (3, mid, mid), (3, mid, mid),
                                       (1, mid, c_out))):
            shapes.update(_sn_layer(f'{block}/conv{j}', (k, k, a, b), True))
        for j, c in enumerate((c_in, mid, mid, mid)):
            bn = f'{block}/BatchNorm' + (f'_{j}' if j else '')
            for part in ('scale', 'offset'):
                shapes.update(_sn_layer(f'{bn}/{part}', (cond, c), False))
            shapes.update(_stats(bn, c))
    c = table[ATTENTION_BEFORE][1]
    for part, (c_from, c_to) in (('theta', (c, c // 8)), ('phi', (c, c // 8)),
                                 ('g', (c, c // 2)), ('o_conv', (c // 2, c))):
        shapes.update(_sn_layer(f'Generator/attention/{part}', (1, 1, c_from, c_to), False))
    shapes['Generator/attention/gamma'] = (1,)
    shapes['Generator/BatchNorm/scale'] = (CH,)
    shapes['Generator/BatchNorm/offset'] = (CH,)
    shapes.update(_stats('Generator/BatchNorm', CH))
    shapes.update(_sn_layer('Generator/conv_to_rgb', (3, 3, CH, CH), True))
    return shapes


def module_variable_shapes(resolution: int) -> Dict[str, tuple]:
    """All variables under their `module/...:0` names, EMA variants included."""
    return hub_names(base_variable_shapes(resolution), EMA, EMA_LEAVES)


class SyntheticDeepModule(SyntheticModule):
    """A read-only `{module/...:0: np.ndarray}` of one deep module, values drawn from `seed`.

    EMA weights ~ N(0, 1), scaled down where SN does not bound them so that the images do not
    saturate: the class embedding by 0.05, the output BN's scale and offset by 0.2, the
    attention gamma by 0.5. Raw weights are minus the EMA ones; BN means ~ 0.1 N(0, 1),
    variances ~ U(0.5, 1.5), a different row per truncation; SN u ~ N(0, 1). `zeros=True`
    skips the random draw (for the shape-only tests).
    """

    SCALES = {'linear/': 0.05, 'Generator/BatchNorm/': 0.2, 'Generator/attention/gamma': 0.5}
    EMA, EMA_LEAVES = EMA, EMA_LEAVES
    variable_shapes = staticmethod(module_variable_shapes)
