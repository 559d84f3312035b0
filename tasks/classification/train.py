"""Train a classification distiller from a config (mmengine Python config file).

    python tasks/classification/train.py CONFIG [--work-dir DIR] [--resume [PATH]]
                                         [--cfg-options KEY=VALUE ...]
    accelerate launch --multi_gpu --num_processes 2 tasks/classification/train.py CONFIG

Checkpoints, metrics.json, train.log and TensorBoard logs go to the work dir (default
work_dirs/<config name>). --resume continues from the work dir's latest.pth (or PATH).
"""
import argparse
import sys
from pathlib import Path

try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file, e.g. configs/classification/demo.py')
    parser.add_argument('--work-dir', help='where checkpoints and logs go (overrides the '
                        "config's work_dir)")
    parser.add_argument('--resume', nargs='?', const=True, default=None, metavar='PATH',
                        help="continue from the work dir's latest.pth, or from PATH")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE',
                        help='override config keys, e.g. schedule.epochs=10 train.seed=1')
    return parser.parse_args(argv)


def main(argv=None):
    from mmengine.config import Config

    from distill.dist import close_process_group
    from distill.engine.classification import train_classification

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    work_dir = args.work_dir or cfg.get('work_dir') or str(Path('work_dirs')
                                                           / Path(args.config).stem)
    cfg.work_dir = work_dir
    train_classification(cfg, work_dir=work_dir, resume=args.resume)
    close_process_group()


if __name__ == '__main__':
    main()
