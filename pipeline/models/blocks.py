"""The one attention-block library every model shares.

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
    allowed = allowed.expand_as(scores)
    any_allowed = allowed.any(dim=dim, keepdim=True)
    # rows with nothing allowed get finite dummy scores so softmax stays finite; zeroed below
    filled = scores.masked_fill(~allowed, float("-inf")).masked_fill(~any_allowed, 0.0)
    return torch.softmax(filled, dim=dim) * any_allowed


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
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # [B,H,Tq,Tk]
        allowed = torch.ones(b, 1, tq, tk, dtype=torch.bool, device=query.device)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]
        if attn_mask is not None:
            allowed = allowed & (attn_mask[None, None] if attn_mask.dim() == 2 else attn_mask[:, None])
        weights = masked_softmax(scores, allowed)
        if keep_weights:
            self.last_weights = weights.detach()
        out = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, tq, self.d_model)
        out = self.out_proj(out)
        has_key = allowed.any(dim=-1).any(dim=1)  # [B,Tq]
        return out * has_key.unsqueeze(-1)


class FeedForward(nn.Module):
    """Position-wise Linear → activation → dropout → Linear (Vaswani et al. 2017)."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, ff_dim),
            {"relu": nn.ReLU, "gelu": nn.GELU}[activation](),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, d_model),
        )

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

    forward(x [B,Tq,d], context [B,Tk,d], context_mask [B,Tk] True=valid) -> [B,Tq,d]:
        x = x + Attn(LN(x), LN(context)); x = x + FF(LN(x)).
    Where a sample's context is entirely invalid the attention term is zero (the block reduces to
    its feed-forward residual). Models that need the bare attention term (002's cross-modal layer
    adds it back with a learnable scalar) use `MultiHeadAttention` directly.
    """

    def __init__(self, d_model: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = FeedForward(d_model, ff_dim or 4 * d_model, dropout)
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm_q(x), self.norm_kv(context), key_mask=context_mask))
        return x + self.drop(self.ff(self.norm_ff(x)))


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


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x [B,T,d] over the steps where mask [B,T] is True -> [B,d]; zeros where none is."""
    m = mask.unsqueeze(-1).to(x.dtype)
    total = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    return total / m.sum(dim=1).clamp(min=1.0)


def check_inputs(
    x: dict[str, Tensor], mask: dict[str, Tensor], modalities: list[str], same_length: bool = True
) -> list[str]:
    """The model's modalities present in `x` (in model order); clear errors for bad input dicts.
    `same_length`: every input and mask must share [B, T] (models on one time grid)."""
    unknown = sorted(set(x) - set(modalities))
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
