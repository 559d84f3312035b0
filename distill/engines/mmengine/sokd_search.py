"""SoKD's bi-level policy search on the mmengine Runner (``DistillationModel.arch_search``).

* The arch step runs inside ``DistillationModel.forward(mode='loss')``, which the plain
  ``BaseModel.train_step`` and ``MMDistributedDataParallel.train_step`` both call, so the
  search runs in multi-process training too; the hypergradients are averaged over the
  processes before the optimiser step (every process steps at the same iterations).
* The virtual step is taken on the current batch (so SoKD's teacher-output cache serves the
  training step that follows), the held-out loss on the previous one. With no previous batch
  (the first iteration of a run, or the first after ``--resume``) the current batch is split
  in two halves instead, so that step is not skipped.
* The arch optimiser's state is part of the model's state dict (``arch_search._extra_state``:
  the optimiser's own ``state_dict`` serialised into a uint8 tensor, which loads with
  ``weights_only=True``), so Runner checkpoints save it and ``--resume`` restores it.
"""
from __future__ import annotations

import io

import torch
from mmengine.logging import MessageHub
from torch import nn


def split_batch(batch: dict):
    """``(first half, second half)`` of a batch of ``inputs`` and per-sample lists, or None
    for a batch of one sample."""
    size = len(batch['inputs'])
    if size < 2:
        return None
    half = size // 2
    return tuple({key: value if value is None else value[part]
                  for key, value in batch.items()}
                 for part in (slice(0, half), slice(half, size)))


class ArchSearch(nn.Module):
    """The arch optimiser of ``distiller.arch_parameters()`` and the search schedule.

    ``search_iters``: iterations per search "epoch" (``wants_arch_step(epoch, step)``); None
    takes the Runner's epoch (epoch-based loops)."""

    def __init__(self, distiller: nn.Module, optimizer_cfg: dict, search_iters=None):
        super().__init__()
        from mmengine.registry import OPTIMIZERS
        self.params = list(distiller.arch_parameters())
        self.optimizer = OPTIMIZERS.build(dict(optimizer_cfg, params=self.params))
        self._distiller = [distiller]  # a reference, not a second registration
        self.search_iters = search_iters
        self.previous = None
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
        previous, self.previous = self.previous, batch
        if not self._distiller[0].wants_arch_step(*self.position()):
            return
        pair = (batch, previous) if previous is not None else split_batch(batch)
        if pair is None:
            return
        device_type = batch['inputs'].device.type
        with torch.autocast(device_type, enabled=False):  # differences need float32
            self.stats = self.step(*pair)

    def step(self, train_batch: dict, val_batch: dict) -> dict:
        """One outer step: the hypergradient of the student's task loss on ``val_batch``
        after a virtual step on ``train_batch`` (DESIGN 1.2), averaged over processes."""
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
        if state.numel():
            saved = torch.load(io.BytesIO(state.cpu().numpy().tobytes()), weights_only=True)
            self.optimizer.load_state_dict(saved)
