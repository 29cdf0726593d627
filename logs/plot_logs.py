"""Plot an experiment's logs: test metrics, training losses and singular values.

The Python stand-in for the original's MATLAB scripts (`process_inception_log.m`,
`process_training.m`, `compare_IS.m`). Reads `<logs_root>/<exp>_log.jsonl` (one JSON test record
per line: `itr`, `IS_mean`, `IS_std`, `FID`, `_stamp`, and `KID_mean` / `KID_std` or
`fmnist_accuracy` / `fmnist_FID` where logged)
and `<logs_root>/<exp>/<metric>.log` (lines `<itr>: <value>`: `G_loss`, `D_loss_real`,
`D_loss_fake`, singular values such as `G_linear_sv0`), and writes `<exp>_metrics.png`,
`<exp>_losses.png`, `<exp>_svs.png`, `<exp>_limited_data.png` (ADA's p and r_t, LeCam's averages, top-k's k,
where logged) and, with `--compare`, `compare_IS.png` (every test metric
the compared runs logged, one panel each):

    python logs/plot_logs.py --logs_root logs --experiment_name EXP [--smooth N] [--x time]
"""
import argparse
import glob
import json
import math
import os
import re
import sys
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

LOSS_NAMES = ('G_loss', 'D_loss_real', 'D_loss_fake')
# The limited-data flags' logs, one panel per group: (names, y label).
LIMITED_DATA_PANELS = ((('ADA_p', 'ADA_rt'), 'ADA: p and r_t = E[sign D(reals)]'),
                       (('LeCam_real', 'LeCam_fake'), "LeCam: averages of D's outputs"),
                       (('topk_k',), 'top-k: k'))
X_AXES = ('itr', 'time')
# (mean key, std key, panel name, index of the best value) of the test-metrics panels.
METRIC_PANELS = (
    ('IS_mean', 'IS_std', 'Inception Score', np.nanargmax),
    ('FID', None, 'FID', np.nanargmin),
    ('KID_mean', 'KID_std', 'KID', np.nanargmin),
    ('fmnist_accuracy', None, 'classifier accuracy (--fmnist_scorer)', np.nanargmax),
    ('fmnist_FID', None, 'classifier FID (--fmnist_scorer)', np.nanargmin),
    ('precision', None, 'precision (k = 3)', np.nanargmax),
    ('recall', None, 'recall (k = 3)', np.nanargmax),
    ('density', None, 'density (k = 5)', np.nanargmax),
    ('coverage', None, 'coverage (k = 5)', np.nanargmax),
)
# Record keys that are not metrics.
NOT_METRICS = ('itr', '_stamp')
# The singular-value layers drawn in colour and named in the legend, per network; the others
# are drawn thin and grey under one legend entry (a BigGAN has some 20 to 100 such layers).
TOP_LAYERS = 8
# `<itr>: <value>` with any printf padding; the value is whatever float() reads (`%3.3e`, `%f`,
# `%+g`, `nan`, ...).
LOG_LINE = re.compile(r'^\s*([+-]?\d+)\s*:\s*(\S+)\s*$')

Series = tuple[np.ndarray, np.ndarray]


def _notice(message: str) -> None:
    """One line on stderr about something skipped; the plotting goes on."""
    print(f'plot_logs: {message}', file=sys.stderr)


def _read_lines(path: str) -> tuple[list[str], bool]:
    """The lines of a text file, and whether its last line was finished (ends in a newline)."""
    # errors='replace': a crash can leave garbage (often NUL bytes) at the end of a file; those
    # lines then fail to parse and are skipped rather than stopping the read.
    with open(path, encoding='utf-8', errors='replace', newline='') as f:
        text = f.read()
    return text.splitlines(), text == '' or text.endswith(('\n', '\r'))


def read_jsonl(path: str) -> list[dict]:
    """The records of a test-metrics log, one per iteration, in iteration order.

    A line that is not a JSON object with a numeric `itr` is skipped with a notice: the cut-off
    last record of a killed run, or the line a resumed run appended to it. Where an iteration was
    logged twice (a resumed run), the later record wins.
    """
    by_itr: dict[int, dict] = {}
    skipped = 0
    for line in _read_lines(path)[0]:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            itr = int(record['itr'])
        except (ValueError, KeyError, TypeError, OverflowError):
            skipped += 1
            continue
        by_itr[itr] = record
    if skipped:
        _notice(f'skipped {skipped} unreadable line(s) in {path}')
    return [by_itr[itr] for itr in sorted(by_itr)]


def read_metric_log(path: str) -> Series:
    """The (iterations, values) of one `<metric>.log`, sorted by iteration, one value each.

    Both arrays are empty for an empty file. Unreadable lines are skipped with a notice, and so is
    an unfinished last line: every record ends in a newline, so one without it was cut off by a
    killed run even where it parses (`1234: 1.2` from `1234: 1.234e+00`). Where an iteration was
    logged twice (a resumed run), the later value wins.
    """
    lines, finished = _read_lines(path)
    if not finished:
        _notice(f'skipped the unfinished last line of {path}')
        lines = lines[:-1]
    by_itr: dict[int, float] = {}
    skipped = 0
    for line in lines:
        match = LOG_LINE.match(line)
        try:
            by_itr[int(match.group(1))] = float(match.group(2))
        except (AttributeError, ValueError):  # no match, or a value float() cannot read
            skipped += bool(line.strip())
    if skipped:
        _notice(f'skipped {skipped} unreadable line(s) in {path}')
    itrs = sorted(by_itr)
    return (np.array(itrs, dtype=np.int64),
            np.array([by_itr[itr] for itr in itrs], dtype=np.float64))


def _column(records: Sequence[dict], key: str) -> np.ndarray:
    """One key of every record as floats; NaN where it is missing, null or not a number."""
    values = [record.get(key) for record in records]
    return np.array([v if isinstance(v, (int, float)) else math.nan for v in values], dtype=float)


def _x_axis(records: Sequence[dict], x: str) -> tuple[np.ndarray, str]:
    """The x values of test records and their axis label: iterations, or hours of wall clock."""
    if x == 'time':
        stamps = _column(records, '_stamp')
        if np.isfinite(stamps).any():
            return (stamps - np.nanmin(stamps)) / 3600.0, 'hours since the first record'
        _notice('the records carry no _stamp: plotting against iteration')
    return _column(records, 'itr'), 'iteration'


def _moving_average(itrs: np.ndarray, values: np.ndarray, window: int) -> Series:
    """Trailing mean over `window` records, placed at the last iteration of each window."""
    window = min(window, len(values))
    if window <= 1:
        return itrs, values
    sums = np.cumsum(np.concatenate(([0.0], values)))
    return itrs[window - 1:], (sums[window:] - sums[:-window]) / window


def _natural_key(name: str) -> list:
    """Sort key that puts `blocks_2` before `blocks_10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


def _new_figure(n_panels: int, title: str) -> tuple[Figure, list]:
    """A figure on the Agg canvas (no display needed) with `n_panels` side by side."""
    fig = Figure(figsize=(5.0 * n_panels, 4.0), layout='constrained')
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(1, n_panels, squeeze=False)[0])
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig, axes


def metric_panels(records: Sequence[dict]) -> list[tuple]:
    """The panels of every metric the records hold, as METRIC_PANELS' rows: the known ones in
    that order, then any other numeric key (a metric added later) under its own name, best
    lowest where the name says FID or KID, else no best marked."""
    panels = [p for p in METRIC_PANELS if np.isfinite(_column(records, p[0])).any()]
    taken = {key for panel in METRIC_PANELS for key in panel[:2] if key}
    for key in dict.fromkeys(k for record in records for k in record):
        if key in taken or key in NOT_METRICS or key.endswith('_std'):
            continue
        if np.isfinite(_column(records, key)).any():
            std_key = key[:-len('_mean')] + '_std' if key.endswith('_mean') else None
            best = np.nanargmin if ('FID' in key or 'KID' in key) else None
            panels.append((key, std_key, key, best))
    return panels


def _metrics_figure(records: Sequence[dict], x: str, title: str) -> Optional[Figure]:
    """One panel per logged metric (metric_panels): IS with its std band, FID, KID, ...; None
    if no record holds any."""
    panels = metric_panels(records)
    if not panels:
        return None
    xs, xlabel = _x_axis(records, x)
    itrs = _column(records, 'itr')
    fig, axes = _new_figure(len(panels), title)
    for ax, (key, std_key, name, best) in zip(axes, panels):
        mean = _column(records, key)
        ax.plot(xs, mean, marker='.', label=key)
        if std_key is not None and np.isfinite(_column(records, std_key)).any():
            std = _column(records, std_key)
            ax.fill_between(xs, mean - std, mean + std, alpha=0.3, label=f'± {std_key}')
            ax.legend(fontsize='small')
        if best is not None:
            i = best(mean)
            ax.set_title(f'{name}: best {mean[i]:.4g} at itr {itrs[i]:.0f}')
        else:
            ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key)
    return fig


def default_window(records: int) -> int:
    """The moving-average window when --smooth is not given: a tenth of the run, at most 100
    records (the original's), so a short run still gets its mean line."""
    return max(1, min(100, records // 10))


def _losses_figure(losses: dict[str, Series], smooth: Optional[int], title: str) -> Figure:
    """G's loss and D's two losses: raw and faint, with a moving average over `smooth` records
    (None: `default_window` of each series)."""
    groups = [g for g in (['G_loss'], ['D_loss_real', 'D_loss_fake']) if set(g) & set(losses)]
    fig, axes = _new_figure(len(groups), title)
    for ax, group in zip(axes, groups):
        for color, name in enumerate(group):
            if name not in losses:
                continue
            itrs, values = losses[name]
            window = smooth or default_window(len(values))
            if window > 1:
                ax.plot(itrs, values, color=f'C{color}', alpha=0.25, linewidth=0.5)
                ax.plot(*_moving_average(itrs, values, window), color=f'C{color}',
                        label=f'{name} ({window}-itr mean)')
            else:
                ax.plot(itrs, values, color=f'C{color}', linewidth=0.8, label=name)
        ax.set_xlabel('iteration')
        ax.set_ylabel('D loss' if group[0].startswith('D') else 'G loss')
        ax.legend(fontsize='small')
    return fig


def _limited_data_figure(series: dict[str, Series], title: str) -> Figure:
    """ADA's p and r_t, LeCam's averages and top-k's k (--ADA, --LeCam, --topk), one panel
    per group logged."""
    panels = [(names, label) for names, label in LIMITED_DATA_PANELS
              if set(names) & set(series)]
    fig, axes = _new_figure(len(panels), title)
    for ax, (names, label) in zip(axes, panels):
        for color, name in enumerate(names):
            if name in series:
                ax.plot(*series[name], color=f'C{color}', linewidth=0.8, label=name)
        ax.set_xlabel('iteration')
        ax.set_ylabel(label)
        ax.legend(fontsize='small')
    return fig


def top_layers(svs: dict[str, Series], names: Sequence[str], k: int = TOP_LAYERS) -> list[str]:
    """The `k` layers of `names` whose last singular value is largest: the ones to watch, as a
    layer whose spectral norm runs away is what precedes collapse (Brock et al., section 4.1)."""
    return sorted(names, key=lambda name: -svs[name][1][-1])[:k]


def _svs_figure(svs: dict[str, Series], title: str) -> Figure:
    """G's and D's singular values on a log scale: the TOP_LAYERS layers with the largest last
    value in colour and named in a legend beside the panel, the others thin and grey."""
    fig, axes = _new_figure(2, title)
    fig.set_size_inches(13.0, 4.5)
    for ax, net in zip(axes, ('G', 'D')):
        names = sorted((n for n in svs if n.startswith(net + '_')), key=_natural_key)
        top = set(top_layers(svs, names))
        rest = [name for name in names if name not in top]
        for i, name in enumerate(rest):
            ax.plot(*svs[name], color='0.7', linewidth=0.5,
                    label=f'{len(rest)} other layers' if i == 0 else '_nolegend_')
        for i, name in enumerate(n for n in names if n in top):
            ax.plot(*svs[name], color=f'C{i}', linewidth=1.0, label=name[len(net) + 1:])
        if not names:
            ax.text(0.5, 0.5, 'no logs', transform=ax.transAxes, ha='center')
        else:
            if any((svs[name][1] > 0).any() for name in names):
                ax.set_yscale('log')  # log of nothing positive would leave an empty panel
            ax.legend(fontsize='x-small', loc='upper left', bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0.0)
        shown = f'top {len(top)} of {len(names)}' if rest else f'{len(names)}'
        ax.set_title(f'{net} singular values ({shown} layers)')
        ax.set_xlabel('iteration')
        ax.set_ylabel('singular value (SN estimate)')
    return fig


def _save(fig: Figure, path: str) -> str:
    """Write the figure as a PNG atomically: no reader ever sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        fig.savefig(tmp, format='png', dpi=100)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def jsonl_path(logs_root: str, experiment_name: str) -> str:
    """`<exp>_log.jsonl`, or `<exp>.jsonl` (the authors' shipped log) where only that exists."""
    path = os.path.join(logs_root, f'{experiment_name}_log.jsonl')
    shipped = os.path.join(logs_root, f'{experiment_name}.jsonl')
    return shipped if not os.path.isfile(path) and os.path.isfile(shipped) else path


def find_experiments(logs_root: str) -> list[str]:
    """Names of the experiments with a test-metrics log or a folder of `.log` files."""
    if not os.path.isdir(logs_root):
        return []
    names = set()
    for entry in os.scandir(logs_root):
        if entry.is_file() and entry.name.endswith('.jsonl'):
            names.add(re.sub(r'(_log)?\.jsonl$', '', entry.name))
        elif entry.is_dir() and glob.glob(os.path.join(glob.escape(entry.path), '*.log')):
            names.add(entry.name)
    return sorted(names)


def _read_logs(paths: Sequence[str]) -> dict[str, Series]:
    """The metric logs among `paths` that hold records, by metric name; notices for the rest."""
    series = {}
    for path in paths:
        if not os.path.isfile(path):
            _notice(f'not found, skipped: {path}')
            continue
        itrs, values = read_metric_log(path)
        if len(itrs):
            series[os.path.basename(path)[:-len('.log')]] = (itrs, values)
        else:
            _notice(f'no records, skipped: {path}')
    return series


def plot_experiment(logs_root: str, experiment_name: str, out_dir: Optional[str] = None,
                    smooth: Optional[int] = None, x: str = 'itr') -> list[str]:
    """Plot one experiment's metrics, losses and singular values; the paths written.

    `x` is `'itr'` or `'time'` (hours since the first test record, from `_stamp`); the training
    logs carry no clock, so losses and singular values are always plotted against iteration.
    Raises FileNotFoundError, naming the paths looked at, if none of the logs is there.
    """
    if x not in X_AXES:
        raise ValueError(f'x must be one of {X_AXES}, not {x!r}')
    exp_dir = os.path.join(logs_root, experiment_name)
    out_dir = out_dir or os.path.join(exp_dir, 'plots')
    figures: list[tuple[str, Figure]] = []

    metrics_path = jsonl_path(logs_root, experiment_name)
    records = read_jsonl(metrics_path) if os.path.isfile(metrics_path) else []
    metrics = _metrics_figure(records, x, f'{experiment_name}: test metrics')
    if metrics is not None:
        figures.append(('metrics', metrics))
    else:
        _notice(f'no test metrics, skipped: {metrics_path}')

    loss_paths = [os.path.join(exp_dir, f'{name}.log') for name in LOSS_NAMES]
    losses = _read_logs(loss_paths)
    if losses:
        figures.append(('losses', _losses_figure(losses, smooth, f'{experiment_name}: losses')))

    extra = {}
    for names, _ in LIMITED_DATA_PANELS:
        paths = [os.path.join(exp_dir, f'{name}.log') for name in names]
        extra.update(_read_logs([path for path in paths if os.path.isfile(path)]))
    if extra:
        figures.append(('limited_data', _limited_data_figure(
            extra, f'{experiment_name}: limited-data flags')))

    sv_pattern = os.path.join(exp_dir, '*sv*.log')
    svs = _read_logs(sorted(glob.glob(os.path.join(glob.escape(exp_dir), '*sv*.log'))))
    if svs:
        figures.append(('svs', _svs_figure(svs, f'{experiment_name}: singular values')))
    else:
        _notice(f'no singular-value logs, skipped: {sv_pattern}')

    if not figures:
        found = ', '.join(find_experiments(logs_root)) or 'none'
        raise FileNotFoundError(
            f'nothing to plot for {experiment_name!r}: looked for '
            f'{", ".join([metrics_path] + loss_paths + [sv_pattern])}. '
            f'Experiments under {logs_root}: {found}')
    return [_save(fig, os.path.join(out_dir, f'{experiment_name}_{kind}.png'))
            for kind, fig in figures]


def compare_figure(logs_root: str, names: Sequence[str], x: str = 'itr') -> Figure:
    """One panel per test metric that any of the experiments logged (IS with its std band, FID,
    the classifier's accuracy and FID, KID, ...), one curve per experiment that logged it.

    Experiments without a test-metrics log are skipped with a notice; raises FileNotFoundError
    if none has one. Where the experiments share no metric (runs scored by different nets),
    a notice says so and each metric gets its own panel all the same.
    """
    runs = {}
    for name in names:
        path = jsonl_path(logs_root, name)
        records = read_jsonl(path) if os.path.isfile(path) else []
        if records:
            runs[name] = records
        else:
            _notice(f'no test metrics, skipped: {path}')
    if not runs:
        paths = ', '.join(jsonl_path(logs_root, name) for name in names)
        raise FileNotFoundError(f'no test metrics to compare: looked for {paths}')
    logged = {name: metric_panels(records) for name, records in runs.items()}
    panels = list({panel[0]: panel for each in logged.values() for panel in each}.values())
    shared = set.intersection(*({panel[0] for panel in each} for each in logged.values()))
    if len(runs) > 1 and not shared:
        _notice('the experiments share no test metric: ' + '; '.join(
            f"{name}: {', '.join(p[0] for p in each) or 'none'}"
            for name, each in logged.items()))
    fig, axes = _new_figure(max(1, len(panels)), 'test metrics')
    for color, (name, records) in enumerate(runs.items()):
        xs, xlabel = _x_axis(records, x)
        for ax, (key, std_key, title, _) in zip(axes, panels):
            values = _column(records, key)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(key)
            if not np.isfinite(values).any():
                continue
            style = dict(color=f'C{color % 10}', marker='.', label=name)
            ax.plot(xs, values, **style)
            if std_key is not None and np.isfinite(_column(records, std_key)).any():
                std = _column(records, std_key)
                ax.fill_between(xs, values - std, values + std, color=style['color'],
                                alpha=0.2)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize='small')
    if not panels:
        axes[0].text(0.5, 0.5, 'no metrics in the records', transform=axes[0].transAxes,
                     ha='center')
    return fig


def plot_compare(logs_root: str, names: Sequence[str], out_path: str, x: str = 'itr') -> str:
    """Overlay the test metrics of several experiments (what `compare_IS.m` did for IS and
    FID), see `compare_figure`; returns `out_path`."""
    return _save(compare_figure(logs_root, names, x), out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; prints the paths written and returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--logs_root', default='logs', help='where training wrote its logs')
    parser.add_argument('--experiment_name', required=True, help='the experiment to plot')
    parser.add_argument('--out', default=None,
                        help='folder for the PNGs (default: <logs_root>/<exp>/plots/)')
    parser.add_argument('--smooth', type=int, default=None,
                        help='moving-average window of the loss plot, in iterations; 1 for none '
                             '(default: a tenth of the run, at most 100)')
    parser.add_argument('--compare', nargs='+', default=[], metavar='EXP',
                        help='also overlay every test metric of these experiments (IS, FID, '
                             'the classifier scores, KID, ...): compare_IS.png')
    parser.add_argument('--x', choices=X_AXES, default='itr',
                        help='x axis of the test metrics: iteration or hours of wall clock')
    args = parser.parse_args(argv)
    if args.smooth is not None and args.smooth < 1:
        parser.error('--smooth must be 1 or more')
    out_dir = args.out or os.path.join(args.logs_root, args.experiment_name, 'plots')
    try:
        for path in plot_experiment(args.logs_root, args.experiment_name, out_dir, args.smooth,
                                    args.x):
            print(path)
        if args.compare:
            # dict.fromkeys: the experiment itself first, each name once.
            names = list(dict.fromkeys([args.experiment_name] + args.compare))
            print(plot_compare(args.logs_root, names, os.path.join(out_dir, 'compare_IS.png'),
                               args.x))
    except FileNotFoundError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
