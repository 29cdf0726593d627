"""Convert DeepMind's TF-Hub BigGAN generators (biggan-128/256/512, version 2) to
`BigGAN.Generator` state_dicts; with `--model deep`, the BigGAN-deep ones (biggan-deep-128/256/512,
version 1) to `BigGANdeep.Generator` state_dicts (the mapping is in TFHub/deep.py).

Per resolution: open the module's variables (`--module_path`: a module folder or an .h5 dump;
otherwise `<weights_dir>/biggan-<res>.h5`, downloaded from TF-Hub and dumped first when absent or
with `--redownload`), map them with `convert_variables` (a pure function of a {TF name: array}
mapping), load the result with strict=True into `BigGAN.Generator(**get_config(res))`, save
`<weights_dir>/biggan-<res>.pth` atomically (or, with `--out_format pretrained`, the folder
`<weights_dir>/biggan-<res>/`: config.json + G_ema.safetensors) and, with `--generate_samples`, draw
`<samples_dir>/biggan<res>_samples.jpg`.

    python TFHub/converter.py -r 128 --module_path biggan-128.h5 --generate_samples

The mapping, the differences between the two generators and what the tests verify are in
TFHub/README.md; the TF-side architecture is spelled out in TFHub/biggan_v1.py.
"""
import argparse
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import BigGAN  # noqa: E402
import pretrained_files  # noqa: E402
from TFHub.biggan_v1 import truncated_z_sample  # noqa: E402
from TFHub.tf_reader import (BOTTOM, EMA_LEAVES, EMA_SUFFIX, IGNORED_LEAVES,  # noqa: E402,F401
                             TF_EPS, ConversionError, Reader, attention, conv,
                             conditional_gains, g_linear, gblock_count, problems)
from TFHub.variables import (ModulePathError, atomic_path,  # noqa: E402
                             download_module, dump_to_hdf5, open_variables)

RESOLUTIONS = (128, 256, 512)
Z_DIMS = {128: 120, 256: 140, 512: 128}
ATTENTION = {128: '64', 256: '128', 512: '64'}   # after GBlock 3 / 4 / 3 (TF: before 4 / 5 / 4)
MODULE_URL = 'https://tfhub.dev/deepmind/biggan-{}/2'
CH = 96               # every TF-Hub BigGAN is ch 96
SHARED_DIM = 128      # class embedding size
N_CLASSES = 1000


def check_resolution(resolution: int) -> None:
    """ValueError unless a TF-Hub BigGAN module exists at `resolution`."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f'resolution={resolution!r}: TF-Hub BigGAN modules exist for '
                         f'{list(RESOLUTIONS)} only')


def get_config(resolution: int) -> dict:
    """`BigGAN.Generator` keyword arguments of the TF-Hub module at `resolution`.

    The flag equivalent: --G_ch 96 --G_shared --shared_dim 128 --hier --dim_z {120,140,128}
    --G_attn {64,128,64} --G_nl inplace_relu --BN_eps 1e-4 --SN_eps 1e-4 --G_output_eps 1e-4
    (TF's eps for the output BN too, which the original fixed at 1e-5).
    """
    check_resolution(resolution)
    return dict(G_ch=CH, dim_z=Z_DIMS[resolution], resolution=resolution,
                G_attn=ATTENTION[resolution], n_classes=N_CLASSES, G_shared=True,
                shared_dim=SHARED_DIM, hier=True, cross_replica=False, mybn=False,
                G_activation='inplace_relu', BN_eps=TF_EPS, SN_eps=TF_EPS, num_G_SVs=1,
                num_G_SV_itrs=1, G_init='ortho', skip_init=True, G_param='SN', norm_style='bn',
                G_output_eps=TF_EPS)


def module_resolution(variables: Mapping) -> Optional[int]:
    """The resolution whose module has as many GBlocks as `variables` (None if none matches)."""
    return {len(BigGAN.G_arch()[r]['in_channels']): r
            for r in RESOLUTIONS}.get(gblock_count(variables))


# ------------------------------------------------------------------------------------------------
# The mapping
# ------------------------------------------------------------------------------------------------

def _hyper_bn(src: Reader, out: Dict, key: str, scope: str, channels: int,
              z_chunk: int) -> None:
    stats = scope.replace('HyperBN', 'CrossReplicaBN')
    src.log(f'{key} <- {scope}, {stats} (columns to [class | z])')
    out[f'{key}.stored_mean'] = src.read(stats, 'accumulated_mean', (channels,))
    out[f'{key}.stored_var'] = src.read(stats, 'accumulated_var', (channels,))
    conditional_gains(src, out, key, scope, ('gamma', 'beta'), z_chunk + SHARED_DIM, z_chunk,
                      channels)


def _output_layer(src: Reader, out: Dict) -> None:
    scope = 'Generator/ScaledCrossReplicaBN'
    src.log(f'output_layer.0 <- {scope}, {scope}bn')
    out['output_layer.0.gain'] = src.read(scope, 'gamma', (CH,))
    out['output_layer.0.bias'] = src.read(scope, 'beta', (CH,))
    out['output_layer.0.stored_mean'] = src.read(f'{scope}bn', 'accumulated_mean', (CH,))
    out['output_layer.0.stored_var'] = src.read(f'{scope}bn', 'accumulated_var', (CH,))
    conv(src, out, 'output_layer.2', 'Generator/conv_2d', CH, 3, 3)


def _map(src: Reader, resolution: int) -> 'OrderedDict[str, torch.Tensor]':
    """Read the module through `src`, in the state_dict order of BigGAN.Generator."""
    arch = BigGAN.select_arch(BigGAN.G_arch(CH, ATTENTION[resolution]), resolution, 'TF-Hub G')
    z_chunk = Z_DIMS[resolution] // (len(arch['in_channels']) + 1)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    src.log('shared <- linear')
    # TF embeds classes with a bias-free linear of one-hot vectors, weight (classes, 128) as
    # (in, out): its rows are already the embedding table.
    out['shared.weight'] = src.read('linear', 'w', (N_CLASSES, SHARED_DIM))
    g_linear(src, out, 'Generator/G_Z/G_linear', z_chunk, arch['in_channels'][0])
    for i, (c_in, c_out) in enumerate(zip(arch['in_channels'], arch['out_channels'])):
        scope = 'Generator/GBlock' + (f'_{i}' if i else '')
        key = f'blocks.{i}.0'
        conv(src, out, f'{key}.conv1', f'{scope}/conv0', c_in, c_out, 3)
        conv(src, out, f'{key}.conv2', f'{scope}/conv1', c_out, c_out, 3)
        conv(src, out, f'{key}.conv_sc', f'{scope}/conv_sc', c_in, c_out, 1)
        _hyper_bn(src, out, f'{key}.bn1', f'{scope}/HyperBN', c_in, z_chunk)
        _hyper_bn(src, out, f'{key}.bn2', f'{scope}/HyperBN_1', c_out, z_chunk)
        if arch['attention'][arch['resolution'][i]]:
            attention(src, out, f'blocks.{i}.1', c_out)
    _output_layer(src, out)
    return out


def convert_variables(variables: Mapping, resolution: int, ema: bool = True,
                      log: Optional[Callable[[str], None]] = None
                      ) -> 'OrderedDict[str, torch.Tensor]':
    """Map the variables of the TF-Hub `resolution` module to a `BigGAN.Generator` state_dict.

    `variables` maps TF names (with or without `module/` and `:0`) to arrays. `ema` picks the
    `/ema_b999900` weights (the ones TF-Hub samples with); else the raw ones. The result holds
    every key of `BigGAN.Generator(**get_config(resolution))` in its order, `sv0` included, so
    it loads with strict=True. ConversionError lists every missing or misshapen variable.
    """
    check_resolution(resolution)
    found = module_resolution(variables)
    if found is not None and found != resolution:
        raise ConversionError(f'the variables are those of the biggan-{found} module, not '
                              f'biggan-{resolution}: convert them with resolution {found}')
    dry_run = Reader(variables, ema, dry=True)
    _map(dry_run, resolution)
    if dry_run.missing:
        raise ConversionError(problems(dry_run, resolution))
    src = Reader(variables, ema, log)
    out = _map(src, resolution)
    if src.misshapen:
        raise ConversionError(problems(src, resolution))
    ignored = sorted(set(src.names) - src.used)
    src.log(f'read {len(src.used)} variables; {len(ignored)} not needed (the other EMA variant, '
            f'{", ".join(IGNORED_LEAVES)})')
    unknown = [n for n in ignored if n.rsplit('/', 1)[-1] not in IGNORED_LEAVES + EMA_LEAVES
               and not n.endswith(EMA_SUFFIX)]
    if unknown:
        src.log(f'unexpected variables, not converted: {", ".join(unknown)}')
    return out


# ------------------------------------------------------------------------------------------------
# Building, saving, sampling
# ------------------------------------------------------------------------------------------------

def build_generator(resolution: int, state_dict: Optional[Mapping] = None) -> BigGAN.Generator:
    """`BigGAN.Generator(**get_config(resolution))`, loaded strictly from `state_dict` if given.

    The config's G_output_eps (1e-4, TF's) is not part of the state_dict: a generator built
    without it keeps the original's 1e-5, which changes the output BN's scale
    1 / sqrt(var + eps) by a factor of about 1 + 4.5e-5 / var per channel.
    """
    G = BigGAN.Generator(**get_config(resolution))
    if state_dict is not None:
        G.load_state_dict(state_dict, strict=True)
    return G


def save_state_dict(state_dict: Mapping, path: str) -> None:
    """torch.save to a temporary file beside `path`, then rename it into place."""
    with atomic_path(path) as tmp:
        torch.save(dict(state_dict), tmp)


def generate_samples(G: nn.Module, batch_size: int, path: str, seed: Optional[int] = None,
                     parallel: bool = False, device: Optional[str] = None,
                     truncation: Optional[float] = None) -> torch.Tensor:
    """Draw one sheet: eval mode, z ~ N(0, 1) (or, given `truncation`, TF-Hub's noise
    `truncation * truncnorm(-2, 2)`), uniform random classes; saved with min-max normalization
    per image. Returns the images (on the CPU)."""
    from torchvision.utils import save_image
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    if truncation is None:
        z = torch.randn(batch_size, G.dim_z, generator=gen)
    else:
        z = torch.from_numpy(truncated_z_sample(batch_size, G.dim_z, truncation, seed=seed))
    y = torch.randint(0, G.n_classes, (batch_size,), generator=gen)
    G = G.to(device).eval()
    net = nn.DataParallel(G) if parallel and torch.cuda.device_count() > 1 else G
    with torch.no_grad():
        images = net(z.to(device), G.shared(y.to(device))).float().cpu()
    with atomic_path(path) as tmp:
        save_image(images, tmp, normalize=True, scale_each=True)
    return images


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    """argparse type of --batch_size."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not a positive integer')
    return value


def _deep():
    """TFHub.deep, the BigGAN-deep mapping. It builds on this module's reader, so it is imported
    when first needed, not at the top."""
    from TFHub import deep
    return deep


def build_parser() -> argparse.ArgumentParser:
    """The original converter's flags, plus --module_path, --seed, --tf_output_eps, --model,
    --truncation and --out_format."""
    parser = argparse.ArgumentParser(
        description='Convert the TF-Hub BigGAN generators to BigGAN.Generator state_dicts, and '
                    'the BigGAN-deep ones (--model deep) to BigGANdeep.Generator state_dicts.')
    parser.add_argument('--model', type=str, default=None, choices=('biggan', 'deep'),
                        help="which modules: biggan-<res> (BigGAN, the default) or "
                             "biggan-deep-<res> (BigGAN-deep); with --module_path: the kind "
                             "found there")
    parser.add_argument('--resolution', '-r', type=int, default=None, choices=RESOLUTIONS,
                        help='module to convert; all three if not given (with --module_path: '
                             'the module found there)')
    parser.add_argument('--truncation', type=float, default=None,
                        help='BigGAN-deep only: the truncation k/50 whose BN statistics the '
                             'converted G keeps (default 1); the file gets a -t<value> suffix')
    parser.add_argument('--redownload', action='store_true',
                        help='download the module again and overwrite the .h5 dump')
    parser.add_argument('--weights_dir', type=str, default='pretrained_weights',
                        help='where the .h5 dumps and the converted .pth files go')
    parser.add_argument('--samples_dir', type=str, default='pretrained_samples',
                        help='where --generate_samples writes its sheets')
    parser.add_argument('--no_ema', action='store_true',
                        help='convert the raw weights instead of the EMA ones')
    parser.add_argument('--verbose', action='store_true',
                        help='print every layer mapping and the variables left unread')
    parser.add_argument('--generate_samples', action='store_true',
                        help='draw a sample sheet with each converted generator')
    parser.add_argument('--batch_size', type=_positive_int, default=64,
                        help='images on the sample sheet')
    parser.add_argument('--parallel', action='store_true',
                        help='sample on all visible GPUs (nn.DataParallel)')
    parser.add_argument('--module_path', type=str, default=None,
                        help='a local TF-Hub module folder or an .h5 dump of its variables '
                             '(no download)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the sample sheet')
    # The converted generator now always has TF's output BN eps (get_config's G_output_eps).
    parser.add_argument('--out_format', type=str, default='pth', choices=('pth', 'pretrained'),
                        help='pth: a G state_dict <weights_dir>/biggan-<res>.pth (the '
                             "original's); pretrained: a folder <weights_dir>/biggan-<res>/ "
                             'with config.json and G_ema.safetensors (G.safetensors with '
                             '--no_ema), for pretrained.from_pretrained and sample.py '
                             '--G_weights (needs safetensors)')
    parser.add_argument('--tf_output_eps', action='store_true',
                        help='no effect, kept for old command lines: the sheet always uses '
                             "TF's output BN eps 1e-4")
    return parser


def _name(model: str, resolution: int) -> str:
    return _deep().module_name(resolution) if model == 'deep' else f'biggan-{resolution}'


def _source(resolution: int, model: str, args: argparse.Namespace) -> str:
    """The module path to read for `resolution`, downloading and dumping it when needed."""
    if args.module_path is not None:
        return args.module_path
    h5_path = os.path.join(args.weights_dir, f'{_name(model, resolution)}.h5')
    if args.redownload or not os.path.exists(h5_path):
        url = (_deep().MODULE_URL if model == 'deep' else MODULE_URL).format(resolution)
        folder = download_module(url)
        with open_variables(folder) as variables:
            if model == 'deep':   # the BN statistics are graph constants: dump them too
                variables = _deep().with_folder_statistics(variables, folder)
            dump_to_hdf5(variables, h5_path)
        print(f'dumped {folder} to {h5_path}')
    return h5_path


def _found_model(variables: Mapping, asked: Optional[str], source: str) -> str:
    """The kind of module in `variables` ('deep' or 'biggan'); ConversionError if not `asked`."""
    found = 'deep' if _deep().is_deep_module(variables) else 'biggan'
    if asked is not None and asked != found:
        kind = 'a BigGAN-deep' if found == 'deep' else 'a BigGAN (not BigGAN-deep)'
        raise ConversionError(f'{source} holds {kind} module: pass --model {found}')
    return found


def convert(resolution: Optional[int], args: argparse.Namespace) -> str:
    """Convert one module as the flags say; return the path of the saved state_dict."""
    log = print if args.verbose else None
    deep = _deep()
    model = args.model or 'biggan'
    if model == 'deep' and resolution is not None and deep.missing_arch_message(resolution):
        raise ConversionError(deep.missing_arch_message(resolution))  # before any download
    source = _source(resolution, model, args)
    with open_variables(source) as variables:
        model = _found_model(variables, args.model, source)
        if model == 'deep':
            variables = deep.with_folder_statistics(variables, source)
        if resolution is None:
            resolution = (deep.module_resolution if model == 'deep'
                          else module_resolution)(variables)
            if resolution is None:
                kind = 'BigGAN-deep' if model == 'deep' else 'BigGAN'
                raise ConversionError(f'{source} holds no {kind} generator of a known '
                                      f'resolution; pass --resolution')
        name = _name(model, resolution)
        print(f'{name}: converting {source}')
        if model == 'deep':
            if deep.missing_arch_message(resolution):
                raise ConversionError(deep.missing_arch_message(resolution))
            state_dict = deep.convert_variables(variables, resolution, ema=not args.no_ema,
                                                truncation=args.truncation or 1.0, log=log)
        else:
            state_dict = convert_variables(variables, resolution, ema=not args.no_ema, log=log)
    build = deep.build_generator if model == 'deep' else build_generator
    G = build(resolution, state_dict)
    suffix = f'-t{args.truncation:g}' if args.truncation not in (None, 1.0) else ''
    if args.out_format == 'pretrained':
        path = os.path.join(args.weights_dir, f'{name}{suffix}')
        pretrained_files.save(path, **{'G' if args.no_ema else 'G_ema': G},
                              source=f'TF-Hub {name}{suffix}')
    else:
        path = os.path.join(args.weights_dir, f'{name}{suffix}.pth')
        save_state_dict(state_dict, path)
    print(f'{name}: saved {path}')
    if args.generate_samples:
        # biggan128_samples.jpg as the original names it; biggan-deep128_samples.jpg likewise.
        stem = f'biggan-deep{resolution}' if model == 'deep' else f'biggan{resolution}'
        sheet = os.path.join(args.samples_dir, f'{stem}{suffix}_samples.jpg')
        # A deep G holds the BN statistics of one truncation: draw TF-Hub's noise of that one.
        truncation = (args.truncation or 1.0) if model == 'deep' else None
        generate_samples(G, args.batch_size, sheet, seed=args.seed, parallel=args.parallel,
                         truncation=truncation)
        print(f'{name}: samples in {sheet}')
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.module_path is not None and args.redownload:
        parser.error('--redownload fetches the module from TF-Hub; it cannot be combined with '
                     '--module_path')
    if args.out_format == 'pretrained':
        try:
            pretrained_files.require_safetensors()
        except ValueError as error:
            parser.error(f'--out_format pretrained: {error}')
    if args.truncation is not None:
        if args.model == 'biggan' or (args.model is None and args.module_path is None):
            parser.error('--truncation picks the BN statistics of a BigGAN-deep module (--model '
                         'deep); a BigGAN module has one set')
        try:
            _deep().statistics_row(args.truncation)
        except ValueError as error:
            parser.error(f'--truncation: {error}')
    if args.resolution is not None or args.module_path is not None:
        todo = [args.resolution]
    else:
        todo = list(RESOLUTIONS)
    try:
        for resolution in todo:
            convert(resolution, args)
    except (ConversionError, ModulePathError, OSError, ImportError) as error:
        parser.error(f'--module_path: {error}' if args.module_path is not None else str(error))
    return 0


if __name__ == '__main__':
    # Run the package's copy of this module, the one TFHub.deep imports, so that both raise and
    # catch the same ConversionError.
    from TFHub import converter
    sys.exit(converter.main())
