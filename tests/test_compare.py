"""The compare command (``tasks/compare.py``, ``distill.compare``): its statistics against
scipy and written-out numbers, its method table, and comparisons on the shapes configs of the
four frameworks through the real entry points, on tiny budgets cut with ``--set`` (the configs'
own keys): the tables, ``results.json``, the plot, ``--report``, a comparison stopped by a
signal and started again, and a run resumed from its checkpoint."""
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distill.compare import CompareError, compare, main, method_section
from distill.compare.methods import METHODS, UnknownMethod, baseline_of, resolve_method
from distill.compare.report import format_report, tables
from distill.compare.options import split_sets
from distill.results import paired_statistics, seeds_needed

pytestmark = pytest.mark.end_to_end

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'
DEMO = CONFIGS / 'classification' / 'demo.py'
# one optimiser step per epoch (16 images, batches of 64), two epochs: a checkpoint after each
CLS_SETS = ['data.train.num_samples=16', 'data.val.num_samples=16', 'schedule.epochs=2',
            'schedule.milestones=[]']
MM_SETS = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
           'default_hooks.checkpoint.interval=2']
DIFFUSION_SETS = ['max_train_steps=2', 'data.num_samples=16', 'data.num_heldout=4',
                  'train_batch_size=8', 'checkpointing_steps=2', 'validation_steps=0',
                  'report_to=none', 'evaluation.num_images=4', 'evaluation.num_samples=2',
                  'evaluation.num_inference_steps=2', 'evaluation.num_buckets=2']


# ------------------------------------------------------------------ statistics
def test_paired_statistics_against_scipy_and_written_out_numbers():
    from scipy import stats
    diffs = [0.5, 1.5, 1.0, 2.0]
    result = paired_statistics(diffs)
    # mean 1.25, sd sqrt(1.25 / 3) = 0.645497, t(0.975, 3 dof) = 3.182446:
    # half-width 3.182446 * 0.645497 / 2 = 1.027130
    assert result['n'] == 4
    assert result['mean'] == pytest.approx(1.25)
    assert result['sd'] == pytest.approx(0.6454972, abs=1e-6)
    assert result['resolvable'] == pytest.approx(1.0271301, abs=1e-6)
    assert (result['low'], result['high']) == pytest.approx((0.2228699, 2.2771301), abs=1e-6)
    scipy_interval = stats.t.interval(0.95, 3, loc=1.25, scale=statistics.stdev(diffs) / 2)
    assert (result['low'], result['high']) == pytest.approx(scipy_interval)
    assert result['seeds_needed'] == 4  # resolved already: 4 seeds are enough
    # an interval across 0: mean 2/3, sd 1.527525, t(0.975, 2 dof) = 4.302653
    result = paired_statistics([1.0, -1.0, 2.0])
    assert (result['low'], result['high']) == pytest.approx((-3.1279164, 4.4612497), abs=1e-6)
    assert result['resolvable'] == pytest.approx(3.7945830, abs=1e-6)
    # 23 seeds: t(0.975, 22 dof) = 2.073873 -> 2.073873 * 1.527525 / sqrt(23) = 0.6606 < 2/3,
    # 22 seeds: t(0.975, 21 dof) = 2.079614 -> 0.6773 > 2/3
    assert result['seeds_needed'] == 23
    assert stats.t.ppf(0.975, 22) * 1.5275252 / math.sqrt(23) < 2 / 3 \
        < stats.t.ppf(0.975, 21) * 1.5275252 / math.sqrt(22)
    one = paired_statistics([0.3])
    assert one['n'] == 1 and math.isnan(one['low']) and one['seeds_needed'] is None
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(1.0, 0.0) == 2
    assert seeds_needed(0.01, 1.0) is None  # beyond MAX_SEEDS_NEEDED


def _results(runs, methods, offline=(), higher=True, baselines=None):
    return dict(config='/x/my_config.py', framework='classification', out='/x', seeds=[0, 1, 2],
                methods=methods, sets=[], teacher=dict(seed=0), offline=list(offline),
                metric=dict(title='top-1', unit='%', higher_is_better=higher, digits=2),
                baselines=baselines or {m: baseline_of(m, methods) for m in methods},
                runs={m: {str(s): dict(student=v[0], teacher=v[1]) for s, v in per.items()}
                      for m, per in runs.items()}, failed=[])


def test_tables_pair_on_seeds_and_read_both_directions():
    runs = {'independent': {0: (70.0, 80.0), 1: (74.0, 82.0), 2: (71.0, 81.0)},
            'DML': {0: (71.0, 79.0), 1: (75.5, 81.5), 2: (72.0, 80.0)},
            'KD': {0: (70.5, 80.0), 1: (73.0, 80.0)}}
    results = _results(runs, ['independent', 'DML', 'KD'], offline=['KD'])
    rows = tables(results)
    dml = rows['student']['DML']
    assert dml['baseline'] == 'independent' and dml['mean'] == pytest.approx(72.8333333)
    # differences 1.0, 1.5, 1.0: mean 1.1667, sd 0.288675, t(0.975, 2) = 4.302653
    assert dml['difference']['mean'] == pytest.approx(7 / 6)
    assert dml['difference']['resolvable'] == pytest.approx(4.302653 * 0.2886751 / math.sqrt(3),
                                                             abs=1e-5)
    assert dml['verdict'] == 'better'
    assert rows['teacher']['DML']['verdict'] == 'worse'  # -1.0 on every seed
    kd = rows['student']['KD']
    assert kd['difference']['n'] == 2 and kd['verdict'].startswith('not resolved (~')
    assert rows['teacher']['KD']['frozen'] and rows['teacher']['KD']['difference'] is None
    text = format_report(results)
    assert 'DML         | 3     | 72.83 ± 2.36 | independent | +1.17 [+0.45, +1.88]' in text
    assert re.search(r"\nKD +\| 2 +\| 80\.00 +\| frozen +\| independent seed 0's teacher", text)
    assert 'not finished: KD seed 2' in text
    # lower is better (diffusion's MSE): the same numbers read the other way
    lower = tables(_results(runs, ['independent', 'DML', 'KD'], offline=['KD'], higher=False))
    assert lower['student']['DML']['verdict'] == 'worse'
    assert lower['teacher']['DML']['verdict'] == 'better'
    assert 'lower is better' in format_report(
        _results(runs, ['independent', 'DML'], higher=False))


# ------------------------------------------------------------------ the method table
def test_unknown_methods_are_refused_naming_the_known_ones():
    with pytest.raises(UnknownMethod, match=r"did you mean 'ADM offline'.*independent, DML"):
        resolve_method('ADM ofline', 'classification')
    assert resolve_method('adm_offline', 'classification') == 'ADM offline'
    assert resolve_method('sokd+kd', 'classification') == 'SoKD+KD'
    with pytest.raises(UnknownMethod, match='KD is not offered for detection: it needs class '
                                            'logits'):
        resolve_method('KD', 'detection')
    with pytest.raises(UnknownMethod, match="unknown method 'ADN'; did you mean 'ADM'"):
        compare(DEMO, methods=['independent', 'ADN'], seeds=[0], out='/nonexistent')


def test_baselines_fall_back_along_the_chain():
    assert baseline_of('ADM', ['independent', 'DML', 'ADM']) == 'DML'
    assert baseline_of('ADM', ['independent', 'ADM']) == 'independent'
    assert baseline_of('SoKD+KD', ['independent', 'KD', 'SoKD+KD']) == 'KD'
    assert baseline_of('SoKD+KD', ['independent', 'SoKD+KD']) == 'independent'
    assert baseline_of('independent', ['independent']) is None


def test_method_sections_keep_the_networks_and_change_the_method():
    user = dict(type='ADM', student=dict(type='tiny_cnn', width=8),
                teacher=dict(type='tiny_cnn', width=32), adapter=dict(type='ClassifierAdapter'),
                taps=[dict(student='stage3', teacher='stage3')], online=True,
                loss_weights=dict(task=1.0, kd=1.0, co=0.5, di=0.01), tau=2.0,
                teacher_ckpt='old.pth')
    independent = method_section('independent', user, 'classification')
    assert independent['type'] == 'DML' and independent['loss_weights']['kd'] == 0.0
    assert independent['online'] is True and 'taps' not in independent
    assert independent['student'] == user['student'] and 'teacher_ckpt' not in independent
    # the config's own type keeps the config's settings of it; fixed keys on top
    offline = method_section('ADM offline', user, 'classification')
    assert offline['online'] is False and offline['tau'] == 2.0
    assert offline['loss_weights']['co'] == 0.5 and offline['taps'] == user['taps']
    kd = method_section('KD', user, 'classification')
    assert kd == dict(type='KD', student=user['student'], teacher=user['teacher'],
                      adapter=user['adapter'], temperature=4.0,
                      loss_weights=dict(task=1.0, kd=1.0), online=False)
    sokd = method_section('SoKD+FitNet', user, 'classification')
    assert sokd['type'] == 'SoKD' and sokd['base']['type'] == 'FitNet' and sokd['dam'] is None
    # a config without taps: the feature methods pair the stages themselves
    dml_user = dict(type='DML', student=user['student'], teacher=user['teacher'])
    assert method_section('FitNet', dml_user, 'classification')['taps'] == 'auto'
    # detectors: no logits KD term in any method
    assert method_section('ADM', user, 'detection')['loss_weights']['kd'] == 0.0
    # a SoKD config: its base holds the networks, its SoKD settings wrap SoKD+X
    sokd_user = dict(type='SoKD', base=dict(user, type='FitNet'), dafa=dict(init_magnitude=0.1),
                     dam=None, arch_interval=3)
    again = method_section('SoKD+FitNet', sokd_user, 'classification')
    assert again['arch_interval'] == 3 and again['dafa'] == dict(init_magnitude=0.1)
    assert method_section('DML', sokd_user, 'classification')['student'] == user['student']


def test_every_classification_and_diffusion_method_builds_and_trains_a_step():
    """Each method's section, derived from the shapes configs, builds and gives finite terms."""
    from mmengine.config import Config

    from distill import build_distiller
    from distill.adapters.diffusers import DiffusionAdapter, model_sample_size
    from distill.compare.frameworks import FRAMEWORKS
    from distill.compare.methods import method_names
    from distill.distillers.base import build_network

    cfg = Config.fromfile(str(DEMO))
    user = FRAMEWORKS['classification'].user_section(cfg)
    batch = dict(inputs=torch.randn(4, 3, 32, 32), labels=torch.randint(0, 6, (4,)))
    for name in method_names('classification'):
        section = method_section(name, user, 'classification')
        if METHODS[name].offline:  # the comparison gives the independent run's teacher
            (section.get('base') or section)['random_teacher'] = True
        distiller = build_distiller(section)
        distiller.set_progress(0.5)
        terms = distiller(batch)
        assert all(torch.isfinite(t) for t in terms.values()), name
        assert ('teacher.task' in terms) == (not METHODS[name].offline), name
    cfg = Config.fromfile(str(CONFIGS / 'diffusion' / 'adm_shapes_tiny.py'))
    user = FRAMEWORKS['diffusion'].user_section(cfg)
    images = torch.randn(2, 3, 16, 16)
    for name in method_names('diffusion'):
        student, teacher = build_network(dict(cfg.student)), build_network(dict(cfg.teacher))
        adapter = DiffusionAdapter(noise_scheduler=dict(cfg.noise_scheduler),
                                   probe_input_size=model_sample_size(student))
        distiller = build_distiller(dict(method_section(name, user, 'diffusion'),
                                         student=student, teacher=teacher, adapter=adapter))
        distiller.set_progress(0.5)
        terms = distiller(dict(pixel_values=images))
        assert all(torch.isfinite(t) for t in terms.values()), name


def test_sets_for_all_methods_or_one():
    common, own = split_sets(['schedule.epochs=3', 'ADM:distiller.tau=2.0',
                              'adm offline:distiller.loss_weights.co=0.2'],
                             ['independent', 'ADM', 'ADM offline'])
    assert common == ['schedule.epochs=3']
    assert own == {'independent': [], 'ADM': ['distiller.tau=2.0'],
                   'ADM offline': ['distiller.loss_weights.co=0.2']}
    with pytest.raises(ValueError, match="'KD' is not one of the methods compared"):
        split_sets(['KD:distiller.temperature=2'], ['independent', 'ADM'])
    assert split_sets({'schedule.epochs': 3}, ['ADM'])[0] == ['schedule.epochs=3']


# ------------------------------------------------------------------ through the entry points
def _compare_command(out, *extra):
    return [sys.executable, str(REPO / 'tasks' / 'compare.py'), str(DEMO), '--methods',
            'independent', 'KD', '--seeds', '0', '1', '--out', str(out), '--set', *CLS_SETS,
            *extra]


def _run_files(out, method, seed):
    work_dir = out / method / f'seed{seed}'
    return work_dir, json.loads((work_dir / 'compare_run.json').read_text())


def test_classification_comparison_stopped_continued_resumed_and_reported(tmp_path, capsys,
                                                                          monkeypatch):
    out = tmp_path / 'cmp'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    # a comparison stopped by a signal once its first run has finished (the second running)
    stopped = subprocess.Popen(_compare_command(out, '--jobs', '1'), cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if json.loads((out / 'results.json').read_text())['runs']:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    time.sleep(0.5)  # the next run started
    stopped.send_signal(signal.SIGTERM)
    output = stopped.communicate(timeout=60)[0]
    assert stopped.returncode == 130, output
    assert 'interrupted: 1 of 4 runs finished' in output
    first_dir, first = _run_files(out, 'independent', 0)
    assert first['state'] == 'done'
    first_mtime = (first_dir / 'metrics.json').stat().st_mtime
    _, second = _run_files(out, 'independent', 1)
    assert second['state'] == 'started'
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # the run went with the comparison
        os.kill(second['pid'], 0)

    # the same command continues: the finished run reused, the others trained
    monkeypatch.chdir(tmp_path)
    assert main(_compare_command(out, '--jobs', '2')[2:]) == 0
    printed = capsys.readouterr().out
    assert '0 to resume, 3 to train' in printed
    assert 'independent seed 0: student top-1' in printed and '(reused in' in printed
    assert (first_dir / 'metrics.json').stat().st_mtime == first_mtime
    table = printed[printed.index('classification comparison of'):printed.index('\nwrote')]
    student_row, teacher_row = [line for line in table.splitlines() if line.startswith('KD ')]
    assert '| independent | ' in student_row and '[' in student_row  # an interval
    assert re.search(r"\| frozen +\| independent seed 0's teacher", teacher_row)
    results = json.loads((out / 'results.json').read_text())
    assert results['methods'] == ['independent', 'KD'] and results['seeds'] == [0, 1]
    assert set(results['runs']['KD']) == {'0', '1'} and not results['failed']
    assert results['tables']['student']['KD']['baseline'] == 'independent'
    kd_config = (out / 'configs' / 'KD.py').read_text()
    assert "type='KD'" in kd_config and str(out / 'independent' / 'seed0' / 'teacher.pth') \
        in kd_config
    assert (out / 'results.png').stat().st_size > 10_000
    assert (out / 'KD' / 'seed1' / 'compare.log').read_text().count('====') == 1

    # --report prints the saved comparison, the same table, training nothing
    assert main(['--report', str(out)]) == 0
    assert capsys.readouterr().out.strip() == table.strip()
    assert (out / 'results.txt').read_text().strip() == table.strip()

    # a run stopped after its first epoch (checkpoint-1 kept) resumes from there
    kd_dir, kd = _run_files(out, 'KD', 1)
    final = results['runs']['KD']['1']['student']
    for path in [kd_dir / 'student.pth', kd_dir / 'teacher.pth']:
        path.unlink(missing_ok=True)
    import shutil
    shutil.rmtree(kd_dir / 'checkpoint-2')
    records = json.loads((kd_dir / 'metrics.json').read_text())
    (kd_dir / 'metrics.json').write_text(json.dumps(records[:1]))
    (kd_dir / 'compare_run.json').write_text(json.dumps(dict(kd, state='started')))
    mtimes = {p: p.stat().st_mtime for p in out.glob('*/seed*/metrics.json') if
              p.parent != kd_dir}
    assert main(_compare_command(out, '--jobs', '2')[2:]) == 0
    printed = capsys.readouterr().out
    assert '3 finished before, 1 to resume, 0 to train' in printed
    assert 'KD seed 1: student top-1' in printed and '(resumed in' in printed
    assert 'resumed from' in (kd_dir / 'compare.log').read_text()
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    assert json.loads((out / 'results.json').read_text())['runs']['KD']['1']['student'] == final


def test_segmentation_comparison(tmp_path, monkeypatch):
    """One run (the offline teacher taken out of an mmengine checkpoint: the detection test)."""
    pytest.importorskip('mmseg')
    monkeypatch.chdir(tmp_path)  # the shapes set is written under the working directory
    lines = []
    results = compare(CONFIGS / 'segmentation' / 'shapes' / 'adm_online.py',
                      methods=['independent'], seeds=[0], out=tmp_path / 'cmp', sets=MM_SETS,
                      echo=lines.append)
    text = '\n'.join(lines)
    assert 'independent seed 0: student mIoU' in text
    assert 'student mIoU (%, higher is better' in text
    run = results['runs']['independent']['0']
    assert 0 <= run['student'] <= 100 and 0 <= run['teacher'] <= 100
    assert (tmp_path / 'data' / 'shapes_seg').is_dir()
    assert (tmp_path / 'cmp' / 'results.png').is_file()


def test_detection_comparison(tmp_path, monkeypatch):
    pytest.importorskip('mmdet')
    monkeypatch.chdir(tmp_path)
    lines = []
    results = compare(CONFIGS / 'detection' / 'shapes' / 'adm_online.py',
                      methods=['independent', 'FitNet'], seeds=[0], out=tmp_path / 'cmp',
                      sets=MM_SETS, echo=lines.append)
    text = '\n'.join(lines)
    assert 'FitNet seed 0: student bbox mAP' in text
    assert 'student bbox mAP (x 100, higher is better' in text
    # the offline run's frozen teacher is independent's, taken out of its checkpoint
    assert (tmp_path / 'cmp' / 'teachers' / 'independent_seed0.pth').is_file()
    assert results['runs']['FitNet']['0']['teacher'] == pytest.approx(
        results['runs']['independent']['0']['teacher'])
    derived = (tmp_path / 'cmp' / 'configs' / 'FitNet.py').read_text()
    assert "type='distill.TeacherMetric'" in derived and 'teacher_ckpt=' in derived
    assert (tmp_path / 'cmp' / 'results.png').is_file()


def test_diffusion_comparison(tmp_path, monkeypatch):
    pytest.importorskip('diffusers')
    monkeypatch.chdir(tmp_path)
    lines = []
    results = compare(CONFIGS / 'diffusion' / 'adm_shapes_tiny.py', methods=['independent',
                                                                              'KD'],
                      seeds=[0], out=tmp_path / 'cmp', sets=DIFFUSION_SETS, echo=lines.append)
    text = '\n'.join(lines)
    assert 'student denoising MSE (held-out mean, lower is better' in text
    assert results['runs']['KD']['0']['teacher'] == pytest.approx(
        results['runs']['independent']['0']['teacher'])
    log = (tmp_path / 'cmp' / 'KD' / 'seed0' / 'compare.log').read_text()
    assert '--teacher_model_name_or_path ' + str(tmp_path / 'cmp' / 'independent' / 'seed0'
                                                 / 'teacher') in log


def test_a_failing_run_is_reported_and_the_others_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CompareError, match=r'2 run\(s\) failed: DML seed 0'):
        compare(DEMO, methods=['DML'], seeds=[0, 1], out=tmp_path / 'cmp', jobs=1,
                sets=CLS_SETS + ['DML:distiller.loss_weights.nope=1.0'])
    printed = capsys.readouterr().out
    assert 'DML seed 0 FAILED (exit 2)' in printed and 'nope' in printed
    assert 'DML seed 1: not run (an earlier DML run failed)' in printed
    assert 'failed: DML seed 0' in (tmp_path / 'cmp' / 'results.txt').read_text()


def test_a_variant_of_a_method_is_planned_with_its_own_change(tmp_path):
    from distill.compare import Comparison
    sets = CLS_SETS + ['ADM co0.5:distiller.loss_weights.co=0.5']
    comparison = Comparison(DEMO, methods=['independent', 'ADM', 'ADM co0.5=ADM'], seeds=[0, 1],
                            out=tmp_path, sets=sets, echo=lambda line: None)
    runs = comparison.plan()
    assert comparison.results['baselines'] == {'independent': None, 'ADM': 'independent',
                                               'ADM co0.5': 'ADM'}
    variant_run = next(r for r in runs if r.method == 'ADM co0.5')
    adm_run = next(r for r in runs if r.method == 'ADM')
    assert variant_run.cfg.distiller.loss_weights.co == 0.5
    assert adm_run.cfg.distiller.loss_weights.co == 0.1
    assert variant_run.work_dir == tmp_path / 'ADM_co0.5' / 'seed0'
    assert variant_run.fingerprint != adm_run.fingerprint
    with pytest.raises(UnknownMethod, match='the name of a method of the table'):
        Comparison(DEMO, methods=['KD=ADM'], seeds=[0], out=tmp_path)


@pytest.mark.parametrize('config, framework', [
    ('classification/demo.py', 'classification'),
    ('classification/sokd/shapes_demo.py', 'classification'),  # networks in SoKD's base
    ('segmentation/shapes/adm_offline.py', 'segmentation'),
    ('detection/shapes/adm_online.py', 'detection'),
    ('diffusion/adm_shapes_tiny.py', 'diffusion')])
def test_the_framework_is_recognised_from_the_config(config, framework):
    from mmengine.config import Config

    from distill.compare.frameworks import detect
    cfg = Config.fromfile(str(CONFIGS / config), import_custom_modules=False)
    assert detect(cfg).name == framework
