"""Diffusion distillation on Accelerate, shaped like diffusers'
``examples/unconditional_image_generation/train_unconditional.py``.

One ``nn.Module``, the distiller (student, teacher, connectors), is prepared by Accelerate with
the optimiser, data loader and lr schedule. Each optimiser step: ``distiller(batch)`` -> named
loss terms -> ``check_finite_terms`` -> one backward. Then EMA of the student, logging, every
``checkpointing_steps`` a ``checkpoint-N`` (on every process), every ``validation_steps`` a
DDIM grid, teacher row over student row from the same noise. At the end: evaluation into
``metrics.json``, and ``output_dir`` made a ``DDPMPipeline`` folder of the (EMA) student
(``model_index.json``, ``unet/``, ``scheduler/``; ``teacher/`` beside them when online).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from distill import build_distiller
from distill.adapters.diffusers import DiffusionAdapter, model_sample_size
from distill.distillers.base import build_network
from distill.engines.diffusion_checkpoint import (apply_run_hyperparameters,
                                                 check_fresh_output_dir, load_checkpoint_dir,
                                                 remove_orphan_temporaries, resolve_resume,
                                                 save_checkpoint)
from distill.data.images import build_image_datasets
from distill.engines.diffusion_conditioning import Conditioning
from distill.engines.diffusion_config import config_for_trackers
from distill.engines.diffusion_eval import (ddim_sample, denoising_mse, fid, image_grid,
                                           teacher_agreement)
from distill.engines.diffusion_latents import LatentCodec
from distill.engines.diffusion_randomness import EpochShuffleSampler, random_flip
from distill.engines.grad_strides import standard_grad_strides
from distill.engines.guards import check_finite_state, check_finite_terms
from distill.engines.metrics import MetricsFile

WEIGHT_DTYPES = dict(fp16=torch.float16, bf16=torch.bfloat16)


class DiffusionRun:
    """State of one run; ``train()`` does everything and returns the final metrics record."""

    def __init__(self, cfg):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed
        self.cfg = cfg
        self.output_dir = Path(cfg.output_dir)
        report_to = cfg.get('report_to') or 'none'
        self.accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with=None if report_to == 'none' else report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir),
                logging_dir=str(self.output_dir / cfg.get('logging_dir', 'logs'))))
        self.main = self.accelerator.is_main_process
        # the checkpoint to resume from, after removing what a save killed mid-write left
        resume_flag = cfg.get('resume_from_checkpoint')
        if resume_flag and self.main:
            remove_orphan_temporaries(self.output_dir)
        self.accelerator.wait_for_everyone()
        self.resume = resolve_resume(self.output_dir, resume_flag)
        if resume_flag and self.resume is None:
            self.accelerator.print(f'--resume_from_checkpoint {resume_flag}: no complete '
                                   f'checkpoint in {self.output_dir}: starting a new run')
        # a fresh run (also 'latest' with no checkpoint) does not write over an earlier one:
        # refused before anything is written, or (overwrite_output_dir) deleted once the
        # networks are built; so a new run never appends to an earlier run's metrics.json
        fresh = self.resume is None
        overwrite = fresh and bool(cfg.get('overwrite_output_dir'))
        if fresh and not overwrite:
            check_fresh_output_dir(self.output_dir, resuming=bool(resume_flag))
        set_seed(cfg.seed)  # the same on every process: identical initial weights and EMA
        self.build_models()
        if overwrite:
            check_fresh_output_dir(self.output_dir, cfg.get('logging_dir', 'logs'),
                                   overwrite=True, delete=self.main)
            self.accelerator.wait_for_everyone()
        # noise, timesteps and flips: a CPU generator per process, saved in checkpoints
        self.noise_generator = torch.Generator().manual_seed(
            cfg.seed * 1000 + self.accelerator.process_index)
        self.adapter.generator = self.noise_generator
        self.conditioning = Conditioning(cfg.get('conditioning'), self.student)
        self.codec = LatentCodec(cfg.get('vae'), self.weight_dtype)
        self.metrics = MetricsFile(self.output_dir / 'metrics.json') if self.main else None

    # ------------------------------------------------------------------ construction
    def build_models(self):
        cfg = self.cfg
        student = build_network(dict(cfg.student))
        teacher = build_network(dict(cfg.teacher))
        self.adapter = DiffusionAdapter(noise_scheduler=dict(cfg.noise_scheduler),
                                        input_size=model_sample_size(student))
        self.distiller = build_distiller(dict(cfg.distiller, student=student, teacher=teacher,
                                              adapter=self.adapter))
        self.student, self.teacher = student, teacher
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

    def build_loader(self):
        cfg = self.cfg
        train_set, heldout_set = build_image_datasets(dict(cfg.data), cfg.get('train_data_dir'))
        self.heldout_set = heldout_set
        self.sampler = EpochShuffleSampler(len(train_set), seed=cfg.seed)
        return DataLoader(train_set, batch_size=cfg.train_batch_size, sampler=self.sampler,
                          num_workers=cfg.get('dataloader_num_workers', 0), drop_last=True)

    # ------------------------------------------------------------------ training
    def train(self) -> dict:
        cfg, accelerator = self.cfg, self.accelerator
        from diffusers.optimization import get_scheduler
        params = [p for p in self.distiller.parameters() if p.requires_grad]
        if accelerator.num_processes > 1:
            standard_grad_strides(params)
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate,
                                      betas=(cfg.adam_beta1, cfg.adam_beta2),
                                      weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        loader = accelerator.prepare(self.build_loader())  # its per-process length first
        if len(loader) < cfg.gradient_accumulation_steps:
            raise ValueError(f'{len(self.sampler)} training images give {len(loader)} batches '
                             f'per process per epoch, fewer than gradient_accumulation_steps='
                             f'{cfg.gradient_accumulation_steps}: use more images or smaller '
                             f'train_batch_size')
        if cfg.get('num_epochs'):  # diffusers' --num_epochs: optimiser steps of that many
            cfg.max_train_steps = cfg.num_epochs * math.ceil(
                len(loader) / cfg.gradient_accumulation_steps)
        # the prepared schedule steps once per process at each optimiser step: scale by them
        lr_scheduler = get_scheduler(
            cfg.lr_scheduler, optimizer,
            num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=cfg.max_train_steps * accelerator.num_processes)
        distiller, optimizer, lr_scheduler = accelerator.prepare(
            self.distiller, optimizer, lr_scheduler)
        if self.ema is not None:
            self.ema.to(accelerator.device)
        self.codec.to(accelerator.device)
        if accelerator.log_with:
            accelerator.init_trackers(cfg.get('tracker_project_name', 'distill-diffusion'),
                                      config=config_for_trackers(cfg))

        global_step, first_epoch, skip_batches = 0, 0, 0
        resume = self.resume
        if resume is not None:
            accelerator.print(f'resuming from {resume}')
            state = load_checkpoint_dir(accelerator, resume, self.noise_generator, self.ema)
            # the restored optimiser state holds the earlier run's lr and weight decay: this
            # run's values (config file, --cfg-options, flags) are put on top, and said
            for note in apply_run_hyperparameters(optimizer, lr_scheduler, dict(
                    learning_rate=cfg.learning_rate, adam_weight_decay=cfg.adam_weight_decay,
                    adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
                    adam_epsilon=cfg.adam_epsilon)):
                accelerator.print(f'{resume.name}: {note}')
            if self.ema is not None:
                self.ema.to(accelerator.device)
            global_step, first_epoch = state['global_step'], state['epoch']
            skip_batches = state['batches_in_epoch']
            if skip_batches >= len(loader):  # saved at the end of an epoch
                first_epoch, skip_batches = first_epoch + 1, 0
            if self.main:
                self.metrics.truncate('step', global_step)

        from tqdm.auto import tqdm
        progress = tqdm(total=cfg.max_train_steps, initial=global_step, desc='steps',
                        disable=not self.main)
        step_times, running, micro_batches = [], {}, 0
        step_start = time.perf_counter()
        epoch = first_epoch
        while global_step < cfg.max_train_steps:
            epoch_loader = loader
            if epoch == first_epoch and skip_batches:
                epoch_loader = accelerator.skip_first_batches(loader, skip_batches)
            epoch_loader.set_epoch(epoch)  # accelerate's iteration count, then ours:
            self.sampler.set_epoch(epoch)  # the order is a function of (seed, epoch)
            batches_in_epoch = skip_batches if epoch == first_epoch else 0
            for batch in epoch_loader:
                batches_in_epoch += 1
                with accelerator.accumulate(distiller):
                    terms = distiller(self.make_batch(batch))
                    values = check_finite_terms(terms, global_step + 1, epoch)
                    accelerator.backward(sum(terms.values()))
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                for name, value in values.items():
                    running[name] = running.get(name, 0.0) + value
                micro_batches += 1
                if not accelerator.sync_gradients:
                    continue
                global_step += 1
                # weights and buffers finite after the step: no checkpoint-N from inf state
                check_finite_state(accelerator.unwrap_model(distiller), global_step, epoch,
                                   values, reduce=(lambda t: accelerator.reduce(t, 'sum'))
                                   if accelerator.num_processes > 1 else None)
                if self.ema is not None:
                    self.ema.step(self.student.parameters())
                self.distiller.set_progress(global_step / cfg.max_train_steps)
                step_times.append(time.perf_counter() - step_start)
                logs = {name: total / micro_batches for name, total in running.items()}
                logs['loss'] = sum(logs.values())
                logs['lr'] = lr_scheduler.get_last_lr()[0]
                running, micro_batches = {}, 0
                accelerator.log(logs, step=global_step)
                progress.update(1)
                progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                if self.main and global_step % cfg.get('logging_steps', 50) == 0:
                    self.metrics.append(dict(step=global_step, kind='train', **logs))
                if cfg.checkpointing_steps and global_step % cfg.checkpointing_steps == 0:
                    save_checkpoint(accelerator, self.output_dir, global_step, epoch,
                                    batches_in_epoch, self.noise_generator, self.ema,
                                    cfg.checkpoints_total_limit)
                if cfg.validation_steps and global_step % cfg.validation_steps == 0:
                    self.validate(global_step, lr=logs['lr'])
                step_start = time.perf_counter()
                if global_step >= cfg.max_train_steps:
                    break
            epoch += 1
        progress.close()
        accelerator.wait_for_everyone()
        record = None
        if self.main:
            record = self.finish(global_step, step_times)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return record

    def make_batch(self, batch):
        """Flip (from this process's generator), encode to latents, add conditioning."""
        pixel_values = batch['pixel_values']
        if self.cfg.data.get('random_flip', True):
            pixel_values = random_flip(pixel_values, self.noise_generator)
        batch = dict(pixel_values=self.codec.encode(pixel_values))
        states = self.conditioning.batch(pixel_values.shape[0], pixel_values.device)
        if states is not None:
            batch['encoder_hidden_states'] = states
        return batch

    # ------------------------------------------------------------------ validation, end
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
        import contextlib
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

    def validate(self, step: int, lr: float | None = None) -> None:
        cfg = self.cfg
        if self.main:
            samples = self.sample_pair(cfg.num_validation_images, cfg.num_inference_steps,
                                       seed=cfg.seed)
            grid = image_grid([samples['teacher'], samples['student']])
            folder = self.output_dir / 'validation'
            folder.mkdir(parents=True, exist_ok=True)
            grid.save(folder / f'step-{step:06d}.png')
            if 'tensorboard' in (cfg.get('report_to') or ''):
                import numpy as np
                tracker = self.accelerator.get_tracker('tensorboard', unwrap=True)
                tracker.add_image('validation/teacher_over_student', np.asarray(grid), step,
                                  dataformats='HWC')
            agreement = teacher_agreement(samples['teacher'], samples['student'])
            self.accelerator.log({'val/agreement_mse': agreement}, step=step)
            self.metrics.append(dict(step=step, kind='validation', agreement_mse=agreement,
                                     lr=lr))
        self.accelerator.wait_for_everyone()

    def evaluate(self) -> dict:
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
        result['fid'], reason = fid(images, samples['student'],
                                    evaluation.get('inception_weights'))
        if reason:
            result['fid_skipped'] = reason
            self.accelerator.print(f'FID skipped: {reason}')
        return result

    def finish(self, global_step: int, step_times: list[float]) -> dict:
        cfg = self.cfg
        record = dict(step=global_step, kind='final', num_processes=self.accelerator.num_processes,
                      online=self.online, distiller=cfg.distiller['type'],
                      mean_step_time_s=(sum(step_times) / len(step_times)) if step_times
                      else None,
                      median_step_time_s=(sorted(step_times)[len(step_times) // 2]
                                          if step_times else None))
        if not cfg.evaluation.get('skip', False):
            record.update(self.evaluate())
        self.metrics.append(record)
        student = self.accelerator.unwrap_model(self.student)
        with self.ema_weights(True):  # the saved student is the EMA one, as in diffusers
            pipeline = save_student_pipeline(self.output_dir, student,
                                             self.adapter.noise_scheduler,
                                             self.codec.vae is not None)
        if self.online:
            self.teacher.save_pretrained(self.output_dir / 'teacher', safe_serialization=True)
        where = (f'a {pipeline} folder ({pipeline}.from_pretrained({str(self.output_dir)!r}))'
                 if pipeline else f"{self.output_dir / 'unet'} and "
                                  f"{self.output_dir / 'scheduler'}")
        self.accelerator.print(f'student written to {where}; metrics in '
                               f"{self.output_dir / 'metrics.json'}")
        return record


def save_student_pipeline(output_dir, student, scheduler, latent: bool) -> str | None:
    """``output_dir`` becomes a ``DDPMPipeline.from_pretrained`` folder (``model_index.json``,
    ``unet/``, ``scheduler/``) for a pixel-space unconditional student, as diffusers'
    train_unconditional.py writes; returns the pipeline's name. A latent or conditional
    student needs the teacher pipeline's VAE / text encoder: ``unet/`` and ``scheduler/`` are
    written for it, to pass as ``unet=`` to that pipeline's ``from_pretrained``; returns None."""
    from diffusers import DDPMPipeline, UNet2DModel
    output_dir = Path(output_dir)
    if isinstance(student, UNet2DModel) and not latent:
        DDPMPipeline(unet=student, scheduler=scheduler).save_pretrained(
            output_dir, safe_serialization=True)
        return 'DDPMPipeline'
    student.save_pretrained(output_dir / 'unet', safe_serialization=True)
    scheduler.save_pretrained(output_dir / 'scheduler')
    return None


def train(cfg) -> dict | None:
    """Run the training described by an mmengine ``Config``; the final record on the main
    process (None on the others)."""
    return DiffusionRun(cfg).train()
