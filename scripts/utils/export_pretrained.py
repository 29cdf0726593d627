"""Export a training run's generator as a pretrained folder (config.json + G_ema.safetensors) to
pass around; pretrained.from_pretrained and sample.py --G_weights load it.

    python scripts/utils/export_pretrained.py --weights_root runs/demo/weights \\
        --experiment_name demo [--load_weights best0] [--no_ema] [--all] [--out DIR]

Writes G_ema.safetensors (G.safetensors with --no_ema or for a run without --ema); with --all,
every network of the copy: G_ema, G and D (what train.py --finetune_from uses). The default
folder is <weights_root>/<experiment_name>[_<load_weights>]_pretrained. Works on the original's
weights folders too. Needs safetensors (pip install safetensors).
"""
import argparse
import os
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import checkpoints  # noqa: E402
import pretrained  # noqa: E402
import pretrained_files  # noqa: E402
import utils  # noqa: E402


def export(weights_root: str, experiment_name: str, load_weights: str = '',
           no_ema: bool = False, everything: bool = False, out: str = '') -> str:
    """Write the pretrained folder of one copy of a run; return its path."""
    pretrained_files.require_safetensors()  # before any loading
    suffix = load_weights or None
    folder = checkpoints.checkpoint_folder(weights_root, experiment_name, suffix)
    has_ema = os.path.isfile(os.path.join(folder, checkpoints.file_name('G_ema', suffix)))
    if no_ema and everything:
        raise ValueError('--no_ema and --all: --all writes G_ema, G and D; leave one out')
    nets = {}
    if everything:
        nets['G'] = pretrained.from_pretrained(folder, ema=False, load_weights=load_weights)
        if has_ema:
            nets['G_ema'] = pretrained.from_pretrained(folder, ema=True,
                                                       load_weights=load_weights)
        config = pretrained.run_config(folder, False, load_weights)
        nets['D'] = utils.model_module(config).Discriminator(**{**config, 'skip_init': True})
        checkpoints.load_into(nets['D'], os.path.join(folder, checkpoints.file_name('D', suffix)))
    else:
        ema = False if no_ema else None
        nets['G_ema' if has_ema and not no_ema else 'G'] = pretrained.from_pretrained(
            folder, ema=ema, load_weights=load_weights)
    out = out or f"{folder}{'_' + load_weights if load_weights else ''}_pretrained"
    source = f"run {experiment_name}, {load_weights or 'latest'} copy"
    pretrained_files.save(out, source=source, **nets)
    print(f"Wrote {', '.join(pretrained_files.weights_file(n) for n in nets)} and "
          f'{pretrained_files.CONFIG} to {out}')
    return out


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--weights_root', default='weights', help='as train.py (default: weights)')
    parser.add_argument('--experiment_name', required=True, help="the run's folder name")
    parser.add_argument('--load_weights', default='',
                        help="which copy: '' the latest (default), copy<k> or best<k>")
    parser.add_argument('--no_ema', action='store_true',
                        help='export G, not G_ema (a run without --ema has only G)')
    parser.add_argument('--all', action='store_true', dest='everything',
                        help='export G_ema, G and D (for fine-tuning)')
    parser.add_argument('--out', default='',
                        help='the folder to write (default: <weights_root>/<experiment_name>'
                             '[_<load_weights>]_pretrained)')
    args = parser.parse_args(argv)
    with utils.exit_on_user_error():
        return export(**vars(args))


if __name__ == '__main__':
    main()
