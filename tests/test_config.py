"""The parser keeps every flag of the original; the launch scripts parse unchanged and give the
original's experiment names; the config is read-only; --hashname is stable."""
import os
import subprocess
import sys

import pytest
import torch

import BigGAN
import flags
import utils
from conftest import ROOT
from script_runner import script_argv

# The original's 90 shared flags (utils.prepare_parser) and 8 sample flags (add_sample_parser).
ORIGINAL_FLAGS = '''dataset augment num_workers no_pin_memory shuffle load_in_mem
use_multiepoch_sampler model G_param D_param G_ch D_ch G_depth D_depth D_thin G_shared
shared_dim dim_z z_var hier
cross_replica mybn G_nl D_nl G_attn D_attn norm_style seed G_init D_init skip_init G_lr D_lr
G_B1 D_B1 G_B2 D_B2 adam_eps batch_size G_batch_size num_G_accumulations num_D_steps
num_D_accumulations split_D num_epochs parallel G_fp16 D_fp16 D_mixed_precision
G_mixed_precision accumulate_stats num_standing_accumulations G_eval_mode save_every
num_save_copies num_best_copies which_best no_fid test_every num_inception_images hashname
base_root data_root weights_root logs_root samples_root pbar name_suffix experiment_name
config_from_name logstyle log_G_spectra log_D_spectra sv_log_interval ema ema_decay use_ema
ema_start BN_eps SN_eps num_G_SVs num_D_SVs num_G_SV_itrs num_D_SV_itrs G_ortho D_ortho
toggle_grads which_train_fn load_weights resume'''.split()
SAMPLE_FLAGS = '''sample_npz sample_num_npz sample_sheets sample_interps sample_sheet_folder_num
sample_random sample_trunc_curves sample_inception_metrics'''.split()
DEFAULTS = {'dataset': 'I128_hdf5', 'num_workers': 8, 'pin_memory': True, 'model': 'BigGAN',
            'G_ch': 64, 'D_ch': 64, 'D_wide': True, 'dim_z': 128, 'G_nl': 'relu',
            'G_attn': '64', 'G_init': 'ortho', 'G_lr': 5e-5, 'D_lr': 2e-4, 'G_B2': 0.999,
            'adam_eps': 1e-8, 'batch_size': 64, 'num_D_steps': 2, 'num_epochs': 100,
            'num_standing_accumulations': 16, 'save_every': 2000, 'num_save_copies': 2,
            'num_best_copies': 2, 'which_best': 'IS', 'test_every': 5000,
            'num_inception_images': 50000, 'data_root': 'data', 'weights_root': 'weights',
            'logs_root': 'logs', 'samples_root': 'samples', 'pbar': 'mine',
            'logstyle': '%3.3e', 'sv_log_interval': 10, 'ema_decay': 0.9999, 'BN_eps': 1e-5,
            'SN_eps': 1e-8, 'toggle_grads': True, 'which_train_fn': 'GAN', 'load_weights': '',
            'sample_num_npz': 50000, 'sample_sheet_folder_num': -1, 'z_var': 1.0}


def _parser():
    return utils.add_sample_parser(utils.prepare_parser())


def test_every_original_flag_with_its_default():
    parser = _parser()
    options = {o for action in parser._actions for o in action.option_strings}
    for flag in ORIGINAL_FLAGS + SAMPLE_FLAGS:
        assert f'--{flag}' in options, flag
    assert len(ORIGINAL_FLAGS) == 90 and len(SAMPLE_FLAGS) == 8
    args = vars(parser.parse_args([]))
    for name, value in DEFAULTS.items():
        assert args[name] == value, name
    assert vars(parser.parse_args(['--D_thin', '--no_pin_memory']))['D_wide'] is False
    assert vars(parser.parse_args(['--no_toggle_grads']))['toggle_grads'] is False


SCRIPT_NAMES = {
    'launch_BigGAN_bs256x8.sh': 'BigGAN_I128_hdf5_seed0_Gch96_Dch96_bs256_nDa8_nGa8_Glr1.0e-04_'
                                'Dlr4.0e-04_Gnlinplace_relu_Dnlinplace_relu_Ginitortho_Dinitortho_'
                                'Gattn64_Dattn64_Gshared_hier_ema',
    'sample_BigGAN_bs256x8.sh': 'BigGAN_I128_hdf5_seed0_Gch96_Dch96_bs256_nDa8_nGa8_Glr1.0e-04_'
                                'Dlr4.0e-04_Gnlinplace_relu_Dnlinplace_relu_Ginitortho_Dinitortho_'
                                'Gattn64_Dattn64_Gshared_hier_ema',
    'launch_BigGAN_bs512x4.sh': 'BigGAN_I128_hdf5_seed0_Gch96_Dch96_bs512_nDa4_nGa4_Glr1.0e-04_'
                                'Dlr4.0e-04_Gnlinplace_relu_Dnlinplace_relu_Ginitortho_Dinitortho_'
                                'Gattn64_Dattn64_Gshared_hier_ema',
    'launch_BigGAN_ch64_bs256x8.sh': 'BigGAN_I128_hdf5_seed0_Gch64_Dch64_bs256_nDa8_nGa8_Glr1.0e-'
                                     '04_Dlr4.0e-04_Gnlinplace_relu_Dnlinplace_relu_Ginitortho_'
                                     'Dinitortho_Gattn64_Dattn64_Gshared_hier_ema',
    'launch_BigGAN_deep.sh': 'BigGAN_I128_hdf5_BigGANdeep_seed0_Gch128_Dch128_Gd2_Dd2_bs256_nDa8_'
                             'nGa8_Glr1.0e-04_Dlr4.0e-04_Gnlinplace_relu_Dnlinplace_relu_'
                             'Ginitortho_Dinitortho_Gattn64_Dattn64_Gshared_hier_ema',
    'launch_SAGAN_bs128x2_ema.sh': 'BigGAN_I128_hdf5_seed0_Gch64_Dch64_bs128_nDa2_nGa2_Glr1.0e-04_'
                                   'Dlr4.0e-04_Gnlrelu_Dnlrelu_Ginitxavier_Dinitxavier_Gattn64_'
                                   'Dattn64_ema_SAGAN_ema',
    'launch_SNGAN.sh': 'BigGAN_I128_hdf5_seed0_Gch64_Dch64_bs64_nDs5_Glr2.0e-04_Dlr2.0e-04_'
                       'GBB0.900_DBB0.900_Gnlrelu_Dnlrelu_Ginitxavier_Dinitxavier_SNGAN',
    'launch_cifar_ema.sh': 'BigGAN_C10_seed0_Gch64_Dch64_bs50_nDs4_Glr2.0e-04_Dlr2.0e-04_'
                           'Gnlrelu_Dnlrelu_GinitN02_DinitN02_ema',
    'sample_cifar_ema.sh': 'BigGAN_C10_seed0_Gch64_Dch64_bs50_nDs4_Glr2.0e-04_Dlr2.0e-04_'
                           'Gnlrelu_Dnlrelu_GinitN02_DinitN02_ema',
    # The limited-data scripts (docs/data_efficient.md): new flags, new name tokens.
    'launch_cifar_DiffAugment.sh': 'BigGAN_C10_seed0_Gch64_Dch64_bs50_nDs4_Glr2.0e-04_'
                                   'Dlr2.0e-04_Gnlrelu_Dnlrelu_GinitN02_DinitN02_ema_mirror_'
                                   'DiffAug-translation,cutout',
    'launch_BigGAN_I128_DiffAugment_LeCam.sh': 'BigGAN_I128_hdf5_seed0_Gch96_Dch96_bs256_nDs2_'
                                               'nDa8_nGa8_Glr1.0e-04_Dlr2.0e-04_Gnlinplace_relu_'
                                               'Dnlinplace_relu_Ginitortho_Dinitortho_Gattn64_'
                                               'Dattn64_Gshared_hier_ema_frac0.1_DiffAug-'
                                               'translation_LeCam0.3',
}


@pytest.mark.parametrize('name', sorted(SCRIPT_NAMES))
def test_launch_scripts_parse_and_name_as_the_original(name):
    program, *argv = script_argv(name)
    assert program == ('sample.py' if name.startswith('sample') else 'train.py')
    args = vars(_parser().parse_args(argv))
    utils.validate(args)
    assert utils.name_from_config(args) == SCRIPT_NAMES[name]


@pytest.mark.parametrize('name', sorted(SCRIPT_NAMES))
def test_launch_scripts_pass_extra_arguments_last(name):
    """`bash scripts/<script> --G_ch 8 --num_iters 4` shrinks a run: the extra flags reach the
    program after the script's own, so they win."""
    _, *argv = script_argv(name, '--G_ch', '8', '--num_iters', '4')
    assert argv[-4:] == ['--G_ch', '8', '--num_iters', '4']
    args = vars(_parser().parse_args(argv))
    assert (args['G_ch'], args['num_iters']) == (8, 4)


@pytest.mark.parametrize('fraction, epochs', [('0.1', 5000), ('0.2', 5000), ('1', 1000)])
def test_the_cifar_diffaugment_script_takes_its_fraction(fraction, epochs, monkeypatch):
    """FRACTION picks the published run: 5,000 epochs of a part, 1,000 of the whole."""
    monkeypatch.setenv('FRACTION', fraction)
    _, *argv = script_argv('launch_cifar_DiffAugment.sh')
    args = vars(_parser().parse_args(argv))
    assert (args['data_fraction'], args['num_epochs']) == (float(fraction), epochs)
    assert args['DiffAugment'] == 'translation,cutout' and args['mirror_augment']


def test_default_name():
    args = vars(_parser().parse_args([]))
    assert utils.name_from_config(args) == (
        'BigGAN_I128_hdf5_seed0_Gch64_Dch64_bs64_nDs2_Glr5.0e-05_Dlr2.0e-04_Gnlrelu_Dnlrelu_'
        'Ginitortho_Dinitortho_Gattn64_Dattn64')


def test_hashname_is_stable_across_processes():
    code = ('import sys; sys.path.insert(0, %r); import utils; '
            'print(utils.hashname("BigGAN_C10_seed0"))' % ROOT)
    names = {subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env={**os.environ, 'PYTHONHASHSEED': seed}).stdout.strip()
             for seed in ('1', '2', 'random')}
    assert len(names) == 1 and names.pop()
    assert utils.hashname('a') != utils.hashname('b')


def test_config_is_read_only(tmp_path):
    config = utils.Config({'a': 1})
    assert config.a == 1 and config['a'] == 1
    for mutate in (lambda: config.__setitem__('a', 2), lambda: config.update(a=2),
                   lambda: setattr(config, 'a', 2), lambda: config.pop('a')):
        with pytest.raises(TypeError, match='read-only'):
            mutate()


def test_default_attention_on_32x32_is_ignored_as_in_the_original():
    config = dict(vars(_parser().parse_args(['--dataset', 'C10', '--G_ch', '8', '--D_ch', '8'])),
                  resolution=32, n_classes=10)
    G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
    assert not any(G.arch['attention'].values()) and not any(D.arch['attention'].values())
    assert 'Gattn64' in utils.name_from_config(config)
    with pytest.raises(ValueError, match=r"G_attn='128'.*\[8, 16, 32\]"):
        BigGAN.Generator(**{**config, 'G_attn': '128'})  # any other missing entry is an error


HELP_SCRIPTS = ['train.py', 'sample.py', 'make_hdf5.py', 'calculate_inception_moments.py',
                'bench.py', 'TFHub/converter.py', 'logs/plot_logs.py',
                'scripts/utils/bench_data.py', 'scripts/utils/bench_inception.py',
                'scripts/utils/compare_precision.py']


def test_every_program_prints_its_help():
    """`--help` works (argparse %-formats help texts, so a stray % breaks it) and train.py's
    lists every flag."""
    runs = {name: subprocess.Popen([sys.executable, os.path.join(ROOT, name), '--help'],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=ROOT)
            for name in HELP_SCRIPTS}
    outputs = {}
    for name, process in runs.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f'{name} --help: {err[-2000:]}'
        assert out.startswith('usage:'), name
        outputs[name] = out
    for action in utils.prepare_parser()._actions:
        for option in action.option_strings:
            assert option in outputs['train.py'], option
    assert "(default: '%3.3e')" in outputs['train.py']


@pytest.mark.parametrize('argv', [
    ['train.py', '--dataset', 'I128_hdf5', '--num_iters', '1'],
    ['make_hdf5.py', '--dataset', 'I128'],
    ['calculate_inception_moments.py', '--dataset', 'I128_hdf5'],
])
def test_missing_data_is_one_error_line(tmp_path, argv):
    """Missing data is a one-line error naming the path, exit status 2, no traceback."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, argv[0])] + argv[1:]
                            + ['--data_root', str(tmp_path / 'nowhere')], capture_output=True,
                            text=True, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert 'error: ' in result.stderr and 'nowhere' in result.stderr


def test_help_and_checks_read_the_choice_tables(monkeypatch):
    """An activation, loss or block added to its table is listed by --help and accepted, with
    no other edit (the tables are read when the parser is built)."""
    import layers
    import losses
    monkeypatch.setitem(layers.ACTIVATIONS, 'elu', torch.nn.ELU)
    monkeypatch.setitem(losses.LOSSES, 'ls', losses.LOSSES['hinge'])
    monkeypatch.setitem(layers.G_BLOCKS, 'MyGBlock', layers.GBlock)
    text = ' '.join(utils.prepare_parser().format_help().split())
    assert '--G_nl G_NL G activation (choices: relu, inplace_relu, ir, elu)' in text
    assert '--loss LOSS GAN loss (choices: hinge, dcgan, ls)' in text
    assert 'choices: GBlock, DeepGBlock, MyGBlock' in text
    config = utils.parse_config(['--dataset', 'C10', '--G_nl', 'elu', '--loss', 'ls',
                                 '--G_block', 'MyGBlock'])
    assert (config.G_nl, config.loss) == ('elu', 'ls')
    assert config.experiment_name == '' and 'Gnlelu' in utils.name_from_config(config)
    with pytest.raises(ValueError, match=r"--G_nl='gelu' is not valid.*'elu'"):
        utils.parse_config(['--dataset', 'C10', '--G_nl', 'gelu'])



def test_flag_table_imports_nothing_of_the_project():
    """flags.py is the table alone: no import in it, at the top or inside a function, names a
    module of this repository (choice lists are read by name, through `From`)."""
    import ast
    with open(os.path.join(ROOT, 'flags.py')) as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or '').split('.')[0])
    own = {name[:-3] for name in os.listdir(ROOT) if name.endswith('.py')}
    own |= {name for name in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, name))}
    assert imported and not imported & own, sorted(imported & own)


SWITCH_ROWS = [row for row in flags.all_rows() if row.kind in (flags.FLAG, flags.OFF)]


@pytest.mark.parametrize('row', SWITCH_ROWS, ids=[row.name for row in SWITCH_ROWS])
def test_every_switch_is_undone_by_its_opposite(row):
    """Each on/off flag alone means what it always meant; its opposite, given later, switches
    it back, and the last of the two wins. An opposite that is a row of its own
    (--no_toggle_grads) is that row, with the same config key and the other value."""
    parser = _parser()
    on = row.kind == flags.FLAG  # the value the flag's own spelling stores
    flag, other = f'--{row.name}', f'--{flags.opposite(row.name)}'
    assert vars(parser.parse_args([]))[row.key] == row.default
    assert vars(parser.parse_args([flag]))[row.key] is on
    assert vars(parser.parse_args([flag, other]))[row.key] is (not on)
    assert vars(parser.parse_args([other, flag]))[row.key] is on
    twin = [r for r in flags.all_rows() if r.name == flags.opposite(row.name)]
    assert all(r.key == row.key and r.kind in (flags.FLAG, flags.OFF) and r.kind != row.kind
               for r in twin)


def test_launch_script_shrinks_by_appending_opposites():
    """`bash scripts/launch_BigGAN_bs256x8.sh --no_parallel --no_load_in_mem` parses with both
    off; the script alone turns them on, as in the original."""
    argv = script_argv('launch_BigGAN_bs256x8.sh')[1:]
    config = vars(utils.prepare_parser().parse_args(argv))
    assert config['parallel'] and config['load_in_mem'] and config['G_eval_mode']
    argv = script_argv('launch_BigGAN_bs256x8.sh', '--no_parallel', '--no_load_in_mem')[1:]
    config = vars(utils.prepare_parser().parse_args(argv))
    assert not config['parallel'] and not config['load_in_mem'] and config['G_eval_mode']
