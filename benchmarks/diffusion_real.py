"""Does ADM make a diffusion student generate better images? DDPM on Fashion-MNIST (not a test).

    python benchmarks/diffusion_real.py [--preset cpu|gpu] [--seeds 0 1] [--methods ...]
                                        [--jobs 2] [--steps N] [--out DIR] [--set KEY=VALUE]

Unconditional DDPM on Fashion-MNIST garments (32x32 grey, the Debian package
``dataset-fashion-mnist``), every run through ``tasks/diffusion/train.py`` in its own process:

* ``independent``: student and teacher trained side by side on the diffusion loss alone (every
  distillation weight 0): the student alone and the teacher alone;
* ``output matching``: online, each network also matches the other's prediction (``kd``),
  ``co = di = 0``; ``ADM``: the config's ADM (output matching plus consensus/divergence);
* ``KD offline`` and ``ADM offline``: the student distilled from the teacher of
  ``independent``'s first seed, frozen (``--teacher_model_name_or_path``).

Presets: ``cpu`` is ``configs/diffusion/adm_fmnist_tiny.py`` (the shapes-size UNets, 32x32,
tens of minutes per run on one core); ``gpu`` swaps in the CIFAR-size pair of
``adm_cifar32_ddpm.py`` (never run here: no GPU was lent).

The measure is an FID **in the feature space of a small Fashion-MNIST classifier that this
script trains once and caches** (``feature_net.pth``: a ``tiny_cnn``, its pooled penultimate
features; ``distill.fid``), between ``--fid-images`` DDIM samples (fixed noise and steps) and as
many held-out test images: it ranks these runs against each other and is not the Inception FID
of papers. Beside it, the denoising MSE on held-out images (fixed noise and timesteps).

Prints the table of ``distill.results`` (mean ± std over seeds, paired differences to each
method's baseline with their 95 % t-interval), writes ``results.json``, ``results.png`` and
``samples.png`` (seed 0: every method's student, and the teacher alone, from the same noise)
in ``--out``. A finished run is reused and an interrupted one resumed, unless ``--rerun``.
"""
from __future__ import annotations

import argparse
import ast
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

# name -> (config overrides, baseline of the paired difference, distils from a frozen teacher)
METHODS = {
    'independent': ({'distiller.loss_weights.kd': 0.0, 'distiller.loss_weights.co': 0.0,
                     'distiller.loss_weights.di': 0.0}, None, False),
    'output matching': ({'distiller.loss_weights.co': 0.0, 'distiller.loss_weights.di': 0.0},
                        'independent', False),
    'ADM': ({}, 'output matching', False),
    'KD offline': ({'distiller.loss_weights.co': 0.0}, 'independent', True),
    'ADM offline': ({}, 'KD offline', True),
}
PRESETS = {
    'cpu': dict(config='configs/diffusion/adm_fmnist_tiny.py', steps=800, fid_images=1000,
                overrides={}),
    'gpu': dict(config='configs/diffusion/adm_fmnist_tiny.py', steps=20000, fid_images=5000,
                overrides={'train_batch_size': 128, 'learning_rate': 2e-4,
                           'lr_warmup_steps': 1000, 'checkpointing_steps': 5000,
                           'validation_steps': 5000}),
}
# the gpu preset's pair: adm_cifar32_ddpm.py's UNets on one channel
CIFAR_PAIR = {f'{net}.{key}': value for net in ('student', 'teacher')
              for key, value in (('in_channels', 1), ('out_channels', 1))}
# metrics of the tables: the feature-network FID and the denoising MSE (x 1000)
METRICS = [('student', 'fid'), ('teacher', 'fid'), ('student', 'mse'), ('teacher', 'mse')]


def train_feature_network(path: Path, root: str, epochs: int = 3, seed: int = 0) -> dict:
    """The FID's feature network: ``tiny_cnn`` (width 16, grey) trained on the 60k training
    garments (Adam, batch 128), its weights in ``path`` and its test accuracy returned."""
    import torch
    import torch.nn.functional as F
    from distill.data.fmnist import FashionMNIST
    from distill.models import build_model
    model_cfg = dict(type='tiny_cnn', num_classes=10, width=16, in_channels=1)
    torch.manual_seed(seed)
    model = build_model(dict(model_cfg))
    train, test = (FashionMNIST(root, train=split, channels=1) for split in (True, False))
    stack = lambda data: (torch.stack([data[i]['inputs'] for i in range(len(data))]),
                          data.labels.clone())
    (x, y), (x_test, y_test) = stack(train), stack(test)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * (len(x) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x) - 127, 128):
            idx = order[start:start + 128]
            images = x[idx].flip(-1) if start % 256 else x[idx]  # a cheap flip augmentation
            loss = F.cross_entropy(model(images), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x_test[i:i + 500]).argmax(1) == y_test[i:i + 500]).sum())
                      for i in range(0, len(x_test), 500))
    torch.save(model.state_dict(), path)
    info = dict(model=model_cfg, checkpoint=str(path), test_top1=100 * correct / len(x_test),
                epochs=epochs)
    path.with_suffix('.json').write_text(json.dumps(info, indent=1))
    return info


def final_record(output_dir: Path):
    """The run's final record as ``val/{student,teacher}/{fid,mse}`` (MSE x 1000), or None."""
    path = output_dir / 'metrics.json'
    if not path.is_file():
        return None
    finals = [r for r in json.loads(path.read_text()) if r.get('kind') == 'final']
    if not finals or 'student_fid' not in finals[-1]:
        return None
    final = finals[-1]
    return {'val/student/fid': final['student_fid'], 'val/teacher/fid': final['teacher_fid'],
            'val/student/mse': 1000 * final['student_denoising_mse']['mean'],
            'val/teacher/mse': 1000 * final['teacher_denoising_mse']['mean'],
            'student_mse_buckets': final['student_denoising_mse'],
            'fid_network': final['fid_network'], 'fid_images': final['fid_images'],
            'global_step': final.get('global_step')}


def run_one(job):
    """One run of ``tasks/diffusion/train.py`` (one thread), resumed if it was interrupted."""
    method, seed, command, output_dir = job
    started = time.time()
    output_dir = Path(output_dir)
    if any(output_dir.glob('checkpoint-*')):
        command = command + ['--resume_from_checkpoint', 'latest']
    else:
        command = command + ['--overwrite_output_dir']
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = output_dir.parent / f'{output_dir.name}.log'
    with open(log_path, 'w') as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
                              env=dict(os.environ, OMP_NUM_THREADS='1'))
    record = final_record(output_dir)
    if done.returncode or record is None:
        raise RuntimeError(f'{method} seed {seed} failed (exit {done.returncode}): see {log_path}')
    print(f"[diffusion_real] {method} seed {seed}: FID* student {record['val/student/fid']:.2f} "
          f"teacher {record['val/teacher/fid']:.2f}, MSE x1e3 student "
          f"{record['val/student/mse']:.2f} ({time.time() - started:.0f} s)", flush=True)
    return record


def run_command(method, seed, args, preset, feature_spec, teacher_dir, output_dir):
    overrides = dict(preset['overrides'])
    if args.preset == 'gpu':
        overrides.update(CIFAR_PAIR)
    overrides.update(METHODS[method][0])
    overrides.update({'data.root': args.fmnist_root, 'evaluation.fid_images': args.fid_images,
                      'evaluation.feature_network': feature_spec, 'seed': seed})
    for item in args.set or []:  # [METHOD:]KEY=VALUE, as mm_real_data.py reads it
        key, value = item.split('=', 1)
        target, _, key = key.rpartition(':')
        if target in ('', method):
            overrides[key] = ast.literal_eval(value)
    config = REPO / preset['config']
    if args.preset == 'gpu':
        config = REPO / 'configs/diffusion/adm_cifar32_ddpm.py'
        overrides.update({'data': dict(type='fmnist', resolution=32, channels=1,
                                       root=args.fmnist_root, num_samples=60000,
                                       num_heldout=args.fid_images, random_flip=True)})
        overrides.pop('data.root')
    command = [sys.executable, str(REPO / 'tasks/diffusion/train.py'), str(config),
               '--output_dir', str(output_dir), '--max_train_steps', str(args.steps),
               '--seed', str(seed), '--cfg-options']
    command += [f'{key}={value!r}' if not isinstance(value, str) else f'{key}={value}'
                for key, value in overrides.items()]
    if METHODS[method][2]:
        command += ['--teacher_model_name_or_path', str(teacher_dir)]
    return command


def sample_grid(out: Path, methods, seed: int, path: Path, count: int = 10):
    """Seed ``seed``'s students of every method and the teacher alone, DDIM (50 steps) from the
    same noise, one labelled row each."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel
    from distill.engines.diffusion.eval import ddim_sample, image_grid
    rows, labels = [], []
    alone = out / 'independent' / f'seed{seed}'
    nets = [('teacher alone', alone / 'teacher')] + [
        (f'{m} (student)' if m != 'independent' else 'student alone',
         out / m.replace(' ', '_') / f'seed{seed}' / 'unet') for m in methods]
    scheduler = DDPMScheduler.from_pretrained(str(alone / 'scheduler'))
    noise = None
    for label, folder in nets:
        if not folder.is_dir():
            continue
        unet = UNet2DModel.from_pretrained(str(folder))
        if noise is None:
            noise = torch.randn(count, unet.config.in_channels, unet.config.sample_size,
                                unet.config.sample_size, generator=torch.Generator().manual_seed(0))
        rows.append(ddim_sample(unet, scheduler.config, noise, 50))
        labels.append(label)
    grid = image_grid(rows, labels=labels, label_width=170)
    grid.save(path)
    return path


def print_tables(records: dict, seeds, note: str, title: str):
    """The FID* and denoising-MSE tables of ``distill.results`` (paired to each method's
    baseline); returns both."""
    from distill.results import format_table, summarise
    baselines = {m: METHODS.get(m, (None, None))[1] for m in records}
    table = summarise(records, seeds, baselines, metrics=METRICS, primary='fid')
    mse_table = summarise(records, seeds, baselines, metrics=METRICS, primary='mse')
    print(f'\n{title}\n{note}\n\npaired differences of FID* (lower is better):\n\n'
          f'{format_table(table, METRICS)}\n\npaired differences of the denoising MSE x 1000 '
          f'(lower is better):\n\n{format_table(mse_table, METRICS)}')
    return table, mse_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', choices=tuple(PRESETS), default='cpu')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--methods', nargs='+', default=None, choices=tuple(METHODS),
                        metavar='METHOD', help=f'default: all ({", ".join(METHODS)}); '
                        'independent always runs')
    parser.add_argument('--jobs', type=int, default=2, help='runs in parallel (one thread each)')
    parser.add_argument('--steps', type=int, default=None, help='training steps per run')
    parser.add_argument('--fid-images', type=int, default=None,
                        help='generated and held-out images of each FID')
    parser.add_argument('--set', action='append', metavar='[METHOD:]KEY=VALUE',
                        help='a config override (python literal), for every run or METHOD\'s')
    parser.add_argument('--out', default=None, help='default: work_dirs/diffusion_real_<preset>')
    parser.add_argument('--fmnist-root', default='/usr/share/datasets/fashion-mnist')
    parser.add_argument('--feature-epochs', type=int, default=3,
                        help='epochs of the FID feature network (trained once, cached in --out)')
    parser.add_argument('--rerun', action='store_true', help='retrain finished runs')
    parser.add_argument('--from-json', default=None, metavar='RESULTS_JSON',
                        help="print the tables of a saved results.json (e.g. "
                             "docs/diffusion_fmnist_cpu.json) with today's statistics; trains "
                             "nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        records = {m: {int(s): r for s, r in v.items()} for m, v in saved['runs'].items()}
        return print_tables(records, saved['seeds'], saved['note'],
                            f"{args.from_json}: Fashion-MNIST DDPM, {saved['preset']} preset, "
                            f"{saved['steps']} steps, seeds "
                            f"{', '.join(map(str, saved['seeds']))}")
    preset = PRESETS[args.preset]
    args.steps = args.steps or preset['steps']
    args.fid_images = args.fid_images or preset['fid_images']
    methods = [m for m in METHODS if m in set(args.methods or METHODS) | {'independent'}]
    out = Path(args.out or f'work_dirs/diffusion_real_{args.preset}').resolve()
    out.mkdir(parents=True, exist_ok=True)

    net_path = out / 'feature_net.pth'
    if net_path.is_file() and net_path.with_suffix('.json').is_file():
        info = json.loads(net_path.with_suffix('.json').read_text())
    else:
        print('[diffusion_real] training the FID feature network (tiny_cnn on the 60k training '
              'garments) ...', flush=True)
        info = train_feature_network(net_path, args.fmnist_root, args.feature_epochs)
    print(f"[diffusion_real] feature network: test top-1 {info['test_top1']:.2f} "
          f"({net_path})", flush=True)
    feature_spec = dict(model=info['model'], checkpoint=str(net_path))

    def output_dir(method, seed):
        return out / method.replace(' ', '_') / f'seed{seed}'

    teacher_dir = output_dir('independent', args.seeds[0]) / 'teacher'
    records, phases = {m: {} for m in methods}, ([], [])
    for method in methods:
        for seed in args.seeds:
            done = None if args.rerun else final_record(output_dir(method, seed))
            if done is not None:
                records[method][seed] = done
                continue
            command = run_command(method, seed, args, preset, feature_spec, teacher_dir,
                                  output_dir(method, seed))
            phases[METHODS[method][2]].append((method, seed, command,
                                               str(output_dir(method, seed))))
    started = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for phase in phases:  # online runs first: independent's teacher is the offline one
            for job, record in zip(phase, pool.map(run_one, phase)):
                records[job[0]][job[1]] = record
    frozen = records['independent'].get(args.seeds[0], {})
    for method in methods:  # offline: the frozen teacher's own numbers
        if METHODS[method][2]:
            for record in records[method].values():
                record.update({k: v for k, v in frozen.items() if k.startswith('val/teacher')})

    from distill.results import plot_seed_bars
    title = (f'Fashion-MNIST DDPM, {args.preset} preset, {args.steps} steps, seeds '
             f'{", ".join(map(str, args.seeds))}')
    note = (f"FID* = Fréchet distance in the features of {feature_spec['model']['type']} "
            f"trained here on Fashion-MNIST (test top-1 {info['test_top1']:.1f} %), "
            f'{args.fid_images} DDIM samples vs {args.fid_images} test images: not the '
            f'Inception FID of papers; lower is better')
    table, mse_table = print_tables(records, args.seeds, note, title)
    (out / 'results.json').write_text(json.dumps(dict(
        preset=args.preset, seeds=args.seeds, steps=args.steps, fid_images=args.fid_images,
        feature_network=info, overrides=args.set or [], note=note, table=table,
        mse_table=mse_table,
        runs={m: {str(s): r for s, r in v.items()} for m, v in records.items()}), indent=1))
    png = plot_seed_bars(records, args.seeds, out / 'results.png', f'{title} (FID*)',
                         metric='fid', unit='lower is better')
    grid = sample_grid(out, methods, args.seeds[0], out / 'samples.png')
    print(f'\nwrote {out / "results.json"}, {png} and {grid} ({time.time() - started:.0f} s)')
    return table


if __name__ == '__main__':
    main()
