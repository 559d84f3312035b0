"""One epoch of Fashion-MNIST's 60k training images read by the classification engine's two
paths, the per-sample DataLoader (the baseline) and the set held on the device
(``data.on_device``, README "Classification"), and their ratio, measured in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_loading.py [--device cuda] [--batch-size 128]

Needs the Debian package dataset-fashion-mnist.
"""
from __future__ import annotations

import argparse
import time

import torch

from distill.data.fmnist import FashionMNIST
from distill.engines.classification.data import ShardedBatches, hold_on_device, make_loader


def read_epoch(data, batches, device, held) -> float:
    start = time.perf_counter()
    for batch in make_loader(data, batches, 'training', 1, held=held):
        batch['inputs'].to(device, non_blocking=True)
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=128)
    args = parser.parse_args(argv)
    data = FashionMNIST(train=True, channels=1)
    batches = ShardedBatches(len(data), args.batch_size, True, 0).batches(1)
    loader = read_epoch(data, batches, args.device, None)
    held = read_epoch(data, batches, args.device, hold_on_device(data, args.device, True))
    print(f'{len(data)} images, batches of {args.batch_size}, {args.device}: per-sample '
          f'DataLoader {loader:.2f} s, held on the device {held:.2f} s, ratio {held / loader:.2f}x')


if __name__ == '__main__':
    main()
