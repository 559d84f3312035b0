"""ADM against output matching alone on a diffusion config: quality and step-time overhead.

    python benchmarks/diffusion_overhead.py                      # shapes config, online
    python benchmarks/diffusion_overhead.py --teacher_dir DIR    # offline (KD vs ADM)
    python benchmarks/diffusion_overhead.py --timing_only

Two measurements:

1. Step time, interleaved in one process: the same batches go through an optimiser step of
   each distiller in turn (ADM, then output matching alone: DML online / KD offline), so a
   machine shared with other work slows both alike. Prints the median ratio ADM / OM.
2. Quality: two full runs of ``tasks/diffusion/train.py`` (same seed, data, noise), then the
   student's held-out denoising MSE and the teacher agreement (MSE of the final DDIM samples
   from the same noise), from each run's ``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / 'configs' / 'diffusion' / 'adm_shapes_tiny.py'


def output_matching_config(config: Path, online: bool, work_dir: Path) -> Path:
    """The same run with the distiller replaced by output matching alone."""
    path = work_dir / 'output_matching.py'
    kind = 'DML' if online else 'KD'
    path.write_text(f"_base_ = {str(config.resolve())!r}\n"
                    f"distiller = dict(_delete_=True, type={kind!r}, online={online},\n"
                    f"                 loss_weights=dict(task=1.0, kd=1.0))\n")
    return path


def build_pair(cfg, online: bool, teacher_dir: str | None):
    """(ADM, output matching) distillers on identical initial weights."""
    import copy

    import torch

    from distill import build_distiller
    from distill.adapters.diffusers import DiffusionAdapter, model_sample_size
    from distill.distillers.base import build_network
    teacher_cfg = (dict(type='UNet2DModel', pretrained=teacher_dir) if teacher_dir
                   else dict(cfg.teacher))
    torch.manual_seed(cfg.seed)
    student, teacher = build_network(dict(cfg.student)), build_network(teacher_cfg)
    adapter = DiffusionAdapter(noise_scheduler=dict(cfg.noise_scheduler),
                               probe_input_size=model_sample_size(student))
    adm = build_distiller(dict(cfg.distiller, online=online, student=copy.deepcopy(student),
                               teacher=copy.deepcopy(teacher), adapter=adapter))
    matching = build_distiller(dict(type='DML' if online else 'KD', online=online,
                                    student=student, teacher=teacher, adapter=adapter))
    return adm, matching


def time_steps(cfg, online: bool, teacher_dir: str | None, steps: int) -> dict:
    import torch

    from distill.data.images import build_image_datasets
    adm, matching = build_pair(cfg, online, teacher_dir)
    train_set, _ = build_image_datasets(dict(cfg.data))
    batch_size = cfg.train_batch_size
    images = torch.stack([train_set[i]['pixel_values'] for i in range(batch_size)])
    times = {'ADM': [], 'OM': []}
    runners = {}
    for name, distiller in (('ADM', adm), ('OM', matching)):
        params = [p for p in distiller.parameters() if p.requires_grad]
        runners[name] = (distiller, torch.optim.AdamW(params, lr=1e-4))
    for step in range(steps + 3):  # 3 warm-up steps per distiller, not timed
        for name, (distiller, optimizer) in runners.items():
            generator = torch.Generator().manual_seed(step)
            start = time.perf_counter()
            terms = distiller(dict(pixel_values=images, generator=generator))
            sum(terms.values()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= 3:
                times[name].append(time.perf_counter() - start)
    adm_median, om_median = (statistics.median(times[k]) for k in ('ADM', 'OM'))
    return dict(adm_step_s=adm_median, om_step_s=om_median, ratio=adm_median / om_median,
                steps=steps, batch_size=batch_size)


def train(config: Path, output_dir: Path, flags: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    command = [sys.executable, str(REPO / 'tasks' / 'diffusion' / 'train.py'), str(config),
               '--output_dir', str(output_dir), '--report_to', 'none', *flags]
    print('$', ' '.join(command), flush=True)
    subprocess.run(command, env=env, check=True, cwd=REPO)
    records = json.loads((output_dir / 'metrics.json').read_text())
    return [r for r in records if r['kind'] == 'final'][-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', type=Path, default=DEFAULT_CONFIG)
    parser.add_argument('--work_dir', type=Path, default=REPO / 'work_dirs' / 'diffusion_bench')
    parser.add_argument('--teacher_dir', help='a trained teacher: offline (KD vs ADM)')
    parser.add_argument('--timing_steps', type=int, default=30)
    parser.add_argument('--timing_only', action='store_true')
    parser.add_argument('--max_train_steps', type=int, help='override the config')
    args = parser.parse_args(argv)

    import distill.adapters.diffusers  # noqa: F401  (registers the UNet builders)
    from distill.engines.diffusion.config import load_config_file
    cfg = load_config_file(args.config)
    online = args.teacher_dir is None and cfg.distiller.get('online', True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    timing = time_steps(cfg, online, args.teacher_dir, args.timing_steps)
    label = 'DML' if online else 'KD'
    print(f"step time ({'online' if online else 'offline'}, batch {timing['batch_size']}, "
          f"median of {timing['steps']}): ADM {timing['adm_step_s'] * 1e3:.1f} ms, "
          f"output matching alone ({label}) {timing['om_step_s'] * 1e3:.1f} ms")
    print(f"step-time ratio ADM / output matching: {timing['ratio']:.3f}")
    summary = dict(online=online, timing=timing)
    if not args.timing_only:
        flags = ['--teacher_model_name_or_path', args.teacher_dir] if args.teacher_dir else []
        if args.max_train_steps:
            flags += ['--max_train_steps', str(args.max_train_steps)]
        runs = {'ADM': train(args.config, args.work_dir / 'adm', flags),
                label: train(output_matching_config(args.config, online, args.work_dir),
                             args.work_dir / label.lower(), flags)}
        print(f"\n{'run':<5} {'student MSE':>12} {'per bucket':<34} {'teacher MSE':>12} "
              f"{'agreement':>10} {'step s':>8}")
        for name, record in runs.items():
            buckets = record['student_denoising_mse']
            per_bucket = ' '.join(f'{v:.4f}' for k, v in buckets.items() if k != 'mean')
            print(f"{name:<5} {buckets['mean']:>12.4f} {per_bucket:<34} "
                  f"{record['teacher_denoising_mse']['mean']:>12.4f} "
                  f"{record['agreement_mse']:>10.4f} {record['median_step_time_s']:>8.3f}")
        ratio = runs['ADM']['median_step_time_s'] / runs[label]['median_step_time_s']
        print(f'step-time ratio in the full runs (median step): {ratio:.3f}')
        summary.update(runs=runs, training_ratio=ratio)
    (args.work_dir / 'summary.json').write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == '__main__':
    main()
