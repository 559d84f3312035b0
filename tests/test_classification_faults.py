"""Faults a user meets, and what the classification engine does about them: non-finite weights
never reach a checkpoint, typos in config keys are named, an earlier run is never touched by
a fresh one, damaged checkpoints are skipped on resume (fault injection: kill -9 during a
checkpoint write, flipped bytes), and config changes survive a resume."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from distill import DISTILLERS, build_distiller
from distill.checkpoint import CorruptCheckpointError, load_checkpoint
from distill.config_checks import ConfigError
from distill.distillers.logits import DML
from distill.engines import NonFiniteLossError
from distill.engines.classification.train import train_classification

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

sys.path.insert(0, str(Path(__file__).parent))
from test_classification_engine import (checkpoint_names, newest_checkpoint,  # noqa: E402
                                        read_checkpoint, tiny_cfg)

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


def assert_same_weights(expected: dict, got: dict):
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# ---------------------------------------------------------------------------- finite state
@DISTILLERS.register_module(force=True)
class InfBufferAtStepDML(DML):
    """DML whose student BatchNorm running_var becomes inf at the ``bad_step``-th forward,
    while every loss term stays finite (what lr=1e6 did to the demo)."""

    def __init__(self, *args, bad_step=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.bad_step, self.calls = bad_step, 0

    def forward(self, batch):
        terms = super().forward(batch)
        self.calls += 1
        if self.calls == self.bad_step:
            self.student.stage2[1].running_var.data[0] = float('inf')  # no autograd trace
        return terms


def test_inf_buffer_stops_the_run_at_its_step_and_no_checkpoint_holds_it(tmp_path):
    cfg = tiny_cfg(epochs=3, distiller_type='InfBufferAtStepDML', bad_step=9)  # epoch 2
    with pytest.raises(NonFiniteLossError,
                       match=r'student\.stage2\.1\.running_var became non-finite after the '
                             r'optimiser step at step 9 \(epoch 2\).*largest first: .*intact'):
        train_classification(cfg, work_dir=tmp_path)
    assert checkpoint_names(tmp_path) == ['checkpoint-6']  # epoch 1's
    state = read_checkpoint(tmp_path / 'checkpoint-6')
    assert state['epoch'] == 1
    assert all(torch.isfinite(v).all() for v in state['model'].values()
               if v.is_floating_point())


def test_huge_loss_weight_names_the_term_that_blew_up(tmp_path):
    cfg = tiny_cfg(epochs=1, loss_weights=dict(co=1e30))
    with pytest.raises(NonFiniteLossError) as info:
        train_classification(cfg, work_dir=tmp_path)
    message = str(info.value)
    # the weights were thrown far by one step of a 1e30 term; the next forward is all NaN
    assert 'step 2 (epoch 1)' in message
    assert 'The step before, largest first: student.co=' in message
    assert not checkpoint_names(tmp_path)


def test_epoch_mode_checks_state_before_the_checkpoint(tmp_path):
    cfg = tiny_cfg(epochs=2, distiller_type='InfBufferAtStepDML', bad_step=3)
    cfg.train.check_finite = 'epoch'
    with pytest.raises(NonFiniteLossError, match=r'before writing the checkpoint of epoch 1'):
        train_classification(cfg, work_dir=tmp_path)
    assert not checkpoint_names(tmp_path)


# ---------------------------------------------------------------------------- strict configs
@pytest.mark.parametrize('section, key, value, named', [
    ('schedule', 'epoch', 2, r'schedule\.epoch; did you mean schedule\.epochs\?'),
    ('train', 'seeed', 3, r'train\.seeed; did you mean train\.seed\?'),
    ('data', 'batchsize', 8, r'data\.batchsize; did you mean data\.batch_size'),
    ('optimizer', 'weight_decy', 0.0, r'optimizer\.weight_decy; did you mean '
                                      r'optimizer\.weight_decay\?'),
])
def test_unknown_keys_are_named_with_the_closest(tmp_path, section, key, value, named):
    cfg = tiny_cfg(epochs=1)
    cfg[section][key] = value
    with pytest.raises(ConfigError, match=named):
        train_classification(cfg, work_dir=tmp_path / 'run')
    assert not (tmp_path / 'run').exists()  # nothing built, nothing written


def test_bad_sections_types_and_distillers_are_named(tmp_path):
    def fails(cfg, pattern, exc=ConfigError):
        with pytest.raises(exc, match=pattern):
            train_classification(cfg, work_dir=tmp_path / 'run')

    cfg = tiny_cfg(epochs=1)
    cfg.schedul = dict(epochs=2)
    fails(cfg, r"section key 'schedul'; did you mean 'schedule'")
    fails(tiny_cfg(loss_weights=dict(co='0.1')),
          r"distiller\.loss_weights\.co must be a number, got '0\.1' \(str\)")
    fails(tiny_cfg(tau_schedule=dict(start=0.0, end=1.0)), r'tau_schedule\.start must be a '
          r'number > 0', ValueError)
    fails(tiny_cfg(distiller_type='ADN'), r"distiller\.type='ADN' is not a registered "
          r'distiller; did you mean ADM\?.*DML')
    fails(tiny_cfg(adapter=dict(type='ClassifierAdapter', probe_inputsize=16)),
          r'distiller\.adapter\.probe_inputsize; did you mean '
          r'distiller\.adapter\.probe_input_size')
    fails(tiny_cfg(temprature=2.0), r'distiller\.temprature; did you mean '
          r'distiller\.temperature\?')
    fails(tiny_cfg(taps=[dict(student='stage3', teachr='stage3')]),
          r'distiller\.taps\[0\]\.teachr; did you mean distiller\.taps\[0\]\.teacher')
    cfg = tiny_cfg(epochs=1, distiller_type='DML')
    cfg.data.train.num_sample = 10
    fails(cfg, r'data\.train\.num_sample; did you mean data\.train\.num_samples')
    cfg = tiny_cfg(epochs=1, distiller_type='DML')
    cfg.train.mixed_precision = 'fp8'
    fails(cfg, r"train\.mixed_precision must be one of 'no', 'fp16', 'bf16', got 'fp8'")


def test_mmengine_optimisers_and_schedulers(tmp_path):
    cfg = tiny_cfg(epochs=3, distiller_type='DML')
    cfg.schedule = dict(epochs=3, param_scheduler=[dict(type='CosineAnnealingLR', T_max=2)])
    cfg.optimizer = dict(type='AdamW', lr=0.01, weight_decay=0.0)
    records = train_classification(cfg, work_dir=tmp_path / 'cosine').records
    # stepped per epoch: 0.01, 0.01 * (1 + cos(pi / 2)) / 2, then 0 (T_max reached)
    assert [r['lr'] for r in records] == pytest.approx([0.01, 0.005, 0.0], abs=1e-12)

    def fails(pattern, **schedule):
        bad = tiny_cfg(epochs=1)
        bad.schedule = dict(epochs=1, **schedule)
        with pytest.raises(ConfigError, match=pattern):
            train_classification(bad, work_dir=tmp_path / 'bad')
    fails(r"param_scheduler\[0\]\.type='CosineAnealingLR'.*CosineAnnealingLR",
          param_scheduler=[dict(type='CosineAnealingLR', T_max=2)])
    fails('either milestones/gamma', milestones=[1], param_scheduler=dict(type='ConstantLR'))
    bad = tiny_cfg(epochs=1)
    bad.optimizer = dict(type='SDG', lr=0.1)
    with pytest.raises(ConfigError, match=r"optimizer\.type='SDG'.*did you mean SGD"):
        train_classification(bad, work_dir=tmp_path / 'bad')
    assert not (tmp_path / 'bad').exists()


def test_build_checks_logits_and_1x1_taps():
    student = dict(type='tiny_cnn', num_classes=4, width=4)
    adapter = dict(type='ClassifierAdapter', probe_input_size=16)
    with pytest.raises(ConfigError, match=r"student's logits have shape \(2, 4\) and the "
                                          r"teacher's \(2, 5\).*same num_classes"):
        build_distiller(dict(type='DML', student=student, adapter=adapter,
                             teacher=dict(student, num_classes=5)))
    with pytest.raises(ConfigError, match=r'avgpool -> avgpool taps a 1x1 map'):
        build_distiller(dict(type='FitNet', student=student, teacher=student, adapter=adapter,
                             taps=[dict(student='avgpool', teacher='avgpool')],
                             random_teacher=True))


def test_every_classification_config_passes_the_checks():
    from distill.config_checks import check_distiller_cfg
    from distill.engines.classification.train import DEFAULT_TRAIN
    from distill.engines.classification.config import check_classification_config
    paths = sorted(p for p in (ROOT / 'configs' / 'classification').rglob('*.py')
                   if '_base_' not in p.parts)
    assert len(paths) > 10
    for path in paths:
        cfg = Config.fromfile(str(path))
        check_classification_config(cfg, DEFAULT_TRAIN)
        check_distiller_cfg(cfg.distiller)


def test_cli_names_a_cfg_options_key_outside_every_section():
    from distill.engines.classification.train import DEFAULT_TRAIN
    from distill.engines.classification.config import check_cfg_options
    cfg = tiny_cfg()
    with pytest.raises(ConfigError, match=r'loss_weights\.co.*did you mean '
                                          r'distiller\.loss_weights\.co\?'):
        check_cfg_options({'loss_weights.co': 0.1}, cfg, DEFAULT_TRAIN)
    check_cfg_options({'schedule.epochs': 3, 'distiller.loss_weights.co': 0.1}, cfg,
                      DEFAULT_TRAIN)


# ---------------------------------------------------------------------------- work dirs
@DISTILLERS.register_module(force=True)
class NaNFromStartDML(DML):
    def forward(self, batch):
        terms = super().forward(batch)
        return {**terms, 'student.kd': terms['student.kd'] * float('nan')}


def test_fresh_run_into_an_earlier_run_changes_nothing(tmp_path):
    train_classification(tiny_cfg(epochs=2), work_dir=tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=r'already holds an earlier run.*--resume.*'
                                              r'--overwrite'):
        train_classification(tiny_cfg(epochs=1, distiller_type='NaNFromStartDML'),
                             work_dir=tmp_path)
    assert snapshot(tmp_path) == before  # byte-identical, train.log included
    # --overwrite replaces the run: no checkpoint-12 of the old one is left behind
    train_classification(tiny_cfg(epochs=1, distiller_type='DML'), work_dir=tmp_path,
                         overwrite=True)
    assert checkpoint_names(tmp_path) == ['checkpoint-6']
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['student.pth', 'teacher.pth']
    assert [r['epoch'] for r in json.loads((tmp_path / 'metrics.json').read_text())] == [1]


# ---------------------------------------------------------------------------- checkpoints
def flip_tensor_bytes(path: Path, tensor: torch.Tensor):
    """Flip 16 bytes inside ``tensor``'s data in the file (the zip stays readable)."""
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()[:64]
    at = data.find(raw)
    assert at > 0
    for i in range(at + 8, at + 24):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


KILLED_RUN = '''
import os, signal, sys
import torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from accelerate import Accelerator
from test_classification_engine import tiny_cfg
from distill.engines.classification.train import train_classification
real_save_state, calls = Accelerator.save_state, []
def dying_save_state(self, output_dir, *args, **kwargs):
    calls.append(output_dir)
    real_save_state(self, output_dir, *args, **kwargs)
    if len(calls) == 3:  # the checkpoint of epoch 3, half written: killed
        weights = os.path.join(output_dir, 'model.safetensors')
        os.truncate(weights, os.path.getsize(weights) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
Accelerator.save_state = dying_save_state
train_classification(tiny_cfg(epochs=4), work_dir=sys.argv[1])
'''


def test_kill_during_checkpoint_write_and_flipped_bytes_resume_exactly(tmp_path):
    full = train_classification(tiny_cfg(epochs=4), work_dir=tmp_path / 'full')
    run = tmp_path / 'run'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', KILLED_RUN.format(tests=str(ROOT / 'tests')),
                           str(run)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p.name for p in run.glob('.*.tmp')] == ['.checkpoint-18.tmp']  # never renamed
    assert checkpoint_names(run) == ['checkpoint-6', 'checkpoint-12']
    weights = run / 'checkpoint-12' / 'model.safetensors'
    flip_tensor_bytes(weights, read_checkpoint(run / 'checkpoint-12')['model'][
        'teacher.stage3.3.weight'])
    with pytest.raises(CorruptCheckpointError, match=r'checkpoint-12/model\.safetensors does '
                                                     r'not match its checksum'):
        train_classification(tiny_cfg(epochs=4), work_dir=run, resume=str(run / 'checkpoint-12'))

    resumed = train_classification(tiny_cfg(epochs=4), work_dir=run, resume=True)
    log = (run / 'train.log').read_text()
    assert f'skipping {run / "checkpoint-12"}' in log and 'checksum' in log
    assert f'resumed from {run / "checkpoint-6"} at epoch 2' in log
    assert not list(run.glob('.*.tmp'))  # the orphan was removed
    assert_same_weights(full.distiller.state_dict(), resumed.distiller.state_dict())
    strip = [{k: v for k, v in r.items() if k != 'epoch_time_s'}
             for r in json.loads((run / 'metrics.json').read_text())]
    assert strip == [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in full.records]


def test_truncated_checkpoint_falls_back_and_never_suggests_unpickling(tmp_path):
    full = train_classification(tiny_cfg(epochs=3), work_dir=tmp_path / 'full')
    run = tmp_path / 'run'
    train_classification(tiny_cfg(epochs=2), work_dir=run)
    student = run / 'student.pth'
    student.write_bytes(student.read_bytes()[:2000])
    with pytest.raises(CorruptCheckpointError) as info:
        load_checkpoint(student)
    assert str(student) in str(info.value) and 'allow_pickle' not in str(info.value)
    newest = run / 'checkpoint-12'
    optimizer = newest / 'optimizer.bin'
    optimizer.write_bytes(optimizer.read_bytes()[:2000])
    resumed = train_classification(tiny_cfg(epochs=3), work_dir=run, resume=True)
    log = (run / 'train.log').read_text()
    assert f'skipping {newest}' in log and 'allow_pickle' not in log
    assert f"resumed from {run / 'checkpoint-6'} at epoch 2" in log
    assert_same_weights(full.distiller.state_dict(), resumed.distiller.state_dict())
    # nothing valid left: an error naming the damaged checkpoints, not a silent fresh start
    for path in run.rglob('model.safetensors'):
        path.write_bytes(b'garbage')
    with pytest.raises(CorruptCheckpointError, match=r'no valid checkpoint.*checkpoint-18'):
        train_classification(tiny_cfg(epochs=4), work_dir=run, resume=True)


def test_resume_applies_the_configs_lr_over_the_restored_optimiser(tmp_path):
    train_classification(tiny_cfg(epochs=1), work_dir=tmp_path)
    cfg = tiny_cfg(epochs=2)
    cfg.optimizer.lr = 0.01  # what --cfg-options optimizer.lr=0.01 does
    cfg.optimizer.weight_decay = 1e-4
    train_classification(cfg, work_dir=tmp_path, resume=True)
    group = newest_checkpoint(tmp_path)['optimizer']['param_groups'][0]
    assert group['lr'] == 0.01 and group['initial_lr'] == 0.01
    assert group['weight_decay'] == 1e-4
    log = (tmp_path / 'train.log').read_text()
    assert 'optimizer.lr: 0.05 (checkpoint) -> 0.01 (config)' in log
    assert json.loads((tmp_path / 'metrics.json').read_text())[1]['lr'] == 0.01


def test_resume_applies_the_configs_arch_lr_over_the_restored_arch_optimiser(tmp_path):
    train_classification(tiny_cfg(epochs=1, distiller_type='FakeArchDistiller'),
                         work_dir=tmp_path)
    cfg = tiny_cfg(epochs=2, distiller_type='FakeArchDistiller')
    cfg.arch_optimizer = dict(type='Adam', lr=1e-3)
    train_classification(cfg, work_dir=tmp_path, resume=True)
    assert newest_checkpoint(tmp_path)['arch_optimizer']['param_groups'][0]['lr'] == 1e-3
    log = (tmp_path / 'train.log').read_text()
    assert 'arch_optimizer.lr: 0.05 (checkpoint) -> 0.001 (config)' in log


# ---------------------------------------------------------------------------- the CLI
def test_train_script_takes_the_flags_of_mm_tools_train(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'classification_train', ROOT / 'tasks' / 'classification' / 'train.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args exports --local_rank unless set
    args = script.parse_args(['c.py', '--resume'])
    assert args.resume == 'auto' and not args.amp and args.launcher == 'none'
    args = script.parse_args(['c.py', '--resume', 'w/checkpoint-18', '--amp', '--launcher',
                              'none', '--local-rank', '0', '--work-dir', 'w',
                              '--cfg-options', 'optimizer.lr=0.01', 'schedule.epochs=3'])
    assert args.resume == 'w/checkpoint-18' and args.amp and args.local_rank == 0
    assert args.cfg_options == {'optimizer.lr': 0.01, 'schedule.epochs': 3}
    assert script.parse_args(['c.py', '--local_rank', '1']).local_rank == 1
    for bad in (['--resume', '--overwrite'], ['--launcher', 'slurm']):
        with pytest.raises(SystemExit):
            script.parse_args(['c.py', *bad])
    monkeypatch.delenv('LOCAL_RANK')  # alone, it would make Accelerate start a process group
    # --amp: fp16 on a GPU, bf16 on a CPU (an in-process Accelerator cannot change precision,
    # so the setting is checked here; bf16 training on a CPU was run by hand)
    cfg = tiny_cfg()
    script.set_amp(cfg)
    assert cfg.train.mixed_precision == ('fp16' if torch.cuda.is_available() else 'bf16')
    # --overwrite over an earlier run, which a plain rerun refuses
    tiny_cfg(epochs=1, distiller_type='DML').dump(str(tmp_path / 'tiny.py'))
    work = tmp_path / 'run'
    script.main([str(tmp_path / 'tiny.py'), '--work-dir', str(work)])
    with pytest.raises(FileExistsError):
        script.main([str(tmp_path / 'tiny.py'), '--work-dir', str(work)])
    script.main([str(tmp_path / 'tiny.py'), '--work-dir', str(work), '--overwrite',
                 '--cfg-options', 'train.seed=5'])
    assert Config.fromfile(str(work / 'config.py')).train.seed == 5


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('echo this must not run',))


def test_a_code_running_pickle_is_refused_naming_the_file_and_the_code(tmp_path, capfd):
    path = tmp_path / 'teacher.pth'
    torch.save({'fc.weight': _RunsCode()}, path)
    with pytest.raises(RuntimeError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and 'system' in message and 'refused' in message
    assert 'weights_only' not in message  # torch's advice to turn the check off: not passed on
    assert 'must not run' not in capfd.readouterr().out
    with pytest.raises(IsADirectoryError, match='is a directory, not a checkpoint file'):
        load_checkpoint(tmp_path)
    # a teacher checkpoint that is a folder is named as one, not as "not found"
    from distill.engines.mmengine.model import check_teacher_ckpt
    with pytest.raises(IsADirectoryError, match='is a directory'):
        check_teacher_ckpt(str(tmp_path))


def test_a_code_running_rng_file_with_forged_checksums_stops_the_resume(tmp_path, capfd):
    """Accelerate's load_state would skip an unreadable random_states_0.pkl with an INFO line
    (the resumed run then silently differs); the engine refuses it, naming the file."""
    from distill.engines.core.checkpoints import STATE_FILE, file_digests
    run = tmp_path / 'run'
    train_classification(tiny_cfg(epochs=1), work_dir=run)
    newest = run / checkpoint_names(run)[-1]
    torch.save({'state': _RunsCode()}, newest / 'random_states_0.pkl')
    state = json.loads((newest / STATE_FILE).read_text())
    state['sha256'] = file_digests(newest)  # checksums forged to match
    (newest / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(RuntimeError, match=r'random_states_0\.pkl was refused: loading it '
                                           r'would call .*system'):
        train_classification(tiny_cfg(epochs=2), work_dir=run, resume=str(newest))
    assert 'must not run' not in capfd.readouterr().out
    (newest / 'random_states_0.pkl').write_bytes(b'not a pickle')
    state['sha256'] = file_digests(newest)
    (newest / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CorruptCheckpointError, match=r'random_states_0\.pkl is not a readable'):
        train_classification(tiny_cfg(epochs=2), work_dir=run, resume=str(newest))


class _Labelled(torch.utils.data.Dataset):
    """A data set of the user's: its labels at hand (``labels``), no class list."""
    root = 'my/data'

    def __init__(self, labels):
        self.labels = torch.tensor(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return dict(inputs=torch.rand(3, 16, 16), labels=int(self.labels[index]))


def test_labels_the_student_cannot_predict_are_named_before_the_first_step(tmp_path):
    """A label >= num_classes failed inside the first loss (an IndexError naming neither the
    data set nor the values; on a GPU a device-side assert): one line now, before any step."""
    from test_classification_engine import tiny_cfg
    cfg = tiny_cfg(epochs=1, distiller_type='DML')  # 4 classes
    with pytest.raises(ValueError, match=r'^data\.train \(_Labelled at my/data\) has label '
                                         r'values 7, 12 outside 0\.\.3: the student predicts 4 '
                                         r'classes; fix those labels, or give distiller\.student'):
        train_classification(cfg, work_dir=tmp_path / 'train', datasets=dict(
            train=_Labelled([0, 1, 2, 3, 7, 12] * 4), val=_Labelled([0, 1] * 4)))
    with pytest.raises(ValueError, match=r'^data\.val \(_Labelled at my/data\) has label '
                                         r'values -1, 4 outside 0\.\.3'):
        train_classification(cfg, work_dir=tmp_path / 'val', datasets=dict(
            train=_Labelled([0, 1, 2, 3] * 4), val=_Labelled([0, 4, -1] * 2)))
    assert not list(tmp_path.glob('*/checkpoint-*'))


def test_class_count_and_channel_mismatches_are_named_before_the_first_step(tmp_path):
    from test_classification_engine import tiny_cfg
    cfg = tiny_cfg(epochs=1, distiller_type='DML')
    cfg.distiller.student.num_classes = cfg.distiller.teacher.num_classes = 3  # data has 4
    with pytest.raises(ConfigError, match=r'data.train has 4 classes but the student predicts '
                                          r'3: set num_classes=4'):
        train_classification(cfg, work_dir=tmp_path / 'classes')
    cfg = tiny_cfg(epochs=1, distiller_type='DML')
    cfg.distiller.student.in_channels = cfg.distiller.teacher.in_channels = 1  # data has 3
    cfg.distiller.adapter.in_channels = 1
    with pytest.raises(ConfigError, match=r'gives images of shape \(3, 16, 16\).*cannot take'):
        train_classification(cfg, work_dir=tmp_path / 'channels')
    assert not list(tmp_path.glob('*/checkpoint-*'))


def test_fp16_on_a_cpu_and_a_logger_not_installed_are_errors(tmp_path):
    from distill.engines.core.runtime import make_accelerator
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device.*'bf16'"):
        make_accelerator(tmp_path, mixed_precision='fp16', cpu=True)
    with pytest.raises(ValueError, match="logger 'surely_not_a_logger' is not installed"):
        make_accelerator(tmp_path, log_with='surely_not_a_logger', cpu=True)


# ---------------------------------------------------------------------------- inputs, outputs
def run_script(script, *args):
    from forked_run import run_python
    env = {k: v for k, v in os.environ.items() if k not in ('LOCAL_RANK', 'RANK', 'WORLD_SIZE')}
    return run_python([str(ROOT / script), *map(str, args)], dict(env, OMP_NUM_THREADS='1'),
                      ROOT, timeout=300)


def test_test_py_out_never_replaces_an_input_nor_a_foreign_file(tmp_path):
    """test.py --out work/student.pth (or --out checkpoint-8/model.safetensors) replaced the
    weights with the metrics JSON."""
    folder = tmp_path / 'checkpoint-8'
    folder.mkdir()
    (folder / 'model.safetensors').write_bytes(b'weights')
    (tmp_path / 'student.pth').write_bytes(b'student weights')
    before = snapshot(tmp_path)
    demo = ROOT / 'configs/classification/demo.py'
    done = run_script('tasks/classification/test.py', demo, folder, '--out',
                      folder / 'model.safetensors')
    assert done.returncode == 2, done.stderr[-2000:]
    assert (f'error: --out {folder}/model.safetensors is inside the checkpoint ({folder}), an '
            f'input of this command: nothing was written') in done.stderr
    assert done.stderr.count('error: ') == 1
    from distill.engines.classification.eval import evaluate_checkpoint
    with pytest.raises(FileExistsError, match=r'--out .*student\.pth exists and is not a '
                                              r'metrics JSON of test\.py: nothing was written'):
        evaluate_checkpoint(Config.fromfile(demo), folder, out=tmp_path / 'student.pth')
    assert snapshot(tmp_path) == before


def test_a_checkpoint_of_another_model_is_named_with_its_keys(tmp_path):
    from distill.engines.classification.eval import load_networks
    cfg = tiny_cfg(epochs=1)
    wider = build_distiller(dict(cfg.distiller, student=dict(type='tiny_cnn', num_classes=4,
                                                             width=8)))
    torch.save(wider.student.state_dict(), tmp_path / 'student.pth')
    with pytest.raises(ValueError, match=r'student\.pth does not match the model: 0 missing, 0 '
                                         r'unexpected, \d+ of another shape \(shape: \S+ '
                                         r'\[8, 3, 3, 3\] in the file, \[4, 3, 3, 3\] in the '
                                         r'model'):
        load_networks(build_distiller(cfg.distiller), tmp_path / 'student.pth')


def test_a_second_run_into_a_held_work_dir_is_refused_naming_the_first(tmp_path):
    """Two runs started at once into one work dir both ran, their train.log lines interleaved
    and one's metrics.json and checkpoints replaced the other's."""
    from distill.engines.core.work_dir_lock import LOCK_NAME, hold_work_dir
    work = tmp_path / 'work'
    lock = hold_work_dir(work)  # this process is the first run
    try:
        done = run_script('tasks/classification/train.py', ROOT / 'configs/classification/demo.py',
                          '--work-dir', work)
    finally:
        lock.release()
    assert done.returncode == 2, done.stderr[-2000:]
    assert f'error: work dir {work} is in use by another run, pid {os.getpid()}' in done.stderr
    assert not work.exists()
    # the lock file of a run that was killed holds no lock: taken over, removed at the end
    work.mkdir()
    (work / LOCK_NAME).write_text('{"pid": 999999999}')
    train_classification(tiny_cfg(epochs=1), work_dir=work)
    assert checkpoint_names(work) == ['checkpoint-6'] and not (work / LOCK_NAME).exists()


def test_the_config_being_run_and_the_teacher_are_never_replaced_nor_deleted(tmp_path):
    """The work dir's config.py run again is the config dump's target, and --overwrite would
    delete a teacher.pth of the work dir that the run reads."""
    work = tmp_path / 'work'
    work.mkdir()
    tiny_cfg(epochs=1).dump(str(work / 'config.py'))
    (work / 'metrics.json').write_text('[{"epoch": 1}]')
    before = snapshot(work)
    for flags in (dict(overwrite=True), dict(resume=True)):
        with pytest.raises(FileExistsError, match=r"work dir's config dump .*config\.py is the "
                                                  r'config being run'):
            train_classification(Config.fromfile(work / 'config.py'), work_dir=work, **flags)
        assert snapshot(work) == before
    torch.save({}, work / 'teacher.pth')
    with pytest.raises(FileExistsError, match=r'--overwrite would delete .*teacher\.pth, the '
                                              r'teacher checkpoint \(distiller\.teacher_ckpt\)'):
        train_classification(tiny_cfg(epochs=1, teacher_ckpt=str(work / 'teacher.pth')),
                             work_dir=work, overwrite=True)
    assert (work / 'teacher.pth').is_file() and (work / 'metrics.json').is_file()


# ---------------------------------------------------------------------------- resume changes
def test_a_resume_that_changes_the_config_says_so_and_records_each_stretch(tmp_path):
    """A resume with another loss weight, other training images and another accumulation went
    on without a word, and config.py then held only the new values. Now each changed key is
    a warning in train.log (old -> new), config.py keeps the first run's config and the
    resumed stretch's is config.resumed-at-6.py; the accumulation's steps count from there."""
    weights = dict(task=1.0, kd=1.0, co=0.1, di=0.01)
    train_classification(tiny_cfg(epochs=1, loss_weights=weights), work_dir=tmp_path)
    first = (tmp_path / 'config.py').read_bytes()
    cfg = tiny_cfg(epochs=2, loss_weights=dict(weights, co=0.5))
    cfg.data.train.seed = 5  # other training images
    cfg.train.gradient_accumulation_steps = 2
    result = train_classification(cfg, work_dir=tmp_path, resume=True)
    log = (tmp_path / 'train.log').read_text()
    assert f"differ from those the checkpoint was trained with ({tmp_path / 'config.py'})" in log
    for line in ('distiller.loss_weights.co: 0.1 -> 0.5', 'data.train.seed: 0 -> 5',
                 'train.gradient_accumulation_steps: (unset) -> 2', 'schedule.epochs: 1 -> 2'):
        assert f'WARNING   {line}' in log, line
    assert (tmp_path / 'config.py').read_bytes() == first
    record = Config.fromfile(str(tmp_path / 'config.resumed-at-6.py'))
    assert record.distiller.loss_weights.co == 0.5 and record.train.gradient_accumulation_steps == 2
    assert checkpoint_names(tmp_path) == ['checkpoint-6', 'checkpoint-9']  # 6 + 3 steps
    assert result.records[-1]['global_step'] == 9
    # the same config again: nothing differs from the stretch that wrote checkpoint-9
    train_classification(cfg, work_dir=tmp_path, resume=True)
    assert sorted(p.name for p in tmp_path.glob('config*.py')) == ['config.py',
                                                                   'config.resumed-at-6.py']
    assert 'resume from step 9' not in (tmp_path / 'train.log').read_text()


def test_a_resume_that_changes_the_architecture_ends_with_one_line(tmp_path):
    """The student's width changed on resume: the saved weights cannot mean anything for it
    (the load failed with a traceback, or a shape mismatch deep in Accelerate); the entry
    point ends with one error line naming the key, and writes no record."""
    config = tmp_path / 'tiny.py'
    tiny_cfg(epochs=1, distiller_type='DML').dump(str(config))
    work = tmp_path / 'work'
    train_classification(Config.fromfile(str(config)), work_dir=work)
    before = snapshot(work)
    for options, key in ((['distiller.student.width=8'], 'distiller.student.width'),
                         (['distiller.student.num_classes=5', 'distiller.teacher.num_classes=5'],
                          'distiller.student.num_classes')):
        done = run_entry_point('tasks/classification/train.py', config, '--work-dir', work,
                               '--resume', '--cfg-options', *options, 'schedule.epochs=2')
        assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-3000:]
        errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
        assert len(errors) == 1 and errors[0].startswith(f'error: --resume: {key} changed '), \
            errors
        assert 'cannot change under saved weights' in errors[0]
        assert {k: v for k, v in snapshot(work).items() if k.name != 'train.log'} == \
            {k: v for k, v in before.items() if k.name != 'train.log'}


def test_a_resume_with_another_process_count_names_it(tmp_path):
    """A checkpoint of a 2-process run resumed by 1 process: the refusal blamed "another batch
    size or data set" (its batches per epoch differ); it names the process count. A 1 -> 2
    resume through accelerate launch gives the same line the other way round."""
    from distill.engines.core.checkpoints import STATE_FILE
    train_classification(tiny_cfg(epochs=1), work_dir=tmp_path)
    path = tmp_path / 'checkpoint-6' / STATE_FILE
    state = json.loads(path.read_text())  # what a 2-process run of this config records
    path.write_text(json.dumps(dict(state, num_processes=2, steps_per_epoch=3)))
    with pytest.raises(ValueError, match=r'the process count changed from 2 to 1') as info:
        train_classification(tiny_cfg(epochs=2), work_dir=tmp_path, resume=True)
    assert 'batch size' not in str(info.value)


# ---------------------------------------------------------------------------- one error line
def run_entry_point(script, *args, code=None):
    """``python SCRIPT ARGS`` (or ``python -c CODE SCRIPT ARGS``), forked from the preloaded
    server; the completed process."""
    from forked_run import run_python
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    env.pop('DISTILL_DEBUG', None)
    argv = [str(ROOT / script), *map(str, args)]
    return run_python(['-c', code, *argv] if code else argv, env, ROOT, timeout=300)


def one_error_line(done) -> str:
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize('workers', [0, 1])
def test_a_corrupt_training_image_ends_with_one_line_naming_it(tmp_path, workers):
    """An ImageFolder image that is not an image: a traceback through the data loader (in a
    worker, torch's text of the worker's traceback); now one line naming the batch and file."""
    from distill.data import write_shapes_imagefolder
    roots = write_shapes_imagefolder(tmp_path / 'shapes', num_train=32, num_val=8,
                                     image_size=16, num_classes=4)
    broken = sorted(roots['train'].rglob('*.png'))[5]
    broken.write_bytes(b'not an image')
    cfg = tiny_cfg(epochs=1, distiller_type='DML')
    cfg.data.train = dict(type='ImageFolder', root=str(roots['train']))
    cfg.data.val = dict(type='ImageFolder', root=str(roots['val']))
    cfg.data.num_workers = workers
    cfg.dump(str(tmp_path / 'folder.py'))
    line = one_error_line(run_entry_point('tasks/classification/train.py', tmp_path / 'folder.py',
                                          '--work-dir', tmp_path / 'work'))
    assert 'training batch' in line and 'of epoch 1' in line and str(broken) in line, line


def test_a_distillation_checkpoint_as_teacher_ckpt_says_where_its_teacher_is(tmp_path):
    """teacher_ckpt=checkpoint-6 (a folder of both networks) was "a directory", and a saved
    distiller state dict "did not match the model" (every key unexpected); each now says where
    the teacher's weights are in it and which file to pass."""
    run = tmp_path / 'run'
    result = train_classification(tiny_cfg(epochs=1, distiller_type='DML'), work_dir=run)
    torch.save(result.distiller.state_dict(), tmp_path / 'distiller.pth')
    with pytest.raises(IsADirectoryError) as info:
        train_classification(tiny_cfg(epochs=1, distiller_type='DML',
                                      teacher_ckpt=str(run / 'checkpoint-6')),
                             work_dir=tmp_path / 'a')
    assert 'checkpoint folder of a distillation run' in str(info.value)
    assert 'teacher.* in its model.safetensors' in str(info.value)
    assert f"pass {run / 'teacher.pth'}" in str(info.value)
    with pytest.raises(ValueError) as info:
        train_classification(tiny_cfg(epochs=1, distiller_type='DML',
                                      teacher_ckpt=str(tmp_path / 'distiller.pth')),
                             work_dir=tmp_path / 'b')
    assert "the weights that fit this network are its teacher's, under teacher.*" in \
        str(info.value)
    assert str(tmp_path / 'distiller.pth') in str(info.value)
