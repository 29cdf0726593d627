"""train.py with the limited-data flags on tiny HDF5 runs: a stopped and resumed run equals an
uninterrupted one bit for bit, the checkpoint's `data_efficient` state is plain numbers, the
new log keys are written; with every flag off nothing of it is built and names are as
before."""
import os

import pytest
import torch

import augment
import flags
import regularizers
import train
import utils
from conftest import assert_same_state
from safe_pickle import safe_load
from test_train import _folder, _hdf5_args, _run

# The flags of the limited-data rows, data_fraction to topk_nu.
_names = [row.name for row in flags.NEW_FLAGS]
NEW_ROWS = flags.NEW_FLAGS[_names.index('data_fraction'):_names.index('topk_nu') + 1]
LOG_KEYS = ('ADA_p', 'ADA_rt', 'LeCam_real', 'LeCam_fake', 'topk_k')


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread is fastest


def _plain(value) -> bool:
    """Only dicts of str keys, lists, and Python ints and floats."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return type(value) in (int, float)


EVERYTHING = ['--DiffAugment', 'color,translation,cutout', '--ADA', '--ADA_interval', '3',
              '--ADA_kimg', '0.05', '--LeCam', '0.3', '--LeCam_start', '1', '--mirror_augment',
              '--topk', '--topk_gamma', '0.5', '--bCR_fake', '1', '--zCR_dis', '1', '--zCR_gen',
              '0.5', '--CR', '1', '--data_fraction', '0.5', '--shuffle', '--ema', '--ema_start',
              '2', '--save_every', '4']
# --ADA_interval 3 of 4 images, --ADA_kimg 0.05: p moves by 12 / 50 at each update.
ADA_STEP = 3 * 4 / 50


def test_resume_is_exact_with_the_limited_data_flags(tmp_path, hdf5_file, monkeypatch):
    """8 iterations straight == 4, then --resume for 4: bitwise equal weights, optimizers,
    G_ema and limited-data state. The save at 4 falls inside an ADA interval (updates at 3
    and 6), so the sign sums in the checkpoint matter. ADA takes D as overfitting (its signs
    on the reals as positive, whatever a tiny D learns in 8 steps), so that p rises at every
    update and the resumed half augments with p > 0."""
    observe = augment.ADAController.observe
    monkeypatch.setattr(augment.ADAController, 'observe',
                        lambda self, D_real: observe(self, D_real.abs() + 1))
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    config, _ = _run(_hdf5_args(straight, hdf5_file, *EVERYTHING, '--num_iters', '8'))
    _run(_hdf5_args(resumed, hdf5_file, *EVERYTHING, '--num_iters', '4'))
    half = safe_load(os.path.join(_folder(resumed, config), 'state_dict.pth'))
    assert half['data_efficient']['ADA'] == pytest.approx(
        {'p': ADA_STEP, 'signs': 4., 'count': 4., 'r_t': 1.})  # mid-interval: iteration 4
    _, state = _run(_hdf5_args(resumed, hdf5_file, *EVERYTHING, '--num_iters', '8',
                               '--resume'))
    assert state['itr'] == 8
    a, b = _folder(straight, config), _folder(resumed, config)
    for stem in ('G', 'D', 'G_ema', 'G_optim', 'D_optim'):
        one = torch.load(os.path.join(a, stem + '.pth'))
        two = torch.load(os.path.join(b, stem + '.pth'))
        assert_same_state(one, two, stem)
    one, two = (safe_load(os.path.join(folder, 'state_dict.pth')) for folder in (a, b))
    assert one['data_efficient'] == two['data_efficient']
    assert one['data'] == two['data'] and one['data']['n_images'] == 12  # the subset
    efficient = one['data_efficient']
    assert set(efficient) == {'ADA', 'LeCam', 'topk_k'}
    assert _plain(efficient)
    # Plain numbers: torch's restricted loader (and the original's torch.load) reads them.
    plain = torch.load(os.path.join(a, 'state_dict.pth'), weights_only=True)
    assert plain['data_efficient'] == efficient
    assert efficient['ADA'] == pytest.approx({'p': 2 * ADA_STEP, 'signs': 8., 'count': 8.,
                                              'r_t': 1.})
    # 12 images, batches of 4: epoch 2 at iteration 8, k = max(ceil(4 / 4), ceil(2)).
    assert efficient['topk_k'] == 2
    assert efficient['LeCam']['real'] != half['data_efficient']['LeCam']['real']

    # The new log keys, one line per iteration, across the resume.
    logs = tmp_path / 'resumed' / 'logs' / utils.experiment_name(config)
    values = {}
    for key in LOG_KEYS:
        lines = (logs / f'{key}.log').read_text().splitlines()
        assert [int(line.split(':')[0]) for line in lines] == list(range(1, 9)), key
        values[key] = [float(line.split(':')[1]) for line in lines]
    assert values['ADA_p'] == pytest.approx([ADA_STEP * (itr // 3) for itr in range(1, 9)],
                                            rel=1e-3)
    assert values['topk_k'] == [4.] * 3 + [2.] * 5
    assert values['LeCam_real'][-1] == pytest.approx(efficient['LeCam']['real'], rel=1e-3)


def test_all_flags_off_builds_nothing(tmp_path, hdf5_file):
    config = utils.parse_config(_hdf5_args(tmp_path, hdf5_file))
    assert not regularizers.wanted(config)
    device = torch.device('cpu')
    models = train.build_models(config, device)
    loader = train.make_loader(config, 0)
    assert train.make_extras(config, device, models, loader) is None
    assert models.GD.augment is None
    assert type(loader.dataset).__name__ == 'ILSVRC_HDF5'  # the whole data, no Subset
    for extra in (['--DiffAugment', 'cutout'], ['--mirror_augment'], ['--LeCam', '0.1'],
                  ['--topk']):
        config = utils.parse_config(_hdf5_args(tmp_path, hdf5_file, *extra))
        models = train.build_models(config, device)
        extras = train.make_extras(config, device, models, loader)
        assert isinstance(extras, regularizers.DataEfficient), extra
        assert models.GD.augment is extras.augmenter
        assert extras.iters_per_epoch == 24 // 4


def test_a_run_without_the_flags_saves_no_data_efficient_state(tmp_path, hdf5_file):
    config, _ = _run(_hdf5_args(tmp_path, hdf5_file, '--num_iters', '1'))
    saved = safe_load(os.path.join(_folder(tmp_path, config), 'state_dict.pth'))
    assert 'data_efficient' not in saved and 'subset_seed' not in saved['data']
    logs = tmp_path / 'logs' / utils.experiment_name(config)
    assert (logs / 'G_loss.log').is_file()
    assert not any((logs / f'{key}.log').exists() for key in LOG_KEYS)


def test_default_names_have_no_new_tokens():
    assert [row.name for row in NEW_ROWS][-1] == 'topk_nu' and len(NEW_ROWS) > 10
    config = utils.parse_config([])
    name = utils.experiment_name(config)
    # The name of the same config without the new keys: the original's.
    original = {key: value for key, value in config.items()
                if key not in {row.key for row in NEW_ROWS}}
    assert name == utils.name_from_config(original)
    values = {str: 'cutout', float: '0.5', int: '5'}
    tagged = [row for row in NEW_ROWS if row.tag]
    assert {'DiffAugment', 'ADA', 'LeCam', 'topk', 'data_fraction'} <= {r.name for r in tagged}
    for row in tagged:
        assert row.token(row.default) is None, row.name
        argv = [f'--{row.name}'] + ([] if row.kind is flags.FLAG else [values[row.kind]])
        on = utils.experiment_name(utils.parse_config(argv))
        token = row.token(utils.parse_config(argv)[row.key])
        assert token and token in on.split('_') and token not in name.split('_'), row.name


def test_the_switches_off_values_are_the_flag_tables_defaults():
    """regularizers restates the defaults (reading the table back would be an import cycle):
    they must stay the table's."""
    table = flags.rows()
    assert {key: table[key].default for key in regularizers.FLAGS_OFF} == regularizers.FLAGS_OFF
