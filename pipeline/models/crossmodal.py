"""Cross-modal Transformer of Parthasarathy & Sundaram (ICMI 2020, seed 002), generalised to M modalities.

002 §2.1: each modality passes through its own branch of self-attention encoder layers; a cross-modal
attention layer lets each modality's queries attend to the other modality's keys/values; the
cross-modal outputs are "added back to the corresponding encoder representations using learnable
scalar weights α and β"; "the overall representation … is the sum of the individual components"; a
dense layer gives the predictions. For M modalities there is one attention component and one
learnable scalar per ordered pair (i attends to j), which is α, β for M = 2.

Defaults from 002 §3.3: 2 self-attention layers per branch, 512 nodes, 4 heads (Adam, lr 1e-4 live in
`TrainParams`). Where the paper is silent we choose, and say so:
- per-modality input projection Linear(D_m → d_model) + sinusoidal positions (002 feeds 4,096-d video
  and 3,900-d audio into 512-node branches without saying how; Vaswani et al. [23] positions);
- post-LN encoder layers with a 4·d_model ReLU feed-forward block and scaled dot products ([23]; 002
  Eq. 1 writes σ(KQᵀ)V without the 1/√d);
- the cross-modal scalars start at 1.0 (a plain residual sum);
- 002 predicts arousal/valence per frame; this first scope classifies whole clips, so the fused
  per-step representation is averaged over the steps where ANY modality is present (masked mean)
  before the dense layer. The paper has no pooling step.

Missing modalities: the model masks what its mask says is absent (True = present) out of every
attention, so those steps are never attended to, and each modality's component is zeroed where that modality is absent. A modality whose
mask is all False for a sample therefore contributes exactly nothing, and a modality left out of the
input dict gives the same output as one that is fully masked. Which steps the mask calls absent is the
input convention (`missing_input`, pipeline/missing/inputs.py): 002 zeroes ablated frames and does not
tell the model (§2.2, §3.1), so the default is "zero" (mask = padding only); "mask" masks them out.
Layouts: one grid (the fused representation is a per-step sum).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pipeline.models.blocks import (
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    TransformerEncoder,
    check_inputs,
    masked_mean,
)
from pipeline.models.registry import ModelParams


class Params(ModelParams):
    """Hyper-parameters; defaults from 002 §3.3 where it gives them."""

    missing_input: Literal["mask", "zero", "token"] = Field(
        "zero", description="002 §2.2, §3.1: ablated clips/frames are zeroed, the model is not told"
    )
    d_model: int = Field(512, ge=8, description="002 §3.3: 512 nodes")
    layers: int = Field(2, ge=1, description="002 §3.3: 2 self-attention layers per branch")
    heads: int = Field(4, ge=1, description="002 §3.3: 4 heads")
    dropout: float = Field(0.1, ge=0, lt=1, description="paper silent")


def build(dims: dict[str, int], n_outputs: int, task: str, params: Params) -> "CrossModalTransformer":
    return CrossModalTransformer(
        dims, n_outputs, d_model=params.d_model, layers=params.layers, heads=params.heads, dropout=params.dropout,
        per_step=task == "regression",
    )


def _pair(i: str, j: str) -> str:
    return f"{i}__to__{j}"


class CrossModalTransformer(nn.Module):
    """forward(x: {mod: [B,T,D_m]}, mask: {mod: bool [B,T]}) -> [B, n_outputs] (per_step: [B, T, n_outputs]),
    any subset of mods."""

    def __init__(
        self,
        dims: dict[str, int],
        n_outputs: int,
        d_model: int = 512,  # 002 §3.3
        layers: int = 2,  # 002 §3.3
        heads: int = 4,  # 002 §3.3
        dropout: float = 0.1,  # paper silent
        ff_dim: int | None = None,  # paper silent: 4·d_model as in [23]
        cross_init: float = 1.0,  # paper silent
        per_step: bool = False,  # time-continuous output (002's own task) instead of one per clip
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("CrossModalTransformer needs at least one modality")
        self.per_step = per_step
        self.modalities = list(dims)
        self.dims = dict(dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in dims.items()})
        self.pos = SinusoidalPositionalEncoding(d_model)
        self.embed_drop = nn.Dropout(dropout)
        self.encoders = nn.ModuleDict(
            {m: TransformerEncoder(d_model, heads, layers, ff_dim, dropout) for m in self.modalities}
        )
        pairs = [_pair(i, j) for i in self.modalities for j in self.modalities if i != j]
        self.cross = nn.ModuleDict({p: MultiHeadAttention(d_model, heads, dropout) for p in pairs})
        self.cross_weight = nn.ParameterDict({p: nn.Parameter(torch.tensor(float(cross_init))) for p in pairs})
        self.out_drop = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, n_outputs)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> Tensor:
        present = check_inputs(x, mask, self.modalities)

        enc: dict[str, Tensor] = {}
        for m in present:
            valid = mask[m].bool()
            # values at absent steps are never read; fill them so a stray NaN/inf cannot leak via 0·x
            h = self.proj[m](x[m].masked_fill(~valid.unsqueeze(-1), 0.0))
            enc[m] = self.encoders[m](self.embed_drop(self.pos(h)), key_mask=valid)

        fused = None
        for i in present:
            h = enc[i]
            for j in present:
                if j != i:
                    p = _pair(i, j)
                    h = h + self.cross_weight[p] * self.cross[p](enc[i], enc[j], key_mask=mask[j].bool())
            h = h.masked_fill(~mask[i].bool().unsqueeze(-1), 0.0)
            fused = h if fused is None else fused + h

        if self.per_step:  # 002's dense layer on every step's fused representation
            return self.head(self.out_drop(fused))
        any_present = torch.stack([mask[m].bool() for m in present]).any(dim=0)
        return self.head(self.out_drop(masked_mean(fused, any_present)))
