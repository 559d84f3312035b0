"""Evaluate a classification run's networks on its config's val set.

    python tasks/classification/test.py CONFIG CHECKPOINT [--teacher TEACHER.pth] [--out FILE]
                                        [--cfg-options KEY=VALUE ...]

As MMSegmentation's ``tools/test.py CONFIG CHECKPOINT``: CHECKPOINT is a training run's
``checkpoint-N`` folder (student and teacher, checked against its SHA-256 first) or its
``student.pth`` (the student alone; ``--teacher teacher.pth`` adds the teacher). Prints top-1,
top-5 and ECE per network; ``--out`` writes them as JSON.
"""
import argparse
import logging
import sys
from pathlib import Path

try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv=None):
    from mmengine.config import Config

    from distill.engines.classification.eval import evaluate_checkpoint
    from distill.engines.core.cli_errors import add_debug_option
    from distill.engines.core.cli_options import ConfigOptionsAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the run\'s config (its work dir holds config.py)')
    parser.add_argument('checkpoint', help='a checkpoint-N folder or student.pth')
    parser.add_argument('--teacher', default=None, help='teacher.pth, to evaluate it too')
    parser.add_argument('--out', default=None, help='write the metrics to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction, default={},
                        metavar='KEY=VALUE', help='override config keys, e.g. '
                        'data.val_batch_size=256')
    add_debug_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return evaluate_checkpoint(cfg, args.checkpoint, args.teacher, args.out)


if __name__ == '__main__':
    from distill.engines.core.cli_errors import run_entry_point
    run_entry_point(main)
