"""Train a classification distiller from a config (mmengine Python config file).

    python tasks/classification/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]]
                                         [--amp] [--cfg-options KEY=VALUE ...] [--overwrite]
    accelerate launch --multi_gpu --num_processes 2 tasks/classification/train.py CONFIG
    torchrun --nproc_per_node 2 tasks/classification/train.py CONFIG --launcher pytorch

The flags are those of MMSegmentation 1.2 / MMDetection 3.3 ``tools/train.py`` (--work-dir,
--resume [CHECKPOINT], --amp, --cfg-options, --launcher, --local_rank), plus --overwrite.
Checkpoints, metrics.json, train.log and TensorBoard logs go to the work dir (default
work_dirs/<config name>). --resume continues from the work dir's newest valid checkpoint (or
CHECKPOINT). A fresh run refuses a work dir holding an earlier run unless --overwrite.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def parse_args(argv=None):
    from distill.engines.core.cli_errors import add_debug_option
    from distill.engines.core.cli_options import ConfigOptionsAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file, e.g. configs/classification/demo.py')
    parser.add_argument('--work-dir', help='where checkpoints and logs go (overrides the '
                        "config's work_dir)")
    parser.add_argument('--resume', nargs='?', type=str, const='auto', default=None,
                        metavar='CHECKPOINT',
                        help="continue from the work dir's newest valid checkpoint "
                        "(its newest intact checkpoint-N folder), or from CHECKPOINT")
    parser.add_argument('--overwrite', action='store_true',
                        help="start afresh in a work dir that holds an earlier run, deleting "
                        "that run's checkpoints, metrics and logs (without it such a run "
                        'refuses and changes nothing)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: train.mixed_precision=fp16 on a GPU, bf16 on '
                        'a CPU')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction, default={},
                        metavar='KEY=VALUE',
                        help='override config keys, e.g. schedule.epochs=10 train.seed=1 '
                        'optimizer.lr=0.01 (applied over the optimiser state on --resume)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none',
                        help="job launcher, as in tools/train.py: 'none' (one process, or "
                        "whatever `accelerate launch` started) or 'pytorch' (torchrun); "
                        "for slurm/mpi jobs run torchrun or accelerate launch inside the job")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None,
                        help='passed by torch.distributed.launch; exported as LOCAL_RANK')
    add_debug_option(parser)
    args = parser.parse_args(argv)
    # only when given: a LOCAL_RANK alone would make Accelerate start a process group
    if args.local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.resume and args.overwrite:
        parser.error('--resume continues the work dir\'s run and --overwrite deletes it: '
                     'choose one')
    if args.launcher in ('slurm', 'mpi'):
        parser.error(f'--launcher {args.launcher}: this script runs on Accelerate; start it '
                     f'with torchrun or accelerate launch inside the {args.launcher} job')
    if args.launcher == 'pytorch' and 'WORLD_SIZE' not in os.environ:
        parser.error('--launcher pytorch needs the environment torchrun sets (WORLD_SIZE, '
                     'RANK, MASTER_ADDR): run it under torchrun --nproc_per_node N')
    return args


def set_amp(cfg) -> None:
    """--amp: fp16 autocast and loss scaling on a GPU, bf16 on a CPU (no fp16 there)."""
    import torch
    train = cfg.setdefault('train', {})
    if train.get('mixed_precision', 'no') != 'no':
        logging.getLogger('distill.classification').warning(
            '--amp: mixed precision (%s) is already enabled in the config',
            train['mixed_precision'])
        return
    train['mixed_precision'] = 'fp16' if torch.cuda.is_available() and not train.get(
        'cpu') else 'bf16'


def main(argv=None):
    from mmengine.config import Config

    from distill.engines.classification.train import DEFAULT_TRAIN, train_classification
    from distill.engines.classification.config import check_cfg_options

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        check_cfg_options(args.cfg_options, cfg, DEFAULT_TRAIN)  # a typo names itself
        cfg.merge_from_dict(args.cfg_options)
    if args.amp:
        set_amp(cfg)
    work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs')
                                                           / Path(args.config).stem)
    cfg.work_dir = work_dir
    # close_process_group: the group ends with the run (Accelerate's end_training)
    train_classification(cfg, work_dir=work_dir, resume=args.resume, overwrite=args.overwrite,
                         close_process_group=True)


if __name__ == '__main__':
    from distill.engines.core.cli_errors import run_entry_point
    run_entry_point(main)
