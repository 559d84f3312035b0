"""Tables of results over seeds: mean ± std of each method, and paired differences to a baseline.

Used by the demo (``tasks/classification/demo.py``) and the real-data benchmark
(``benchmarks/real_data.py``). ``finals[method][seed]`` is the last record of a run's
``metrics.json`` (keys ``val/student/top1``, ``val/teacher/ece``, ...). A paired difference
compares two methods on the same seed (same initial networks and data order), which removes
most of the seed-to-seed spread that two unpaired means would carry.
"""
from __future__ import annotations

import statistics
from pathlib import Path

METRICS = [(net, metric) for net in ('student', 'teacher') for metric in ('top1', 'ece')]


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_difference(finals: dict, method: str, baseline: str, seeds,
                      key: str = 'val/student/top1'):
    """``(baseline, mean, std)`` of ``method - baseline`` over the seeds both have, or None."""
    ours, theirs = finals.get(method, {}), finals.get(baseline, {})
    diffs = [ours[s][key] - theirs[s][key] for s in seeds if s in ours and s in theirs]
    return (baseline, *mean_std(diffs)) if diffs and method != baseline else None


def summarise(finals: dict, seeds, baselines: dict) -> dict:
    """Per method: mean/std of each metric over seeds, and the paired difference of the
    student's top-1 to ``baselines[method]`` (``vs_baseline``) and to ``'independent'``."""
    table = {}
    for method, per_seed in finals.items():
        row = {}
        for net, metric in METRICS:
            values = [per_seed[s][f'val/{net}/{metric}'] for s in seeds if s in per_seed]
            row[f'{net}_{metric}'] = mean_std(values) if values else None
        baseline = baselines.get(method)
        row['vs_baseline'] = paired_difference(finals, method, baseline, seeds) if baseline \
            else None
        row['vs_independent'] = paired_difference(finals, method, 'independent', seeds)
        row['teacher_vs_independent'] = paired_difference(finals, method, 'independent', seeds,
                                                          'val/teacher/top1')
        row['seeds'] = [s for s in seeds if s in per_seed]
        table[method] = row
    return table


def format_table(table: dict) -> str:
    """A plain-text table: one row per method."""
    def pm(value):
        return '-' if value is None else f'{value[0]:.2f} ± {value[1]:.2f}'

    def diff(value, named=True):
        if value is None:
            return '-'
        return f'{value[1]:+.2f} ± {value[2]:.2f}' + (f' ({value[0]})' if named else '')

    header = ('method', 'student top-1', 'student ECE', 'teacher top-1', 'teacher ECE',
              'student vs baseline', 'student vs indep.', 'teacher vs indep.')
    rows = [header] + [(m, pm(r['student_top1']), pm(r['student_ece']), pm(r['teacher_top1']),
                        pm(r['teacher_ece']), diff(r['vs_baseline']),
                        diff(r['vs_independent'], False),
                        diff(r['teacher_vs_independent'], False))
                       for m, r in table.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [' | '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def plot_seed_bars(finals: dict, seeds, path, title: str) -> Path:
    """Student and teacher top-1 per method: a bar at the mean, a dot per seed."""
    from distill.viz import save_figure
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    methods = list(finals)
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(methods)), 4.5))
    for ax, net in zip(axes, ('student', 'teacher')):
        key = f'val/{net}/top1'
        values = {m: [finals[m][s][key] for s in seeds if s in finals[m]] for m in methods}
        for i, method in enumerate(methods):
            ax.bar(i, statistics.mean(values[method]), color='C7' if i == 0 else 'C0',
                   alpha=0.6)
            ax.scatter([i] * len(values[method]), values[method], color='k', s=12, zorder=3)
        everything = [v for vs in values.values() for v in vs]
        ax.set_ylim(min(everything) - 2, max(everything) + 1)
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha='right')
        ax.set_ylabel(f'{net} val top-1 (%)')
        ax.grid(axis='y', alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
