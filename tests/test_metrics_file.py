"""metrics.json and the tracker scalars of its records (the trainer core of classification and
diffusion)."""
from distill.engines.core.metrics_file import MetricsFile, tracker_scalars


def test_records_become_labelled_tracker_scalars_nested_ones_flattened():
    record = dict(kind='final', global_step=4, epoch=2, online=True, distiller='ADM',
                  student_fid=31.5, student_denoising_mse=dict(mean=0.05, t000=0.1),
                  teacher_denoising_mse=dict(mean=0.04), fid=None)
    assert tracker_scalars(record) == {
        'final/student_fid': 31.5, 'final/student_denoising_mse/mean': 0.05,
        'final/student_denoising_mse/t000': 0.1, 'final/teacher_denoising_mse/mean': 0.04}
    assert tracker_scalars({'val/student/top1': 80.0, 'loss': 1.0}) == {
        'val/student/top1': 80.0, 'epoch/loss': 1.0}


def test_truncate_drops_records_past_the_resumed_point(tmp_path):
    metrics = MetricsFile(tmp_path / 'metrics.json')
    for step in (1, 2, 3):
        metrics.append(dict(global_step=step))
    metrics.truncate('global_step', 2)
    assert [r['global_step'] for r in MetricsFile(tmp_path / 'metrics.json').records] == [1, 2]
