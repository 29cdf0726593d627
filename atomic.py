"""Writes that never leave a half-written file, and the locks that keep one writer per weights
folder and let readers see whole checkpoints.

- `atomic_write(path, write)`: write to a temporary name beside `path`, fsync, rename into place.
  A full disk is a `DiskFullError` naming the file (torch.save hides ENOSPC behind a RuntimeError).
- `RunLock(folder)`: the one-writer lock of an experiment, `<folder>/.lock`, held with flock for
  the life of the training process; the OS releases it when the process dies, however it dies.
- `set_lock(folder, shared)`: held exclusively while a checkpoint's files are renamed into place,
  shared while a reader reads them, so a reader sees the set before the save or after it.
- `uninterrupted()`: a block (a save's renames) that a signal handler's exception must not cut
  short; `raise_when_safe` (from the handler) raises at once outside it, at its end inside it.
Files get the permissions the umask gives any new file (`new_file_mode`).

Temporaries are named `.tmp-<PID>-<host>-<name>` (`temp_path`): a later run removes those of
writers that died on this host (`remove_dead_temporaries`), and never another host's, whose
PIDs it cannot check on a shared disk.
"""
import contextlib
import errno
import fcntl
import os
import shutil
import socket
import time
from typing import Iterator, Optional

TMP_PREFIX = '.tmp-'
LOCK_FILE = '.lock'
SET_LOCK_FILE = '.set-lock'


class DiskFullError(OSError):
    """The disk (or quota) ran out while writing a file."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC  # after construction: the message stays the whole str()


class RunLockedError(OSError):
    """Another process trains (or is recovering) this experiment."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.EBUSY


def new_file_mode() -> int:
    """The permissions a file created now gets from the umask (0o644 under umask 022), for
    files made with tempfile.mkstemp: it always makes them 0o600, so a data set or weights file
    renamed into place would be readable by its owner alone, whatever the lab's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _disk_full(error: BaseException, folder: str) -> bool:
    """Whether `error` came from a full disk or quota: ENOSPC/EDQUOT, or torch.save's
    RuntimeError (its C++ writer drops the errno) while the disk has no room left."""
    for cause in (error, error.__cause__, error.__context__):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    if isinstance(error, RuntimeError):
        try:
            return shutil.disk_usage(folder).free < 1 << 20
        except OSError:
            return False
    return False


def temp_path(folder: str, name: str) -> str:
    """The temporary name of `name` in `folder` for this process: `.tmp-<PID>-<host>-<name>`."""
    return os.path.join(folder, f'{TMP_PREFIX}{os.getpid()}-{socket.gethostname()}-{name}')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_dead_temporaries(folder: str) -> list:
    """Remove the temporaries in `folder` (see `temp_path`) whose writer on this host is no
    longer running, as a killed writer leaves them; return the paths removed. Temporaries of
    other hosts and of live processes stay (a reused PID keeps one until it, too, is gone)."""
    mark = f'-{socket.gethostname()}-'
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        pid, sep, rest = entry[len(TMP_PREFIX):].partition('-')
        if (not entry.startswith(TMP_PREFIX) or not sep or not pid.isdigit()
                or not f'-{rest}'.startswith(mark) or int(pid) == os.getpid()
                or _alive(int(pid))):
            continue
        path = os.path.join(folder, entry)
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass  # gone already, or not ours to remove: left as it was
    return removed


def disk_full_error(error: BaseException, path: str) -> Optional[DiskFullError]:
    """A DiskFullError naming `path` when `error` came from a full disk or quota, else None."""
    folder = os.path.dirname(os.path.abspath(path))
    if not _disk_full(error, folder):
        return None
    cause = ' '.join(str(error).split())  # one line: HDF5's messages hold line breaks
    if len(cause) > 200:
        cause = cause[:197] + '...'
    return DiskFullError(f'the disk is full writing {os.path.basename(path)!r} in {folder!r} '
                         f'({type(error).__name__}: {cause}); free some space, the files '
                         f'there before this write are untouched')


def write_temp(folder: str, name: str, write) -> str:
    """Write `name`'s content through `write(fileobj)` to a temporary file in `folder` and fsync
    it; return the temporary path. Nothing is left behind on failure."""
    tmp = temp_path(folder, name)
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:
        remove(tmp)
        full = disk_full_error(error, os.path.join(folder, name))
        if full is not None:
            raise full from None
        raise
    return tmp


def atomic_write(path: str, write) -> None:
    """Write a file through `write(fileobj)` to a temporary name, fsync, rename into place."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = write_temp(folder, os.path.basename(path), write)
    try:
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


class _Uninterrupted:
    depth = 0
    deferred: Optional[BaseException] = None


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A block that `raise_when_safe` does not interrupt: an exception it is given meanwhile is
    raised when the outermost such block ends (normally; an error inside wins)."""
    _Uninterrupted.depth += 1
    try:
        yield
    finally:
        _Uninterrupted.depth -= 1
    if _Uninterrupted.depth == 0 and _Uninterrupted.deferred is not None:
        error, _Uninterrupted.deferred = _Uninterrupted.deferred, None
        raise error


def raise_when_safe(error: BaseException) -> None:
    """From a signal handler: raise `error` now, or at the end of the `uninterrupted` block the
    program is in (renames half done would leave a mixed set for readers until recovery)."""
    if _Uninterrupted.depth:
        _Uninterrupted.deferred = error
        return
    raise error


# ------------------------------------------------------------------------------------------------
# Locks
# ------------------------------------------------------------------------------------------------

class RunLock:
    """The one-writer lock of a weights folder. `acquire()` raises RunLockedError naming the
    holder's PID and host when another process holds it (after `wait` seconds of retries, which
    cover a reader's brief hold while it finishes an interrupted save)."""

    def __init__(self, folder: str, what: str = 'training'):
        self.folder, self.what = folder, what
        self.path = os.path.join(folder, LOCK_FILE)
        self._file = None

    def acquire(self, wait: float = 0.0) -> 'RunLock':
        os.makedirs(self.folder, exist_ok=True)
        f = open(self.path, 'a+')
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or 'another process'
                    f.close()
                    raise RunLockedError(
                        f'{self.folder!r} is in use by {holder}: one process at '
                        f'a time may write an experiment; wait for it to end, or give this run '
                        f'another --experiment_name') from None
                time.sleep(0.1)
        f.seek(0)
        f.truncate()
        f.write(f'PID {os.getpid()} on host {socket.gethostname()} ({self.what})\n')
        f.flush()
        self._file = f
        return self

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting."""
        try:
            self.acquire()
            return True
        except RunLockedError:
            return False

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> 'RunLock':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def set_lock(folder: str, shared: bool) -> Iterator[None]:
    """Exclusive while a save renames its files into `folder`, shared while a reader reads
    them. Readers never create the lock file: where there is none, or it cannot be opened (a
    read-only copy, where nobody writes), they read without it."""
    path = os.path.join(folder, SET_LOCK_FILE)
    f: Optional[object] = None
    if not shared:
        f = open(path, 'a+')
    elif os.path.exists(path):  # no lock file: nothing of ours has saved here yet
        try:
            f = open(path, 'r')
        except OSError:
            pass
    try:
        if f is not None:
            fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        if f is not None:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
