"""Diffusion runs: a fresh run does not touch an earlier run's output_dir (unless
--overwrite_output_dir), orphan temporaries of an interrupted save are removed, unknown keys of
the sections the engine reads are named with the closest valid ones."""
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from forked_run import run_python

from distill.config_checks import ConfigError
from distill.engines.core.checkpoints import remove_orphan_temporaries
from distill.engines.diffusion.output import check_fresh_output_dir
from test_diffusion_checkpoint_integrity import fake_checkpoint, resolve
from test_diffusion_train import SCRIPT, TINY_CONFIG

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

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


def test_a_run_that_failed_before_its_first_step_does_not_block_the_fixed_rerun(tmp_path):
    """train.py on a folder of undecodable images stops at its first batch, leaving an empty
    metrics.json and a log: the rerun on good data needs no --overwrite_output_dir."""
    images = tmp_path / 'images'
    images.mkdir()
    for index in range(12):
        (images / f'{index}.png').write_bytes(b'not a png')
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    output_dir = tmp_path / 'run'
    env = {k: v for k, v in os.environ.items() if k not in ('LOCAL_RANK', 'RANK', 'WORLD_SIZE')}
    result = run_python(
        [str(SCRIPT), str(config), '--output_dir', str(output_dir),
         '--train_data_dir', str(images), '--gradient_accumulation_steps', '1',
         '--cfg-options', 'data.num_heldout=2'], dict(env, OMP_NUM_THREADS='1'), REPO, 300)
    assert result.returncode == 2 and 'cannot decode image' in result.stderr
    assert (output_dir / 'metrics.json').read_text().strip() == '[]'
    check_fresh_output_dir(output_dir)  # the fixed rerun's check: no earlier run there


def test_orphan_temporaries_of_an_interrupted_save_are_removed(tmp_path, caplog):
    path = fake_checkpoint(tmp_path, 3)
    half = tmp_path / '.checkpoint-4.tmp'  # the save of checkpoint-4 killed mid-write
    half.mkdir()
    (half / 'model.safetensors').write_bytes(b'half')
    (tmp_path / '.metrics.json.tmp').write_text('[')
    with caplog.at_level(logging.WARNING):
        removed = remove_orphan_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == ['.checkpoint-4.tmp', '.metrics.json.tmp']
    assert '.checkpoint-4.tmp' in caplog.text
    assert not list(tmp_path.rglob('*.tmp'))
    assert resolve(tmp_path, 'latest') == path


@pytest.mark.parametrize('option, message', [
    ('data.num_sample=3', 'data.num_sample; did you mean data.num_samples'),
    ('evaluation.num_bucket=3', 'did you mean evaluation.num_buckets'),
    ('noise_scheduler.beta_schedul=linear', 'did you mean noise_scheduler.beta_schedule'),
    ('conditioning.sequence_len=7', 'did you mean conditioning.sequence_length'),
    ('student.layers_per_blok=1', 'did you mean student.layers_per_block')])
def test_unknown_section_keys_are_named_with_the_closest(option, message):
    from distill.engines.diffusion.config import build_parser, load_config
    args = build_parser().parse_args([str(REPO / 'configs/diffusion/adm_shapes_tiny.py'),
                                      '--cfg-options', option])
    with pytest.raises(ConfigError, match=message):
        load_config(args)


def run_train(*args):
    env = {k: v for k, v in os.environ.items() if k not in ('LOCAL_RANK', 'RANK', 'WORLD_SIZE')}
    env['OMP_NUM_THREADS'] = '1'
    return run_python([str(SCRIPT), *map(str, args)], env, REPO, timeout=300)


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
    assert '"global_step": 1' in (output_dir / 'metrics.json').read_text()


def test_resume_latest_without_a_checkpoint_refuses_an_earlier_run(tmp_path):
    """'latest' with no complete checkpoint would start a new run: it refuses a folder holding
    an earlier run's metrics.json as a fresh run does, instead of appending to that file."""
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    output_dir = tmp_path / 'run'
    output_dir.mkdir()
    (output_dir / 'metrics.json').write_text('[{"kind": "train", "step": 1, "loss": 1.0}]')
    (output_dir / '.checkpoint-2.tmp').mkdir()  # a save killed mid-write: no checkpoint
    before = snapshot(output_dir)
    result = run_train(config, '--output_dir', output_dir, '--resume_from_checkpoint', 'latest')
    assert result.returncode != 0
    assert 'no complete checkpoint to resume from' in result.stderr, result.stderr[-3000:]
    assert snapshot(output_dir) == before


@pytest.mark.parametrize('name, warmup', [('linear', 0), ('linear', 3), ('cosine', 0),
                                          ('cosine', 3), ('constant_with_warmup', 3),
                                          ('constant', 3), ('cosine', 12), ('linear', 11),
                                          ('cosine_with_restarts', 3), ('polynomial', 0),
                                          ('polynomial', 3)])
def test_lr_schedule_follows_diffusers_get_scheduler(name, warmup):
    """The mmengine schedules of --lr_scheduler give diffusers' lr after every optimiser step;
    only the warm-up differs by design (from lr / (warmup + 1), not 0): checked against its
    own formula."""
    import warnings

    import torch
    from diffusers.optimization import get_scheduler

    from distill.engines.diffusion.config import lr_schedule
    from distill.engines.core.optimizers import build_schedulers, step_schedulers
    total, base = 10, 1e-3
    ours = torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=base)
    schedulers = build_schedulers(lr_schedule(name, warmup, total), ours, by_epoch=False)
    theirs = torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=base)
    reference = get_scheduler(name, theirs, num_warmup_steps=warmup, num_training_steps=total)
    for step in range(1, total + 1):
        step_schedulers(schedulers)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            reference.step()
        expected = (base * (step + 1) / (warmup + 1) if step < warmup and name != 'constant'
                    else reference.get_last_lr()[0])
        assert ours.param_groups[0]['lr'] == pytest.approx(expected, abs=1e-12), step


def test_unknown_lr_scheduler_is_named():
    from distill.engines.diffusion.config import lr_schedule
    with pytest.raises(ConfigError, match="lr_scheduler='cosin'.*did you mean cosine"):
        lr_schedule('cosin', 0, 10)


def test_checkpoints_to_keep_follow_one_rule_in_every_engine(tmp_path):
    """--checkpoints_total_limit -1 deleted every checkpoint as soon as it was written, while
    classification refused keep_checkpoints=-1."""
    from distill.engines.classification.config import check_train
    from distill.engines.classification.train import DEFAULT_TRAIN
    from distill.engines.core.checkpoints import prune_checkpoints
    from distill.engines.diffusion.config import build_parser, load_config
    args = build_parser().parse_args([str(REPO / 'configs/diffusion/adm_shapes_tiny.py'),
                                      '--checkpoints_total_limit', '-1'])
    with pytest.raises(ConfigError, match=r'^--checkpoints_total_limit must be an int >= 0 '
                                          r'\(the newest N kept; 0 or None: all\), got -1$'):
        load_config(args)
    with pytest.raises(ConfigError, match=r'^train\.keep_checkpoints must be an int >= 0 '
                                          r'\(the newest N kept; 0 or None: all\), got -1$'):
        check_train(dict(keep_checkpoints=-1), DEFAULT_TRAIN)
    fake_checkpoint(tmp_path, 2)
    with pytest.raises(ConfigError, match='keep_checkpoints must be an int >= 0'):
        prune_checkpoints(tmp_path, -1)
    assert (tmp_path / 'checkpoint-2').is_dir()


def test_overwrite_output_dir_never_deletes_an_input(tmp_path):
    """An offline run whose teacher is the teacher/ an online run left in output_dir: the
    overwrite deleted it once the networks were built."""
    earlier_run(tmp_path)
    (tmp_path / 'teacher').mkdir()
    (tmp_path / 'teacher' / 'config.json').write_text('{}')
    before = snapshot(tmp_path)
    inputs = {'the pretrained teacher (teacher.pretrained)': tmp_path / 'teacher'}
    with pytest.raises(FileExistsError, match=r'--overwrite would delete .*teacher, the '
                                              r'pretrained teacher .*nothing was deleted'):
        check_fresh_output_dir(tmp_path, overwrite=True, inputs=inputs)
    assert snapshot(tmp_path) == before


def good_images(folder: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image
    folder.mkdir()
    for index in range(count):
        pixels = np.random.RandomState(index).randint(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f'{index}.png')
    return folder


def test_a_folder_too_small_to_hold_images_out_says_so_and_records_it(tmp_path):
    """12 images with num_heldout=8: the held-out set is the training set, which the log gave
    as "12 training and 12 held-out images"."""
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    output_dir = tmp_path / 'run'
    result = run_train(config, '--output_dir', output_dir, '--train_data_dir',
                       good_images(tmp_path / 'images', 12), '--max_train_steps', '1',
                       '--checkpointing_steps', '0', '--validation_steps', '0',
                       '--gradient_accumulation_steps', '1', '--no-use_ema',
                       '--cfg-options', 'data.num_heldout=8')
    assert result.returncode == 0, result.stderr[-3000:]
    assert ('WARNING held-out = training: the image folder has 12 images, fewer than twice '
            'data.num_heldout=8') in result.stdout
    assert '12 training images, held out: the same (held-out = training)' in result.stdout
    final = json.loads((output_dir / 'metrics.json').read_text())[-1]
    assert final['kind'] == 'final' and final['heldout_is_training'] is True


def test_a_second_run_into_a_held_output_dir_is_refused_naming_the_first(tmp_path):
    from distill.engines.core.work_dir_lock import hold_work_dir
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    output_dir = tmp_path / 'run'
    lock = hold_work_dir(output_dir)  # this process is the first run
    try:
        result = run_train(config, '--output_dir', output_dir)
    finally:
        lock.release()
    assert result.returncode == 2, result.stderr[-2000:]
    assert (f'error: work dir {output_dir} is in use by another run, pid {os.getpid()}'
            in result.stderr)
    assert not output_dir.exists()


def test_a_resume_that_changes_the_config_says_so_and_records_each_stretch(tmp_path):
    """--no-use_ema on resume dropped the checkpoint's EMA without a word (and a loss weight
    changed as silently), and output_dir kept no config at all. Now the run's config.py is
    written, each changed key is a warning of train.log, the resumed stretch's config is
    config.resumed-at-2.py; another student architecture ends with one error line."""
    from mmengine.config import Config
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    output_dir = tmp_path / 'run'
    short = ['--checkpointing_steps', '2', '--validation_steps', '0',
             '--cfg-options', 'evaluation.skip=True']
    done = run_train(config, '--output_dir', output_dir, '--max_train_steps', '2', *short)
    assert done.returncode == 0, done.stderr[-3000:]
    first = (output_dir / 'config.py').read_bytes()
    assert Config.fromfile(str(output_dir / 'config.py')).use_ema is True
    done = run_train(config, '--output_dir', output_dir, '--max_train_steps', '3', *short,
                     'distiller.loss_weights.co=0.5', '--resume_from_checkpoint', 'latest',
                     '--no-use_ema')
    assert done.returncode == 0, done.stderr[-3000:]
    log = (output_dir / 'train.log').read_text()
    for line in ('use_ema: True -> False', 'distiller.loss_weights.co: (unset) -> 0.5',
                 'max_train_steps: 2 -> 3'):
        assert f'WARNING   {line}' in log, line
    assert (output_dir / 'config.py').read_bytes() == first
    assert Config.fromfile(str(output_dir / 'config.resumed-at-2.py')).use_ema is False
    done = run_train(config, '--output_dir', output_dir, '--max_train_steps', '4', *short,
                     'distiller.loss_weights.co=0.5', 'student.block_out_channels=[8,24]',
                     '--resume_from_checkpoint', 'latest', '--no-use_ema')
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and errors[0].startswith(
        'error: --resume: student.block_out_channels changed ([8, 16] -> [8, 24]) from the '
        'config the checkpoint of step 2 was trained with'), errors
    assert sorted(p.name for p in output_dir.glob('config*.py')) == ['config.py',
                                                                     'config.resumed-at-2.py']
