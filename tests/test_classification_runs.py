"""End-to-end runs: two processes through ``accelerate launch``, the demo, and a short
training on the shapes set that must end well above chance."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from distill.engines.classification.train import train_classification

from test_classification_engine import tiny_cfg

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

REPO = Path(__file__).resolve().parents[1]


def load_script(path, name):
    """Import a script by path under a unique name (other tasks have a demo.py too)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_script(REPO / 'tasks' / 'classification' / 'demo.py', 'classification_demo')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_two_processes_through_accelerate_launch(tmp_path):
    cfg = tiny_cfg(epochs=2)
    cfg.dump(str(tmp_path / 'tiny.py'))
    env = dict(os.environ, ACCELERATE_USE_CPU='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    # --multi_gpu with ACCELERATE_USE_CPU=1 gives real DDP over gloo ('--cpu' alone would
    # silently start a single process)
    command = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu',
               '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
               '--dynamo_backend', 'no', '--main_process_port', str(free_port()),
               str(REPO / 'tasks' / 'classification' / 'train.py'), str(tmp_path / 'tiny.py'),
               '--work-dir', str(tmp_path / 'run'), '--cfg-options', 'train.seed=3']
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert [r['epoch'] for r in records] == [1, 2]
    assert all(r['num_processes'] == 2 for r in records)
    # 96 images, 2 processes x batches of 16: 3 steps per epoch on each
    assert records[-1]['global_step'] == 6
    assert all(r['val/num_samples'] == 40 for r in records)  # shards reduced, none twice
    assert (tmp_path / 'run' / 'checkpoint-6' / 'training_state.json').is_file()
    assert 'seed=3' in (tmp_path / 'run' / 'config.py').read_text().replace(' ', '')


SHARDED_METRICS = """
import torch
from accelerate import Accelerator
from distill.engines.classification.metrics import ClassificationMeter
acc = Accelerator(cpu=True)
g = torch.Generator().manual_seed(0)
logits, labels = torch.randn(50, 7, generator=g) * 3, torch.randint(0, 7, (50,), generator=g)
shard = slice(0, 20) if acc.process_index == 0 else slice(20, 50)  # uneven shards
meter = ClassificationMeter()
meter.update(logits[shard], labels[shard])
got = meter.summary(lambda t: acc.reduce(t, 'sum'))
whole = ClassificationMeter()
whole.update(logits, labels)
ref = whole.summary()
assert got['num_samples'] == 50, got
assert all(abs(got[k] - ref[k]) < 1e-4 for k in ('top1', 'top5', 'ece')), (got, ref)
acc.end_training()
"""


def test_metrics_of_uneven_shards_equal_the_whole_set_over_two_processes(tmp_path):
    (tmp_path / 'metrics.py').write_text(SHARDED_METRICS)
    env = dict(os.environ, ACCELERATE_USE_CPU='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    command = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu',
               '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
               '--dynamo_backend', 'no', '--main_process_port', str(free_port()),
               str(tmp_path / 'metrics.py')]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_demo_prints_table_and_writes_figures(tmp_path, capsys):
    cfg = Config.fromfile(demo.DEMO_CONFIG)
    cfg.data.train.num_samples, cfg.data.val.num_samples = 64, 32
    cfg.data.train.image_size = cfg.data.val.image_size = 16
    cfg.distiller.adapter.probe_input_size = 16
    cfg.train.progress_bar = False
    cfg.dump(str(tmp_path / 'demo_small.py'))
    table = demo.main(['--out', str(tmp_path / 'out'), '--epochs', '1', '--seeds', '0', '1',
                       '--config', str(tmp_path / 'demo_small.py')])
    assert list(table) == ['independent', 'DML', 'ADM']
    assert table['ADM']['seeds'] == [0, 1] and table['ADM']['vs_baseline'][0] == 'DML'
    printed = capsys.readouterr().out
    assert 'student top-1' in printed and 'independent' in printed and ' ± ' in printed
    for name in ('curves.png', 'adm_maps.png'):
        data = (tmp_path / 'out' / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000
    ind = json.loads((tmp_path / 'out' / 'independent' / 'seed1' / 'metrics.json')
                     .read_text())[-1]
    assert 'student.kd' not in ind and 'student.co' not in ind  # kd=0: CE only


def test_short_training_on_shapes_ends_well_above_chance(tmp_path):
    # 960 16x16 images of 4 shape classes, 8 epochs of DML (T=1): about 20 s on one core
    cfg = tiny_cfg(epochs=8, distiller_type='DML', num_train=960, temperature=1.0)
    cfg.data.val.num_samples = 200
    cfg.data.batch_size = 32
    cfg.distiller.student.width = 8
    cfg.distiller.teacher.width = 16
    cfg.schedule.milestones = [7]
    record = train_classification(cfg, work_dir=tmp_path).records[-1]
    # chance is 25%; this run reaches about 65% (student) and 75% (teacher)
    assert record['val/student/top1'] > 50, record
    assert record['val/teacher/top1'] > 50, record


def test_test_py_gives_the_runs_own_val_metrics(tmp_path):
    """tasks/classification/test.py on a run's checkpoint folder, and on its student.pth and
    teacher.pth, reports the val metrics the run recorded for the same weights."""
    import importlib.util
    from test_classification_engine import checkpoint_names, tiny_cfg
    from distill.engines.classification.train import train_classification
    cfg = tiny_cfg(epochs=1)
    run = tmp_path / 'run'
    record = train_classification(cfg, work_dir=run).records[-1]
    cfg.dump(str(tmp_path / 'config.py'))
    spec = importlib.util.spec_from_file_location(
        'cls_test', Path(__file__).resolve().parents[1] / 'tasks' / 'classification' / 'test.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = script.main([str(tmp_path / 'config.py'), str(run / checkpoint_names(run)[-1])])
    files = script.main([str(tmp_path / 'config.py'), str(run / 'student.pth'), '--teacher',
                         str(run / 'teacher.pth'), '--out', str(tmp_path / 'test.json')])
    for results in (folder, files):
        for net in ('student', 'teacher'):
            for metric in ('top1', 'top5', 'ece'):
                assert results[net][metric] == pytest.approx(record[f'val/{net}/{metric}'],
                                                             abs=1e-4), (net, metric)
    assert json.loads((tmp_path / 'test.json').read_text())['results'].keys() == {'student',
                                                                                  'teacher'}
    student_only = script.main([str(tmp_path / 'config.py'), str(run / 'student.pth')])
    assert set(student_only) == {'student'}
