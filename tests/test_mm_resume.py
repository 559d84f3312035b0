"""Resume on the mmengine Runner (distill.ResumeHook, distill/engines/mmengine/resume.py and
checkpoint_files.py): checkpoints carry a SHA-256, --resume skips a damaged newest checkpoint
for the newest valid one, orphan temporaries go, and the config's lr / weight decay win over
the restored optimiser state."""
from __future__ import annotations

import glob
import io
import json
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mm_helpers import REPO, run_script

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

pytest.importorskip('mmseg')

SEG = 'configs/segmentation/shapes/adm_online.py'
TRAIN = 'tasks/segmentation/train.py'


def write_valid(path, value):
    import io
    from distill.engines.mmengine.checkpoint_files import write_checkpoint_bytes
    buffer = io.BytesIO()
    torch.save(dict(state_dict=dict(w=torch.full((64,), float(value))), meta=dict(iter=value)),
               buffer)
    write_checkpoint_bytes(buffer.getvalue(), path)


def flip_bytes(path, count=200):
    data = bytearray(Path(path).read_bytes())
    for i in range(count):
        data[(len(data) // 3 + i * 7) % len(data)] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def truncate(path):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])


def test_checksum_backend_writes_whole_files_with_a_sha256_and_removes_both(tmp_path):
    import hashlib
    from mmengine.fileio import get_file_backend
    from distill.engines.mmengine.checkpoint_files import BACKEND_NAME, verify_checkpoint
    backend = get_file_backend(str(tmp_path), backend_args=dict(backend=BACKEND_NAME))
    target = tmp_path / 'iter_2.pth'
    backend.put(b'checkpoint bytes', str(target))
    record = (tmp_path / 'iter_2.pth.sha256').read_text()
    assert record == f'{hashlib.sha256(b"checkpoint bytes").hexdigest()}  iter_2.pth\n'
    assert verify_checkpoint(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_2.pth', 'iter_2.pth.sha256']
    backend.remove(str(target))  # CheckpointHook's rotation
    assert list(tmp_path.iterdir()) == []


def test_newest_valid_checkpoint_skips_damaged_ones_naming_them(tmp_path):
    from distill.engines.core.checkpoints import remove_orphan_temporaries  # every engine's
    from distill.engines.mmengine.checkpoint_files import (CorruptCheckpointError,
                                                           newest_valid_checkpoint)
    from distill.engines.mmengine.resume import resume_checkpoint
    for step in (2, 4, 6, 8):
        write_valid(tmp_path / f'iter_{step}.pth', step)
    flip_bytes(tmp_path / 'iter_8.pth')  # flipped bytes: still a loadable zip, wrong weights
    truncate(tmp_path / 'iter_6.pth')
    (tmp_path / 'iter_4.pth.sha256').unlink()
    truncate(tmp_path / 'iter_4.pth')  # no checksum and does not load
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_8.pth'))
    (tmp_path / '.iter_10.pth.x1y2.tmp').write_bytes(b'half')
    warnings = []
    assert newest_valid_checkpoint(tmp_path, warn=warnings.append) == tmp_path / 'iter_2.pth'
    assert [w.split(' ')[1] for w in warnings] == [str(tmp_path / f'iter_{s}.pth')
                                                   for s in (8, 6, 4)]
    assert 'does not match its SHA-256' in warnings[0] and 'does not load' in warnings[2]
    assert not any('weights_only' in w or 'allow_pickle' in w for w in warnings)
    # an explicit --resume FILE that does not match is refused, not replaced
    with pytest.raises(CorruptCheckpointError, match=r'iter_8\.pth does not match'):
        resume_checkpoint(tmp_path, str(tmp_path / 'iter_8.pth'))
    assert resume_checkpoint(tmp_path, str(tmp_path / 'iter_2.pth')) == str(tmp_path /
                                                                            'iter_2.pth')
    flip_bytes(tmp_path / 'iter_2.pth')
    with pytest.raises(CorruptCheckpointError, match=r'no usable checkpoint.*iter_8\.pth.*'
                                                     r'iter_2\.pth'):
        newest_valid_checkpoint(tmp_path, warn=lambda message: None)
    assert [p.name for p in remove_orphan_temporaries(tmp_path)] == ['.iter_10.pth.x1y2.tmp']
    assert newest_valid_checkpoint(tmp_path / 'empty', warn=warnings.append) is None


def poly_run(lr, steps, state=None, weight_decay=5e-4):
    """SGD + mmengine's PolyLR (eta_min 0), ``steps`` scheduler steps after loading ``state``
    (the optimiser's and scheduler's state dicts, adjusted by apply_config_over_saved)."""
    from mmengine.optim.scheduler import PolyLR
    from distill.engines.mmengine.resume import apply_config_over_saved
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=lr, momentum=0.9, weight_decay=weight_decay)
    scheduler = PolyLR(optimizer, eta_min=0.0, power=0.9, end=20, by_epoch=False)
    changes = []
    if state is not None:
        saved_optimizer, saved_scheduler = state
        changes = apply_config_over_saved(optimizer, saved_optimizer['param_groups'],
                                          [saved_scheduler], 'optim_wrapper.optimizer')
        optimizer.load_state_dict(saved_optimizer)
        scheduler.load_state_dict(saved_scheduler)
    for _ in range(steps):
        weight.grad = torch.ones(3)
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler, changes


def test_config_lr_and_weight_decay_win_over_the_restored_state():
    import copy
    interrupted, scheduler, _ = poly_run(0.1, 5)
    state = copy.deepcopy((interrupted.state_dict(), scheduler.state_dict()))
    resumed, _, changes = poly_run(0.02, 4, state=state, weight_decay=1e-3)
    assert [c.split(' ')[1] for c in changes] == ['optim_wrapper.optimizer.lr',
                                                  'optim_wrapper.optimizer.weight_decay']
    assert '0.1 -> 0.02' in changes[0] and '0.0005 -> 0.001' in changes[1]
    # the schedule continues as if lr had been 0.02 from the start (PolyLR is proportional)
    reference, _, _ = poly_run(0.02, 9)
    assert resumed.param_groups[0]['lr'] == pytest.approx(reference.param_groups[0]['lr'],
                                                          rel=1e-12)
    assert resumed.param_groups[0]['weight_decay'] == 1e-3
    # the momentum buffer is the restored one, not a fresh start: 9 steps of momentum 0.9
    # (about 6.1 gradients) against a fresh run's 4 (about 3.4)
    fresh, _, _ = poly_run(0.02, 4, weight_decay=1e-3)
    restored = resumed.state_dict()['state'][0]['momentum_buffer']
    assert bool((restored > fresh.state_dict()['state'][0]['momentum_buffer'] + 2).all())
    # unchanged settings: nothing to say, nothing changed
    state = copy.deepcopy((interrupted.state_dict(), scheduler.state_dict()))
    same, _, changes = poly_run(0.1, 0, state=state)
    assert changes == [] and same.param_groups[0]['lr'] == interrupted.param_groups[0]['lr']


def test_a_scheduled_lr_from_zero_is_refused_naming_the_key():
    from distill.engines.mmengine.resume import apply_config_over_saved
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    saved = [dict(lr=0.0, initial_lr=0.0, weight_decay=0)]
    optimizer.param_groups[0]['initial_lr'] = 0.1
    with pytest.raises(ValueError, match=r'optim_wrapper\.optimizer\.lr=0\.1 cannot be applied'):
        apply_config_over_saved(optimizer, saved, [dict(param_name='lr', base_values=[0.0])],
                                'optim_wrapper.optimizer')


def lr_by_iter(run_folder) -> dict:
    files = glob.glob(str(Path(run_folder) / 'vis_data' / 'scalars.json'))
    assert files, run_folder
    with open(files[0]) as f:
        return {r['iter']: r['lr'] for r in map(json.loads, f) if 'lr' in r}


def test_resume_after_a_corrupted_newest_checkpoint_with_a_new_lr(tmp_path):
    """Fault injection on a real run: 4 iterations (iter_2.pth, iter_4.pth), 200 flipped bytes
    in iter_4.pth and a killed write's temporary; --resume warns naming iter_4.pth, continues
    from iter_2.pth with the lr given on the command line, and finishes."""
    from distill.data.mmseg_layout import write_shapes_mmseg
    from distill.engines.mmengine.checkpoint_files import verify_checkpoint
    from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
    root = tmp_path / 'shapes_seg'
    write_shapes_mmseg(root, num_train=8, num_val=2, image_size=32)
    work = tmp_path / 'work'

    def options(iters, *extra):
        return ['--work-dir', str(work), '--cfg-options', f'train_cfg.max_iters={iters}',
                'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2',
                'default_hooks.logger.interval=1', f'prepare_data.root={root}',
                f'train_dataloader.dataset.data_root={root}',
                f'val_dataloader.dataset.data_root={root}',
                f'test_dataloader.dataset.data_root={root}', *extra]
    run_script(TRAIN, SEG, *options(4))
    assert all(verify_checkpoint(work / f'iter_{s}.pth') for s in (2, 4))
    first_run = next(p for p in work.iterdir() if p.is_dir())
    flip_bytes(work / 'iter_4.pth')
    (work / '.iter_6.pth.k1ll3d.tmp').write_bytes(b'half a checkpoint')
    out = run_script(TRAIN, SEG, '--resume', *options(
        6, 'optim_wrapper.optimizer.lr=0.01', 'optim_wrapper.optimizer.weight_decay=0.001'))
    assert f'checkpoint {work}/iter_4.pth does not match its SHA-256' in out
    assert f'resuming from {work}/iter_2.pth' in out and 'resumed epoch: 0, iter: 2' in out
    assert 'removed 1 half-written temporary file(s) of an interrupted run: .iter_6.pth.' in out
    assert 'weights_only' not in out and 'allow_pickle' not in out
    assert '--resume: optim_wrapper.optimizer.lr from the config' in out
    assert not list(work.glob('.*.tmp'))
    assert verify_checkpoint(work / 'iter_6.pth') and verify_checkpoint(work / 'iter_4.pth')
    # the same schedule (PolyLR over 400 iterations) at a fifth of the base lr
    second_run = next(p for p in work.iterdir() if p.is_dir() and p != first_run)
    before, after = lr_by_iter(first_run), lr_by_iter(second_run)
    assert after[3] == pytest.approx(before[3] * 0.2, rel=1e-4)
    allow_mmengine_checkpoint_globals()
    groups = torch.load(work / 'iter_6.pth', weights_only=True)['optimizer']['param_groups']
    assert [(g['initial_lr'], g['weight_decay']) for g in groups] == [(0.01, 0.001)] * len(groups)


def test_plain_runner_config_gets_the_hooks_by_name():
    """``custom_hooks=[dict(type='distill.ResumeHook')]`` (and the other distill hooks and
    metrics) resolve from mmengine's root registries in a fresh process that imported only
    ``distill.registry``: the registries' locations import the modules, in any order."""
    import subprocess
    import sys
    code = ("import distill.registry\n"
            "from mmengine.registry import HOOKS, METRICS\n"
            "for name in ('ResumeHook', 'ArchBatchesHook', 'FiniteStateHook'):\n"
            "    print(type(HOOKS.build(dict(type='distill.' + name))).__name__)\n"
            "print(METRICS.get('distill.TeacherMetric').__name__)\n")
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ['ResumeHook', 'ArchBatchesHook', 'FiniteStateHook', 'TeacherMetric']


def test_export_and_test_refuse_a_checkpoint_that_does_not_match_its_checksum(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it when absent
    from distill.engines.mmengine.checkpoint_files import CorruptCheckpointError
    from distill.engines.mmengine.evaluate import test
    from distill.engines.mmengine.export import export_student
    path = tmp_path / 'iter_2.pth'
    write_valid(path, 2)
    flip_bytes(path)
    with pytest.raises(CorruptCheckpointError, match=r'iter_2\.pth does not match'):
        export_student(str(path), str(tmp_path / 'student.pth'))
    with pytest.raises(CorruptCheckpointError, match=r'iter_2\.pth does not match'):
        test('t', [str(REPO / SEG), str(path), '--work-dir', str(tmp_path / 'w')])
    assert not (tmp_path / 'student.pth').exists() and not (tmp_path / 'w').exists()


def test_an_exported_student_gets_a_matching_sha256(tmp_path):
    from distill.engines.mmengine.checkpoint_files import (CorruptCheckpointError,
                                                           verify_checkpoint,
                                                           write_checkpoint_bytes)
    from distill.engines.mmengine.export import export_student
    path, out = tmp_path / 'iter_2.pth', tmp_path / 'student.pth'
    buffer = io.BytesIO()
    torch.save(dict(state_dict={'distiller.student.w': torch.ones(3),
                                'distiller.teacher.w': torch.zeros(3)}), buffer)
    write_checkpoint_bytes(buffer.getvalue(), path)
    export_student(str(path), str(out))
    assert verify_checkpoint(out)  # False would mean: no .sha256 written
    assert list(torch.load(out, weights_only=True)['state_dict']) == ['w']
    flip_bytes(out)
    with pytest.raises(CorruptCheckpointError, match='student.pth does not match'):
        verify_checkpoint(out)


KILL_DURING_SAVE = """
import os, signal, sys
import distill.engines.mmengine.checkpoint_files as files
import distill.engines.mmengine.launch as launch

write = files.write_atomic
def write_atomic(data, path):  # the save of iter_4.pth dies half-way through the file
    if str(path).endswith('iter_4.pth'):
        tmp = os.path.join(os.path.dirname(path), '.iter_4.pth.killed.tmp')
        with open(tmp, 'wb') as f:
            f.write(data[:len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    write(data, path)
files.write_atomic = write_atomic
launch.train('t', sys.argv[1:])
"""


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_one_before(tmp_path):
    """SIGKILL in the middle of writing iter_4.pth: only a temporary is left (no truncated
    iter_4.pth, last_checkpoint still names iter_2.pth); --resume deletes the temporary,
    continues from iter_2.pth and finishes."""
    from distill.data.mmseg_layout import write_shapes_mmseg
    from distill.engines.mmengine.checkpoint_files import verify_checkpoint
    root = tmp_path / 'shapes_seg'
    write_shapes_mmseg(root, num_train=8, num_val=2, image_size=32)
    work = tmp_path / 'work'
    options = ['--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=6',
               'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2',
               f'prepare_data.root={root}', f'train_dataloader.dataset.data_root={root}',
               f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}']
    run_script('-c', KILL_DURING_SAVE, str(REPO / SEG), *options, expect_fail=True)
    assert sorted(p.name for p in work.glob('iter_*')) == ['iter_2.pth', 'iter_2.pth.sha256']
    assert (work / '.iter_4.pth.killed.tmp').is_file()
    assert Path((work / 'last_checkpoint').read_text().strip()).name == 'iter_2.pth'
    out = run_script(TRAIN, SEG, '--resume', *options)
    assert 'removed 1 half-written temporary file(s) of an interrupted run: ' \
           '.iter_4.pth.killed.tmp' in out and 'resumed epoch: 0, iter: 2' in out
    assert not list(work.glob('.*.tmp'))
    assert all(verify_checkpoint(work / f'iter_{s}.pth') for s in (4, 6))


@pytest.mark.parametrize('val_interval', [100, 2], ids=['no-val', 'val-at-checkpoint'])
def test_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(tmp_path, val_interval):
    """4 iterations uninterrupted vs. the same run resumed from its iter_2.pth: the iter_4.pth
    weights are equal (torch's RNG, for dropout, travels in the checkpoint; the Runner replays
    the augmentation of the iterations it skips), also when a validation runs at the
    checkpoint's iteration (validation leaves the random streams as it found them)."""
    import shutil
    from distill.data.mmseg_layout import write_shapes_mmseg
    from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
    root = tmp_path / 'shapes_seg'
    write_shapes_mmseg(root, num_train=8, num_val=2, image_size=32)

    def options(work):
        return ['--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=4',
                f'train_cfg.val_interval={val_interval}', 'default_hooks.checkpoint.interval=2',
                f'prepare_data.root={root}', f'train_dataloader.dataset.data_root={root}',
                f'val_dataloader.dataset.data_root={root}',
                f'test_dataloader.dataset.data_root={root}']
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    run_script(TRAIN, SEG, *options(whole))
    resumed.mkdir()
    for name in ('iter_2.pth', 'iter_2.pth.sha256'):
        shutil.copy(whole / name, resumed / name)
    (resumed / 'last_checkpoint').write_text(str(resumed / 'iter_2.pth'))
    out = run_script(TRAIN, SEG, '--resume', *options(resumed))
    assert 'resumed epoch: 0, iter: 2' in out
    allow_mmengine_checkpoint_globals()
    expected = torch.load(whole / 'iter_4.pth', weights_only=True)['state_dict']
    got = torch.load(resumed / 'iter_4.pth', weights_only=True)['state_dict']
    assert expected.keys() == got.keys()
    differ = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differ, differ[:5]


def test_resume_looks_only_inside_its_own_work_dir(tmp_path):
    """A work dir copied from another run resumed that run's checkpoint: last_checkpoint
    still named the other run's absolute path, which was followed before the copy's own files
    (whose iter_2.pth the rotation then pruned)."""
    import shutil
    from distill.engines.mmengine.checkpoint_files import newest_valid_checkpoint
    first, copy = tmp_path / 's1', tmp_path / 's2'
    first.mkdir()
    for step in (2, 4):
        write_valid(first / f'iter_{step}.pth', step)
    (first / 'last_checkpoint').write_text(str(first / 'iter_4.pth'))
    shutil.copytree(first, copy)
    for name in ('iter_4.pth', 'iter_4.pth.sha256'):
        (copy / name).unlink()
    warnings = []
    assert newest_valid_checkpoint(copy, warn=warnings.append) == copy / 'iter_2.pth'
    assert warnings == [f'{copy / "last_checkpoint"} names {first / "iter_4.pth"}, outside this '
                        f"run's work dir {copy} (a work dir copied from another run?): ignored; "
                        f"resuming from the work dir's own checkpoints"]
    assert newest_valid_checkpoint(first, warn=warnings.append) == first / 'iter_4.pth'
    # a CheckpointHook out_dir of the run's own is followed
    assert newest_valid_checkpoint(copy, warn=warnings.append, folders=[first]) == \
        first / 'iter_4.pth'


def test_a_resume_that_changes_the_config_says_so_and_records_each_stretch(tmp_path):
    """A resume with another loss weight and batch size went on without a word, and the
    Runner rewrote the work dir's adm_online.py with the new values. Each changed key is now a
    warning of the run's log (old -> new), a changed process count is named, adm_online.py
    keeps the first run's config and adm_online.resumed-at-2.py holds the resumed stretch's;
    an architecture change ends with one error line naming the key, before any weight is
    loaded, and records nothing."""
    from distill.data.mmseg_layout import write_shapes_mmseg
    from distill.engines.mmengine.checkpoint_files import write_checkpoint_bytes
    from distill.engines.mmengine.safe_load import allow_mmengine_checkpoint_globals
    root = tmp_path / 'shapes_seg'
    write_shapes_mmseg(root, num_train=8, num_val=2, image_size=32)
    work = tmp_path / 'work'

    def options(iters, *extra):
        return ['--work-dir', str(work), '--cfg-options', f'train_cfg.max_iters={iters}',
                'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2',
                f'prepare_data.root={root}', f'train_dataloader.dataset.data_root={root}',
                f'val_dataloader.dataset.data_root={root}',
                f'test_dataloader.dataset.data_root={root}', *extra]
    run_script(TRAIN, SEG, *options(2))
    first = (work / 'adm_online.py').read_bytes()
    # as a run of 2 processes would have written iter_2.pth (its checksum rewritten with it)
    allow_mmengine_checkpoint_globals()
    checkpoint = torch.load(work / 'iter_2.pth', weights_only=True)
    assert checkpoint['distill_world_size'] == 1
    buffer = io.BytesIO()
    torch.save(dict(checkpoint, distill_world_size=2), buffer)
    write_checkpoint_bytes(buffer.getvalue(), work / 'iter_2.pth')
    out = run_script(TRAIN, SEG, '--resume', *options(
        4, 'model.distiller.loss_weights.co=0.5', 'train_dataloader.batch_size=4'))
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'resume from iteration 2: the process count changed from 2 to 1' in out
    for line in ('model.distiller.loss_weights.co: (unset) -> 0.5', 'train_cfg.max_iters: 2 -> 4',
                 'train_dataloader.batch_size: 8 -> 4'):
        assert f'WARNING -   {line}' in out, line
    logs = sorted(work.glob('*/*.log'))
    assert 'train_dataloader.batch_size: 8 -> 4' in logs[-1].read_text()  # the run's log
    assert (work / 'adm_online.py').read_bytes() == first
    record = Config.fromfile(str(work / 'adm_online.resumed-at-2.py'))
    assert record.train_dataloader.batch_size == 4
    assert record.model.distiller.loss_weights.co == 0.5
    # the hook on iter_4.pth with a deeper student (what --resume with
    # model.student.backbone.depth=34 gives it): refused on every process, nothing recorded
    from types import SimpleNamespace
    from distill.config_checks import ConfigError
    from distill.engines.mmengine.resume import check_resume_config
    before = sorted(p.name for p in work.iterdir() if p.is_file())
    cfg = Config.fromfile(str(work / 'adm_online.resumed-at-2.py'))
    cfg.merge_from_dict({'model.student.backbone.depth': 34, 'train_cfg.max_iters': 6})
    runner = SimpleNamespace(cfg=cfg, work_dir=str(work), _train_loop=dict(cfg.train_cfg))
    with pytest.raises(ConfigError) as info:
        check_resume_config(runner, torch.load(work / 'iter_4.pth', weights_only=True))
    assert str(info.value).startswith(
        '--resume: model.student.backbone.depth changed (18 -> 34) from the config the '
        "checkpoint of iteration 4 was trained with (the one saved in the checkpoint): the "
        "networks' architecture cannot change under saved weights")
    assert sorted(p.name for p in work.iterdir() if p.is_file()) == before
