"""The demo: online ADM against DML and independent training on the synthetic shapes set.

    python tasks/classification/demo.py [--out DIR] [--epochs N] [--seeds 0 1 2]

Trains the same student/teacher pair (tiny CNNs) with the engine of
``tasks/classification/train.py`` and ``configs/classification/demo.py``: ADM (online), DML,
and both networks independently (DML with kd=0), once per seed. One seed says little (two seeds
of one method differ by several points here), so the table gives the mean ± std over the seeds
and each method's paired difference to independent training on the same seed. Writes
``curves.png`` (mean val top-1 per epoch) and ``adm_maps.png`` (similarity, consensus and
divergence maps of the ADM pair of the first seed on a few val images). About five minutes on
2 CPU cores.
"""
import argparse
import copy
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(REPO))

DEMO_CONFIG = REPO / 'configs' / 'classification' / 'demo.py'


def method_configs(cfg):
    """The three runs of the demo: name -> distiller config (same networks and settings)."""
    adm = copy.deepcopy(dict(cfg.distiller))
    logits_only = {k: v for k, v in adm.items()
                   if k not in ('taps', 'tau', 'tau_schedule', 'standardise')}
    dml = dict(logits_only, type='DML', loss_weights=dict(task=1.0, kd=1.0))
    independent = dict(logits_only, type='DML', loss_weights=dict(task=1.0, kd=0.0))
    return {'ADM': adm, 'DML': dml, 'independent': independent}


def mean_histories(histories: dict) -> list:
    """The per-epoch mean over seeds of every numeric field of the records."""
    runs = list(histories.values())
    means = []
    for records in zip(*runs):
        keys = [k for k, v in records[0].items() if isinstance(v, (int, float))]
        means.append({k: sum(r[k] for r in records) / len(records) for k in keys})
    return means


def pick_images(dataset, count=4):
    """The first val image of each of the first ``count`` classes (or the first images)."""
    chosen, seen = [], set()
    for index in range(len(dataset)):
        label = int(dataset[index]['labels'])
        if label not in seen:
            seen.add(label)
            chosen.append(index)
        if len(chosen) == count:
            break
    return chosen


def main(argv=None):
    from distill.engines.core.cli_errors import add_debug_option
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='work_dirs/demo', help='output folder')
    parser.add_argument('--epochs', type=int, default=None, help='epochs per method '
                        '(default: the config)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='training seeds (initial weights, batch order, augmentation)')
    parser.add_argument('--config', default=str(DEMO_CONFIG), help=argparse.SUPPRESS)
    add_debug_option(parser)
    args = parser.parse_args(argv)

    import torch
    if 'OMP_NUM_THREADS' not in os.environ:  # small models: threads cost more than they give
        torch.set_num_threads(1)
    from mmengine.config import Config

    from distill.engines.classification.train import (build_classification_datasets,
                                               train_classification)
    from distill.engines.classification.data import BatchPreparer
    from distill.results import format_table, summarise
    from distill.viz import adm_maps, plot_adm_maps, plot_curves

    cfg = Config.fromfile(args.config)
    if args.epochs is not None:
        cfg.schedule.epochs = args.epochs
        cfg.schedule.milestones = [m for m in cfg.schedule.milestones if m < args.epochs]
    out = Path(args.out)
    started = time.time()
    datasets = build_classification_datasets(cfg.data)  # rendered once, shared by the runs

    methods = method_configs(cfg)
    finals = {name: {} for name in methods}
    histories = {name: {} for name in methods}
    first_adm = None
    for seed in args.seeds:
        for name, distiller_cfg in methods.items():
            print(f'\n== seed {seed}, {name}: {distiller_cfg["type"]}, loss weights '
                  f'{dict(distiller_cfg["loss_weights"])}', flush=True)
            run_cfg = copy.deepcopy(cfg)
            run_cfg.distiller = distiller_cfg
            run_cfg.train.seed = seed
            # a rerun of the demo replaces its earlier output
            result = train_classification(run_cfg, work_dir=out / name / f'seed{seed}',
                                          datasets=datasets, overwrite=True)
            finals[name][seed] = result.records[-1]
            histories[name][seed] = result.records
            if name == 'ADM' and first_adm is None:
                first_adm = result.distiller

    curves = plot_curves({name: mean_histories(runs) for name, runs in histories.items()},
                         out / 'curves.png')
    val = datasets['val']
    indices = pick_images(val)
    images = torch.stack([val[i]['inputs'] for i in indices])
    labels = [int(val[i]['labels']) for i in indices]
    normalise = BatchPreparer('cpu', None, cfg.data.get('normalize'))
    adm = first_adm
    device = next(adm.parameters()).device
    maps = adm_maps(adm, normalise(dict(inputs=images, labels=torch.tensor(labels)))['inputs']
                    .to(device))
    maps_path = plot_adm_maps(images, maps, out / 'adm_maps.png', labels,
                              getattr(val, 'classes', None))

    ordered = {name: finals[name] for name in ('independent', 'DML', 'ADM')}
    table = summarise(ordered, args.seeds, {'DML': 'independent', 'ADM': 'DML'})
    print(f'\nshapes demo, {cfg.schedule.epochs} epochs, val set of {len(val)} images, seeds '
          f'{" ".join(map(str, args.seeds))} (top-1 and ECE in %, mean ± std over seeds; '
          f'paired differences on the same seed):\n')
    print(format_table(table))
    print(f'\nwrote {curves} and {maps_path}; runs (metrics.json, checkpoints, TensorBoard) '
          f'in {out}/<method>/ ({time.time() - started:.0f} s)')
    return table


if __name__ == '__main__':
    from distill.engines.core.cli_errors import run_entry_point
    run_entry_point(main)
