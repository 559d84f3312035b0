"""What the trainer core costs beyond the step it runs: Trainer vs a bare loop (not a test).

    python benchmarks/trainer_overhead.py [--method ADM --student tiny_cnn --teacher tiny_cnn
                                           --batch-size 64 --steps 20 --log-every 10]

The same distiller (same initial weights), the same batches held in memory and the same SGD
optimiser, run ``--steps`` optimiser steps twice: by a bare loop (forward, sum of the terms,
backward, step, zero_grad) and by ``distill.engines.core.trainer.Trainer`` (Accelerate's
``accumulate``, the deferred NaN guard with the state flag of every step, the lr schedule,
the progress bar, a log read every ``--log-every`` steps; no evaluation, no checkpoint). Prints
the ``aten::`` operator calls per step of each (``op_count.py``: the launch-bound cost a GPU
would see), their ratio, the wall time per step of each and its ratio, and the host reads of
tensors the trainer made (``.item``/``.tolist``/``bool``/``float``/``.cpu``).

The operator calls per step are counted twice: over a run of ``--steps`` (what a run that
short pays, its one-time set-up included: the trainer's first step lists the state tensors of
the NaN guard, two calls per tensor) and in the steady state, the calls of a run of
``2 * --steps`` less those of a run of ``--steps``, over ``--steps`` (what every further step of
a long run pays).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from op_count import count_aten_ops  # noqa: E402

READS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'cpu', 'numpy')


def build(args, device):
    from distill import build_distiller
    torch.manual_seed(0)
    widths = dict(student=dict(width=8), teacher=dict(width=24)) if args.student == 'tiny_cnn' \
        else dict(student={}, teacher={})
    networks = {side: dict(type=getattr(args, side), num_classes=10, **widths[side])
                for side in ('student', 'teacher')}
    cfg = dict(type=args.method, adapter=dict(type='ClassifierAdapter', probe_input_size=32),
               online=True, **networks)
    if args.method == 'ADM':
        cfg.update(taps='auto', warmup=0.0)
    distiller = build_distiller(cfg).to(device).train()
    optimizer = torch.optim.SGD(distiller.parameters(), lr=0.01, momentum=0.9, foreach=True)
    return distiller, optimizer


def batches(args, device, count):
    g = torch.Generator().manual_seed(1)
    return [dict(inputs=torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device),
                 labels=torch.randint(0, 10, (args.batch_size,), generator=g).to(device))
            for _ in range(count)]


def bare_loop(distiller, optimizer, data):
    for batch in data:
        loss = sum(distiller(batch).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def trainer_loop(args, distiller, data, work_dir, steps=None):
    from distill.engines.core.runtime import make_accelerator
    from distill.engines.core.task import Task, TrainSettings
    from distill.engines.core.trainer import Trainer

    class InMemory(Task):  # the batches as they are (batch_size=None: no collation)
        def train_loader(self, trainer, epoch):
            return torch.utils.data.DataLoader(data, batch_size=None)

    accelerator = make_accelerator(work_dir, cpu=args.device == 'cpu', log_with=None)
    settings = TrainSettings(max_steps=steps or args.steps, schedule_by_epoch=False,
                             checkpoint_every_epochs=None, eval_every_epochs=None,
                             log_every_steps=args.log_every, progress_bar=False)
    trainer = Trainer(InMemory(), distiller, accelerator, settings, work_dir,
                      dict(type='SGD', lr=0.01, momentum=0.9, foreach=True),
                      [dict(type='ConstantLR', factor=1.0, by_epoch=False)])
    return trainer.run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--method', default='ADM', choices=('ADM', 'DML'))
    parser.add_argument('--student', default='tiny_cnn')
    parser.add_argument('--teacher', default='tiny_cnn')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--log-every', type=int, default=10)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    data = batches(args, device, 2 * args.steps)
    results = {}
    for name in ('bare loop', 'trainer'):
        distiller, optimizer = build(args, device)
        bare_loop(distiller, optimizer, data[:2])  # warm-up (kernels, allocator)
        with tempfile.TemporaryDirectory() as work_dir:
            if name == 'bare loop':
                def fresh_run(steps=args.steps):
                    return lambda: bare_loop(distiller, optimizer, data[:steps])
            else:  # a new Trainer each time: each runs its steps from step 0
                def fresh_run(steps=args.steps):
                    return trainer_loop(args, distiller, data[:steps], work_dir, steps)
            fresh_run()()  # warm-up of the loop itself
            reads = _count_reads(fresh_run())
            ops = count_aten_ops(fresh_run())
            steady = (count_aten_ops(fresh_run(2 * args.steps)) - ops) / args.steps
            run = fresh_run()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            results[name] = (ops / args.steps, steady,
                             (time.perf_counter() - start) / args.steps, reads)
    (bare_ops, bare_steady, bare_time, bare_reads), (ops, steady, step_time, reads) = (
        results['bare loop'], results['trainer'])
    print(f'{args.method} {args.student} -> {args.teacher}, batch {args.batch_size}, '
          f'{args.steps} steps, log every {args.log_every}, {device}')
    print(f'  bare loop: {bare_ops:.0f} operator calls per step ({bare_steady:.0f} steady), '
          f'{1000 * bare_time:.1f} ms, {bare_reads} host reads in {args.steps} steps')
    print(f'  trainer:   {ops:.0f} operator calls per step ({steady:.0f} steady), '
          f'{1000 * step_time:.1f} ms, {reads} host reads in {args.steps} steps')
    print(f'  ratio trainer / bare loop: operator calls {ops / bare_ops:.3f}x (steady state '
          f'{steady / bare_steady:.3f}x), time {step_time / bare_time:.3f}x')
    return results


def _count_reads(run) -> int:
    count = [0]
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name):
        def read(self, *args, **kwargs):
            count[0] += 1
            return originals[name](self, *args, **kwargs)
        return read
    try:
        for name in READS:
            setattr(torch.Tensor, name, counting(name))
        run()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return count[0]


if __name__ == '__main__':
    main()
