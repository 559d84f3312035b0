"""tasks/diffusion/train.py end to end: 2-process CPU runs under ``accelerate launch``, resume,
checkpoint pruning, the output folder a DDPMPipeline of the student, a user image folder with
the diffusers example's flags.

Three 2-process launches of ~15-25 s each on 2 cores; tiny UNets at 8x8.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from forked_run import run_python

pytestmark = pytest.mark.end_to_end  # collected first (conftest.py)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'tasks' / 'diffusion' / 'train.py'
BASE = REPO / 'configs' / 'diffusion' / 'adm_shapes_tiny.py'

TINY_CONFIG = f"""
_base_ = {str(BASE)!r}
resolution = 8
_unet = dict(type='UNet2DModel', sample_size=8, norm_num_groups=4,
             down_block_types=('DownBlock2D', 'DownBlock2D'),
             up_block_types=('UpBlock2D', 'UpBlock2D'))
teacher = dict(_unet, block_out_channels=(16, 32), layers_per_block=1, _delete_=True)
student = dict(_unet, block_out_channels=(8, 16), layers_per_block=1, _delete_=True)
del _unet
noise_scheduler = dict(num_train_timesteps=100)
# 48 images, 8 per process per micro-batch on 2 processes: 3 micro-batches per epoch, so
# with accumulation 2 an epoch is 2 optimiser steps, the second one cut short by the epoch end
data = dict(resolution=8, num_samples=48, num_heldout=8)
train_batch_size = 8
gradient_accumulation_steps = 2
max_train_steps = 4
learning_rate = 1e-3
lr_scheduler = 'linear'
lr_warmup_steps = 0
checkpointing_steps = 1
checkpoints_total_limit = 3
validation_steps = 2
num_validation_images = 2
num_inference_steps = 2
logging_steps = 1
report_to = 'none'
evaluation = dict(num_images=8, num_buckets=2, num_samples=2, num_inference_steps=2)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def launch(config, output_dir, *flags, timeout=300):
    """``accelerate launch --multi_gpu --num_processes 2`` on CPU; returns the metrics."""
    env = dict(os.environ, OMP_NUM_THREADS='1', ACCELERATE_USE_CPU='1',
               TOKENIZERS_PARALLELISM='false')
    command = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu',
               '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
               '--dynamo_backend', 'no', '--main_process_port', str(free_port()),
               str(SCRIPT), str(config), '--output_dir', str(output_dir), *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads((Path(output_dir) / 'metrics.json').read_text())


def final(metrics):
    return [r for r in metrics if r['kind'] == 'final'][-1]


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('config') / 'tiny.py'
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope='module')
def online_run(tiny_config, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp('online')
    return output_dir, launch(tiny_config, output_dir, '--report_to', 'tensorboard')


def test_online_two_processes_with_accumulation(online_run):
    output_dir, metrics = online_run
    record = final(metrics)
    assert record['num_processes'] == 2 and record['online'] is True
    assert record['global_step'] == 4
    train_terms = [r for r in metrics if r['kind'] == 'train']
    assert [r['global_step'] for r in train_terms] == [1, 2, 3, 4]
    assert {'student.task', 'student.kd', 'student.co', 'teacher.task', 'teacher.kd',
            'teacher.di'} <= set(train_terms[0])
    # linear decay over 4 optimiser steps, whatever the processes and accumulation
    assert [r['lr'] for r in train_terms] == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0])
    assert set(record['student_denoising_mse']) == {'t000-049', 't050-099', 'mean'}
    assert record['agreement_mse'] > 0 and record['fid'] is None
    assert (output_dir / 'validation' / 'step-000002.png').is_file()
    assert list((output_dir / 'logs').rglob('events.out.tfevents*'))
    # the final evaluation reaches TensorBoard too, its per-bucket MSE flattened
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = set()
    for events in (output_dir / 'logs').rglob('events.out.tfevents*'):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()['scalars'])
    assert {'final/student_denoising_mse/mean', 'final/teacher_denoising_mse/mean'} <= tags
    assert (output_dir / 'teacher' / 'config.json').is_file()


def test_checkpoints_total_limit_prunes(online_run):
    output_dir, _ = online_run
    names = sorted(p.name for p in output_dir.glob('checkpoint-*'))
    assert names == ['checkpoint-2', 'checkpoint-3', 'checkpoint-4']
    assert len(list((output_dir / 'checkpoint-4').glob('noise_generator_*.pt'))) == 2
    # diffusers-format networks in every checkpoint, as its examples save them: the last
    # checkpoint's unet_ema/ is the EMA student the run wrote to unet/ at the end
    from diffusers import UNet2DModel
    loaded = {name: UNet2DModel.from_pretrained(output_dir / 'checkpoint-4' / name)
              for name in ('unet', 'unet_ema')}
    assert {tuple(m.config.block_out_channels) for m in loaded.values()} == {(8, 16)}
    written = load_file(output_dir / 'unet' / 'diffusion_pytorch_model.safetensors')
    ema = loaded['unet_ema'].state_dict()
    assert ema.keys() == written.keys()
    assert all(torch.equal(ema[k], written[k]) for k in written)
    # unet/ is the trained student itself (the distiller's student.* weights), not its EMA
    model = load_file(output_dir / 'checkpoint-4' / 'model.safetensors')
    raw = loaded['unet'].state_dict()
    assert all(torch.equal(raw[k], model[f'student.{k}']) for k in raw)
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)


def test_resume_matches_uninterrupted(online_run, tiny_config, tmp_path):
    output_dir, _ = online_run
    # checkpoint-3 is mid-epoch (the second epoch, 2 of 3 micro-batches consumed)
    state = json.loads((output_dir / 'checkpoint-3' / 'training_state.json').read_text())
    assert (state['epoch'], state['batches_in_epoch']) == (2, 2)
    resumed = tmp_path / 'resumed'
    shutil.copytree(output_dir / 'checkpoint-3', resumed / 'checkpoint-3')
    metrics = launch(tiny_config, resumed, '--resume_from_checkpoint', 'latest')
    assert final(metrics)['num_processes'] == 2
    for name in ('unet/diffusion_pytorch_model.safetensors',
                 'teacher/diffusion_pytorch_model.safetensors',
                 'checkpoint-4/model.safetensors'):
        expected, got = load_file(output_dir / name), load_file(resumed / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name


def test_resume_applies_a_new_learning_rate_and_weight_decay(online_run, tiny_config, tmp_path):
    """load_state restores the earlier lr and weight decay; the ones given on resume win."""
    output_dir, _ = online_run
    resumed = tmp_path / 'resumed'
    shutil.copytree(output_dir / 'checkpoint-3', resumed / 'checkpoint-3')
    metrics = launch(tiny_config, resumed, '--resume_from_checkpoint', 'latest',
                     '--learning_rate', '2e-3', '--adam_weight_decay', '0.5',
                     '--max_train_steps', '5', '--validation_steps', '0')
    # linear decay to step 5, replayed from the new peak: 2e-3 * (1 - 4/5) at step 4
    lrs = {r['global_step']: r['lr'] for r in metrics if r['kind'] == 'train'}
    assert lrs[4] == pytest.approx(4e-4) and lrs[5] == pytest.approx(0.0)
    optimizer = torch.load(resumed / 'checkpoint-4' / 'optimizer.bin', weights_only=True)
    assert {g['weight_decay'] for g in optimizer['param_groups']} == {0.5}
    assert {g['initial_lr'] for g in optimizer['param_groups']} == {2e-3}
    log = (resumed / 'train.log').read_text()  # each change named by the flag that made it
    assert '--learning_rate: 0.001 (checkpoint) -> 0.002 (config)' in log, log[-2000:]
    assert '--adam_weight_decay: ' in log and 'optimizer.lr' not in log


def test_output_dir_is_a_ddpm_pipeline_of_the_student(online_run):
    from diffusers import DDPMPipeline
    output_dir, _ = online_run
    pipeline = DDPMPipeline.from_pretrained(output_dir)  # as train_unconditional.py's output
    assert tuple(pipeline.unet.config.block_out_channels) == (8, 16)  # the student
    images = pipeline(batch_size=2, num_inference_steps=2, output_type='np',
                      generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 8, 8, 3)


def test_offline_two_processes_frozen_teacher(tiny_config, tmp_path):
    from diffusers import UNet2DModel
    teacher = UNet2DModel(sample_size=8, block_out_channels=(16, 32), layers_per_block=1,
                          norm_num_groups=4, down_block_types=('DownBlock2D', 'DownBlock2D'),
                          up_block_types=('UpBlock2D', 'UpBlock2D'))
    # a pipeline folder, as diffusers' examples and this engine write it (a bare UNet folder
    # works too)
    from diffusers import DDPMPipeline, DDPMScheduler
    from distill.engines.diffusion.config import teacher_from_directory
    DDPMPipeline(unet=teacher, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(
        tmp_path / 'teacher')
    teacher.save_pretrained(tmp_path / 'bare')
    assert teacher_from_directory(str(tmp_path / 'teacher'))['pretrained'] == str(
        tmp_path / 'teacher' / 'unet')
    assert teacher_from_directory(str(tmp_path / 'bare'))['pretrained'] == str(tmp_path / 'bare')
    with pytest.raises(FileNotFoundError, match='neither a UNet folder'):
        teacher_from_directory(str(tmp_path))
    output_dir = tmp_path / 'offline'
    metrics = launch(tiny_config, output_dir, '--teacher_model_name_or_path',
                     str(tmp_path / 'teacher'), '--max_train_steps', '2',
                     '--checkpointing_steps', '0', '--validation_steps', '0')
    record = final(metrics)
    assert record['num_processes'] == 2 and record['online'] is False
    train_terms = [r for r in metrics if r['kind'] == 'train']
    assert len(train_terms) == 2
    assert {k for k in train_terms[0] if '.' in k} == {'student.task', 'student.kd',
                                                       'student.co'}
    assert not list(output_dir.glob('checkpoint-*')) and not (output_dir / 'teacher').exists()
    # the frozen teacher is unchanged: its held-out error equals a fresh evaluation's
    from distill.adapters.diffusers import DiffusionAdapter
    from distill.data.images import ShapesImages
    from distill.engines.diffusion.eval import denoising_mse
    images = torch.stack([ShapesImages(8, 8, seed=1)[i]['pixel_values'] for i in range(8)])
    tiny = DiffusionAdapter(noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100,
                                                 beta_schedule='linear'))
    expected = denoising_mse(teacher, tiny, images, num_buckets=2, seed=0)
    assert record['teacher_denoising_mse'] == pytest.approx(expected, rel=1e-5)


def write_images(folder, count, size=12):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = torch.randint(0, 256, (size, size + 4, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(index)).numpy()
        Image.fromarray(pixels).save(folder / f'image_{index}.png')


def test_image_folder_errors_name_the_culprit(tmp_path):
    from distill.data.images import ImageFolderImages
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='holds no images'):
        ImageFolderImages(tmp_path / 'empty', 8)
    write_images(tmp_path / 'mixed', 2)
    (tmp_path / 'mixed' / 'broken.png').write_bytes(b'not a png')
    dataset = ImageFolderImages(tmp_path / 'mixed', 8)
    good = dataset[dataset.files.index(tmp_path / 'mixed' / 'image_0.png')]['pixel_values']
    assert good.shape == (3, 8, 8) and -1 <= good.min() and good.max() <= 1
    with pytest.raises(ValueError, match='broken.png'):
        dataset[dataset.files.index(tmp_path / 'mixed' / 'broken.png')]


def test_plain_python_on_a_user_image_folder(tiny_config, tmp_path):
    write_images(tmp_path / 'images' / 'nested', 20)
    output_dir = tmp_path / 'run'
    from distill.models import build_model
    net = dict(type='tiny_cnn', num_classes=10, width=4, in_channels=1)
    torch.save(build_model(dict(net)).state_dict(), tmp_path / 'net.pth')
    feature_network = dict(model=net, checkpoint=str(tmp_path / 'net.pth'))
    env = {k: v for k, v in os.environ.items()  # a plain single-process run, whatever the
           if k not in ('LOCAL_RANK', 'RANK', 'WORLD_SIZE')}  # test process inherited
    env['OMP_NUM_THREADS'] = '1'
    result = run_python(
        [str(SCRIPT), str(tiny_config), '--output_dir', str(output_dir),
         '--train_data_dir', str(tmp_path / 'images'), '--num_epochs', '1',
         '--gradient_accumulation_steps', '1', '--save_model_epochs', '1',
         '--validation_steps', '0', '--resolution', '8', '--no-use_ema',
         '--dataloader_num_workers', '0', '--logger', 'tensorboard', '--logging_dir', 'tb',
         '--cfg-options', 'data.num_heldout=4', 'evaluation.fid_images=4',
         f'evaluation.feature_network={feature_network!r}'], env, REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    record = final(json.loads((output_dir / 'metrics.json').read_text()))
    # the FID of a feature network of the user's (distill.fid), both networks, labelled
    assert record['fid_images'] == 4 and 'penultimate features' in record['fid_network']
    assert record['student_fid'] > 0 and record['teacher_fid'] > 0
    assert "not Inception's" in result.stdout + result.stderr
    assert record['num_processes'] == 1 and record['heldout_images'] == 4
    assert record['global_step'] == 2  # one epoch: 16 training images, batches of 8
    assert [p.name for p in output_dir.glob('checkpoint-*')] == ['checkpoint-2']  # per epoch
    assert (output_dir / 'unet' / 'diffusion_pytorch_model.safetensors').is_file()
    assert (output_dir / 'model_index.json').is_file() and (output_dir / 'tb').is_dir()
