"""Seed tables: means, spreads and paired differences against hand-computed values."""
import math
import statistics

import pytest

from distill.results import format_difference, format_table, summarise, t_interval


def _record(student, teacher):
    return {'val/student/top1': student, 'val/teacher/top1': teacher,
            'val/student/ece': 1.0, 'val/teacher/ece': 2.0}


def test_paired_difference_uses_matching_seeds_only():
    finals = {
        'independent': {0: _record(70.0, 80.0), 1: _record(74.0, 82.0), 2: _record(71.0, 81.0)},
        'DML': {0: _record(71.0, 79.0), 1: _record(76.0, 82.5)},
    }
    table = summarise(finals, [0, 1, 2], {'DML': 'independent'})
    mean, std = table['independent']['student_top1']
    assert mean == pytest.approx(71.6666667) and std == pytest.approx(
        statistics.stdev([70.0, 74.0, 71.0]))
    baseline, diff, spread, low, high = table['DML']['vs_baseline']
    assert baseline == 'independent'
    assert diff == pytest.approx(1.5) and spread == pytest.approx(statistics.stdev([1.0, 2.0]))
    # two seeds: t(0.975, 1 dof) = 12.7062 times the standard error
    half = 12.7062047 * statistics.stdev([1.0, 2.0]) / 2 ** 0.5
    assert (low, high) == pytest.approx((1.5 - half, 1.5 + half))
    assert table['DML']['teacher_vs_baseline'][1] == pytest.approx(-0.25)
    assert table['DML']['teacher_vs_independent'][1] == pytest.approx(-0.25)
    assert table['DML']['seeds'] == [0, 1]
    assert table['independent']['vs_baseline'] is None
    assert table['independent']['vs_independent'] is None
    text = format_table(table)
    assert '+1.50 ± 0.71 [-4.85, +7.85] (independent)' in text and '71.67 ± 2.08' in text


def test_t_interval_on_known_values():
    # mean 2, std 1, n 3: t(0.975, 2 dof) = 4.302653 -> half width 4.302653 / sqrt(3)
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (low, high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    assert t_interval([1.0, 2.0, 3.0], confidence=0.9)[1] < high  # narrower at 90 %
    assert all(math.isnan(v) for v in t_interval([1.0]))  # one seed: no interval
    assert format_difference(('DML', 0.5, 0.0, math.nan, math.nan)) == '+0.50 ± 0.00 (DML)'


def test_tables_of_other_metrics_and_missing_teacher():
    metrics = [('student', 'mIoU'), ('teacher', 'mIoU')]
    finals = {'independent': {0: {'val/student/mIoU': 50.0, 'val/teacher/mIoU': 60.0},
                              1: {'val/student/mIoU': 52.0, 'val/teacher/mIoU': 61.0}},
              'FitNet': {0: {'val/student/mIoU': 51.0}, 1: {'val/student/mIoU': 54.0}}}
    table = summarise(finals, [0, 1], {'FitNet': 'independent'}, metrics=metrics,
                      primary='mIoU')
    assert table['FitNet']['vs_baseline'][1] == pytest.approx(1.5)
    assert table['FitNet']['teacher_mIoU'] is None
    assert table['FitNet']['teacher_vs_independent'] is None
    text = format_table(table, metrics)
    assert text.splitlines()[0].startswith('method      | student mIoU | teacher mIoU')
