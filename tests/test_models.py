"""Attention blocks, the cross-modal Transformer (002 §2.1) and the model registry."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from pipeline.models import (
    ModelError,
    available_models,
    build_model,
    count_parameters,
    list_models,
)
from pipeline.models.blocks import (
    CrossAttentionBlock,
    LearnedPositionalEncoding,
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    TransformerEncoder,
    causal_mask,
    masked_mean,
    masked_softmax,
    sinusoidal_positions,
)
from pipeline.models.crossmodal import CrossModalTransformer

DIMS = {"face": 7, "acoustic": 5, "text": 3}
B, T = 4, 6
SMALL = {"d_model": 16, "layers": 2, "heads": 2, "dropout": 0.1}


def _inputs(seed: int = 0, dims: dict[str, int] = DIMS) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(B, T, d, generator=g) for m, d in dims.items()}
    mask = {m: torch.rand(B, T, generator=g) < 0.7 for m in dims}
    for m in dims:
        mask[m][:, 0] = True  # every modality present somewhere in every sample
    return x, mask


def _model(seed: int = 0) -> CrossModalTransformer:
    torch.manual_seed(seed)
    return build_model("crossmodal", DIMS, 4, "classification", SMALL)


# ---- blocks --------------------------------------------------------------------------------------


def test_masked_softmax_rows_without_keys_are_zero_and_have_finite_grads():
    scores = torch.randn(2, 3, 4, requires_grad=True)
    allowed = torch.tensor([[True, False, True, False], [False, False, False, False]])[:, None, :]
    w = masked_softmax(scores, allowed)
    assert torch.allclose(w[0].sum(-1), torch.ones(3))
    assert torch.all(w[0][:, [1, 3]] == 0)
    assert torch.all(w[1] == 0)
    (w * torch.randn_like(w)).sum().backward()
    assert torch.all(torch.isfinite(scores.grad))
    assert torch.all(scores.grad[1] == 0)


@pytest.mark.parametrize("mask_shape, dim", [((2, 1, 1, 7), -1), ((2, 1, 5, 7), -1), ((2, 1, 5, 7), 3),
                                             ((2, 1, 5, 1), 2), ((7,), -1)])
def test_masked_softmax_equals_softmax_over_the_allowed_entries(mask_shape, dim):
    """The broadcast mask is never expanded to the scores' shape, and the values are exactly those of
    softmax over the allowed entries alone (a row with none: zeros): what every model's outputs rest on."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 3, 5, 7, generator=g)
    for p in (0.0, 0.5, 1.0):  # every entry allowed, some, none
        allowed = torch.rand(mask_shape, generator=g) >= p
        full = allowed.expand_as(scores).movedim(dim, -1)
        expected = torch.zeros_like(full, dtype=scores.dtype)
        s = scores.movedim(dim, -1)
        for idx in torch.cartesian_prod(*[torch.arange(n) for n in full.shape[:-1]]):
            keep = full[tuple(idx)]
            if keep.any():
                expected[tuple(idx)][keep] = torch.softmax(s[tuple(idx)][keep], dim=0)
        got = masked_softmax(scores, allowed, dim).movedim(dim, -1)
        assert torch.allclose(got, expected, atol=1e-7, rtol=0), (mask_shape, dim, p)
        assert torch.equal(got == 0, ~full | ~full.any(-1, keepdim=True))


def test_attention_matches_torch_multihead_attention_on_valid_keys():
    torch.manual_seed(0)
    d, h = 8, 2
    ours = MultiHeadAttention(d, h)
    ref = nn.MultiheadAttention(d, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    q, k = torch.randn(3, 5, d), torch.randn(3, 7, d)
    key_mask = torch.rand(3, 7) < 0.6
    key_mask[:, 0] = True
    expected, _ = ref(q, k, k, key_padding_mask=~key_mask)
    assert torch.allclose(ours(q, k, key_mask=key_mask), expected, atol=1e-5)


def test_attention_without_valid_key_outputs_zero_and_leaves_other_samples_alone():
    torch.manual_seed(0)
    att = MultiHeadAttention(8, 2).eval()
    q, k = torch.randn(3, 5, 8), torch.randn(3, 4, 8)
    key_mask = torch.ones(3, 4, dtype=torch.bool)
    key_mask[1] = False
    out = att(q, k, key_mask=key_mask)
    assert torch.all(out[1] == 0)  # not the output projection's bias either
    assert torch.allclose(out[0], att(q[:1], k[:1], key_mask=key_mask[:1])[0], atol=1e-6)
    # a causal attn_mask combines with the key mask
    causal = torch.tril(torch.ones(5, 4, dtype=torch.bool))
    assert torch.all(torch.isfinite(att(q, k, key_mask=key_mask, attn_mask=causal)))


def test_encoder_valid_outputs_ignore_values_at_invalid_steps():
    torch.manual_seed(0)
    enc = TransformerEncoder(8, 2, 2, dropout=0.0).eval()
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    y1 = enc(x, key_mask=mask)
    x2 = x.clone()
    x2[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)
    y2 = enc(x2, key_mask=mask)
    assert torch.allclose(y1[mask], y2[mask], atol=1e-5)
    pre = TransformerEncoder(8, 2, 1, norm_first=True).eval()
    assert torch.all(torch.isfinite(pre(x, key_mask=torch.zeros(2, 6, dtype=torch.bool))))


def test_cross_attention_block_with_absent_context_is_its_feedforward_residual():
    torch.manual_seed(0)
    blk = CrossAttentionBlock(8, 2, dropout=0.0).eval()
    x, ctx = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert torch.allclose(blk(x, ctx, none), x + blk.ff(blk.norm_ff(x)), atol=1e-6)


def test_cross_attention_block_attention_mask_limits_what_each_query_sees():
    torch.manual_seed(0)
    blk = CrossAttentionBlock(8, 2, dropout=0.0).eval()
    x, ctx = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    causal = causal_mask(5, x.device)
    out = blk(x, ctx, attn_mask=causal)
    later = ctx.clone()
    later[:, 3:] = torch.randn(2, 2, 8)  # context after step 2 changes: steps 0-2 must not
    assert torch.equal(blk(x, later, attn_mask=causal)[:, :3], out[:, :3])
    assert not torch.allclose(blk(x, later, attn_mask=causal)[:, 3:], out[:, 3:])
    # the mask is ANDed with the key mask; an all-True mask is no mask
    keys = torch.rand(2, 5) < 0.6
    keys[:, 0] = True
    full = torch.ones(5, 5, dtype=torch.bool)
    assert torch.equal(blk(x, ctx, keys, full), blk(x, ctx, keys))


def test_masked_mean_and_positional_encodings():
    x = torch.arange(12, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert torch.equal(masked_mean(x, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    pe = sinusoidal_positions(4, 6)
    assert torch.equal(pe[0], torch.tensor([0.0, 1, 0, 1, 0, 1]))
    assert torch.isclose(pe[1, 0], torch.sin(torch.tensor(1.0)))
    assert sinusoidal_positions(3, 5).shape == (3, 5)  # odd width
    z = torch.zeros(2, 4, 6)
    assert torch.equal(SinusoidalPositionalEncoding(6)(z)[1], pe)
    lpe = LearnedPositionalEncoding(6, max_len=4)
    assert lpe(z).shape == z.shape
    with pytest.raises(ValueError, match="exceeds"):
        lpe(torch.zeros(1, 5, 6))


# ---- cross-modal Transformer ---------------------------------------------------------------------


def test_defaults_follow_002():
    m = CrossModalTransformer({"audio": 3900, "video": 4096}, 2)
    enc = m.encoders["audio"]
    assert len(enc.layers) == 2  # 002 §3.3: 2 self-attention layers
    assert enc.layers[0].attn.d_model == 512 and enc.layers[0].attn.heads == 4  # 512 nodes, 4 heads
    assert sorted(m.cross_weight) == ["audio__to__video", "video__to__audio"]  # α, β


@pytest.mark.parametrize("k", [1, 2, 3])
def test_forward_backward_every_subset(k):
    model = _model().train()
    x, mask = _inputs()
    for subset in itertools.combinations(DIMS, k):
        model.zero_grad()
        out = model({m: x[m] for m in subset}, {m: mask[m] for m in subset})
        assert out.shape == (B, 4) and torch.all(torch.isfinite(out))
        out.square().sum().backward()
        for m in subset:
            g = model.proj[m].weight.grad
            assert g is not None and torch.all(torch.isfinite(g)) and g.abs().sum() > 0
        for m in set(DIMS) - set(subset):
            assert model.proj[m].weight.grad is None


def test_fully_masked_modality_equals_dropped_modality():
    model = _model().eval()
    x, mask = _inputs()
    for gone in DIMS:
        masked = dict(mask, **{gone: torch.zeros(B, T, dtype=torch.bool)})
        dropped_x = {m: v for m, v in x.items() if m != gone}
        dropped_m = {m: v for m, v in mask.items() if m != gone}
        with torch.no_grad():
            assert torch.allclose(model(x, masked), model(dropped_x, dropped_m), atol=1e-5)
    # per sample: sample 1 without 'face' in a mixed batch == sample 1 alone with no 'face'
    masked = dict(mask, face=mask["face"].clone())
    masked["face"][1] = False
    with torch.no_grad():
        batch = model(x, masked)
        alone = model({m: x[m][1:2] for m in ("acoustic", "text")}, {m: mask[m][1:2] for m in ("acoustic", "text")})
        full = model(x, mask)
    assert torch.allclose(batch[1:2], alone, atol=1e-5)
    assert not torch.allclose(full[1:2], alone, atol=1e-3)  # and the face did matter
    assert torch.allclose(batch[0], full[0], atol=1e-5)  # other samples unaffected


def test_no_nan_when_modalities_are_fully_masked_for_some_samples():
    model = _model().train()
    x, mask = _inputs()
    mask = {m: v.clone() for m, v in mask.items()}
    mask["face"][0] = False
    mask["text"][[0, 2]] = False
    for m in DIMS:  # sample 3: nothing present at all
        mask[m][3] = False
    x = {m: v.masked_fill(~mask[m].unsqueeze(-1), float("nan")) for m, v in x.items()}  # absent values unread
    out = model(x, mask)
    assert torch.all(torch.isfinite(out))
    out.sum().backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x, mask)[3], model.head.bias)  # no input → the dense layer's bias


def test_bad_inputs_are_rejected():
    model = _model()
    x, mask = _inputs()
    with pytest.raises(ValueError, match="unknown modalities"):
        model(dict(x, video=x["face"]), dict(mask, video=mask["face"]))
    with pytest.raises(ValueError, match="no input modality"):
        model({}, {})
    with pytest.raises(ValueError, match="no mask"):
        model(x, {"face": mask["face"]})


# ---- registry ------------------------------------------------------------------------------------


def test_registry_builds_by_name_and_counts_parameters():
    assert "crossmodal" in available_models()
    counts = list_models(DIMS, 4, "classification", {"crossmodal": SMALL})
    assert counts["crossmodal"] == count_parameters(_model())
    d = SMALL["d_model"]
    # per-modality projections + 6 ordered cross-attention pairs (4 d×d linears each) + their 6 scalars
    cross = 6 * (4 * (d * d + d) + 1)
    proj = sum(D * d + d for D in DIMS.values())
    enc = 3 * 2 * (4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d)
    assert counts["crossmodal"] == proj + cross + enc + (d * 4 + 4)
    with pytest.raises(ModelError, match="unknown model 'nope'.*crossmodal"):
        build_model("nope", DIMS, 4, "classification", SMALL)
    with pytest.raises(ModelError, match="divisible"):
        build_model("crossmodal", DIMS, 4, "classification", {"d_model": 10, "heads": 4})
