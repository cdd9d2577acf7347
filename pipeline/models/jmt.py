"""Joint Multimodal Transformer (JMT) of Waligora et al. (seed 004, §3), for exactly two modalities A and B.

004 §3.2: backbone features f_A, f_B; a joint representation f_J = FC([f_B; f_A]) (Eq. 1, "fed to an
FC layer for dimensionality reduction": 1,024 → 512 in §4.2); one encoder per source ("multi-head
self-attention followed by a fully connected feed-forward network; residual connection and layer
normalization around both" — post-LN); "six cross-modal attention layers where the query matrix Q is
shared with the key K and value V matrix of the other source" (A←B, A←J, B←A, B←J, J←A, J←B; §3 calls
them "the six transformer blocks"); "these six feature vectors are then stacked to form a sequence,
which is then fed to a transformer self-attention block [that] dynamically selects and weighs these
feature vectors. The final attended features are fed to an FC layer" (§3.2, §4.2), and Fig. 2: "the
output of the cross-attended features is concatenated, and an FC layer is used for valence/arousal
prediction". Each six-vector sequence belongs to one time step (one 512-d vector per clip and source,
§4.2), so the final block attends across the six tokens of a step, not across time.

What we follow (default = the authors' public code where 004's text leaves the build open, issue 23; see
/work/shared/seeds/IMPLEMENTATION_NOTES.md and the repository's models/mm_multi_transformers.py). With the
defaults at 004's settings (512-d visual and audio, 1 layer) the model has 11,039,232 parameters without
the regressor and with `readout="fc"` 11,557,376 — the official code's counts to the parameter
(tests/test_model_counts.py):
- cross blocks: `shared_cross=True` (default, code: three blocks, one per query source A, B, J, each used
  with both of its contexts — §3's "Q, K, V shared" read per query block) with `cross_block="attention"`
  (default, code: a bare multi-head attention, no residual). `shared_cross=False` gives six independent
  blocks; `cross_block="transformer"` adds a feed-forward and residuals to each (§3's "six transformer
  blocks" read literally); `shared_qkv=True` (needs `shared_cross=False`) is the per-source reading: each
  source s ∈ {A, B, J} has ONE W_Q^s, W_K^s, W_V^s (and one pre-attention LayerNorm) used by every block
  it enters (blocks.py `SourceProjections`, `share_qkv`).
- readout: `readout="last"` (default; §3.2 "a transformer self-attention block dynamically selects and
  weighs these feature vectors", the code's SELF_ATTEN head): the encoder block over the six tokens of a
  step, then one more bare self-attention, then the LAST token — B←J in the code's stacking order A←B,
  B←A, J←A, A←J, J←B, B←J; `readout="fc"`: the code's FC head (its released config's output_format):
  the six cross tokens concatenated, FC 6·d → 2·d (3,072 → 1,024), no self-attention block; `"concat"`:
  Fig. 2 read as the self-attention block followed by concatenation (6·d → regressor).
- `l2_normalize=True` (paper silent; code: F.normalize on the backbone features);
- FC head: paper "FC layers", sizes silent; we use the code's regressor Linear(·,128)-ReLU-Dropout-
  Linear(128, n_outputs), one shared hidden layer for all outputs (the code has one such regressor per
  target).
Paper silent, chosen from the authors' code: 1 layer and 1 head per encoder (config_file.json
num_layers=1, num_heads=1), feed-forward width = d_model (hidden_dim=512), dropout 0 (v_dropout =
a_dropout = 0; the §4.2 dropout 0.8 is the visual backbone's), no positional encoding
(`positions="sinusoidal"` adds one), ReLU. Eq. 2 writes softmax(KQᵀ/d_k)V; we scale by √d_k (Vaswani).
Inputs whose width is not d_model get a Linear projection to d_model (the code does this for a vision
feature that is not 512-d); the joint FC reads the projected features (2·d_model → d_model).

Tasks: 004 does per-frame valence/arousal regression (Aff-Wild2, CCC loss Eq. 3 — that loss lives in
pipeline/train/loop.py) and pain estimation (BioVid, accuracy). 'regression' returns [B, T, K] per step;
'classification' (paper silent on how a sequence is pooled) averages each step's fused representation
over the steps where A or B is present, then applies the head.

Input convention (`missing_input`, pipeline/missing/inputs.py): "zero" (default): 004 §4.1 replaces
missing visual frames by black frames and the authors' code has no masks, so the model is not told;
its masks then only exclude padding. "mask" masks missing steps too. Layouts: one grid (the joint FC
concatenates A and B per step).

Missing modalities (what the mask calls absent): an absent step of A or B is zero-filled after its input projection, so the joint
FC sees [0; f_A] where B is absent (the FC's bias remains); the joint step is present where A OR B is.
Masks go into every attention (encoders, cross blocks, final block), so absent steps are never keys; a
cross token q←k counts as present at a step where q is present and k has any present step, and absent
tokens are zeroed before the final block and never attended to. JMT needs both branches: a modality
left out of the input dict is treated as fully masked (zero features, mask False), so "dropped" and
"fully masked" give the same output here — but neither is a unimodal model: the joint branch still runs
on the zero-filled half, so JMT with B absent is not the same function as a model built without B.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from pipeline.models.blocks import (
    CrossAttentionBlock,
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    SourceProjections,
    TransformerEncoder,
    check_inputs,
    masked_mean,
    mlp,
    share_qkv,
)
from pipeline.models.registry import ModelParams

# (query, context) of the six cross blocks, in the authors' stacking order (their last token = B←J)
CROSS_ORDER: tuple[tuple[str, str], ...] = (("A", "B"), ("B", "A"), ("J", "A"), ("A", "J"), ("J", "B"), ("B", "J"))


class Params(ModelParams):
    """Hyper-parameters; defaults from 004 §3/§4.2 where given, else the authors' code (see module doc)."""

    missing_input: Literal["mask", "zero", "token"] = Field(
        "zero", description="004 §4.1: missing frames become black frames; authors' code: no masks"
    )
    shared_qkv: bool = Field(
        False, description="004 §3's 'Q, K, V shared among the six blocks' read per source (one W_Q/W_K/W_V per "
        "source); the authors' code (default) shares them per query block instead: shared_cross"
    )
    d_model: int = Field(512, ge=8, description="004 §4.2: 512-d features, joint FC 1,024 → 512, cross outputs 512")
    layers: int = Field(1, ge=1, description="paper silent; authors' config num_layers=1")
    heads: int = Field(1, ge=1, description="paper silent; authors' config num_heads=1")
    ff_dim: int | None = Field(None, ge=1, description="paper silent; None = d_model (authors' hidden_dim=512)")
    dropout: float = Field(0.0, ge=0, lt=1, description="paper silent for the fusion model; authors' code 0")
    head_hidden: int = Field(128, ge=1, description="paper: 'FC layers'; authors' regressor Linear(·,128)")
    modalities: tuple[str, str] | None = Field(
        None, description="(A, B) among the input modalities; None = the first two keys of dims, which must be exactly two"
    )
    cross_block: Literal["transformer", "attention"] = Field(
        "attention", description="authors' code: a bare multi-head attention; 'transformer' = §3's 'six transformer "
        "blocks' read as attention + feed-forward"
    )
    shared_cross: bool = Field(
        True, description="authors' code: three blocks, one per query source, each used with both contexts (its "
        "Q/K/V shared by the two, 004 §3); False: six independent blocks"
    )
    readout: Literal["last", "fc", "concat"] = Field(
        "last", description="§3.2 / authors' SELF_ATTEN head: self-attention over the six tokens, last token; 'fc' = "
        "authors' FC head (six tokens concatenated, FC 6·d → 2·d, no self-attention); 'concat' = Fig. 2 read as "
        "self-attention then concatenation"
    )
    positions: Literal["none", "sinusoidal"] = Field("none", description="paper silent; authors' code: none")
    l2_normalize: bool = Field(True, description="paper silent; authors' code L2-normalises the inputs")


def build(dims: dict[str, int], n_outputs: int, task: str, params: Params) -> "JointMultimodalTransformer":
    if params.modalities is None:
        if len(dims) != 2:
            raise ValueError(
                f"JMT fuses exactly two modalities, got {len(dims)} ({', '.join(dims)}); "
                "give exactly two or choose them with model_params.jmt.modalities: [A, B]"
            )
        pair = tuple(dims)
    else:
        pair = params.modalities
        unknown = [m for m in pair if m not in dims]
        if unknown or pair[0] == pair[1]:
            raise ValueError(f"JMT modalities {list(pair)} must be two different input modalities of {list(dims)}")
    return JointMultimodalTransformer(
        {m: dims[m] for m in pair},
        n_outputs,
        d_model=params.d_model,
        layers=params.layers,
        heads=params.heads,
        ff_dim=params.ff_dim,
        dropout=params.dropout,
        head_hidden=params.head_hidden,
        cross_block=params.cross_block,
        shared_cross=params.shared_cross,
        shared_qkv=params.shared_qkv,
        readout=params.readout,
        positions=params.positions,
        l2_normalize=params.l2_normalize,
        per_step=task == "regression",
        ignored=[m for m in dims if m not in pair],
    )


class _BareCross(nn.Module):
    """The authors' cross block: multi-head attention alone (queries from x, keys/values from context)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        return self.attn(x, context, key_mask=context_mask)


class JointMultimodalTransformer(nn.Module):
    """forward(x: {A,B: [B,T,D]}, mask: {A,B: bool [B,T]}) -> [B, n_outputs] (per_step: [B, T, n_outputs]).

    `dims` holds exactly the two fused modalities, A first. Either may be left out of `x` (treated as
    fully masked); modalities in `ignored` are accepted in `x` and not read.
    """

    def __init__(
        self,
        dims: dict[str, int],
        n_outputs: int,
        d_model: int = 512,  # 004 §4.2
        layers: int = 1,  # paper silent; authors' config
        heads: int = 1,  # paper silent; authors' config
        ff_dim: int | None = None,  # paper silent; d_model as in the authors' code
        dropout: float = 0.0,  # paper silent; authors' code
        head_hidden: int = 128,  # paper silent; authors' regressor
        cross_block: str = "attention",  # authors' code
        shared_cross: bool = True,  # authors' code: Q/K/V shared per query block
        shared_qkv: bool = False,  # per-source sharing (a reading of §3), excludes shared_cross
        readout: str = "last",  # §3.2 / authors' SELF_ATTEN head
        positions: str = "none",  # paper silent; authors' code
        l2_normalize: bool = True,  # paper silent; authors' code
        per_step: bool = False,
        ignored: list[str] | None = None,
    ) -> None:
        super().__init__()
        if len(dims) != 2:
            raise ValueError(f"JMT fuses exactly two modalities, got {list(dims)}")
        if cross_block not in ("transformer", "attention") or readout not in ("concat", "last", "fc"):
            raise ValueError(f"unknown cross_block {cross_block!r} or readout {readout!r}")
        if shared_qkv and shared_cross:
            raise ValueError(
                "shared_cross (the authors' three blocks, each used with two contexts) and shared_qkv (one K/V per "
                "context source) exclude each other; set model.jmt.params.shared_qkv: false with shared_cross"
            )
        self.modalities = list(dims)  # [A, B]
        self.dims = dict(dims)
        self.ignored = set(ignored or [])
        self.d_model, self.per_step, self.readout, self.l2_normalize = d_model, per_step, readout, l2_normalize
        self.shared_cross = shared_cross
        ff = ff_dim or d_model
        self.proj = nn.ModuleDict(
            {k: (nn.Linear(d, d_model) if d != d_model else nn.Identity()) for k, d in zip("AB", dims.values())}
        )
        self.joint_fc = nn.Linear(2 * d_model, d_model)  # Eq. 1 + §4.2: FC([f_B; f_A]) 1,024 → 512
        self.pos = SinusoidalPositionalEncoding(d_model) if positions == "sinusoidal" else nn.Identity()
        self.embed_drop = nn.Dropout(dropout)
        self.encoders = nn.ModuleDict({k: TransformerEncoder(d_model, heads, layers, ff, dropout) for k in "ABJ"})

        def cross() -> nn.Module:
            if cross_block == "transformer":
                return CrossAttentionBlock(d_model, heads, ff, dropout)
            return _BareCross(d_model, heads, dropout)

        names = sorted({q for q, _ in CROSS_ORDER}) if shared_cross else [q + k for q, k in CROSS_ORDER]
        self.cross = nn.ModuleDict({n: cross() for n in names})
        # §3: one W_Q, W_K, W_V (and pre-attention LayerNorm) per source, shared by the six blocks
        self.qkv = None
        if shared_qkv:
            self.qkv = nn.ModuleDict({s: SourceProjections(d_model, norm=cross_block == "transformer") for s in "ABJ"})
            for q, k in CROSS_ORDER:
                share_qkv(self.cross[q if shared_cross else q + k], self.qkv[q], self.qkv[k])
        # §3.2 self-attention over the six tokens of a step (the authors' FC head has none)
        self.final = TransformerEncoder(d_model, heads, layers, ff, dropout) if readout != "fc" else None
        self.final_attn = MultiHeadAttention(d_model, heads, dropout) if readout == "last" else None
        # the authors' FC head: the six tokens concatenated, FC 3,072 → 1,024 (at d = 512), then the regressor
        self.fc_out = nn.Linear(len(CROSS_ORDER) * d_model, 2 * d_model) if readout == "fc" else None
        head_in = {"concat": len(CROSS_ORDER) * d_model, "last": d_model, "fc": 2 * d_model}[readout]
        self.head = mlp(head_in, head_hidden, n_outputs, dropout)  # the regressor

    def _inputs(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Projected, zero-filled features and masks of A and B (a dropped modality = fully masked)."""
        given = check_inputs(x, mask, self.modalities, ignored=self.ignored)
        ref = x[given[0]]
        b, t = ref.shape[:2]
        feats, valid = {}, {}
        for key, m in zip("AB", self.modalities):
            if m in x:
                v = mask[m].bool()
                xm = F.normalize(x[m], dim=-1) if self.l2_normalize else x[m]
                # absent steps: zero input (no NaN/inf can leak through 0·x) and zero feature (joint FC)
                h = self.proj[key](xm.masked_fill(~v.unsqueeze(-1), 0.0)).masked_fill(~v.unsqueeze(-1), 0.0)
            else:
                v = torch.zeros(b, t, dtype=torch.bool, device=ref.device)
                h = ref.new_zeros(b, t, self.d_model)
            feats[key], valid[key] = h, v
        feats["J"] = self.joint_fc(torch.cat([feats["B"], feats["A"]], dim=-1))  # Eq. 1 order
        valid["J"] = valid["A"] | valid["B"]
        return feats, valid

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> Tensor:
        feats, valid = self._inputs(x, mask)
        enc = {k: self.encoders[k](self.embed_drop(self.pos(feats[k])), key_mask=valid[k]) for k in "ABJ"}
        has_any = {k: valid[k].any(dim=1, keepdim=True) for k in "ABJ"}  # [B,1]
        tokens, token_valid = [], []
        for q, k in CROSS_ORDER:
            block = self.cross[q if self.shared_cross else q + k]
            tokens.append(block(enc[q], enc[k], context_mask=valid[k]))
            token_valid.append(valid[q] & has_any[k])
        z = torch.stack(tokens, dim=2)  # [B,T,6,d]
        zv = torch.stack(token_valid, dim=2)  # [B,T,6]
        b, t, n, d = z.shape
        z = z.masked_fill(~zv.unsqueeze(-1), 0.0).reshape(b * t, n, d)
        zv = zv.reshape(b * t, n)
        if self.final is None:  # the authors' FC head: the six (zeroed where absent) tokens concatenated, one FC
            fused = self.fc_out(z.reshape(b, t, n * d))
        else:
            out = self.final(z, key_mask=zv)  # §3.2: per time step, self-attention across the six stacked tokens
            if self.final_attn is None:  # Fig. 2: concatenate the attended tokens
                fused = out.masked_fill(~zv.unsqueeze(-1), 0.0).reshape(b, t, n * d)
            else:  # authors' code: one more self-attention, keep the last token
                fused = self.final_attn(out, out, key_mask=zv)[:, -1].reshape(b, t, d)
        step_valid = zv.any(dim=1).reshape(b, t)  # = A or B present
        fused = fused.masked_fill(~step_valid.unsqueeze(-1), 0.0)
        if self.per_step:
            return self.head(fused)
        return self.head(masked_mean(fused, step_valid))
