"""Run trackers: copies of a run's logs for TensorBoard (--tensorboard) and Weights & Biases
(--wandb).

The logs stay the record (the JSONL, the per-metric `.log` files and the sheets on disk); a
tracker receives the same values at the moment they are written there, and the sheet images as
they were saved, so it changes no number. Only rank 0 tracks. Tags group what a dashboard shows
side by side: `train/<loss>`, `test/<metric>`, `lr/<net>`, `sv_G/<layer>` and `sv_D/<layer>`
(the singular values of each network), `sheets/<name>` for images.

Both packages are optional: the flags' checks (`need_tensorboard`, `need_wandb`) refuse a run
that asks for a missing one at start-up, naming the install.
"""
import importlib.util
import json
import os
import re
import secrets
import socket
import string
import time
from typing import Dict, Iterable, List, Optional, Tuple

# `G_blocks_0_conv1_sv0` -> ('G', 'blocks_0_conv1_sv0'): the singular-value logs of get_SVs.
SV_NAME = re.compile(r'^([GD])_(.+_sv\d+)$')


def _need(package: str, flag: str):
    def check(wanted: bool) -> None:
        if wanted and importlib.util.find_spec(package) is None:
            raise ValueError(f'{flag} needs the optional package {package!r}, which is not '
                             f'installed: pip install {package}')
    return check


need_tensorboard = _need('tensorboard', 'tensorboard')
need_wandb = _need('wandb', 'wandb')


def train_tag(name: str) -> str:
    """The tag of one training log: its network's singular-value group, else `train/`."""
    match = SV_NAME.match(name)
    return f'sv_{match[1]}/{match[2]}' if match else f'train/{name}'


def test_tags(record: dict) -> Dict[str, float]:
    """The numeric entries of one JSONL record, tagged `test/<key>` (not `itr`, `_stamp`)."""
    return {f'test/{key}': float(value) for key, value in record.items()
            if key not in ('itr', '_stamp') and isinstance(value, (int, float))
            and not isinstance(value, bool)}


def flags_text(config: dict) -> str:
    """The run's flags as a Markdown table (TensorBoard renders text summaries as Markdown)."""
    rows = [f'| {key} | {json.dumps(value, default=str)} |' for key, value in
            sorted(config.items())]
    return '\n'.join(['| flag | value |', '|---|---|'] + rows)


class TensorBoard:
    """An event file under `folder`, written in the training thread, one event per call.
    torch's SummaryWriter hands every value to a writer thread, and on a busy host the wait
    for that thread's turn at the GIL cost milliseconds per iteration; writing a few hundred
    bytes into a buffered file costs microseconds. The file is flushed at each test and save
    and when the run ends. A resumed run writes a new file that starts with a session start at
    its first iteration, for which TensorBoard drops what an earlier file holds from that
    iteration on (what the crash lost, as the resume trims the logs)."""

    def __init__(self, folder: str, config: dict, start_itr: int = 0):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter
        from torch.utils.tensorboard import summary
        self.Event, self.Summary, self.summary = Event, Summary, summary
        os.makedirs(folder, exist_ok=True)
        name = f'events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}'
        self.file = RecordWriter(open(os.path.join(folder, name), 'wb'))
        self._write(Event(wall_time=time.time(), file_version='brain.Event:2'))
        self._write(Event(wall_time=time.time(), step=0,
                          summary=summary.text('flags', flags_text(config))))
        self._write(Event(wall_time=time.time(), step=start_itr + 1,
                          session_log=SessionLog(status=SessionLog.START)))

    def _write(self, event) -> None:
        self.file.write(event.SerializeToString())

    def scalars(self, itr: int, values: Dict[str, float]) -> None:
        self._write(self.Event(wall_time=time.time(), step=itr, summary=self.Summary(value=[
            self.Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])))

    def image(self, itr: int, tag: str, array) -> None:
        self._write(self.Event(wall_time=time.time(), step=itr,
                               summary=self.summary.image(tag, array, dataformats='HWC')))

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class WandB:
    """A W&B run in `folder` (offline: `wandb/offline-run-*`, uploadable with `wandb sync`),
    with the flags as its config. The run id comes from the checkpoint on a resume, so the
    resumed run appends to the same W&B run; every entry carries `itr`, the x axis of all."""

    def __init__(self, folder: str, config: dict, name: str, run_id: str):
        import wandb
        self.wandb = wandb
        self.run = wandb.init(project=config['wandb_project'], name=name, id=run_id,
                              resume='allow', mode=config['wandb_mode'], dir=folder,
                              config=dict(config))
        self.run.define_metric('itr')
        self.run.define_metric('*', step_metric='itr')

    def scalars(self, itr: int, values: Dict[str, float]) -> None:
        self.run.log({**values, 'itr': itr})

    def image(self, itr: int, tag: str, array) -> None:
        self.run.log({tag: self.wandb.Image(array), 'itr': itr})

    def flush(self) -> None:
        pass  # the W&B service writes as it receives

    def close(self) -> None:
        self.run.finish()


def new_wandb_id() -> str:
    """A fresh W&B run id: 8 lower-case letters and digits, as W&B's own."""
    alphabet = string.ascii_lowercase + string.digits
    return ''.join(secrets.choice(alphabet) for _ in range(8))


class Trackers:
    """Every tracker the flags ask for (none: each call does nothing)."""

    def __init__(self, sinks: Iterable = ()):
        self.sinks = list(sinks)

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def scalars(self, itr: int, values: Dict[str, float]) -> None:
        for sink in self.sinks:
            sink.scalars(itr, values)

    def train(self, itr: int, values: Dict[str, float]) -> None:
        self.scalars(itr, {train_tag(name): value for name, value in values.items()})

    def test(self, record: dict) -> None:
        self.scalars(int(record['itr']), test_tags(record))
        for sink in self.sinks:
            sink.flush()

    def images(self, itr: int, sheets: List[Tuple[str, str]]) -> None:
        """The sheets saved at `itr`, (name, path) each, read back from their files."""
        if not self.sinks:
            return
        import numpy as np
        from PIL import Image
        for name, path in sheets:
            with Image.open(path) as image:
                array = np.asarray(image.convert('RGB'))
            for sink in self.sinks:
                sink.image(itr, f'sheets/{name}', array)
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []


def open_trackers(config: dict, experiment_name: str, state_dict: dict) -> Trackers:
    """The trackers of this run (on rank 0; call nowhere else). With --wandb, `state_dict`
    must hold a `wandb_id` entry: the resumed run's id, or None, which is set to a new one
    here so that every checkpoint keeps it."""
    sinks = []
    folder = os.path.join(config['logs_root'], experiment_name)
    if config['tensorboard']:
        sinks.append(TensorBoard(os.path.join(folder, 'tensorboard'), config,
                                 state_dict['itr']))
    if config['wandb']:
        state_dict['wandb_id'] = state_dict.get('wandb_id') or new_wandb_id()
        os.makedirs(folder, exist_ok=True)
        sinks.append(WandB(folder, config, experiment_name, state_dict['wandb_id']))
    return Trackers(sinks)


class TrackedTrainLog:
    """A MyLogger whose every record also goes to the trackers."""

    def __init__(self, log, trackers: Trackers):
        self.inner, self.trackers = log, trackers

    def log(self, itr: int, **values) -> None:
        self.inner.log(itr, **values)
        self.trackers.train(itr, values)

    def close(self) -> None:
        self.inner.close()


class TrackedTestLog:
    """A MetricsLogger whose every record also goes to the trackers."""

    def __init__(self, log, trackers: Trackers):
        self.inner, self.trackers = log, trackers

    def log(self, record: Optional[dict] = None, **kwargs) -> None:
        self.inner.log(record, **kwargs)
        self.trackers.test(dict(record or {}, **kwargs))
