"""Build G and D from a reference command line, for the tests (parser defaults, not the
constructors' own, as the original's train.py does)."""
import shlex

import BigGAN
import BigGANdeep

# The original parser's defaults for the flags that shape the models (spec 1.1).
PARSER_DEFAULTS = {
    'model': 'BigGAN', 'G_param': 'SN', 'D_param': 'SN', 'G_ch': 64, 'D_ch': 64, 'G_depth': 1,
    'D_depth': 1, 'D_wide': True, 'G_shared': False, 'shared_dim': 0, 'dim_z': 128,
    'hier': False, 'cross_replica': False, 'mybn': False, 'G_nl': 'relu', 'D_nl': 'relu',
    'G_attn': '64', 'D_attn': '64', 'norm_style': 'bn', 'G_init': 'ortho', 'D_init': 'ortho',
    'skip_init': False, 'BN_eps': 1e-5, 'SN_eps': 1e-8, 'num_G_SVs': 1, 'num_D_SVs': 1,
    'num_G_SV_itrs': 1, 'num_D_SV_itrs': 1, 'dataset': 'I128_hdf5',
    'G_lr': 5e-5, 'D_lr': 2e-4, 'adam_eps': 1e-8, 'num_D_steps': 2,
}
RESOLUTION = {'C10': 32, 'C100': 32, 'I32': 32, 'I64': 64, 'I128': 128, 'I256': 256,
              'I128_hdf5': 128}
N_CLASSES = {'C10': 10, 'C100': 100}

G_ARGS = ('G_ch', 'dim_z', 'G_attn', 'num_G_SVs', 'num_G_SV_itrs', 'G_shared', 'shared_dim',
          'hier', 'cross_replica', 'mybn', 'BN_eps', 'SN_eps', 'G_init', 'skip_init', 'G_param',
          'norm_style')
D_ARGS = ('D_ch', 'D_wide', 'D_attn', 'num_D_SVs', 'num_D_SV_itrs', 'SN_eps', 'D_init',
          'skip_init', 'D_param')


def parse_flags(flags: str) -> dict:
    """'--G_ch 8 --G_shared ...' -> config dict over the parser defaults."""
    config = dict(PARSER_DEFAULTS)
    tokens = shlex.split(flags)
    i = 0
    while i < len(tokens):
        key = tokens[i][2:]
        if i + 1 < len(tokens) and not tokens[i + 1].startswith('--'):
            default = config.get(key)
            value = tokens[i + 1]
            config[key] = type(default)(value) if isinstance(default, (int, float)) and not \
                isinstance(default, bool) else value
            i += 2
        else:
            config[key] = True
            i += 1
    return config


def build_models(flags: str, n_classes=None, resolution=None, **overrides):
    """G, D and the model module for a reference command line."""
    config = {**parse_flags(flags), **overrides}
    module = {'BigGAN': BigGAN, 'BigGANdeep': BigGANdeep}[config['model']]
    res = resolution or RESOLUTION[config['dataset']]
    classes = n_classes or N_CLASSES.get(config['dataset'], 1000)
    g_kwargs = {k: config[k] for k in G_ARGS}
    d_kwargs = {k: config[k] for k in D_ARGS}
    if config['model'] == 'BigGANdeep':
        g_kwargs['G_depth'] = config['G_depth']
        d_kwargs['D_depth'] = config['D_depth']
    G = module.Generator(resolution=res, n_classes=classes, G_activation=config['G_nl'],
                         **g_kwargs)
    D = module.Discriminator(resolution=res, n_classes=classes, D_activation=config['D_nl'],
                             **d_kwargs)
    return G, D, module
