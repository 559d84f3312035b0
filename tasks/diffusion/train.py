"""Distil a diffusers UNet with ADM (or KD / DML output matching).

    accelerate launch tasks/diffusion/train.py configs/diffusion/adm_shapes_tiny.py \
        --output_dir work_dirs/adm_shapes --mixed_precision no --report_to tensorboard
    python tasks/diffusion/train.py CONFIG --resume_from_checkpoint latest

Flags are those of diffusers' train_unconditional.py that apply (``--resolution``,
``--num_epochs``, ``--use_ema``, ``--dataloader_num_workers``, ``--logging_dir``, ...); see
``--help``. The output folder is a pipeline folder: ``DDPMPipeline.from_pretrained(output_dir)``
samples from the (EMA) student. A fresh run refuses an output folder that holds an earlier run
unless ``--overwrite_output_dir`` (train_unconditional.py's flag), which deletes that run.
"""
from distill.engines.diffusion.train import train
from distill.engines.diffusion.config import build_parser, load_config


def main(argv=None):
    args = build_parser().parse_args(argv)
    train(load_config(args), config_file=args.config)


if __name__ == '__main__':
    from distill.engines.core.cli_errors import run_entry_point
    run_entry_point(main)
