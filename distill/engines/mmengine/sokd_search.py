"""SoKD's bi-level policy search on the mmengine Runner (``DistillationModel.arch_search``).

The arch step follows the one protocol of both engines (the classification engine's):
``distiller.arch_backward(train_batch, val_batch)`` with ``train_batch`` the current training
batch and ``val_batch`` a batch of a second, separate shuffle of the training set, reseeded
for every search epoch (``ShuffledTrainBatches``).

* The arch step runs inside ``DistillationModel.forward(mode='loss')``, which the plain
  ``BaseModel.train_step`` and ``MMDistributedDataParallel.train_step`` both call, so the
  search runs in multi-process training too; the hypergradients are averaged over the
  processes before the optimiser step (every process steps at the same iterations).
* The val batch of (search epoch ``e``, step ``s``) is the ``s``-th batch of this process's
  share of the permutation seeded by (Runner seed, ``e``): a pure function of the position, so
  a resumed run draws the same val batches as an uninterrupted one, with nothing to replay,
  and the processes of a run draw disjoint samples. ``distill.ArchBatchesHook`` gives the
  search that source (the Runner's train dataset, collate function, batch size and seed, and
  the model's data preprocessor) when training starts; ``tasks/*/train.py`` add the hook, a
  plain ``tools/train.py`` run of a SoKD config gets it from the config's ``custom_hooks``.
* The arch optimiser's state is part of the model's state dict (``arch_search._extra_state``:
  the optimiser's own ``state_dict`` serialised into a uint8 tensor, which loads with
  ``weights_only=True``), so Runner checkpoints save it and ``--resume`` restores it.
"""
from __future__ import annotations

import io
import logging
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, print_log
from mmengine.model import is_model_wrapper
from torch import nn

from distill.engines.core.data_order import derive_seed, seeded_permutation, shard
from distill.engines.core.optimizers import apply_config_over_restored
from distill.registry import HOOKS


class ShuffledTrainBatches:
    """``batches(epoch, step)``: the ``step``-th batch (wrapping around) of this process's share
    of a permutation of ``dataset`` seeded by (``seed``, ``epoch``), collated and prepared
    (``prepare``: the model's data preprocessor) like a training batch."""

    def __init__(self, dataset, collate_fn, batch_size: int, seed, prepare,
                 rank: int = 0, world_size: int = 1):
        self.dataset, self.collate_fn, self.prepare = dataset, collate_fn, prepare
        self.batch_size, self.seed = int(batch_size), seed
        self.rank, self.world_size = rank, world_size
        self._order = (None, [])

    def order(self, epoch: int) -> list:
        if self._order[0] != epoch:
            # the trainer core's seeding rule: a function of (seed, epoch, stream) only
            permutation = seeded_permutation(len(self.dataset), self.seed, epoch, 'arch-val')
            # equal shares (a share never empty), as the training loader's sampler pads
            share = shard(permutation, self.rank, self.world_size, 'pad')
            self._order = (epoch, share)
        return self._order[1]

    def indices(self, epoch: int, step: int) -> list:
        order = self.order(epoch)
        start = step * self.batch_size
        return [order[(start + j) % len(order)] for j in range(self.batch_size)]

    def __call__(self, epoch: int, step: int) -> dict:
        # the pipeline's random augmentation (numpy / random) is seeded by the position and
        # leaves the global streams as they were: the training batches' augmentation is the
        # same with or without arch steps, and a resumed run (which replays only those) agrees
        seed = derive_seed(self.seed, epoch, 'arch-augment', step, self.rank)
        numpy_state, python_state = np.random.get_state(), random.getstate()
        np.random.seed(seed % 2 ** 32)
        random.seed(seed)
        try:
            samples = [self.dataset[index] for index in self.indices(epoch, step)]
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
        return self.prepare(self.collate_fn(samples))


class ArchSearch(nn.Module):
    """The arch optimiser of ``distiller.arch_parameters()`` and the search schedule.

    ``search_iters``: iterations per search "epoch" (``wants_arch_step(epoch, step)``); None
    takes the Runner's epoch (epoch-based loops). ``val_batches(epoch, step)`` gives the val
    batch of an arch step (set by ``ArchBatchesHook``)."""

    def __init__(self, distiller: nn.Module, optimizer_cfg: dict, search_iters=None):
        super().__init__()
        from mmengine.registry import OPTIMIZERS
        self.params = list(distiller.arch_parameters())
        self.optimizer = OPTIMIZERS.build(dict(optimizer_cfg, params=self.params))
        self._distiller = [distiller]  # a reference, not a second registration
        self.search_iters = search_iters
        self.val_batches = None
        self.stats = {}
        # off between arch steps: DDP ignores them and the main backward leaves them alone
        for param in self.params:
            param.requires_grad_(False)

    def position(self) -> tuple[int, int]:
        """(epoch counted from 1, step in that epoch), as ``wants_arch_step`` takes."""
        hub = MessageHub.get_current_instance()
        step = int(hub.get_info('iter', 0))
        if self.search_iters:
            return step // self.search_iters + 1, step % self.search_iters
        return int(hub.get_info('epoch', 0) or 0) + 1, step

    def maybe_step(self, batch: dict) -> None:
        """Before the training forward on ``batch``: an arch step if the schedule wants one
        (its logs in ``self.stats`` until ``pop_stats``)."""
        epoch, step = self.position()
        if not self._distiller[0].wants_arch_step(epoch, step):
            return
        if self.val_batches is None:
            raise RuntimeError("SoKD's arch step needs val batches from the training set: add "
                               "dict(type='distill.ArchBatchesHook') to the config's "
                               "custom_hooks (tasks/*/train.py adds it)")
        val_batch = self.val_batches(epoch, step)
        device_type = batch['inputs'].device.type
        with torch.autocast(device_type, enabled=False):  # differences need float32
            self.stats = self.step(batch, val_batch)

    def step(self, train_batch: dict, val_batch: dict) -> dict:
        """One outer step: the hypergradient of the student's task loss on ``val_batch``
        after a virtual step on ``train_batch`` (README, "SoKD"), averaged over processes."""
        from mmengine.dist import all_reduce, get_world_size
        for param in self.params:
            param.requires_grad_(True)
        try:
            self.optimizer.zero_grad()
            stats = self._distiller[0].arch_backward(train_batch, val_batch)
            if get_world_size() > 1:
                for param in self.params:
                    if param.grad is None:
                        param.grad = torch.zeros_like(param)
                    all_reduce(param.grad, op='mean')
            self.optimizer.step()
        finally:
            for param in self.params:
                param.requires_grad_(False)
                param.grad = None
        return stats

    def pop_stats(self) -> dict:
        stats, self.stats = self.stats, {}
        return stats

    # the optimiser state travels in the model's state dict
    def get_extra_state(self) -> torch.Tensor:
        buffer = io.BytesIO()
        torch.save(self.optimizer.state_dict(), buffer)
        return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)

    def set_extra_state(self, state) -> None:
        if not torch.is_tensor(state) or state.dtype != torch.uint8:
            raise TypeError(f'arch_search._extra_state must be the uint8 tensor that '
                            f'get_extra_state writes, got {type(state).__name__}')
        if not state.numel():
            return
        saved = torch.load(io.BytesIO(state.cpu().numpy().tobytes()), weights_only=True)
        # the config's settings (lr, betas, weight decay) win over the saved ones: the core's
        # rule for a restored optimiser without a schedule (the Accelerate engine's arch
        # optimiser is restored by it too); an override on resume is not dropped
        configured = {k: v for k, v in self.optimizer.param_groups[0].items() if k != 'params'}
        self.optimizer.load_state_dict(saved)
        changes = apply_config_over_restored(self.optimizer, configured,
                                             what='model.arch_optimizer')
        if changes:
            print_log('--resume: ' + '; '.join(changes), logger='current',
                      level=logging.WARNING)


@HOOKS.register_module()
class ArchBatchesHook(Hook):
    """Gives a SoKD model's ``arch_search`` its val batches (``ShuffledTrainBatches`` over the
    Runner's train dataset) when training starts; nothing for other models."""

    def before_train(self, runner) -> None:
        from mmengine.dist import get_dist_info
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        search = getattr(model, 'arch_search', None)
        if search is None:
            return
        loader = runner.train_dataloader
        rank, world_size = get_dist_info()
        # a loader built on a batch sampler (MMDetection's AspectRatioBatchSampler) has no
        # batch_size of its own: its sampler has
        batch_size = loader.batch_size or loader.batch_sampler.batch_size
        search.val_batches = ShuffledTrainBatches(
            loader.dataset, loader.collate_fn, batch_size, runner.seed,
            prepare=lambda data: model.data_preprocessor(data, True),
            rank=rank, world_size=world_size)
