"""Tables of results over seeds: mean ± std of each method, and paired differences to a baseline.

Used by the demo (``tasks/classification/demo.py``), the real-data benchmarks
(``benchmarks/real_data.py``, ...) and the compare command (``distill.compare``).
``finals[method][seed]`` is the last record of a run's ``metrics.json`` (keys
``val/student/top1``, ``val/teacher/ece``, ...). A paired difference compares two methods on
the same seed (same initial networks and data order), which removes most of the seed-to-seed
spread that two unpaired means would carry.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

#: (network, metric) columns of the classification tables; other tasks pass their own
METRICS = [(net, metric) for net in ('student', 'teacher') for metric in ('top1', 'ece')]
#: column titles of the metric keys (others print as they are)
METRIC_LABELS = dict(top1='top-1', ece='ECE', mIoU='mIoU', bbox_mAP='bbox mAP')


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """The ``confidence`` t-interval of the mean of ``values`` (Student's t with n-1 degrees
    of freedom: the paired-seed differences are few, so no normal approximation); ``(nan,
    nan)`` for fewer than two values."""
    values = list(values)
    if len(values) < 2:
        return math.nan, math.nan
    from scipy import stats
    mean, std = mean_std(values)
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * std / math.sqrt(len(values))
    return mean - half, mean + half


def paired_statistics(diffs, confidence: float = 0.95) -> dict:
    """What the paired differences ``diffs`` (one per seed: method minus baseline on the same
    seed) say: ``n``, ``mean``, ``sd``, the ``confidence`` t-interval ``low``/``high`` and its
    half-width ``resolvable`` (t * sd / sqrt(n): the smallest difference these seeds can tell
    from none, at this spread), and ``seeds_needed``: the fewest seeds whose interval would
    exclude 0 if the mean and spread stayed as they are (None when the mean is 0; at most
    ``MAX_SEEDS_NEEDED``, above it None too). Fewer than two differences: no interval (nan)."""
    diffs = [float(d) for d in diffs]
    n = len(diffs)
    mean, sd = mean_std(diffs) if diffs else (math.nan, math.nan)
    low, high = (float(v) for v in t_interval(diffs, confidence))
    resolvable = (high - low) / 2 if n > 1 else math.nan
    return dict(n=n, mean=mean, sd=sd, low=low, high=high, resolvable=resolvable,
                seeds_needed=seeds_needed(mean, sd, confidence) if n > 1 else None)


#: the most seeds ``seeds_needed`` looks for
MAX_SEEDS_NEEDED = 1000


def seeds_needed(mean: float, sd: float, confidence: float = 0.95) -> int | None:
    """The fewest seeds ``n >= 2`` for which ``t(n-1) * sd / sqrt(n) < |mean|``: the paired
    interval of a difference of this mean and spread would exclude 0. None if no ``n`` up to
    ``MAX_SEEDS_NEEDED`` does (or the mean is 0)."""
    if not mean or math.isnan(mean):
        return None
    if sd == 0:
        return 2
    import numpy as np
    from scipy import stats
    n = np.arange(2, MAX_SEEDS_NEEDED + 1)
    resolved = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n) < abs(mean)
    return int(n[resolved][0]) if resolved.any() else None


def paired_difference(finals: dict, method: str, baseline: str, seeds,
                      key: str = 'val/student/top1'):
    """``(baseline, mean, std, low, high)`` of ``method - baseline`` over the seeds both have
    (``low``/``high``: its paired 95 % t-interval), or None."""
    ours, theirs = finals.get(method, {}), finals.get(baseline, {})
    diffs = [ours[s][key] - theirs[s][key] for s in seeds
             if s in ours and s in theirs and key in ours[s] and key in theirs[s]]
    return (baseline, *mean_std(diffs), *t_interval(diffs)) \
        if diffs and method != baseline else None


def summarise(finals: dict, seeds, baselines: dict, metrics=METRICS,
              primary: str = 'top1') -> dict:
    """Per method: mean/std of each ``(network, metric)`` over seeds, and paired differences
    of ``primary``: the student's and the teacher's to ``baselines[method]``
    (``vs_baseline``, ``teacher_vs_baseline``) and to ``'independent'``."""
    table = {}
    student_key, teacher_key = f'val/student/{primary}', f'val/teacher/{primary}'
    for method, per_seed in finals.items():
        row = {}
        for net, metric in metrics:
            values = [per_seed[s][f'val/{net}/{metric}'] for s in seeds
                      if s in per_seed and f'val/{net}/{metric}' in per_seed[s]]
            row[f'{net}_{metric}'] = mean_std(values) if values else None
        baseline = baselines.get(method)
        row['vs_baseline'] = paired_difference(finals, method, baseline, seeds,
                                               student_key) if baseline else None
        row['teacher_vs_baseline'] = paired_difference(finals, method, baseline, seeds,
                                                       teacher_key) if baseline else None
        row['vs_independent'] = paired_difference(finals, method, 'independent', seeds,
                                                  student_key)
        row['teacher_vs_independent'] = paired_difference(finals, method, 'independent', seeds,
                                                          teacher_key)
        row['seeds'] = [s for s in seeds if s in per_seed]
        table[method] = row
    return table


def format_difference(value, named: bool = True) -> str:
    """``+0.41 ± 0.02 [+0.36, +0.46] (baseline)``: mean ± std [95 % t-interval]."""
    if value is None:
        return '-'
    text = f'{value[1]:+.2f} ± {value[2]:.2f}'
    if len(value) > 3 and not math.isnan(value[3]):
        text += f' [{value[3]:+.2f}, {value[4]:+.2f}]'
    return text + (f' ({value[0]})' if named else '')


def format_table(table: dict, metrics=METRICS) -> str:
    """A plain-text table: one row per method."""
    def pm(value):
        return '-' if value is None else f'{value[0]:.2f} ± {value[1]:.2f}'

    header = (('method',) + tuple(f'{net} {METRIC_LABELS.get(metric, metric)}'
                                  for net, metric in metrics)
              + ('student vs baseline', 'teacher vs baseline', 'student vs indep.',
                 'teacher vs indep.'))
    rows = [header] + [(m,) + tuple(pm(r[f'{net}_{metric}']) for net, metric in metrics)
                       + (format_difference(r['vs_baseline']),
                          format_difference(r.get('teacher_vs_baseline'), False),
                          format_difference(r['vs_independent'], False),
                          format_difference(r['teacher_vs_independent'], False))
                       for m, r in table.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [' | '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def plot_seed_bars(finals: dict, seeds, path, title: str, metric: str = 'top1',
                   unit: str = '%') -> Path:
    """Student and teacher ``metric`` per method: a bar at the mean, a dot per seed."""
    from distill.viz import save_figure
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    methods = list(finals)
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(methods)), 4.5))
    for ax, net in zip(axes, ('student', 'teacher')):
        key = f'val/{net}/{metric}'
        values = {m: [finals[m][s][key] for s in seeds if s in finals[m] and key in finals[m][s]]
                  for m in methods}
        for i, method in enumerate(methods):
            if not values[method]:
                continue
            ax.bar(i, statistics.mean(values[method]), color='C7' if i == 0 else 'C0',
                   alpha=0.6)
            ax.scatter([i] * len(values[method]), values[method], color='k', s=12, zorder=3)
        everything = [v for vs in values.values() for v in vs]
        ax.set_ylim(min(everything) - 2, max(everything) + 1)
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha='right')
        ax.set_ylabel(f'{net} val {METRIC_LABELS.get(metric, metric)} ({unit})')
        ax.grid(axis='y', alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
