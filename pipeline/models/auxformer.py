"""AuxFormer (Goncalves & Busso, seed 001 §3) and its baselines 1 (no auxiliary networks, §4.5.1) and 4
(unimodal, §4.5.4).

AuxFormer is audio-visual: it takes exactly TWO modalities, the keys of `dims` in their order (the
first plays the paper's audio role, the second the visual role only in the order of the loss weights
and of the concatenation in Eq. 5; the architecture is symmetric). Main network F_av:
1. §3.1 Projection and positions: the streams are brought to one width d; 001 keeps the 130-d audio
   as is and maps the 4,096-d video to 130 with a 1-D convolution. Here d = `d_model`, by default the
   smaller input width rounded up to a multiple of `heads` (= 130 for 001's dims); a stream wider or
   narrower than d gets a bias-free kernel-1 Conv1d (kernel and bias: authors' code; the paper is
   silent), the other is kept intact (paper) unless `project_all` (authors' code: audio 130→130 too).
   Sinusoidal positions are added (Eq. 1; Vaswani et al.), embedding dropout 0.25 (§4.3).
2. §3.2 Fusion attention: two 5-layer crossmodal transformers (audio→visual: visual queries attend to
   audio; visual→audio), Eq. 2–4: blocks.py's `CrossModalEncoder`, MulT's (pre-LN: Eq. 3 and the
   authors' code; the extra outer LayerNorm of Eq. 4 is not applied — the code has none and Table 5's
   counts exclude it).
3. §3.3 Self-attention with learnable scalars: a 5-layer pre-LN self-attention stack per stream in
   which every layer mixes its residuals as α·x + (1−α)·f(x) with its own α (the paper's α for one
   stream, β for the other; mixing rule and U(0,1) initialisation from the authors' code).
4. §3.4 Last time-step tokens of both streams, concatenated (Eq. 5), MLP with 260 hidden units and
   ReLU/dropout 0.2 (§4.3) plus a residual (authors' code), output layer.
5. §3.5 Auxiliary networks: per modality a 5-layer self-attention encoder on that modality's embedded
   input, applied three times with the same weights (authors' code; the paper is silent), its last
   token through an MLP d→512→256→d with a residual and a classifier — the MLP and classifier are
   shared by both auxiliary networks (authors' code; "fully-connected layers with shared weights",
   §3.5). Total loss Eq. 6: λ_av·L_av + λ_a·L_a + λ_v·L_v, λ = ⅓ each (§4.3), in `training_loss`.
   Inference (`inference`): "average" (default) returns the equal average of F_av's and the two
   auxiliary networks' outputs — 001 §4.5.4 ("Likewise, the networks' outputs are equally averaged
   during inference") and the authors' train.py/test.py, which average the three networks' logits;
   "main" returns F_av's output alone (§3.4 read alone).
Heads 10, layers 5 (§4.3); dropout 0.1 on residuals (§4.3), also used for attention weights and the
feed-forward ReLU (the code: 0.1, except 0 on cross-modal attention weights; one rate per block here).

Ablations (001 §5.3), switches of the main network whose defaults are the model: `positions: none`
(Table 3, no positional embeddings: the auxiliary networks share the inputs, so they lose them too);
`temporal: lstm | gru | none` (Fig. 6: the self-attention layers with learnable scalars replaced by one
LSTM or GRU layer, d → d, or removed); `token: mean | prepend` (Fig. 7: the sequence mean of the present
steps, or a learnable token prepended to each stream — to both the query and the key/value side of the
fusion layers — and read at its position; the auxiliary networks keep their last-step tokens; 001 gives
no more detail). Set them per run (`model_params.auxformer`, `dvc exp run -S`).

Choices where 001 is silent or where the code differs (all documented options):
- "Last time step" for masked, variable-length sequences = the LAST PRESENT step of each stream's
  query modality (mask mode) — the authors read index −1 of zero-padded sequences. A stream whose
  query modality is absent for the whole sample gives a zero token.
- Input convention `missing_input` (pipeline/missing/inputs.py): "zero" (default) is 001's own
  handling (§3.6, §5.2: ablated features replaced by zeros; the authors' code has no masks): missing
  steps are zeros the model is not told about, and only padding is masked; "mask" masks missing steps
  out of every attention too. Either way the model masks what its mask calls absent out of every
  attention and reads each stream at its last unmasked step, and a modality left out of the input dict
  is treated as fully absent, so fully masked == dropped.
- Layouts: 001's streams have their own lengths N_v, N_a (§3.1), so each modality may come with its own
  T (`native`) for classification; per-step regression and `causal` need one grid. Training with 001's §3.6 procedure is the `auxformer` strategy in pipeline/missing/strategies.py.
- `causal`: the authors' code uses a causal attention mask by default; the paper does not mention
  one: off by default.
- Regression: 001 is classification only. For time-continuous targets the MLP head is applied at
  every step to the concatenated fused streams (each zeroed where its query modality is absent, mask
  mode), and each auxiliary network predicts per step from its own sequence.

Parameter counts with the defaults for 001's dims (video 4,096, audio 130) and 4 classes:
auxformer 7,040,448 (Table 5: 7,054,748), auxformer_noaux 4,762,694 (4,776,994) with the paper's
single projection; with `project_all` 7,057,348 / 4,779,594. The authors' code (both projections)
reproduces Table 5 exactly; the remaining +2,600 is blocks.py's CrossAttentionBlock having its own
LayerNorm for keys/values (2·130 per fusion layer × 10): `shared_kv_norm=True` (the code's one LayerNorm)
with `project_all=True` gives exactly 7,054,748 / 4,776,994 (registry.PAPER_SETTINGS, `mer models --paper`). unimodal: see `UnimodalAuxFormer`.

This module holds AuxFormer's Params, builders, models and the layers only it uses (`ScaledEncoderLayer`,
`AuxiliaryNetworks`); the layers it shares with MulT (`InputEmbedding`, `CrossModalEncoder`,
`ResidualHead`, `readout`, `complete_inputs`, `causal_mask`) live in blocks.py.
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
    TransformerEncoderLayer,
    causal_mask,
    complete_inputs,
    masked_mean,
    readout,
)
from pipeline.models.registry import ModelParams


class NoAuxParams(ModelParams):
    """F_av hyper-parameters (baseline 1, §4.5.1: "the same settings as the proposed model")."""

    d_model: int | None = Field(
        None, ge=1, description="§3.1: None = smallest input width (audio, 130) rounded up to a multiple of heads"
    )
    heads: int = Field(10, ge=1, description="§4.3: 10 attention heads")
    layers: int = Field(5, ge=1, description="§4.3: fusion and self-attention layers are 5 deep")
    dropout: float = Field(0.1, ge=0, lt=1, description="§4.3: 0.1 on residual connections")
    embed_dropout: float = Field(0.25, ge=0, lt=1, description="§4.3: 0.25 on the embeddings")
    out_dropout: float = Field(0.2, ge=0, lt=1, description="§4.3: output dropout 0.2")
    mlp_hidden: int = Field(260, ge=1, description="§4.3: MLP hidden units 260")
    project_all: bool = Field(False, description="authors' code: Conv1d on every stream (paper: video only)")
    causal: bool = Field(False, description="authors' code: causal attention mask (paper silent: off)")
    shared_kv_norm: bool = Field(
        False, description="authors' code (MulT's layers): one LayerNorm for queries and keys/values in the fusion "
        "layers; paper Eq. 3 silent. True with project_all reproduces 001 Table 5 exactly"
    )
    missing_input: Literal["mask", "zero", "token"] = Field(
        "zero", description="001 §3.6, §5.2: missing features replaced by zeros, the model is not told"
    )
    # 001's ablations (§5.3, Table 3, Figs. 6-7), as switches of the main network; defaults = the model
    positions: Literal["sinusoidal", "none"] = Field(
        "sinusoidal", description="§3.1 Eq. 1; 'none' = Table 3's model without positional embeddings"
    )
    temporal: Literal["self_attention", "lstm", "gru", "none"] = Field(
        "self_attention", description="§3.3's self-attention layers with learnable scalars; Fig. 6: replaced by "
        "one LSTM or GRU layer, or removed"
    )
    token: Literal["last", "mean", "prepend"] = Field(
        "last", description="§3.4 last time-step token; Fig. 7: 'mean' = sequence mean token, 'prepend' = a "
        "learnable token prepended to each stream (BERT-like), read at its position (classification only)"
    )


class _AuxFields(NoAuxParams):
    aux_repeats: int = Field(3, ge=1, description="authors' code: the auxiliary encoder is applied 3 times")
    aux_tied: bool = Field(
        True, description="authors' code: the repeated auxiliary encoder passes share one set of weights; False: "
        "each pass its own"
    )
    aux_hidden: tuple[int, ...] = Field((512, 256), description="authors' code: auxiliary MLP d→512→256→d")
    inference: Literal["average", "main"] = Field(
        "average", description="001 §4.5.4 'the networks' outputs are equally averaged during inference' and the "
        "authors' train.py/test.py ((va + a + v) / 3 of the logits); 'main' = the audiovisual head only"
    )


class Params(_AuxFields):
    """AuxFormer (§3, §4.3)."""

    loss_weights: tuple[float, float, float] = Field(
        (1 / 3, 1 / 3, 1 / 3), description="Eq. 6 / §4.3: λ_av, λ_first, λ_second = ⅓ each"
    )


class UnimodalParams(_AuxFields):
    """Baseline 4 (§4.5.4): the losses are equally weighted; width 130 as in the AV model (§3.1)."""

    d_model: int | None = Field(130, ge=1, description="§3.1: the AV model's width 130 (None: the input width)")
    aux_tied: bool = Field(
        False, description="001 silent (Fig. 2 only): each auxiliary pass its own weights — the reading that gives "
        "Table 5's 4,364,354 within 0.7 % (130-d audio); True = the AV model's tied passes"
    )
    loss_weights: tuple[float, float] = Field((0.5, 0.5), description="§4.5.4: main and auxiliary loss, equal")


def build(dims: dict[str, int], n_outputs: int, task: str, params: Params) -> "AuxFormer":
    return AuxFormer(dims, n_outputs, params, per_step=task == "regression", auxiliary=True)


def build_noaux(dims: dict[str, int], n_outputs: int, task: str, params: NoAuxParams) -> "AuxFormer":
    return AuxFormer(dims, n_outputs, params, per_step=task == "regression", auxiliary=False)


def build_unimodal(dims: dict[str, int], n_outputs: int, task: str, params: UnimodalParams) -> "UnimodalAuxFormer":
    return UnimodalAuxFormer(dims, n_outputs, params, per_step=task == "regression")


# ---- building blocks ---------------------------------------------------------------------------------


class ScaledEncoderLayer(TransformerEncoderLayer):
    """§3.3: a pre-LN self-attention layer whose two residuals are mixed as α·x + (1−α)·f(LN(x)) with a
    learnable α ~ U(0,1) (authors' code)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__(d_model, heads, 4 * d_model, dropout, norm_first=True)
        self.alpha = nn.Parameter(torch.rand(1))

    def forward(self, x: Tensor, key_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        a = self.alpha
        h = self.norm1(x)
        x = a * x + (1 - a) * self.drop1(self.attn(h, h, key_mask=key_mask, attn_mask=attn_mask))
        return a * x + (1 - a) * self.drop2(self.ff(self.norm2(x)))


def scaled_encoder(d_model: int, heads: int, layers: int, dropout: float) -> TransformerEncoder:
    enc = TransformerEncoder(d_model, heads, layers, 4 * d_model, dropout, norm_first=True)
    enc.layers = nn.ModuleList(ScaledEncoderLayer(d_model, heads, dropout) for _ in range(layers))
    return enc


def temporal_layers(p: NoAuxParams, d: int) -> nn.Module:
    """§3.3's self-attention stack with learnable scalars, or Fig. 6's replacements: one LSTM or GRU layer
    (d → d, forward in time, so the last present step has seen the sequence) or nothing."""
    if p.temporal == "self_attention":
        return scaled_encoder(d, p.heads, p.layers, p.dropout)
    if p.temporal == "none":
        return nn.Identity()
    return {"lstm": nn.LSTM, "gru": nn.GRU}[p.temporal](d, d, batch_first=True)


def run_temporal(layer: nn.Module, h: Tensor, mask: Tensor, attn: Tensor | None) -> Tensor:
    if isinstance(layer, nn.RNNBase):  # absent steps are zero (mask mode) and run through; readout skips them
        return layer(h * mask.unsqueeze(-1).to(h.dtype))[0]
    if isinstance(layer, nn.Identity):
        return h
    return layer(h, key_mask=mask, attn_mask=attn)


def resolve_d_model(dims: dict[str, int], p: NoAuxParams) -> int:
    if p.d_model is not None:
        if p.d_model % p.heads:
            raise ValueError(f"d_model {p.d_model} is not divisible by heads {p.heads}")
        return p.d_model
    return -(-min(dims.values()) // p.heads) * p.heads


class AuxiliaryNetworks(nn.Module):
    """§3.5: one self-attention encoder per modality (applied `repeats` times) + a shared residual MLP
    and classifier. forward(embedded, missing, attn_mask, per_step) -> {mod: output}."""

    def __init__(self, modalities: list[str], d: int, n_outputs: int, p: _AuxFields) -> None:
        super().__init__()
        self.repeats = p.aux_repeats

        def encoder() -> TransformerEncoder:
            return TransformerEncoder(d, p.heads, p.layers, 4 * d, p.dropout, norm_first=True)

        # tied: one encoder applied `repeats` times (authors' code); untied: one encoder per pass
        self.encoders = nn.ModuleDict(
            {m: encoder() if p.aux_tied else nn.ModuleList(encoder() for _ in range(p.aux_repeats)) for m in modalities}
        )
        self.head = ResidualHead(d, p.aux_hidden, n_outputs, p.out_dropout)

    def forward(self, e: dict[str, Tensor], masks: dict[str, Tensor], attn: Tensor | None, per_step: bool) -> dict[str, Tensor]:
        out = {}
        for m, enc in self.encoders.items():
            h = e[m]
            for i in range(self.repeats):
                h = (enc[i] if isinstance(enc, nn.ModuleList) else enc)(h, key_mask=masks[m], attn_mask=attn)
            out[m] = self.head(readout(h, masks[m], per_step))
        return out


def _causal(causal: bool, masks: dict[str, Tensor]) -> Tensor | None:
    """The authors' causal attention mask [T,T] (one grid: checked by complete_inputs), or None."""
    if not causal:
        return None
    ref = next(iter(masks.values()))
    return causal_mask(ref.shape[1], ref.device)


def _weighted(task_loss, preds: list[Tensor], weights: tuple[float, ...], names: list[str]) -> dict[str, Tensor]:
    parts = {n: task_loss(pr) for n, pr in zip(names, preds)}
    parts["total"] = sum(w * parts[n] for w, n in zip(weights, names))
    return parts


# ---- the models --------------------------------------------------------------------------------------


class AuxFormer(nn.Module):
    """forward(x: {mod: [B,T,D]}, mask: {mod: bool [B,T]}) -> F_av's [B, n_outputs] (per_step: [B,T,n_outputs]);
    either modality may be missing or left out."""

    def __init__(
        self, dims: dict[str, int], n_outputs: int, p: NoAuxParams, per_step: bool = False, auxiliary: bool = True
    ) -> None:
        super().__init__()
        if len(dims) != 2:
            raise ValueError(
                f"AuxFormer is audio-visual and takes exactly 2 modalities, got {len(dims)}: {list(dims)} "
                "(choose two, e.g. train.modalities: [acoustic, face])"
            )
        if auxiliary and not isinstance(p, Params):
            raise ValueError("AuxFormer with auxiliary networks needs auxformer.Params")
        d = resolve_d_model(dims, p)
        self.modalities, self.dims, self.p, self.per_step, self.d_model = list(dims), dict(dims), p, per_step, d
        self.embed = nn.ModuleDict(
            {m: InputEmbedding(dm, d, dm != d or p.project_all, False, p.embed_dropout) for m, dm in dims.items()}
        )
        a, v = self.modalities
        # keyed by the query (target) modality: "v" holds z_{A→V} (visual queries attend to audio)
        self.source = {a: v, v: a}
        if p.positions == "none":  # Table 3: no positional embeddings (the auxiliary networks share these inputs)
            for emb in self.embed.values():
                emb.pos = nn.Identity()
        if per_step and p.token != "last":
            raise ValueError(f"token {p.token!r} gives one vector per sequence; per-step regression needs token 'last'")
        self.fusion = nn.ModuleDict({m: CrossModalEncoder(d, p.heads, p.layers, p.dropout, p.shared_kv_norm) for m in dims})
        self.self_attn = nn.ModuleDict({m: temporal_layers(p, d) for m in dims})
        # Fig. 7's prepending token: one learnable vector per stream (BERT's [CLS]), at step 0
        self.cls = nn.ParameterDict({m: nn.Parameter(0.02 * torch.randn(d)) for m in dims}) if p.token == "prepend" else None
        self.head = ResidualHead(2 * d, (p.mlp_hidden,), n_outputs, p.out_dropout)
        self.aux = AuxiliaryNetworks(self.modalities, d, n_outputs, p) if auxiliary else None

    def _run(self, x: dict[str, Tensor], mask: dict[str, Tensor], auxiliary: bool) -> tuple[Tensor, dict[str, Tensor]]:
        xs, ms = complete_inputs(self.modalities, x, mask, self.dims, same_length=self.per_step or self.p.causal)
        e = {m: self.embed[m](xs[m], ms[m]) for m in self.modalities}
        aux_in = (e, ms, _causal(self.p.causal, ms))  # the auxiliary networks never see the prepended token
        if self.cls is not None:
            e = {m: torch.cat([self.cls[m].expand(v.shape[0], 1, -1), v], dim=1) for m, v in e.items()}
            ms = {m: torch.cat([v.new_ones(v.shape[0], 1), v], dim=1) for m, v in ms.items()}
        attn = _causal(self.p.causal, ms)
        tokens = []
        for m in self.modalities:
            s = self.source[m]
            h = self.fusion[m](e[m], e[s], ms[s], attn)
            h = run_temporal(self.self_attn[m], h, ms[m], attn)
            tokens.append(self._token(h, ms[m]))
        main = self.head(torch.cat(tokens, dim=-1))
        aux = self.aux(*aux_in, self.per_step) if auxiliary and self.aux is not None else {}
        return main, aux

    def _token(self, h: Tensor, mask: Tensor) -> Tensor:
        """§3.4's representation of a stream (Fig. 7's variants); per step: the zeroed sequence."""
        if self.p.token == "prepend":
            return h[:, 0]
        if self.p.token == "mean":
            return masked_mean(h, mask)
        return readout(h, mask, self.per_step)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> Tensor:
        """F_av's output, or (`inference="average"`, the default with auxiliary networks) the equal average of
        F_av's and the auxiliary networks' outputs (logits / per-step predictions)."""
        average = self.aux is not None and self.p.inference == "average"
        main, aux = self._run(x, mask, auxiliary=average)
        if not average:
            return main
        return torch.stack([main] + [aux[m] for m in self.modalities]).mean(dim=0)

    def auxiliary_outputs(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
        """The auxiliary networks' outputs {mod: ...} (empty without them)."""
        return self._run(x, mask, auxiliary=True)[1]

    def training_loss(self, batch, task_loss) -> dict[str, Tensor]:
        """Eq. 6 on the (strategy-altered) batch: 'total', 'main', 'aux_<mod>'."""
        main, aux = self._run(*batch.inputs(), auxiliary=True)
        if not aux:
            return {"total": task_loss(main)}
        names = ["main"] + [f"aux_{m}" for m in self.modalities]
        return _weighted(task_loss, [main] + [aux[m] for m in self.modalities], self.p.loss_weights, names)


class UnimodalAuxFormer(nn.Module):
    """Baseline 4 (§4.5.4, Fig. 2): one modality; a self-attention stack with learnable scalars (§3.3)
    read at its last present step → residual MLP (260 hidden, §4.3) → output, plus one auxiliary network
    (§3.5). Two equally weighted losses in training; inference averages the two networks' outputs
    (logits / per-step predictions) (§4.5.4; `inference="main"`: the main network alone). 001 gives no
    more detail (its Fig. 2 only) and does not say which modality Table 5's single baseline-4 count is
    for. The auxiliary encoder's three passes have their own weights by default (`aux_tied=False`): with
    it the 130-d audio model with 4 classes has 4,391,693 parameters, +0.63 % from Table 5's 4,364,354
    (tests/test_model_counts.py); the 4,096-d video model has 4,924,173 (the 4,096 → 130 projection adds
    532,480). With the AV model's tied passes (`aux_tied=True`) the two have 2,346,273 / 2,878,753 — far
    from any reading of Table 5, which is why the untied reading is the default.
    A fully missing modality gives finite outputs from zero tokens; leaving it out of the dict is the
    same as masking it fully."""

    def __init__(self, dims: dict[str, int], n_outputs: int, p: UnimodalParams, per_step: bool = False) -> None:
        super().__init__()
        if len(dims) != 1:
            raise ValueError(f"the unimodal baseline takes exactly 1 modality, got {len(dims)}: {list(dims)}")
        ablated = {k: getattr(p, k) for k in ("positions", "temporal", "token")
                   if getattr(p, k) != UnimodalParams.model_fields[k].default}
        if ablated:
            raise ValueError(f"the ablation switches {ablated} (001 §5.3) are the audiovisual model's; "
                             "not built for baseline 4")
        (m, dm), = dims.items()
        d = resolve_d_model(dims, p)
        self.modalities, self.dims, self.p, self.per_step = [m], dict(dims), p, per_step
        self.embed = InputEmbedding(dm, d, dm != d or p.project_all, False, p.embed_dropout)
        self.self_attn = scaled_encoder(d, p.heads, p.layers, p.dropout)
        self.head = ResidualHead(d, (p.mlp_hidden,), n_outputs, p.out_dropout)
        self.aux = AuxiliaryNetworks([m], d, n_outputs, p)

    def _run(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        xs, ms = complete_inputs(self.modalities, x, mask, self.dims)
        (m,) = self.modalities
        attn = _causal(self.p.causal, ms)
        e = self.embed(xs[m], ms[m])
        h = self.self_attn(e, key_mask=ms[m], attn_mask=attn)
        main = self.head(readout(h, ms[m], self.per_step))
        return main, self.aux({m: e}, ms, attn, self.per_step)[m]

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> Tensor:
        main, aux = self._run(x, mask)
        return (main + aux) / 2 if self.p.inference == "average" else main

    def training_loss(self, batch, task_loss) -> dict[str, Tensor]:
        main, aux = self._run(*batch.inputs())
        return _weighted(task_loss, [main, aux], self.p.loss_weights, ["main", f"aux_{self.modalities[0]}"])
