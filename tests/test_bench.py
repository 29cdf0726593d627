"""bench.py: the timing is printed before the FLOP count (one more eager float32 step, which
may not fit where the timed step did), so a failure there cannot lose it; --no_flops skips the
count; the warm-up is timed."""
import json

import pytest
import torch

import bench

def _json_lines(out: str) -> list:
    """bench.py's JSON lines (train.py's code prints notes such as "Preparing EMA" too)."""
    return [json.loads(line) for line in out.splitlines() if line.startswith('{')]


TINY = ['--config', 'c10', '--device', 'cpu', '--ch', '8', '--batch_size', '1', '--iters', '1',
        '--warmup', '1']


def test_the_timing_is_printed_before_the_flop_count(monkeypatch, capsys):
    def out_of_memory(step):
        raise torch.OutOfMemoryError('no room for the eager float32 step')
    monkeypatch.setattr(bench, 'count_flops', out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        bench.main(TINY)
    [record] = _json_lines(capsys.readouterr().out)
    assert record['s_per_iter'] > 0 and record['images_per_s'] > 0
    assert record['tflops'] is None and record['gflop_per_iter'] is None
    assert record['G_ch'] == record['D_ch'] == 8 and record['batch_size'] == 1
    assert record['warmup'] == 1 and 0 < record['first_iter_s'] == record['warmup_s']


def test_the_count_prints_the_line_again_and_no_flops_skips_it(monkeypatch, capsys):
    record = bench.main(TINY + ['--baseline'])
    first, second = _json_lines(capsys.readouterr().out)
    assert second == record and record['gflop_per_iter'] > 0 and record['tflops'] is not None
    assert first == {**record, 'tflops': None, 'gflop_per_iter': None, 'gflop_per_image': None}

    def must_not_run(step):
        raise AssertionError('--no_flops counted FLOPs')
    monkeypatch.setattr(bench, 'count_flops', must_not_run)
    record = bench.main(TINY + ['--no_flops'])
    assert _json_lines(capsys.readouterr().out) == [record] and record['tflops'] is None
