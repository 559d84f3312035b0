"""``distill.FiniteStateHook``: on the mmengine Runner, a checkpoint is only written from finite
weights, and the iteration where a weight or buffer first became NaN/inf is named.

A loss can stay finite (1e27) while the optimiser step it drives leaves ``inf`` in a weight or a
BatchNorm ``running_var``; ``DistillationModel.parse_losses`` only sees the next forward's NaN.
This hook runs the classification engine's check (``distill.engines.core.guards``) on the Runner:

* ``after_train_iter`` (every ``interval`` iterations, default every one): the parameters and
  buffers of the (unwrapped) model. It runs before ``CheckpointHook`` (priority NORMAL before
  VERY_LOW), so the iteration's checkpoint is not written from broken state, and the error names
  the first non-finite tensor, the iteration and that iteration's logged loss terms;
* ``before_save_checkpoint``: the model and the optimiser state (momenta, Adam moments), right
  before ``Runner.save_checkpoint`` writes the file (the file is then not written).

``tasks/{segmentation,detection}/train.py`` add it to every config's ``custom_hooks``; a plain
``tools/train.py`` run gets it with ``custom_hooks = [dict(type='distill.FiniteStateHook')]``.
In a multi-process run every process raises in ``after_train_iter`` when any one finds a bad
tensor (an all-reduce of one flag), so none is left waiting in a collective.
"""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from distill.engines.core.guards import check_finite_state
# the other distill.* hooks, registered when the HOOKS registry imports this module
from distill.engines.mmengine.resume import ResumeHook  # noqa: F401
from distill.engines.mmengine.sokd_search import ArchBatchesHook  # noqa: F401
from distill.registry import HOOKS


def _model(runner):
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def _optimizers(runner) -> list:
    wrapper = getattr(runner, 'optim_wrapper', None)
    if wrapper is None or isinstance(wrapper, dict):  # not built yet (a config dict)
        return []
    if hasattr(wrapper, 'optim_wrappers'):  # OptimWrapperDict
        return [w.optimizer for w in wrapper.optim_wrappers.values()]
    return [wrapper.optimizer] if hasattr(wrapper, 'optimizer') else []


def _reduce():
    from mmengine.dist import all_reduce, get_world_size
    if get_world_size() <= 1:
        return None

    def reduce(flag):
        all_reduce(flag, op='sum')
        return flag
    return reduce


def _values(outputs) -> dict | None:
    if not isinstance(outputs, dict):
        return None
    values = {}
    for name, value in outputs.items():
        try:
            values[name] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return values or None


@HOOKS.register_module()
class FiniteStateHook(Hook):
    """Stop training, naming the tensor and the iteration, when a parameter or buffer (or, before
    a checkpoint, an optimiser moment) holds a NaN or inf; see the module docstring.

    Args:
        interval: check the weights after every ``interval`` training iterations (0: only
            before checkpoints).
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW) in after_train_iter

    def __init__(self, interval: int = 1):
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval and self.every_n_train_iters(runner, self.interval):
            # runner.iter is the 0-based index of the iteration that just ran; the log line
            # (Iter(train) [n/N]) and the checkpoint (iter_n.pth) of it say n = runner.iter + 1
            check_finite_state(_model(runner), step=runner.iter + 1, values=_values(outputs),
                               reduce=_reduce(), when='after the optimiser step')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner.save_checkpoint is master_only: this runs on rank 0 alone, so no collective
        # (the weights were already checked on every process in after_train_iter; what is new
        # here is the optimiser state, and torchrun ends the other ranks when rank 0 fails)
        step = checkpoint.get('meta', {}).get('iter', runner.iter)
        model = _model(runner)
        for optimizer in _optimizers(runner) or [None]:
            check_finite_state(model, step=step, optimizer=optimizer,
                               when='(found before writing its checkpoint)')
