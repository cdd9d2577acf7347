"""Attention-based pooling of a sequence into one vector (reusable by any model).

Mirsamadi, Barsoum & Zhang (ICASSP 2017, "local attention"), the pooling 003 §4.2 cites as [40]:
    α_t = softmax_t(uᵀ y_t),   z = Σ_t α_t y_t
with one learnable vector u. `hidden=n` gives the additive variant α_t = softmax_t(wᵀ tanh(W y_t + b))
(Bahdanau-style scoring) for models that want it.

The softmax runs only over valid steps (mask True) through blocks.py's `masked_softmax`, so a sequence
without any valid step pools to an exact zero vector (no NaN), the same convention as `masked_mean`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.blocks import masked_softmax


class AttentionPooling(nn.Module):
    """forward(x [B,T,d], mask [B,T] True=valid or None) -> [B,d]; `last_weights` holds α [B,T]."""

    def __init__(self, d_model: int, hidden: int | None = None) -> None:
        super().__init__()
        if hidden is None:
            self.score = nn.Linear(d_model, 1, bias=False)  # uᵀ y_t ([40])
        else:
            self.score = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        self.last_weights: Tensor | None = None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        scores = self.score(x).squeeze(-1)  # [B,T]
        allowed = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
        weights = masked_softmax(scores, allowed)
        self.last_weights = weights.detach()
        # where() rather than a product: a non-finite value at an invalid step cannot leak in as 0·inf
        x = torch.where(allowed.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        return (weights.unsqueeze(-1) * x).sum(dim=1)
