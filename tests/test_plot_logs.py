"""logs/plot_logs.py: parsing the original's log formats and ours, the plots and the CLI."""
import importlib.util
import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'logs', 'plot_logs.py')

# `logs/` is a folder of run outputs, not a package: load the script by its path.
_spec = importlib.util.spec_from_file_location('plot_logs', SCRIPT)
plot_logs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_logs)

# A record exactly as the original's MetricsLogger wrote it (the authors' I128 log, first line).
ORIGINAL_RECORD = ('{"itr": 2000, "IS_mean": 2.806771755218506, "IS_std": 0.019480662420392036, '
                   '"FID": 173.76484159711126, "_stamp": 1551403232.0425167}')
SV_NAMES = ('G_linear_sv0', 'G_blocks_0_0_conv1_sv0', 'G_blocks_10_0_conv1_sv0', 'D_embed_sv0',
            'D_blocks_0_0_conv_sc_sv0')


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def _metric_lines(itrs, values, style='%3.3e'):
    # The original's MyLogger line: '%d: %s\n' % (itr, logstyle % value).
    return ''.join('%d: %s\n' % (itr, style % value) for itr, value in zip(itrs, values))


def _make_experiment(root, name, kid=False, n=300, with_svs=True):
    """A small experiment: test records every 100 itrs, a loss per itr, svs every 10 itrs."""
    rng = np.random.default_rng(0)
    lines = [ORIGINAL_RECORD] if not kid else []
    for k, itr in enumerate(range(4000, 4000 + 100 * 5, 100)):
        record = {'itr': itr, 'IS_mean': 3.0 + k, 'IS_std': 0.1, 'FID': 150.0 - 10 * k,
                  '_stamp': 1551403232.0 + 1800.0 * (k + 1)}
        if kid:
            record.update(KID_mean=0.1 / (k + 1), KID_std=0.01)
        lines.append(json.dumps(record))
    _write(os.path.join(root, f'{name}_log.jsonl'), '\n'.join(lines) + '\n')
    for loss in plot_logs.LOSS_NAMES:
        _write(os.path.join(root, name, f'{loss}.log'),
               _metric_lines(range(1, n + 1), rng.normal(1.0, 0.3, n)))
    if with_svs:
        for sv in SV_NAMES:
            _write(os.path.join(root, name, f'{sv}.log'),
                   _metric_lines(range(0, n, 10), np.linspace(1.0, 5.0, n // 10)))


def _assert_png(path, min_side=200):
    assert os.path.isfile(path)
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    image = matplotlib.image.imread(path)
    assert min(image.shape[:2]) >= min_side
    assert image.std() > 0.01  # not a blank canvas


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------

def test_read_metric_log_original_format(tmp_path):
    values = [1.2345678, -0.000123456, 12345.678, 0.0]
    path = tmp_path / 'G_loss.log'
    path.write_text(_metric_lines([0, 1, 2, 1234], values))
    itrs, parsed = plot_logs.read_metric_log(str(path))
    assert path.read_text().splitlines()[0] == '0: 1.235e+00'
    assert itrs.dtype == np.int64 and itrs.tolist() == [0, 1, 2, 1234]
    assert parsed.tolist() == [float('%3.3e' % v) for v in values]


@pytest.mark.parametrize('line, itr, value', [
    ('1234: 1.234e+00', 1234, 1.234),
    ('7: 0.500000', 7, 0.5),
    ('   8:    -2.5', 8, -2.5),
    ('9: +3.25E-02', 9, 0.0325),
    ('10:42', 10, 42.0),
    ('11: nan', 11, np.nan),
])
def test_read_metric_log_printf_formats(tmp_path, line, itr, value):
    path = tmp_path / 'm.log'
    path.write_text(line + '\n')
    itrs, values = plot_logs.read_metric_log(str(path))
    assert itrs.tolist() == [itr]
    np.testing.assert_equal(values, [value])


def test_read_metric_log_resume_keeps_last_and_skips_bad_lines(tmp_path, capsys):
    # A run killed mid-write at itr 4, resumed from itr 2: the resumed run's first line lands on
    # the cut-off one (so that record is lost and itr 2 keeps its first value), itrs 3..4 are
    # logged twice, and the resumed run is killed mid-write too.
    text = ('1: 1.000e+00\n2: 2.000e+00\n3: 3.000e+00\n4: 4.0'
            '2: 2.500e+00\n3: 3.500e+00\n4: 4.500e+00\n5: 5.0')
    path = tmp_path / 'D_loss_real.log'
    path.write_text(text)
    itrs, values = plot_logs.read_metric_log(str(path))
    assert itrs.tolist() == [1, 2, 3, 4]
    assert values.tolist() == [1.0, 2.0, 3.5, 4.5]
    err = capsys.readouterr().err
    assert 'unfinished last line' in err and 'skipped 1 unreadable line' in err


def test_read_metric_log_empty_file(tmp_path):
    path = tmp_path / 'G_loss.log'
    path.write_text('')
    itrs, values = plot_logs.read_metric_log(str(path))
    assert itrs.shape == (0,) and values.shape == (0,)


def test_read_jsonl_original_record_and_truncation(tmp_path, capsys):
    later = {'itr': 4000, 'IS_mean': 3.5, 'IS_std': 0.1, 'FID': 150.0, '_stamp': 1551406832.0}
    resumed = dict(later, IS_mean=3.75)
    path = tmp_path / 'exp_log.jsonl'
    path.write_text('\n'.join([ORIGINAL_RECORD, json.dumps(later), json.dumps(resumed)])
                    + '\n{"itr": 6000, "IS_mean": 4.')
    records = plot_logs.read_jsonl(str(path))
    assert records == [json.loads(ORIGINAL_RECORD), resumed]
    assert records[0] == {'itr': 2000, 'IS_mean': 2.806771755218506,
                          'IS_std': 0.019480662420392036, 'FID': 173.76484159711126,
                          '_stamp': 1551403232.0425167}
    assert 'skipped 1 unreadable line' in capsys.readouterr().err


def test_moving_average():
    itrs = np.arange(1, 6)
    x, y = plot_logs._moving_average(itrs, np.array([1.0, 2.0, 3.0, 4.0, 10.0]), 2)
    assert x.tolist() == [2, 3, 4, 5]
    assert y.tolist() == [1.5, 2.5, 3.5, 7.0]
    x, y = plot_logs._moving_average(itrs[:2], np.array([1.0, 3.0]), 100)  # window > records
    assert x.tolist() == [2] and y.tolist() == [2.0]


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def test_metrics_figure_panels_and_time_axis(tmp_path):
    _make_experiment(str(tmp_path), 'ours', kid=True)
    records = plot_logs.read_jsonl(str(tmp_path / 'ours_log.jsonl'))
    fig = plot_logs._metrics_figure(records, 'itr', 'ours')
    assert [ax.get_title().split(':')[0] for ax in fig.axes] == ['Inception Score', 'FID', 'KID']
    assert fig.axes[1].get_title() == 'FID: best 110 at itr 4400'
    assert fig.axes[0].lines[0].get_xdata().tolist() == [4000, 4100, 4200, 4300, 4400]
    fig = plot_logs._metrics_figure(records, 'time', 'ours')
    assert fig.axes[0].get_xlabel().startswith('hours')
    assert fig.axes[0].lines[0].get_xdata().tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    # No KID in the original's records: two panels.
    fig = plot_logs._metrics_figure([json.loads(ORIGINAL_RECORD)], 'itr', 'orig')
    assert len(fig.axes) == 2


def test_svs_figure_names_the_top_layers_beside_the_panel():
    """Few layers: each named. Many: the TOP_LAYERS with the largest last value named and
    coloured, the rest grey under one entry; the legend sits outside the axes."""
    svs = {name: (np.arange(3), np.array([1.0, 2.0, 3.0])) for name in SV_NAMES}
    svs.update({f'D_blocks_{i}_0_conv1_sv0': (np.arange(3), np.array([1.0, 1.0, 1.0 + i]))
                for i in range(20)})
    fig = plot_logs._svs_figure(svs, 'x')
    ax_g, ax_d = fig.axes
    assert [t.get_text() for t in ax_g.get_legend().get_texts()] == [
        'blocks_0_0_conv1_sv0', 'blocks_10_0_conv1_sv0', 'linear_sv0']
    named = [t.get_text() for t in ax_d.get_legend().get_texts()]
    assert named[0] == '14 other layers'
    assert sorted(named[1:]) == sorted(f'blocks_{i}_0_conv1_sv0' for i in range(12, 20))
    assert len(ax_d.lines) == 22 and ax_d.get_title() == 'D singular values (top 8 of 22 layers)'
    grey = [line for line in ax_d.lines if line.get_color() == '0.7']
    assert len(grey) == 14 and max(line.get_ydata()[-1] for line in grey) == 12.0
    fig.canvas.draw()
    legend = ax_d.get_legend().get_window_extent()
    assert legend.x0 >= ax_d.get_window_extent().x1  # beside the lines, not over them
    assert ax_g.get_yscale() == 'log'
    for ax in fig.axes:
        assert ax.get_xlabel() == 'iteration' and ax.get_ylabel()


def test_every_axis_is_labelled(tmp_path):
    _make_experiment(str(tmp_path), 'exp', kid=True, n=50)
    records = plot_logs.read_jsonl(str(tmp_path / 'exp_log.jsonl'))
    losses = plot_logs._read_logs([str(tmp_path / 'exp' / f'{name}.log')
                                   for name in plot_logs.LOSS_NAMES])
    svs = plot_logs._read_logs([str(tmp_path / 'exp' / f'{name}.log') for name in SV_NAMES])
    figures = [plot_logs._metrics_figure(records, 'itr', 'm'),
               plot_logs._losses_figure(losses, None, 'l'), plot_logs._svs_figure(svs, 's'),
               plot_logs.compare_figure(str(tmp_path), ['exp'])]
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for fig in figures for ax in fig.axes]
    assert len(labels) == 3 + 2 + 2 + 3 and all(x and y for x, y in labels), labels
    assert ('iteration', 'G loss') in labels and ('iteration', 'FID') in labels


# ------------------------------------------------------------------------------------------------
# plot_experiment, plot_compare, the CLI
# ------------------------------------------------------------------------------------------------

def test_plot_experiment_writes_three_pngs_in_default_folder(tmp_path):
    _make_experiment(str(tmp_path), 'orig')
    paths = plot_logs.plot_experiment(str(tmp_path), 'orig', smooth=20)
    out = tmp_path / 'orig' / 'plots'
    assert paths == [str(out / f'orig_{kind}.png') for kind in ('metrics', 'losses', 'svs')]
    for path in paths:
        _assert_png(path)
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths)  # no temp files


def test_save_is_atomic(tmp_path, monkeypatch):
    # A plot that dies mid-write leaves the previous PNG whole and no temp file behind.
    target = tmp_path / 'exp_losses.png'
    target.write_bytes(b'previous')
    fig, _ = plot_logs._new_figure(1, 'x')

    def dies_mid_write(fname, **kwargs):
        with open(fname, 'wb') as f:
            f.write(b'\x89PNG half')
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, 'savefig', dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        plot_logs._save(fig, str(target))
    assert target.read_bytes() == b'previous' and os.listdir(tmp_path) == ['exp_losses.png']


def test_plot_experiment_skips_missing_files(tmp_path, capsys):
    _make_experiment(str(tmp_path), 'exp', with_svs=False)
    os.remove(tmp_path / 'exp' / 'D_loss_fake.log')
    os.remove(tmp_path / 'exp_log.jsonl')
    paths = plot_logs.plot_experiment(str(tmp_path), 'exp', out_dir=str(tmp_path / 'out'))
    assert paths == [str(tmp_path / 'out' / 'exp_losses.png')]
    _assert_png(paths[0])
    err = capsys.readouterr().err
    assert 'D_loss_fake.log' in err and 'exp_log.jsonl' in err and '*sv*.log' in err


def test_plot_experiment_reads_the_authors_shipped_log_name(tmp_path):
    _write(str(tmp_path / 'BigGAN_ch96_bs256x8.jsonl'), ORIGINAL_RECORD + '\n')
    paths = plot_logs.plot_experiment(str(tmp_path), 'BigGAN_ch96_bs256x8')
    assert [os.path.basename(p) for p in paths] == ['BigGAN_ch96_bs256x8_metrics.png']


def test_nothing_found_is_a_clear_error(tmp_path, capsys):
    _make_experiment(str(tmp_path), 'real_one')
    _write(str(tmp_path / 'other_log.jsonl'), ORIGINAL_RECORD + '\n')
    assert plot_logs.main(['--logs_root', str(tmp_path), '--experiment_name', 'typo']) == 2
    err = capsys.readouterr().err
    assert "error: nothing to plot for 'typo'" in err
    assert str(tmp_path / 'typo_log.jsonl') in err and str(tmp_path / 'typo' / 'G_loss.log') in err
    assert 'Experiments under' in err and 'other, real_one' in err
    assert not (tmp_path / 'typo').exists()


def test_cli_writes_all_plots_and_prints_paths(tmp_path, capsys):
    root, out = str(tmp_path / 'logs'), str(tmp_path / 'out')
    _make_experiment(root, 'a')
    _make_experiment(root, 'b', kid=True)
    argv = ['--logs_root', root, '--experiment_name', 'a', '--out', out, '--smooth', '5',
            '--x', 'time', '--compare', 'b', 'missing']
    assert plot_logs.main(argv) == 0
    printed = capsys.readouterr().out.split()
    names = ['a_metrics.png', 'a_losses.png', 'a_svs.png', 'compare_IS.png']
    assert printed == [os.path.join(out, name) for name in names]
    for path in printed:
        _assert_png(path)


def test_plot_compare_without_any_log_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match='no test metrics to compare'):
        plot_logs.plot_compare(str(tmp_path), ['x', 'y'], str(tmp_path / 'c.png'))


def test_script_runs_headless(tmp_path):
    _make_experiment(str(tmp_path), 'exp', n=50)
    env = dict(os.environ, MPLBACKEND='')  # no display backend to fall back on
    done = subprocess.run([sys.executable, SCRIPT, '--logs_root', str(tmp_path),
                           '--experiment_name', 'exp'], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 3


def test_a_short_run_gets_its_mean_line_by_default(tmp_path):
    """Without --smooth, a 40-iteration run is averaged over 4 iterations (a tenth of the
    run; the original's 100 would have left a single point), a long run over 100."""
    _make_experiment(str(tmp_path), 'short', n=40, with_svs=False)
    losses = plot_logs._read_logs([str(tmp_path / 'short' / f'{name}.log')
                                   for name in plot_logs.LOSS_NAMES])
    fig = plot_logs._losses_figure(losses, None, 'short')
    means = [line for ax in fig.axes for line in ax.get_lines()
             if 'mean' in str(line.get_label())]
    assert [str(line.get_label()) for line in means] == \
        ['G_loss (4-itr mean)', 'D_loss_real (4-itr mean)', 'D_loss_fake (4-itr mean)']
    assert all(len(line.get_xdata()) == 37 for line in means)
    assert (plot_logs.default_window(5), plot_logs.default_window(40),
            plot_logs.default_window(5000)) == (1, 4, 100)
    paths = plot_logs.plot_experiment(str(tmp_path), 'short', out_dir=str(tmp_path / 'out'))
    assert str(tmp_path / 'out' / 'short_losses.png') in paths


def _classifier_run(root, name, accuracy, fid):
    """The JSONL of a run scored with --fmnist_scorer (no IS / FID keys)."""
    records = [{'itr': 100 * (k + 1), 'fmnist_accuracy': a, 'fmnist_FID': f,
                '_stamp': 1.0 + k} for k, (a, f) in enumerate(zip(accuracy, fid))]
    _write(os.path.join(root, f'{name}_log.jsonl'),
           ''.join(json.dumps(r) + '\n' for r in records))


def test_compare_draws_both_classifier_scored_runs(tmp_path):
    root = str(tmp_path)
    _classifier_run(root, 'one', [0.5, 0.7, 0.8], [30.0, 20.0, 12.5])
    _classifier_run(root, 'two', [0.4, 0.9], [40.0, 8.0])
    fig = plot_logs.compare_figure(root, ['one', 'two'])
    assert [ax.get_title() for ax in fig.axes] == [
        'classifier accuracy (--fmnist_scorer)', 'classifier FID (--fmnist_scorer)']
    accuracy, fid = fig.axes
    drawn = {line.get_label(): (line.get_xdata().tolist(), line.get_ydata().tolist())
             for line in accuracy.lines}
    assert drawn == {'one': ([100, 200, 300], [0.5, 0.7, 0.8]), 'two': ([100, 200], [0.4, 0.9])}
    assert [line.get_ydata().tolist() for line in fid.lines] == [[30.0, 20.0, 12.5],
                                                                 [40.0, 8.0]]
    assert [t.get_text() for t in fid.get_legend().get_texts()] == ['one', 'two']
    path = plot_logs.plot_compare(root, ['one', 'two'], str(tmp_path / 'c.png'))
    _assert_png(path)


def test_compare_says_when_runs_share_no_metric(tmp_path, capsys):
    """An Inception-scored run and a classifier-scored one: a notice naming what each logged;
    every metric still gets its panel, with its one run's curve; KID and PRDC are panels too."""
    root = str(tmp_path)
    _make_experiment(root, 'inception', kid=True, with_svs=False)
    _classifier_run(root, 'classifier', [0.5, 0.6], [30.0, 25.0])
    fig = plot_logs.compare_figure(root, ['inception', 'classifier'])
    err = capsys.readouterr().err
    assert 'share no test metric' in err
    assert 'inception: IS_mean, FID, KID_mean' in err
    assert 'classifier: fmnist_accuracy, fmnist_FID' in err
    assert [ax.get_ylabel() for ax in fig.axes] == ['IS_mean', 'FID', 'KID_mean',
                                                    'fmnist_accuracy', 'fmnist_FID']
    assert [[line.get_label() for line in ax.lines] for ax in fig.axes] == [
        ['inception']] * 3 + [['classifier']] * 2
    _classifier_run(root, 'prdc', [0.5], [30.0])
    _write(os.path.join(root, 'prdc_log.jsonl'), json.dumps(
        {'itr': 1, 'IS_mean': 2.0, 'IS_std': 0.1, 'FID': 9.0, 'precision': 0.7, 'recall': 0.6,
         'density': 0.9, 'coverage': 0.8, 'iFID': 12.0}) + '\n')
    fig = plot_logs.compare_figure(root, ['prdc', 'inception'])
    assert 'share no' not in capsys.readouterr().err
    assert [ax.get_ylabel() for ax in fig.axes] == [
        'IS_mean', 'FID', 'precision', 'recall', 'density', 'coverage', 'iFID', 'KID_mean']


def test_the_limited_data_logs_get_their_panels(tmp_path):
    """ADA's p and r_t, LeCam's averages and k: one panel per group logged, none without."""
    root = str(tmp_path)
    _make_experiment(root, 'plain')
    assert not any('limited_data' in os.path.basename(p)
                   for p in plot_logs.plot_experiment(root, 'plain'))
    _make_experiment(root, 'ada')
    for name in ('ADA_p', 'ADA_rt', 'topk_k'):
        _write(os.path.join(root, 'ada', f'{name}.log'), _metric_lines(range(1, 51),
                                                                     np.linspace(0, 1, 50)))
    paths = [p for p in plot_logs.plot_experiment(root, 'ada')
             if 'limited_data' in os.path.basename(p)]
    assert [os.path.basename(p) for p in paths] == ['ada_limited_data.png']
    series = plot_logs._read_logs([os.path.join(root, 'ada', f'{n}.log')
                                   for n in ('ADA_p', 'ADA_rt', 'topk_k')])
    figure = plot_logs._limited_data_figure(series, 'ada')
    labels = [ax.get_ylabel() for ax in figure.axes]
    assert labels == [plot_logs.LIMITED_DATA_PANELS[0][1], plot_logs.LIMITED_DATA_PANELS[2][1]]
    assert matplotlib.image.imread(paths[0]).shape[0] > 100
