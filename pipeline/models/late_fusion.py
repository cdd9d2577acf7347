"""Late-fusion LSTM baseline of seed 000 §6.1 (Table 1 №1): "the baseline model developed for the MuSe
2022 Challenge [7] … based on LSTM networks and uses late-fusion to aggregate the different modalities".

Unimodal branch (MuSe 2022 baseline code, github.com/EIHW/MuSe2022 `model.py`): Linear(D_m → d_rnn, no
bias) → LSTM(d_rnn, layers, uni- or bidirectional, dropout between layers) → OutLayer (Linear → ReLU →
dropout → Linear, output bias 0) → tanh (the stress task's final activation) for regression. Each
branch predicts ŷ^m per step from its own modality only.

Fusion (`training`). `two_stage` (default) is MuSe 2022's recipe (its README, late_fusion_preparation.py):
each unimodal model is trained first, alone, with its own early stopping; their per-step predictions
become a new feature set (one column per model), and main.py's Model — Linear → LSTM → OutLayer → tanh,
its defaults d_rnn 64, 1 layer — is trained on it. Here the training loop runs these as stages of one
run (`training_stages`: branch:<m> for each modality, then fusion), each with a fresh optimiser and
its own early stopping, the branches frozen and in eval mode in the fusion stage (MuSe predicts with
model.eval()). A modality missing at a step enters the fusion as 0 there (MuSe's data has no gaps; 0 is
the centre of tanh's range). `end_to_end`: the whole model trains at once and the fusion is a learned
convex combination, ŷ_t = Σ_m w_m,t ŷ^m_t with w = softmax over the modalities PRESENT at t of learned
per-modality logits: a missing modality's prediction is left out and its weight redistributed, so a
fully masked modality gives exactly the output of the modality dropped; a step with no modality
present predicts 0.
Inside a branch, absent steps are zero-filled inputs (the LSTM runs through them; MuSe 2022 has no gaps).

Defaults (the MuSe 2022 stress scripts tune d_rnn/layers/lr per feature set, e.g. eGeMAPS 128/4,
FAU 64/2, biosignals 16/4 bidirectional for arousal; 000 says it used "the original hyperparameters"):
one setting for every branch — d_rnn 64, 2 layers, unidirectional, d_fc_out 64, rnn dropout 0.2,
linear dropout 0.5 (MuSe 2022 `main.py` defaults / most common stress setting). MuSe 2022 trains with
lr 0.001-0.005 (stress scripts), batch 256, early stopping 15, LR halving patience 5: TrainParams.

Task: for 'classification' (not in the paper) each branch mean-pools its LSTM outputs over the steps
where its modality is present and outputs logits (no tanh); logits are fused the same way over the
modalities present anywhere in the sample.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Iterator, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pipeline.models.blocks import check_inputs, masked_mean, masked_softmax, mlp
from pipeline.models.registry import ModelParams


class Params(ModelParams):
    missing_input: Literal["mask", "zero", "token"] = Field(
        "mask", description="000 §6.1 / MuSe 2022 silent (no gaps in its data); our fusion leaves a missing branch out"
    )
    d_rnn: int = Field(64, ge=1, description="MuSe 2022 main.py default (stress scripts: 16-128 per feature)")
    rnn_layers: int = Field(2, ge=1, description="MuSe 2022 stress scripts: 2 or 4 per feature")
    bidirectional: bool = Field(False, description="MuSe 2022: off except for biosignals")
    d_fc_out: int = Field(64, ge=1, description="MuSe 2022 main.py default")
    rnn_dropout: float = Field(0.2, ge=0, lt=1, description="MuSe 2022 main.py default")
    linear_dropout: float = Field(0.5, ge=0, lt=1, description="MuSe 2022 main.py default")
    training: Literal["two_stage", "end_to_end"] = Field(
        "two_stage", description="two_stage: MuSe 2022 (000 §6.1's baseline) — each modality's model trained alone "
        "with its own early stopping, then a fusion RNN on their per-step predictions, the branches frozen; "
        "end_to_end: one training of the branches and a learned convex combination (the project's earlier build)")
    fusion_d_rnn: int = Field(64, ge=1, description="two_stage: the fusion RNN's width (MuSe 2022 main.py default: 64)")
    fusion_rnn_layers: int = Field(1, ge=1, description="two_stage: the fusion RNN's layers (main.py default: 1)")


class UnimodalLSTM(nn.Module):
    """MuSe 2022 `Model`: forward(x [B,T,D], mask [B,T]) -> [B,T,K] (per_step) or [B,K]."""

    def __init__(self, d_in: int, n_outputs: int, p: Params, per_step: bool) -> None:
        super().__init__()
        self.per_step = per_step
        self.inp = nn.Linear(d_in, p.d_rnn, bias=False)
        self.rnn = nn.LSTM(
            p.d_rnn, p.d_rnn, p.rnn_layers, batch_first=True, bidirectional=p.bidirectional,
            dropout=p.rnn_dropout if p.rnn_layers > 1 else 0.0,
        )
        d_out = p.d_rnn * (2 if p.bidirectional else 1)
        self.out = mlp(d_out, p.d_fc_out, n_outputs, p.linear_dropout)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h, _ = self.rnn(self.inp(x.masked_fill(~mask.unsqueeze(-1), 0.0)))
        if self.per_step:
            return torch.tanh(self.out(h))
        return self.out(masked_mean(h, mask))


class LateFusionLSTM(nn.Module):
    """forward(x: {mod: [B,T,D_m]}, mask: {mod: bool [B,T]}) -> [B,n_outputs] or [B,T,n_outputs].

    `training: two_stage` (MuSe 2022): `training_stages()` = one stage per branch, then `fusion`; the
    training loop (pipeline/train/loop.py) trains each stage with its own optimiser and early stopping on
    `stage_parameters(stage)` only. While `stage` is `branch:<m>`, forward returns that branch's output
    alone; under `fusion` the branches are frozen (eval mode, no gradient), as MuSe computes their
    predictions; `stage` None (after training) is the whole model."""

    def __init__(self, dims: dict[str, int], n_outputs: int, task: str, p: Params) -> None:
        super().__init__()
        if not dims:
            raise ValueError("late fusion needs at least one modality")
        self.modalities = list(dims)
        self.per_step = task == "regression"
        self.two_stage = p.training == "two_stage"
        self.stage: str | None = None
        self.branches = nn.ModuleDict({m: UnimodalLSTM(d, n_outputs, p, self.per_step) for m, d in dims.items()})
        if self.two_stage:  # MuSe 2022: main.py's Model on the unimodal predictions, one column per modality
            fusion = p.model_copy(update={"d_rnn": p.fusion_d_rnn, "rnn_layers": p.fusion_rnn_layers, "bidirectional": False})
            self.fusion = UnimodalLSTM(len(dims) * n_outputs, n_outputs, fusion, self.per_step)
        else:
            self.fusion_logits = nn.Parameter(torch.zeros(len(dims)))  # equal weights at start

    # ---- staged training (two_stage) ---------------------------------------------------------------
    def training_stages(self) -> list[str]:
        return [f"branch:{m}" for m in self.modalities] + ["fusion"] if self.two_stage else []

    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        if stage == "fusion":
            return self.fusion.parameters()
        return self.branches[stage.removeprefix("branch:")].parameters()

    def train(self, mode: bool = True) -> "LateFusionLSTM":
        super().train(mode)
        if self.stage == "fusion":  # frozen branches predict as in evaluation (MuSe: model.eval())
            self.branches.eval()
        return self

    # ---- forward --------------------------------------------------------------------------------------
    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> Tensor:
        # per-step fusion needs one grid; per-clip classification takes each modality at its own length
        present = check_inputs(x, mask, self.modalities, same_length=self.per_step)
        if self.stage is not None and self.stage.startswith("branch:"):
            m = self.stage.removeprefix("branch:")
            return self.branches[m](x[m], mask[m].bool())
        with torch.no_grad() if self.stage == "fusion" else nullcontext():
            preds = torch.stack([self.branches[m](x[m], mask[m].bool()) for m in present], dim=-1)  # [...,K,M]
        if self.per_step:
            valid = torch.stack([mask[m].bool() for m in present], dim=-1)  # [B,T,M]
        else:  # [B,M]: present anywhere in the clip
            valid = torch.stack([mask[m].bool().any(dim=1) for m in present], dim=-1)
        if self.two_stage:
            return self._fused_rnn(preds, valid, present)
        logits = self.fusion_logits[[self.modalities.index(m) for m in present]]
        w = masked_softmax(logits.expand(valid.shape), valid)  # zeros where nothing is present
        return (preds * w.unsqueeze(-2)).sum(dim=-1)

    def _fused_rnn(self, preds: Tensor, valid: Tensor, present: list[str]) -> Tensor:
        """The fusion model on the branches' predictions, one column per modality in model order; a
        modality missing at a step (or not given) is 0 there, the centre of tanh's range."""
        cols = torch.zeros(*preds.shape[:-1], len(self.modalities), dtype=preds.dtype, device=preds.device)
        cols[..., [self.modalities.index(m) for m in present]] = preds * valid.unsqueeze(-2)
        flat = cols.transpose(-1, -2).flatten(-2)  # [..., M·K], modality-major
        if self.per_step:
            return self.fusion(flat, torch.ones(flat.shape[:-1], dtype=torch.bool, device=flat.device))
        return self.fusion(flat.unsqueeze(1), torch.ones(flat.shape[0], 1, dtype=torch.bool, device=flat.device))


def build(dims: dict[str, int], n_outputs: int, task: str, params: Params) -> LateFusionLSTM:
    return LateFusionLSTM(dims, n_outputs, task, params)
