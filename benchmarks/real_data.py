"""Do the methods make students better? Methods x seeds on real data (not a test).

    python benchmarks/real_data.py --preset cpu [--seeds 0 1 2] [--methods DML ADM ...]
                                   [--jobs 2] [--out work_dirs/real_data_cpu] [--set KEY=VALUE]

Every method is a config of ``configs/classification/fmnist/`` trained by the classification
engine of ``tasks/classification/train.py``, with the same data, schedule and budget for all.
Offline methods distil from one trained teacher: the teacher of the ``independent`` run of
seed 0 (so ``independent`` always runs first). Presets:

* ``cpu``: a class-balanced subset of Fashion-MNIST (``per_class`` training images per class,
  the full 10k test set; ``--val-per-class 500`` for the 5k of the README's first tables),
  the tiny CNN pair of the demo (width 8 student, width 32 teacher);
  about 25 minutes on 2 cores for every method and 3 seeds (``--jobs 2``).
* ``gpu``: the configs as shipped (full data, resnet32x4 -> resnet8x4), and the wrn_40_2 ->
  wrn_16_2 pair with ``--pair wrn``.

Prints, per method, student and teacher top-1 and ECE as mean ± std over seeds, and the paired
differences (same seed) of the student's and the teacher's top-1 to the method's baseline and to
independent training, each with the std of that difference and its 95 % t-interval;
writes ``results.json`` (every run's final record and the table) and ``results.png`` (bars with
the per-seed points) in ``--out``. A finished run (its ``metrics.json`` has the last epoch) is
reused unless ``--rerun``: add seeds or methods and the table grows.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(REPO))

CONFIGS = REPO / 'configs' / 'classification' / 'fmnist'

# name -> (config file, baseline for the paired difference, needs the trained teacher)
METHODS = {
    'independent': ('independent.py', None, False),
    'DML': ('dml.py', 'independent', False),
    'ADM': ('adm.py', 'DML', False),
    'ADM consensus-only': ('adm_consensus_only.py', 'DML', False),
    'ADM divergence-only': ('adm_divergence_only.py', 'DML', False),
    'ADM mutual': ('adm_mutual.py', 'DML', False),
    'ADM tau curriculum': ('adm_tau_curriculum.py', 'DML', False),
    'KD': ('kd.py', 'independent', True),
    'FitNet': ('fitnet.py', 'independent', True),
    'DKD': ('dkd.py', 'independent', True),
    'ADM offline': ('adm_offline.py', 'KD', True),
    'SoKD+FitNet': ('sokd_fitnet.py', 'FitNet', True),
    'SoKD+KD': ('sokd_kd.py', 'KD', True),
    'SoKD+KD DAM': ('sokd_kd_dam.py', 'SoKD+KD', True),  # DAM's own effect
}

# the cpu preset: the demo's tiny pair on a subset; taps at the tiny CNN's last two stages
CPU_PAIR = dict(student=dict(type='tiny_cnn', num_classes=10, width=8, in_channels=1),
                teacher=dict(type='tiny_cnn', num_classes=10, width=24, in_channels=1),
                taps=[dict(student='stage2', teacher='stage2'),
                      dict(student='stage3', teacher='stage3')])
WRN_PAIR = dict(student=dict(type='wrn_16_2', num_classes=10, in_channels=1),
                teacher=dict(type='wrn_40_2', num_classes=10, in_channels=1),
                taps=[dict(student='block3', teacher='block3')])


def _networks_cfg(cfg):
    """The dict that holds student/teacher/taps: the distiller, or SoKD's base."""
    return cfg.distiller.base if cfg.distiller.type == 'SoKD' else cfg.distiller


def _apply_pair(cfg, pair: dict) -> None:
    nets = _networks_cfg(cfg)
    nets.student, nets.teacher = copy.deepcopy(pair['student']), copy.deepcopy(pair['teacher'])
    if 'taps' in nets and isinstance(nets.taps, (list, tuple)):
        nets.taps = copy.deepcopy(pair['taps'])
        if cfg.distiller.type == 'SoKD':  # DAM sits on the last tap: keep one, the deepest
            nets.taps = nets.taps[-1:]


def build_run_config(method: str, seed: int, preset: str, args, teacher_ckpt: str | None):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / METHODS[method][0]))
    if preset == 'cpu':
        _apply_pair(cfg, CPU_PAIR)
        cfg.data.train.per_class = args.per_class
        cfg.data.val.per_class = args.val_per_class  # evaluation after every epoch is not free
        cfg.data.batch_size = 64
        cfg.optimizer.lr = 0.05
        cfg.schedule.epochs = args.epochs
        cfg.schedule.milestones = [round(args.epochs * 0.6), round(args.epochs * 0.85)]
        if cfg.distiller.type == 'SoKD' and cfg.distiller.get('dam'):
            cfg.distiller.dam.channels = 32
    elif args.pair == 'wrn':
        _apply_pair(cfg, WRN_PAIR)
    if args.epochs_override:  # a shorter (or longer) run: the step milestones scale with it
        scale = args.epochs_override / cfg.schedule.epochs
        cfg.schedule.epochs = args.epochs_override
        if cfg.schedule.get('milestones'):
            cfg.schedule.milestones = [max(1, round(m * scale)) for m in cfg.schedule.milestones]
    cfg.train.seed = seed
    cfg.train.progress_bar = False
    if teacher_ckpt is not None:
        _networks_cfg(cfg).teacher_ckpt = teacher_ckpt
    for item in args.set or []:
        key, value = item.split('=', 1)
        cfg.merge_from_dict({key: eval(value, {}, {})})  # numbers, lists, dicts, None
    return cfg


def _train_one(job):
    """One run in a worker process: returns its final metrics record."""
    method, seed, preset, args, teacher_ckpt, work_dir = job
    import torch
    torch.set_num_threads(1)
    from distill.engines.classification.train import train_classification
    cfg = build_run_config(method, seed, preset, args, teacher_ckpt)
    started = time.time()
    # an interrupted run continues from its newest valid checkpoint; --rerun starts afresh
    started_before = Path(work_dir).is_dir() and any(Path(work_dir).iterdir())
    result = train_classification(cfg, work_dir=work_dir,
                                  resume=started_before and not args.rerun,
                                  overwrite=args.rerun)
    print(f'[real_data] {method} seed {seed}: student top-1 '
          f"{result.records[-1]['val/student/top1']:.2f}, teacher "
          f"{result.records[-1]['val/teacher/top1']:.2f} ({time.time() - started:.0f} s)",
          flush=True)
    return result.records[-1]


def _finished(work_dir: Path, epochs: int):
    path = work_dir / 'metrics.json'
    if not path.is_file():
        return None
    records = json.loads(path.read_text())
    if records and records[-1].get('epoch') == epochs and (work_dir / 'student.pth').is_file():
        return records[-1]
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', choices=('cpu', 'gpu'), default='cpu')
    parser.add_argument('--pair', choices=('resnet', 'wrn'), default='resnet',
                        help='gpu preset: resnet32x4->resnet8x4 (default) or wrn_40_2->wrn_16_2')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS),
                        metavar='METHOD', help=f'any of: {", ".join(METHODS)}')
    parser.add_argument('--jobs', type=int, default=2, help='runs in parallel (one thread each)')
    parser.add_argument('--per-class', type=int, default=400, help='cpu preset: train images '
                        'per class')
    parser.add_argument('--val-per-class', type=int, default=1000, help='cpu preset: test '
                        'images per class evaluated after every epoch (1000: the whole 10k '
                        'test set)')
    parser.add_argument('--epochs', type=int, default=8, help='cpu preset: epochs')
    parser.add_argument('--epochs-override', type=int, default=None,
                        help='gpu preset: epochs instead of the configs\' 10 (the learning-rate '
                             'milestones scale with them)')
    parser.add_argument('--set', action='append', metavar='KEY=VALUE',
                        help='a config override for every run (python literal value)')
    parser.add_argument('--out', default=None, help='default: work_dirs/real_data_<preset>')
    parser.add_argument('--rerun', action='store_true', help='retrain finished runs')
    parser.add_argument('--baselines-from', metavar='RESULTS_JSON', default=None,
                        help='take the runs of the methods not named in --methods from a saved '
                             'results.json (e.g. docs/real_data_cpu.json, with the preset '
                             'settings it was run with) instead of training them; on another '
                             'CPU the same code ends a few tenths away (float rounding), so '
                             'such pairs are noisier than pairs trained side by side')
    parser.add_argument('--from-json', metavar='RESULTS_JSON', default=None,
                        help='train nothing: print the table of the runs a results.json holds '
                             '(e.g. docs/real_data_cpu.json)')
    args = parser.parse_args(argv)
    if args.from_json:
        return print_saved_table(args.from_json)

    os.environ.setdefault('OMP_NUM_THREADS', '1')
    out = Path(args.out or f'work_dirs/real_data_{args.preset}')
    epochs = args.epochs_override or (args.epochs if args.preset == 'cpu' else 10)
    methods = [m for m in METHODS if m in args.methods or m == 'independent']
    teacher_ckpt = str((out / 'independent' / f'seed{args.seeds[0]}' / 'teacher.pth').resolve())

    def work_dir(method, seed):
        return out / method.replace(' ', '_').replace('+', '-') / f'seed{seed}'

    saved = saved_runs(args.baselines_from, args, epochs) if args.baselines_from else {}
    if saved:  # the baselines of the named methods (and theirs), from the saved runs
        needed, queue = set(), list(methods)
        while queue:
            baseline = METHODS[queue.pop()][1]
            if baseline and baseline not in needed:
                needed.add(baseline)
                queue.append(baseline)
        methods = [m for m in METHODS if m in methods or m in needed]
    finals = {m: {} for m in methods}
    for method, runs in saved.items():
        if method in finals and method not in args.methods:
            finals[method].update(
                {seed: runs[str(seed)] for seed in args.seeds if str(seed) in runs})
    jobs_by_phase = ([], [])
    for method in methods:
        offline = METHODS[method][2]
        for seed in args.seeds:
            done = finals[method].get(seed) if method in saved and method not in args.methods \
                else None
            done = done or (None if args.rerun else _finished(work_dir(method, seed), epochs))
            if done is not None:
                finals[method][seed] = done
                continue
            jobs_by_phase[offline].append((method, seed, args.preset, args,
                                           teacher_ckpt if offline else None,
                                           str(work_dir(method, seed))))
    started = time.time()
    import multiprocessing
    context = multiprocessing.get_context('spawn')
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        for phase in jobs_by_phase:  # online runs first: they train the offline teacher
            for job, record in zip(phase, pool.map(_train_one, phase)):
                finals[job[0]][job[1]] = record
    from distill.results import format_table, plot_seed_bars, summarise
    table = summarise(finals, args.seeds, {m: METHODS[m][1] for m in finals})
    title = (f'Fashion-MNIST, {args.preset} preset, {epochs} epochs, seeds '
             f'{", ".join(map(str, args.seeds))}')
    text = format_table(table)
    print(f'\n{title} (val top-1 and ECE in %, mean ± std over seeds; paired differences of '
          f'top-1, same seed: mean ± std [95 % t-interval]):\n\n{text}')
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(dict(
        preset=args.preset, seeds=args.seeds, epochs=epochs, overrides=args.set or [],
        table=table, runs={m: {str(s): r for s, r in v.items()} for m, v in finals.items()}),
        indent=1))
    png = plot_seed_bars(finals, args.seeds, out / 'results.png', title)
    print(f'\nwrote {out / "results.json"} and {png} ({time.time() - started:.0f} s)')
    return table


def saved_runs(path, args, epochs) -> dict:
    """``{method: {seed: final record}}`` of a saved ``results.json``, checked to be of this
    preset, length and validation size (a baseline from another setting would pair nothing)."""
    saved = json.loads(Path(path).read_text())
    if saved.get('preset') != args.preset or saved.get('epochs') != epochs:
        raise ValueError(f"{path} holds the {saved.get('preset')} preset at "
                         f"{saved.get('epochs')} epochs, not {args.preset} at {epochs}")
    expected = 10 * args.val_per_class if args.preset == 'cpu' else None
    for method, runs in saved['runs'].items():
        for record in runs.values():
            if expected and record.get('val/num_samples') not in (None, expected):
                raise ValueError(f"{path}: {method} was evaluated on "
                                 f"{record['val/num_samples']} test images, this run on "
                                 f'{expected} (--val-per-class {args.val_per_class})')
    return saved['runs']


def print_saved_table(path):
    """The table of a saved ``results.json``, with today's statistics (intervals included)."""
    from distill.results import format_table, summarise
    saved = json.loads(Path(path).read_text())
    seeds = saved['seeds']
    finals = {m: {int(s): r for s, r in runs.items()} for m, runs in saved['runs'].items()}
    table = summarise(finals, seeds, {m: METHODS[m][1] for m in finals if m in METHODS})
    print(f"{path}: Fashion-MNIST, {saved['preset']} preset, {saved['epochs']} epochs, seeds "
          f"{', '.join(map(str, seeds))} (val top-1 and ECE in %, mean ± std over seeds; "
          f"paired differences, same seed: mean ± std [95 % t-interval]):\n\n"
          f"{format_table(table)}")
    return table


if __name__ == '__main__':
    main()
