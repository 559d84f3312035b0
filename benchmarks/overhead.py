"""Cost of ADM over DML and over training the two networks independently (not a test).

    python benchmarks/overhead.py [--student resnet8x4 --teacher resnet32x4 --batch-size 64
                                   --image-size 32 --steps 30 --device auto]

The same models (same initial weights), the same batch and the same optimiser for the three
methods: independent (DML with kd=0: CE only), DML (CE + mutual KD) and online ADM (DML + the
consensus and divergence terms on one tap pair). One training step = forward of the distiller,
sum of the terms, backward, SGD step. After a warm-up the methods take one step each in turn,
in one process, and the median step time of each is reported with the ratios ADM/DML and
ADM/independent; on the CPU also the median process CPU time per step, which other jobs on a
shared machine disturb less.

Operator calls per step (``op_count.py``) for every method, and on a GPU the kernels each step
launches (what the operator count stands for).

Peak memory, on a GPU: ``torch.cuda.max_memory_allocated`` during a method's warm-up minus
what was allocated before its networks were built (its weights, gradients, optimiser state
and activations). On the CPU it is not measured: torch's allocator is invisible to
tracemalloc and the process's peak RSS cannot be reset between methods.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

try:
    import distill  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from distill import build_distiller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from op_count import autocast_context, count_aten_ops, count_cuda_kernels  # noqa: E402


def distiller_configs(student, teacher, num_classes, image_size, tap):
    networks = dict(student=dict(type=student, num_classes=num_classes),
                    teacher=dict(type=teacher, num_classes=num_classes),
                    adapter=dict(type='ClassifierAdapter', probe_input_size=image_size),
                    online=True, temperature=4.0)
    return {
        'independent': dict(networks, type='DML', loss_weights=dict(task=1.0, kd=0.0)),
        'DML': dict(networks, type='DML'),
        # no warm-up: every term at full weight, no engine to drive the schedule
        'ADM': dict(networks, type='ADM', taps=[dict(student=tap, teacher=tap)], warmup=0.0),
        'ADM shares': dict(networks, type='ADM', taps=[dict(student=tap, teacher=tap)],
                           warmup=0.0, task_shares=dict(co=0.15, di=0.03)),
    }


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def make_step(distiller, optimizer, device, amp='no'):
    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, amp):
            terms = distiller(batch)
            loss = sum(terms.values())
        loss.backward()
        optimizer.step()
    return step


def time_step(step, batch, device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one step."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    step(batch)
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--student', default='resnet8x4')
    parser.add_argument('--teacher', default='resnet32x4')
    parser.add_argument('--tap', default=None, help='module path tapped in both networks '
                        '(default: the models\' head_input, e.g. layer3)')
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=30, help='timed steps per method')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps per method first')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', 'cuda:1'")
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--amp', choices=('no', 'bf16', 'fp16'), default='no',
                        help='autocast dtype of the forward pass')
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu')
                          if args.device == 'auto' else args.device)
    if args.tap is None:
        from distill.models import build_model
        args.tap = getattr(build_model(dict(type=args.student, num_classes=2)), 'head_input',
                           'layer3')
    configs = distiller_configs(args.student, args.teacher, args.num_classes,
                                args.image_size, args.tap)
    generator = torch.Generator().manual_seed(0)
    batch = dict(inputs=torch.randn(args.batch_size, 3, args.image_size, args.image_size,
                                    generator=generator).to(device),
                 labels=torch.randint(0, args.num_classes, (args.batch_size,),
                                      generator=generator).to(device))

    steps, peak_memory, ops, kernels = {}, {}, {}, {}
    for name, cfg in configs.items():
        torch.manual_seed(0)  # the same initial networks for every method
        if device.type == 'cuda':  # what is already allocated belongs to the other methods
            torch.cuda.reset_peak_memory_stats(device)
            allocated_before = torch.cuda.memory_allocated(device)
        distiller = build_distiller(cfg).to(device).train()
        params = [p for p in distiller.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                    foreach=True)  # the CUDA default, on any device
        steps[name] = make_step(distiller, optimizer, device, args.amp)
        for _ in range(args.warmup):
            time_step(steps[name], batch, device)
        ops[name] = count_aten_ops(lambda: steps[name](batch))
        if device.type == 'cuda':  # what the operator count stands in for
            kernels[name] = count_cuda_kernels(lambda: steps[name](batch))
        if device.type == 'cuda':  # weights, gradients, optimiser state and activations
            peak_memory[name] = (torch.cuda.max_memory_allocated(device)
                                 - allocated_before) / 2**20

    # one step of each method in turn: a change of load on a shared machine hits all three
    wall, cpu = {name: [] for name in configs}, {name: [] for name in configs}
    for _ in range(args.steps):
        for name in configs:
            step_wall, step_cpu = time_step(steps[name], batch, device)
            wall[name].append(step_wall)
            cpu[name].append(step_cpu)
    median_ms = {name: 1000 * statistics.median(t) for name, t in wall.items()}
    cpu_ms = {name: 1000 * statistics.median(t) for name, t in cpu.items()}

    print(f'{args.student} (student) / {args.teacher} (teacher), batch {args.batch_size}, '
          f'{args.image_size}x{args.image_size}, tap {args.tap}, device {device}'
          + (f', {torch.get_num_threads()} CPU threads' if device.type == 'cpu' else '')
          + f', amp {args.amp}, {args.steps} timed steps per method (medians)')
    on_cpu = device.type == 'cpu'
    print(f'{"method":<12} {"operator calls":>15} {"step time (ms)":>15}'
          + (f' {"CPU time (ms)":>14}' if on_cpu else '') + f' {"peak memory (MiB)":>18}')
    for name in configs:
        memory = f'{peak_memory[name]:.0f}' if name in peak_memory else 'not measured'
        print(f'{name:<12} {ops[name]:>15d} {median_ms[name]:>15.2f}'
              + (f' {cpu_ms[name]:>14.2f}' if on_cpu else '') + f' {memory:>18}')
    print(f"ADM / DML operator calls:    {ops['ADM'] / ops['DML']:.3f}x (target <= 1.03x)")
    print(f"ADM task_shares / ADM calls: {ops['ADM shares'] / ops['ADM']:.3f}x "
          f"(+{ops['ADM shares'] - ops['ADM']} calls)")
    if kernels:
        print("GPU kernels per step:        " + ', '.join(f'{n} {k}' for n, k in kernels.items())
              + f"; ADM / DML {kernels['ADM'] / kernels['DML']:.3f}x")
    print(f"ADM / DML step time:         {median_ms['ADM'] / median_ms['DML']:.3f}x "
          f'(target <= 1.03x on a GPU at batch 64)')
    print(f"ADM / independent step time: {median_ms['ADM'] / median_ms['independent']:.3f}x")
    if on_cpu:  # process CPU time is less sensitive to other jobs on a shared machine
        print(f"ADM / DML CPU time:          {cpu_ms['ADM'] / cpu_ms['DML']:.3f}x")
        print(f"ADM / independent CPU time:  {cpu_ms['ADM'] / cpu_ms['independent']:.3f}x")
    if peak_memory:
        print(f"ADM / DML peak memory:       {peak_memory['ADM'] / peak_memory['DML']:.3f}x")
        print(f"ADM / independent memory:    "
              f"{peak_memory['ADM'] / peak_memory['independent']:.3f}x")
    return median_ms, peak_memory, ops


if __name__ == '__main__':
    main()
