"""Step time of SoKD+FitNet against FitNet alone, with arch_interval 1 and 10.

    python benchmarks/sokd_overhead.py [--student resnet8x4 --teacher resnet32x4]
        [--batch-size 32] [--steps 20] [--hypergrad exact] [--device cpu]

One training step as the classification engine does it: (every ``arch_interval`` steps) the
policy's hypergradient and Adam step, then forward, backward and an SGD step. The three
set-ups share one process and are timed in turn, step by step (round robin), so a busy machine
slows them alike; mean step times are compared (the arch step's cost amortised over its
interval). Prints one line per set-up and the
ratios to FitNet.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill import build_distiller  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--student', default='resnet8x4')
    parser.add_argument('--teacher', default='resnet32x4')
    parser.add_argument('--tap', default='layer3', help='module path in both networks')
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=20, help='timed steps per set-up')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--hypergrad', default='exact',
                        choices=['exact', 'finite_difference'])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args(argv)


def build(args, sokd_interval):
    torch.manual_seed(0)
    base = dict(type='FitNet', student=dict(type=args.student, num_classes=args.num_classes),
                teacher=dict(type=args.teacher, num_classes=args.num_classes),
                adapter=dict(type='ClassifierAdapter', input_size=args.image_size),
                taps=[dict(student=args.tap, teacher=args.tap)])
    cfg = base if sokd_interval is None else dict(
        type='SoKD', base=base, arch_interval=sokd_interval, search_epochs=1,
        hypergrad=args.hypergrad)
    distiller = build_distiller(cfg).to(args.device).train()
    arch = list(distiller.arch_parameters()) if hasattr(distiller, 'arch_parameters') else []
    main = [p for p in distiller.parameters()
            if p.requires_grad and all(p is not a for a in arch)]
    optimizer = torch.optim.SGD(main, lr=0.05, momentum=0.9)
    arch_optimizer = (torch.optim.Adam(arch, lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
                      if arch else None)
    return distiller, optimizer, arch_optimizer


def make_batches(args, count):
    g = torch.Generator().manual_seed(0)
    return [dict(inputs=torch.rand(args.batch_size, 3, args.image_size, args.image_size,
                                   generator=g).to(args.device),
                 labels=torch.randint(0, args.num_classes, (args.batch_size,),
                                      generator=g).to(args.device))
            for _ in range(count)]


def train_step(setup, step, batch, val_batch):
    distiller, optimizer, arch_optimizer = setup
    if arch_optimizer is not None and distiller.wants_arch_step(1, step):
        arch_optimizer.zero_grad(set_to_none=True)
        distiller.arch_backward(batch, val_batch)
        arch_optimizer.step()
    terms = distiller(batch)
    optimizer.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    optimizer.step()


def sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def main(argv=None):
    args = parse_args(argv)
    setups = {'FitNet': build(args, None), 'SoKD+FitNet (interval 1)': build(args, 1),
              'SoKD+FitNet (interval 10)': build(args, 10)}
    batches = make_batches(args, 4)
    times = {name: [] for name in setups}
    # whole intervals of 10 keep the arch-step share of the interval-10 set-up exact
    total = args.warmup + 10 * max(1, round(args.steps / 10))
    for step in range(total):
        for name, setup in setups.items():
            batch, val_batch = batches[step % 4], batches[(step + 1) % 4]
            sync(args.device)
            start = time.perf_counter()
            train_step(setup, step - args.warmup, batch, val_batch)
            sync(args.device)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)
    print(f'{args.teacher} -> {args.student}, batch {args.batch_size}, '
          f'{args.image_size}px, {args.device}, hypergrad={args.hypergrad}, '
          f'{len(times["FitNet"])} timed steps each (mean step time)')
    base = statistics.mean(times['FitNet'])
    for name, values in times.items():
        mean = statistics.mean(values)
        print(f'  {name:28s} {1000 * mean:8.1f} ms/step   ratio {mean / base:.2f}x')


if __name__ == '__main__':
    main()
