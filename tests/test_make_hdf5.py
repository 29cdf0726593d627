"""make_hdf5.py: the original's file layout, exact values, rounding, atomic writes, its CLI."""
import errno
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import atomic
import datasets
import make_hdf5
from conftest import ROOT
from data_helpers import (FOLDER_LABELS, leave_dead_temporary, make_image_folder,
                          make_solid_folder)


def config(**overrides):
    base = vars(make_hdf5.prepare_parser().parse_args([]))
    return {**base, 'batch_size': 2, 'num_workers': 0, **overrides}


def folder_tensors(dataset, data_root, resolution=None):
    loader = datasets.get_data_loaders(dataset, str(data_root), batch_size=100, num_workers=0,
                                       shuffle=False, drop_last=False, resolution=resolution)[0]
    x, y = next(iter(loader))
    return x, y


def original_reader(path):
    """What the original's datasets.ILSVRC_HDF5 computes from a file, written out directly."""
    with h5py.File(path, 'r') as f:
        imgs, labels = f['imgs'][:], f['labels'][:]
    return ((torch.from_numpy(imgs).float() / 255) - 0.5) * 2, torch.from_numpy(labels)


def test_parser_keeps_the_original_flags_and_defaults():
    got = vars(make_hdf5.prepare_parser().parse_args([]))
    # The original's 16 workers, capped by the machine's cores.
    assert got == {'dataset': 'I128', 'data_root': 'data', 'batch_size': 256,
                   'num_workers': min(16, os.cpu_count()), 'chunk_size': 500,
                   'compression': False, 'out': '', 'resolution': None}


def test_layout_is_the_original_one(tmp_path):
    make_image_folder(str(tmp_path / 'ImageNet'))
    out = make_hdf5.run(config(dataset='I32', data_root=str(tmp_path)))
    assert out == os.path.join(str(tmp_path), 'ILSVRC32.hdf5')
    n = len(FOLDER_LABELS)
    with h5py.File(out, 'r') as f:
        assert sorted(f.keys()) == ['imgs', 'labels']
        imgs, labels = f['imgs'], f['labels']
        assert (imgs.dtype, imgs.shape, imgs.maxshape) == (np.uint8, (n, 3, 32, 32),
                                                           (n, 3, 32, 32))
        assert (labels.dtype, labels.shape) == (np.int64, (n,))
        assert imgs.chunks == (n, 3, 32, 32) and labels.chunks == (n,)  # 500, cut to N
        assert imgs.compression is None and labels.compression is None
    # The original's reading of the file gives exactly the folder loader's tensors.
    x, y = original_reader(out)
    x_folder, y_folder = folder_tensors('I32', tmp_path)
    assert torch.equal(x, x_folder) and torch.equal(y, y_folder)
    assert y.tolist() == FOLDER_LABELS
    assert [name for name in os.listdir(tmp_path) if name.endswith('.tmp')] == []


def test_compression_and_chunks(tmp_path):
    make_image_folder(str(tmp_path / 'ImageNet'))
    out = make_hdf5.run(config(dataset='I64', data_root=str(tmp_path), compression=True,
                               chunk_size=2))
    with h5py.File(out, 'r') as f:
        assert f['imgs'].compression == 'lzf' and f['labels'].compression == 'lzf'
        assert f['imgs'].chunks == (2, 3, 64, 64) and f['labels'].chunks == (2,)
    x, _ = original_reader(out)
    assert torch.equal(x, folder_tensors('I64', tmp_path)[0])


@pytest.mark.parametrize('load_in_mem', [False, True])
def test_folder_to_hdf5_to_loader_round_trip(tmp_path, load_in_mem):
    root = make_image_folder(str(tmp_path / 'pets'))
    out = str(tmp_path / 'pets.hdf5')
    make_hdf5.main(['--dataset', 'ImageFolder', '--data_root', root, '--resolution', '32',
                    '--out', out, '--batch_size', '3', '--num_workers', '0'])
    loader = datasets.get_data_loaders('HDF5', out, batch_size=100, num_workers=0,
                                       shuffle=False, drop_last=False,
                                       load_in_mem=load_in_mem)[0]
    x, y = next(iter(loader))
    x_folder, y_folder = folder_tensors('ImageFolder', root, resolution=32)
    assert torch.equal(x, x_folder) and torch.equal(y, y_folder)
    assert datasets.dataset_info('HDF5', out).n_classes == 2


def test_default_output_beside_a_custom_folder(tmp_path):
    root = make_image_folder(str(tmp_path / 'pets'))
    out = make_hdf5.run(config(dataset='ImageFolder', data_root=root + '/', resolution=64))
    assert out == os.path.join(str(tmp_path), 'pets64.hdf5') and os.path.isfile(out)


def test_rounding_inverts_the_loader_scaling_exactly():
    u8 = torch.arange(256, dtype=torch.uint8)
    x = (u8.float() / 255 - 0.5) * 2
    assert torch.equal(make_hdf5.to_uint8(x), u8)
    truncated = (255 * ((x + 1) / 2)).to(torch.uint8)  # the original: 63 values come back lower
    assert (truncated != u8).sum() > 0


def test_a_crash_leaves_no_file_under_the_final_name(tmp_path):
    class Failing:
        dataset = range(4)

        def __iter__(self):
            yield torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
            raise RuntimeError('disk full')

    out = str(tmp_path / 'ILSVRC32.hdf5')
    with pytest.raises(RuntimeError, match='disk full'):
        make_hdf5.write_hdf5(Failing(), out, 32)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('dataset', ['I128_hdf5', 'HDF5'])
def test_hdf5_source_is_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match=f'--dataset {dataset} is already HDF5'):
        make_hdf5.run(config(dataset=dataset, data_root=str(tmp_path)))


def test_bad_sizes_are_refused(tmp_path):
    root = make_image_folder(str(tmp_path / 'pets'))
    with pytest.raises(ValueError, match='--chunk_size must be at least 1'):
        make_hdf5.run(config(dataset='ImageFolder', data_root=root, resolution=32, chunk_size=0))
    with pytest.raises(ValueError, match='--resolution 48 has no BigGAN arch table'):
        make_hdf5.run(config(dataset='ImageFolder', data_root=root, resolution=48))


# ------------------------------------------------------------------------------------------------
# scripts/utils/prepare_data.sh: each extra argument goes to the program that takes it
# ------------------------------------------------------------------------------------------------

def test_route_args_sends_each_flag_to_the_programs_that_take_it(monkeypatch):
    import calculate_inception_moments
    monkeypatch.syspath_prepend(os.path.join(ROOT, 'scripts', 'utils'))
    import route_args
    parsers = [make_hdf5.prepare_parser(), calculate_inception_moments.prepare_parser()]
    args = ['--data_root', 'd', '--chunk_size=7', '--compression', '--inception_weights', 'w',
            '--seed', '-1', '--num_workers', '0']
    hdf5, moments = route_args.route(args, parsers, ['a', 'b'])
    assert hdf5 == ['--data_root', 'd', '--chunk_size=7', '--compression', '--num_workers', '0']
    assert moments == ['--data_root', 'd', '--inception_weights', 'w', '--seed', '-1',
                       '--num_workers', '0']
    for bad in (['--nope', '1'], ['stray']):
        with pytest.raises(ValueError, match='none of a, b'):
            route_args.route(bad, parsers, ['a', 'b'])


def _prepare_data(*args):
    return subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'utils', 'prepare_data.sh'),
                           *args], capture_output=True, text=True,
                          env={**os.environ, 'PY': sys.executable})


@pytest.mark.slow
def test_prepare_data_passes_inception_weights_to_the_moments_step_only(tmp_path):
    folder = make_solid_folder(str(tmp_path / 'imgs'), {'a': (255, 0, 0), 'b': (0, 0, 255)})
    missing = str(tmp_path / 'no_such_weights.pth')
    result = _prepare_data('--dataset', 'ImageFolder', '--data_root', folder, '--resolution',
                           '32', '--num_workers', '0', '--inception_weights', missing)
    # make_hdf5.py ran (it would refuse --inception_weights), then the moments program got the
    # weights and failed on them with its own error.
    assert os.path.exists(tmp_path / 'imgs32.hdf5'), result.stderr
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: --inception_weights {missing}: no such file')


def test_prepare_data_refuses_a_flag_neither_program_takes(tmp_path):
    result = _prepare_data('--data_root', str(tmp_path), '--inception_weight', 'w.pth')
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: '--inception_weight' is a flag of none of make_hdf5.py, "
        'calculate_inception_moments.py (see their --help)')
    assert os.listdir(tmp_path) == []  # stopped before make_hdf5.py started


def test_the_file_declares_its_classes(tmp_path):
    out = make_hdf5.run(config(dataset='ImageFolder', resolution=32,
                               data_root=make_image_folder(str(tmp_path / 'img'))))
    with h5py.File(out, 'r') as f:
        assert int(f['labels'].attrs['n_classes']) == 2


def test_a_killed_writers_temporary_is_removed_by_the_next_run(tmp_path):
    root = make_image_folder(str(tmp_path / 'img'))
    out = tmp_path / 'out' / 'x.hdf5'
    out.parent.mkdir()
    left = leave_dead_temporary(str(out.parent), 'x.hdf5')
    assert os.path.exists(left)
    make_hdf5.run(config(dataset='ImageFolder', resolution=32, data_root=root, out=str(out)))
    assert os.listdir(out.parent) == ['x.hdf5']


def test_an_injected_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def full(x):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(make_hdf5, 'to_uint8', full)
    monkeypatch.setattr(make_hdf5, '_UNCLOSABLE', [])
    root = make_image_folder(str(tmp_path / 'img'))
    out = tmp_path / 'out' / 'x.hdf5'
    with pytest.raises(atomic.DiskFullError, match=r"the disk is full writing 'x.hdf5' in"):
        make_hdf5.run(config(dataset='ImageFolder', resolution=32, data_root=root,
                             out=str(out)))
    assert os.listdir(out.parent) == []


FULL_DISK = '''
set -e
mount -t tmpfs -o size={size} tmpfs {mnt}
cd {root}
{python} make_hdf5.py --dataset ImageFolder --resolution 64 --data_root {data} --out {mnt}/x.hdf5 \\
    --num_workers 0 --batch_size 8 --chunk_size 4 {extra} 2>{mnt}.err || echo "rc=$?" >{mnt}.rc
ls -A {mnt} >{mnt}.ls
'''


@pytest.mark.parametrize('extra', ['', '--compression'])
def test_make_hdf5_onto_a_full_tmpfs_is_one_error_line(tmp_path, extra):
    """A real full disk: a 300 KB tmpfs for 1 MB of images, mounted in a user namespace
    (skipped where the system allows none). Without compression the size is known and the
    run stops before writing; with it, HDF5 fails mid-write (which crashed with exit 139)."""
    data = tmp_path / 'img'
    rng = np.random.default_rng(0)
    for i in range(64):
        (data / f'c{i % 2}').mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            data / f'c{i % 2}' / f'{i}.png')
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    script = FULL_DISK.format(size='300k', mnt=mnt, root=ROOT, python=sys.executable,
                              data=data, extra=extra)
    try:
        probe = subprocess.run(['unshare', '-rm', 'true'], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip('no user namespaces here to mount a small tmpfs in')
    subprocess.run(['unshare', '-rm', 'sh', '-c', script], check=True, timeout=300)
    err = (tmp_path / 'mnt.err').read_text()
    assert (tmp_path / 'mnt.rc').read_text().strip() == 'rc=2', err
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'x.hdf5' in errors[0] and 'Traceback' not in err, err
    assert (tmp_path / 'mnt.ls').read_text() == ''
