"""Diffusion distillation on the trainer core (``distill.engines.core.trainer``), shaped like
diffusers' ``examples/unconditional_image_generation/train_unconditional.py``.

The loop, gradient accumulation, NaN guard, lr schedule, ``checkpoint-N`` folders (rotation,
checksums, resume), ``metrics.json``, trackers, progress bar and seeding are the core's, shared
with classification, and so is the resume's config check (``output_dir/config.py`` and its
``config.resumed-at-N.py``, ``config_diff``). What is diffusion's own is ``DiffusionTask``:

* ``train_loader``: this process's share of the images in an order that is a function of
  ``(seed, epoch)``; at the start of each epoch the per-process generator of noise, timesteps
  and flips is seeded by ``derive_seed(seed, epoch, 'noise', rank)`` (the core's rule), and it
  is saved in every checkpoint (``noise_generator_{rank}.pt``) for a mid-epoch resume;
* ``prepare_batch``: to the device, flip, encode to latents (optional VAE), add conditioning;
* ``after_optimizer_step``: the student's EMA (saved as ``ema.pt``);
* ``evaluate`` (every ``validation_steps``): a DDIM grid, teacher row over student row from the
  same noise (PNG and TensorBoard), and their agreement;
* ``finish``: denoising MSE per timestep bucket, agreement, FID if possible, into the final
  record, and ``output_dir`` made a pipeline folder of the (EMA) student
  (``diffusion_output.save_student_pipeline``; ``teacher/`` beside it when online).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distill import build_distiller
from distill.adapters.diffusers import DiffusionAdapter, model_sample_size
from distill.data.images import build_image_datasets
from distill.distillers.base import build_network
from distill.engines.core import checkpoints as ckpt
from distill.engines.diffusion.conditioning import Conditioning
from distill.engines.diffusion.config import OPTIMIZER_FLAGS, lr_schedule, optimizer_config
from distill.engines.diffusion.eval import (ddim_sample, denoising_mse, fid, image_grid,
                                           teacher_agreement)
from distill.engines.diffusion.latents import LatentCodec
from distill.engines.diffusion.output import (CONFIG_DUMP, RESUME_RULES, check_config_dump,
                                             check_fresh_output_dir, run_inputs,
                                             save_student_pipeline)
from distill.engines.diffusion.randomness import EpochShuffleSampler, random_flip
from distill.engines.diffusion.grad_strides import standard_grad_strides
from distill.engines.core.runtime import log_to, make_accelerator
from distill.engines.core.config_diff import RunConfig
from distill.engines.core.data_order import derive_seed
from distill.engines.core.task import Task, TrainSettings, flat_config
from distill.engines.core.trainer import Trainer
from distill.engines.core.work_dir_lock import hold_work_dir

WEIGHT_DTYPES = dict(fp16=torch.float16, bf16=torch.bfloat16)


class DiffusionTask(Task):
    """The networks, data and artefacts of one diffusion run; the hooks of the core."""

    def __init__(self, cfg, accelerator):
        self.cfg, self.accelerator = cfg, accelerator
        self.output_dir = Path(cfg.output_dir)
        self.main = accelerator.is_main_process
        self.build_models()
        self.train_set, self.heldout_set = build_image_datasets(dict(cfg.data),
                                                                cfg.get('train_data_dir'))
        # an image folder too small to split holds nothing out (ImageFolderImages.split)
        self.heldout_is_training = self.heldout_set is self.train_set
        self.noise_generator = torch.Generator()  # noise, timesteps and flips
        self.adapter.generator = self.noise_generator
        self.conditioning = Conditioning(cfg.get('conditioning'), self.student)
        self.codec = LatentCodec(cfg.get('vae'), self.weight_dtype)
        self.step_times, self.step_start = [], None

    def build_models(self):
        cfg = self.cfg
        student = build_network(dict(cfg.student))
        self.adapter = DiffusionAdapter(noise_scheduler=dict(cfg.noise_scheduler),
                                        probe_input_size=model_sample_size(student))
        # the teacher as a config: the distiller knows whether it brings weights (pretrained)
        self.distiller = build_distiller(dict(cfg.distiller, student=student,
                                              teacher=dict(cfg.teacher), adapter=self.adapter))
        self.student, self.teacher = student, self.distiller.teacher
        self.online = self.distiller.online
        self.weight_dtype = WEIGHT_DTYPES.get(cfg.mixed_precision, torch.float32)
        if not self.online and self.weight_dtype != torch.float32:
            self.teacher.to(self.weight_dtype)  # frozen: may run in half; trainees stay fp32
        self.ema = None
        if cfg.use_ema:
            from diffusers.training_utils import EMAModel
            self.ema = EMAModel(student.parameters(), decay=cfg.ema_max_decay,
                                use_ema_warmup=True, inv_gamma=cfg.ema_inv_gamma,
                                power=cfg.ema_power, model_cls=type(student),
                                model_config=student.config)

    # ------------------------------------------------------------------ the core's hooks
    def sampler(self, epoch: int) -> EpochShuffleSampler:
        return EpochShuffleSampler(len(self.train_set), seed=self.cfg.seed, epoch=epoch,
                                   batch_size=self.cfg.train_batch_size,
                                   rank=self.accelerator.process_index,
                                   num_processes=self.accelerator.num_processes)

    def batches_per_epoch(self) -> int:
        return len(self.sampler(1)) // self.cfg.train_batch_size

    def train_loader(self, trainer, epoch: int):
        if trainer.batches_in_epoch == 0:  # a new epoch (a resumed one keeps the restored state)
            self.noise_generator.manual_seed(derive_seed(self.cfg.seed, epoch, 'noise',
                                                         trainer.rank))
        return DataLoader(self.train_set, batch_size=self.cfg.train_batch_size,
                          sampler=self.sampler(epoch), drop_last=True,
                          num_workers=self.cfg.get('dataloader_num_workers', 0))

    def prepare_batch(self, trainer, batch):
        """To the device, flip (from this process's generator), encode, add conditioning."""
        if self.step_start is None:
            self.step_start = time.perf_counter()
        pixel_values = batch['pixel_values'].to(self.accelerator.device)
        if self.cfg.data.get('random_flip', True):
            pixel_values = random_flip(pixel_values, self.noise_generator)
        batch = dict(pixel_values=self.codec.encode(pixel_values))
        states = self.conditioning.batch(pixel_values.shape[0], pixel_values.device)
        if states is not None:
            batch['encoder_hidden_states'] = states
        return batch

    def after_optimizer_step(self, trainer) -> None:
        if self.ema is not None:
            self.ema.step(self.student.parameters())
        # from the step's first batch to its end: the loop, not validation nor checkpoints
        self.step_times.append(time.perf_counter() - self.step_start)
        self.step_start = None

    def export_checkpoint(self, trainer, folder) -> None:
        """``unet/`` (the student's weights) and ``unet_ema/`` (its EMA), as diffusers'
        training examples save each checkpoint: ``UNet2DModel.from_pretrained`` folders."""
        student = self.accelerator.unwrap_model(self.student)
        student.save_pretrained(Path(folder) / 'unet', safe_serialization=True)
        if self.ema is not None:
            with self.ema_weights(True):
                student.save_pretrained(Path(folder) / 'unet_ema', safe_serialization=True)

    def main_states(self, trainer) -> dict:
        return {'ema': self.ema.state_dict()} if self.ema is not None else {}

    def process_states(self, trainer) -> dict:
        return {'noise_generator': self.noise_generator.get_state()}

    def load_states(self, trainer, main: dict, per_process: dict) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(main['ema'])
            self.ema.to(self.accelerator.device)
        self.noise_generator.set_state(per_process['noise_generator'])

    def evaluate(self, trainer) -> dict:
        """Every ``validation_steps``: the teacher-over-student DDIM grid and the agreement."""
        cfg, record = self.cfg, {}
        if self.main:
            samples = self.sample_pair(cfg.num_validation_images, cfg.num_inference_steps,
                                       seed=cfg.seed)
            grid = image_grid([samples['teacher'], samples['student']],
                              labels=['teacher', 'student (EMA)' if self.ema else 'student'])
            folder = self.output_dir / 'validation'
            folder.mkdir(parents=True, exist_ok=True)
            grid.save(folder / f'step-{trainer.global_step:06d}.png')
            if 'tensorboard' in (cfg.get('report_to') or ''):
                import numpy as np
                tracker = self.accelerator.get_tracker('tensorboard', unwrap=True)
                tracker.add_image('validation/teacher_over_student', np.asarray(grid),
                                  trainer.global_step, dataformats='HWC')
            record = {'kind': 'validation',
                      'val/agreement_mse': teacher_agreement(samples['teacher'],
                                                             samples['student'])}
        self.accelerator.wait_for_everyone()
        return record

    def data_summary(self) -> str:
        images = (f'{len(self.train_set)} training images, held out: the same (held-out = '
                  f'training)' if self.heldout_is_training else
                  f'{len(self.train_set)} training and {len(self.heldout_set)} held-out images')
        return f'{images}, batches of {self.cfg.train_batch_size} per process'

    def describe(self, record: dict) -> str:
        """The task's part of the core's log line of a validation or final record."""
        parts = []
        if 'val/agreement_mse' in record:
            parts.append(f"teacher-student agreement MSE {record['val/agreement_mse']:.4g}")
        if isinstance(record.get('student_denoising_mse'), dict):
            parts.append(f"denoising MSE student {record['student_denoising_mse']['mean']:.4g}"
                         f" teacher {record['teacher_denoising_mse']['mean']:.4g}")
        if 'student_fid' in record:  # labelled: not the Inception FID of papers
            parts.append(f"FID ({record['fid_network']}; not Inception's) student "
                         f"{record['student_fid']:.4g} teacher {record['teacher_fid']:.4g}")
        return ' | '.join(parts)

    def finish(self, trainer) -> dict | None:
        if not self.main:
            return None
        cfg, times = self.cfg, self.step_times
        record = dict(kind='final', num_processes=self.accelerator.num_processes,
                      online=self.online, distiller=cfg.distiller['type'],
                      heldout_is_training=self.heldout_is_training,
                      mean_step_time_s=sum(times) / len(times) if times else None,
                      median_step_time_s=sorted(times)[len(times) // 2] if times else None)
        if not cfg.evaluation.get('skip', False):
            record.update(self.final_evaluation())
        student = self.accelerator.unwrap_model(self.student)
        with self.ema_weights(True):  # the saved student is the EMA one, as in diffusers
            pipeline = save_student_pipeline(
                self.output_dir, student, self.adapter.noise_scheduler, self.codec.vae is not None,
                (cfg.get('vae') or {}).get('pretrained'))
        if self.online:
            self.teacher.save_pretrained(self.output_dir / 'teacher', safe_serialization=True)
        where = (f'a {pipeline} folder ({pipeline}.from_pretrained({str(self.output_dir)!r}))'
                 if pipeline else f"{self.output_dir / 'unet'} and "
                                  f"{self.output_dir / 'scheduler'}")
        self.accelerator.print(f'student written to {where}; metrics in '
                               f"{self.output_dir / 'metrics.json'}")
        return record

    # ------------------------------------------------------------------ sampling, evaluation
    def sample_pair(self, count: int, num_inference_steps: int, seed: int):
        """DDIM samples of teacher and student (its EMA weights) from the same noise."""
        channels = self.student.config.in_channels
        size = model_sample_size(self.student)
        noise = torch.randn(count, channels, size, size, generator=torch.Generator()
                            .manual_seed(seed))
        states = self.conditioning.batch(1, self.accelerator.device)
        config = self.adapter.noise_scheduler.config
        samples = {}
        for name, model in (('teacher', self.teacher), ('student', self.student)):
            with self.ema_weights(name == 'student'):
                samples[name] = self.codec.decode(ddim_sample(
                    model, config, noise, num_inference_steps, states, self.adapter))
        return samples

    def ema_weights(self, active: bool):
        if not active or self.ema is None:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def swapped():
            self.ema.store(self.student.parameters())
            self.ema.copy_to(self.student.parameters())
            try:
                yield
            finally:
                self.ema.restore(self.student.parameters())
        return swapped()

    def final_evaluation(self) -> dict:
        """Denoising MSE per timestep bucket (held-out), teacher agreement, FID if possible."""
        cfg, evaluation = self.cfg, dict(self.cfg.evaluation)
        count = min(int(evaluation.get('num_images', 64)), len(self.heldout_set))
        images = torch.stack([self.heldout_set[i]['pixel_values'] for i in range(count)])
        latents = self.codec.encode(images.to(self.accelerator.device))
        states = self.conditioning.batch(1, self.accelerator.device)
        options = dict(num_buckets=evaluation.get('num_buckets', 4), seed=cfg.seed,
                       encoder_hidden_states=states)
        result = dict(heldout_images=count)
        result['teacher_denoising_mse'] = denoising_mse(self.teacher, self.adapter, latents,
                                                        **options)
        with self.ema_weights(True):
            result['student_denoising_mse'] = denoising_mse(self.student, self.adapter,
                                                            latents, **options)
        samples = self.sample_pair(evaluation.get('num_samples', 16),
                                   evaluation.get('num_inference_steps', cfg.num_inference_steps),
                                   seed=cfg.seed + 1)
        result['agreement_mse'] = teacher_agreement(samples['teacher'], samples['student'])
        if evaluation.get('feature_network'):
            result.update(self.feature_fids(evaluation))
        result['fid'], reason = fid(images, samples['student'],
                                    evaluation.get('inception_weights'))
        if reason:
            result['fid_skipped'] = reason
            if not evaluation.get('feature_network'):
                self.accelerator.print(f'FID skipped: {reason}')
        return result

    def feature_fids(self, evaluation: dict, batch_size: int = 250) -> dict:
        """``student_fid`` and ``teacher_fid`` in the space of ``evaluation.feature_network``
        (``distill.fid``: not Inception's FID): ``fid_images`` DDIM samples of each network
        from the same noise against as many held-out images."""
        from distill.fid import describe, feature_fid, load_feature_network
        spec = dict(evaluation['feature_network'])
        count = min(int(evaluation.get('fid_images', 1000)), len(self.heldout_set))
        real = torch.stack([self.heldout_set[i]['pixel_values'] for i in range(count)])
        steps = evaluation.get('num_inference_steps', self.cfg.num_inference_steps)
        features = load_feature_network(spec)
        generated = {'teacher': [], 'student': []}
        for start in range(0, count, batch_size):  # batches bound the memory of sampling
            batch = self.sample_pair(min(batch_size, count - start), steps,
                                     seed=self.cfg.seed + 2 + start)
            for name, images in batch.items():
                generated[name].append(images.cpu())
        result = {f'{name}_fid': feature_fid(real, torch.cat(images), features)
                  for name, images in generated.items()}
        result.update(fid_images=count, fid_network=describe(spec))
        return result


def find_resume(cfg, accelerator) -> Path | None:
    """The checkpoint ``--resume_from_checkpoint`` selects (None: a fresh run), after removing
    what a save killed mid-write left. 'latest' with no complete checkpoint is a fresh run."""
    flag, output_dir = cfg.get('resume_from_checkpoint'), Path(cfg.output_dir)
    if flag and accelerator.is_main_process:
        ckpt.remove_orphan_temporaries(output_dir)
    accelerator.wait_for_everyone()
    found = ckpt.find_resume_checkpoint(output_dir, flag)
    if flag and found is None:
        accelerator.print(f'--resume_from_checkpoint {flag}: no complete checkpoint in '
                          f'{output_dir}: starting a new run')
    return None if found is None else found[0]


def train(cfg, config_file=None) -> dict | None:
    """Run the training described by an mmengine ``Config`` (read from ``config_file``); the
    final record on the main process (None on the others). The main process holds the output
    dir's lock (``work_dir_lock``) from before its first write to the end."""
    accelerator = make_accelerator(cfg.output_dir, cfg.mixed_precision,
                                   cfg.gradient_accumulation_steps,
                                   log_with=cfg.get('report_to') or 'none',
                                   logging_dir=cfg.get('logging_dir', 'logs'))
    inputs = run_inputs(cfg, config_file)
    check_config_dump(cfg.output_dir, inputs)
    lock = hold_work_dir(cfg.output_dir, accelerator.is_main_process)
    try:
        return _train(cfg, accelerator, inputs)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, accelerator, inputs: dict) -> dict | None:
    from accelerate.utils import set_seed
    resume = find_resume(cfg, accelerator)
    # a fresh run (also 'latest' with no checkpoint) does not write over an earlier one:
    # refused before anything is written, or (overwrite_output_dir) deleted once the networks
    # are built; so a new run never appends to an earlier run's metrics.json
    overwrite = resume is None and bool(cfg.get('overwrite_output_dir'))
    if resume is None and not overwrite:
        check_fresh_output_dir(cfg.output_dir, resuming=bool(cfg.get('resume_from_checkpoint')))
    set_seed(cfg.seed)  # the same on every process: identical initial weights and EMA
    task = DiffusionTask(cfg, accelerator)
    if overwrite:
        check_fresh_output_dir(cfg.output_dir, cfg.get('logging_dir', 'logs'), overwrite=True,
                               delete=accelerator.is_main_process, inputs=inputs)
        accelerator.wait_for_everyone()

    batches = task.batches_per_epoch()
    if batches < cfg.gradient_accumulation_steps:
        raise ValueError(f'{len(task.train_set)} training images give {batches} batches per '
                         f'process per epoch, fewer than gradient_accumulation_steps='
                         f'{cfg.gradient_accumulation_steps}: use more images or smaller '
                         f'train_batch_size')
    updates_per_epoch = math.ceil(batches / cfg.gradient_accumulation_steps)
    if cfg.get('num_epochs'):  # diffusers' --num_epochs: optimiser steps of that many
        cfg.max_train_steps = cfg.num_epochs * updates_per_epoch
    # diffusers' --save_images_epochs / --save_model_epochs, as steps of the trainer core
    if cfg.get('validation_epochs'):
        cfg.validation_steps = cfg.validation_epochs * updates_per_epoch
    if cfg.get('checkpointing_epochs'):
        cfg.checkpointing_steps = cfg.checkpointing_epochs * updates_per_epoch
    if accelerator.num_processes > 1:
        standard_grad_strides(p for p in task.distiller.parameters() if p.requires_grad)
    settings = TrainSettings(
        seed=cfg.seed, max_steps=cfg.max_train_steps, grad_clip=cfg.max_grad_norm or None,
        schedule_by_epoch=False, checkpoint_every_epochs=None,
        checkpoint_every_steps=cfg.checkpointing_steps or None,
        keep_checkpoints=cfg.checkpoints_total_limit, eval_every_epochs=None,
        eval_every_steps=cfg.validation_steps or None, log_every_steps=1,
        metrics_every_steps=cfg.get('logging_steps', 50), close_process_group=True,
        project_name=cfg.get('tracker_project_name', 'distill-diffusion'),
        optimizer_option_names=OPTIMIZER_FLAGS)
    run_config = RunConfig(cfg, Path(cfg.output_dir), RESUME_RULES, CONFIG_DUMP)
    trainer = Trainer(task, task.distiller, accelerator, settings, cfg.output_dir,
                      optimizer_config(cfg),
                      lr_schedule(cfg.lr_scheduler, cfg.lr_warmup_steps, cfg.max_train_steps),
                      tracker_config=flat_config(cfg))
    trainer.run_config = run_config
    if task.ema is not None:
        task.ema.to(accelerator.device)
    task.codec.to(accelerator.device)
    with log_to(cfg.output_dir, accelerator.is_main_process):
        if task.heldout_is_training and accelerator.is_main_process:
            logging.getLogger('distill.diffusion').warning(
                'held-out = training: the image folder has %d images, fewer than twice '
                'data.num_heldout=%d, so the held-out set is the training set and the final '
                "record's held-out metrics measure training images (metrics.json: "
                'heldout_is_training=true). Lower data.num_heldout or add images',
                len(task.train_set), int(cfg.data.get('num_heldout', 64)))
        if resume is not None:
            trainer.resume(resume)
        # config.py of a fresh run; config.resumed-at-N.py of a resumed one that changes it
        run_config.write(accelerator.is_main_process,
                         logging.getLogger('distill.trainer').warning)
        records = trainer.run()
    finals = [r for r in records if r.get('kind') == 'final']
    return finals[-1] if accelerator.is_main_process and finals else None
