"""Fail loudly and early: a loss term that became NaN or inf stops the run at that step."""
from __future__ import annotations

import math

import torch


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the message names the term and the step."""


def check_finite_terms(terms: dict[str, torch.Tensor], step: int, epoch: int | None = None):
    """Raise ``NonFiniteLossError`` naming every non-finite term; return the float values.

    Call it before ``backward`` so that no optimiser step (and no checkpoint) sees a NaN.
    """
    values = {name: float(value.detach()) for name, value in terms.items()}
    bad = {name: v for name, v in values.items() if not math.isfinite(v)}
    if bad:
        where = f'step {step}' + (f' (epoch {epoch})' if epoch is not None else '')
        listed = ', '.join(f'{name}={v}' for name, v in bad.items())
        raise NonFiniteLossError(f'loss term(s) became non-finite at {where}: {listed}. '
                                 f'Checkpoints written before this step are intact.')
    return values
