"""Seed tables: means, spreads and paired differences against hand-computed values."""
import statistics

import pytest

from distill.results import format_table, summarise


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
    baseline, diff, spread = table['DML']['vs_baseline']
    assert baseline == 'independent'
    assert diff == pytest.approx(1.5) and spread == pytest.approx(statistics.stdev([1.0, 2.0]))
    assert table['DML']['teacher_vs_independent'][1] == pytest.approx(-0.25)
    assert table['DML']['seeds'] == [0, 1]
    assert table['independent']['vs_baseline'] is None
    assert table['independent']['vs_independent'] is None
    text = format_table(table)
    assert '+1.50 ± 0.71 (independent)' in text and '71.67 ± 2.08' in text
