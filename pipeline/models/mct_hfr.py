"""MCT-HFR: Modality-Collaborative Transformer with Hybrid Feature Reconstruction (Chen & Zhang, seed 003).

Main path (003 §4.1–4.2; the only path at inference):
- Unimodal encoding (Eqs. 3–4): per modality a Conv1D over time (d = 128 channels, kernel k_m, 'same'
  padding) plus sinusoidal positions.
- N = 4 stacked MRAUs (Eqs. 6–10). Each modality m has its own W_Q^m, W_K^m, W_V^m (and output
  projection), computed ONCE per layer and shared by all M reinforcements of that layer (§4.1.2). Keys
  are re-scaled per sample, Eq. 6: K'_m = γ_b·γ_e·K_m with γ_b = 1/√T_m (T_m = the modality's
  non-padded tokens: the sample's true length, `valid[m].sum()`, never the padded length) and
  γ_e = log_{ΣT_max} ΣT; the hyper-modality is the time-wise concatenation of
  all given modalities' K'_m / V_m (Eqs. 7–8); every modality's queries attend to it, then post-LN
  residual + FFN (Eqs. 9–10).
- Attention-based pooling ([40], `pooling.AttentionPooling`) per modality, concatenation h (fixed
  order = the model's modalities, a zero vector for a modality not given), FC classifier (Eq. 11).

Training-only branch (003 §4.3, `training_loss`), L = CE + α·L_GFA + β·L_LFI (Eq. 18, α 0.4, β 0.6 §6.2.4):
- LFI (Eqs. 13–15): per modality a Transformer decoder D_m = CAU(E_m, SAU(X_m)): self-attention over
  the embedded incomplete input, cross-attention to the MRAU output E_m, back to D_m dims; smooth-L1
  against the complete features on the MISSING positions only (present in `mask_full`, absent in
  `mask`), averaged over those elements per modality and summed over modalities (Eq. 15's Σ_m).
- GFA (Eqs. 16–17): the same encoder runs on the complete view (x_full, mask_full); L_GFA = task loss of
  the complete view + CMD(FC_p(h), h̄) with K = 5 moments, h the incomplete view's global vector (Eq. 11's
  h, the main path) and h̄ the complete view's (the paper's bar marks the complete view, §3.1, Eq. 17).
- Dynamic incomplete training (§4.4.2) is the `dynamic` strategy in pipeline/missing/strategies.py, not here.

Where the paper is silent we choose, and say so (IMPLEMENTATION_NOTES = the authors' code):
- Conv1D is bias-free (code); positions are added to the conv output unscaled (Eq. 4;
  `scale_embedding=True` multiplies by √d first, as the code does).
- FFN = 4·d ReLU (code); dropout: embedding 0.25, attention 0.1, residual/FFN 0.1 (code).
- `outer_residual=False` follows Eqs. 9–10; True adds the code's extra residual around each layer and
  its final LayerNorm per modality.
- Classifier FC: Linear(M·d → 128) → ReLU → dropout 0.1 → Linear(→ C) (the code uses a BatchNorm'd
  128-unit LeakyReLU layer after a BiGRU pooling that the paper does not describe; we keep the paper's
  attention pooling and drop the BatchNorm so batches of one work).
- LFI decoder: 2 × (pre-LN self-attention layer, pre-LN cross-attention block), final LayerNorm and a
  bias-free Linear (= kernel-1 Conv1d) to D_m (code). Its queries are the model's own embedded incomplete
  input H_m (shared Conv1D + positions; the paper's SAU(X_m) needs some projection to d and names none).
  Its cross-attention sees E_m at every step: a query at a missing step still gathered cross-modal
  context in the MRAU, which is what lets the decoder imagine the missing feature.
- GFA predictor FC_p: Linear(M·d → M·d/2, no bias) → ReLU → Linear(→ M·d) (code, without its BatchNorm).
  `gfa_symmetric=True` is the code's variant: ½[CMD(P(h), sg(h̄)) + CMD(P(h̄), sg(h))].
- Complete batches (`complete_batches`): a batch in which the training strategy removed nothing (every
  presence mask equals the complete view's: the `standard` strategy, "conventional complete training")
  trains on the task loss alone, 003 §6.1.1: "MCT-HFR is equivalent to MCT" there — LFI has nothing to
  reconstruct and GFA would align a view with itself. `"hfr"` is the authors' train.py, which still adds
  α·(CE of the complete view + CMD of the two identical views) from its second epoch.
- Auxiliary losses from epoch `aux_start_epoch` (default 1: Eq. 18 from the start; the authors' code
  starts them at epoch 2, set 2 for that). Before it, only the task loss.
- T_max (γ_e's base): `max_len[m]` where given (003 §5.3 uses 400/40/50 for audio/vision/text at their
  native rates), else the modality's padded input length T_m (a property of the segments, the same for
  every batch). Summed over ALL the model's modalities (a modality dropped from the input dict counts
  its T_max too). With `max_len` set, padding a sample changes nothing (tests check this).
- Regression (time-continuous, not in the paper): all given modalities must share T (the common grid);
  the prediction at step t is the FC head on the concatenation of every modality's MRAU output E_m[t]
  (zero for a modality absent at t in mask mode, or not given). LFI/GFA still apply (CMD on the pooled
  vectors, the complete view's task loss = its CCC loss).

Inputs and padding: forward(x, mask, valid=None). `valid[m]` [B,T_m] marks the steps within each
sample's true length (padding False; None = the mask); T_m of Eq. 6 is its count, and padding is never
a key nor pooled. Each modality may have its own T_m (unaligned, 003 §3.1: layout `native`).
Missing tokens are the input convention `missing_input` (pipeline/missing/inputs.py): the paper
replaces missing text tokens by BERT's [UNK] (§5.2.1) and missing audio/vision by zero vectors (§5.2),
and still attends to them (IMPLEMENTATION_NOTES), so the default is "token": a missing step holds its
feature's missing token where the extractor records one (bert: the [UNK] token's feature), zeros
elsewhere, and the model is not told (its mask = valid). "zero": zeros everywhere (the project's
behaviour before the token). "mask" excludes them from every attention and the pooling
(T_m still counts the true length). Called without `valid` (T_m = the mask's count), a fully masked
modality gives exactly the output of that modality dropped from the dict.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from pipeline.models.blocks import (
    CrossAttentionBlock,
    FeedForward,
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    TransformerEncoderLayer,
    check_inputs,
    mlp,
)
from pipeline.models.pooling import AttentionPooling
from pipeline.models.registry import ModelParams


class Params(ModelParams):
    """Hyper-parameters; defaults from 003 §5.3 / §6.2.4 where given."""

    d_model: int = Field(128, ge=4, description="003 §5.3: Conv1D output channels d = 128 (= 4 heads × 32)")
    heads: int = Field(4, ge=1, description="003 §5.3: 4 heads of d_k = 32")
    layers: int = Field(4, ge=1, description="003 §5.3: N = 4 stacked MRAUs")
    kernel_sizes: tuple[int, ...] = Field(
        (3, 3, 1), description="003 §5.3: (k_a, k_v, k_l) = (3, 3, 1), applied by POSITION of the model's "
        "modalities (dims order); positions past the list reuse its last entry"
    )
    kernels: dict[str, int] = Field(default_factory=dict, description="kernel per modality name; overrides kernel_sizes")
    max_len: dict[str, int] = Field(
        default_factory=dict, description="T_max per modality for γ_e (003 §5.3: 400/40/50 at native rates); "
        "unlisted modalities use the input length"
    )
    gamma_b: bool = Field(True, description="003 Eq. 6 balance factor 1/√T_m (False = Table 5 ablation)")
    gamma_e: bool = Field(True, description="003 Eq. 6 extrapolation factor log_{ΣT_max} ΣT (False = ablation)")
    missing_input: Literal["token", "zero", "mask"] = Field(
        "token", description="003 §5.2: missing text = BERT's [UNK] feature, missing audio/vision zeros, attended "
        "(authors' code: attended); zero: zeros for text too; mask: masked out"
    )
    ff_mult: int = Field(4, ge=1, description="paper silent; code: 4·d FFN")
    dropout: float = Field(0.1, ge=0, lt=1, description="paper silent; code: residual/ReLU dropout 0.1")
    attn_dropout: float = Field(0.1, ge=0, lt=1, description="paper silent; code: 0.1")
    embed_dropout: float = Field(0.25, ge=0, lt=1, description="paper silent; code: 0.25")
    scale_embedding: bool = Field(False, description="paper silent (Eq. 4 adds PE directly); code: ×√d")
    outer_residual: bool = Field(False, description="paper Eqs. 9–10: no; code: extra residual + final LN")
    classifier_hidden: int = Field(128, ge=1, description="paper silent ('FC layers'); code: 128")
    classifier_dropout: float = Field(0.1, ge=0, lt=1, description="paper silent; code: 0.1")
    lfi_layers: int = Field(2, ge=1, description="paper silent; code: 2 × (self-, cross-attention)")
    alpha: float = Field(0.4, ge=0, description="003 Eq. 18, §6.2.4: α = 0.4 (GFA)")
    beta: float = Field(0.6, ge=0, description="003 Eq. 18, §6.2.4: β = 0.6 (LFI)")
    cmd_moments: int = Field(5, ge=1, description="003 Eq. 16 K; paper silent; code: 5")
    gfa_distance: Literal["cmd", "cosine", "jsd", "smooth_l1"] = Field(
        "cmd", description="GFA's distance (003 §4.3 Eq. 16: CMD); §6.2.3 / Fig. 6 compares smooth L1, cosine "
        "similarity (1 − cos) and JSD, which the paper does not define further: here the JSD of the two "
        "vectors' softmax distributions, averaged over the batch (our reading)")
    gfa_symmetric: bool = Field(False, description="paper: CMD(FC_p(h), h̄); True = code's symmetric stop-grad form")
    aux_start_epoch: int = Field(1, ge=1, description="paper silent (Eq. 18 throughout); code: 2")
    complete_batches: Literal["plain", "hfr"] = Field(
        "plain", description="003 §6.1.1 'MCT-HFR is equivalent to MCT when using the conventional complete "
        "training': a batch the strategy left complete trains on the task loss alone; 'hfr' = the authors' "
        "train.py, which adds α·(complete-view CE + CMD) to it too"
    )

    @field_validator("kernel_sizes")
    @classmethod
    def _odd_kernels(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(k < 1 or k % 2 == 0 for k in v):
            raise ValueError(f"kernel sizes must be odd and >= 1 ('same' padding), got {v}")
        return v

    @field_validator("kernels")
    @classmethod
    def _odd_named(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {m: k for m, k in v.items() if k < 1 or k % 2 == 0}
        if bad:
            raise ValueError(f"kernel sizes must be odd and >= 1 ('same' padding), got {bad}")
        return v


def build(dims: dict[str, int], n_outputs: int, task: str, params: Params) -> "MCTHFR":
    return MCTHFR(dims, n_outputs, params, per_step=task == "regression")


def rescale_factors(counts: dict[str, Tensor], sum_tmax: float, gamma_b: bool = True, gamma_e: bool = True) -> dict[str, Tensor]:
    """003 Eq. 6: per-sample key scale γ_b·γ_e [B] per modality from its token counts T_m [B]."""
    total = torch.stack(list(counts.values())).sum(dim=0).clamp(min=1.0)  # ΣT
    ge = torch.log(total) / math.log(max(sum_tmax, 2.0)) if gamma_e else torch.ones_like(total)
    return {m: (c.clamp(min=1.0).rsqrt() if gamma_b else torch.ones_like(c)) * ge for m, c in counts.items()}


class HyperModalityAttention(MultiHeadAttention):
    """One modality's projections in an MRAU: `keys_values` gives its (re-scaled) K_m, V_m once per layer;
    `attend` lets its queries attend to the hyper-modality (the concatenated K_c, V_c, Eqs. 7–9)."""

    def keys_values(self, h: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        k = self._split(self.k_proj(h)) * scale[:, None, None, None]  # Eq. 6, per sample
        return k, self._split(self.v_proj(h))

    def attend(self, h: Tensor, k_c: Tensor, v_c: Tensor, key_mask: Tensor, keep_weights: bool = False) -> Tensor:
        # blocks.py's attention on [B,H,Tq,ΣT]; no valid key at all: exact zero
        return self.attend_heads(self._split(self.q_proj(h)), k_c, v_c, key_mask[:, None, None, :], keep_weights)


class MRAU(nn.Module):
    """Multimodal Re-scaled Attention Unit (003 §4.1.2, Eqs. 6–10) over the model's modalities."""

    def __init__(self, modalities: list[str], d_model: int, heads: int, ff_dim: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.attn = nn.ModuleDict({m: HyperModalityAttention(d_model, heads, attn_dropout) for m in modalities})
        self.ff = nn.ModuleDict({m: FeedForward(d_model, ff_dim, dropout) for m in modalities})
        self.norm1 = nn.ModuleDict({m: nn.LayerNorm(d_model) for m in modalities})
        self.norm2 = nn.ModuleDict({m: nn.LayerNorm(d_model) for m in modalities})
        self.drop = nn.Dropout(dropout)

    def forward(self, h: dict[str, Tensor], valid: dict[str, Tensor], scale: dict[str, Tensor], keep_weights: bool = False) -> dict[str, Tensor]:
        kv = {m: self.attn[m].keys_values(h[m], scale[m]) for m in h}  # once per modality, shared (§4.1.2)
        k_c = torch.cat([kv[m][0] for m in h], dim=2)  # Eq. 7
        v_c = torch.cat([kv[m][1] for m in h], dim=2)  # Eq. 8
        key_mask = torch.cat([valid[m] for m in h], dim=1)
        out = {}
        for m in h:
            x = self.norm1[m](h[m] + self.drop(self.attn[m].attend(h[m], k_c, v_c, key_mask, keep_weights)))  # Eq. 9
            out[m] = self.norm2[m](x + self.drop(self.ff[m](x)))  # Eq. 10
        return out


class LFIDecoder(nn.Module):
    """003 Eq. 13, D_m = CAU(E_m, SAU(X_m)): self-attention over the embedded incomplete input, cross-attention
    to the MRAU output, repeated `layers` times; final LayerNorm; bias-free projection to the input dim."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float, layers: int, out_dim: int) -> None:
        super().__init__()
        self.self_layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, heads, ff_dim, dropout, norm_first=True) for _ in range(layers)
        )
        self.cross_layers = nn.ModuleList(CrossAttentionBlock(d_model, heads, ff_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, out_dim, bias=False)

    def forward(self, query: Tensor, query_mask: Tensor, memory: Tensor) -> Tensor:
        x = query
        for sa, ca in zip(self.self_layers, self.cross_layers):
            x = ca(sa(x, key_mask=query_mask), memory)
        return self.out(self.norm(x))


def gfa_distance(kind: str, x1: Tensor, x2: Tensor, moments: int = 5) -> Tensor:
    """GFA's distance between two batches [B,d] of global vectors (`Params.gfa_distance`)."""
    if kind == "cmd":
        return cmd(x1, x2, moments)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(x1, x2.to(x1.dtype))
    if kind == "cosine":
        return (1 - F.cosine_similarity(x1, x2.to(x1.dtype), dim=-1)).mean()
    p, q = F.log_softmax(x1, dim=-1), F.log_softmax(x2.to(x1.dtype), dim=-1)  # jsd
    m = torch.logsumexp(torch.stack([p, q]), dim=0) - math.log(2)
    return 0.5 * (F.kl_div(m, p, log_target=True, reduction="batchmean") + F.kl_div(m, q, log_target=True, reduction="batchmean"))


def cmd(x1: Tensor, x2: Tensor, moments: int = 5) -> Tensor:
    """Central Moment Discrepancy (Zellinger et al. 2017; 003 Eq. 16) between two batches [B,d]."""
    m1, m2 = x1.mean(dim=0), x2.mean(dim=0)
    loss = torch.linalg.vector_norm(m1 - m2)
    c1, c2 = x1 - m1, x2 - m2
    for k in range(2, moments + 1):
        loss = loss + torch.linalg.vector_norm((c1**k).mean(dim=0) - (c2**k).mean(dim=0))
    return loss


class MCTHFR(nn.Module):
    """forward(x: {mod: [B,T_m,D_m]}, mask: {mod: bool [B,T_m]}) -> [B, n_outputs] (per_step: [B, T, n_outputs]),
    any non-empty subset of the model's modalities; `training_loss(batch, task_loss)` adds LFI and GFA."""

    def __init__(self, dims: dict[str, int], n_outputs: int, params: Params | None = None, per_step: bool = False) -> None:
        super().__init__()
        p = params or Params()
        if not dims:
            raise ValueError("MCT-HFR needs at least one modality")
        for field in ("kernels", "max_len"):
            unknown = sorted(set(getattr(p, field)) - set(dims))
            if unknown:
                raise ValueError(f"{field} given for unknown modalities {unknown}; modalities are {list(dims)}")
        self.p, self.per_step = p, per_step
        self.modalities, self.dims = list(dims), dict(dims)
        d, ff_dim = p.d_model, p.ff_mult * p.d_model
        self.kernel = {
            m: p.kernels.get(m, p.kernel_sizes[min(i, len(p.kernel_sizes) - 1)]) for i, m in enumerate(self.modalities)
        }
        # Eq. 3: Conv1D over time, bias-free (code), 'same' padding
        self.conv = nn.ModuleDict(
            {m: nn.Conv1d(dim, d, self.kernel[m], padding=self.kernel[m] // 2, bias=False) for m, dim in dims.items()}
        )
        self.pos = SinusoidalPositionalEncoding(d)  # Eq. 4
        self.embed_drop = nn.Dropout(p.embed_dropout)
        self.mrau = nn.ModuleList(MRAU(self.modalities, d, p.heads, ff_dim, p.dropout, p.attn_dropout) for _ in range(p.layers))
        self.final_norm = nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities}) if p.outer_residual else None
        self.pool = nn.ModuleDict({m: AttentionPooling(d) for m in self.modalities})  # §4.2, [40]
        width = d * len(self.modalities)
        self.head = mlp(width, p.classifier_hidden, n_outputs, p.classifier_dropout)  # Eq. 11 "FC"
        # training-only reconstruction branch (§4.3); never called by forward()
        self.lfi = nn.ModuleDict({m: LFIDecoder(d, p.heads, ff_dim, p.dropout, p.lfi_layers, dim) for m, dim in dims.items()})
        self.gfa_predictor = nn.Sequential(
            nn.Linear(width, max(width // 2, 1), bias=False), nn.ReLU(), nn.Linear(max(width // 2, 1), width)
        )

    def inference_parameters(self) -> int:
        """Trainable parameters of the main path (003 Table 4's 'for inference' column omits LFI/GFA)."""
        aux = {id(q) for mod in (self.lfi, self.gfa_predictor) for q in mod.parameters()}
        return sum(q.numel() for q in self.parameters() if q.requires_grad and id(q) not in aux)

    # ---- main path ------------------------------------------------------------------------------

    def _check(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> list[str]:
        # regression predicts per step, so it needs one time grid (003's classification does not)
        present = check_inputs(x, mask, self.modalities, same_length=self.per_step)
        return present

    def _encode(
        self, x: dict[str, Tensor], mask: dict[str, Tensor], valid: dict[str, Tensor] | None = None, keep_weights: bool = False
    ) -> dict[str, dict[str, Tensor]]:
        """{'h': embedded inputs H_m, 'e': MRAU outputs E_m, 'valid': token masks} for the given modalities."""
        present = self._check(x, mask)
        h, keys, counts = {}, {}, {}
        for m in present:
            keys[m] = mask[m].bool()
            if valid is not None and tuple(valid[m].shape) != tuple(keys[m].shape):
                raise ValueError(f"modality '{m}': valid {tuple(valid[m].shape)} and mask {tuple(keys[m].shape)} differ")
            # zero-fill what is not attended (003 §5.2; also stops a stray NaN/inf from leaking via 0·x)
            xm = x[m].masked_fill(~keys[m].unsqueeze(-1), 0.0)
            hm = self.conv[m](xm.transpose(1, 2)).transpose(1, 2)  # Eq. 3
            if self.p.scale_embedding:
                hm = hm * math.sqrt(self.p.d_model)
            h[m] = self.embed_drop(self.pos(hm))  # Eq. 4
            # T_m of Eq. 6: the sample's true length (non-padded tokens), not the padded T
            counts[m] = (keys[m] if valid is None else valid[m].bool()).sum(dim=1).to(h[m].dtype)
        t_pad = {m: x[m].shape[1] for m in present}
        t_default = max(t_pad.values())
        sum_tmax = float(sum(self.p.max_len.get(m, t_pad.get(m, t_default)) for m in self.modalities))
        scale = rescale_factors(counts, sum_tmax, self.p.gamma_b, self.p.gamma_e)
        e = h
        for layer in self.mrau:
            out = layer(e, keys, scale, keep_weights)
            e = {m: out[m] + e[m] for m in out} if self.p.outer_residual else out
        if self.final_norm is not None:
            e = {m: self.final_norm[m](e[m]) for m in e}
        return {"h": h, "e": e, "valid": keys}

    def _global(self, enc: dict[str, dict[str, Tensor]], like: Tensor) -> Tensor:
        """h of Eq. 11: pooled vectors of all model modalities concatenated (zeros for one not given)."""
        parts = []
        for m in self.modalities:
            if m in enc["e"]:
                parts.append(self.pool[m](enc["e"][m], enc["valid"][m]))
            else:
                parts.append(like.new_zeros(like.shape[0], self.p.d_model))
        return torch.cat(parts, dim=-1)

    def _predict(self, enc: dict[str, dict[str, Tensor]], g: Tensor) -> Tensor:
        if not self.per_step:
            return self.head(g)
        e, valid = enc["e"], enc["valid"]
        ref = next(iter(e.values()))
        steps = [
            e[m].masked_fill(~valid[m].unsqueeze(-1), 0.0) if m in e else ref.new_zeros(ref.shape)
            for m in self.modalities
        ]
        return self.head(torch.cat(steps, dim=-1))

    def _run(
        self, x: dict[str, Tensor], mask: dict[str, Tensor], valid: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, dict[str, dict[str, Tensor]]]:
        enc = self._encode(x, mask, valid)
        g = self._global(enc, next(iter(enc["e"].values())))
        return self._predict(enc, g), g, enc

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor], valid: dict[str, Tensor] | None = None) -> Tensor:
        return self._run(x, mask, valid)[0]

    # ---- training-only branch (003 §4.3–4.4) ----------------------------------------------------

    def _lfi_loss(self, enc: dict[str, dict[str, Tensor]], batch) -> Tensor:
        """003 Eq. 15: smooth-L1 between D_m and the complete features at the missing positions only."""
        total = next(iter(enc["e"].values())).new_zeros(())
        for m in enc["e"]:
            if m not in batch.x_full or m not in batch.mask_full:
                continue
            missing = batch.mask_full[m].bool() & ~batch.mask[m].bool()  # [B,T]
            if not missing.any():
                continue
            recon = self.lfi[m](enc["h"][m], enc["valid"][m], enc["e"][m])
            err = F.smooth_l1_loss(recon[missing], batch.x_full[m][missing].to(recon.dtype), reduction="mean")
            total = total + err
        return total

    def _gfa_cmd(self, g_incomplete: Tensor, g_complete: Tensor) -> Tensor:
        """GFA's distance term (CMD unless `gfa_distance` says otherwise; the loss keeps the name gfa_cmd)."""
        k, kind = self.p.cmd_moments, self.p.gfa_distance
        if not self.p.gfa_symmetric:  # Eq. 17: CMD(FC_p(h), h̄)
            return gfa_distance(kind, self.gfa_predictor(g_incomplete), g_complete, k)
        return 0.5 * (
            gfa_distance(kind, self.gfa_predictor(g_incomplete), g_complete.detach(), k)
            + gfa_distance(kind, self.gfa_predictor(g_complete), g_incomplete.detach(), k)
        )

    def training_loss(self, batch, task_loss) -> dict[str, Tensor]:
        """L = CE + α·L_GFA + β·L_LFI (003 Eq. 18); only the task loss before `aux_start_epoch`."""
        pred, g, enc = self._run(*batch.inputs(), batch.valid)
        task = task_loss(pred)
        if batch.epoch < self.p.aux_start_epoch or (self.p.alpha == 0 and self.p.beta == 0):
            return {"total": task, "task": task}
        if self.p.complete_batches == "plain" and all(
            torch.equal(batch.mask[m], batch.mask_full[m]) for m in batch.mask_full
        ):  # 003 §6.1.1: complete training = the plain MCT
            return {"total": task, "task": task}
        pred_full, g_full, _ = self._run(*batch.inputs_full(), batch.valid)  # complete view, shared encoder
        gfa_task = task_loss(pred_full)
        gfa_cmd = self._gfa_cmd(g, g_full)
        gfa = gfa_task + gfa_cmd  # Eq. 17
        lfi = self._lfi_loss(enc, batch)
        total = task + self.p.alpha * gfa + self.p.beta * lfi
        return {"total": total, "task": task, "gfa": gfa, "gfa_task": gfa_task, "gfa_cmd": gfa_cmd, "lfi": lfi}
