"""scripts/gpu_check.sh, run as --dry-run (every step on the CPU at tiny sizes), and its step
runner scripts/utils/gpu_step.py: one valid JSON line per step whatever happens to the step,
its output kept, nothing large left in $OUT, and a time limit per test for tests/test_cuda.py."""
import json
import os
import subprocess
import sys
import textwrap

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'scripts', 'utils'))
import gpu_step  # noqa: E402

SCRIPT = os.path.join(ROOT, 'scripts', 'gpu_check.sh')
STEPS = ['device', 'i128_fast', 'i128_baseline', 'sample_fast', 'deep128_fast',
         'c10_cuda_graphs', 'cuda_tests', 'sample_baseline', 'c10_baseline',
         'sample_py_weights', 'sample_py']
BENCH_STEPS = {'i128_fast': 'i128', 'i128_baseline': 'i128', 'sample_fast': 'sample',
               'deep128_fast': 'deep128', 'c10_cuda_graphs': 'c10', 'sample_baseline': 'sample',
               'c10_baseline': 'c10'}


def _gpu_check(out, **env):
    return subprocess.run(['bash', SCRIPT, '--dry-run'], capture_output=True, text=True,
                          timeout=1500, env={**os.environ, 'PY': sys.executable,
                                             'OUT': str(out), **env})


def _lines(out):
    with open(os.path.join(str(out), 'gpu.jsonl')) as f:
        return [json.loads(line) for line in f]  # every line is JSON: no stray output


def test_dry_run_writes_one_json_line_per_step_with_one_step_made_to_fail(tmp_path):
    out = tmp_path / 'out'
    # The budget is large: on a loaded CPU the dry run is slow, and no step may be skipped.
    result = _gpu_check(out, GPU_CHECK_FAIL='i128_baseline', BUDGET='1200')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].startswith('gpu_check: ')
    lines = _lines(out)
    assert [line['step'] for line in lines] == STEPS
    for line in lines:
        assert isinstance(line['seconds'], float) and line['cpu_s'] >= 0, line
        if line['step'] == 'i128_baseline':  # made to fail: printed a figure, then failed
            assert line['rc'] == 1 and 'made to fail' in line['error']
            assert line['made_to_fail'] == 1 and not line['timed_out']
            continue
        assert line['rc'] == 0 and not line['timed_out'] and 'error' not in line, line
        if line['step'] in BENCH_STEPS:
            assert line['config'] == BENCH_STEPS[line['step']]
            assert line['images_per_s'] > 0 and line['G_ch'] == 8 and not line['compile']
            assert line['cpu_s'] > 0
            # The baselines count FLOPs once timed (bench.py prints the line twice).
            assert (line['gflop_per_iter'] is not None) == line['baseline'], line
    by_step = {line['step']: line for line in lines}
    assert by_step['c10_cuda_graphs']['compile_mode'] == 'reduce-overhead'
    assert by_step['device']['torch'] and by_step['sample_py']['images'] == 2
    tests = by_step['cuda_tests']
    assert sum(tests['tests'].values()) > 0 and tests['failed_tests'] == []
    assert tests['unfinished_test'] is None
    with open(out / 'logs' / 'i128_baseline.out') as f:
        assert 'Preparing EMA for G' in f.read()  # stray output kept in the log, not the JSON
    assert os.path.exists(out / 'logs' / 'i128_fast.torch.log')
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs]
    assert max(sizes) < 100_000  # weights and samples went to a temporary folder


def test_a_spent_budget_skips_every_step_with_its_line(tmp_path):
    result = _gpu_check(tmp_path, BUDGET='0')
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _lines(tmp_path)
    assert [line['step'] for line in lines] == STEPS
    assert all(line['rc'] is None and 'needs' in line['skipped'] for line in lines)


def test_unknown_argument_is_one_error_line(tmp_path):
    result = subprocess.run(['bash', SCRIPT, '--dryrun'], capture_output=True, text=True,
                            env={**os.environ, 'OUT': str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unknown argument '--dryrun' (the only option is " \
                                    "--dry-run)"


def _step(tmp_path, *options_and_command):
    return gpu_step.main(['--jsonl', str(tmp_path / 'gpu.jsonl'), '--logs', str(tmp_path),
                          *options_and_command])


def test_a_step_out_of_time_is_stopped_and_keeps_what_it_printed(tmp_path):
    code = 'import time; print(\'{"s_per_iter": 0.5}\'); print("stray"); time.sleep(120)'
    record = _step(tmp_path, '--step', 'slow', '--timeout', '2', '--note', 'batch=4', '--',
                   sys.executable, '-c', code)
    assert record['rc'] == 124 and record['timed_out'] and 2 <= record['seconds'] < 60
    assert record['s_per_iter'] == 0.5 and record['batch'] == 4
    assert 'time limit, 2 s' in record['error']
    assert _lines(tmp_path) == [record]
    assert (tmp_path / 'slow.out').read_text().splitlines()[-1] == 'stray'


def test_a_missing_program_still_gets_its_line(tmp_path):
    record = _step(tmp_path, '--step', 'gone', '--timeout', '5', '--',
                   str(tmp_path / 'no_such_program'))
    assert record['rc'] == 127 and 'no_such_program' in record['error']
    assert _lines(tmp_path) == [record]


def test_tests_over_their_time_limit_fail_and_the_next_ones_run(tmp_path):
    """TEST_TIMEOUT_S (tests/conftest.py) as gpu_check.sh sets it for tests/test_cuda.py, read
    back by gpu_step.py --pytest."""
    (tmp_path / 'test_sleepy.py').write_text(textwrap.dedent('''
        import time

        def test_hangs():
            time.sleep(120)

        def test_after_it():
            assert True
    '''))
    command = ['env', 'TEST_TIMEOUT_S=2', f'PYTHONPATH={os.path.join(ROOT, "tests")}',
               sys.executable, '-m', 'pytest', '-v', '-p', 'conftest', '-p', 'no:cacheprovider',
               '--rootdir', str(tmp_path), str(tmp_path / 'test_sleepy.py')]
    record = _step(tmp_path, '--step', 'tests', '--timeout', '120', '--pytest', '--', *command)
    assert record['rc'] == 1 and record['seconds'] < 60
    assert record['tests'] == {'failed': 1, 'passed': 1}
    [failed] = record['failed_tests']
    assert failed.endswith('test_sleepy.py::test_hangs')
    assert 'TEST_TIMEOUT_S=2' in (tmp_path / 'tests.out').read_text()


def test_pytest_outcomes_name_the_test_that_was_running_at_a_kill():
    text = ('tests/test_cuda.py::test_a[x] PASSED                    [ 33%]\n'
            'tests/test_cuda.py::test_b FAILED                       [ 66%]\n'
            'tests/test_cuda.py::test_c ')
    assert gpu_step.pytest_outcomes(text) == {
        'tests': {'passed': 1, 'failed': 1}, 'failed_tests': ['tests/test_cuda.py::test_b'],
        'unfinished_test': 'tests/test_cuda.py::test_c'}
