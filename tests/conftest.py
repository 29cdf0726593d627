"""Shared test set-up: the repository root on sys.path, deterministic CPU torch, and a time
limit per test where TEST_TIMEOUT_S is set."""
import os
import signal
import sys
import threading

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GOLDEN_DIR = os.path.join(ROOT, 'tests', 'golden')


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for a module of tiny models and tensors: the fastest there, and far
    faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def hdf5_file(tmp_path_factory):
    """A tiny HDF5 data set in make_hdf5.py's layout: 24 random 32 x 32 images, 3 classes."""
    from data_helpers import random_hdf5
    path = tmp_path_factory.mktemp('data') / 'tiny.hdf5'
    random_hdf5(str(path), n=24, size=32, n_classes=3, seed=0)
    return str(path)


@pytest.fixture(autouse=True)
def _seed_torch():
    # Every test starts from the same RNG state, so failures reproduce.
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _time_limit():
    """TEST_TIMEOUT_S=N (scripts/gpu_check.sh sets it): a test still running after N seconds
    fails with a TimeoutError and the next one runs, so one hung test cannot take the rest of
    the run. Python code is interrupted; a call stuck inside one C function is not."""
    limit = int(os.environ.get('TEST_TIMEOUT_S') or 0)
    if limit <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f'the test ran over TEST_TIMEOUT_S={limit} s')
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def leave_spawned_worker() -> None:
    """End a torch.multiprocessing.spawn worker that finished its work (results written and
    closed, process group destroyed) without interpreter shutdown.

    gloo's worker threads may still be releasing the last collective of a backward pass, which
    holds the autograd engine's Python context and needs the GIL to let it go; once shutdown
    has begun, taking the GIL ends the thread mid-destructor and the process aborts
    ("terminate called without an active exception"), which failed the test now and then
    under load. Errors still surface: only a worker that got here leaves this way.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def assert_same_state(one, two, where: str = '') -> None:
    """Two loaded checkpoint files hold the same state, tensors bit for bit. The set id is
    left out: two runs (one straight, one stopped and resumed) each mint their own run id."""
    import checkpoints
    if torch.is_tensor(one):
        assert torch.equal(one, two), where
    elif isinstance(one, dict):
        assert one.keys() == two.keys(), where
        for key in one:
            if key != checkpoints.SET_KEY:
                assert_same_state(one[key], two[key], f'{where}.{key}')
    elif isinstance(one, (list, tuple)):
        for i, (x, y) in enumerate(zip(one, two)):
            assert_same_state(x, y, f'{where}[{i}]')
    else:
        assert one == two, where


def one_error_line(result, *fragments: str) -> str:
    """A program's run ended as bad input should: exit 2, no traceback, one `error:` line on
    stderr holding each of `fragments`. Returns that line."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
