"""Faults on the mmengine Runner (segmentation, detection): a fresh run does not touch an
earlier run's work dir, a checkpoint is only written from finite weights, unknown model keys and
truncated COCO files are named before the Runner is built."""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mm_helpers import REPO, run_script

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

SEG = str(REPO / 'configs/segmentation/shapes/adm_online.py')
DET = str(REPO / 'configs/detection/shapes/adm_online.py')


@pytest.fixture(autouse=True)
def keep_environment(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it when absent


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def earlier_run(work: Path) -> dict:
    (work / '20260101_000000' / 'vis_data').mkdir(parents=True)
    (work / '20260101_000000' / '20260101_000000.log').write_text('earlier log\n')
    (work / 'adm_online.py').write_text('# the earlier run\n')
    torch.save({'state_dict': {}}, work / 'iter_4.pth')
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    (work / 'notes.txt').write_text('mine\n')
    return snapshot(work)


def test_fresh_run_refuses_an_earlier_work_dir_and_overwrite_deletes_only_its_files(tmp_path):
    from distill.config_checks import ConfigError
    from distill.engines.mmengine.launch import parse_args, train
    from distill.engines.mmengine.work_dir import check_fresh_work_dir
    work = tmp_path / 'work'
    before = earlier_run(work)
    with pytest.raises(FileExistsError, match=r'already holds an earlier run \(adm_online\.py, '
                                              r'iter_4\.pth, last_checkpoint\).*--overwrite'):
        train('t', [SEG, '--work-dir', str(work)])
    assert snapshot(work) == before
    # --overwrite deletes only once every check has passed: a typo leaves the earlier run as is
    with pytest.raises(ConfigError, match='model.distiller.loss_weight; did you mean '
                                          'model.distiller.loss_weights'):
        train('t', [SEG, '--work-dir', str(work), '--overwrite', '--cfg-options',
                    'model.distiller.loss_weight=1'])
    assert snapshot(work) == before
    with pytest.raises(SystemExit):
        parse_args('t', [SEG, '--resume', '--overwrite'])
    check_fresh_work_dir(work, overwrite=True, config_name=SEG)
    assert sorted(p.name for p in work.iterdir()) == ['notes.txt']
    check_fresh_work_dir(work)  # log folders or other files alone are no earlier run


def test_overwrite_keeps_the_users_files_and_lists_what_it_deletes(tmp_path, caplog):
    from distill.engines.mmengine.work_dir import check_fresh_work_dir
    work = tmp_path / 'work'
    earlier_run(work)
    dump = '# the config an earlier run dumped\n'
    (work / '20260101_000000' / 'vis_data' / 'config.py').write_text(dump)
    (work / 'other_config.py').write_text(dump)  # an earlier run of another config
    torch.save({}, work / 'best_mIoU_iter_4.pth')
    (work / 'iter_4.pth.sha256').write_text('0' * 64 + '  iter_4.pth\n')
    mine = {'plot_results.py': '# mine\n', 'my_best_model.pth': 'weights',
            'best_model.pth': 'weights', 'my_best_model.pth.sha256': 'digest'}
    for name, text in mine.items():
        (work / name).write_text(text)
    with pytest.raises(FileExistsError):
        check_fresh_work_dir(work, config_name=SEG)
    with caplog.at_level('WARNING'):
        check_fresh_work_dir(work, overwrite=True, config_name=SEG)
    assert sorted(p.name for p in work.iterdir()) == sorted([*mine, 'notes.txt'])
    for name in ('adm_online.py', 'other_config.py', 'iter_4.pth', 'iter_4.pth.sha256',
                 'best_mIoU_iter_4.pth', 'last_checkpoint', '20260101_000000/'):
        assert name in caplog.text
    (work / 'plot_results.py').write_text('# mine\n')
    check_fresh_work_dir(work, config_name=SEG)  # the user's files alone: no earlier run
    # a run that failed before its first checkpoint left its config dump and logs: the fixed
    # rerun is not refused
    (work / 'adm_online.py').write_text(dump)
    (work / '20260102_000000').mkdir()
    check_fresh_work_dir(work, config_name=SEG)


def test_unknown_model_keys_are_named_with_the_closest(tmp_path):
    from distill.config_checks import ConfigError
    from distill.engines.mmengine.launch import check_model_keys, load_config, parse_args
    for option, message in [
            ('model.teacher_ckp=x', 'model.teacher_ckp; did you mean model.teacher_ckpt'),
            ('model.adapter.ignore_indx=3', 'did you mean model.adapter.ignore_index'),
            ('model.distiller.tauu=1', 'did you mean model.distiller.tau')]:
        cfg = load_config(parse_args('t', [SEG, '--work-dir', str(tmp_path / 'w'),
                                           '--cfg-options', option]))
        with pytest.raises(ConfigError, match=message):
            check_model_keys(cfg)
    assert not (tmp_path / 'w').exists()


def test_truncated_coco_json_names_the_file_and_key_before_the_runner(tmp_path):
    from distill.data.coco_layout import write_shapes_coco
    from distill.engines.mmengine.launch import train
    root = write_shapes_coco(tmp_path / 'shapes_coco', num_train=2, num_val=2, image_size=32)
    train_json = Path(root) / 'annotations' / 'instances_train.json'
    train_json.write_text(train_json.read_text()[:50])
    work = tmp_path / 'work'
    with pytest.raises(ValueError, match=r"train_dataloader\.dataset\.ann_file: .*"
                                         r"instances_train\.json is not valid JSON"):
        train('t', [DET, '--work-dir', str(work), '--cfg-options', f'prepare_data.root={root}',
                    f'train_dataloader.dataset.data_root={root}/',
                    f'val_dataloader.dataset.data_root={root}/',
                    f'test_dataloader.dataset.data_root={root}/'])
    assert not work.exists()  # nothing was written


# ------------------------------------------------------------------ non-finite weights
def fake_runner(model, iteration, optimizer=None):
    wrapper = SimpleNamespace(optimizer=optimizer) if optimizer is not None else None
    return SimpleNamespace(model=model, iter=iteration, optim_wrapper=wrapper)


def test_finite_state_hook_names_the_tensor_and_the_iteration():
    from distill.engines.core.guards import NonFiniteLossError
    from distill.engines.mmengine.hooks import FiniteStateHook
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 1, 3, 3)).sum().backward()
    optimizer.step()
    hook = FiniteStateHook()
    hook.after_train_iter(fake_runner(model, 4), 4, outputs=dict(loss=torch.tensor(1.0)))
    hook.before_save_checkpoint(fake_runner(model, 4, optimizer), dict(meta=dict(iter=5)))
    model[1].running_var[1] = float('inf')
    with pytest.raises(NonFiniteLossError, match=r'^1\.running_var became non-finite after the '
                                                 r'optimiser step at step 5; the loss terms of '
                                                 r'that step, largest first: loss=1'):
        hook.after_train_iter(fake_runner(model, 4), 4, outputs=dict(loss=torch.tensor(1.0)))
    model[1].running_var[1] = 1.0
    optimizer.state[model[0].weight]['momentum_buffer'][0] = float('nan')
    with pytest.raises(NonFiniteLossError, match=r'optimizer state momentum_buffer of 0\.weight '
                                                 r'became non-finite \(found before writing its '
                                                 r'checkpoint\) at step 5'):
        hook.before_save_checkpoint(fake_runner(model, 4, optimizer), dict(meta=dict(iter=5)))


BREAK_AT_ITER_4 = """
import sys
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
import distill.engines.mmengine.launch as launch

@HOOKS.register_module()
class BreakBuffer(Hook):  # a step that leaves inf in a BatchNorm buffer, the loss still finite
    priority = 'HIGH'
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == 4:
            runner.model.distiller.student.backbone.stem[1].running_var.fill_(float('inf'))

load = launch.load_config
def load_config(args):
    cfg = load(args)
    cfg.custom_hooks = [dict(type='BreakBuffer')] + list(cfg.custom_hooks)
    return cfg
launch.load_config = load_config
launch.train('t', sys.argv[1:])
"""


def test_runner_writes_no_checkpoint_from_non_finite_weights(tmp_path):
    from distill.engines.mmengine import allow_mmengine_checkpoint_globals
    root = tmp_path / 'shapes_seg'
    from distill.data.mmseg_layout import write_shapes_mmseg
    write_shapes_mmseg(root, num_train=4, num_val=2, image_size=32)
    work = tmp_path / 'work'
    out = run_script('-c', BREAK_AT_ITER_4, SEG, '--work-dir', str(work), '--cfg-options',
                     'train_cfg.max_iters=4', 'train_cfg.val_interval=100',
                     'default_hooks.checkpoint.interval=2', f'prepare_data.root={root}',
                     f'train_dataloader.dataset.data_root={root}',
                     f'val_dataloader.dataset.data_root={root}',
                     f'test_dataloader.dataset.data_root={root}', expect_fail=True)
    assert ('distiller.student.backbone.stem.1.running_var became non-finite after the '
            'optimiser step at step 4') in out
    assert (work / 'iter_2.pth').is_file() and not (work / 'iter_4.pth').exists()
    assert Path((work / 'last_checkpoint').read_text().strip()).name == 'iter_2.pth'
    allow_mmengine_checkpoint_globals()
    state = torch.load(work / 'iter_2.pth', weights_only=True)['state_dict']
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_cfg_options_take_lists_of_dicts_and_name_the_key_of_an_unreadable_value(capsys):
    """mmengine's DictAction recursed until RecursionError on ``taps=[dict(...)]``."""
    from distill.engines.mmengine.launch import check_model_keys, load_config, parse_args
    args = parse_args('t', [SEG, '--cfg-options', "model.distiller.taps=[dict(student="
                            "'backbone.layer3', teacher='backbone.layer3')]", 'a.b=[1,(2,3)]',
                            'c=x'])
    assert args.cfg_options == {'model.distiller.taps': [dict(student='backbone.layer3',
                                                              teacher='backbone.layer3')],
                                'a.b': [1, (2, 3)], 'c': 'x'}  # DictAction's forms unchanged
    check_model_keys(load_config(parse_args('t', [SEG, '--cfg-options', "model.distiller.taps="
                                                  "[dict(student='backbone.layer3',"
                                                  "teacher='backbone.layer3')]"])))
    for bad in ("model.distiller.taps=[dict(student=open('x'))]",
                "model.distiller.taps=[dict(student='a'"):
        with pytest.raises(SystemExit):
            parse_args('t', [SEG, '--cfg-options', bad])
        assert ('--cfg-options model.distiller.taps: cannot read the value'
                in capsys.readouterr().err)


def test_test_py_refuses_a_checkpoint_without_the_distillers_weights(tmp_path, monkeypatch):
    # a plain mmseg model's iter_N.pth: mmengine would load it non-strictly and evaluate
    # randomly initialised networks, exiting 0
    from distill.engines.mmengine import evaluate
    from distill.engines.mmengine.evaluate import check_distillation_weights, test
    logged = []
    monkeypatch.setattr(evaluate, 'print_log', lambda message, **kw: logged.append(message))
    plain = tmp_path / 'iter_4.pth'
    torch.save({'state_dict': {'backbone.stem.0.weight': torch.zeros(1)}, 'meta': {}}, plain)
    with pytest.raises(ValueError, match=r'iter_4\.pth holds no student and no teacher weights '
                                         r'.*not a checkpoint of this distillation config'):
        test('t', [SEG, str(plain), '--work-dir', str(tmp_path / 'w')])
    assert any('has no .sha256 beside it: its integrity is unverified' in m for m in logged)
    student_only = tmp_path / 'student_only.pth'
    torch.save({'state_dict': {'distiller.student.w': torch.zeros(1)}}, student_only)
    with pytest.raises(ValueError, match='holds no teacher weights'):
        check_distillation_weights(student_only)
    both = tmp_path / 'both.pth'
    torch.save({'state_dict': {'distiller.base.student.w': torch.zeros(1),
                               'distiller.base.teacher.w': torch.zeros(1)}}, both)
    check_distillation_weights(both)  # SoKD's layout


def test_hook_argument_and_top_level_typos_are_named_before_the_runner(tmp_path):
    # a CheckpointHook typo surfaced only when the hook first fired (200 iterations in, nothing
    # saved); an unknown top-level --cfg-options key was silently ignored
    from distill.config_checks import ConfigError
    from distill.engines.mmengine.launch import train
    work = tmp_path / 'work'
    for option, message in [
            ('default_hooks.checkpoint.intervall=2',
             'default_hooks.checkpoint.intervall; did you mean default_hooks.checkpoint.interval'),
            ('default_hooks.logger.intervall=2',
             'default_hooks.logger.intervall; did you mean default_hooks.logger.interval'),
            ('max_iterz=3', r"'max_iterz' is not a key of the config; did you mean max_iters")]:
        with pytest.raises(ConfigError, match=message):
            train('t', [SEG, '--work-dir', str(work), '--cfg-options', option])
        assert not work.exists()  # refused before anything was written


# ------------------------------------------------------------------ outputs and inputs
@pytest.fixture(scope='module')
def seg_checkpoint(tmp_path_factory):
    """A DistillationModel checkpoint of the segmentation config (built, not trained)."""
    from mm_helpers import build_from_config, save_model_checkpoint
    folder = tmp_path_factory.mktemp('seg_run')
    return Path(save_model_checkpoint(build_from_config(SEG), folder / 'iter_4.pth'))


def test_export_never_writes_over_its_inputs_nor_a_foreign_file(seg_checkpoint, tmp_path):
    """export.py CFG iter_4.pth iter_4.pth replaced the 15 MB training checkpoint with the
    student; export.py cfgs/adm_online.py CKPT cfgs/adm_online.pth wrote the student config
    over the config being run."""
    from distill.engines.mmengine.export import export_main
    work = tmp_path / 'work'
    work.mkdir()
    checkpoint = work / 'iter_4.pth'
    checkpoint.write_bytes(seg_checkpoint.read_bytes())
    with pytest.raises(FileExistsError, match=rf'^the student checkpoint {checkpoint} is the '
                                              rf'checkpoint, an input of this command: nothing '
                                              rf'was written'):
        export_main('t', [SEG, str(checkpoint), str(checkpoint)])
    assert checkpoint.read_bytes() == seg_checkpoint.read_bytes()
    assert not (work / 'iter_4.py').exists() and not (work / 'iter_4.pth.sha256').exists()
    cfgs = tmp_path / 'cfgs'
    cfgs.mkdir()
    for name in ('adm_online.py', '_base_.py'):
        (cfgs / name).write_text((Path(SEG).parent / name).read_text())
    config_text = (cfgs / 'adm_online.py').read_text()
    with pytest.raises(FileExistsError, match=r'the student config .*cfgs/adm_online\.py is '
                                              r'the config being run'):
        export_main('t', [str(cfgs / 'adm_online.py'), str(checkpoint),
                          str(cfgs / 'adm_online.pth')])
    assert (cfgs / 'adm_online.py').read_text() == config_text
    assert not (cfgs / 'adm_online.pth').exists()
    # an existing file of another kind (another run's checkpoint) is not replaced either
    other = tmp_path / 'other.pth'
    other.write_bytes(seg_checkpoint.read_bytes())
    with pytest.raises(FileExistsError, match=r'other\.pth exists and is not a student '
                                              r'checkpoint export\.py wrote'):
        export_main('t', [SEG, str(checkpoint), str(other)])
    # its own earlier output is: a second export to the same path goes through
    for _ in range(2):
        export_main('t', [SEG, str(checkpoint), str(tmp_path / 'student.pth')])
    assert (tmp_path / 'student.py').is_file()


def test_a_checkpoint_of_another_task_is_refused_by_export_and_test(seg_checkpoint, tmp_path):
    """A segmentation checkpoint exported with a detection config gave "wrote the student
    (170 tensors)", which mmdet then loaded with size mismatches; test.py printed an mIoU of a
    partly random model with only mmengine's mid-log warning."""
    from mm_helpers import build_from_config, save_model_checkpoint
    from distill.engines.mmengine.evaluate import test
    from distill.engines.mmengine.export import export_main
    with pytest.raises(ValueError, match=r'iter_4\.pth does not match the student model of '
                                         r'.*detection.*: \d+ missing, \d+ unexpected, 1 of '
                                         r'another shape \(missing: backbone\.conv1\.weight'):
        export_main('t', [DET, str(seg_checkpoint), str(tmp_path / 'student.pth')])
    assert list(tmp_path.iterdir()) == []  # nothing written
    det_checkpoint = save_model_checkpoint(build_from_config(DET), tmp_path / 'det_iter_4.pth')
    with pytest.raises(ValueError, match=r'det_iter_4\.pth does not match the model of .*'
                                         r'segmentation.*: \d+ missing, \d+ unexpected, 2 of '
                                         r'another shape'):
        test('t', [SEG, det_checkpoint, '--work-dir', str(tmp_path / 'w')])


def test_test_out_never_replaces_an_input_nor_a_foreign_file(seg_checkpoint, tmp_path):
    from distill.engines.mmengine.evaluate import test
    with pytest.raises(FileExistsError, match=r'--out .*iter_4\.pth is the checkpoint'):
        test('t', [SEG, str(seg_checkpoint), '--out', str(seg_checkpoint)])
    notes = tmp_path / 'notes.pkl'
    notes.write_text('my notes\n')
    with pytest.raises(FileExistsError, match=r'notes\.pkl exists and is not a pickle of '
                                              r'predictions'):
        test('t', [DET, str(seg_checkpoint), '--out', str(notes)])
    assert notes.read_text() == 'my notes\n'


def tiny_seg_options(root) -> list:
    from distill.data.mmseg_layout import write_shapes_mmseg
    write_shapes_mmseg(root, num_train=4, num_val=2, image_size=32)
    return ['train_cfg.max_iters=2', 'train_cfg.val_interval=100', f'prepare_data.root={root}',
            f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}']


def test_overwrite_never_deletes_the_config_being_run_from_its_work_dir(tmp_path):
    """An edited adm_online.py inside its own work dir has the config dump's name: --overwrite
    deleted it and the Runner wrote its dump there."""
    from distill.engines.mmengine.launch import train
    work = tmp_path / 'work'
    earlier_run(work)
    for name in ('adm_online.py', '_base_.py'):
        (work / name).write_text((Path(SEG).parent / name).read_text() + '# edited\n')
    before = snapshot(work)
    for flag in ('--overwrite', '--resume'):
        with pytest.raises(FileExistsError, match=r"work dir's config dump, which .*adm_online"
                                                  r"\.py is the config being run.*a copy of "
                                                  r"the config kept outside the work dir"):
            train('t', [str(work / 'adm_online.py'), '--work-dir', str(work), flag,
                        '--cfg-options', *tiny_seg_options(tmp_path / 'data')])
        assert snapshot(work) == before


def test_a_second_run_into_a_held_work_dir_is_refused_naming_the_first(tmp_path):
    """Two detection runs started at once into one work dir both ran, their logs interleaved
    and one's checkpoints replaced the other's."""
    import os
    from distill.engines.core.work_dir_lock import LOCK_NAME, WorkDirLock, hold_work_dir
    work = tmp_path / 'work'
    lock = hold_work_dir(work)  # this process is the first run
    try:
        out = run_script('tasks/detection/train.py', DET, '--work-dir', str(work),
                         expect_fail=True)
    finally:
        lock.release()
    assert f'error: work dir {work} is in use by another run, pid {os.getpid()}' in out
    assert not work.exists()  # the lock was all there was; the refused run wrote nothing
    # a lock file its run left when killed holds no flock: stale, taken over
    work.mkdir()
    (work / LOCK_NAME).write_text('{"pid": 999999999, "host": "x"}')
    with WorkDirLock(work):
        assert f'"pid": {os.getpid()}' in (work / LOCK_NAME).read_text()
    assert not (work / LOCK_NAME).exists()


# ------------------------------------------------------------------ one error line
@pytest.mark.parametrize('task,broken', [('seg', 'img_dir/train/00001.png'),
                                         ('seg', 'ann_dir/train/00001.png'),
                                         ('det', 'images/train/00001.png')],
                         ids=['seg-image', 'seg-label-map', 'det-image'])
def test_a_corrupt_data_file_ends_with_one_line_naming_it(tmp_path, task, broken):
    """A training image (or label map) that is not an image: mmcv's decoder gives None and the
    run ended in a traceback through the data loader, an AssertionError or an AttributeError
    on None; now one error line naming the file."""
    from distill.data.coco_layout import write_shapes_coco
    from distill.data.mmseg_layout import write_shapes_mmseg
    root = tmp_path / 'data'
    if task == 'seg':
        write_shapes_mmseg(root, num_train=4, num_val=2, image_size=32)
    else:
        write_shapes_coco(root, num_train=2, num_val=2, image_size=32)
    assert (root / broken).is_file(), sorted(p.name for p in (root / broken).parent.iterdir())
    (root / broken).write_bytes(b'not an image')
    out = run_script(f"tasks/{dict(seg='segmentation', det='detection')[task]}/train.py",
                     SEG if task == 'seg' else DET, '--work-dir', str(tmp_path / 'work'),
                     '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                     'train_dataloader.batch_size=2', f'prepare_data.root={root}',
                     f'train_dataloader.dataset.data_root={root}/',
                     f'val_dataloader.dataset.data_root={root}/',
                     f'test_dataloader.dataset.data_root={root}/', expect_fail=True)
    errors = [line for line in out.splitlines() if line.startswith('error: ')]
    assert 'Traceback' not in out and len(errors) == 1, out[-3000:]
    assert errors[0].startswith(f'error: cannot decode the data file {root}/{broken} (Load'), \
        errors


def test_a_corrupt_data_file_in_a_loader_worker_is_named_from_its_text():
    """A worker's error reaches the main process as the text of its traceback (torch's
    'Caught X in DataLoader worker process 0'): the image is named from mmcv's last line (its
    source line, quoted above it, is not a path), a label map by what names it, nothing else
    at all; an error of no loading transform passes unchanged."""
    from distill.engines.mmengine.data_files import unreadable_data_file

    def worker_error(kind, last, where='mmcv/transforms/loading.py'):
        return kind(f'Caught {kind.__name__} in DataLoader worker process 0.\nOriginal '
                    f'Traceback (most recent call last):\n  File "/x/{where}", line 9, in '
                    f"transform\n    assert img is not None, f'failed to load image: "
                    f"{{filename}}'\n{last}\n")
    image = unreadable_data_file(worker_error(
        AssertionError, 'AssertionError: failed to load image: /d/img_dir/train/3.png'))
    assert image.startswith('cannot decode the data file /d/img_dir/train/3.png '
                            '(LoadImageFromFile of the data pipeline: AssertionError: '), image
    label_map = unreadable_data_file(worker_error(
        AttributeError, "AttributeError: 'NoneType' object has no attribute 'squeeze'",
        'mmseg/datasets/transforms/loading.py'))
    assert 'in a DataLoader worker' in label_map and 'num_workers=0' in label_map
    assert unreadable_data_file(worker_error(ValueError, 'ValueError: x', 'mine.py')) is None
    assert unreadable_data_file(FileNotFoundError('no such file: /d/x.png')) is None


def test_a_distillation_checkpoint_as_teacher_ckpt_gives_its_teacher(seg_checkpoint, tmp_path):
    """model.teacher_ckpt=iter_4.pth of an online run (student and teacher under distiller.*):
    mmengine's strict load failed with a traceback listing hundreds of keys; its teacher's
    weights are taken (they fit model.teacher exactly), saying so. A checkpoint that fits
    neither way is one line naming the file and the keys."""
    from mm_helpers import build_from_config
    from distill.checkpoint import load_checkpoint
    offline = str(REPO / 'configs/segmentation/shapes/adm_offline.py')
    model = build_from_config(offline, {'model.teacher_ckpt': str(seg_checkpoint)})
    model.load_teacher()
    saved = load_checkpoint(seg_checkpoint)['state_dict']
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, saved[f'distiller.teacher.{key}']), key
    student = tmp_path / 'student.pth'
    torch.save({'state_dict': {k[len('distiller.student.'):]: v for k, v in saved.items()
                               if k.startswith('distiller.student.')}}, student)
    model = build_from_config(offline, {'model.teacher_ckpt': str(student)})
    with pytest.raises(ValueError, match=rf'^model\.teacher_ckpt {student} does not match '
                                         rf'model\.teacher: \d+ missing, 0 unexpected, \d+ of '
                                         rf'another shape \(missing: backbone\.'):
        model.load_teacher()


def test_an_offline_model_without_teacher_ckpt_is_refused_at_build():
    """DistillationModel(teacher_ckpt=None) with an offline distiller distilled from a random
    frozen teacher, silently: the rule of every engine (config_checks), at model build;
    model.random_teacher=True when it is meant."""
    from mm_helpers import build_from_config
    from distill.config_checks import ConfigError
    offline = REPO / 'configs/segmentation/shapes/adm_offline.py'
    with pytest.raises(ConfigError, match=r'^model \(ADM\) is offline \(a frozen teacher\) and '
                                          r'has no teacher_ckpt: .*Give model\.teacher_ckpt=PATH'
                                          r'.*or set model\.random_teacher=True'):
        build_from_config(offline, {'model.teacher_ckpt': None})
    model = build_from_config(offline, {'model.teacher_ckpt': None, 'model.random_teacher': True})
    assert not model.distiller.online
    with pytest.raises(ValueError, match=r'give random_teacher to the DistillationModel'):
        build_from_config(offline, {'model.teacher_ckpt': None,
                                    'model.distiller.random_teacher': True})


def test_label_values_the_student_cannot_predict_name_the_label_map(tmp_path):
    """A segmentation label map with a value >= num_classes (not the ignore index 255) failed
    inside the loss with an index error naming no file (a device-side assert on a GPU): the
    first batches' maps are checked, one line naming the map and the values."""
    import numpy as np
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    from PIL import Image
    from mm_helpers import build_from_config
    from distill.data.mmseg_layout import write_shapes_mmseg
    from distill.engines.mmengine.launch import load_config, parse_args
    root = write_shapes_mmseg(tmp_path / 'data', num_train=2, num_val=1, image_size=32)
    label_map = root / 'ann_dir' / 'train' / '00001.png'
    values = np.array(Image.open(label_map))
    values[0, :3], values[1, :3] = 9, 255  # 9: no class of 7; 255: the ignore index
    Image.fromarray(values).save(label_map)
    cfg = load_config(parse_args('t', [SEG, '--cfg-options',
                                       f'train_dataloader.dataset.data_root={root}']))
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
    model = build_from_config(SEG).train()
    model.distiller.set_progress(0.5)  # as the Runner's iterations would
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    with pytest.raises(ValueError, match=rf'^the label map {label_map} has label values 9 '
                                         rf'outside 0\.\.6 \(ignore_index 255 aside\): the '
                                         rf'student predicts 7 classes; check its encoding'):
        model(**data, mode='loss')
    values[0, :3] = 0
    Image.fromarray(values).save(label_map)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    assert torch.isfinite(sum(model(**data, mode='loss').values()))


def test_a_data_root_option_moves_the_loaders_and_the_evaluators(tmp_path, monkeypatch):
    """--cfg-options data_root=OTHER was taken, and the loaders kept reading the old root (the
    variable was substituted when the file was read): every loader and evaluator that read the
    config's data_root now reads the new one, logged; an explicit loader key wins."""
    import distill.engines.mmengine.cfg_options as cfg_options
    from distill.engines.mmengine.launch import load_config, parse_args
    logged = []
    monkeypatch.setattr(cfg_options, 'print_log', lambda line, **kw: logged.append(line))
    new = str(tmp_path / 'mine')
    cfg = load_config(parse_args('t', [DET, '--cfg-options', f'data_root={new}',
                                       f'test_dataloader.dataset.data_root={tmp_path}/test/']))
    assert cfg.train_dataloader.dataset.data_root == cfg.val_dataloader.dataset.data_root == new
    assert cfg.test_dataloader.dataset.data_root == f'{tmp_path}/test/'  # given: kept
    files = {metric.metric.ann_file for metric in [*cfg.val_evaluator, *cfg.test_evaluator]}
    assert files == {f'{new}/annotations/instances_val.json'}
    assert cfg.prepare_data.root == 'data/shapes_coco/'  # written only where loaders read
    cfg = load_config(parse_args('t', [SEG]))
    moved = cfg_options.merge_cfg_options(cfg, {'data_root': new})
    assert moved == [f'{name}_dataloader.dataset.data_root' for name in ('train', 'val', 'test')]
    assert cfg.val_dataloader.dataset.data_root == new
    assert logged[-1] == (f"--cfg-options data_root={new}: what read the config's data_root "
                          f'data/shapes_seg now reads {new}: ' + ', '.join(moved))
