"""Faults whose error line used to name no file or flag: a full disk under the logs, a
non-UTF-8 name, an npz of objects or a bare .npy, an error inside a DataLoader worker."""
import errno
import os

import numpy as np
import pytest
import torch

import atomic
import loggers
import utils
from metric_inputs import npz_images


def test_a_full_logs_disk_names_the_log_and_leaves_no_torn_line(tmp_path, monkeypatch):
    log = loggers.MyLogger(str(tmp_path / 'logs'))
    log.log(1, G_loss=0.5)
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[:3])  # a torn line, then the disk is full
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'write', half_then_full)
    with pytest.raises(atomic.DiskFullError, match=r"disk is full writing 'G_loss.log' in .*logs"):
        log.log(2, G_loss=0.25)
    monkeypatch.undo()
    log.close()
    assert (tmp_path / 'logs' / 'G_loss.log').read_text() == '1: 5.000e-01\n'


def test_a_non_utf8_experiment_name_is_refused_naming_the_flag():
    name = os.fsdecode(b'run\xff')
    with pytest.raises(ValueError, match=r"--experiment_name 'run\\udcff' is not valid UTF-8"):
        utils.check_experiment_name(name)


def test_a_non_utf8_image_folder_gets_an_index(tmp_path):
    import data_sources
    path = data_sources.index_cache_path(os.fsdecode(os.fsencode(str(tmp_path)) + b'/img\xff'))
    assert path.endswith('_imgs.npz')


@pytest.mark.parametrize('write, match', [
    (lambda p: np.savez(p, x=np.array([{'a': 1}, None], dtype=object)),
     'not a readable npz of images .Object arrays'),
    (lambda p: np.save(p, np.zeros((2, 3, 8, 8), np.uint8)), 'a .npy array, not an npz'),
])
def test_samples_that_are_no_npz_of_images_name_the_file(tmp_path, write, match):
    path = str(tmp_path / 'samples.npz')
    with open(path, 'wb') as f:
        write(f)
    with pytest.raises(ValueError, match=match) as err:
        npz_images(path)
    assert path in str(err.value)


def test_an_error_in_a_dataloader_worker_is_its_own_one_line_message():
    class Gone(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise FileNotFoundError("image file 'x.png' is gone")
    loader = torch.utils.data.DataLoader(Gone(), num_workers=1)
    with pytest.raises(FileNotFoundError) as err:
        next(iter(loader))
    assert '\n' in str(err.value)  # torch puts the worker's traceback in the message
    assert utils.one_line(err.value) == "image file 'x.png' is gone"
