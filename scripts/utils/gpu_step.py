"""One step of scripts/gpu_check.sh: run a command under a time limit and append one JSON line
about it to a file, whatever happens (success, failure, timeout, a signal to this process).

    python scripts/utils/gpu_step.py --jsonl OUT/gpu.jsonl --logs OUT/logs --step NAME \\
        --timeout SECONDS [--pytest] [--note KEY=VALUE ...] -- COMMAND ...

The command's stdout and stderr go straight to files (LOGS/NAME.out, LOGS/NAME.err), so what it
wrote is on disk even when it is killed. At the time limit its process group gets SIGTERM, then
SIGKILL 10 s later. The line is {"step", "rc", "seconds", "cpu_s", "timed_out", ...figures}:
the figures are the JSON objects the command printed on lines of their own, merged in order
(bench.py prints its line again once the FLOPs are counted), or with --pytest the outcomes
read from `pytest -v`'s lines. Nothing else the command prints reaches the JSON file; the last line of
stderr comes along as "error" when the command fails. rc follows timeout(1): 124 for the time
limit, 128 + N for signal N.
"""
import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

OUTCOME = re.compile(r'^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b')
STARTED = re.compile(r'^(\S+::\S+)\s*$')  # a test whose outcome was not written yet
GRACE_S = 10


class Stopped(Exception):
    """This process was told to stop (SIGTERM, SIGINT, SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def json_objects(text: str) -> Dict:
    """The JSON objects on lines of their own, merged in order; other lines are skipped."""
    figures = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('{'):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                figures.update(value)
    return figures


def pytest_outcomes(text: str) -> Dict:
    """Counts of `pytest -v` outcomes, the failed tests and the one running when it stopped."""
    counts, failed, started = {}, [], None
    for line in text.splitlines():
        match = OUTCOME.match(line)
        if match:
            test, outcome = match.groups()
            counts[outcome.lower()] = counts.get(outcome.lower(), 0) + 1
            if outcome in ('FAILED', 'ERROR'):
                failed.append(test)
            started = None
        elif STARTED.match(line):
            started = line.strip()
    return {'tests': counts, 'failed_tests': failed, 'unfinished_test': started}


def last_line(path: str) -> Optional[str]:
    """The last line of a file that is not a JSON object (those are figures), shortened."""
    with open(path, errors='replace') as f:
        lines = [line.strip() for line in f.read()[-20000:].splitlines()
                 if line.strip() and not line.strip().startswith('{')]
    return lines[-1][:500] if lines else None


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the command's process group, SIGKILL after GRACE_S."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(command: List[str], timeout: float, out_path: str, err_path: str) -> Dict:
    """{'rc', 'seconds', 'cpu_s', 'timed_out'} of `command` (cpu_s: the CPU seconds of its
    processes that were waited for, compile workers included); output to the two files."""
    def raise_stopped(signum, frame):
        raise Stopped(signum)
    previous = {sig: signal.signal(sig, raise_stopped)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    start, cpu = time.monotonic(), _children_cpu_s()
    rc, timed_out, process = None, False, None
    with open(out_path, 'w') as out, open(err_path, 'w') as err:
        try:
            process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
            rc = process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            stop(process)
            rc = 124
        except Stopped as stopped:
            if process is not None:
                stop(process)
            rc = 128 + stopped.signum
        except OSError as error:  # the program is missing or cannot run
            err.write(f'{error}\n')
            rc = 127
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if rc is not None and rc < 0:
        rc = 128 - rc
    return {'rc': rc, 'seconds': round(time.monotonic() - start, 1),
            'cpu_s': round(_children_cpu_s() - cpu, 1), 'timed_out': timed_out}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: Optional[List[str]] = None) -> Dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--jsonl', required=True, help='the file the line is appended to')
    parser.add_argument('--logs', required=True, help='folder of NAME.out and NAME.err')
    parser.add_argument('--step', required=True)
    parser.add_argument('--timeout', type=float, required=True, help='seconds')
    parser.add_argument('--pytest', action='store_true', help='figures from pytest -v lines')
    parser.add_argument('--note', action='append', default=[], metavar='KEY=VALUE',
                        help='a figure known beforehand (a number where it reads as one)')
    split = argv.index('--') if '--' in argv else len(argv)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error('give the command to run after --')
    os.makedirs(args.logs, exist_ok=True)
    out_path = os.path.join(args.logs, args.step + '.out')
    err_path = os.path.join(args.logs, args.step + '.err')
    record = {'step': args.step}
    record.update(run(command, args.timeout, out_path, err_path))
    with open(out_path, errors='replace') as f:
        text = f.read()
    figures = pytest_outcomes(text) if args.pytest else json_objects(text)
    for note in args.note:
        key, _, value = note.partition('=')
        try:
            figures[key] = json.loads(value)
        except ValueError:
            figures[key] = value
    record.update({k: v for k, v in figures.items() if k not in record})
    if record['timed_out']:
        record['error'] = f'stopped at its time limit, {args.timeout:g} s'
    elif record['rc'] != 0:
        record['error'] = last_line(err_path) or last_line(out_path)
    with open(args.jsonl, 'a') as f:
        f.write(json.dumps(record) + '\n')
    return record


if __name__ == '__main__':
    sys.exit(0 if main()['rc'] == 0 else 1)
