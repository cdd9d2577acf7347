"""Multimodal Transformer (MulT, Tsai et al., ACL 2019) — baseline 2 of seed 001 (§4.5.2), for M >= 2 modalities.

MulT: each modality is projected by a 1-D convolution to a common width and given sinusoidal
positions; for every ordered pair (source j → target i) a crossmodal transformer lets target i's
queries attend to source j's keys/values; the M−1 outputs with the same target are concatenated and
passed through a self-attention transformer; the last time step of each target's sequence is taken, the
M vectors are concatenated and go through a residual two-layer MLP and the output layer. 001 §4.5.2
keeps this and drops the text branch (2 crossmodal transformers for audio-visual input); it gives no
hyper-parameters, so the defaults are MulT's published ones (its code's argument defaults):
d = 30 per modality, 5 heads, 5 crossmodal layers, max(5, 3) self-attention layers, dropout 0.1 on
attention/ReLU/residual, embedding dropout 0.25, output dropout 0.0, bias-free kernel-1 Conv1d
projections, inputs scaled by √d before the positions are added (done again at the input of the
self-attention transformers, as MulT's encoders do). With 001's dims (4,096 video, 130 audio) and 4
classes this gives 358,984 parameters; 001 Table 5 reports 358,384 for baseline 2 — the 600 more are
the separate LayerNorm for keys/values in blocks.py's `CrossAttentionBlock` (MulT shares one LayerNorm
for queries and keys/values): 2·30 per crossmodal layer × 10 layers; `shared_kv_norm=True` (MulT's code)
gives exactly 358,384. It is off by default so that model files written before it load unchanged.
003 runs MulT at its own size (§6.1.2: 4 layers, 4 heads × 32 = d 128; 2 self-attention layers in the
authors' baselines/model.py): the 003 presets set those as overrides (registry.PAPER_VARIANTS["003 MulT"],
pinned in tests/test_model_counts.py).

This module holds MulT's Params, builder and model only. Its layers are shared with AuxFormer (001
builds on MulT's crossmodal transformer) and live in blocks.py: `InputEmbedding`, `CrossModalEncoder`
(stacked `CrossAttentionBlock`s; the causal option is their `attn_mask`), `ResidualHead`, and the
helpers `readout`, `complete_inputs`, `causal_mask`.

Choices where MulT/001 are silent or differ:
- MulT's code uses a causal attention mask by default; neither paper mentions it: `causal=False`
  (default, the papers' text), `True` = MulT's code.
- Missing modalities: the model puts its masks into every attention, reads each target at its LAST
  unmasked step, and zeroes a target's per-step outputs where it is masked. Which steps are masked is
  the input convention `missing_input` (pipeline/missing/inputs.py): "zero" (default; MulT's code has
  no masks and 001 trains and tests its baselines on zeroed features, §3.6, §5.2) masks padding only,
  "mask" masks missing steps too.
- Layouts: MulT is built for unaligned sequences, so each modality may have its own T (`native`) for
  classification; per-step regression and `causal` need one grid.
  A modality that is fully absent in a sample gives a zero token (and, in mask mode, adds nothing
  through attention); a modality left out of the input dict is treated as fully absent, so fully
  masked == dropped.
- Regression (time-continuous targets; MulT and 001 classify/regress per sequence): the same MLP head
  is applied at every step to the concatenated per-target self-attention outputs.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pipeline.models.blocks import (
    CrossModalEncoder,
    InputEmbedding,
    ResidualHead,
    TransformerEncoder,
    causal_mask,
    complete_inputs,
    readout,
)
from pipeline.models.registry import ModelParams

Missing = Literal["mask", "zero", "token"]


class Params(ModelParams):
    """MulT hyper-parameters; 001 §4.5.2 gives none, so MulT's published (code) defaults."""

    d_model: int = Field(30, ge=1, description="MulT: d_l = d_a = d_v = 30 (width per modality)")
    heads: int = Field(5, ge=1, description="MulT: num_heads 5")
    layers: int = Field(5, ge=1, description="MulT: nlevels 5 crossmodal layers")
    self_layers: int | None = Field(None, ge=1, description="MulT: max(layers, 3) self-attention layers (None)")
    dropout: float = Field(0.1, ge=0, lt=1, description="MulT: attention/ReLU/residual dropout 0.1")
    embed_dropout: float = Field(0.25, ge=0, lt=1, description="MulT: embedding dropout 0.25")
    out_dropout: float = Field(0.0, ge=0, lt=1, description="MulT: output dropout 0.0")
    causal: bool = Field(False, description="MulT's code: causal attention mask (papers silent: off)")
    shared_kv_norm: bool = Field(
        False, description="MulT's code: one LayerNorm for queries and keys/values (True reproduces 001 Table 5)"
    )
    missing_input: Missing = Field(
        "zero", description="001 §3.6, §5.2: zeroed features (MulT's code: no masks); 'mask' masks them out"
    )


def build(dims: dict[str, int], n_outputs: int, task: str, params: Params) -> "MulT":
    return MulT(dims, n_outputs, params, per_step=task == "regression")


# ---- the model ---------------------------------------------------------------------------------------


class MulT(nn.Module):
    """forward(x: {mod: [B,T,D]}, mask: {mod: bool [B,T]}) -> [B, n_outputs] (per_step: [B,T,n_outputs])."""

    def __init__(self, dims: dict[str, int], n_outputs: int, p: Params = Params(), per_step: bool = False) -> None:
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MulT needs at least 2 modalities (one crossmodal transformer per ordered pair), got {list(dims)}")
        d, m = p.d_model, len(dims)
        width = (m - 1) * d
        if d % p.heads:
            raise ValueError(f"d_model {d} is not divisible by heads {p.heads}")
        self.modalities, self.dims, self.p, self.per_step = list(dims), dict(dims), p, per_step
        self.embed = nn.ModuleDict(
            {k: InputEmbedding(dk, d, project=dk != d, scale=True, dropout=p.embed_dropout) for k, dk in dims.items()}
        )
        self.cross = nn.ModuleDict(
            {f"{j}__to__{i}": CrossModalEncoder(d, p.heads, p.layers, p.dropout, p.shared_kv_norm)
             for i in dims for j in dims if i != j}
        )
        self.self_embed = nn.ModuleDict(
            {i: InputEmbedding(width, width, project=False, scale=True, dropout=p.embed_dropout) for i in dims}
        )
        self_layers = p.self_layers or max(p.layers, 3)
        self.self_attn = nn.ModuleDict(
            {i: TransformerEncoder(width, p.heads, self_layers, 4 * width, p.dropout, norm_first=True) for i in dims}
        )
        self.head = ResidualHead(m * width, (m * width,), n_outputs, p.out_dropout)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> Tensor:
        xs, ms = complete_inputs(self.modalities, x, mask, self.dims, same_length=self.per_step or self.p.causal)
        t = next(iter(xs.values())).shape[1]
        attn = causal_mask(t, xs[self.modalities[0]].device) if self.p.causal else None
        e = {k: self.embed[k](xs[k], ms[k]) for k in self.modalities}
        parts = []
        for i in self.modalities:
            h = torch.cat(
                [self.cross[f"{j}__to__{i}"](e[i], e[j], ms[j], attn) for j in self.modalities if j != i], dim=-1
            )
            h = self.self_attn[i](self.self_embed[i](h, torch.ones_like(ms[i])), key_mask=ms[i], attn_mask=attn)
            parts.append(readout(h, ms[i], self.per_step))
        return self.head(torch.cat(parts, dim=-1))
