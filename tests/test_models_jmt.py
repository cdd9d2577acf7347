"""Joint Multimodal Transformer (seed 004 §3) and the Table 1 1-D CNN backbone."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models import ModelError, build_model, count_parameters, registry
from pipeline.models.cnn1d import CNN1D, conv_out_length, frame_signal
from pipeline.models.jmt import CROSS_ORDER, JointMultimodalTransformer, Params, build
from pipeline.models.registry import ModelEntry
from pipeline.runs import metrics

DIMS = {"audio": 6, "video": 10}
B, T = 3, 8
TINY = {"d_model": 16, "heads": 2, "ff_dim": 32, "head_hidden": 16}
PAPER_TEXT = {"cross_block": "transformer", "shared_cross": False, "shared_qkv": True, "readout": "concat",
              "l2_normalize": False}  # 004 §3 read literally: six transformer blocks, Q/K/V per source
VARIANTS = [
    {},  # the authors' code (self-attention head)
    {"readout": "fc"},  # the authors' FC head
    PAPER_TEXT,
    {**PAPER_TEXT, "shared_qkv": False},  # independent Q/K/V per block
    {"positions": "sinusoidal", "layers": 2, "dropout": 0.1},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(seed: int = 0, dims: dict[str, int] = DIMS) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(B, T, d, generator=g) for m, d in dims.items()}
    mask = {m: torch.rand(B, T, generator=g) < 0.7 for m in dims}
    for m in dims:
        mask[m][:, 0] = True
    return x, mask


def _model(task: str = "classification", n_out: int = 4, seed: int = 0, **overrides) -> JointMultimodalTransformer:
    torch.manual_seed(seed)
    return build(DIMS, n_out, task, Params(**{**TINY, **overrides}))


def _out_shape(task: str, n_out: int) -> tuple[int, ...]:
    return (B, n_out) if task == "classification" else (B, T, n_out)


# ---- JMT -----------------------------------------------------------------------------------------


def test_defaults_are_the_authors_build_and_parameter_counts_for_affwild2_dims():
    p = Params()
    assert (p.d_model, p.layers, p.heads, p.readout, p.cross_block, p.shared_cross, p.shared_qkv, p.l2_normalize) == (
        512, 1, 1, "last", "attention", True, False, True)
    assert p.missing_input == "zero"
    # §4.2: visual and audio backbones both give 512-d features; valence + arousal per step
    dims = {"visual": 512, "audio": 512}
    model = build(dims, 2, "regression", p)
    d = 512
    lin = d * d + d
    mha, ff, ln = 4 * lin, 2 * lin, 2 * d
    encoder = mha + ff + 2 * ln  # post-LN, one layer, feed-forward width d
    regressor = (d * 128 + 128) + (128 * 2 + 2)
    core = (2 * d * d + d) + 3 * encoder + 3 * mha  # joint FC 1,024 → 512; encoders A, B, J; three bare cross MHAs
    # the code's self-attention head: an encoder block over the six tokens + one bare self-attention
    assert count_parameters(model) == core + encoder + mha + regressor
    assert count_parameters(model) - count_parameters(model.head) == 11_039_232
    assert len(model.cross) == 3 and model.fc_out is None
    fc = build(dims, 2, "regression", Params(readout="fc"))  # FC 3,072 → 1,024, no self-attention block
    assert fc.final is None and count_parameters(fc) - count_parameters(fc.head) == core + (6 * d * 2 * d + 2 * d)
    assert count_parameters(fc) - count_parameters(fc.head) == 11_557_376
    # the paper's text read literally: six transformer blocks; per source (A, B, J) one pre-attention
    # LayerNorm and W_Q, W_K, W_V shared by the six; each block its own output projection, FF and FF LayerNorm
    text = build(dims, 2, "regression", Params(**PAPER_TEXT))
    common = (2 * d * d + d) + 3 * encoder + encoder + (6 * d * 128 + 128) + (128 * 2 + 2)
    assert count_parameters(text) == common + 3 * (3 * lin + ln) + 6 * (lin + ff + ln) == 14_331_266
    independent = build(dims, 2, "regression", Params(**{**PAPER_TEXT, "shared_qkv": False}))
    assert count_parameters(independent) == common + 6 * (mha + ff + 3 * ln) == 16_704_386
    assert len(text.cross) == 6 and isinstance(text.proj["A"], torch.nn.Identity)
    # the blocks really share: A←B and A←J use one W_Q; B←A and J←A one W_K, W_V
    assert text.cross["AB"].attn.q_proj is text.cross["AJ"].attn.q_proj is text.qkv["A"].q
    assert text.cross["BA"].attn.k_proj is text.cross["JA"].attn.k_proj is text.qkv["A"].k
    assert text.cross["AB"].attn.out_proj is not text.cross["AJ"].attn.out_proj
    with pytest.raises(ValueError, match="exclude each other"):
        build(dims, 2, "regression", Params(shared_cross=True, shared_qkv=True))


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_forward_backward_with_each_modality_present_masked_or_dropped(task, variant):
    n_out = 4 if task == "classification" else 2
    model = _model(task, n_out, **VARIANTS[variant])
    x, mask = _inputs()
    cases = {"both": (x, mask)}
    for m in DIMS:
        masked = {**mask, m: torch.zeros(B, T, dtype=torch.bool)}
        cases[f"masked {m}"] = (x, masked)
        cases[f"dropped {m}"] = ({k: v for k, v in x.items() if k != m}, {k: v for k, v in mask.items() if k != m})
    for name, (xi, mi) in cases.items():
        model.zero_grad()
        out = model(xi, mi)
        assert out.shape == _out_shape(task, n_out), name
        assert torch.isfinite(out).all(), name
        out.square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
    model.eval()
    with torch.no_grad():
        for m in DIMS:
            masked = model(x, {**mask, m: torch.zeros(B, T, dtype=torch.bool)})
            dropped = model({k: v for k, v in x.items() if k != m}, {k: v for k, v in mask.items() if k != m})
            # a dropped modality is treated as fully masked (documented: JMT needs both branches)
            assert torch.allclose(masked, dropped, atol=1e-6)
            assert not torch.allclose(masked, model(x, mask), atol=1e-4)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_values_at_absent_steps_are_never_read(task, variant):
    model = _model(task, 2, **VARIANTS[variant]).eval()
    x, mask = _inputs(1)
    mask["video"][0] = False  # one sample without video at all
    x2 = {m: torch.where(mask[m].unsqueeze(-1), v, torch.randn_like(v) * 100) for m, v in x.items()}
    x2["audio"][~mask["audio"]] = float("nan")
    with torch.no_grad():
        a, b = model(x, mask), model(x2, mask)
    assert torch.isfinite(b).all()
    assert torch.allclose(a, b, atol=1e-5)


def test_joint_branch_sees_the_zero_filled_missing_half():
    model = _model("regression", 2).eval()
    x, mask = _inputs(2)
    mask["video"][:] = False
    feats, valid = model._inputs(x, mask)
    assert torch.equal(valid["J"], mask["audio"]) and not valid["B"].any()
    assert torch.all(feats["B"] == 0)
    assert torch.all(feats["A"][~mask["audio"]] == 0)
    w, bias = model.joint_fc.weight, model.joint_fc.bias
    d = model.d_model
    # Eq. 1: f_J = FC([f_B; f_A]); with B absent only the A half of the weight and the bias act
    assert torch.allclose(feats["J"], feats["A"] @ w[:, d:].T + bias, atol=1e-6)


def test_per_step_regression_uses_only_steps_where_some_modality_is_present():
    model = _model("regression", 2).eval()
    x, mask = _inputs(3)
    mask["audio"][:, 5:] = False
    mask["video"][:, 5:] = False
    with torch.no_grad():
        out = model(x, mask)
    # steps with neither modality get the head applied to a zero representation
    assert torch.allclose(out[:, 5:], model.head(torch.zeros(model.head[0].in_features)).expand(B, 3, 2), atol=1e-6)


def test_exactly_two_modalities_and_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="exactly two modalities"):
        build({"a": 3, "b": 4, "c": 5}, 2, "classification", Params(**TINY))
    with pytest.raises(ValueError, match="exactly two modalities"):
        build({"a": 3}, 2, "classification", Params(**TINY))
    with pytest.raises(ValueError, match="two different input modalities"):
        build({"a": 3, "b": 4}, 2, "classification", Params(**TINY, modalities=("a", "z")))
    three = {"audio": 6, "video": 10, "text": 5}
    model = build(three, 2, "classification", Params(**TINY, modalities=("video", "audio"))).eval()
    assert model.modalities == ["video", "audio"]
    x, mask = _inputs(4, three)
    with torch.no_grad():
        with_text = model(x, mask)
        without = model({m: x[m] for m in DIMS}, {m: mask[m] for m in DIMS})
    assert torch.allclose(with_text, without)  # the unused modality is accepted and not read
    m2 = _model()
    with pytest.raises(ValueError, match="unknown modalities"):
        m2({**x}, {**mask})
    with pytest.raises(ValueError, match="no input modality"):
        m2({}, {})
    with pytest.raises(ValueError, match="no mask"):
        m2({"audio": x["audio"]}, {})
    with pytest.raises(Exception):
        Params(readout="mean")


def test_registry_builds_jmt_by_name(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "jmt", ModelEntry("jmt", "build", "Params", "004 §3"))
    model = build_model("jmt", DIMS, 3, "regression", TINY)
    x, mask = _inputs()
    assert model(x, mask).shape == (B, T, 3)
    with pytest.raises(ModelError, match="exactly two modalities"):
        build_model("jmt", {**DIMS, "text": 5}, 3, "classification", TINY)


def _xor_data(n: int, seed: int) -> tuple[dict, dict, torch.Tensor]:
    """Class = sign(audio[...,0]) XOR sign(video[...,0]) of a clip: decodable only from both together."""
    g = torch.Generator().manual_seed(seed)
    sa, sv = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    x = {m: 0.3 * torch.randn(n, T, d, generator=g) for m, d in DIMS.items()}
    x["audio"][..., 0] += (2 * sa - 1).float()[:, None]
    x["video"][..., 0] += (2 * sv - 1).float()[:, None]
    mask = {m: torch.rand(n, T, generator=g) < 0.8 for m in DIMS}
    for m in DIMS:
        mask[m][:, 0] = True
    return x, mask, (sa ^ sv)


def _fit(model, x, mask, loss_fn, steps: int, lr: float = 1e-2) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x, mask)).backward()
        opt.step()
    model.eval()


def test_learns_a_class_that_needs_both_modalities():
    x, mask, y = _xor_data(64, 0)
    model = _model("classification", 2, seed=0)
    _fit(model, x, mask, lambda out: torch.nn.functional.cross_entropy(out, y), steps=50)
    xt, mt, yt = _xor_data(200, 1)
    with torch.no_grad():
        acc = (model(xt, mt).argmax(-1) == yt).float().mean().item()
    assert acc > 0.85


def test_learns_a_per_step_regression_target():
    g = torch.Generator().manual_seed(0)

    def data(n):
        x = {m: torch.randn(n, T, d, generator=g) for m, d in DIMS.items()}
        mask = {m: torch.ones(n, T, dtype=torch.bool) for m in DIMS}
        y = torch.stack([x["audio"][..., 0] + x["video"][..., 1], x["audio"][..., 2] - x["video"][..., 3]], dim=-1)
        return x, mask, y

    def ccc_loss(pred, y):
        pm, ym = pred.mean((0, 1)), y.mean((0, 1))
        cov = ((pred - pm) * (y - ym)).mean((0, 1))
        ccc = 2 * cov / (pred.var((0, 1), unbiased=False) + y.var((0, 1), unbiased=False) + (pm - ym) ** 2)
        return 1 - ccc.mean()  # 004 Eq. 3

    x, mask, y = data(64)
    model = _model("regression", 2, seed=0)
    _fit(model, x, mask, lambda out: ccc_loss(out, y), steps=50)
    xt, mt, yt = data(64)
    with torch.no_grad():
        pred = model(xt, mt)
    for k in range(2):
        assert metrics.ccc(yt[..., k].flatten().numpy(), pred[..., k].flatten().numpy()) > 0.5


def test_cross_order_covers_the_six_ordered_pairs():
    assert sorted(CROSS_ORDER) == sorted((q, k) for q in "ABJ" for k in "ABJ" if q != k)
    assert CROSS_ORDER[-1] == ("B", "J")  # the authors' last token (audio ← joint)


# ---- 1-D CNN (004 Table 1) -------------------------------------------------------------------------


def test_cnn1d_follows_table_1_shapes():
    net = CNN1D()
    x = torch.randn(2, 1, 2816)
    shapes = []
    for layer in net.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 1406), (32, 1406), (32, 703), (64, 699), (64, 699), (64, 349)]
    assert net.out_length == 349 and net.fc[0].in_features == 64 * 349
    assert net(torch.randn(3, 2816)).shape == (3, 512)
    assert net.classify(torch.randn(3, 2816)).shape == (3, 2)
    assert count_parameters(net) == (5 * 32 + 32) + (5 * 32 * 64 + 64) + (64 * 349 * 512 + 512) + (512 * 2 + 2)


def test_cnn1d_per_window_features_match_single_windows_and_learn():
    torch.manual_seed(0)
    net = CNN1D(input_length=64, channels=(4, 8), feature_dim=16, n_classes=None).eval()
    signal = torch.randn(2, 200)
    windows = frame_signal(signal, 64, 32)
    assert windows.shape == (2, 5, 64)
    assert torch.equal(windows[1, 2], signal[1, 64:128])
    feats = net(windows)
    assert feats.shape == (2, 5, 16) and (feats >= 0).all()  # ReLU after the first FC
    assert torch.allclose(feats[1, 3], net(windows[1, 3][None])[0], atol=1e-6)
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(2, 63))
    with pytest.raises(ValueError, match="without a classifier"):
        net.classify(windows)
    with pytest.raises(ValueError, match="shorter than one window"):
        frame_signal(torch.randn(1, 10), 64, 32)
    with pytest.raises(ValueError, match="too short"):
        CNN1D(input_length=8)
    assert conv_out_length(2816, 5, 2) == 1406 and math.floor(699 / 2) == conv_out_length(699, 2, 2)

    # a window's class is whether it holds a rising or a falling ramp: learnable from the raw signal
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    ramp = torch.linspace(-1, 1, 64)
    x = torch.where(y[:, None] == 1, ramp, -ramp) + 0.3 * torch.randn(64, 64, generator=g)
    clf = CNN1D(input_length=64, channels=(4, 8), feature_dim=16, n_classes=2)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf.classify(x), y).backward()
        opt.step()
    assert (clf.classify(x).argmax(-1) == y).float().mean() > 0.9
