"""Each base distiller with and without SoKD on the shapes set, over several seeds.

    python benchmarks/sokd_shapes_demo.py [--seeds 0 1 2] [--bases FitNet KD DKD ADM]
        [--variants plain SoKD] [--epochs 8] [--out work_dirs/sokd_shapes_demo]

Runs the classification engine (``train_classification``) on ``configs/classification/sokd/
shapes_demo.py``: first the teacher (``shapes_teacher.py``, skipped when its teacher.pth
exists), then for every seed and base the plain base and SoKD(base) with the same frozen
teacher, student, data and schedule (ADM offline, so that every base distils the same trained
teacher). Prints the final student val top-1, mean and standard deviation over the seeds, and
writes every number to ``results.json`` in ``--out``, with ``dam_<run>.png`` (DAM's boxes and
masks of teacher and student) and ``policy_<run>.png`` (the learnt DAFA policy) of the first
seed of every SoKD run.
"""
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(REPO))

CONFIGS = REPO / 'configs' / 'classification' / 'sokd'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--bases', nargs='+', default=['FitNet', 'KD', 'DKD', 'ADM'])
    parser.add_argument('--variants', nargs='+', default=['plain', 'SoKD'],
                        choices=['plain', 'SoKD'])
    parser.add_argument('--epochs', type=int, default=None, help='override the schedule')
    parser.add_argument('--out', default='work_dirs/sokd_shapes_demo')
    return parser.parse_args(argv)


def base_config(sokd_cfg: dict, name: str) -> dict:
    """The base distiller of the demo config turned into ``name`` (same networks, teacher)."""
    base = copy.deepcopy(dict(sokd_cfg['base']))
    base['type'] = name
    if name in ('KD', 'DKD'):
        base.pop('taps', None)
        base['loss_weights'] = dict(task=1.0, kd=1.0)
    elif name == 'ADM':
        base['online'] = False
        base['loss_weights'] = dict(task=1.0, kd=1.0, co=1.0)
    return base


def train(cfg, work_dir, seed, epochs):
    from distill.engines.classification.train import train_classification
    cfg = copy.deepcopy(cfg)
    cfg.train.seed = seed
    cfg.train.progress_bar = False
    if epochs:
        cfg.schedule.epochs = epochs
        cfg.schedule.milestones = [m for m in cfg.schedule.milestones if m < epochs]
    return train_classification(cfg, work_dir=work_dir)


def draw_pictures(distiller, data_cfg, out: Path, key: str) -> None:
    """DAM's boxes and masks on four val images, and the learnt policy, as PNGs."""
    import torch

    from distill.data.shapes import ShapesClassification
    from distill.sokd.viz import draw_dam_boxes, draw_policy
    val = ShapesClassification(num_samples=4, seed=data_cfg.val.seed, image_size=32,
                               num_classes=data_cfg.val.num_classes)
    images = torch.stack([val[i]['inputs'] for i in range(4)])
    mean = torch.tensor(data_cfg.normalize.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(data_cfg.normalize.std).reshape(1, 3, 1, 1)
    batch = dict(inputs=(images - mean) / std,
                 labels=torch.tensor([int(val[i]['labels']) for i in range(4)]))
    distiller = distiller.cpu().eval()
    if distiller.dam is not None:
        draw_dam_boxes(images, distiller.dam_predictions(batch), out / f'dam_{key}.png')
    if distiller.dafa is not None:
        draw_policy(distiller.policy(), out / f'policy_{key}.png', f'DAFA policy, {key}')


def main(argv=None):
    from mmengine.config import Config
    args = parse_args(argv)
    out = Path(args.out)
    teacher_ckpt = out / 'teacher' / 'teacher.pth'
    if not teacher_ckpt.is_file():
        print('training the teacher ...', flush=True)
        train(Config.fromfile(str(CONFIGS / 'shapes_teacher.py')), out / 'teacher', 0,
              args.epochs)
    demo = Config.fromfile(str(CONFIGS / 'shapes_demo.py'))
    demo.distiller.base.teacher_ckpt = str(teacher_ckpt)
    results = {}
    for name in args.bases:
        base = base_config(demo.distiller, name)
        for variant in args.variants:
            cfg = copy.deepcopy(demo)
            cfg.distiller = base if variant == 'plain' else dict(demo.distiller, base=base)
            key = f'{name}+SoKD' if variant == 'SoKD' else name
            for seed in args.seeds:
                start = time.time()
                result = train(cfg, out / key / f'seed{seed}', seed, args.epochs)
                record = result.records[-1]
                if variant == 'SoKD' and seed == args.seeds[0]:
                    draw_pictures(result.distiller, cfg.data, out, key)
                results.setdefault(key, []).append(dict(
                    seed=seed, top1=record['val/student/top1'], ece=record['val/student/ece'],
                    seconds=time.time() - start, policy=record.get('policy')))
                print(f'{key:12s} seed {seed}: student top-1 {record["val/student/top1"]:.2f} '
                      f'({time.time() - start:.0f} s)', flush=True)
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    print(f'\nstudent val top-1 over seeds {args.seeds} (mean +- std):')
    for key, runs in results.items():
        top1 = [run['top1'] for run in runs]
        spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
        print(f'  {key:12s} {statistics.mean(top1):6.2f} +- {spread:5.2f}   '
              f'{", ".join(f"{v:.2f}" for v in top1)}')


if __name__ == '__main__':
    main()
