"""--tensorboard and --wandb: the values a tracker holds, read back with the package's own reader,
equal those of the run's logs; a missing package is one error line at start-up; a resumed run
continues its W&B run."""
import glob
import io
import json
import os
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image

import run_trackers
import train
import utils

TINY = ['--G_ch', '4', '--D_ch', '4', '--G_attn', '0', '--D_attn', '0', '--dim_z', '16',
        '--batch_size', '4', '--num_D_steps', '1', '--num_workers', '0', '--pbar', 'none',
        '--sv_log_interval', '1', '--logstyle', '%.12e', '--num_iters', '3',
        '--save_every', '3', '--test_every', '3']


def _sample_stats(sample, num_images, num_splits):
    """Stands in for IS/FID: numbers drawn from the run's own samples, different at each test."""
    images, _ = sample()
    return float(images.mean()), float(images.std()), float(images.abs().mean()) * 100


def _run(tmp_path, hdf5_file, monkeypatch, *extra):
    monkeypatch.setattr(train, 'prepare_metrics', lambda *args: _sample_stats)
    argv = ['--dataset', 'HDF5', '--data_root', hdf5_file] + TINY + list(extra)
    for name in ('weights', 'logs', 'samples'):
        argv += [f'--{name}_root', str(tmp_path / name)]
    config = utils.parse_config(argv)
    state = train.run(config)
    name = utils.experiment_name(config)
    return config, state, tmp_path / 'logs' / name, tmp_path / 'samples' / name


def _train_logs(folder):
    """Every `<metric>.log` of a run: {metric: {itr: value}}."""
    logs = {}
    for path in glob.glob(str(folder / '*.log')):
        lines = open(path).read().splitlines()
        logs[os.path.basename(path)[:-4]] = {int(a): float(b) for a, b in
                                             (line.split(':') for line in lines)}
    return logs


def _jsonl(folder):
    return [json.loads(line) for line in open(f'{folder}_log.jsonl').read().splitlines()]


def test_tensorboard_events_hold_the_logged_values(tmp_path, hdf5_file, monkeypatch):
    event_accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator')
    config, _, logs, samples = _run(tmp_path, hdf5_file, monkeypatch, '--tensorboard')
    events = event_accumulator.EventAccumulator(str(logs / 'tensorboard'), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
        event_accumulator.TENSORS: 0})
    events.Reload()
    tags = events.Tags()

    train_logs = _train_logs(logs)
    assert {'G_loss', 'D_loss_real', 'D_loss_fake', 'G_linear_sv0', 'D_embed_sv0'} <= set(
        train_logs)
    for name, by_itr in train_logs.items():
        tag = run_trackers.train_tag(name)
        assert tag.startswith('sv_G/' if name.startswith('G_') and '_sv' in name else
                              'sv_D/' if '_sv' in name else 'train/')
        read = {e.step: e.value for e in events.Scalars(tag)}
        assert list(read) == [1, 2, 3] == list(by_itr)
        # TensorBoard keeps float32; the logs print 13 digits.
        assert np.allclose(list(read.values()), list(by_itr.values()), rtol=1e-6, atol=0)

    (record,) = _jsonl(logs)
    tested = [k for k in record if k not in ('itr', '_stamp')]
    assert tested == ['IS_mean', 'IS_std', 'FID']
    for key in tested:
        (event,) = events.Scalars(f'test/{key}')
        assert event.step == 3 and event.value == np.float32(record[key])
    lrs = {tag: events.Scalars(tag)[0].value for tag in ('lr/G', 'lr/D')}
    assert lrs == {'lr/G': np.float32(config['G_lr']), 'lr/D': np.float32(config['D_lr'])}

    assert set(tags['images']) == {'sheets/fixed_samples', 'sheets/class_sheet0'}
    for tag, path in (('sheets/fixed_samples', samples / 'fixed_samples3.jpg'),
                      ('sheets/class_sheet0', samples / '3' / 'samples0.jpg')):
        (image,) = events.Images(tag)
        shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert('RGB'))
        assert image.step == 3
        assert np.array_equal(shown, np.asarray(Image.open(path).convert('RGB')))
    (text,) = events.Tensors('flags/text_summary')
    flags_table = text.tensor_proto.string_val[0].decode()
    assert '| G_ch | 4 |' in flags_table and '| tensorboard | true |' in flags_table


def test_tensorboard_after_a_resume_equals_the_trimmed_logs(tmp_path, hdf5_file, monkeypatch):
    """A run saved at 2 and stopped at 3, resumed to 4: the logs drop what came after the
    checkpoint, and so does TensorBoard's reader (one value per iteration, the logs' values)."""
    event_accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator')
    _run(tmp_path, hdf5_file, monkeypatch, '--tensorboard', '--save_every', '2')
    _, _, logs, _ = _run(tmp_path, hdf5_file, monkeypatch, '--tensorboard', '--resume',
                         '--load_weights', 'copy0', '--num_iters', '4', '--save_every', '100',
                         '--test_every', '100')
    events = event_accumulator.EventAccumulator(str(logs / 'tensorboard'), size_guidance={
        event_accumulator.SCALARS: 0})
    events.Reload()
    assert len(os.listdir(logs / 'tensorboard')) == 2
    for name in ('G_loss', 'D_linear_sv0'):
        by_itr = _train_logs(logs)[name]
        read = {e.step: e.value for e in events.Scalars(run_trackers.train_tag(name))}
        assert list(by_itr) == [1, 2, 3, 4] == list(read)
        assert np.allclose(list(read.values()), list(by_itr.values()), rtol=1e-6, atol=0)


def _wandb_records(path):
    """The records of a `.wandb` file: W&B's own protobuf Record messages, in its LevelDB-style
    log framing (a 7-byte ':W&B' header, then 32 KiB blocks of chunks, each with a 7-byte
    header: checksum, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2
    data = open(path, 'rb').read()
    assert data[:4] == b':W&B'
    block, pos, parts = 32768, 7, b''
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
        if pos + 7 + length > len(data):
            return  # a chunk still being written
        if kind == 0:  # padding to the block's end
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b''
            yield record


def _finished_records(path, wait=30.0):
    """The records of a finished run's `.wandb` file: W&B's service may still be writing it
    for a moment after `finish()` returns, so wait for its `exit` record."""
    deadline = time.monotonic() + wait
    while True:
        records = list(_wandb_records(path))
        if any(r.WhichOneof('record_type') == 'exit' for r in records):
            return records
        assert time.monotonic() < deadline, f'{path} never got its exit record'
        time.sleep(0.2)


def _wandb_history(run_folder):
    """{itr: {key: value}} of the history rows of an offline run, and its config."""
    (path,) = glob.glob(os.path.join(run_folder, 'run-*.wandb'))
    history, config = {}, {}
    for record in _finished_records(path):
        kind = record.WhichOneof('record_type')
        if kind == 'history':
            row = {item.key or '/'.join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            if 'itr' not in row:
                continue  # W&B's own rows (the run's end)
            history.setdefault(row['itr'], {}).update(
                {k: v for k, v in row.items() if not k.startswith('_')})
        elif kind == 'run':
            config.update({item.key: json.loads(item.value_json)
                           for item in record.run.config.update})
    return history, config


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    for variable in ('WANDB_CONFIG_DIR', 'WANDB_CACHE_DIR', 'WANDB_DATA_DIR'):
        monkeypatch.setenv(variable, str(tmp_path / 'wandb_home'))
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.delenv('WANDB_MODE', raising=False)


def test_wandb_offline_run_holds_the_logged_values_and_resumes(tmp_path, hdf5_file,
                                                              monkeypatch, wandb_home):
    config, state, logs, samples = _run(tmp_path, hdf5_file, monkeypatch, '--wandb')
    (run_folder,) = glob.glob(str(logs / 'wandb' / 'offline-run-*'))
    assert run_folder.endswith('-' + state['wandb_id'])
    history, saved_config = _wandb_history(run_folder)
    assert saved_config['G_ch'] == 4 and saved_config['wandb'] is True
    for name, by_itr in _train_logs(logs).items():
        for itr, value in by_itr.items():
            assert history[itr][run_trackers.train_tag(name)] == pytest.approx(value, rel=1e-9)
    (record,) = _jsonl(logs)
    for key in ('IS_mean', 'IS_std', 'FID'):
        assert history[3][f'test/{key}'] == record[key]
    shown = os.path.join(run_folder, 'files', history[3]['sheets/fixed_samples/path'])
    saved = samples / 'fixed_samples3.jpg'
    assert np.array_equal(np.asarray(Image.open(shown).convert('RGB')),
                          np.asarray(Image.open(saved).convert('RGB')))
    ckpt = torch.load(tmp_path / 'weights' / utils.experiment_name(config) / 'state_dict.pth')
    assert ckpt['wandb_id'] == state['wandb_id']

    # A resume writes to the same W&B run: its id, the iterations after the checkpoint's.
    _, resumed, _, _ = _run(tmp_path, hdf5_file, monkeypatch, '--wandb', '--resume',
                            '--num_iters', '4', '--save_every', '100', '--test_every', '100')
    assert resumed['wandb_id'] == state['wandb_id']
    runs = sorted(glob.glob(str(logs / 'wandb' / 'offline-run-*')))
    assert len(runs) == 2 and all(r.endswith('-' + state['wandb_id']) for r in runs)
    second = runs[0] if runs[1] == run_folder else runs[1]
    assert sorted(_wandb_history(second)[0]) == [4]


def test_runs_without_trackers_keep_the_original_state(tmp_path, hdf5_file, monkeypatch):
    """No tracker flag: no tracker folders and no `wandb_id` in the checkpoint."""
    _, state, logs, _ = _run(tmp_path, hdf5_file, monkeypatch, '--num_iters', '1',
                             '--save_every', '1', '--test_every', '100')
    assert 'wandb_id' not in state
    assert not (logs / 'tensorboard').exists() and not (logs / 'wandb').exists()


@pytest.mark.parametrize('flag, package', [('--tensorboard', 'tensorboard'),
                                           ('--wandb', 'wandb')])
def test_a_missing_package_is_one_error_line(flag, package, tmp_path, monkeypatch, capsys):
    """Without the package: `error: --<flag> needs ... pip install <package>`, status 2,
    before anything is built or written."""
    real = run_trackers.importlib.util.find_spec
    monkeypatch.setattr(run_trackers.importlib.util, 'find_spec',
                        lambda name, *a: None if name == package else real(name, *a))
    monkeypatch.setattr(train, 'build_models', lambda *a, **k: pytest.fail('models built'))
    monkeypatch.delenv(utils.DEBUG_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as stop:
        train.main(['--dataset', 'C10', flag, '--logs_root', str(tmp_path / 'logs')])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {flag} needs the optional package '{package}', which is not "
                   f"installed: pip install {package}"]
    assert not (tmp_path / 'logs').exists()
