"""Fine-tuning (--finetune_from, --class_map, --freeze_G/--freeze_D) and unconditional training
(a flat image folder, --unconditional): what is copied, mapped and re-initialized, that the
runs train, and that sheets and sample.py adapt to one class."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoints
import finetune
import sample
import sample_config
import train
import utils
from conftest import ROOT
from data_helpers import random_hdf5

ARCH = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--G_shared', '--hier', '--shared_dim', '8']
RUN = ['--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
       '--test_every', '100000', '--num_save_copies', '0', '--ema']
TINY = ARCH + RUN


def _roots(root) -> list:
    return [arg for name in ('weights', 'logs', 'samples')
            for arg in (f'--{name}_root', str(root / name))]


def _folder(root, n_classes: int, flat: bool = False, per_class: int = 3):
    """Random 32 x 32 PNGs: one sub-folder per class, or all in the folder itself."""
    rng = np.random.default_rng(n_classes)
    for c in range(n_classes):
        folder = root if flat else root / f'class{c}'
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f'{c}_{i}.png')
    return str(root)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """A tiny 10-class run (one iteration), its weights folder and its G and D states."""
    root = tmp_path_factory.mktemp('source')
    random_hdf5(str(root / 'ten.hdf5'), n=20, size=32, n_classes=10)
    config = utils.parse_config(['--dataset', 'HDF5', '--data_root', str(root / 'ten.hdf5'),
                                 '--num_iters', '1', '--save_every', '1', *TINY, *_roots(root)])
    train.run(config)
    folder = root / 'weights' / utils.experiment_name(config)
    states = {net: torch.load(folder / f'{net}.pth') for net in ('G', 'D')}
    return folder, states


def _finetune(tmp_path, monkeypatch, *extra, iters: int = 3, arch=tuple(ARCH)):
    """Fine-tune onto a 3-class folder with the architecture flags `arch`; returns (the models
    right after loading, the table rows, the final state)."""
    data = _folder(tmp_path / 'three', 3)
    seen = {}
    real = finetune.start_from

    def keep(config, models, say=print):
        seen['rows'] = real(config, models, say)
        seen['G'] = {k: v.clone() for k, v in models.G.state_dict().items()}
        seen['D'] = {k: v.clone() for k, v in models.D.state_dict().items()}
        seen['G_ema'] = {k: v.clone() for k, v in models.G_ema.state_dict().items()}
        seen['models'] = models
        return seen['rows']
    monkeypatch.setattr(finetune, 'start_from', keep)
    config = utils.parse_config(['--dataset', 'ImageFolder', '--data_root', data,
                                 '--resolution', '32', '--num_iters', str(iters),
                                 '--save_every', '1000', *arch, *RUN, *_roots(tmp_path),
                                 *extra])
    assert config['n_classes'] == 3
    state = train.run(config)
    return seen, state


def test_finetune_copies_what_fits_and_reinitializes_the_class_rows(source, tmp_path,
                                                                     monkeypatch, capsys):
    folder, states = source
    seen, state = _finetune(tmp_path, monkeypatch, '--finetune_from', str(folder))
    assert state['itr'] == 3 and state['best_IS'] == 0  # counters and scores start afresh
    _assert_all_but_class_rows_copied(seen, states)
    out = capsys.readouterr().out
    assert 'G.shared.weight  initialized  10 classes in the source, 3 here' in out
    assert 'D.embed.weight   initialized  10 classes in the source, 3 here' in out
    actions = {(name, action) for name, action, _ in seen['rows']}
    assert ('G.shared.weight', 'initialized') in actions
    # Training moved the weights away from the copies.
    G = seen['models'].G.state_dict()
    assert not torch.equal(G['linear.weight'], states['G']['linear.weight'])


def _assert_all_but_class_rows_copied(seen: dict, states: dict) -> None:
    class_keys = {'G': {'shared.weight'}, 'D': {'embed.weight', 'embed.u0'}}
    for net in ('G', 'D'):
        for key, value in seen[net].items():
            if key in class_keys[net]:
                assert 3 in value.shape and value.shape != states[net][key].shape, key
            else:
                assert torch.equal(value, states[net][key]), f'{net}.{key}'
    for key, value in seen['G_ema'].items():  # the EMA starts from the fine-tuned G
        assert torch.equal(value, seen['G'][key]), key


def test_finetune_takes_the_source_architecture(source, tmp_path, monkeypatch, capsys):
    """A command line without architecture flags (so widths 64, attention at 64, no shared
    embedding by default) builds the source's architecture (widths 4, ...) from its saved
    config, and copies every tensor but the class rows."""
    folder, states = source
    seen, state = _finetune(tmp_path, monkeypatch, '--finetune_from', str(folder), iters=1,
                            arch=())
    assert state['itr'] == 1
    config = state['config']
    assert (config['G_ch'], config['D_ch'], config['G_attn'], config['dim_z']) == (4, 4, '0', 16)
    assert config['G_shared'] and config['hier'] and config['shared_dim'] == 8
    _assert_all_but_class_rows_copied(seen, states)
    out = capsys.readouterr().out
    assert f"Fine-tuning: the architecture of {folder / 'state_dict.pth'}: " in out
    assert "G_ch 4" in out


def test_architecture_flags_given_here_override_the_source(source, tmp_path):
    """A flag given on the command line wins over the saved config, whatever its value (even
    the default); data and training flags are never taken from the source."""
    folder, _ = source
    data = _folder(tmp_path / 'three', 3)
    config = utils.parse_config(['--dataset', 'ImageFolder', '--data_root', data,
                                 '--finetune_from', str(folder), '--G_ch', '64',
                                 '--D_attn', '64', '--resolution', '32', *_roots(tmp_path)])
    assert (config['G_ch'], config['D_ch'], config['D_attn'], config['G_attn']) == \
        (64, 4, '64', '0')
    assert config['batch_size'] == 64 and config['n_classes'] == 3  # not the source's
    assert config['resolution'] == 32


@pytest.mark.parametrize('partial', [False, True])
def test_a_partial_copy_is_exit_2(source, tmp_path, hdf5_file, partial):
    """Other widths given on the command line: most tensors cannot be copied, which is one
    error line naming them (before any model is built or file written); --finetune_partial
    starts anyway (here: checked up to the models' first step, --which_train_fn dummy)."""
    folder, _ = source
    args = ['--dataset', 'HDF5', '--data_root', hdf5_file, '--finetune_from', str(folder),
            *RUN, *_roots(tmp_path), '--num_iters', '1', '--G_ch', '8', '--which_train_fn',
            'dummy'] + ['--finetune_partial'] * partial
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args],
                            capture_output=True, text=True, cwd=str(tmp_path))
    if partial:
        assert result.returncode == 0, result.stderr[-2000:]
        assert 'G: ' in result.stdout and ' initialized' in result.stdout
        return
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr[-2000:]
    assert 'tensors other than the class rows would not be copied: G.' in errors[0]
    assert 'in the source' in errors[0] and 'more. ' in errors[0]
    assert '--finetune_partial' in errors[0]
    assert not any((tmp_path / 'weights').rglob('*.pth'))


def test_a_class_map_keeps_the_mapped_rows(source, tmp_path, monkeypatch):
    folder, states = source
    mapping = tmp_path / 'map.json'
    mapping.write_text(json.dumps([7, 2, None]))
    seen, _ = _finetune(tmp_path, monkeypatch, '--finetune_from', str(folder), '--class_map',
                        str(mapping), iters=1)
    shared, embed = states['G']['shared.weight'], states['D']['embed.weight']
    assert torch.equal(seen['G']['shared.weight'][:2], shared[[7, 2]])
    assert torch.equal(seen['D']['embed.weight'][:2], embed[[7, 2]])
    assert not torch.equal(seen['G']['shared.weight'][2], shared[2])  # unmapped: fresh
    assert ('G.shared.weight', 'mapped', '2 of 3 classes from the source') in seen['rows']


def test_a_G_only_file_leaves_D_at_its_init(source, tmp_path, monkeypatch, capsys):
    _, states = source
    path = tmp_path / 'G_only.pth'
    torch.save(states['G'], path)
    seen, _ = _finetune(tmp_path, monkeypatch, '--finetune_from', str(path), iters=1)
    assert torch.equal(seen['G']['linear.weight'], states['G']['linear.weight'])
    assert not torch.equal(seen['D']['linear.weight'], states['D']['linear.weight'])
    assert 'has no D: D starts from its initialization' in capsys.readouterr().out


def test_frozen_blocks_do_not_move(source, tmp_path, monkeypatch):
    folder, states = source
    seen, _ = _finetune(tmp_path, monkeypatch, '--finetune_from', str(folder), '--freeze_G',
                        '1', '--freeze_D', '2', iters=2)
    G, D = seen['models'].G.state_dict(), seen['models'].D.state_dict()
    params = {name for name, _ in seen['models'].G.named_parameters()}
    assert all(torch.equal(G[k], states['G'][k]) for k in params if k.startswith('blocks.0.'))
    assert not torch.equal(G['blocks.1.0.conv1.weight'], states['G']['blocks.1.0.conv1.weight'])
    params = {name for name, _ in seen['models'].D.named_parameters()}
    assert all(torch.equal(D[k], states['D'][k]) for k in params
               if k.startswith(('blocks.0.', 'blocks.1.')))
    assert not torch.equal(D['blocks.2.0.conv1.weight'], states['D']['blocks.2.0.conv1.weight'])


def test_transfer_maps_rows_of_every_class_tensor_by_its_class_dimension():
    """Without --G_shared each class-conditional BN holds class embeddings too; their rows and
    spectral-norm vectors move with the map."""
    import BigGAN
    source = BigGAN.Discriminator(resolution=32, D_ch=4, D_attn='0', n_classes=5).state_dict()
    plain = dict(resolution=32, G_ch=4, G_attn='0', dim_z=8, G_shared=False, hier=False)
    G_src = BigGAN.Generator(**plain, n_classes=5)
    target = BigGAN.Generator(**plain, n_classes=2)
    rows = finetune.transfer(target, G_src.state_dict(), 2, 'G', [4, 0])
    gains = [k for k in finetune.class_dims(target, 2) if k.endswith('gain.weight')]
    assert gains
    for key in gains:
        assert torch.equal(target.state_dict()[key], G_src.state_dict()[key][[4, 0]])
    D = BigGAN.Discriminator(resolution=32, D_ch=4, D_attn='0', n_classes=2)
    finetune.transfer(D, source, 2, 'D', [4, 0])
    assert torch.equal(D.state_dict()['embed.u0'], source['embed.u0'][:, [4, 0]])
    assert all(action in ('copied', 'mapped') for _, action, _ in rows)


def _train_cli(tmp_path, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args, *TINY,
                           *_roots(tmp_path), '--num_iters', '1'],
                          capture_output=True, text=True, cwd=str(tmp_path))


@pytest.mark.parametrize('extra, match', [
    (['--finetune_from', '/no/such/run'], "--finetune_from '/no/such/run' does not exist"),
    (['--class_map', 'map.json'], '--class_map maps the classes of --finetune_from'),
    (['--freeze_G', '9'], '--freeze_G 9: this model has 3 residual blocks'),
])
def test_bad_finetune_flags_are_one_error_line(tmp_path, hdf5_file, extra, match):
    result = _train_cli(tmp_path, '--dataset', 'HDF5', '--data_root', hdf5_file, *extra)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and match in errors[0], result.stderr[-2000:]
    assert not (tmp_path / 'weights').exists() or not any((tmp_path / 'weights').rglob('*.pth'))


def test_bad_class_map_names_the_file_and_the_layout(source, tmp_path):
    folder, _ = source
    mapping = tmp_path / 'map.json'
    mapping.write_text('{"zero": 1}')
    with pytest.raises(ValueError, match=r"--class_map '.*map.json': keys must be class"):
        finetune.read_class_map(str(mapping), 3, 10)
    mapping.write_text('[1, 12]')
    with pytest.raises(ValueError, match="source class 12 for class 1 is not one of the "
                                         "source's 0 to 9"):
        finetune.read_class_map(str(mapping), 3, 10)


@pytest.mark.parametrize('text, match', [
    ('[1, true]', 'source class true for class 1 is not one of'),
    ('{"0": false}', 'source class false for class 0'),
    ('[1, 2.0]', 'source class 2.0 for class 1'),
    ('[1, "2"]', 'source class "2" for class 1'),
    ('{"0": [1]}', 'nested lists or objects'),
    ('[' * 5000 + ']' * 5000, 'nested lists or objects'),  # json would recurse 5,000 deep
    ('["[[", 1]', 'source class "\\[\\[" for class 0'),  # brackets in a string are no nesting
])
def test_class_map_entries_must_be_plain_integers(tmp_path, text, match):
    mapping = tmp_path / 'map.json'
    mapping.write_text(text)
    with pytest.raises(ValueError, match=match):
        finetune.read_class_map(str(mapping), 3, 10)


# --- unconditional training --------------------------------------------------------------------

def test_a_flat_folder_trains_one_class_and_samples(tmp_path):
    data = _folder(tmp_path / 'flat', 2, flat=True)
    argv = ['--dataset', 'ImageFolder', '--data_root', data, '--resolution', '32',
            '--num_iters', '2', '--save_every', '2', *TINY, *_roots(tmp_path)]
    config = utils.parse_config(argv)
    assert config['n_classes'] == 1
    train.run(config)
    name = utils.experiment_name(config)
    G = torch.load(tmp_path / 'weights' / name / checkpoints.file_name('G'))
    D = torch.load(tmp_path / 'weights' / name / checkpoints.file_name('D'))
    assert G['shared.weight'].shape == (1, 8) and D['embed.weight'].shape[0] == 1
    sheets = tmp_path / 'samples' / name / '2'
    assert sorted(p.name for p in sheets.iterdir()) == ['interpZ0.jpg', 'samples0.jpg']
    with Image.open(sheets / 'samples0.jpg') as sheet:
        assert sheet.size == (10 * 34 + 2, 10 * 34 + 2)  # 10 rows of the one class
    out = sample.run(sample_config.parse_sample_config(
        ['--dataset', 'ImageFolder', '--data_root', data, '--experiment_name', name,
         '--config_from_name', '--weights_root', str(tmp_path / 'weights'), '--samples_root',
         str(tmp_path / 'sampled'), '--sample_sheets', '--sample_interps', '--pbar', 'none']))
    assert len(out['sheets']) == 1 and [os.path.basename(p) for p in out['interps']] == \
        ['interpZ0.jpg']


def test_unconditional_ignores_the_labels_of_any_data(tmp_path):
    random_hdf5(str(tmp_path / 'four.hdf5'), n=8, size=32, n_classes=4)
    config = utils.parse_config(['--dataset', 'HDF5', '--data_root', str(tmp_path / 'four.hdf5'),
                                 '--unconditional', '--num_iters', '1', '--save_every', '1',
                                 *TINY, *_roots(tmp_path)])
    assert config['n_classes'] == 1 and 'uncond' in utils.experiment_name(config)
    state = train.run(config)
    assert state['itr'] == 1
    G = torch.load(tmp_path / 'weights' / utils.experiment_name(config) / 'G.pth')
    assert G['shared.weight'].shape == (1, 8)


def _config_argv(data, folder, root) -> list:
    return ['--dataset', 'ImageFolder', '--data_root', data, '--resolution', '128',
            '--finetune_from', folder, *_roots(root)]


def test_finetune_from_the_original_released_folder_takes_its_architecture(tmp_path):
    """The original's released folder: its saved config (with its quirks: `'model': 'model'`,
    nn.ReLU objects) gives the architecture, and every tensor but the class rows fits (checked
    on the meta device, as train.py does before building the models)."""
    from original_checkpoint import make_original_i128_folder
    folder = make_original_i128_folder(str(tmp_path), 'released', with_optim=False, ch=16)
    data = _folder(tmp_path / 'three', 3)
    config = utils.parse_config(_config_argv(data, folder, tmp_path))
    assert (config['model'], config['G_ch'], config['D_ch'], config['dim_z']) == \
        ('BigGAN', 16, 16, 120)
    assert config['G_shared'] and config['hier'] and config['G_nl'] == 'inplace_relu'
    assert config['n_classes'] == 3 and config['batch_size'] == 64
    train.preflight(config)  # raises if any tensor but the class rows would not be copied
    with pytest.raises(ValueError, match=r'tensors other than the class rows would not be '
                                         r'copied: G\.'):
        train.preflight(utils.parse_config([*_config_argv(data, folder, tmp_path), '--G_ch',
                                            '8']))
