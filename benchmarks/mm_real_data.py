"""Do the methods make segmentation and detection students better? Real images (not a test).

    python benchmarks/mm_real_data.py --task seg|det [--preset cpu|gpu] [--seeds 0 1 2]
        [--methods ADM DML ...] [--jobs 2] [--iters N] [--set KEY=VALUE] [--out DIR]

The images are Fashion-MNIST garments pasted on crops of real photographs
(``distill.data.garments``: per-pixel class masks for segmentation, one box per garment for
detection, written in MMSeg's and COCO's layouts). Every method is one of the shipped
``configs/<task>/shapes/`` configs, its data swapped for the garments (2,000 training and 500
validation canvases of 64x64; the networks, weights and optimiser as shipped) and trained
through ``tasks/<task>/train.py`` (mmengine's Runner), one process per
run. ``independent`` is two runs, ``student.py`` and ``teacher.py``; the offline methods
distil from the teacher of ``teacher.py``'s run of the first seed.

Presets: ``cpu`` (the shapes configs' tiny pairs, 800 iterations of batch 8, the garments in
5 coarse classes: minutes per run on one core) and ``gpu`` (the same pairs, 4x the iterations
and canvases, Fashion-MNIST's 10 classes).

Prints the tables of ``benchmarks/real_data.py`` (``distill.results``): per method the
student's and teacher's mIoU (segmentation) or COCO bbox mAP x 100 (detection), mean ± std
over seeds, and paired differences (same seed) to the method's baseline and to independent
training, each with its 95 % t-interval; writes ``results.json`` and ``results.png`` in
``--out``. A finished run (its last checkpoint is there) is reused unless ``--rerun``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(REPO))

# name -> (config in configs/<task>/shapes/, baseline of the paired difference, offline)
METHODS = dict(
    seg={'student alone': ('student.py', None, False),
         'teacher alone': ('teacher.py', None, False),
         'DML': ('dml.py', 'independent', False),
         'ADM': ('adm_online.py', 'DML', False),
         'ADM offline': ('adm_offline.py', 'independent', True),
         'FitNet': ('fitnet.py', 'independent', True),
         'SoKD+FitNet': ('sokd_fitnet.py', 'FitNet', True)},
    # detectors have no single logits tensor: no DML; online ADM is compared with training alone
    det={'student alone': ('student.py', None, False),
         'teacher alone': ('teacher.py', None, False),
         'ADM': ('adm_online.py', 'independent', False),
         'ADM offline': ('adm_offline.py', 'independent', True),
         'FitNet': ('fitnet.py', 'independent', True),
         'SoKD+FitNet': ('sokd_fitnet.py', 'FitNet', True)})
ALONE = {'student alone': 'student', 'teacher alone': 'teacher'}
TASK = dict(
    seg=dict(folder='segmentation', metric='mIoU', scale=1.0, student_key='mIoU',
             teacher_key='teacher/mIoU', data='garments_mmseg', background=True),
    det=dict(folder='detection', metric='bbox_mAP', scale=100.0,
             student_key='coco/bbox_mAP', teacher_key='teacher/bbox_mAP',
             data='garments_coco', background=False))
PRESETS = dict(cpu=dict(iters=800, num_train=2000, num_val=500, classes='coarse'),
               gpu=dict(iters=3200, num_train=8000, num_val=2000, classes='fine'))


def _swap_data(node, old_root: str, new_root: str, classes: tuple):
    """The config tree with the shapes set's root, class names and class count replaced by
    the garments' (every occurrence: dataloaders, evaluators' ann_file, each network's head)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == 'num_classes' and isinstance(value, int):
                out[key] = len(classes)
            elif key == 'metainfo':
                out[key] = dict(classes=classes)
            else:
                out[key] = _swap_data(value, old_root, new_root, classes)
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(_swap_data(v, old_root, new_root, classes) for v in node)
    if isinstance(node, str) and node.startswith(old_root):
        return new_root + node[len(old_root):]
    return node


def build_run_config(task: str, method: str, seed: int, args, data_root: str,
                     teacher_ckpt: str | None):
    """The shipped shapes config of ``method`` on the garments, with the preset's schedule."""
    from mmengine.config import Config
    spec = TASK[task]
    path = REPO / 'configs' / spec['folder'] / 'shapes' / METHODS[task][method][0]
    from distill.data.garments import garment_class_names
    cfg = Config.fromfile(str(path))
    classes = garment_class_names(args.classes)
    tree = _swap_data(cfg.to_dict(), cfg.data_root, data_root,
                      ('background', *classes) if spec['background'] else classes)
    tree['prepare_data'] = dict(type=spec['data'], root=data_root, num_train=args.num_train,
                                num_val=args.num_val, image_size=cfg.image_size,
                                fmnist_root=args.fmnist_root, classes=args.classes)
    iters = args.iters
    tree['max_iters'] = iters
    tree['train_cfg'].update(max_iters=iters, val_interval=iters)
    tree['default_hooks']['checkpoint'].update(interval=iters, max_keep_ckpts=1)
    tree['default_hooks']['logger']['interval'] = 50
    for scheduler in tree['param_scheduler']:  # the shipped schedules, stretched
        if scheduler.get('end') == cfg.max_iters:
            scheduler['end'] = iters
        if 'milestones' in scheduler:
            scheduler['milestones'] = [round(m * iters / cfg.max_iters)
                                       for m in scheduler['milestones']]
    tree['randomness'] = dict(seed=seed)
    tree['work_dir'] = None
    if METHODS[task][method][2]:
        tree['model']['teacher_ckpt'] = teacher_ckpt
    for item in args.set or []:  # [METHOD:]KEY=VALUE, for the distillation runs only
        key, value = item.split('=', 1)
        target, _, key = key.rpartition(':')
        if method not in ALONE and target in ('', method):
            node = tree
            *parents, leaf = key.split('.')
            for parent in parents:
                node = node[parent]
            node[leaf] = eval(value, {}, {})  # numbers, lists, dicts, None
    return Config(tree)


def final_record(task: str, method: str, work_dir: Path, iters: int):
    """``{'val/student/<metric>': .., 'val/teacher/<metric>': ..}`` of a finished run, else
    None (finished: its last checkpoint is there)."""
    if not (work_dir / f'iter_{iters}.pth').is_file():
        return None
    spec = TASK[task]
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json'), reverse=True):
        records = [json.loads(line) for line in scalars.read_text().splitlines() if line]
        vals = [r for r in records if spec['student_key'] in r]
        if vals:
            val, record, scale = vals[-1], {}, spec['scale']
            metric = spec['metric']
            if method in ALONE:
                record[f"val/{ALONE[method]}/{metric}"] = val[spec['student_key']] * scale
            else:
                record[f'val/student/{metric}'] = val[spec['student_key']] * scale
                if spec['teacher_key'] in val:  # offline configs evaluate the student only
                    record[f'val/teacher/{metric}'] = val[spec['teacher_key']] * scale
            return record
    return None


def run_one(job):
    """One run through ``tasks/<task>/train.py`` in its own process (one thread)."""
    task, method, seed, config_path, work_dir, iters = job
    started = time.time()
    work_dir = Path(work_dir)
    resume = work_dir.is_dir() and any(work_dir.glob('iter_*.pth'))
    command = [sys.executable, str(REPO / 'tasks' / TASK[task]['folder'] / 'train.py'),
               str(config_path), '--work-dir', str(work_dir)]
    command += ['--resume'] if resume else ['--overwrite']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir.parent / f'{work_dir.name}.log', 'w') as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=str(work_dir.parent))
    if done.returncode:
        raise RuntimeError(f'{method} seed {seed} failed (exit {done.returncode}): see '
                           f'{work_dir.parent / (work_dir.name + ".log")}')
    record = final_record(task, method, work_dir, iters)
    print(f'[mm_real_data] {task} {method} seed {seed}: {record} '
          f'({time.time() - started:.0f} s)', flush=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', choices=('seg', 'det'), required=True)
    parser.add_argument('--preset', choices=tuple(PRESETS), default='cpu')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--methods', nargs='+', default=None, metavar='METHOD',
                        help='default: all of the task\'s (independent training always runs)')
    parser.add_argument('--jobs', type=int, default=2, help='runs in parallel (one thread each)')
    parser.add_argument('--iters', type=int, default=None, help='training iterations per run')
    parser.add_argument('--classes', choices=('coarse', 'fine'), default=None,
                        help="the garments' 5 coarse classes (cpu preset) or Fashion-MNIST's "
                             "10 (gpu preset)")
    parser.add_argument('--set', action='append', metavar='[METHOD:]KEY=VALUE',
                        help='a config override (python literal) for every distillation run, '
                             'or for METHOD\'s runs only')
    parser.add_argument('--out', default=None, help='default: work_dirs/garments_<task>_<preset>')
    parser.add_argument('--fmnist-root', default='/usr/share/datasets/fashion-mnist')
    parser.add_argument('--rerun', action='store_true', help='retrain finished runs')
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    task, methods_of_task = args.task, METHODS[args.task]
    unknown = set(args.methods or []) - set(methods_of_task) - {'independent'}
    if unknown:
        parser.error(f'unknown method(s) {sorted(unknown)} for --task {task}: '
                     f'{", ".join(methods_of_task)}')
    wanted = set(args.methods or methods_of_task) | set(ALONE)
    methods = [m for m in methods_of_task if m in wanted]

    out = Path(args.out or f'work_dirs/garments_{task}_{args.preset}').resolve()
    data_root = str(out / 'data' / f'garments_{task}_{args.classes}') + '/'
    from distill.engines.mmengine.launch import prepare_data
    probe = build_run_config(task, 'student alone', args.seeds[0], args, data_root, None)
    prepare_data(probe)  # once, before the runs (each would otherwise race to write it)
    teacher_dir = out / 'teacher_alone' / f'seed{args.seeds[0]}'
    teacher_ckpt = str(teacher_dir / f'iter_{args.iters}.pth')

    def work_dir(method, seed):
        return out / method.replace(' ', '_').replace('+', '-') / f'seed{seed}'

    records = {m: {} for m in methods}
    phases = ([], [])
    (out / 'configs').mkdir(parents=True, exist_ok=True)
    for method in methods:
        for seed in args.seeds:
            wd = work_dir(method, seed)
            done = None if args.rerun else final_record(task, method, wd, args.iters)
            if done is not None:
                records[method][seed] = done
                continue
            cfg = build_run_config(task, method, seed, args, data_root, teacher_ckpt)
            path = out / 'configs' / f"{wd.parent.name}_seed{seed}.py"
            cfg.dump(str(path))
            phases[methods_of_task[method][2]].append((task, method, seed, path, str(wd),
                                                       args.iters))
    started = time.time()
    # threads, each waiting on its own training process
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for phase in phases:  # online runs first: teacher.py trains the offline teacher
            for job, record in zip(phase, pool.map(run_one, phase)):
                records[job[1]][job[2]] = record

    # independent training = the student alone and the teacher alone, on the same seed
    finals = {'independent': {s: {**records['student alone'].get(s, {}),
                                  **records['teacher alone'].get(s, {})} for s in args.seeds}}
    finals.update({m: records[m] for m in methods if m not in ALONE})
    frozen = records['teacher alone'].get(args.seeds[0], {})
    for method, per_seed in finals.items():  # offline: the frozen teacher's own score
        if methods_of_task.get(method, (None, None, False))[2]:
            for record in per_seed.values():
                record.update(frozen)
    from distill.results import format_table, plot_seed_bars, summarise
    metric = TASK[task]['metric']
    metrics = [('student', metric), ('teacher', metric)]
    baselines = {m: methods_of_task[m][1] for m in finals if m in methods_of_task}
    table = summarise(finals, args.seeds, baselines, metrics=metrics, primary=metric)
    title = (f'Fashion-MNIST garments ({args.classes} classes), {task}, {args.preset} preset, '
             f'{args.iters} iterations, '
             f'seeds {", ".join(map(str, args.seeds))}')
    print(f'\n{title} ({metric}{" x 100" if task == "det" else ""}, mean ± std over seeds; '
          f'paired differences on the same seed: mean ± std [95 % t-interval]):\n\n'
          f'{format_table(table, metrics)}')
    (out / 'results.json').write_text(json.dumps(dict(
        task=task, preset=args.preset, seeds=args.seeds, iters=args.iters,
        overrides=args.set or [], table=table,
        runs={m: {str(s): r for s, r in v.items()} for m, v in finals.items()}), indent=1))
    png = plot_seed_bars(finals, args.seeds, out / 'results.png', title, metric=metric,
                         unit='x 100' if task == 'det' else '%')
    print(f'\nwrote {out / "results.json"} and {png} ({time.time() - started:.0f} s)')
    return table


if __name__ == '__main__':
    main()
