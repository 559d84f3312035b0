"""What a diffusion run leaves in ``output_dir`` besides the trainer core's ``checkpoint-N``
folders and ``metrics.json`` (``distill.engines.core.checkpoints``, ``trainer``): the student as a
pipeline folder, and the rule that a fresh run does not write over an earlier one.

* ``check_fresh_output_dir``: a fresh run (no ``--resume_from_checkpoint``, or ``latest`` with
  no complete checkpoint) refuses an ``output_dir`` holding an earlier run, naming what is
  there and the flags, unless ``--overwrite_output_dir``, which deletes that run (and its
  ``logging_dir``) and nothing else, never one of the run's inputs (``run_inputs``: a teacher
  read from ``output_dir/teacher``). The core's ``check_fresh_work_dir`` with diffusers' flag
  names; TensorBoard logs alone (a run that failed at its first step) are no earlier run.
* ``save_student_pipeline``: ``output_dir`` as diffusers' training examples leave it.
* ``config.py``: the config the run ran with (defaults and flags merged; a resume that changes
  it writes ``config.resumed-at-N.py`` beside it, ``distill.engines.core.config_diff``).
"""
from __future__ import annotations

import logging
from pathlib import Path

from distill.engines.core.checkpoints import check_fresh_work_dir
from distill.engines.core.config_diff import NOT_ARCHITECTURE, ResumeRules, record_pattern
from distill.engines.core.targets import check_output

logger = logging.getLogger(__name__)

#: the run's config, as it ran (a resume that changes it adds config.resumed-at-N.py)
CONFIG_DUMP = 'config.py'
#: what a resume may change (config_diff): not the UNets (whose ``pretrained`` folder gives the
#: architecture too); the shapes data's ``num_classes`` is data, not a network's
RESUME_RULES = ResumeRules(
    networks=('student', 'teacher'),
    ignored=('output_dir', 'resume_from_checkpoint', 'overwrite_output_dir'),
    not_architecture=tuple(k for k in NOT_ARCHITECTURE if k != 'pretrained'), class_counts=(),
    fresh_hint='start a fresh run (--overwrite_output_dir, or another --output_dir)')
# what a run writes in output_dir (besides checkpoint-N, its logging_dir and config records)
RUN_ENTRIES = ('metrics.json', 'model_index.json', 'unet', 'scheduler', 'teacher', 'validation',
               'vae', 'text_encoder', 'tokenizer')


def check_fresh_output_dir(output_dir, logging_dir: str = 'logs', overwrite: bool = False,
                           delete: bool = True, resuming: bool = False,
                           inputs: dict | None = None) -> None:
    """``FileExistsError`` (nothing changed) if ``output_dir`` holds an earlier run, unless
    ``overwrite``: then (with ``delete``: on one process) its entries, ``logging_dir`` and any
    ``.*.tmp`` are deleted, and nothing else; never one of the run's ``inputs`` (a teacher
    read from ``output_dir/teacher``: refused, nothing deleted). ``resuming``: a resume found
    no complete checkpoint there, so it would start a new run on top of the earlier one."""
    hint = ('It has no complete checkpoint to resume from, so this would be a new run on top '
            'of it. ' if resuming else 'Pass --resume_from_checkpoint latest to continue it, ')
    hint += '--overwrite_output_dir to delete it and start again, or another --output_dir'
    if overwrite and not delete:
        return
    # the TensorBoard folder (when inside output_dir), train.log and the config records:
    # deleted with the run, and no earlier run alone
    logs = ['train.log', CONFIG_DUMP, record_pattern(CONFIG_DUMP)]
    root = Path(output_dir).resolve()
    folder = (Path(output_dir) / logging_dir).resolve()
    if folder != root and folder.is_relative_to(root):
        logs.append(str(folder.relative_to(root)))
    check_fresh_work_dir(output_dir, RUN_ENTRIES, overwrite=overwrite, hint=hint, logs=logs,
                         inputs=inputs)


def check_config_dump(output_dir, inputs: dict) -> None:
    """The config dump never replaces the config being run (``output_dir/config.py`` run
    again): refused before anything is written."""
    check_output(Path(output_dir) / CONFIG_DUMP, inputs, "the output dir's config dump",
                 hint='run a copy of the config kept outside the output dir')


def run_inputs(cfg, config_file=None) -> dict:
    """What a run reads and must not delete (``--overwrite_output_dir``): the config file, the
    pretrained networks' folders, the image folder."""
    inputs = {'the config being run': config_file,
              'the image folder (--train_data_dir)':
                  cfg.get('train_data_dir') or cfg.data.get('train_data_dir')}
    for name in ('teacher', 'student', 'vae'):
        section = cfg.get(name)
        if isinstance(section, dict) and section.get('pretrained'):
            inputs[f'the pretrained {name} ({name}.pretrained)'] = section['pretrained']
    return inputs


def save_student_pipeline(output_dir, student, scheduler, latent: bool, vae_dir=None) -> str | None:
    """Make ``output_dir`` what a diffusers user loads with ``from_pretrained``; return the
    pipeline class written (None: ``unet/`` and ``scheduler/`` only).

    * a pixel-space ``UNet2DModel``: a ``DDPMPipeline`` folder (``model_index.json``, ``unet/``,
      ``scheduler/``), as train_unconditional.py writes;
    * a latent student whose VAE comes from a pipeline folder (``vae.pretrained`` holding a
      ``model_index.json``, e.g. Stable Diffusion): that pipeline with the student as its
      ``unet`` and the run's scheduler, saved whole (VAE, text encoder, tokenizer, ... copied),
      as train_text_to_image.py writes;
    * otherwise ``unet/`` and ``scheduler/`` only: diffusers has no pipeline for a latent
      ``UNet2DModel`` over an ``AutoencoderKL`` (``LDMPipeline`` takes a ``VQModel`` and no
      scaling factor), and a VAE given as a bare folder names no pipeline. Load the student
      into the teacher's pipeline: ``Pipeline.from_pretrained(TEACHER, unet=...)``.
    """
    from diffusers import DDPMPipeline, DiffusionPipeline, UNet2DModel
    output_dir = Path(output_dir)
    if isinstance(student, UNet2DModel) and not latent:
        DDPMPipeline(unet=student, scheduler=scheduler).save_pretrained(
            output_dir, safe_serialization=True)
        return 'DDPMPipeline'
    if latent and vae_dir and (Path(vae_dir) / 'model_index.json').is_file():
        pipeline = DiffusionPipeline.from_pretrained(str(vae_dir), unet=student,
                                                     scheduler=scheduler,
                                                     local_files_only=True)
        pipeline.save_pretrained(output_dir, safe_serialization=True)
        return type(pipeline).__name__
    student.save_pretrained(output_dir / 'unet', safe_serialization=True)
    scheduler.save_pretrained(output_dir / 'scheduler')
    return None
