"""The one attention-block library every model shares: every layer that more than one model uses.

What lives where in pipeline/models/:
- blocks.py (this file): attention and the layers built from it — `MultiHeadAttention`, `FeedForward`,
  `TransformerEncoderLayer`/`TransformerEncoder` (post- or pre-LN self-attention), `CrossAttentionBlock`
  and `CrossModalEncoder` (MulT's crossmodal transformer, a stack of them; MulT and AuxFormer),
  positions (`sinusoidal_positions`, `SinusoidalPositionalEncoding`, `LearnedPositionalEncoding`),
  `SourceProjections`/`share_qkv` (Q/K/V shared across cross blocks, JMT),
  `InputEmbedding` and `ResidualHead` (MulT's input and output blocks; AuxFormer reuses both), `mlp`
  (the two-layer FC head), and the mask helpers `masked_softmax`, `masked_mean`, `last_present`,
  `readout`, `causal_mask`, `check_inputs`, `complete_inputs`.
- pooling.py (attention pooling), tcn.py (temporal convolutional network), cnn1d.py (JMT's
  physiological backbone): other reusable layers, one kind per file.
- one module per paper (crossmodal, mct_hfr, mmte, late_fusion, auxformer, mult, jmt): its Params,
  builder, model and only the layers no other model uses; registry.py: the models by name.
A variant that a caller needs (a key mask, an attention mask, an option) is an argument of the block
here, never a copy of the block in a model module.

Mask convention everywhere: a boolean tensor that is True where a step is VALID (present), the same
convention as `Segments.mask`. (torch's `key_padding_mask` is the opposite; nothing here uses it.)

Attention is NaN-safe: a query with no valid key (a modality absent for the whole sequence, a fully
padded row) gets an all-zero output instead of softmax(-inf, …, -inf) = NaN, so such a query adds
nothing to whatever residual it is added to. Attention is written out (not
`F.scaled_dot_product_attention`) so this guarantee does not depend on a backend kernel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, allowed: Tensor, dim: int = -1) -> Tensor:
    """Softmax of `scores` over `dim` restricted to `allowed` (bool, broadcastable to `scores`).

    Rows without any allowed entry come out all zeros (not NaN), in the forward and the backward pass.
    """
    # the mask stays at its own (broadcast) shape: a key mask [B,1,1,Tk] is not blown up to [B,H,Tq,Tk]
    dim = dim - scores.dim() if dim >= 0 else dim  # counted from the right, as broadcasting aligns shapes
    any_allowed = allowed.any(dim=dim, keepdim=True)
    filled = scores.masked_fill(~allowed, float("-inf"))
    if bool(any_allowed.all()):  # the common case: every row has a key, nothing to zero (same values)
        return torch.softmax(filled, dim=dim)
    # rows with nothing allowed get finite dummy scores so softmax stays finite; zeroed after it
    return torch.softmax(filled.masked_fill(~any_allowed, 0.0), dim=dim) * any_allowed


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention (Vaswani et al. 2017) with valid-key masks.

    forward(query [B,Tq,d], key [B,Tk,d], value=None (=key), key_mask [B,Tk] True=valid,
    attn_mask [Tq,Tk] or [B,Tq,Tk] True=allowed) -> [B,Tq,d]. A query row with no allowed key outputs
    exactly zero, after the output projection too (its bias is not added).
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.d_model, self.heads, self.d_head = d_model, heads, d_model // heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.last_weights: Tensor | None = None  # [B,H,Tq,Tk] of the last call when keep_weights

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.d_head).transpose(1, 2)  # [B,H,T,dh]

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor | None = None,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        keep_weights: bool = False,
    ) -> Tensor:
        value = key if value is None else value
        b, tq, _ = query.shape
        tk = key.shape[1]
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        allowed = torch.ones(b, 1, tq, tk, dtype=torch.bool, device=query.device)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]
        if attn_mask is not None:
            allowed = allowed & (attn_mask[None, None] if attn_mask.dim() == 2 else attn_mask[:, None])
        return self.attend_heads(q, k, v, allowed, keep_weights)

    def attend_heads(self, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, keep_weights: bool = False) -> Tensor:
        """The attention itself on projected, head-split q [B,H,Tq,dh], k/v [B,H,Tk,dh]; `allowed` bool,
        broadcastable to [B,H,Tq,Tk] with a singleton head dim -> output-projected [B,Tq,d], exactly zero
        for a query row with no allowed key. For callers that project keys/values themselves (MCT-HFR)."""
        b, _, tq, _ = q.shape
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # [B,H,Tq,Tk]
        weights = masked_softmax(scores, allowed)
        if keep_weights:
            self.last_weights = weights.detach()
        out = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, tq, self.d_model)
        out = self.out_proj(out)
        has_key = allowed.any(dim=-1).any(dim=1)  # [B,Tq] (or [B,1] for a per-sample mask)
        return out * has_key.unsqueeze(-1)


def mlp(d_in: int, hidden: int, d_out: int, dropout: float = 0.0, activation: str = "relu") -> nn.Sequential:
    """Linear → activation → dropout → Linear (weights at indices 0 and 3): `FeedForward`'s net and the
    two-layer FC heads of JMT, MCT-HFR, MMTE (its ERN) and the late-fusion LSTM."""
    act = {"relu": nn.ReLU, "gelu": nn.GELU}[activation]()
    return nn.Sequential(nn.Linear(d_in, hidden), act, nn.Dropout(dropout), nn.Linear(hidden, d_out))


class FeedForward(nn.Module):
    """Position-wise Linear → activation → dropout → Linear (Vaswani et al. 2017)."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        self.net = mlp(d_model, ff_dim, d_model, dropout, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward, each with residual, dropout and LayerNorm.

    `norm_first=False` is the original post-LN layer (Vaswani et al. 2017); True is pre-LN.
    forward(x [B,T,d], key_mask [B,T] True=valid, attn_mask [T,T]/[B,T,T] True=allowed) -> [B,T,d].
    Outputs at invalid steps are not zeroed here (some models still read them); models mask them.
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        ff_dim: int | None = None,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, ff_dim or 4 * d_model, dropout, activation)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, key_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.drop1(self.attn(h, h, key_mask=key_mask, attn_mask=attn_mask))
            return x + self.drop2(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop1(self.attn(x, x, key_mask=key_mask, attn_mask=attn_mask)))
        return self.norm2(x + self.drop2(self.ff(x)))


class TransformerEncoder(nn.Module):
    """A stack of `TransformerEncoderLayer`s (plus a final LayerNorm when pre-LN)."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        layers: int,
        ff_dim: int | None = None,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, heads, ff_dim, dropout, norm_first, activation) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(self, x: Tensor, key_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, key_mask=key_mask, attn_mask=attn_mask)
        return self.final_norm(x)


class CrossAttentionBlock(nn.Module):
    """Queries from one sequence attend to another (pre-LN, MulT-style), then a feed-forward block.

    forward(x [B,Tq,d], context [B,Tk,d], context_mask [B,Tk] True=valid, attn_mask [Tq,Tk] or
    [B,Tq,Tk] True=allowed, e.g. `causal_mask`) -> [B,Tq,d]:
        x = x + Attn(LN(x), LN(context)); x = x + FF(LN(x)).
    Where a sample's context is entirely invalid the attention term is zero (the block reduces to
    its feed-forward residual). Models that need the bare attention term (002's cross-modal layer
    adds it back with a learnable scalar) use `MultiHeadAttention` directly.
    `shared_norm=True`: one LayerNorm for queries and keys/values (MulT's code applies its first
    LayerNorm to both), so `norm_kv` is `norm_q`.
    """

    def __init__(
        self, d_model: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1, shared_norm: bool = False
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, ff_dim or 4 * d_model, dropout)
        self.norm_q, self.norm_ff = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.norm_kv = self.norm_q if shared_norm else nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, context: Tensor, context_mask: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        att = self.attn(self.norm_q(x), self.norm_kv(context), key_mask=context_mask, attn_mask=attn_mask)
        x = x + self.drop(att)
        return x + self.drop(self.ff(self.norm_ff(x)))


class SourceProjections(nn.Module):
    """One source's LayerNorm and W_Q, W_K, W_V, to be shared by every cross block the source enters
    (`share_qkv`; JMT, 004 §3: "the K, V and Q matrices are shared among the six transformer blocks")."""

    def __init__(self, d_model: int, norm: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.k = nn.Linear(d_model, d_model, bias=bias)
        self.v = nn.Linear(d_model, d_model, bias=bias)


def share_qkv(block: nn.Module, query: SourceProjections, context: SourceProjections) -> None:
    """Tie a `CrossAttentionBlock` (or any module with an `attn: MultiHeadAttention`) to shared
    projections: its queries from `query`'s W_Q (and LayerNorm), its keys/values from `context`'s W_K,
    W_V (and LayerNorm). The block keeps its own output projection, feed-forward and FF LayerNorm."""
    block.attn.q_proj = query.q
    block.attn.k_proj, block.attn.v_proj = context.k, context.v
    if isinstance(block, CrossAttentionBlock):
        block.norm_q, block.norm_kv = query.norm, context.norm


class CrossModalEncoder(nn.Module):
    """MulT's crossmodal transformer (Tsai et al. 2019; AuxFormer's fusion attention, 001 §3.2): `layers`
    pre-LN `CrossAttentionBlock`s with a 4·d feed-forward + a final LayerNorm.
    forward(x [B,T,d] queries, context [B,Tk,d], context_mask [B,Tk], attn_mask) -> [B,T,d].
    `shared_norm`: one LayerNorm for queries and keys/values per layer (MulT's code)."""

    def __init__(self, d_model: int, heads: int, layers: int, dropout: float, shared_norm: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CrossAttentionBlock(d_model, heads, 4 * d_model, dropout, shared_norm) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(d_model)

    def forward(
        self, x: Tensor, context: Tensor, context_mask: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        for layer in self.layers:
            x = layer(x, context, context_mask, attn_mask)
        return self.final_norm(x)


def sinusoidal_positions(length: int, d_model: int, device: torch.device | None = None) -> Tensor:
    """[length, d_model] sine/cosine position table (Vaswani et al. 2017, §3.5)."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to [B,T,d] inputs; any T."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, x: Tensor) -> Tensor:
        return x + sinusoidal_positions(x.shape[1], self.d_model, x.device).to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    """Adds a learned embedding per position (up to `max_len`) to [B,T,d] inputs."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        if t > self.embedding.num_embeddings:
            raise ValueError(f"sequence of {t} steps exceeds the {self.embedding.num_embeddings} learned positions")
        return x + self.embedding.weight[:t].to(x.dtype)


class InputEmbedding(nn.Module):
    """MulT's input block (AuxFormer's §3.1 too): zero-fill absent steps → optional bias-free kernel-1
    Conv1d D→d → optional ×√d → + sinusoidal positions (Vaswani et al. 2017) → dropout.
    forward(x [B,T,D], mask [B,T]) -> [B,T,d]."""

    def __init__(self, in_dim: int, d_model: int, project: bool, scale: bool, dropout: float) -> None:
        super().__init__()
        if not project and in_dim != d_model:
            raise ValueError(f"input width {in_dim} needs a projection to d_model {d_model}")
        self.proj = nn.Conv1d(in_dim, d_model, kernel_size=1, bias=False) if project else None
        self.scale = math.sqrt(d_model) if scale else 1.0
        self.pos = SinusoidalPositionalEncoding(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # absent values are never used; fill them so a stray NaN/inf cannot leak through 0·x
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        if self.proj is not None:
            x = self.proj(x.transpose(1, 2)).transpose(1, 2)
        return self.drop(self.pos(x * self.scale))


class ResidualHead(nn.Module):
    """MulT's output block: h + Linear(ReLU/dropout stack(h)) → Linear(·, n_outputs). hidden=(260,) is
    MulT's proj1/proj2 when 260 = width; AuxFormer's auxiliary MLP uses hidden=(512, 256)."""

    def __init__(self, width: int, hidden: tuple[int, ...], n_outputs: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = width
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, width))
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, n_outputs)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(h + self.mlp(h))


def causal_mask(t: int, device: torch.device) -> Tensor:
    """[t, t] bool attention mask: step i may attend to steps <= i."""
    return torch.tril(torch.ones(t, t, dtype=torch.bool, device=device))


def last_present(h: Tensor, mask: Tensor) -> Tensor:
    """h [B,T,d] at the last step where mask [B,T] is True -> [B,d]; zeros where no step is."""
    t = h.shape[1]
    idx = torch.where(mask, torch.arange(t, device=h.device), -1).max(dim=1).values  # [B]
    token = h[torch.arange(h.shape[0], device=h.device), idx.clamp(min=0)]
    return token * (idx >= 0).unsqueeze(-1).to(h.dtype)


def readout(h: Tensor, read: Tensor, per_step: bool) -> Tensor:
    """h [B,T,d] zeroed where read [B,T] is False (per_step) or at its last present step [B,d]."""
    return h * read.unsqueeze(-1) if per_step else last_present(h, read)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x [B,T,d] over the steps where mask [B,T] is True -> [B,d]; zeros where none is."""
    m = mask.unsqueeze(-1).to(x.dtype)
    total = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    return total / m.sum(dim=1).clamp(min=1.0)


def check_inputs(
    x: dict[str, Tensor],
    mask: dict[str, Tensor],
    modalities: list[str],
    same_length: bool = True,
    ignored: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """The model's modalities present in `x` (in model order); clear errors for bad input dicts.
    `same_length`: every input and mask of those must share [B, T] (models on one time grid).
    `ignored`: modalities accepted in `x` and not read (neither checked nor returned)."""
    unknown = sorted(set(x) - set(modalities) - set(ignored))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; this model knows {modalities}")
    present = [m for m in modalities if m in x]
    if not present:
        raise ValueError(f"no input modality given; this model knows {modalities}")
    lacking = [m for m in present if m not in mask]
    if lacking:
        raise ValueError(f"no mask given for modalities {lacking}")
    shapes = {m: (tuple(x[m].shape[:2]), tuple(mask[m].shape)) for m in present}
    if same_length and len({s for pair in shapes.values() for s in pair}) != 1:
        raise ValueError(f"inputs/masks disagree on [B,T]: {shapes}")
    return present


def complete_inputs(
    modalities: list[str], x: dict[str, Tensor], mask: dict[str, Tensor], dims: dict[str, int], same_length: bool = True
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Check the inputs and materialise a modality left out of the dict as zeros with an all-False mask
    (so dropped == fully masked). `same_length=False`: the given modalities may each have their own T
    (a left-out one gets the first given one's)."""
    given = check_inputs(x, mask, modalities, same_length=same_length)
    ref = x[given[0]]
    b, t = ref.shape[:2]
    xs = {m: x[m] if m in x else ref.new_zeros(b, t, dims[m]) for m in modalities}
    ms = {m: mask[m].bool() if m in x else torch.zeros(b, t, dtype=torch.bool, device=ref.device) for m in modalities}
    return xs, ms
