"""MCT-HFR (003): MRAU re-scaled attention, attention pooling, LFI/GFA training loss, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.missing.inputs import model_inputs
from pipeline.models import registry
from pipeline.models.mct_hfr import (
    MCTHFR,
    Params,
    build,
    cmd,
    gfa_distance,
    rescale_factors,
)
from pipeline.models.pooling import AttentionPooling
from pipeline.models.registry import ModelEntry
from pipeline.train.loop import TrainBatch as Batch

DIMS = {"audio": 6, "video": 10, "text": 5}
B, T = 3, 8
TINY = dict(d_model=16, heads=2, layers=2, lfi_layers=1, classifier_hidden=8, dropout=0.1, attn_dropout=0.1, embed_dropout=0.1)
TASKS = {"classification": 4, "regression": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(seed: int = 0, dims: dict[str, int] = DIMS, b: int = B, t: int = T):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(b, t, d, generator=g) for m, d in dims.items()}
    mask = {m: torch.rand(b, t, generator=g) < 0.7 for m in dims}
    for m in dims:
        mask[m][:, 0] = True
    return x, mask


def _model(task: str = "classification", seed: int = 0, **over) -> MCTHFR:
    torch.manual_seed(seed)
    return build(DIMS, TASKS[task], task, Params(**{**TINY, **over}))


def _task_loss(task: str, y: Tensor):
    if task == "classification":
        return lambda pred: F.cross_entropy(pred, y)
    return lambda pred: F.mse_loss(pred, y)


def _drop_strategy(x, mask, seed=1, p=0.4):
    g = torch.Generator().manual_seed(seed)
    new_mask = {m: mask[m] & (torch.rand(mask[m].shape, generator=g) >= p) for m in mask}
    new_x = {m: x[m] * new_mask[m].unsqueeze(-1) for m in x}
    return new_x, new_mask


def _batch(task: str, epoch: int = 1, seed: int = 0) -> Batch:
    x, mask = _inputs(seed)
    xi, mi = _drop_strategy(x, mask)
    y = torch.tensor([0, 1, 3]) if task == "classification" else torch.randn(B, T, 2)
    return Batch(xi, mi, x, mask, y, None if task == "classification" else torch.ones(B, T, dtype=torch.bool), epoch, None, "zero")


# ---- defaults and the paper's size ---------------------------------------------------------------


def test_defaults_follow_the_paper_and_parameter_count_matches_table4_layer():
    p = Params()
    assert (p.d_model, p.heads, p.layers, p.kernel_sizes, p.alpha, p.beta) == (128, 4, 4, (3, 3, 1), 0.4, 0.6)
    assert p.missing_input == "token"  # 003 §5.2.1: [UNK] for missing text, zeros elsewhere
    m = build({"audio": 512, "vision": 512, "text": 768}, 4, "classification", p)
    assert m.kernel == {"audio": 3, "vision": 3, "text": 1}  # paper order (a, v, l), by position
    layer = m.mrau[0]
    per_layer = sum(q.numel() for q in layer.parameters())
    # per modality: Q,K,V,O (4·(128²+128)) + FFN 128→512→128 + 2 LayerNorms
    assert per_layer == 3 * (4 * (128 * 128 + 128) + (128 * 512 + 512 + 512 * 128 + 128) + 2 * 256) == 594_816
    in_proj = 3 * 3 * (128 * 128 + 128)
    assert round((per_layer - in_proj) / 1e6, 2) == 0.45  # Table 4 layer-wise (thop misses raw in-proj Parameters)
    conv = (512 * 3 + 512 * 3 + 768 * 1) * 128
    head = 384 * 128 + 128 + 128 * 4 + 4
    assert m.inference_parameters() == conv + 4 * per_layer + 3 * 128 + head == 2_920_964
    assert registry.count_parameters(m) > m.inference_parameters()


def test_kernels_by_name_override_positions_and_must_be_odd():
    m = build({"a": 4, "b": 4, "c": 4, "d": 4}, 2, "classification", Params(**TINY, kernels={"c": 5}))
    assert m.kernel == {"a": 3, "b": 3, "c": 5, "d": 1}
    with pytest.raises(ValueError):
        Params(kernel_sizes=(2, 3))
    with pytest.raises(ValueError):
        build(DIMS, 2, "classification", Params(kernels={"nope": 3}))
    with pytest.raises(ValueError, match="max_len"):
        build(DIMS, 2, "classification", Params(max_len={"nope": 40}))


def test_registry_builds_it_with_overrides(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "mct_hfr", ModelEntry("mct_hfr", "build", "Params", "003 §4"))
    m = registry.build_model("mct_hfr", DIMS, 4, "classification", TINY)
    assert isinstance(m, MCTHFR) and m.p.d_model == 16
    with pytest.raises(registry.ModelError):
        registry.build_model("mct_hfr", DIMS, 4, "classification", {"bogus": 1})


# ---- Eqs. 6–9 -----------------------------------------------------------------------------------


def test_rescale_factors_are_eq6():
    counts = {"a": torch.tensor([4.0, 9.0]), "b": torch.tensor([16.0, 0.0])}
    s = rescale_factors(counts, sum_tmax=40.0)
    ge = torch.log(torch.tensor([20.0, 9.0])) / math.log(40.0)
    assert torch.allclose(s["a"], torch.tensor([1 / 2, 1 / 3]) * ge)
    assert torch.allclose(s["b"], torch.tensor([1 / 4, 1.0]) * ge)  # T_m = 0: finite (its keys are masked anyway)
    assert torch.allclose(rescale_factors(counts, 40.0, gamma_b=False)["a"], ge)
    assert torch.allclose(rescale_factors(counts, 40.0, gamma_e=False)["a"], torch.tensor([1 / 2, 1 / 3]))


def test_mrau_attention_weights_match_a_hand_computation():
    torch.manual_seed(0)
    model = build({"a": 3, "b": 4}, 2, "classification", Params(d_model=8, heads=2, layers=1, max_len={"a": 10, "b": 6})).eval()
    x = {"a": torch.randn(2, 5, 3), "b": torch.randn(2, 4, 4)}  # unequal lengths: concatenation over time
    mask = {"a": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool(), "b": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()}
    enc = model._encode(x, mask, keep_weights=True)
    h = enc["h"]
    att = model.mrau[0].attn
    # hand: T = (3,2) and (5,0); ΣT_max = 10 + 6
    gamma_e = torch.log(torch.tensor([5.0, 5.0])) / math.log(16.0)
    scale = {"a": torch.tensor([3.0, 5.0]).rsqrt() * gamma_e, "b": torch.tensor([2.0, 1.0]).rsqrt() * gamma_e}
    k = torch.cat([att[m].k_proj(h[m]) * scale[m][:, None, None] for m in ("a", "b")], dim=1)  # [2,9,8]
    q = att["a"].q_proj(h["a"])
    key_mask = torch.cat([mask["a"], mask["b"]], dim=1)
    for head in range(2):
        sl = slice(4 * head, 4 * head + 4)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0  # /√d_k
        expected = torch.softmax(scores.masked_fill(~key_mask[:, None, :], float("-inf")), dim=-1)
        assert torch.allclose(att["a"].last_weights[:, head], expected, atol=1e-6)
    assert torch.all(att["a"].last_weights[1, :, :, 5:] == 0)  # b is absent in sample 1


def test_zero_convention_attends_zero_filled_steps_mask_convention_does_not():
    x, mask = _inputs()
    model = _model().eval()
    for convention, attends in (("zero", True), ("mask", False)):
        xs, ms = model_inputs(convention, x, mask)
        model._encode(xs, ms, keep_weights=True)
        w = model.mrau[0].attn["audio"].last_weights  # keys: audio first
        absent = ~mask["audio"]
        got = w[:, :, :, :T].sum(dim=2)[absent.unsqueeze(1).expand(-1, w.shape[1], -1)]
        assert bool((got > 0).all()) == attends


# ---- pooling ------------------------------------------------------------------------------------


def test_attention_pooling_is_softmax_of_u_over_valid_steps():
    torch.manual_seed(0)
    pool = AttentionPooling(4)
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]]).bool()
    out = pool(x, mask)
    u = pool.score.weight[0]
    a = torch.softmax((x[0, [0, 2, 3]] @ u), dim=0)
    assert torch.allclose(out[0], (a[:, None] * x[0, [0, 2, 3]]).sum(0), atol=1e-6)
    assert torch.all(out[1] == 0)
    x2 = x.clone()
    x2[0, 1] = float("nan")  # an invalid step's value never leaks
    assert torch.allclose(pool(x2, mask)[0], out[0])
    assert AttentionPooling(4, hidden=3)(x).shape == (2, 4)


# ---- forward / backward / missing modalities -----------------------------------------------------


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("missing", ["zero", "mask"])
def test_forward_backward_with_each_modality_missing(task, missing):
    model = _model(task)
    x, mask = _inputs()
    shape = (B, TASKS[task]) if task == "classification" else (B, T, TASKS[task])
    out = model(x, mask)
    assert out.shape == shape
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.conv.parameters())
    model.eval()
    for m in DIMS:
        masked = {k: v.clone() for k, v in mask.items()}
        masked[m][:] = False
        dropped_x = {k: v for k, v in x.items() if k != m}
        dropped_m = {k: v for k, v in mask.items() if k != m}
        with torch.no_grad():  # through the input convention, as pipeline.models.registry.forward does
            a, b = model(*model_inputs(missing, x, masked)), model(*model_inputs(missing, dropped_x, dropped_m))
        assert a.shape == b.shape == shape and torch.isfinite(a).all() and torch.isfinite(b).all()
        if missing == "mask":  # the architecture implies masked == dropped
            assert torch.allclose(a, b, atol=1e-5)
        else:  # zero-filled steps are tokens: a fully masked modality is not the same as no modality
            assert not torch.allclose(a, b, atol=1e-5)
    # every modality fully masked, in mask mode: still finite
    nothing = {k: torch.zeros_like(v) for k, v in mask.items()}
    with torch.no_grad():
        assert torch.isfinite(model(x, nothing)).all()


def test_inputs_are_validated():
    model = _model()
    x, mask = _inputs()
    with pytest.raises(ValueError, match="unknown modalities"):
        model({**x, "smell": x["audio"]}, {**mask, "smell": mask["audio"]})
    with pytest.raises(ValueError, match="no mask"):
        model(x, {"audio": mask["audio"]})
    with pytest.raises(ValueError, match="no input modality"):
        model({}, {})
    reg = _model("regression")
    with pytest.raises(ValueError, match="disagree on \\[B,T\\]"):
        reg({"audio": x["audio"], "text": x["text"][:, :5]}, {"audio": mask["audio"], "text": mask["text"][:, :5]})


def test_outer_residual_and_scaled_embedding_options_run():
    model = _model(outer_residual=True, scale_embedding=True, gfa_symmetric=True)
    assert model.final_norm is not None
    parts = model.training_loss(_batch("classification"), _task_loss("classification", torch.tensor([0, 1, 3])))
    parts["total"].backward()
    assert torch.isfinite(parts["total"])


# ---- training loss (Eqs. 15–18) ------------------------------------------------------------------


@pytest.mark.parametrize("task", list(TASKS))
def test_training_loss_has_all_parts_and_gradients_reach_the_reconstruction_branch(task):
    model = _model(task)
    batch = _batch(task)
    parts = model.training_loss(batch, _task_loss(task, batch.y))
    assert set(parts) == {"total", "task", "gfa", "gfa_task", "gfa_cmd", "lfi"}
    assert all(torch.isfinite(v) for v in parts.values())
    assert parts["lfi"] > 0 and parts["gfa_cmd"] > 0
    expected = parts["task"] + 0.4 * (parts["gfa_task"] + parts["gfa_cmd"]) + 0.6 * parts["lfi"]
    assert torch.allclose(parts["total"], expected)
    parts["total"].backward()
    for name, mod in (("lfi", model.lfi), ("gfa", model.gfa_predictor), ("conv", model.conv)):
        grads = [p.grad for p in mod.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name


def test_lfi_counts_only_missing_positions_and_aux_losses_wait_for_their_epoch():
    model = _model(dropout=0.0, attn_dropout=0.0, embed_dropout=0.0, classifier_dropout=0.0).eval()
    batch = _batch("classification")
    loss = _task_loss("classification", batch.y)
    base = model.training_loss(batch, loss)
    # change the complete view only where the incomplete view kept the step: LFI target untouched
    kept = {m: batch.mask[m] for m in DIMS}
    x_full2 = {m: torch.where(kept[m].unsqueeze(-1), batch.x_full[m] + 3.0, batch.x_full[m]) for m in DIMS}
    other = model.training_loss(Batch(batch.x, batch.mask, x_full2, batch.mask_full, batch.y, None, 1, None, "zero"), loss)
    assert torch.allclose(other["lfi"], base["lfi"]) and not torch.allclose(other["gfa"], base["gfa"])
    # change it at a missing step: LFI changes
    missing = {m: batch.mask_full[m] & ~batch.mask[m] for m in DIMS}
    x_full3 = {m: torch.where(missing[m].unsqueeze(-1), batch.x_full[m] + 3.0, batch.x_full[m]) for m in DIMS}
    third = model.training_loss(Batch(batch.x, batch.mask, x_full3, batch.mask_full, batch.y, None, 1, None, "zero"), loss)
    assert third["lfi"] > base["lfi"]
    # nothing dropped (the standard strategy): 003 §6.1.1, MCT-HFR trains as the plain MCT — the task loss alone
    complete = Batch(batch.x_full, batch.mask_full, batch.x_full, batch.mask_full, batch.y, None, 1, None, "zero")
    plain = model.training_loss(complete, loss)
    assert set(plain) == {"total", "task"}
    assert torch.allclose(plain["total"], loss(model(*complete.inputs_full())))
    # the authors' train.py: no LFI term, but the complete-view CE and CMD(P(h), h) of identical views remain
    code = _model(dropout=0.0, attn_dropout=0.0, embed_dropout=0.0, classifier_dropout=0.0, complete_batches="hfr")
    code.load_state_dict(model.state_dict())
    same = code.eval().training_loss(complete, loss)
    assert same["lfi"] == 0 and torch.allclose(same["gfa_task"], same["task"])
    assert same["total"] > plain["total"] and torch.allclose(same["task"], plain["task"])
    # authors' code: auxiliary losses from the second epoch
    late = _model(aux_start_epoch=2).eval()
    assert set(late.training_loss(_batch("classification", epoch=1), loss)) == {"total", "task"}
    assert "lfi" in late.training_loss(_batch("classification", epoch=2), loss)


def test_cmd_is_zero_for_equal_batches_and_grows_with_a_shift():
    torch.manual_seed(0)
    a = torch.randn(32, 6)
    assert cmd(a, a) == 0
    assert cmd(a, a + 0.5) > cmd(a, a + 0.1) > 0
    assert torch.allclose(cmd(a, a * 2, moments=1), torch.linalg.vector_norm(a.mean(0) - 2 * a.mean(0)))


@pytest.mark.parametrize("kind", ["cmd", "cosine", "jsd", "smooth_l1"])
def test_gfa_distances_of_fig6_are_zero_for_equal_batches_and_grow_apart(kind):
    """003 §6.2.3 compares CMD with smooth L1, cosine similarity and JSD as GFA's distance."""
    torch.manual_seed(0)
    a = torch.randn(32, 6)
    b = torch.randn(32, 6)
    assert float(gfa_distance(kind, a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(gfa_distance(kind, a, b)) > 1e-3
    by_hand = {"cosine": (1 - F.cosine_similarity(a, b, dim=-1)).mean(), "smooth_l1": F.smooth_l1_loss(a, b), "cmd": cmd(a, b)}
    if kind in by_hand:
        assert torch.allclose(gfa_distance(kind, a, b), by_hand[kind])
    else:  # JSD of the softmax distributions: symmetric, at most ln 2
        p, q = a.softmax(-1), b.softmax(-1)
        m = (p + q) / 2
        ref = 0.5 * ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)).mean()
        assert torch.allclose(gfa_distance(kind, a, b), ref, atol=1e-6)
        assert torch.allclose(gfa_distance(kind, a, b), gfa_distance(kind, b, a), atol=1e-6) and float(ref) <= math.log(2)
    model = MCTHFR({"a": 4, "v": 3}, 2, Params(d_model=16, heads=2, layers=1, lfi_layers=1, gfa_distance=kind))
    assert model.p.gfa_distance == kind


# ---- learning ------------------------------------------------------------------------------------


LEARN = dict(d_model=16, heads=2, layers=1, lfi_layers=1, classifier_hidden=16, dropout=0.0, attn_dropout=0.0,
             embed_dropout=0.0, classifier_dropout=0.0)


def test_learns_a_class_decodable_only_from_two_modalities_together():
    torch.manual_seed(0)
    n, t = 128, 6
    dims = {"audio": 3, "video": 3, "text": 2}
    a, v = torch.randint(0, 2, (n,)), torch.randint(0, 2, (n,))
    y = a ^ v  # XOR: neither modality alone says anything about the class
    x = {
        "audio": torch.randn(n, t, 3) * 0.3 + (a.float() * 2 - 1)[:, None, None],
        "video": torch.randn(n, t, 3) * 0.3 + (v.float() * 2 - 1)[:, None, None],
        "text": torch.randn(n, t, 2),
    }
    mask = {m: torch.ones(n, t, dtype=torch.bool) for m in dims}
    model = build(dims, 2, "classification", Params(**LEARN))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tr, te = slice(0, 96), slice(96, n)
    for epoch in range(1, 61):
        batch = Batch({m: x[m][tr] for m in dims}, {m: mask[m][tr] for m in dims}, {m: x[m][tr] for m in dims},
                      {m: mask[m][tr] for m in dims}, y[tr], None, epoch)
        opt.zero_grad()
        model.training_loss(batch, lambda p: F.cross_entropy(p, y[tr]))["total"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model({m: x[m][te] for m in dims}, {m: mask[m][te] for m in dims}).argmax(-1) == y[te]).float().mean()
    assert acc > 0.85


def _ccc(y: Tensor, p: Tensor) -> Tensor:
    my, mp = y.mean(), p.mean()
    return 2 * ((y - my) * (p - mp)).mean() / (y.var(unbiased=False) + p.var(unbiased=False) + (my - mp) ** 2)


def test_learns_a_time_continuous_target():
    torch.manual_seed(0)
    n, t = 64, 10
    dims = {"audio": 3, "video": 2}
    x = {m: torch.randn(n, t, d) for m, d in dims.items()}
    target = (torch.tanh(x["audio"][..., 0] + x["video"][..., 1]))[..., None]  # [n,t,1]
    mask = {m: torch.ones(n, t, dtype=torch.bool) for m in dims}
    model = build(dims, 1, "regression", Params(**LEARN, missing_input="mask"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tr, te = slice(0, 48), slice(48, n)
    loss = lambda p: 1 - _ccc(target[tr], p)  # noqa: E731
    for epoch in range(1, 61):
        xi, mi = _drop_strategy({m: x[m][tr] for m in dims}, {m: mask[m][tr] for m in dims}, seed=epoch, p=0.1)
        batch = Batch(xi, mi, {m: x[m][tr] for m in dims}, {m: mask[m][tr] for m in dims}, target[tr], None, epoch)
        opt.zero_grad()
        model.training_loss(batch, loss)["total"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model({m: x[m][te] for m in dims}, {m: mask[m][te] for m in dims})
    assert _ccc(target[te], pred) > 0.5
