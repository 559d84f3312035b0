"""``encoder_hidden_states`` for a ``UNet2DConditionModel``.

This engine trains unconditionally (images, no captions), so the conditioning is one fixed
sequence for every image: a local tensor file (e.g. the empty-prompt embedding of the teacher's
text encoder, saved with ``torch.save``; loaded with ``weights_only=True``) or zeros. A
``UNet2DModel`` gets none.
"""
from __future__ import annotations

import torch

from distill.adapters.diffusers import is_conditional
from distill.checkpoint import load_checkpoint


class Conditioning:
    """``conditioning=dict(embeddings=PATH)`` or ``dict(sequence_length=77)`` (zeros)."""

    def __init__(self, cfg, model):
        self.states = None
        if not is_conditional(model):
            return
        cfg = dict(cfg or {})
        dim = model.config.cross_attention_dim
        dim = dim[0] if isinstance(dim, (tuple, list)) else dim
        if cfg.get('embeddings'):
            states = load_checkpoint(cfg['embeddings'])
            if not isinstance(states, torch.Tensor):
                raise TypeError(f"conditioning.embeddings {cfg['embeddings']!r} must hold one "
                                f'tensor (L, D) or (1, L, D), got {type(states).__name__}')
            states = states if states.dim() == 3 else states[None]
            if states.dim() != 3 or states.shape[0] != 1 or states.shape[-1] != dim:
                raise ValueError(f"conditioning.embeddings {cfg['embeddings']!r} has shape "
                                 f'{tuple(states.shape)}; the UNet needs (1, L, {dim})')
        else:
            states = torch.zeros(1, int(cfg.get('sequence_length', 77)), dim)
        self.states = states.float()

    def batch(self, size: int, device):
        if self.states is None:
            return None
        return self.states.to(device).expand(size, -1, -1)
