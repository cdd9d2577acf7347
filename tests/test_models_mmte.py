"""Seed 000's models: TCN, MMTE + AMMTD + ERN, the MMTE+FC / MMTE+LSTM baselines, late-fusion LSTM."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import late_fusion, mmte
from pipeline.models.tcn import TCN

DIMS = {"audio": 6, "video": 10, "text": 5}
B, T = 3, 8
TINY_ENC = dict(d_model=8, tcn_layers=2, tcn_kernel=3, enc_layers=1, enc_heads=2, ff_dim=16, mask_length=3, max_len=32)
MODELS = {
    "mmte_ammtd": (mmte.build, mmte.Params, dict(TINY_ENC, dec_layers=1, ern_hidden=4)),
    "mmte_fc": (mmte.build_fc, mmte.FCParams, dict(TINY_ENC, ern_hidden=4)),
    "mmte_lstm": (mmte.build_lstm, mmte.LSTMParams, dict(TINY_ENC, lstm_layers=2, lstm_hidden=4)),
    "late_fusion_lstm": (late_fusion.build, late_fusion.Params, dict(d_rnn=4, rnn_layers=2, d_fc_out=4)),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(name: str, task: str, dims=DIMS, n_out: int = 2, **over):
    builder, params, tiny = MODELS[name]
    return builder(dims, n_out, task, params(**dict(tiny, **over)))


def _inputs(seed: int = 0, dims=DIMS, b: int = B, t: int = T):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(b, t, d, generator=g) for m, d in dims.items()}
    mask = {m: torch.rand(b, t, generator=g) < 0.75 for m in dims}
    for m in dims:
        mask[m][:, 0] = True
    return x, mask


def _shape(task, n_out=2, b=B, t=T):
    return (b, t, n_out) if task == "regression" else (b, n_out)


# ---- TCN -------------------------------------------------------------------------------------------


def test_tcn_causal_receptive_field_and_noncausal_symmetry():
    torch.manual_seed(0)
    tcn = TCN(3, 4, layers=2, kernel=3, dropout=0.0).eval()
    assert tcn.receptive_field == 1 + 2 * 2 * (1 + 2) == 13
    x = torch.randn(1, 30, 3)
    x2 = x.clone()
    x2[:, 20] += 5.0
    d = (tcn(x2) - tcn(x)).abs().sum(-1)[0]
    assert torch.all(d[:20] == 0)  # causal: the past never sees the future
    assert d[20:20 + 13].min() > 0 and torch.all(d[20 + 13:] == 0)  # exactly the receptive field
    sym = TCN(3, 4, layers=2, kernel=3, dropout=0.0, causal=False).eval()
    d = (sym(x2) - sym(x)).abs().sum(-1)[0]
    assert torch.all(d[:14] == 0) and d[14] > 0 and d[26] > 0 and torch.all(d[27:] == 0)  # 20 ± 6
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[0, 20] = False
    assert torch.allclose(tcn(x, mask), tcn(x2, mask))  # absent values are never read
    assert torch.all(tcn(x, mask)[0, 20] == 0)


# ---- contract: shapes, gradients, missing modalities ------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_with_each_modality_missing(name, task):
    torch.manual_seed(0)
    model = _build(name, task).train()
    x, mask = _inputs()
    out = model(x, mask)
    assert out.shape == _shape(task) and torch.all(torch.isfinite(out))
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads)
    model.eval()
    for gone in DIMS:
        masked = dict(mask, **{gone: torch.zeros(B, T, dtype=torch.bool)})
        nan_x = dict(x, **{gone: torch.full_like(x[gone], float("nan"))})  # absent values are never read
        dropped_x = {m: v for m, v in x.items() if m != gone}
        dropped_m = {m: v for m, v in mask.items() if m != gone}
        with torch.no_grad():
            a, b = model(nan_x, masked), model(dropped_x, dropped_m)
        assert torch.all(torch.isfinite(a)) and torch.allclose(a, b, atol=1e-5), (name, gone)
        model.train()
        model.zero_grad()
        model(dropped_x, dropped_m).sum().backward()  # a dropped modality trains too (backward works)
        model.eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_paper_defaults_build_and_bad_inputs_are_rejected(name):
    builder, params, _ = MODELS[name]
    model = builder({"audio": 88, "video": 20, "physio": 3}, 1, "regression", params())
    x, mask = _inputs(dims={"audio": 88, "video": 20, "physio": 3}, b=1, t=12)
    assert model.eval()(x, mask).shape == (1, 12, 1)
    with pytest.raises(ValueError, match="unknown modalities"):
        model(dict(x, face=x["audio"]), dict(mask, face=mask["audio"]))
    with pytest.raises(ValueError, match="no input modality"):
        model({}, {})
    with pytest.raises(ValueError, match="no mask"):
        model(x, {"audio": mask["audio"]})


def test_defaults_follow_000_section_5_3():
    p = mmte.Params()
    assert (p.d_model, p.tcn_layers, p.tcn_kernel, p.enc_layers, p.enc_heads, p.ff_dim) == (64, 6, 9, 2, 2, 256)
    assert (p.dec_layers, p.dec_heads, p.ern_hidden, p.dropout, p.mask_length) == (1, 1, 32, 0.2, 100)
    lp = mmte.LSTMParams()
    assert (lp.lstm_layers, lp.lstm_hidden) == (4, 32)  # 000 §6.1
    m = mmte.build({"audio": 88}, 1, "regression", p)
    assert len(m.encoder.tcn["audio"].blocks) == 6 and len(m.decoder.layers) == 1
    assert m.encoder.encoder.layers[0].attn.heads == 2 and m.decoder.layers[0].cross_attn.heads == 1
    with pytest.raises(ValueError, match="divisible"):
        mmte.build({"audio": 4}, 1, "regression", mmte.Params(d_model=10, enc_heads=4))


# ---- MMTE band mask and AMMTD recurrence -------------------------------------------------------------


def test_encoder_band_mask_limits_attention_to_mask_length():
    torch.manual_seed(0)
    p = mmte.Params(**dict(TINY_ENC, tcn_layers=1, tcn_kernel=1, mask_length=2, enc_layers=1, dropout=0.0))
    enc = mmte.MMTE({"audio": 4, "video": 3}, p).eval()
    x, mask = _inputs(dims={"audio": 4, "video": 3}, b=1, t=12)
    mask = {m: torch.ones(1, 12, dtype=torch.bool) for m in mask}
    x2 = dict(x, video=x["video"].clone())
    x2["video"][0, 8] += 3.0  # a pointwise TCN, one encoder layer: only |t − 8| ≤ 2 may change
    r1, r2 = enc(x, mask)[0], enc(x2, mask)[0]
    changed = (r1 - r2).abs().sum(-1)[0]  # [M,T]
    assert torch.all(changed[:, :6] < 1e-6) and torch.all(changed[:, 11:] < 1e-6)
    assert torch.all(changed[0, 6:11] > 1e-4)  # the other modality's tokens within the band see it
    band = mmte.band_mask(3, 2, 1)
    assert band.shape == (6, 6) and band[0, 4] and not band[0, 5] and band[3, 1]  # token (m=1,t=0) vs (m=0,t=1)


def _reference_ammtd(dec: mmte.AMMTD, r: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eqs. 7-11 literally: at each step rerun every layer on the whole prefix; cross-attention over ALL
    M·T encoder tokens with a boolean mask that allows only time t."""
    b, m, t_len, d = r.shape
    mem, mem_mask = r.reshape(b, m * t_len, d), valid.reshape(b, m * t_len)
    times = torch.arange(t_len).repeat(m)
    ds = [dec.d0.expand(b, 1, d)]
    for t in range(t_len):
        y = torch.cat(ds, 1) + dec.pos.weight[: t + 1]
        only_t = (times == t).expand(t + 1, -1)
        for layer in dec.layers:
            h = layer.self_block(y, y, torch.ones(t + 1, t + 1, dtype=torch.bool).tril())
            h = layer.norms[1](h + layer.cross_attn(h, mem, key_mask=mem_mask, attn_mask=only_t))
            y = layer.norms[2](h + layer.ff(h))
        ds.append(y[:, -1:])
    return torch.cat(ds[1:], 1)


@pytest.mark.parametrize("layers", [1, 3])
def test_ammtd_recurrence_matches_the_literal_equations_and_is_causal(layers):
    torch.manual_seed(0)
    dec = mmte.AMMTD(8, 2, layers, 16, 0.0, 32).eval()
    r = torch.randn(2, 3, 7, 8)
    valid = torch.rand(2, 3, 7) < 0.7
    valid[1, :, 4] = False  # a step with no modality at all
    with torch.no_grad():
        out = dec(r, valid)
        assert torch.allclose(out, _reference_ammtd(dec, r, valid), atol=1e-5)
        r2 = r.clone()
        r2[:, :, 5:] += 1.0  # the future of the encoder output
        out2 = dec(r2, valid)
    assert torch.allclose(out[:, :5], out2[:, :5], atol=1e-6) and not torch.allclose(out[:, 5:], out2[:, 5:])
    # the recurrence: step 6 depends on time 3 only through the decoder's own previous features
    r3 = r.clone()
    r3[0, :, 3] += 1.0
    with torch.no_grad():
        out3 = dec(r3, valid)
    assert torch.allclose(out[:, :3], out3[:, :3], atol=1e-6) and (out[0, 6] - out3[0, 6]).abs().max() > 1e-4


def test_late_fusion_excludes_absent_modalities_instead_of_zeroing_them():
    torch.manual_seed(0)
    model = _build("late_fusion_lstm", "regression", n_out=1, training="end_to_end").eval()
    with torch.no_grad():
        model.fusion_logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    x, mask = _inputs()
    with torch.no_grad():
        uni = {m: model.branches[m](x[m], mask[m]) for m in DIMS}  # [B,T,1]
        out = model(x, mask)
    w = torch.tensor([0.0, 1.0, 2.0]).exp()
    b, t = 0, 3
    here = [i for i, m in enumerate(DIMS) if mask[m][b, t]]
    expected = sum(w[i] * uni[m][b, t] for i, m in enumerate(DIMS) if i in here) / w[here].sum()
    assert torch.allclose(out[b, t], expected, atol=1e-6)
    none = {m: torch.zeros(B, T, dtype=torch.bool) for m in DIMS}
    none["audio"][:, 0] = True
    with torch.no_grad():
        out = model(x, none)
    assert torch.all(out[:, 1:] == 0) and torch.allclose(out[:, 0], uni["audio"][:, 0])


def test_two_stage_late_fusion_stages_and_what_each_forward_returns():
    """MuSe 2022's recipe as stages of one run: each branch alone, then the fusion RNN on the branches'
    per-step predictions (a modality missing at a step enters as 0), the branches frozen and in eval mode."""
    torch.manual_seed(0)
    model = _build("late_fusion_lstm", "regression", n_out=1)
    assert model.training_stages() == ["branch:audio", "branch:video", "branch:text", "fusion"]
    assert {id(p) for p in model.stage_parameters("branch:video")} == {id(p) for p in model.branches["video"].parameters()}
    assert {id(p) for p in model.stage_parameters("fusion")} == {id(p) for p in model.fusion.parameters()}
    x, mask = _inputs()
    model.eval()
    model.stage = "branch:video"
    with torch.no_grad():
        assert torch.equal(model(x, mask), model.branches["video"](x["video"], mask["video"]))
    model.stage = None
    with torch.no_grad():
        cols = torch.cat([model.branches[m](x[m], mask[m]) * mask[m][..., None] for m in DIMS], dim=-1)
        expected = model.fusion(cols, torch.ones(B, T, dtype=torch.bool))
        assert torch.allclose(model(x, mask), expected, atol=1e-6)
    model.stage = "fusion"
    model.train()  # the fusion trains; the frozen branches predict as in evaluation
    assert model.fusion.training and not any(b.training for b in model.branches.values())
    out = model(x, mask)
    out.sum().backward()
    assert all(p.grad is None for p in model.branches.parameters())
    assert all(p.grad is not None for p in model.fusion.parameters())


def test_two_stage_late_fusion_trains_each_branch_to_its_own_best_then_the_fusion(tmp_path):
    """Through the training loop: history.csv has the stages in order, each with its own early stopping;
    the final model's branch scores on devel exactly what its own stage's best epoch scored (restored to
    its best, then frozen while the fusion trained)."""
    import polars as pl

    from pipeline.runs.feed import feed_run
    from pipeline.runs.files import load_trained
    from pipeline.runs.params import TrainParams
    from pipeline.train.loop import train_one
    from tests.test_train_evaluate import DIMS as SEG_DIMS
    from tests.test_train_evaluate import make_segments

    segments = make_segments(regression=True)
    params = TrainParams(modalities=list(SEG_DIMS), task="regression", targets=["arousal"], seeds=[0], epochs=4,
                         patience=2, batch_size=16, lr=5e-3,
                         model_params={"late_fusion_lstm": dict(d_rnn=8, rnn_layers=1, d_fc_out=8)})
    summary = train_one(segments, params, "late_fusion_lstm", "standard", 0, tmp_path, progress=False)
    history = pl.read_csv(tmp_path / "late_fusion_lstm/standard/seed_0/history.csv")
    stages = [f"branch:{m}" for m in SEG_DIMS] + ["fusion"]
    assert history["stage"].unique(maintain_order=True).to_list() == stages
    assert summary["epochs_run"] == history.height and summary["best_epoch"] <= 4
    model, _ = load_trained(tmp_path / "late_fusion_lstm/standard/seed_0/model.pt")
    feed = feed_run(segments, "late_fusion_lstm", list(SEG_DIMS), "regression", ["arousal"])
    for m in SEG_DIMS:
        own = history.filter(pl.col("stage") == f"branch:{m}")["devel_ccc_mean"]
        model.stage = f"branch:{m}"
        metrics, _ = feed.devel_pass(model, torch.device("cpu"))
        assert metrics["ccc_mean"] == pytest.approx(own.max(), abs=1e-6), m
    model.stage = None
    fused = history.filter(pl.col("stage") == "fusion")["devel_ccc_mean"].max()
    assert feed.devel_pass(model, torch.device("cpu"))[0]["ccc_mean"] == pytest.approx(fused, abs=1e-6)


# ---- learning --------------------------------------------------------------------------------------

LEARN = {
    "mmte_ammtd": dict(TINY_ENC, d_model=16, tcn_layers=1, dropout=0.0, dec_layers=1, ern_hidden=16, ff_dim=32),
    "mmte_fc": dict(TINY_ENC, d_model=16, tcn_layers=1, dropout=0.0, ern_hidden=16, ff_dim=32),
    "mmte_lstm": dict(TINY_ENC, d_model=16, tcn_layers=1, dropout=0.0, lstm_layers=1, lstm_hidden=16, ff_dim=32),
    "late_fusion_lstm": dict(d_rnn=16, rnn_layers=1, d_fc_out=16, rnn_dropout=0.0, linear_dropout=0.0),
}


def _ccc(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mp, my = p.mean(), y.mean()
    return 2 * ((p - mp) * (y - my)).mean() / (p.var(unbiased=False) + y.var(unbiased=False) + (mp - my) ** 2)


@pytest.mark.parametrize("name", list(MODELS))
def test_learns_a_time_continuous_target(name):
    """y_t = tanh(audio_t[0] + video_t[0]) / 2: CCC on held-out data > 0.5 after a short training."""
    torch.manual_seed(0)
    builder, params, _ = MODELS[name]
    dims = {"audio": 3, "video": 3}
    model = builder(dims, 1, "regression", params(**LEARN[name]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def data(seed, n=32):
        x, mask = _inputs(seed, dims, b=n, t=8)
        mask = {m: torch.ones_like(v) for m, v in mask.items()}
        return x, mask, (torch.tanh(x["audio"][..., :1] + x["video"][..., :1]) / 2)

    x, mask, y = data(1)
    for _ in range(80):
        opt.zero_grad()
        loss = 1 - _ccc(model(x, mask), y)
        loss.backward()
        opt.step()
    xt, mt, yt = data(2)
    with torch.no_grad():
        c = _ccc(model.eval()(xt, mt), yt)
        assert c > 0.5, c


@pytest.mark.parametrize("name", list(MODELS))
def test_learns_a_class_that_needs_two_modalities(name):
    """MMTE models: class = [audio mean > 0] XOR [video mean > 0] (needs both modalities together).
    Late fusion averages unimodal logits, which cannot express XOR by design, so it gets
    class = [audio mean + video mean > 0] (each modality alone ≈ 75 %). Chance is 50 % for both."""
    torch.manual_seed(0)
    builder, params, _ = MODELS[name]
    dims = {"audio": 2, "video": 2}
    model = builder(dims, 2, "classification", params(**LEARN[name]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def data(seed, n=64):
        g = torch.Generator().manual_seed(seed)
        sa, sv = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
        if name == "late_fusion_lstm":  # continuous per-clip levels so the sum matters
            la, lv = torch.randn(n, generator=g), torch.randn(n, generator=g)
        else:
            la, lv = 2.0 * sa - 1, 2.0 * sv - 1
        x = {
            "audio": la[:, None, None] + 0.3 * torch.randn(n, 6, 2, generator=g),
            "video": lv[:, None, None] + 0.3 * torch.randn(n, 6, 2, generator=g),
        }
        if name == "late_fusion_lstm":
            return x, {m: torch.ones(n, 6, dtype=torch.bool) for m in dims}, ((x["audio"] + x["video"]).mean((1, 2)) > 0).long()
        return x, {m: torch.ones(n, 6, dtype=torch.bool) for m in dims}, sa ^ sv

    x, mask, y = data(1)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, mask), y).backward()
        opt.step()
    xt, mt, yt = data(2)
    with torch.no_grad():
        acc = (model.eval()(xt, mt).argmax(-1) == yt).float().mean()
    assert acc > 0.85, acc
