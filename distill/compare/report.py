"""The tables and the plot of a comparison, from its ``results.json`` dict alone (so that
``--report`` prints exactly what the run printed).

Per network (student, teacher), per method: mean ± sd over the seeds; the paired difference to
the method's baseline (same seed: same initial networks and data order) with its 95 %
t-interval; ``resolvable``, the interval's half-width t * sd_diff / sqrt(n): the smallest
difference these seeds tell from none at the spread seen; and a verdict: better, worse, or not
resolved (with about how many seeds would resolve a difference of this size and spread).
"""
from __future__ import annotations

import math
from pathlib import Path

from distill.results import mean_std, paired_statistics

NETWORKS = ('student', 'teacher')


def _values(results: dict, method: str, network: str) -> dict:
    return {int(seed): run[network] for seed, run in results['runs'].get(method, {}).items()
            if run.get(network) is not None}


def tables(results: dict) -> dict:
    """``{network: {method: row}}``: a row holds ``values`` (per seed), ``mean``, ``sd``,
    ``baseline``, ``frozen`` (the teacher of an offline method) and ``difference``
    (``distill.results.paired_statistics`` of method minus baseline, or None) and
    ``verdict``."""
    higher = results['metric']['higher_is_better']
    out = {}
    for network in NETWORKS:
        rows = {}
        for method in results['methods']:
            values = _values(results, method, network)
            frozen = network == 'teacher' and method in results['offline']
            mean, sd = mean_std(values.values()) if values else (math.nan, math.nan)
            row = dict(values=values, n=len(values), mean=mean, sd=sd, frozen=frozen,
                       baseline=None, difference=None, verdict='')
            baseline = results['baselines'].get(method)
            if baseline is not None and not frozen:
                theirs = _values(results, baseline, network)
                common = [s for s in values if s in theirs]
                row['baseline'] = baseline
                if common:
                    diff = paired_statistics([values[s] - theirs[s] for s in common])
                    row['difference'] = diff
                    row['verdict'] = verdict(diff, higher)
            rows[method] = row
        out[network] = rows
    return out


def verdict(diff: dict, higher_is_better: bool) -> str:
    if diff['n'] < 2:
        return 'one seed: no interval'
    if diff['low'] > 0 or diff['high'] < 0:
        return 'better' if (diff['mean'] > 0) == higher_is_better else 'worse'
    needed = diff['seeds_needed']
    if needed is None:
        return 'not resolved' + (' (mean 0)' if not diff['mean'] else ' (>1000 seeds)')
    return f'not resolved (~{needed} seeds)'


def _table_text(rows: dict, results: dict, network: str) -> str:
    digits = results['metric']['digits']

    def num(value, sign=False):
        return '-' if value is None or math.isnan(value) else \
            f'{value:{"+" if sign else ""}.{digits}f}'

    header = ('method', 'seeds', 'mean ± sd', 'vs', 'difference [95 % interval]', 'resolvable',
              'verdict')
    lines = [header]
    for method, row in rows.items():
        if not row['n']:
            lines.append((method, '0', '-', '', '', '', 'no finished run'))
            continue
        spread = num(row['mean']) + (f" ± {num(row['sd'])}" if row['n'] > 1 else '')
        if row['frozen']:
            source = results['teacher']
            origin = (f"independent seed {source['seed']}'s teacher" if 'seed' in source
                      else 'the given teacher checkpoint')
            lines.append((method, str(row['n']), num(row['mean']), 'frozen', origin, '', ''))
            continue
        diff = row['difference']
        if diff is None:
            lines.append((method, str(row['n']), spread, row['baseline'] or '', '', '', ''))
            continue
        interval = num(diff['mean'], True)
        if diff['n'] > 1:
            interval += f" [{num(diff['low'], True)}, {num(diff['high'], True)}]"
        resolvable = f"±{num(diff['resolvable'])}" if diff['n'] > 1 else '-'
        lines.append((method, str(row['n']), spread, row['baseline'], interval, resolvable,
                      row['verdict']))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [' | '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
            for line in lines]
    text.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(text)


def format_report(results: dict) -> str:
    """The text the comparison prints (and ``--report`` reprints)."""
    metric = results['metric']
    seeds = ' '.join(str(s) for s in results['seeds'])
    better = 'higher' if metric['higher_is_better'] else 'lower'
    shown = results.get('config_shown', results['config'])
    parts = [f"{results['framework']} comparison of {shown}, seeds {seeds}"
             + (f", --set {' '.join(results['sets'])}" if results['sets'] else '')]
    rows = tables(results)
    for network in NETWORKS:
        parts.append(f"\n{network} {metric['title']} ({metric['unit']}, {better} is better; "
                     f'differences paired on the same seed):\n\n'
                     f'{_table_text(rows[network], results, network)}')
    parts.append(
        '\nA difference whose 95 % interval excludes 0 is resolved by these seeds (better or '
        'worse); "resolvable" is the\ninterval\'s half-width, the smallest difference these '
        'seeds tell from none at this spread: below it, add seeds.')
    missing = [f'{m} seed {s}' for m in results['methods'] for s in results['seeds']
               if str(s) not in results['runs'].get(m, {})]
    if missing:
        parts.append(f"not finished: {', '.join(missing)}")
    for failure in results.get('failed', []):
        parts.append(f"failed: {failure['method']} seed {failure['seed']} "
                     f"({failure['reason']}; log {failure['log']})")
    return '\n'.join(parts)


def plot(results: dict, path) -> Path:
    """A dot per seed per method (student and teacher side by side; a colour per seed, so that
    a seed's runs can be followed across methods), a line at each method's mean."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metric, methods = results['metric'], results['methods']
    seeds = [int(s) for s in results['seeds']]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.1 * len(methods) + 3), 4.2))
    for ax, network in zip(axes, NETWORKS):
        for i, method in enumerate(methods):
            values = _values(results, method, network)
            for j, seed in enumerate(seeds):
                if seed in values:
                    ax.scatter(i + 0.08 * (j - (len(seeds) - 1) / 2), values[seed], s=22,
                               color=f'C{j % 10}', zorder=3,
                               label=f'seed {seed}' if i == 0 else None)
            if values:
                mean = sum(values.values()) / len(values)
                ax.hlines(mean, i - 0.3, i + 0.3, color='k', lw=1.5, zorder=2)
        labels = [f'{m} (frozen)' if network == 'teacher' and m in results['offline'] else m
                  for m in methods]
        ax.set_xticks(range(len(methods)), labels, rotation=30, ha='right')
        better = 'higher' if metric['higher_is_better'] else 'lower'
        ax.set_ylabel(f"{network} {metric['title']} ({metric['unit']}, {better} is better)")
        ax.grid(axis='y', alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig.suptitle(f"{Path(results['config']).name}: a dot per seed, a line at the mean")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
