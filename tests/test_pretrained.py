"""Pretrained folders (config.json + *.safetensors): save_pretrained -> from_pretrained gives the
same generator for a training run, the original's released folder and a TF-Hub conversion; the
weights files hold no pickle; sample.py --G_weights, train.py --finetune_from and the export
command take the folder. (README's "sample from Python" example runs in tests/test_readme.py.)"""
import importlib.util
import json
import os
import struct
import sys

import pytest
import torch

import finetune
import pretrained
import pretrained_files
import sample
import train
import utils
from conftest import ROOT
from data_helpers import random_hdf5
from original_checkpoint import make_original_i128_folder
from safe_pickle import safe_load
from tfhub_synthetic import EMA, SyntheticModule

safetensors = pytest.importorskip('safetensors')

TINY = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--G_shared', '--hier', '--shared_dim', '8', '--batch_size', '4', '--num_D_steps', '1',
        '--num_workers', '0', '--pbar', 'none', '--test_every', '100000', '--num_iters', '1',
        '--save_every', '1', '--num_save_copies', '0', '--ema', '--ema_start', '0']
N_CLASSES = 3


def _train(root, name: str, data: str) -> str:
    """A one-iteration tiny run; returns its weights folder."""
    config = utils.parse_config(['--dataset', 'HDF5', '--data_root', data, '--experiment_name',
                                 name, '--weights_root', str(root / 'weights'), '--logs_root',
                                 str(root / 'logs'), '--samples_root', str(root / 'samples')]
                                + TINY)
    train.run(config)
    return str(root / 'weights' / name)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp('run')
    data = str(root / 'tiny.hdf5')
    random_hdf5(data, n=8, size=32, n_classes=N_CLASSES)
    return _train(root, 'tiny', data), data


def _outputs(G, seed: int = 0, n: int = 4) -> torch.Tensor:
    """G's images in eval mode for fixed noise (eval: a forward changes nothing)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.dim_z, generator=gen)
    y = torch.randint(0, G.n_classes, (n,), generator=gen)
    G.eval()
    with torch.no_grad():
        return G(z, G.shared(y))


def _round_trip(G, folder) -> torch.nn.Module:
    pretrained.save_pretrained(str(folder), G_ema=G)
    return pretrained.from_pretrained(str(folder))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------

def test_a_run_round_trips(run, tmp_path):
    folder, _ = run
    G = pretrained.from_pretrained(folder)  # the run has G_ema: that one
    saved = safe_load(os.path.join(folder, 'G_ema.pth'))
    assert all(torch.equal(G.state_dict()[k], saved[k]) for k in saved)
    raw = pretrained.from_pretrained(folder, ema=False)
    assert not torch.equal(raw.state_dict()['linear.weight'], G.state_dict()['linear.weight'])
    again = _round_trip(G, tmp_path / 'tiny_pretrained')
    assert type(again) is type(G)
    _same_weights(G, again)
    assert torch.equal(_outputs(G), _outputs(again))
    config = json.loads((tmp_path / 'tiny_pretrained' / 'config.json').read_text())
    assert config['model'] == 'BigGAN' and config['G_ch'] == 4 and config['hier'] is True
    assert config['n_classes'] == N_CLASSES and config['resolution'] == 32


def test_the_originals_released_folder_round_trips(tmp_path):
    folder = make_original_i128_folder(str(tmp_path), 'BigGAN_I128', with_optim=False, ch=16)
    G = pretrained.from_pretrained(folder)
    saved = safe_load(os.path.join(folder, 'G_ema.pth'))
    assert all(torch.equal(G.state_dict()[k], saved[k]) for k in saved)
    again = _round_trip(G, tmp_path / 'released')
    _same_weights(G, again)
    assert torch.equal(_outputs(G, n=2), _outputs(again, n=2))
    config = json.loads((tmp_path / 'released' / 'config.json').read_text())
    # The released config's quirks ('model': 'model', nn.ReLU objects) became plain values.
    assert config['model'] == 'BigGAN' and config['G_nl'] == 'inplace_relu'


@pytest.fixture(scope='module')
def tfhub128(tmp_path_factory):
    """A synthetic biggan-128 converted twice: by the converter's command line from an .h5 dump
    to a pretrained folder, and to the original's .pth file."""
    from TFHub import converter, variables
    module = SyntheticModule(128)
    needed = {name: module[name] for name in module
              if EMA in name or name.rsplit('/', 1)[-1].split(':')[0] not in ('w', 'b', 'gamma',
                                                                               'beta')}
    root = tmp_path_factory.mktemp('tfhub')
    h5 = str(root / 'biggan-128.h5')
    variables.dump_to_hdf5(needed, h5)
    weights = root / 'weights'
    assert converter.main(['--module_path', h5, '--weights_dir', str(weights),
                           '--out_format', 'pretrained']) == 0
    converter.save_state_dict(converter.convert_variables(module, 128),
                              str(weights / 'biggan-128.pth'))
    return weights


def test_a_tfhub_conversion_round_trips(tfhub128):
    folder, pth = tfhub128 / 'biggan-128', tfhub128 / 'biggan-128.pth'
    assert sorted(os.listdir(folder)) == ['G_ema.safetensors', 'config.json']
    from_folder = pretrained.from_pretrained(str(folder))
    from_file = pretrained.from_pretrained(str(pth))  # the architecture found from the keys
    converted = torch.load(pth, weights_only=True)
    assert all(torch.equal(from_file.state_dict()[k], converted[k]) for k in converted)
    # Same class, arguments, weights and output BN: the same function (a forward at width 96
    # takes seconds on a CPU; the outputs are compared on the smaller models above).
    _same_weights(from_file, from_folder)
    assert type(from_file) is type(from_folder)
    assert (pretrained_files.full_arguments(from_file)
            == pretrained_files.full_arguments(from_folder))
    assert from_file.output_layer[0].eps == from_folder.output_layer[0].eps
    config = json.loads((folder / 'config.json').read_text())
    assert (config['dim_z'], config['G_ch'], config['BN_eps']) == (120, 96, 1e-4)


def test_a_file_that_fits_no_conversion_is_named(run, tmp_path):
    path = tmp_path / 'G.pth'
    torch.save(safe_load(os.path.join(run[0], 'G.pth')), path)
    with pytest.raises(ValueError, match='fits none of the TF-Hub conversions'):
        pretrained.from_pretrained(str(path))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        pretrained.from_pretrained(str(tmp_path / 'nowhere'))


# ------------------------------------------------------------------------------------------------
# No pickle in the weights
# ------------------------------------------------------------------------------------------------

def test_the_weights_file_is_a_json_header_and_raw_tensors(run, tmp_path):
    G = pretrained.from_pretrained(run[0])
    pretrained.save_pretrained(str(tmp_path / 'p'), G_ema=G)
    path = tmp_path / 'p' / 'G_ema.safetensors'
    blob = path.read_bytes()
    (header_size,) = struct.unpack('<Q', blob[:8])
    header = json.loads(blob[8:8 + header_size])  # JSON, not a pickle
    data = blob[8 + header_size:]
    spans = sorted(tuple(entry['data_offsets']) for key, entry in header.items()
                   if key != '__metadata__')
    # The tensors tile the data exactly: no byte of the file is anything but header or tensor.
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    state = G.state_dict()
    assert set(header) - {'__metadata__'} == set(state)
    from safetensors import safe_open
    with safe_open(str(path), framework='pt') as f:
        for key in state:
            assert torch.equal(f.get_tensor(key), state[key]), key
    assert not blob.startswith((b'\x80', b'PK'))  # neither a pickle nor torch's zip format


# ------------------------------------------------------------------------------------------------
# sample.py, --finetune_from, the export command
# ------------------------------------------------------------------------------------------------

def _export(run, out, *extra):
    """scripts/utils/export_pretrained.py's main, in this process."""
    where = importlib.util.spec_from_file_location(
        'export_pretrained', os.path.join(ROOT, 'scripts', 'utils', 'export_pretrained.py'))
    script = importlib.util.module_from_spec(where)
    where.loader.exec_module(script)
    return script.main(['--weights_root', os.path.dirname(run[0]), '--experiment_name', 'tiny',
                        '--out', str(out), *extra])


def test_export_writes_the_runs_G_ema_or_every_net(run, tmp_path, capsys):
    _export(run, tmp_path / 'ema')
    assert sorted(os.listdir(tmp_path / 'ema')) == ['G_ema.safetensors', 'config.json']
    _same_weights(pretrained.from_pretrained(str(tmp_path / 'ema')),
                  pretrained.from_pretrained(run[0], ema=True))
    _export(run, tmp_path / 'all', '--all')
    assert sorted(os.listdir(tmp_path / 'all')) == ['D.safetensors', 'G.safetensors',
                                                     'G_ema.safetensors', 'config.json']
    _same_weights(pretrained.from_pretrained(str(tmp_path / 'all'), ema=False),
                  pretrained.from_pretrained(run[0], ema=False))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        _export(run, tmp_path / 'x', '--load_weights', 'best3')
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith('error: ') and 'G_best3.pth' in err


def _random_sheet(argv, root):
    out = sample.main(['--samples_root', str(root), '--sample_random', '--pbar', 'none',
                       '--G_batch_size', '4', *argv])
    with open(out['random'], 'rb') as f:
        return f.read()


def test_sample_py_takes_the_folder(run, tmp_path):
    folder, _ = run
    _export(run, tmp_path / 'p')
    from_folder = _random_sheet(['--G_weights', str(tmp_path / 'p')], tmp_path / 's1')
    from_run = _random_sheet(['--weights_root', os.path.dirname(folder), '--experiment_name',
                              'tiny', '--config_from_name', '--use_ema'], tmp_path / 's2')
    assert from_folder == from_run
    with pytest.raises(SystemExit) as stop:
        sample.main(['--G_weights', str(tmp_path / 'p'), '--G_ch', '8', '--sample_random'])
    assert stop.value.code == 2


def test_finetune_from_the_folder(run, tmp_path):
    folder, _ = run
    _export(run, tmp_path / 'p', '--all')
    finetune.check_source({'finetune_from': str(tmp_path / 'p'), 'resume': False,
                           'class_map': ''})
    G_state, D_state = finetune.source_states(str(tmp_path / 'p'))
    for net, state in (('G', G_state), ('D', D_state)):  # G (not G_ema) and D, as from a run
        saved = safe_load(os.path.join(folder, f'{net}.pth'))
        assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    _export(run, tmp_path / 'ema')  # G_ema alone: that, and D left at its init
    G_state, D_state = finetune.source_states(str(tmp_path / 'ema'))
    saved = safe_load(os.path.join(folder, 'G_ema.pth'))
    assert D_state is None and all(torch.equal(G_state[k], saved[k]) for k in saved)


def test_without_safetensors_one_error_line_names_the_install(run, tmp_path, monkeypatch,
                                                              capsys):
    _export(run, tmp_path / 'p')
    monkeypatch.setitem(sys.modules, 'safetensors', None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, 'safetensors.torch', None)
    with pytest.raises(SystemExit) as stop:
        sample.main(['--G_weights', str(tmp_path / 'p'), '--sample_random',
                     '--samples_root', str(tmp_path / 's')])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'pip install safetensors' in err[0]
