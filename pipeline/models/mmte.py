"""MMTE + AMMTD of Vazquez-Rodriguez et al. (ACII 2023, seed 000) and its two MMTE baselines (§6.1).

MMTE (000 §3.1, Fig. 1): every modality passes through its own TCN (`pipeline.models.tcn`) to a
common d_model; learned positional encodings p_t and learned modality encodings e^m are added
(Eqs. 2-3); the modality sequences are concatenated into one token sequence (Eq. 4) and run through a
Transformer encoder (Eq. 5) whose bidirectional band mask lets a token at time t attend only to tokens
at |t' − t| ≤ mask_length, of any modality; absent steps are key-padding-masked.

AMMTD (000 §3.2, Fig. 2): a stack of Transformer decoder layers (TDL: masked self-attention → cross-
attention → FFN, residual + LayerNorm around each) fed with its OWN previous top-layer features
[d_0, d_1, …, d_{t−1}] (+ learned positions p'_i; d_0 a learned vector), Eqs. 7-8. When predicting step
t, the cross-attention (Eq. 10) sees only the encoder outputs at time t, [r_t^1 … r_t^M], so it can only
weigh modalities. The top layer's last output is d_t. The ERN (§3.2, §5.3) — FC d_model → 32 → ReLU →
outputs — maps every d_t to ŷ_t. Training runs this same recurrence (there are no label inputs to force).

Implementation of the recurrence (exactly Eqs. 7-11, not an approximation): at step t every decoder
input position cross-attends to time t, so the layers above the first must be recomputed on the whole
prefix each step; the first layer's causal self-attention output at position i does not depend on t and
is cached; the top layer is evaluated for the last position only (the only output used). With the paper's
single TDL a step costs one attention query over ≤ T keys. The "only time t" cross-attention is done by
gathering the M encoder tokens of step t (equivalent to a boolean mask over all M·T tokens that allows
only step t; tests check this against that masked formulation).

Baselines (000 §6.1): `mmte_fc` = MMTE → ERN per step (Table 1 №2), `mmte_lstm` = MMTE → LSTM (4 layers,
hidden 32) → linear (№3). "For both … the input is the concatenation of all modalities per time-step":
[r_t^1 ‖ … ‖ r_t^M] over the model's fixed modality list, with zeros in the slot of a modality absent
at t (or dropped from the input dict) — a fixed-width concatenation has no other way to say "absent".

Missing modalities (input convention `missing_input`, pipeline/missing/inputs.py; 000 §4: "mask"):
absent steps are never attended to (encoder key mask, decoder cross-attention key
mask); a fully masked modality gives the same output as the modality dropped from the dict, for all
three models. A step where no modality is present still gets a prediction (the decoder's recurrence
runs through it with an empty cross-attention; the baselines see all-zero inputs there).

Where 000 is silent we choose (and say so): TCN causal with dilation 2^level, weight norm, as its
reference [21] (Bai et al. 2018); post-LN layers as the original Transformer [5]; dropout 0.2 also on the
summed input encodings and inside the ERN; up to `max_len` = 1024 learned positions; decoder self-
attention is causal only (not masked where the inputs are absent: the recurrence carries through);
the LSTM head of `mmte_lstm` is unidirectional with dropout between layers.

Task: 000 is time-continuous regression only (arousal or valence per 0.5 s step). For 'classification'
(not in the paper) the per-step features (decoder outputs d_t; the baselines' per-step inputs to their
last layer) are averaged over the steps where any modality is present (masked mean) before the ERN /
output layer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pipeline.models.blocks import (
    FeedForward,
    LearnedPositionalEncoding,
    MultiHeadAttention,
    TransformerEncoder,
    check_inputs,
    masked_mean,
    mlp,
)
from pipeline.models.registry import ModelParams
from pipeline.models.tcn import TCN


class EncoderParams(ModelParams):
    """MMTE hyper-parameters (000 §5.3). lr 1e-4 (Adam β=(0.9, 0.999), halved after 5 epochs without
    improvement), batch 64, ≤ 100 epochs, early stop after 15 — those are TrainParams, not here."""

    missing_input: Literal["mask", "zero", "token"] = Field(
        "mask", description="000 §2.2, §4: the attention simply does not attend to a missing modality"
    )
    d_model: int = Field(64, ge=2, description="000 §5.3: d_model = 64")
    tcn_layers: int = Field(6, ge=1, description="000 §5.3: TCN with 6 layers")
    tcn_kernel: int = Field(9, ge=1, description="000 §5.3: kernel size 9 (ReLU)")
    tcn_causal: bool = Field(True, description="000 silent; causal as its TCN reference [21]")
    tcn_dilation_base: int = Field(2, ge=1, description="000 silent; dilation 2^level as [21]")
    enc_layers: int = Field(2, ge=1, description="000 §5.3: Transformer encoder with 2 layers")
    enc_heads: int = Field(2, ge=1, description="000 §5.3: 2 attention heads")
    ff_dim: int = Field(256, ge=1, description="000 §5.3: FFN size d_model × 4 = 256 (GELU)")
    dropout: float = Field(0.2, ge=0, lt=1, description="000 §5.3: dropout 0.2 throughout")
    mask_length: int = Field(100, ge=0, description="000 §5.3: band mask of 50 s = 100 steps at 2 Hz")
    max_len: int = Field(1024, ge=1, description="000 silent: number of learned positions")


class Params(EncoderParams):
    """`mmte_ammtd`: MMTE + AMMTD + ERN (000 §3.2, §5.3)."""

    dec_layers: int = Field(1, ge=1, description="000 §5.3: a single TDL")
    dec_heads: int = Field(1, ge=1, description="000 §5.3: one head")
    ern_hidden: int = Field(32, ge=1, description="000 §5.3: ERN hidden layer d_model/2 = 32, ReLU")


class FCParams(EncoderParams):
    """`mmte_fc`: MMTE + ERN on the per-step concatenation (000 §6.1, Table 1 №2)."""

    ern_hidden: int = Field(32, ge=1, description="000 §5.3: ERN hidden layer 32")


class LSTMParams(EncoderParams):
    """`mmte_lstm`: MMTE + LSTM on the per-step concatenation (000 §6.1, Table 1 №3)."""

    lstm_layers: int = Field(4, ge=1, description="000 §6.1: 4 layers")
    lstm_hidden: int = Field(32, ge=1, description="000 §6.1: hidden dimension 32")




def band_mask(t: int, modalities: int, length: int, device: torch.device | None = None) -> Tensor:
    """[M·T, M·T] bool: token (m, i) may attend to (m', j) iff |i − j| ≤ length (000 §3.1)."""
    steps = torch.arange(t, device=device).repeat(modalities)
    return (steps[:, None] - steps[None, :]).abs() <= length


class MMTE(nn.Module):
    """forward(x, mask) -> (r [B,M',T,d], valid [B,M',T], present: the M' modalities given, model order)."""

    def __init__(self, dims: dict[str, int], p: EncoderParams) -> None:
        super().__init__()
        if not dims:
            raise ValueError("MMTE needs at least one modality")
        self.modalities = list(dims)
        self.mask_length = p.mask_length
        self.tcn = nn.ModuleDict(
            {
                m: TCN(d, p.d_model, p.tcn_layers, p.tcn_kernel, p.dropout, p.tcn_causal, p.tcn_dilation_base)
                for m, d in dims.items()
            }
        )
        self.pos = LearnedPositionalEncoding(p.d_model, p.max_len)  # p_t, Eq. 2
        self.modality_enc = nn.Embedding(len(dims), p.d_model)  # e^m, Eq. 3
        self.drop = nn.Dropout(p.dropout)
        self.encoder = TransformerEncoder(p.d_model, p.enc_heads, p.enc_layers, p.ff_dim, p.dropout, activation="gelu")

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[str]]:
        present = check_inputs(x, mask, self.modalities)
        b, t = mask[present[0]].shape
        valid = torch.stack([mask[m].bool() for m in present], dim=1)  # [B,M,T]
        tokens = []
        for i, m in enumerate(present):
            a = self.tcn[m](x[m], valid[:, i])  # Eq. 1
            idx = torch.tensor(self.modalities.index(m), device=a.device)
            tokens.append(self.pos(a) + self.modality_enc(idx))  # Eqs. 2-3
        f = self.drop(torch.cat(tokens, dim=1))  # [B, M·T, d], Eq. 4
        attn = band_mask(t, len(present), self.mask_length, f.device)
        r = self.encoder(f, key_mask=valid.reshape(b, -1), attn_mask=attn)  # Eq. 5
        return r.view(b, len(present), t, -1), valid, present


class TDL(nn.Module):
    """Transformer decoder layer (000 §3.2): self-attention, cross-attention, FFN; post-LN residuals."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, ff_dim, dropout, "gelu")  # GELU, 000 §5.3
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.drops = nn.ModuleList(nn.Dropout(dropout) for _ in range(3))

    def self_block(self, q: Tensor, kv: Tensor, attn_mask: Tensor | None = None) -> Tensor:  # Eq. 9
        return self.norms[0](q + self.drops[0](self.self_attn(q, kv, attn_mask=attn_mask)))

    def cross_ff(self, h: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:  # Eqs. 10-11
        h = self.norms[1](h + self.drops[1](self.cross_attn(h, memory, key_mask=memory_mask)))
        return self.norms[2](h + self.drops[2](self.ff(h)))


class AMMTD(nn.Module):
    """forward(r [B,M,T,d], valid [B,M,T]) -> D = [d_1 … d_T] as [B,T,d] (000 §3.2, Eqs. 7-11)."""

    def __init__(self, d_model: int, heads: int, layers: int, ff_dim: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.d0 = nn.Parameter(torch.randn(d_model))  # "a randomly initialized vector" (learned)
        self.pos = nn.Embedding(max_len, d_model)  # p'_i, Eq. 8
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TDL(d_model, heads, ff_dim, dropout) for _ in range(layers))

    def forward(self, r: Tensor, valid: Tensor) -> Tensor:
        b, _, t_len, d = r.shape
        if t_len > self.pos.num_embeddings:
            raise ValueError(f"sequence of {t_len} steps exceeds the {self.pos.num_embeddings} learned positions")
        first, *rest = self.layers
        causal = torch.ones(t_len, t_len, dtype=torch.bool, device=r.device).tril()
        prev = self.d0.expand(b, 1, d)
        inputs: list[Tensor] = []  # I = [d_0 + p'_0, …]
        sa_first: list[Tensor] = []  # first layer's causal self-attention outputs: independent of t
        outs: list[Tensor] = []
        for t in range(t_len):
            inputs.append(self.drop(prev + self.pos.weight[t]))
            seq = torch.cat(inputs, dim=1)  # [B, t+1, d]
            sa_first.append(first.self_block(seq[:, -1:], seq))
            memory, memory_mask = r[:, :, t], valid[:, :, t]  # only the encoder outputs at time t, Eq. 10
            h = torch.cat(sa_first, dim=1) if rest else sa_first[-1]
            y = first.cross_ff(h, memory, memory_mask)
            for i, layer in enumerate(rest):
                top = i == len(rest) - 1  # the top layer: only its last output (d_{t+1}) is ever used
                h = layer.self_block(y[:, -1:], y) if top else layer.self_block(y, y, causal[: t + 1, : t + 1])
                y = layer.cross_ff(h, memory, memory_mask)
            prev = y[:, -1:]
            outs.append(prev)
        return torch.cat(outs, dim=1)


def ern(d_model: int, hidden: int, n_outputs: int, dropout: float) -> nn.Sequential:
    """Emotion Regression Network (000 §3.2, §5.3): FC with one ReLU hidden layer, per step."""
    return mlp(d_model, hidden, n_outputs, dropout)


class MMTEModel(nn.Module):
    """MMTE followed by one of the heads 'ammtd' (000 §3.2), 'fc' or 'lstm' (000 §6.1).

    forward(x: {mod: [B,T,D_m]}, mask: {mod: bool [B,T]}) -> [B, n_outputs] (classification) or
    [B, T, n_outputs] (regression); any subset of the modalities.
    """

    def __init__(
        self, dims: dict[str, int], n_outputs: int, task: str, p: EncoderParams, head: Literal["ammtd", "fc", "lstm"]
    ) -> None:
        super().__init__()
        self.per_step = task == "regression"
        self.head_kind = head
        self.encoder = MMTE(dims, p)
        self.modalities = self.encoder.modalities
        d = p.d_model
        if head == "ammtd":
            assert isinstance(p, Params)
            self.decoder = AMMTD(d, p.dec_heads, p.dec_layers, p.ff_dim, p.dropout, p.max_len)
            self.out = ern(d, p.ern_hidden, n_outputs, p.dropout)
        elif head == "fc":
            assert isinstance(p, FCParams)
            self.out = ern(len(dims) * d, p.ern_hidden, n_outputs, p.dropout)
        else:
            assert isinstance(p, LSTMParams)
            self.lstm = nn.LSTM(
                len(dims) * d, p.lstm_hidden, p.lstm_layers, batch_first=True,
                dropout=p.dropout if p.lstm_layers > 1 else 0.0,
            )
            self.out = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(p.lstm_hidden, n_outputs))

    def _concat(self, r: Tensor, valid: Tensor, present: list[str]) -> Tensor:
        """[r_t^1 ‖ … ‖ r_t^M] over ALL model modalities, zeros where absent (§6.1 baselines)."""
        b, _, t, d = r.shape
        slots = [r.new_zeros(b, t, d) for _ in self.modalities]
        for i, m in enumerate(present):
            slots[self.modalities.index(m)] = r[:, i].masked_fill(~valid[:, i].unsqueeze(-1), 0.0)
        return torch.cat(slots, dim=-1)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> Tensor:
        r, valid, present = self.encoder(x, mask)
        if self.head_kind == "ammtd":
            feats = self.decoder(r, valid)
        elif self.head_kind == "fc":
            feats = self._concat(r, valid, present)
        else:
            feats, _ = self.lstm(self._concat(r, valid, present))
        if self.per_step:
            return self.out(feats)
        return self.out(masked_mean(feats, valid.any(dim=1)))


def build(dims: dict[str, int], n_outputs: int, task: str, params: Params) -> MMTEModel:
    return MMTEModel(dims, n_outputs, task, params, "ammtd")


def build_fc(dims: dict[str, int], n_outputs: int, task: str, params: FCParams) -> MMTEModel:
    return MMTEModel(dims, n_outputs, task, params, "fc")


def build_lstm(dims: dict[str, int], n_outputs: int, task: str, params: LSTMParams) -> MMTEModel:
    return MMTEModel(dims, n_outputs, task, params, "lstm")
