"""The input convention (pipeline/missing/inputs.py), padding carried to the models (registry.forward, Split.valid),
segment layouts per model, and every model's output unchanged by padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.missing.inputs import InputConventionError, model_inputs
from pipeline.models import mct_hfr as mct_module
from pipeline.models.registry import (
    MODELS,
    ModelError,
    build_model,
    check_layout,
    forward,
    model_params,
    takes_valid,
)
from pipeline.runs import feed as runs
from pipeline.runs import files
from pipeline.runs.params import TrainParams
from pipeline.segment.contract import ModalityInfo, Segments
from pipeline.train.loop import TrainBatch, _step, train_one

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- the convention itself ---------------------------------------------------------------------------


def test_mask_and_zero_conventions_numpy_and_torch():
    x = {"a": np.arange(1, 13, dtype=np.float32).reshape(1, 4, 3)}
    mask = {"a": np.array([[True, False, True, False]])}
    valid = {"a": np.array([[True, True, True, False]])}  # the last step is padding
    xm, mm = model_inputs("mask", x, mask, valid)
    assert mm["a"].tolist() == [[True, False, True, False]]
    assert xm["a"][0, :, 0].tolist() == [1, 0, 7, 0]  # missing and padded values zeroed
    xz, mz = model_inputs("zero", x, mask, valid)
    assert mz["a"].tolist() == [[True, True, True, False]]  # told about padding only
    assert np.array_equal(xz["a"], xm["a"])  # the missing step is a zero the model sees
    xt, mt = model_inputs("zero", {"a": torch.from_numpy(x["a"])}, {"a": torch.from_numpy(mask["a"])},
                          {"a": torch.from_numpy(valid["a"])})
    assert torch.equal(mt["a"], torch.from_numpy(mz["a"])) and torch.equal(xt["a"], torch.from_numpy(xz["a"]))
    # no valid given: no padding
    assert model_inputs("zero", x, mask)[1]["a"].all()
    with pytest.raises(InputConventionError, match="unknown convention 'zeros'"):
        model_inputs("zeros", x, mask)
    with pytest.raises(InputConventionError, match="modality 'a'.*differ in shape"):
        model_inputs("mask", x, mask, {"a": np.ones((1, 5), bool)})


def test_token_convention_fills_the_missing_steps_with_the_modalitys_token():
    """`token` (003 §5.2.1): as `zero`, but a missing step within the sequence holds the modality's missing
    token ([UNK]'s feature); padding stays zero, present steps untouched, a modality without one gets zeros."""
    x = {"a": np.arange(1, 13, dtype=np.float32).reshape(1, 4, 3), "b": np.ones((1, 4, 2), np.float32)}
    mask = {"a": np.array([[True, False, True, False]]), "b": np.array([[False, True, True, True]])}
    valid = {"a": np.array([[True, True, True, False]]), "b": np.ones((1, 4), bool)}
    token = np.array([-1.0, 2.0, 0.5], np.float32)
    xt, mt = model_inputs("token", x, mask, valid, {"a": token})
    xz, mz = model_inputs("zero", x, mask, valid)
    assert np.array_equal(mt["a"], mz["a"]) and np.array_equal(mt["b"], mz["b"])  # told about padding only
    assert xt["a"][0, 1].tolist() == token.tolist()  # the missing step: the token
    assert xt["a"][0, 3].tolist() == [0, 0, 0]  # padding: zeros
    assert np.array_equal(xt["a"][0, [0, 2]], x["a"][0, [0, 2]])  # present steps: as they are
    assert np.array_equal(xt["b"], xz["b"])  # no token: zeros, as under `zero`
    torch_x, torch_m = model_inputs("token", {m: torch.from_numpy(v) for m, v in x.items()},
                                    {m: torch.from_numpy(v) for m, v in mask.items()},
                                    {m: torch.from_numpy(v) for m, v in valid.items()}, {"a": token})
    assert all(torch.equal(torch_x[m], torch.from_numpy(xt[m])) for m in x)
    # without tokens `token` is `zero`
    assert np.array_equal(model_inputs("token", x, mask, valid)[0]["a"], xz["a"])


def test_missing_tokens_travel_from_the_segments_through_training_into_model_pt(tmp_path):
    """A modality whose extractor recorded a missing token: `feed_run` z-scores it with the segments'
    statistics, a `token` model trains and is evaluated with it (model.pt keeps it), other conventions
    never see it."""
    seg = _segments()
    seg.mean["a"], seg.std["a"] = np.array([0.5, -1.0]), np.array([2.0, 4.0])
    raw = [1.0] * seg.x["a"].shape[-1]
    seg.modalities["a"] = ModalityInfo("ta", seg.x["a"].shape[-1], "b", True, "w", missing_token=raw)
    feed = runs.feed_run(seg, "mct_hfr", ["a", "b"], "classification", [])
    expected = ((np.asarray(raw) - seg.mean["a"]) / seg.std["a"]).astype(np.float32)
    assert set(feed.tokens) == {"a"} and np.array_equal(feed.tokens["a"], expected)
    params = TrainParams(modalities=["a", "b"], models=["mct_hfr"], seeds=[0], epochs=1, batch_size=4,
                         model_params={"mct_hfr": {"d_model": 8, "heads": 2, "layers": 1}})
    train_one(seg, params, "mct_hfr", "standard", 0, tmp_path, progress=False)
    model, info = files.load_trained(tmp_path / "mct_hfr/standard/seed_0/model.pt")
    assert model.missing_input == "token" and np.array_equal(model.missing_tokens["a"], expected)
    assert "missing_tokens" not in info  # info stays plain data (it is written to JSON downstream)
    # the token reaches the model: text missing everywhere differs from the zero convention's input
    x = {m: np.asarray(seg.x[m][:4]) for m in "ab"}
    gone = {"a": np.zeros_like(seg.mask["a"][:4]), "b": seg.mask["b"][:4]}
    with_token = runs.predict(model, x, gone)
    model.missing_tokens = None
    assert not np.allclose(with_token, runs.predict(model, x, gone))
    # a `zero` run keeps no token
    zero = params.model_copy(update={"model_params": {"mct_hfr": {"d_model": 8, "heads": 2, "layers": 1, "missing_input": "zero"}}})
    train_one(seg, zero, "mct_hfr", "standard", 0, tmp_path / "zero", progress=False)
    model, _ = files.load_trained(tmp_path / "zero/mct_hfr/standard/seed_0/model.pt")
    assert getattr(model, "missing_tokens", None) is None


PAPER_DEFAULTS = {  # model: (missing_input default, layouts) — the papers' (see each Params' description)
    "crossmodal": ("zero", ("aligned", "windows", "frames")),  # 002 §2.2, §3.1
    "mct_hfr": ("token", ("aligned", "windows", "frames", "native")),  # 003 §5.2.1 [UNK], §5.2, authors' code
    "mmte_ammtd": ("mask", ("aligned", "windows", "frames")),  # 000 §4
    "mmte_fc": ("mask", ("aligned", "windows", "frames")),
    "mmte_lstm": ("mask", ("aligned", "windows", "frames")),
    "late_fusion_lstm": ("mask", ("aligned", "windows", "frames", "native")),
    "auxformer": ("zero", ("aligned", "windows", "frames", "native")),  # 001 §3.6, §5.2
    "auxformer_noaux": ("zero", ("aligned", "windows", "frames", "native")),
    "unimodal": ("zero", ("aligned", "windows", "frames", "native")),
    "mult": ("zero", ("aligned", "windows", "frames", "native")),  # 001 trains its baselines on zeros
    "jmt": ("zero", ("aligned", "windows", "frames")),  # 004 §4.1 black frames; code: no masks
}


def test_each_model_has_its_papers_convention_and_layouts():
    assert set(PAPER_DEFAULTS) == set(MODELS)
    for name, (convention, layouts) in PAPER_DEFAULTS.items():
        assert model_params(name).missing_input == convention, name
        assert MODELS[name].layouts == layouts, name
    # a params dict (or model.pt) written with the old key name
    assert model_params("auxformer", {"missing": "mask"}).missing_input == "mask"


def test_layouts_fail_with_one_line_naming_model_layout_and_accepted():
    with pytest.raises(ModelError) as e:
        check_layout("jmt", "native")
    assert str(e.value) == "model 'jmt' does not take segment layout 'native'; it takes aligned, windows, frames"
    with pytest.raises(ModelError, match="'native'.*per-step regression.*one time grid"):
        check_layout("mct_hfr", "native", "regression")
    check_layout("mct_hfr", "native", "classification")
    with pytest.raises(runs.ModelBuildError, match=r"^model 'mmte_fc' does not take segment layout 'native'.*\n?"):
        runs.check_model_layout("mmte_fc", "native", "regression")
    info = {"model": "crossmodal", "task": "classification", "modalities": ["a"], "dims": {"a": 2}, "classes": ["x", "y"]}
    with pytest.raises(runs.EvaluateError, match=r"^run/model\.pt: model 'crossmodal' does not take segment layout 'native'"):
        files.check_fits(files.Path("run/model.pt"), info, _segments(layout="native"))


# ---- padding: carried from the segments to every forward pass ------------------------------------------


def _segments(n: int = 8, t: int = 6, layout: str = "aligned", seed: int = 0) -> Segments:
    rng = np.random.default_rng(seed)
    dims = {"a": 2, "b": 3}
    length = rng.integers(2, t + 1, size=n)
    valid = np.arange(t)[None] < length[:, None]
    mask = {m: valid & (rng.random((n, t)) < 0.7) for m in dims}
    x = {m: np.where(mask[m][..., None], rng.normal(size=(n, t, d)), 0).astype(np.float32) for m, d in dims.items()}
    return Segments(
        clip_id=np.array([f"c{i}" for i in range(n)]), partition=np.array(["train", "devel"] * (n // 2)),
        label=np.arange(n) % 2, length=length, t=np.tile(np.arange(t) + 0.5, (n, 1)), x=x, mask=mask,
        mean={m: np.zeros(d, np.float32) for m, d in dims.items()}, std={m: np.ones(d, np.float32) for m, d in dims.items()},
        classes=["x", "y"], rate_hz=1.0, layout=layout,
        modalities={m: ModalityInfo(f"f_{m}", d, "synthetic", False, "synthetic") for m, d in dims.items()},
    )


class _Spy(torch.nn.Module):
    """Records what it is given; a model whose forward takes `valid` (or not)."""

    def __init__(self, convention: str, with_valid: bool) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.missing_input, self.seen = convention, []
        if with_valid:
            self.forward = self._forward_valid  # type: ignore[method-assign]

    def forward(self, x, mask):
        self.seen.append((x, mask, None))
        return self.w.expand(next(iter(mask.values())).shape[0], 2)

    def _forward_valid(self, x, mask, valid=None):
        self.seen.append((x, mask, valid))
        return self.w.expand(next(iter(mask.values())).shape[0], 2)


@pytest.mark.parametrize("convention", ["mask", "zero"])
def test_training_and_evaluation_feed_the_model_through_the_same_convention(convention):
    seg = _segments()
    split = runs.task_split(seg, "train", ["a", "b"])
    assert all(np.array_equal(split.valid[m], seg.valid(m)[split.idx]) for m in "ab")
    rows = np.arange(len(split))
    # training step (no strategy change) and evaluation see identical inputs
    spy = _Spy(convention, with_valid=True)
    standard = type("Standard", (), {"apply": staticmethod(lambda x, mask, rng, epoch: (x, mask))})()
    _step(model=spy, strategy=standard, rng=np.random.default_rng(0), split=split, rows=rows, task="classification",
          epoch=1, dev=torch.device("cpu"), optim=torch.optim.SGD(spy.parameters(), lr=0.1), grad_clip=None)
    runs.predict(spy, split.x, split.mask, valid=split.valid)
    (xt, mt, vt), (xe, me, ve) = spy.seen
    expected_x, expected_mask = model_inputs(convention, split.x, split.mask, split.valid)
    for m in "ab":
        assert torch.equal(xt[m], xe[m]) and torch.equal(mt[m], me[m]) and torch.equal(vt[m], ve[m])
        assert np.array_equal(mt[m].numpy(), expected_mask[m]) and np.allclose(xt[m].numpy(), expected_x[m])
        assert np.array_equal(vt[m].numpy(), split.valid[m])
    # a model whose forward does not take `valid` is not given it
    plain = _Spy(convention, with_valid=False)
    assert not takes_valid(plain) and takes_valid(spy)
    runs.predict(plain, split.x, split.mask, valid=split.valid)
    assert plain.seen[0][2] is None and torch.equal(plain.seen[0][1]["a"], me["a"])
    # a training_loss model gets the same inputs from its batch
    batch = TrainBatch(xt, mt, xt, mt, torch.zeros(len(rows)), None, 1, vt, convention)
    assert all(torch.equal(batch.inputs()[1][m], me[m]) for m in "ab")


def test_train_one_refuses_a_layout_the_model_does_not_take(tmp_path):
    seg = _segments(layout="native")
    params = TrainParams(modalities=["a", "b"], models=["jmt"], seeds=[0], epochs=1)
    with pytest.raises(runs.ModelBuildError, match="model 'jmt' does not take segment layout 'native'"):
        train_one(seg, params, "jmt", "standard", 0, tmp_path, progress=False)


# ---- padding never changes an output -------------------------------------------------------------------

TINY = {
    "crossmodal": {"d_model": 16, "heads": 2, "layers": 1},
    "mct_hfr": {"d_model": 16, "heads": 2, "layers": 2, "lfi_layers": 1, "classifier_hidden": 8, "max_len": {"a": 9, "b": 9}},
    "mmte_ammtd": {"d_model": 8, "tcn_layers": 2, "tcn_kernel": 3, "enc_layers": 1, "enc_heads": 2, "ff_dim": 16, "mask_length": 3},
    "mmte_fc": {"d_model": 8, "tcn_layers": 2, "tcn_kernel": 3, "enc_layers": 1, "enc_heads": 2, "ff_dim": 16},
    "mmte_lstm": {"d_model": 8, "tcn_layers": 2, "tcn_kernel": 3, "enc_layers": 1, "enc_heads": 2, "ff_dim": 16, "lstm_layers": 2},
    "late_fusion_lstm": {"d_rnn": 8, "rnn_layers": 2, "d_fc_out": 8},
    "auxformer": {"d_model": 8, "heads": 2, "layers": 1, "mlp_hidden": 8, "aux_hidden": (8,)},
    "auxformer_noaux": {"d_model": 8, "heads": 2, "layers": 1, "mlp_hidden": 8},
    "unimodal": {"d_model": 8, "heads": 2, "layers": 1, "mlp_hidden": 8, "aux_hidden": (8,)},
    "mult": {"d_model": 8, "heads": 2, "layers": 1},
    "jmt": {"d_model": 16, "heads": 2, "ff_dim": 16, "head_hidden": 8},
}
DIMS = {"a": 3, "b": 4}


def _padding_case(native: bool, seed: int = 0):
    """Two samples, each with its true lengths, padded with garbage to 9 steps (`native`: each modality its
    own lengths and padded length, as layout `native` stores them)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [{"a": 5, "b": 7 if native else 5}, {"a": 8, "b": 3 if native else 8}]
    pad = {"a": 9, "b": 8 if native else 9}
    x = {m: torch.randn(2, pad[m], d, generator=g) * 5 for m, d in DIMS.items()}
    valid = {m: torch.stack([torch.arange(pad[m]) < ln[m] for ln in lengths]) for m in DIMS}
    mask = {m: valid[m] & (torch.rand(2, pad[m], generator=g) < 0.75) for m in DIMS}
    for m in DIMS:
        mask[m][:, 0] = True
    return x, mask, valid, lengths


@pytest.mark.parametrize("convention", ["mask", "zero"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_padded_sample_gives_the_unpadded_output(name, convention):
    arity = MODELS[name].arity[1]
    dims = dict(list(DIMS.items())[:arity])
    native = "native" in MODELS[name].layouts
    for task, n_out in (("classification", 3), ("regression", 2)):
        torch.manual_seed(0)
        model = build_model(name, dims, n_out, task, {**TINY[name], "missing_input": convention}).eval()
        x, mask, valid, lengths = _padding_case(native and task == "classification")
        x, mask, valid = ({m: v[m] for m in dims} for v in (x, mask, valid))
        with torch.no_grad():
            padded = forward(model, x, mask, valid)
            for i, ln in enumerate(lengths):
                one = ({m: v[m][i : i + 1, : ln[m]] for m in dims} for v in (x, mask, valid))
                alone = forward(model, *one)
                got = padded[i : i + 1] if task == "classification" else padded[i : i + 1, : ln[next(iter(dims))]]
                assert torch.allclose(got, alone, atol=1e-5), (name, convention, task, i)
            if convention == "zero" and task == "classification":  # control: padding taken as zero steps
                if name == "late_fusion_lstm":  # its fusion of a random init barely moves: look at a branch
                    model.stage = f"branch:{next(iter(dims))}"
                    padded = forward(model, x, mask, valid)
                assert not torch.allclose(forward(model, x, mask), padded, atol=1e-4), name


def test_mct_hfr_rescales_keys_by_each_samples_true_length(monkeypatch):
    """003 Eq. 6: γ_b = 1/√T_m with T_m the sample's true length, not the padded one."""
    seen = []
    real = mct_module.rescale_factors

    def spy(counts, sum_tmax, gamma_b=True, gamma_e=True):
        out = real(counts, sum_tmax, gamma_b, gamma_e)
        seen.append((counts, out))
        return out

    monkeypatch.setattr(mct_module, "rescale_factors", spy)
    model = build_model("mct_hfr", DIMS, 3, "classification", TINY["mct_hfr"]).eval()
    x, mask, valid, _ = _padding_case(native=True)
    with torch.no_grad():
        forward(model, x, mask, valid)
    counts, scale = seen[-1]
    assert counts["a"].tolist() == [5, 8] and counts["b"].tolist() == [7, 3]  # zero convention: true lengths
    ge = torch.log(torch.tensor([12.0, 11.0])) / np.log(18.0)  # ΣT over ΣT_max = 9 + 9 (max_len)
    assert torch.allclose(scale["a"], torch.tensor([5.0, 8.0]).rsqrt() * ge)
    assert scale["a"][0] != scale["a"][1]  # a short and a long sample are scaled differently
    # the mask convention attends fewer keys but T_m is still the true length
    model_mask = build_model("mct_hfr", DIMS, 3, "classification", {**TINY["mct_hfr"], "missing_input": "mask"}).eval()
    with torch.no_grad():
        forward(model_mask, x, mask, valid)
    assert seen[-1][0]["a"].tolist() == [5, 8]


def test_legacy_model_file_loads_with_the_convention_it_was_trained_under(tmp_path):
    torch.manual_seed(0)
    model = build_model("crossmodal", DIMS, 2, "classification", TINY["crossmodal"])
    params = TrainParams(modalities=list(DIMS), model_params={"crossmodal": TINY["crossmodal"]})
    payload = {"state_dict": model.state_dict(), "model": "crossmodal", "params": params.model_dump(mode="json"),
               "dims": DIMS, "classes": ["x", "y"], "modalities": list(DIMS), "task": "classification",
               "strategy": "standard", "targets": [], "n_outputs": 2}
    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        torch.save({**payload, "format": 2}, f)  # written before missing_input existed
    loaded, _ = files.load_trained(path)
    assert loaded.missing_input == "mask"  # what crossmodal did then
    files.save_trained(path, payload)  # the current format: the paper's default
    assert files.load_trained(path)[0].missing_input == "zero"
