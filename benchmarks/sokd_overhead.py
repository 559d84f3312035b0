"""Cost of SoKD+FitNet against FitNet alone: operator calls and time per step, arch_interval 1
and 10.

    python benchmarks/sokd_overhead.py [--student resnet8x4 --teacher resnet32x4]
        [--batch-size 32] [--steps 20] [--hypergrad factored] [--device cuda]
        [--amp bf16] [--dam-interval 0] [--anchor-interval 1] [--dam-compile]

One training step as the classification engine does it: (every ``arch_interval`` steps) the
policy's hypergradient and Adam step (in float32, as the engine runs it), then forward (under
``--amp`` autocast), backward and an SGD step. For each set-up it prints

* ``ops/step``: ``aten::`` operator calls per step (``op_count.py``), averaged over 10
  consecutive steps, so the interval-10 arch step is amortised exactly. At CIFAR sizes a GPU
  step is bound by kernel launches, so this device-independent count predicts the GPU's step
  time ratio where a CPU's wall time does not; beside it, the calls of a training step alone
  and of a step with an arch step (the arch step, then the training step on the same batch,
  whose frozen teacher outputs come from the arch step);
* ``GPU kernels/step`` (on a CUDA device): the kernels, copies and memsets the step puts on
  the GPU, what the operator count stands for;
* ``ms/step``: mean wall time (CUDA-synchronised on a GPU). The set-ups share one process and
  are timed in turn, step by step (round robin), so a busy machine slows them alike;

and both ratios to FitNet. SoKD runs as the classification configs set it (one sampled DAFA op
per step, the 'factored' hypergradient, DAM off) unless ``--dam-interval k`` (DAM in one
training step of k) / ``--anchor-interval`` / ``--dam-compile`` (``dam.compile``: DAM's pass
functions through ``torch.compile``; the compiling happens in the warm-up steps) / ``--mix``
say otherwise.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from op_count import autocast_context, count_aten_ops, count_cuda_kernels  # noqa: E402

from distill import build_distiller  # noqa: E402

ARCH_INTERVALS = (1, 10)


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
    parser.add_argument('--hypergrad', default='factored',
                        choices=['factored', 'exact', 'finite_difference'])
    parser.add_argument('--dam-interval', type=int, default=0,
                        help="SoKD's dam interval (DAM in one training step of k); 0: DAM off, "
                             "the classification configs' setting")
    parser.add_argument('--anchor-interval', type=int, default=1,
                        help="SoKD's dam anchor_interval")
    parser.add_argument('--dam-compile', action='store_true',
                        help="SoKD's dam compile=True (DAM's pass through torch.compile)")
    parser.add_argument('--mix', action='store_true',
                        help='train steps on the whole DAFA mixture (dafa sample=False)')
    parser.add_argument('--amp', choices=('no', 'bf16', 'fp16'), default='no',
                        help='autocast of the training forward')
    parser.add_argument('--no-timing', action='store_true', help='operator counts only')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args(argv)


def build(args, arch_interval):
    torch.manual_seed(0)
    base = dict(type='FitNet', student=dict(type=args.student, num_classes=args.num_classes),
                teacher=dict(type=args.teacher, num_classes=args.num_classes),
                adapter=dict(type='ClassifierAdapter', probe_input_size=args.image_size),
                taps=[dict(student=args.tap, teacher=args.tap)],
                random_teacher=True)  # a cost measurement: the teacher's weights do not matter
    cfg = base if arch_interval is None else dict(
        type='SoKD', base=base, arch_interval=arch_interval, search_epochs=1,
        hypergrad=args.hypergrad, dafa=dict(sample=not args.mix),
        dam=None if args.dam_interval == 0 else dict(interval=args.dam_interval,
                                                     anchor_interval=args.anchor_interval,
                                                     compile=args.dam_compile))
    distiller = build_distiller(cfg).to(args.device).train()
    arch = list(distiller.arch_parameters()) if hasattr(distiller, 'arch_parameters') else []
    main = [p for p in distiller.parameters()
            if p.requires_grad and all(p is not a for a in arch)]
    optimizer = torch.optim.SGD(main, lr=0.05, momentum=0.9, foreach=True)  # CUDA's default
    arch_optimizer = (torch.optim.Adam(arch, lr=0.05, betas=(0.5, 0.999), weight_decay=0.0,
                                       foreach=True)
                      if arch else None)
    return distiller, optimizer, arch_optimizer


def make_batches(args, count):
    g = torch.Generator().manual_seed(0)
    return [dict(inputs=torch.rand(args.batch_size, 3, args.image_size, args.image_size,
                                   generator=g).to(args.device),
                 labels=torch.randint(0, args.num_classes, (args.batch_size,),
                                      generator=g).to(args.device))
            for _ in range(count)]


def train_step(setup, step, batch, val_batch, device, amp):
    distiller, optimizer, arch_optimizer = setup
    if arch_optimizer is not None and distiller.wants_arch_step(1, step):
        arch_optimizer.zero_grad(set_to_none=True)
        distiller.arch_backward(batch, val_batch)  # float32, as the engine runs it
        arch_optimizer.step()
    with autocast_context(torch.device(device), amp):
        terms = distiller(batch)
    optimizer.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    optimizer.step()


def sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def count_ops(setup, batches, args, counter=count_aten_ops) -> list[int]:
    """``aten::`` calls (or, with ``count_cuda_kernels``, GPU kernels) of steps 0..9 (one arch
    step, in step 0, at interval 10)."""
    return [counter(lambda: train_step(setup, step, batches[step % 4],
                                       batches[(step + 1) % 4], args.device, args.amp))
            for step in range(10)]


def main(argv=None):
    args = parse_args(argv)
    setups = {'FitNet': build(args, None)}
    for interval in ARCH_INTERVALS:
        setups[f'SoKD+FitNet (arch_interval {interval})'] = build(args, interval)
    batches = make_batches(args, 4)
    for name, setup in setups.items():  # warm-up (lazy inits, allocator, autotuning)
        for step in range(args.warmup):
            train_step(setup, step, batches[step % 4], batches[(step + 1) % 4], args.device,
                       args.amp)
    step_ops = {name: count_ops(setup, batches, args) for name, setup in setups.items()}
    ops = {name: sum(counts) / len(counts) for name, counts in step_ops.items()}
    kernels = {}
    if str(args.device).startswith('cuda'):  # what the operator count stands in for
        kernels = {name: statistics.mean(count_ops(setup, batches, args, count_cuda_kernels))
                   for name, setup in setups.items()}
    times = {name: [] for name in setups}
    # whole intervals of 10 keep the arch-step share of the interval-10 set-up exact
    total = 0 if args.no_timing else 10 * max(1, round(args.steps / 10))
    for step in range(total):
        for name, setup in setups.items():
            batch, val_batch = batches[step % 4], batches[(step + 1) % 4]
            sync(args.device)
            start = time.perf_counter()
            train_step(setup, step, batch, val_batch, args.device, args.amp)
            sync(args.device)
            times[name].append(time.perf_counter() - start)
    device = torch.cuda.get_device_name() if str(args.device).startswith('cuda') else \
        args.device
    print(f'{args.teacher} -> {args.student}, batch {args.batch_size}, {args.image_size}px, '
          f'{device}, amp {args.amp}, hypergrad={args.hypergrad}, dam interval '
          f'{args.dam_interval or "off"}, anchor_interval {args.anchor_interval}, '
          f'{"compiled DAM, " if args.dam_compile else ""}'
          f'{"mixture" if args.mix else "sampled op"}; {total} timed steps each')
    for name in setups:
        line = f'  {name:32s} {ops[name]:8.0f} ops/step  ratio {ops[name] / ops["FitNet"]:.2f}x'
        if name != 'FitNet':  # at interval 10 steps 1..9 have no arch step
            train_only = statistics.mean(step_ops[name][1:]) if 'interval 10' in name else None
            line += (f'  (with an arch step {step_ops[name][0]}' +
                     (f', training step alone {train_only:.0f})' if train_only else ')'))
        if kernels:
            line += (f'  {kernels[name]:7.0f} GPU kernels/step ratio '
                     f'{kernels[name] / kernels["FitNet"]:.2f}x')
        if times[name]:
            mean, base = statistics.mean(times[name]), statistics.mean(times['FitNet'])
            line += f'   {1000 * mean:8.1f} ms/step  ratio {mean / base:.2f}x'
        print(line, flush=True)


if __name__ == '__main__':
    main()
