"""Logs: the test-metrics JSONL, the per-metric training logs (losses, read back late by
`DeferredLog` and checked finite, and singular values from `get_SVs`), the metadata file and the
console progress display, in the original's formats.

The JSONL and metadata files are rewritten atomically. The per-metric logs are appended a whole
line per write and flushed; on opening, a torn last line (a crash mid-write) is cut off and, on
resume, entries past the checkpoint's iteration are dropped, so a resumed run's logs read as if
it had never stopped.
"""
import datetime
import errno
import json
import math
import os
import sys
import time
from typing import Dict, Iterable, Iterator, Optional

import torch

import distributed
from atomic import atomic_write_text, disk_full_error


class MetricsLogger:
    """`<logs_root>/<exp>_log.jsonl`: one JSON object per test, keys in the order given, plus
    `_stamp` (the UNIX time of the record), as the original's MetricsLogger."""

    def __init__(self, fname: str, reinitialize: bool = False, start_itr: Optional[int] = None):
        self.fname = fname
        self.records = []
        if os.path.exists(fname):
            if reinitialize:
                print(f'{fname} exists, deleting...')
                os.remove(fname)
            else:
                self.records = _read_jsonl(fname, start_itr)
                atomic_write_text(fname, ''.join(r + '\n' for r in self.records))

    def log(self, record: Optional[dict] = None, **kwargs) -> None:
        record = dict(record or {}, **kwargs)
        record['_stamp'] = time.time()
        self.records.append(json.dumps(record, ensure_ascii=True))
        atomic_write_text(self.fname, ''.join(r + '\n' for r in self.records))


def _read_jsonl(fname: str, start_itr: Optional[int]) -> list:
    kept = []
    with open(fname) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn line from a crash
            if start_itr is None or record.get('itr', 0) <= start_itr:
                kept.append(json.dumps(record, ensure_ascii=True))
    return kept


class MyLogger:
    """`<logs_root>/<exp>/<metric>.log`, lines `"%d: %s" % (itr, logstyle % value)`, as the
    original's MyLogger."""

    def __init__(self, fname: str, reinitialize: bool = False, logstyle: str = '%3.3e',
                 start_itr: Optional[int] = None):
        self.root = fname
        os.makedirs(self.root, exist_ok=True)
        self.reinitialize = reinitialize
        self.logstyle = logstyle
        self.files: Dict[str, object] = {}
        if not reinitialize:
            for entry in os.listdir(self.root):
                if entry.endswith('.log'):
                    _trim_log(os.path.join(self.root, entry), start_itr)

    def _file(self, name: str):
        if name not in self.files:
            path = os.path.join(self.root, f'{name}.log')
            if self.reinitialize and os.path.exists(path):
                print(f'{path} exists, deleting...')
                os.remove(path)
            # Unbuffered appends: a line is on disk or not there at all, and a full disk
            # fails in log(), naming the file, not later in a flush that names none.
            self.files[name] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        return self.files[name]

    def log(self, itr: int, **kwargs) -> None:
        for name, value in kwargs.items():
            fd = self._file(name)
            line = ('%d: %s\n' % (itr, self.logstyle % value)).encode()
            size = os.fstat(fd).st_size
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, 'short write')
            except OSError as error:
                try:
                    os.ftruncate(fd, size)  # no torn line left behind
                except OSError:
                    pass  # the torn line is cut off when the log is opened again
                path = os.path.join(self.root, f'{name}.log')
                raise (disk_full_error(error, path)
                       or OSError(error.errno, f'cannot write the log {path!r}: '
                                               f'{error.strerror}')) from None

    def close(self) -> None:
        for fd in self.files.values():
            os.fsync(fd)
            os.close(fd)
        self.files = {}


def _trim_log(path: str, start_itr: Optional[int]) -> None:
    """Drop a torn last line and, when resuming, entries after `start_itr`."""
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        if not line.endswith('\n'):
            break
        head = line.split(':', 1)[0]
        if start_itr is not None and head.strip().isdigit() and int(head) > start_itr:
            break
        kept.append(line)
    if len(kept) != len(lines):
        atomic_write_text(path, ''.join(kept))


def write_metadata(logs_root: str, experiment_name: str, config: dict, state_dict: dict) -> None:
    """`<logs_root>/<exp>/metalog.txt`: the date, the config and the training state."""
    folder = os.path.join(logs_root, experiment_name)
    os.makedirs(folder, exist_ok=True)
    state = {k: v for k, v in state_dict.items() if k not in ('config', 'rng')}
    atomic_write_text(os.path.join(folder, 'metalog.txt'),
                      f'datetime: {datetime.datetime.now()}\nconfig: {dict(config)}\n'
                      f'state: {state}\n')


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f'{minutes}:{seconds:02d}'


def progress(items: Iterable, desc: str = '', total: Optional[int] = None,
             displaytype: str = 's1k', start: int = 0, stream=None) -> Iterator:
    """The original's progress line: `n/total (pct%) (TE/ET1k: m:ss / m:ss)`; with
    displaytype 's1k' the estimate is to the next multiple of 1000 items, else to the end."""
    stream = stream or sys.stdout
    total = total if total is not None else len(items)
    t_start = time.time()
    n = start
    for n, item in enumerate(items, start + 1):
        # The line goes out before the item is processed, so train.py can append the item's
        # losses to it, as the original's display did.
        elapsed = time.time() - t_start
        pct = 100.0 * n / total if total else 100.0
        line = f'\r{desc}{n}/{total} ({pct:6.2f}%)'
        if n > start + 1:
            rate = elapsed / (n - start - 1)
            target = (n // 1000 + 1) * 1000 if displaytype == 's1k' else total
            label = 'ET1k' if displaytype == 's1k' else 'ETA'
            line += f' (TE/{label}: {_clock(elapsed)} / {_clock(rate * (target - n))})'
        stream.write(line + ' ')
        stream.flush()
        yield item
    stream.write(f'\r{desc}{n}/{total} (took {_clock(time.time() - t_start)})\n')
    stream.flush()


def get_SVs(net, prefix: str) -> dict:
    """Every SN singular-value buffer, named as the original's logs (its utils.get_SVs: one
    `<prefix>_<module path>_sv<i>` log per buffer, dots made underscores), as 0-dim views
    (`DeferredLog.add` copies them before the next forward changes the buffers)."""
    return {f'{prefix}_{key}'.replace('.', '_'): value[0]
            for key, value in net.state_dict().items() if 'sv' in key}


def check_finite(metrics: Dict[str, float], itr: int) -> None:
    """Stop with a clear message on a NaN or Inf loss (nothing is saved from such a state)."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f'iteration {itr}: non-finite loss {bad}; stopping without saving (checkpoints '
            f'saved before are left as they were). Lower the learning rates, or resume from '
            f'an earlier copy')


class DeferredLog:
    """The training metrics, kept on the device and read back every `every` iterations in one
    transfer (averaged over ranks), then checked and logged iteration by iteration, exactly as
    if each had been read at once. Reading a value back makes the host wait for the device;
    doing it once per N iterations lets the host queue the next steps meanwhile.

    Call `flush()` before every save and test (on every rank: it is a collective), so nothing
    is saved from a state whose losses were not checked.
    """

    def __init__(self, train_log, every: int = 1, show: bool = False):
        self.train_log, self.every, self.show = train_log, every, show
        self.pending: list = []  # (itr, names, values on the device, are these losses)

    def add(self, itr: int, values: dict, losses: bool = True) -> None:
        names = list(values)
        flat = (torch.stack([v.detach().float().reshape(()) for v in values.values()])
                if values else torch.zeros(0))
        self.pending.append((itr, names, flat, losses))
        if losses and sum(entry[3] for entry in self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        local = torch.cat([entry[2].to(self.pending[0][2].device) for entry in self.pending])
        # Losses are averaged over ranks (the loss of the whole batch, as the original logged);
        # singular values are equal on every rank and logged as they are.
        both = torch.stack([local, distributed.mean_over_ranks(local)]).tolist()
        pending, self.pending, start = self.pending, [], 0
        for itr, names, flat, losses in pending:
            row = both[1] if losses else both[0]
            values = dict(zip(names, row[start:start + len(names)]))
            start += len(names)
            if losses:
                check_finite(values, itr)
            self.train_log.log(itr, **values)
            if losses and self.show:
                print(', '.join([f'itr: {itr}'] + [f'{k} : {v:+4.3f}' for k, v in values.items()]),
                      end=' ')
