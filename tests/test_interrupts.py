"""Killed and interrupted writers: the temporaries of dead writers are removed by the next run
(this host's only), SIGTERM and Ctrl-C remove the writer's own and end with one line and the
signal's status."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import atomic
from conftest import ROOT
from data_helpers import leave_dead_temporary


def test_only_dead_writers_temporaries_of_this_host_are_removed(tmp_path):
    folder = str(tmp_path)
    dead = leave_dead_temporary(folder, 'x.hdf5')
    assert os.path.basename(dead).startswith('.tmp-')
    assert f'-{socket.gethostname()}-x.hdf5' in dead
    mine = atomic.temp_path(folder, 'y.hdf5')  # this process: alive
    pid = int(os.path.basename(dead).split('-')[1])
    other_host = os.path.join(folder, f'.tmp-{pid}-another.host-x.hdf5')
    keep = [mine, other_host, os.path.join(folder, 'x.hdf5'),
            os.path.join(folder, f'.tmp-{pid}-x.hdf5')]  # an older name, without the host
    for path in keep:
        open(path, 'w').close()
    with subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) as live:
        alive = os.path.join(folder, f'.tmp-{live.pid}-{socket.gethostname()}-z.npz')
        open(alive, 'w').close()
        try:
            assert atomic.remove_dead_temporaries(folder) == [dead]
        finally:
            live.kill()
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in keep + [alive])


WRITER = '''
import sys, time
import torch
import make_hdf5, utils

class Slow:
    dataset = range(8)

    def __iter__(self):
        yield torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
        print('writing', flush=True)
        time.sleep(60)

with utils.exit_on_interrupt('no partial HDF5 file is left'), utils.exit_on_user_error():
    make_hdf5.write_hdf5(Slow(), sys.argv[1], 32)
'''


@pytest.mark.parametrize('signum, status', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_write_removes_the_temporary_and_is_one_line(tmp_path, signum, status):
    out = tmp_path / 'out' / 'x.hdf5'
    process = subprocess.Popen([sys.executable, '-c', WRITER, str(out)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout.readline().strip() == 'writing'
    assert any(name.startswith(atomic.TMP_PREFIX) for name in os.listdir(out.parent))
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    lines = [line for line in err.splitlines() if line.strip() and 'writing x.hdf5' not in line]
    assert lines == ['interrupted ({}): no partial HDF5 file is left'.format(
        'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM')], err
    assert os.listdir(out.parent) == []


def test_exit_on_interrupt_leaves_forked_children_their_default_sigterm(tmp_path):
    # A DataLoader worker is a forked child: SIGTERM must end it as before, not unwind it.
    code = ('import os, signal, sys, time, utils\n'
            'with utils.exit_on_interrupt():\n'
            '    pid = os.fork()\n'
            '    if pid == 0:\n'
            '        time.sleep(60); os._exit(0)\n'
            '    time.sleep(0.5); os.kill(pid, signal.SIGTERM)\n'
            '    print(os.waitpid(pid, 0)[1] & 0x7f)\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == str(int(signal.SIGTERM))
