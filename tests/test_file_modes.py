"""Files the project writes get the permissions the umask gives any new file (0644 under umask
022), so others in a lab can read a shared HDF5, index cache, checkpoint or moments file; the
temporary-then-rename writes must not leave them 0600."""
import os
import stat

import numpy as np
import pytest
import torch

import checkpoints
import data_sources
import inception_utils
import make_hdf5
from data_helpers import make_image_folder
from TFHub.variables import atomic_path


@pytest.fixture(params=[0o022, 0o027], ids=['umask022', 'umask027'])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_take_the_umask_mode(tmp_path, umask):
    expected = 0o666 & ~umask  # 0644, or 0640 under 027
    folder = tmp_path / 'ImageNet'
    make_image_folder(str(folder))
    config = {**vars(make_hdf5.prepare_parser().parse_args([])), 'dataset': 'I32',
              'data_root': str(tmp_path), 'batch_size': 2, 'num_workers': 0}
    hdf5 = make_hdf5.run(config)  # also writes the image folder's index cache
    index = data_sources.index_cache_path(str(folder))
    state = {'w': torch.zeros(2)}

    class Net:
        def state_dict(self):
            return state
    checkpoints.save_weights(Net(), Net(), {'itr': 1}, str(tmp_path / 'weights'), 'exp')
    moments = str(tmp_path / 'moments.npz')
    inception_utils.save_moments(moments, mu=np.zeros(2), sigma=np.eye(2))
    with atomic_path(str(tmp_path / 'biggan-128.pth')) as tmp:
        torch.save(state, tmp)
    paths = [hdf5, index, moments, str(tmp_path / 'biggan-128.pth')] + \
        [str(p) for p in (tmp_path / 'weights' / 'exp').iterdir()]
    assert len(paths) == 8 and all(os.path.isfile(p) for p in paths)  # .set-lock too
    assert {os.path.basename(p): oct(_mode(p)) for p in paths} == \
        {os.path.basename(p): oct(expected) for p in paths}
