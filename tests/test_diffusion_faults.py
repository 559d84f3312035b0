"""Diffusion runs: a fresh run does not touch an earlier run's output_dir (unless
--overwrite_output_dir), orphan temporaries of an interrupted save are removed, unknown keys of
the sections the engine reads are named with the closest valid ones."""
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.config_checks import ConfigError
from distill.engines.diffusion_checkpoint import (check_fresh_output_dir,
                                                 remove_orphan_temporaries, resolve_resume)
from test_diffusion_checkpoint_integrity import fake_checkpoint
from test_diffusion_train import SCRIPT, TINY_CONFIG

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def earlier_run(output_dir: Path) -> dict:
    fake_checkpoint(output_dir, 2)
    (output_dir / 'metrics.json').write_text('[{"kind": "final", "step": 2}]')
    (output_dir / 'unet').mkdir()
    (output_dir / 'unet' / 'config.json').write_text('{}')
    (output_dir / 'logs').mkdir()
    (output_dir / 'logs' / 'events.out.tfevents.1').write_bytes(b'earlier events')
    (output_dir / 'notes.txt').write_text('mine\n')
    return snapshot(output_dir)


def test_fresh_output_dir_refused_and_overwrite_deletes_only_the_run(tmp_path):
    before = earlier_run(tmp_path)
    with pytest.raises(FileExistsError, match=r'already holds an earlier run \(checkpoint-2, '
                                              r'metrics\.json, unet\).*--overwrite_output_dir'):
        check_fresh_output_dir(tmp_path)
    assert snapshot(tmp_path) == before
    check_fresh_output_dir(tmp_path, overwrite=True, delete=False)  # another process: no-op
    assert snapshot(tmp_path) == before
    (tmp_path / '.metrics.json.tmp').write_text('[')
    check_fresh_output_dir(tmp_path, 'logs', overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']
    (tmp_path / 'logs').mkdir()  # logs alone: a run that failed at its first step
    check_fresh_output_dir(tmp_path)


def test_orphan_temporaries_of_an_interrupted_save_are_removed(tmp_path, caplog):
    path = fake_checkpoint(tmp_path, 3)
    (path / '.ema.pt.abc123.tmp').write_bytes(b'half')
    (tmp_path / 'checkpoint-4').mkdir()  # the save killed before its state file
    (tmp_path / 'checkpoint-4' / '.noise_generator_0.pt.x.tmp').write_bytes(b'half')
    (tmp_path / 'checkpoint-4' / '.training_state.json.tmp').write_text('{')
    with caplog.at_level(logging.WARNING):
        removed = remove_orphan_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == ['.ema.pt.abc123.tmp', '.noise_generator_0.pt.x.tmp',
                                               '.training_state.json.tmp']
    assert '.ema.pt.abc123.tmp' in caplog.text
    assert not list(tmp_path.rglob('*.tmp'))
    assert resolve_resume(tmp_path, 'latest') == path


@pytest.mark.parametrize('option, message', [
    ('data.num_sample=3', 'data.num_sample; did you mean data.num_samples'),
    ('evaluation.num_bucket=3', 'did you mean evaluation.num_buckets'),
    ('noise_scheduler.beta_schedul=linear', 'did you mean noise_scheduler.beta_schedule'),
    ('conditioning.sequence_len=7', 'did you mean conditioning.sequence_length'),
    ('student.layers_per_blok=1', 'did you mean student.layers_per_block')])
def test_unknown_section_keys_are_named_with_the_closest(option, message):
    from distill.engines.diffusion_config import build_parser, load_config
    args = build_parser().parse_args([str(REPO / 'configs/diffusion/adm_shapes_tiny.py'),
                                      '--cfg-options', option])
    with pytest.raises(ConfigError, match=message):
        load_config(args)


def run_train(*args):
    env = {k: v for k, v in os.environ.items() if k not in ('LOCAL_RANK', 'RANK', 'WORLD_SIZE')}
    env['OMP_NUM_THREADS'] = '1'
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_train_script_refuses_then_overwrites_an_earlier_run(tmp_path):
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    output_dir = tmp_path / 'run'
    output_dir.mkdir()
    before = earlier_run(output_dir)
    result = run_train(config, '--output_dir', output_dir)
    assert result.returncode != 0 and 'already holds an earlier run' in result.stderr
    assert snapshot(output_dir) == before
    # --overwrite_output_dir deletes nothing before the networks are built
    result = run_train(config, '--output_dir', output_dir, '--overwrite_output_dir',
                       '--cfg-options', 'student.type=NoSuchUNet')
    assert result.returncode != 0 and 'NoSuchUNet' in result.stderr
    assert snapshot(output_dir) == before
    result = run_train(config, '--output_dir', output_dir, '--overwrite_output_dir',
                       '--max_train_steps', '1', '--checkpointing_steps', '0',
                       '--validation_steps', '0', '--gradient_accumulation_steps', '1',
                       '--no-use_ema')
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (output_dir / 'checkpoint-2').exists() and (output_dir / 'notes.txt').is_file()
    assert '"step": 1' in (output_dir / 'metrics.json').read_text()


def test_resume_latest_without_a_checkpoint_refuses_an_earlier_run(tmp_path):
    """'latest' with no complete checkpoint would start a new run: it refuses a folder holding
    an earlier run's metrics.json as a fresh run does, instead of appending to that file."""
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    output_dir = tmp_path / 'run'
    output_dir.mkdir()
    (output_dir / 'metrics.json').write_text('[{"kind": "train", "step": 1, "loss": 1.0}]')
    (output_dir / 'checkpoint-2').mkdir()  # killed before its state file: not complete
    before = snapshot(output_dir)
    result = run_train(config, '--output_dir', output_dir, '--resume_from_checkpoint', 'latest')
    assert result.returncode != 0
    assert 'no complete checkpoint to resume from' in result.stderr, result.stderr[-3000:]
    assert snapshot(output_dir) == before


def test_run_hyperparameters_go_on_top_of_the_restored_optimiser_state():
    import torch
    from diffusers.optimization import get_scheduler

    from distill.engines.diffusion_checkpoint import apply_run_hyperparameters
    param = torch.nn.Parameter(torch.ones(2))

    def build(lr, decay):
        optimizer = torch.optim.AdamW([param], lr=lr, weight_decay=decay)
        return optimizer, get_scheduler('linear', optimizer, num_warmup_steps=0,
                                        num_training_steps=10)
    optimizer, schedule = build(1e-3, 0.01)
    for _ in range(4):
        param.grad = torch.ones(2)
        optimizer.step()
        schedule.step()
    restored = optimizer.state_dict(), schedule.state_dict()
    # the resumed run, built with other values, then given the checkpoint's state
    optimizer, schedule = build(5e-3, 0.3)
    optimizer.load_state_dict(restored[0])
    schedule.load_state_dict(restored[1])
    assert optimizer.param_groups[0]['lr'] == pytest.approx(6e-4)  # the earlier run's
    notes = apply_run_hyperparameters(optimizer, schedule, dict(
        learning_rate=5e-3, adam_weight_decay=0.3, adam_beta1=0.9, adam_beta2=0.999))
    assert optimizer.param_groups[0]['lr'] == pytest.approx(5e-3 * 0.6)
    assert schedule.get_last_lr() == [pytest.approx(3e-3)]
    assert optimizer.param_groups[0]['weight_decay'] == 0.3
    assert len(notes) == 2 and notes[0].startswith('learning_rate=0.005 (this run) replaces 0.001')
    assert 'adam_weight_decay=0.3' in notes[1]
    param.grad = torch.ones(2)
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]['lr'] == pytest.approx(5e-3 * 0.5)  # the new peak decays
    assert apply_run_hyperparameters(optimizer, schedule, dict(learning_rate=5e-3)) == []
