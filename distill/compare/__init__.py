"""Which method helps on my data: train several distillation methods on the user's own config,
over paired seeds, and print what the seeds can and cannot tell.

    python tasks/compare.py CONFIG --methods independent DML ADM "ADM offline" KD \\
        --seeds 0 1 2 --jobs 2 --out DIR [--set [METHOD:]KEY=VALUE ...] \\
        [--teacher-ckpt PATH | --teacher-seed N]
    python tasks/compare.py --report DIR

    from distill.compare import compare
    results = compare('configs/classification/demo.py', methods=['independent', 'ADM'],
                      seeds=[0, 1], out='work_dirs/compare/demo', jobs=2)

Each method is a named change of the config's distiller section (``distill.compare.methods``;
``--list-methods``); networks, data, schedule and budget stay the config's. ``NAME=METHOD`` in
``--methods`` adds the user's own variant of a method (its change: ``--set 'NAME:KEY=VALUE'``),
paired with that method. Every (method, seed) is a run of the config's own entry point
(``tasks/<task>/train.py``) in its own process (``distill.compare.runner``; one run and its
record in ``distill.compare.runs``, the ``--set`` items in ``distill.compare.options``); the
tables (``distill.compare.report``) pair each method with its baseline on the same seed.
"""
from __future__ import annotations

import argparse
import sys

from distill.compare.methods import DEFAULT_METHODS, METHODS, describe, method_section
from distill.compare.report import format_report, tables
from distill.compare.runner import CompareError, Comparison, compare, load_results, report

__all__ = ['compare', 'report', 'load_results', 'Comparison', 'CompareError', 'METHODS',
           'DEFAULT_METHODS', 'method_section', 'format_report', 'tables', 'main']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='tasks/compare.py', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Which method helps on my data: every method of --methods trained on '
                    "CONFIG's data, networks and schedule, once per seed; prints student and "
                    'teacher tables of paired differences with their 95 % t-intervals.',
        epilog='methods (baseline: the paired difference is taken to it):\n'
               + describe())
    parser.add_argument('config', nargs='?', help='a distillation config of any task '
                        '(classification, segmentation, detection, diffusion)')
    parser.add_argument('--methods', nargs='+', metavar='METHOD',
                        help="methods of the table below, or NAME=METHOD: a variant of METHOD "
                             "named NAME, changed by --set 'NAME:KEY=VALUE' and paired with "
                             'METHOD (e.g. "ADM co0.5=ADM"); default: '
                             + '; '.join(f'{k}: {" ".join(v)}'
                                         for k, v in DEFAULT_METHODS.items()))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--jobs', type=int, default=1, help='runs at a time (default 1)')
    parser.add_argument('--out', help='default: work_dirs/compare/<config name>')
    parser.add_argument('--set', dest='sets', nargs='+', action='extend', default=[],
                        metavar='[METHOD:]KEY=VALUE',
                        help="config overrides in --cfg-options syntax, for every method or, "
                             "prefixed 'METHOD:', for that one (e.g. schedule.epochs=30 "
                             "'ADM:distiller.loss_weights.co=0.5')")
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument('--teacher-ckpt', help='the frozen teacher of the offline methods '
                         "(the engine's form: classification teacher.pth, an mmengine "
                         'checkpoint, a diffusers UNet folder); default: the teacher '
                         "'independent' trained on --teacher-seed")
    teacher.add_argument('--teacher-seed', type=int,
                         help='the seed whose independent teacher the offline methods distil '
                              'from (default: the first of --seeds)')
    parser.add_argument('--task', choices=('classification', 'segmentation', 'detection',
                                           'diffusion'),
                        help="the config's task (default: recognised from the config)")
    parser.add_argument('--rerun', action='store_true',
                        help='train every run afresh, even finished ones')
    parser.add_argument('--report', nargs='?', const=True, default=None, metavar='DIR',
                        help='reprint the saved comparison of DIR (or of --out / CONFIG\'s '
                             'default) without training')
    parser.add_argument('--list-methods', action='store_true',
                        help='print the methods (those of CONFIG\'s task if given) and exit')
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_methods:
        framework = None
        if args.config:
            from mmengine.config import Config

            from distill.compare.frameworks import detect
            framework = args.task or detect(Config.fromfile(
                args.config, import_custom_modules=False)).name
        print(describe(framework))
        return 0
    if args.report is not None:
        out = args.report if isinstance(args.report, str) else args.out
        if out is None and args.config:
            from pathlib import Path
            out = str(Path('work_dirs') / 'compare' / Path(args.config).stem)
        if out is None:
            parser.error('--report needs DIR, --out or CONFIG')
        report(out)
        return 0
    if not args.config:
        parser.error('give CONFIG (or --report DIR)')
    try:
        compare(args.config, methods=args.methods, seeds=args.seeds, out=args.out,
                jobs=args.jobs, sets=args.sets, teacher_ckpt=args.teacher_ckpt,
                teacher_seed=args.teacher_seed, task=args.task, rerun=args.rerun)
    except CompareError as err:
        print(f'\n[compare] {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
