"""Stopping training on a scheduler's signal with a checkpoint: `--save_on_signal`.

SLURM, Kubernetes and most batch systems send a signal (SIGTERM, or the one asked for, such as
SLURM's `--signal=USR1@120`) some time before they kill a job. `StopSignals` catches the signals
named by --save_on_signal (default TERM, HUP and USR1): the first only records which arrived; the
training loop finishes its iteration, decides with the other ranks (`distributed.any_rank`),
saves a complete checkpoint and ends with the signal's conventional exit status, 128 + its
number. A second signal while that checkpoint's files are written abandons the save (the previous
checkpoint stays the newest, nothing half-written is left); during the final renames, which take
milliseconds, it waits for them to end (atomic.uninterrupted). SIGINT (Ctrl-C) is not among them:
it stops at once, as it always did (exit 130). `left_behind` says what any stop leaves: the
newest checkpoint and a resume command that works from any directory.
"""
import os
import shlex
import signal
import sys
from typing import Dict, List, Optional

import atomic
import checkpoints

SIGNALS = ('TERM', 'HUP', 'USR1', 'USR2', 'QUIT', 'XCPU')  # the signals --save_on_signal takes
DEFAULT = 'TERM,HUP,USR1'
PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')


def parse(value: str) -> List[int]:
    """'TERM,USR1' (or SIGTERM, any case) -> their numbers; 'none' -> []."""
    if value.strip().lower() == 'none':
        return []
    numbers = []
    for part in value.split(','):
        name = part.strip().upper()
        name = name[3:] if name.startswith('SIG') else name
        if name not in SIGNALS:
            raise ValueError(f"save_on_signal {value!r}: {part.strip()!r} is not a signal it "
                             f"takes; give a comma-separated list of {', '.join(SIGNALS)}, or "
                             f"'none'")
        numbers.append(int(getattr(signal, f'SIG{name}')))
    return numbers


def check(value: str) -> None:
    """The flag table's check of --save_on_signal."""
    parse(value)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by signal `signum`."""
    return 128 + signum


class Preempted(Exception):
    """A second signal while the stop's checkpoint was being written: the save is abandoned."""

    def __init__(self, signum: int):
        super().__init__(f'{signal.Signals(signum).name} received while saving after a stop '
                         f'signal: that save was abandoned')
        self.signum = signum


class StopSignals:
    """The handlers of --save_on_signal for the life of a training run (`with StopSignals(...)`).
    `signum` is the first signal caught, None until one arrives."""

    def __init__(self, value: str):
        self.numbers = parse(value)
        self.signum: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum  # the loop stops after this iteration
        else:
            atomic.raise_when_safe(Preempted(signum))

    def __enter__(self) -> 'StopSignals':
        for number in self.numbers:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ''


def left_behind(config: dict, name: str, argv: List[str], how: str = 'interrupted') -> str:
    """What a stop of experiment `name` leaves behind: the newest checkpoint on disk and the
    command that resumes, which works from any directory (it changes to this one: relative
    paths stay right)."""
    try:
        itr = checkpoints.read_state(config['weights_root'], name)[0]['itr']
        saved = f"the newest checkpoint in {os.path.join(config['weights_root'], name)!r} is " \
                f"iteration {itr}"
    except (OSError, ValueError):
        return f'{how} before the first checkpoint was saved: nothing to resume'
    resume_flag = [] if '--resume' in argv else ['--resume']
    command = ' '.join(shlex.quote(arg) for arg in [sys.executable, PROGRAM] + argv
                       + resume_flag)
    return f'{how}: {saved}; resume with: cd {shlex.quote(os.getcwd())} && {command}'
