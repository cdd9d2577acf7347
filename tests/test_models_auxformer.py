"""AuxFormer (001 §3), its baselines 1 and 4 (§4.5), and MulT (§4.5.2 / Tsai et al. 2019)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from pipeline.models import auxformer as AF
from pipeline.models import mult as MT
from pipeline.models.blocks import last_present
from pipeline.models.registry import (
    MODELS,
    ModelEntry,
    ModelError,
    build_model,
    count_parameters,
)
from pipeline.train.loop import TrainBatch

B, T = 3, 8
DIMS3 = {"audio": 6, "video": 10, "text": 5}
TINY = {"d_model": 8, "heads": 2, "layers": 1, "dropout": 0.1}
TINY_AUX = {**TINY, "aux_repeats": 2, "aux_hidden": (8,), "mlp_hidden": 12}

# (registry name, builder, Params, dims, tiny overrides)
CASES = [
    ("auxformer", AF.build, AF.Params, {"audio": 6, "video": 10}, TINY_AUX),
    ("auxformer_noaux", AF.build_noaux, AF.NoAuxParams, {"audio": 6, "video": 10}, {**TINY, "mlp_hidden": 12}),
    ("unimodal", AF.build_unimodal, AF.UnimodalParams, {"video": 10}, TINY_AUX),
    ("mult", MT.build, MT.Params, {"audio": 6, "video": 10}, TINY),
    ("mult", MT.build, MT.Params, DIMS3, TINY),
]
IDS = ["auxformer", "noaux", "unimodal", "mult2", "mult3"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def Batch(x, mask, x_full, mask_full, y, y_mask, epoch: int = 1) -> TrainBatch:
    return TrainBatch(x, mask, x_full, mask_full, y, y_mask, epoch)


@pytest.fixture
def registered(monkeypatch):
    entries = {
        "auxformer": ModelEntry("auxformer", "build", "Params", "001 §3"),
        "auxformer_noaux": ModelEntry("auxformer", "build_noaux", "NoAuxParams", "001 §4.5.1"),
        "unimodal": ModelEntry("auxformer", "build_unimodal", "UnimodalParams", "001 §4.5.4"),
        "mult": ModelEntry("mult", "build", "Params", "001 §4.5.2"),
    }
    for k, v in entries.items():
        monkeypatch.setitem(MODELS, k, v)


def _inputs(dims, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(B, T, d, generator=g) for m, d in dims.items()}
    mask = {m: torch.rand(B, T, generator=g) < 0.7 for m in dims}
    for m in dims:
        mask[m][:, 0] = True
        mask[m][1, 5:] = False  # a shorter clip: "last present" is not the last index
    return x, mask


def _build(builder, params_cls, dims, over, task, **extra):
    torch.manual_seed(0)
    return builder(dims, 4 if task == "classification" else 2, task, params_cls(**{**over, **extra}))


def _shape(task, b=B):
    return (b, 4) if task == "classification" else (b, T, 2)


# ---- parameter counts and structure with the paper's defaults --------------------------------------


def test_paper_defaults_and_parameter_counts_vs_table5():
    dims = {"audio": 130, "video": 4096}  # 001 §3.1
    full = AF.build(dims, 4, "classification", AF.Params())
    assert full.d_model == 130 and full.embed["audio"].proj is None and full.embed["video"].proj is not None
    layer = full.self_attn["video"].layers[0]
    assert len(full.fusion["audio"].layers) == 5 and len(full.self_attn["audio"].layers) == 5  # §4.3
    assert layer.attn.heads == 10 and layer.alpha.numel() == 1  # §4.3 heads; §3.3 scalar per layer
    assert full.head.mlp[0].out_features == 260  # §4.3
    # Table 5: 7,054,748 / 4,776,994 (authors' code: both streams projected); +2,600 = separate K/V LN
    counts = {
        "aux": count_parameters(full),
        "aux_all": count_parameters(AF.build(dims, 4, "classification", AF.Params(project_all=True))),
        "noaux": count_parameters(AF.build_noaux(dims, 4, "classification", AF.NoAuxParams())),
        "noaux_all": count_parameters(AF.build_noaux(dims, 4, "classification", AF.NoAuxParams(project_all=True))),
        "mult": count_parameters(MT.build(dims, 4, "classification", MT.Params())),
    }
    assert counts == {
        "aux": 7_040_448, "aux_all": 7_054_748 + 2_600, "noaux": 4_762_694, "noaux_all": 4_776_994 + 2_600,
        "mult": 358_384 + 600,  # Table 5 baseline 2: 358,384; +600 = separate K/V LN (2·30 × 10 layers)
    }
    # baseline 4: untied auxiliary passes by default (the reading that fits Table 5, test_model_counts.py)
    assert count_parameters(AF.build_unimodal({"video": 4096}, 4, "classification", AF.UnimodalParams())) == 4_924_173
    tied = AF.UnimodalParams(aux_tied=True)
    assert count_parameters(AF.build_unimodal({"video": 4096}, 4, "classification", tied)) == 2_878_753


def test_modality_count_errors(registered):
    with pytest.raises(ValueError, match="exactly 2 modalities"):
        AF.build(DIMS3, 4, "classification", AF.Params())
    with pytest.raises(ValueError, match="exactly 1 modality"):
        AF.build_unimodal({"a": 4, "b": 4}, 4, "classification", AF.UnimodalParams())
    with pytest.raises(ValueError, match="at least 2 modalities"):
        MT.build({"a": 4}, 4, "classification", MT.Params())
    with pytest.raises(ModelError, match="exactly 2 modalities"):
        build_model("auxformer_noaux", DIMS3, 4)
    with pytest.raises(ValueError, match="divisible"):
        AF.build({"a": 4, "b": 6}, 4, "classification", AF.Params(d_model=9, heads=2))
    model = AF.build({"a": 4, "b": 6}, 4, "classification", AF.Params(**TINY_AUX))
    x, mask = _inputs({"a": 4, "b": 6})
    with pytest.raises(ValueError, match="unknown modalities"):
        model({**x, "c": x["a"]}, {**mask, "c": mask["a"]})
    with pytest.raises(ValueError, match="no input modality"):
        model({}, {})


def test_registry_defaults_and_d_model_rounding(registered):
    # demo widths: acoustic 25 is rounded up to 30 (10 heads) and projected; face 4,096 → 30
    m = build_model("auxformer", {"acoustic": 25, "face": 4096}, 4)
    assert m.d_model == 30 and m.embed["acoustic"].proj.out_channels == 30


def test_last_present():
    h = torch.arange(12, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert torch.equal(last_present(h, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


# ---- forward/backward, missing modalities -----------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_backward_and_missing(case, causal, task):
    _, builder, pcls, dims, over = case
    model = _build(builder, pcls, dims, over, task, causal=causal)
    x, mask = _inputs(dims)
    model.train()
    out = model(x, mask)
    assert out.shape == _shape(task) and torch.all(torch.isfinite(out))
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.all(torch.isfinite(g)) for g in grads)
    model.eval()
    with torch.no_grad():
        full = model(x, mask)
        for m in dims:
            masked = {**mask, m: torch.zeros_like(mask[m])}
            noisy = {**x, m: 1e3 * torch.randn_like(x[m])}  # values under a False mask must not matter
            out_masked = model(noisy, masked)
            assert torch.all(torch.isfinite(out_masked))
            if len(dims) > 1:
                dropped = model({k: v for k, v in x.items() if k != m}, {k: v for k, v in mask.items() if k != m})
                assert torch.allclose(out_masked, dropped, atol=1e-5)
                assert not torch.allclose(out_masked, full, atol=1e-4)  # the modality did matter


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_training_loss_eq6(case):
    name, builder, pcls, dims, over = case
    model = _build(builder, pcls, dims, over, "classification").eval()
    x, mask = _inputs(dims)
    y = torch.tensor([0, 1, 3])
    batch = Batch(x, mask, x, mask, y, None)
    parts = model.training_loss(batch, lambda pred: F.cross_entropy(pred, y))
    main = F.cross_entropy(model._run(x, mask, **({"auxiliary": True} if name != "unimodal" else {}))[0], y)
    assert torch.allclose(parts["main" if "main" in parts else "total"], main)
    if name == "auxformer":
        assert set(parts) == {"total", "main", "aux_audio", "aux_video"}
        expected = (parts["main"] + parts["aux_audio"] + parts["aux_video"]) / 3  # §4.3: λ = ⅓
        assert torch.allclose(parts["total"], expected)
        assert not torch.allclose(parts["aux_audio"], parts["aux_video"])
        # §4.5.4 / the authors' test.py: inference averages the three networks' logits (default) ...
        main_out, aux = model._run(x, mask, auxiliary=True)
        averaged = (main_out + aux["audio"] + aux["video"]) / 3
        assert model.p.inference == "average" and torch.allclose(model(x, mask), averaged, atol=1e-6)
        assert not torch.allclose(model(x, mask), main_out, atol=1e-4)
        # ... and with inference="main" returns the audiovisual head alone, the same weights
        model.p = model.p.model_copy(update={"inference": "main"})
        assert torch.allclose(model(x, mask), main_out)
        model.p = model.p.model_copy(update={"inference": "average"})
    elif name == "unimodal":
        assert torch.allclose(parts["total"], (parts["main"] + parts["aux_video"]) / 2)
        main_out, aux_out = model._run(x, mask)
        assert torch.allclose(model(x, mask), (main_out + aux_out) / 2)  # §4.5.4: outputs averaged
        # untied auxiliary passes (the default reading of Fig. 2): one encoder per pass, distinct weights
        encs = model.aux.encoders["video"]
        assert len(encs) == 2 and encs[0].layers[0].attn.q_proj.weight is not encs[1].layers[0].attn.q_proj.weight
    else:
        assert set(parts) == {"total"}
    model.train()
    parts = model.training_loss(batch, lambda pred: F.cross_entropy(pred, y))
    parts["total"].backward()
    if name == "auxformer":
        assert model.aux.encoders["audio"].layers[0].attn.q_proj.weight.grad.abs().sum() > 0  # tied: one encoder
    assert all(torch.all(torch.isfinite(p.grad)) for p in model.parameters() if p.grad is not None)


# ---- learning ----------------------------------------------------------------------------------------


def _fit(model, x, mask, y, loss_fn, steps, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        if hasattr(model, "training_loss"):
            loss = model.training_loss(Batch(x, mask, x, mask, y, None), lambda p: loss_fn(p))["total"]
        else:
            loss = loss_fn(model(x, mask))
        loss.backward()
        opt.step()
    return model.eval()


def _xor_task(n, seed):
    """Class = sign(audio mean) XOR sign(video mean): decodable only from both modalities together."""
    g = torch.Generator().manual_seed(seed)
    sa, sv = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    x = {
        "audio": torch.randn(n, T, 4, generator=g) * 0.5 + (2 * sa - 1)[:, None, None].float(),
        "video": torch.randn(n, T, 6, generator=g) * 0.5 + (2 * sv - 1)[:, None, None].float(),
    }
    mask = {m: torch.ones(n, T, dtype=torch.bool) for m in x}
    mask["video"][: n // 4, 5:] = False
    return x, mask, sa ^ sv


@pytest.mark.parametrize("which", ["auxformer", "mult"])
def test_learns_crossmodal_xor(which):
    torch.manual_seed(0)
    dims = {"audio": 4, "video": 6}
    if which == "auxformer":
        model = AF.build(dims, 2, "classification", AF.Params(**{**TINY_AUX, "d_model": 16, "dropout": 0.0}))
    else:
        model = MT.build(dims, 2, "classification", MT.Params(**{**TINY, "d_model": 16, "dropout": 0.0}))
    x, mask, y = _xor_task(64, 0)
    _fit(model, x, mask, y, lambda p: F.cross_entropy(p, y), steps=80, lr=5e-3)
    xt, mt, yt = _xor_task(64, 1)
    with torch.no_grad():
        acc = (model(xt, mt).argmax(-1) == yt).float().mean().item()
    assert acc > 0.85, acc


def _ccc(pred, target):
    pm, tm = pred.mean(), target.mean()
    cov = ((pred - pm) * (target - tm)).mean()
    return 2 * cov / (pred.var(unbiased=False) + target.var(unbiased=False) + (pm - tm) ** 2)


def test_learns_per_step_regression():
    """Target at each step = audio[t,0] + video[t,0] (needs both streams, per step)."""
    torch.manual_seed(0)

    def data(seed):
        g = torch.Generator().manual_seed(seed)
        x = {"audio": torch.randn(64, T, 4, generator=g), "video": torch.randn(64, T, 6, generator=g)}
        y = (x["audio"][..., :1] + x["video"][..., :1]) / 2
        return x, {m: torch.ones(64, T, dtype=torch.bool) for m in x}, y

    model = AF.build_noaux({"audio": 4, "video": 6}, 1, "regression", AF.NoAuxParams(**{**TINY, "d_model": 16, "dropout": 0.0, "mlp_hidden": 32, "embed_dropout": 0.0, "out_dropout": 0.0}))
    x, mask, y = data(0)
    _fit(model, x, mask, y, lambda p: 1 - _ccc(p, y), steps=80, lr=5e-3)
    xt, mt, yt = data(1)
    with torch.no_grad():
        ccc = _ccc(model(xt, mt), yt).item()
    assert ccc > 0.5, ccc


# ---- 001 §5.3's ablations (Table 3, Figs. 6-7) --------------------------------------------------------

ABLATIONS = [{"positions": "none"}, {"temporal": "lstm"}, {"temporal": "gru"}, {"temporal": "none"},
             {"token": "mean"}, {"token": "prepend"}]


@pytest.mark.parametrize("switch", ABLATIONS, ids=lambda s: "-".join(map(str, s.values())))
def test_ablation_switches_build_train_and_handle_missing_modalities(switch):
    dims = {"audio": 6, "video": 10}
    model = _build(AF.build, AF.Params, dims, TINY_AUX, "classification", **switch)
    x, mask = _inputs(dims)
    y = torch.tensor([0, 1, 3])
    parts = model.training_loss(Batch(x, mask, x, mask, y, None), lambda pred: F.cross_entropy(pred, y))
    parts["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        full = model(x, mask)
        dropped = model({"audio": x["audio"]}, {"audio": mask["audio"]})
        masked = model(x, {**mask, "video": torch.zeros_like(mask["video"])})
    assert full.shape == (B, 4) and torch.allclose(dropped, masked, atol=1e-5)
    assert not torch.allclose(full, masked, atol=1e-4)


def test_ablations_change_what_they_say():
    dims = {"audio": 6, "video": 10}
    p = AF.Params(**TINY_AUX)
    base = count_parameters(AF.build(dims, 4, "classification", p))
    d = AF.build(dims, 4, "classification", p).d_model
    stack = count_parameters(AF.build(dims, 4, "classification", p).self_attn["audio"])
    for temporal, layer in (("lstm", 4 * (2 * d * d + 2 * d)), ("gru", 3 * (2 * d * d + 2 * d)), ("none", 0)):
        model = AF.build(dims, 4, "classification", p.model_copy(update={"temporal": temporal}))
        assert count_parameters(model) == base - 2 * stack + 2 * layer, temporal
    prepend = AF.build(dims, 4, "classification", p.model_copy(update={"token": "prepend"}))
    assert count_parameters(prepend) == base + 2 * d  # one learnable token per stream
    # no positions, no order: with the mean token and no temporal layers the main network is invariant to
    # shuffling the steps of both streams together (the auxiliary networks read the last step: main only)
    torch.manual_seed(0)
    bag = AF.build(dims, 4, "classification", p.model_copy(update={
        "positions": "none", "token": "mean", "temporal": "none", "inference": "main"})).eval()
    torch.manual_seed(0)
    ordered = AF.build(dims, 4, "classification", p.model_copy(update={
        "token": "mean", "temporal": "none", "inference": "main"})).eval()
    x = {m: torch.randn(B, T, k) for m, k in dims.items()}
    mask = {m: torch.ones(B, T, dtype=torch.bool) for m in dims}
    perm = torch.randperm(T)
    shuffled = {m: v[:, perm] for m, v in x.items()}
    with torch.no_grad():
        assert torch.allclose(bag(x, mask), bag(shuffled, mask), atol=1e-5)
        assert not torch.allclose(ordered(x, mask), ordered(shuffled, mask), atol=1e-4)
    with pytest.raises(ValueError, match="per-step regression needs token 'last'"):
        AF.build(dims, 2, "regression", p.model_copy(update={"token": "mean"}))
    with pytest.raises(ValueError, match="not built for baseline 4"):
        AF.build_unimodal({"video": 10}, 4, "classification", AF.UnimodalParams(temporal="gru"))
