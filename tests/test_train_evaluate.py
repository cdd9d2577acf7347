"""Training and evaluation end to end on a small synthetic task, plus the two stage scripts.

The task: 4 classes = 2·bit_a + bit_b, where bit_a is readable only from modality 'a' and bit_b only
from 'b'; 'c' is noise. Every modality is missing at random steps and sequences have random lengths,
so the masks matter. Only the combination of 'a' and 'b' decodes the class, so a model that learnt
the task loses about half its accuracy when either of them is missing, and nothing without 'c'.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from pipeline.core.stage import run_stage
from pipeline.evaluate.grid import evaluate_all
from pipeline.evaluate.params import EvaluateParams
from pipeline.missing import drop_modalities
from pipeline.runs.feed import EvaluateError, TrainError, predict, task_split
from pipeline.runs.files import (
    HISTORY_FILE,
    MODEL_FILE,
    find_trained,
    load_trained,
    run_dir,
)
from pipeline.runs.params import TrainParams
from pipeline.segment.contract import (
    ModalitiesLacking,
    ModalityInfo,
    Segments,
    load_segments,
)
from pipeline.train.families import train_all

REPO = Path(__file__).resolve().parents[1]
DIMS = {"a": 5, "b": 3, "c": 7}
CLASSES = ["neutral", "happy", "angry", "sad"]
N, T = 80, 12
RUN = "crossmodal/standard"
PARAMS = TrainParams(
    modalities=list(DIMS), seeds=[0, 1], epochs=20, batch_size=8, lr=3e-3, patience=3,
    model_params={"crossmodal": {"d_model": 16, "layers": 1, "heads": 2}},
)


def make_segments(n: int = N, seed: int = 0, regression: bool = False) -> Segments:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 4
    bit_a, bit_b = label // 2, label % 2
    length = rng.integers(T // 2, T + 1, size=n)
    in_clip = np.arange(T)[None, :] < length[:, None]
    x, mask = {}, {}
    for m, d in DIMS.items():
        present = in_clip & (rng.random((n, T)) < 0.8)
        present[:, 0] = True
        v = rng.normal(0, 0.5, size=(n, T, d)).astype(np.float32)
        if m == "a":
            v[..., 0] += (2 * bit_a - 1)[:, None]
        elif m == "b":
            v[..., 1] += (2 * bit_b - 1)[:, None]
        v[~present] = 0
        x[m], mask[m] = v, present
    curves = {}
    if regression:
        # time-continuous targets readable per step from 'a' alone (its feature 2), at random label steps
        signal = rng.normal(0, 1, size=(n, T)).astype(np.float32)
        x["a"][..., 2] = np.where(x_present := mask["a"], signal + rng.normal(0, 0.2, size=(n, T)), 0)
        curves = {"arousal": 0.5 * signal, "valence": -0.3 * signal + 0.1, "label_mask": in_clip & x_present & (rng.random((n, T)) < 0.9)}
    partition = np.array(["train"] * int(n * 0.6) + ["devel"] * int(n * 0.2) + ["test"] * (n - int(n * 0.8)))
    label = label.astype(np.int64)
    label[1] = -1  # an unlabelled training clip is left out
    return Segments(
        clip_id=np.array([f"clip{i:03d}" for i in range(n)]),
        partition=partition,
        label=label,
        length=length,
        t=np.tile((np.arange(T) + 0.5) / 5.0, (n, 1)),
        x=x,
        mask=mask,
        mean={m: np.zeros(d, np.float32) for m, d in DIMS.items()},
        std={m: np.ones(d, np.float32) for m, d in DIMS.items()},
        classes=CLASSES,
        rate_hz=5.0,
        modalities={
            m: ModalityInfo(feature=f"feat_{m}", dim=d, backbone="synthetic", pretrained=False, weights_statement=f"{m}: synthetic")
            for m, d in DIMS.items()
        },
        **curves,
    )


@pytest.fixture(scope="module")
def segments_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data") / "segments"
    make_segments().save(d)
    return d


@pytest.fixture(scope="module")
def segments(segments_dir) -> Segments:
    return load_segments(segments_dir)


@pytest.fixture(scope="module")
def trained(segments, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    return out, train_all(segments, PARAMS, out, device="cpu", progress=False)


@pytest.fixture(scope="module")
def evaluated(segments, trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    res = evaluate_all(segments, trained[0], EvaluateParams(), root / "evaluate", root / "headline.json", device="cpu", progress=False)
    return root, res


# ---- training ------------------------------------------------------------------------------------


def test_training_learns_the_task_and_writes_its_files(trained):
    out, summary = trained
    assert set(summary) == {RUN} and set(summary[RUN]) == {"seed_0", "seed_1"}
    for s in PARAMS.seeds:
        r = summary[RUN][f"seed_{s}"]
        assert set(r) == {"best_epoch", "epochs_run", "early_stop", "devel_macro_f1"} and r["early_stop"] == "devel_macro_f1"
        assert r["devel_macro_f1"] >= 0.8  # chance is 0.25
        hist = pl.read_csv(run_dir(out, "crossmodal", "standard", s) / HISTORY_FILE)
        assert hist.columns == ["epoch", "lr", "train_loss", "devel_loss", "devel_accuracy", "devel_macro_f1", "early_stop"]
        assert (hist["early_stop"] == "devel_macro_f1").all()
        assert (hist["lr"] == PARAMS.lr).all()
        live = json.loads((run_dir(out, "crossmodal", "standard", s) / "dvclive" / "metrics.json").read_text())
        assert live["step"] == r["epochs_run"] - 1 and live["devel_macro_f1"] == pytest.approx(hist["devel_macro_f1"][-1])
        assert hist["epoch"].to_list() == list(range(1, r["epochs_run"] + 1))
        best = hist["devel_macro_f1"].max()
        assert r["devel_macro_f1"] == pytest.approx(best)
        assert r["best_epoch"] == hist.filter(pl.col("devel_macro_f1") == best)["epoch"][0]  # earliest best
        # early stopping: ran until `patience` epochs without improvement (or the epoch limit)
        assert r["epochs_run"] == min(PARAMS.epochs, r["best_epoch"] + PARAMS.patience)
        assert hist["train_loss"][-1] < hist["train_loss"][0]


def test_saved_model_round_trips(trained, segments):
    out, summary = trained
    path = run_dir(out, "crossmodal", "standard", 0) / MODEL_FILE
    blob = torch.load(path, weights_only=True)
    assert {"state_dict", "model", "params", "dims", "classes", "modalities"} <= set(blob)
    model, info = load_trained(path)
    assert not model.training
    assert info["model"] == "crossmodal" and info["params"] == PARAMS and info["dims"] == DIMS
    assert info["classes"] == CLASSES and info["modalities"] == ["a", "b", "c"] and info["seed"] == 0
    assert info["strategy"] == "standard" and info["task"] == "classification" and info["n_outputs"] == 4
    assert info["best_epoch"] == summary[RUN]["seed_0"]["best_epoch"]
    # the saved weights are the best epoch's: they reproduce its devel macro-F1
    dv = task_split(segments, "devel", list(DIMS))
    x, m, y = dv.x, dv.mask, dv.y
    from pipeline.runs.metrics import macro_f1

    assert macro_f1(y, predict(model, x, m, valid=dv.valid).argmax(1)) == pytest.approx(info["devel_macro_f1"])
    assert find_trained(out) == [(RUN, 0, path), (RUN, 1, run_dir(out, "crossmodal", "standard", 1) / MODEL_FILE)]


def test_training_is_deterministic(segments, tmp_path):
    p = PARAMS.model_copy(update={"seeds": [3], "epochs": 3})
    train_all(segments, p, tmp_path / "one", device="cpu", progress=False)
    train_all(segments, p, tmp_path / "two", device="cpu", progress=False)
    train_all(segments, p.model_copy(update={"seeds": [4]}), tmp_path / "one", device="cpu", progress=False)
    sd = {k: torch.load(run_dir(tmp_path / k.split("/")[0], "crossmodal", "standard", int(k[-1])) / MODEL_FILE, weights_only=True)["state_dict"] for k in ("one/3", "two/3", "one/4")}
    assert sd["one/3"].keys() == sd["two/3"].keys()
    assert all(torch.equal(sd["one/3"][k], sd["two/3"][k]) for k in sd["one/3"])
    assert not all(torch.equal(sd["one/3"][k], sd["one/4"][k]) for k in sd["one/3"])
    assert (tmp_path / "one/crossmodal/standard/seed_3/history.csv").read_text() == (tmp_path / "two/crossmodal/standard/seed_3/history.csv").read_text()


def test_training_errors(segments, tmp_path):
    with pytest.raises(ModalitiesLacking, match=r"\['z', 'y'\]"):
        train_all(segments, PARAMS.model_copy(update={"modalities": ["a", "z", "y"]}), tmp_path, progress=False)
    no_devel = make_segments()
    no_devel.partition = np.where(no_devel.partition == "devel", "train", no_devel.partition)
    with pytest.raises(TrainError, match="'devel' partition"):
        train_all(no_devel, PARAMS, tmp_path, progress=False)
    with pytest.raises(TrainError, match="not found"):
        load_trained(tmp_path / "nothing.pt")


def test_a_subset_of_modalities_trains(segments, tmp_path):
    p = PARAMS.model_copy(update={"modalities": ["b"], "seeds": [0], "epochs": 2})
    train_all(segments, p, tmp_path, progress=False)
    _, info = load_trained(run_dir(tmp_path, "crossmodal", "standard", 0) / MODEL_FILE)
    assert info["modalities"] == ["b"] and info["dims"] == {"b": 3}


# ---- evaluation ----------------------------------------------------------------------------------

CONDITIONS = ["all_present", "missing:a", "missing:b", "missing:c"]
METRICS = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "micro_f1"]
N_TEST = N - int(N * 0.8)


def test_evaluation_writes_its_files(evaluated):
    root, res = evaluated
    results = pl.read_csv(root / "evaluate" / "results.csv")
    assert results.columns == ["model", "fold", "seed", "condition", "family", "modality", "level", "metric", "value"]
    assert results.height == 2 * len(CONDITIONS) * len(METRICS)
    assert sorted(set(results["condition"])) == sorted(CONDITIONS)
    assert results["value"].is_between(0, 1).all()

    summary = pl.read_csv(root / "evaluate" / "summary.csv")
    assert summary.columns == ["model", "condition", "family", "modality", "level", "metric", "mean", "std", "n_seeds"]
    # tidy: each condition's family, modality and level beside its name (none of these has a level)
    for table in (results, summary):
        tidy = table.select("condition", "family", "modality", "level").unique().sort("condition").rows()
        assert tidy == [("all_present", "all_present", "all", None)] + [(f"missing:{m}", "missing", m, None) for m in "abc"]
    assert summary.height == len(CONDITIONS) * len(METRICS) and (summary["n_seeds"] == 2).all()
    row = summary.filter((pl.col("condition") == "missing:a") & (pl.col("metric") == "macro_f1"))
    vals = results.filter((pl.col("condition") == "missing:a") & (pl.col("metric") == "macro_f1"))["value"]
    assert row["mean"][0] == pytest.approx(vals.mean()) and row["std"][0] == pytest.approx(vals.std(ddof=1))

    preds = pl.read_csv(root / "evaluate" / "predictions.csv")
    assert preds.columns == ["model", "fold", "seed", "condition", "clip_id", "true", "pred"]
    assert preds.height == 2 * len(CONDITIONS) * N_TEST
    assert set(preds["true"]) <= set(CLASSES) and set(preds["pred"]) <= set(CLASSES)

    assert not (root / "evaluate" / "conditions.csv").exists()  # the report draws the figures

    # the headline: seed means of the selection metric with everything present and each modality missing
    js = json.loads((root / "headline.json").read_text())
    assert js == {"macro_f1": {"all_present": pytest.approx(res.metrics[RUN]["all_present"]["macro_f1"], abs=1e-6),
                               **{f"no_{m}": pytest.approx(res.metrics[RUN][f"missing:{m}"]["macro_f1"], abs=1e-6) for m in DIMS}}}


def test_missing_a_needed_modality_lowers_the_score(evaluated):
    f1 = {c: v["macro_f1"] for c, v in evaluated[1].metrics[RUN].items()}
    assert f1["all_present"] >= 0.8
    assert f1["missing:a"] <= f1["all_present"] - 0.3
    assert f1["missing:b"] <= f1["all_present"] - 0.3
    assert f1["missing:c"] >= f1["all_present"] - 0.15  # 'c' carries nothing


def test_predictions_are_the_models_outputs_under_the_condition(evaluated, trained, segments):
    preds = pl.read_csv(evaluated[0] / "evaluate" / "predictions.csv")
    model, _ = load_trained(run_dir(trained[0], "crossmodal", "standard", 1) / MODEL_FILE)
    te = task_split(segments, "test", list(DIMS))
    idx, x, m, y = te.idx, te.x, te.mask, te.y
    xd, md = drop_modalities(x, m, ["b"])
    expected = np.asarray(CLASSES)[predict(model, xd, md, valid=te.valid).argmax(1)]
    got = preds.filter((pl.col("seed") == 1) & (pl.col("condition") == "missing:b"))
    assert got["clip_id"].to_list() == segments.clip_id[idx].tolist()
    assert got["pred"].to_list() == expected.tolist()
    assert got["true"].to_list() == np.asarray(CLASSES)[y].tolist()


def test_evaluation_errors(segments, trained, tmp_path):
    with pytest.raises(EvaluateError, match="no trained models"):
        evaluate_all(segments, tmp_path / "empty", EvaluateParams(), tmp_path / "e", tmp_path / "m", progress=False)
    fewer = make_segments()
    del fewer.x["c"], fewer.mask["c"]
    with pytest.raises(EvaluateError, match=r"\['c'\]"):
        evaluate_all(fewer, trained[0], EvaluateParams(), tmp_path / "e", tmp_path / "m", progress=False)
    renamed = make_segments()
    renamed.classes = ["w", "x", "y", "z"]
    with pytest.raises(EvaluateError, match="classes"):
        evaluate_all(renamed, trained[0], EvaluateParams(), tmp_path / "e", tmp_path / "m", progress=False)


# ---- stages --------------------------------------------------------------------------------------


def _stage(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _family_params(**train) -> dict:
    """params.yaml for one crossmodal family (the grid/train/model/strategy layout)."""
    loop = {k: v for k, v in PARAMS.model_dump(mode="json").items()
            if k not in ("models", "strategies", "all_models", "model_params", "model_train", "strategy_params")}
    return {
        "grid": {"models": ["crossmodal"], "strategies": ["standard"], "eliminate": ["crossmodal"]},
        "train": {**loop, **train},
        "model": {"crossmodal": {"params": PARAMS.model_params["crossmodal"]}},
        "strategy": {},
        "evaluate": {"conditions": ["all_present", "missing:c"]},
        "importance": {"alpha": 0.05, "rho": 0.25},
    }


def test_stages_run_from_a_repository_root(segments_dir, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    load_segments(segments_dir).save(tmp_path / "data" / "segments")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_family_params(seeds=[0], epochs=2)))
    r = _stage("train", tmp_path, "--model", "crossmodal", "--strategy", "standard")
    assert r.returncode == 0, r.stderr
    train_json = json.loads((tmp_path / "data/models/crossmodal/standard/train.json").read_text())
    assert set(train_json["seed_0"]) == {"best_epoch", "devel_macro_f1", "epochs_run", "early_stop"}
    assert (tmp_path / "data/models/crossmodal/standard/seed_0/model.pt").exists()
    monkeypatch.chdir(tmp_path)  # evaluate in-process: one subprocess shows the scripts start (imports are slow)
    _stage_main("evaluate")(["--model", "crossmodal", "--strategy", "standard"])
    js = json.loads((tmp_path / "metrics/crossmodal-standard.json").read_text())
    assert js == {"macro_f1": {"all_present": pytest.approx(js["macro_f1"]["all_present"]), "no_c": pytest.approx(js["macro_f1"]["no_c"])}}
    for f in ("results", "summary", "predictions"):
        assert (tmp_path / "data/evaluate/crossmodal/standard" / f"{f}.csv").exists()


def _stage_main(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _fails(main, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run_stage(main)
    assert exit_.value.code == 1
    return capsys.readouterr().err


def test_stages_fail_cleanly(segments_dir, tmp_path, monkeypatch, capsys):
    # in-process (the subprocess run above shows the scripts start); each error is one clear line
    monkeypatch.chdir(tmp_path)
    family = ["--model", "crossmodal", "--strategy", "standard"]
    train_main, evaluate_main = _stage_main("train"), _stage_main("evaluate")
    train, evaluate = (lambda: train_main(family)), (lambda: evaluate_main(family))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"modalities": ["a"]}}))
    assert _fails(train, capsys).startswith("error: data/segments/segments.json: not found")
    load_segments(segments_dir).save(tmp_path / "data" / "segments")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"modalities": ["a", "face"]}}))
    assert "error: training needs modalities ['face']" in _fails(train, capsys)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 0}}))
    assert "train.epochs" in _fails(train, capsys)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"models": ["crossmodal"]}}))
    assert "train.models: moved to grid.models" in _fails(train, capsys)
    assert _fails(evaluate, capsys).startswith("error: data/models: no trained 'crossmodal/standard' models")


# ---- regression, strategies, the grid ------------------------------------------------------------

REG_PARAMS = PARAMS.model_copy(update={"task": "regression", "seeds": [0, 1, 2], "epochs": 12, "patience": 4})


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    segs = make_segments(regression=True)
    out = tmp_path_factory.mktemp("reg_models")
    return segs, out, train_all(segs, REG_PARAMS, out, device="cpu", progress=False)


def test_regression_learns_the_time_continuous_targets(regression, tmp_path):
    segs, out, summary = regression
    for s in REG_PARAMS.seeds:
        r = summary[RUN][f"seed_{s}"]
        assert set(r) == {"best_epoch", "epochs_run", "early_stop", "devel_ccc_mean"} and r["devel_ccc_mean"] > 0.5
        hist = pl.read_csv(run_dir(out, "crossmodal", "standard", s) / HISTORY_FILE)
        assert hist.columns == [
            "epoch", "lr", "train_loss", "devel_loss", "devel_ccc_arousal", "devel_ccc_valence", "devel_ccc_mean",
            "devel_rmse_arousal", "devel_rmse_valence", "early_stop",
        ]
        assert hist["devel_loss"].to_list() == pytest.approx((1 - hist["devel_ccc_mean"]).to_list())
    # the saved model reproduces its devel CCC from the concatenated valid steps (population CCC)
    from pipeline.runs.feed import predict, task_split
    from pipeline.runs.metrics import ccc

    model, info = load_trained(run_dir(out, "crossmodal", "standard", 0) / MODEL_FILE)
    assert info["task"] == "regression" and info["targets"] == ["arousal", "valence"] and info["n_outputs"] == 2
    dv = task_split(segs, "devel", list(DIMS), "regression", ["arousal", "valence"])
    pred = predict(model, dv.x, dv.mask, valid=dv.valid)
    assert pred.shape == (len(dv), T, 2)
    valid = dv.y_mask & (np.arange(T)[None] < segs.length[dv.idx, None])
    assert np.array_equal(valid, dv.y_mask)
    mean = np.mean([ccc(dv.y[..., k][valid], pred[..., k][valid]) for k in range(2)])
    assert mean == pytest.approx(info["devel_ccc_mean"], abs=1e-5)

    res = evaluate_all(segs, out, EvaluateParams(), tmp_path / "e", tmp_path / "m", device="cpu", progress=False)
    results = pl.read_csv(tmp_path / "e" / "results.csv")
    assert set(results["metric"]) == {"ccc_arousal", "ccc_valence", "ccc_mean", "rmse_arousal", "rmse_valence"}
    ccc_mean = {c: v["ccc_mean"] for c, v in res.metrics[RUN].items()}
    assert ccc_mean["all_present"] > 0.5 and ccc_mean["missing:a"] < 0.2 and ccc_mean["missing:c"] > ccc_mean["all_present"] - 0.1
    preds = pl.read_csv(tmp_path / "e" / "predictions.csv")
    assert preds.columns == ["model", "fold", "seed", "condition", "clip_id", "step", "target", "true", "pred"]
    one = preds.filter((pl.col("seed") == 0) & (pl.col("condition") == "all_present") & (pl.col("target") == "arousal"))
    assert ccc(one["true"], one["pred"]) == pytest.approx(
        results.filter((pl.col("seed") == 0) & (pl.col("condition") == "all_present") & (pl.col("metric") == "ccc_arousal"))["value"][0]
    )
    assert set(json.loads((tmp_path / "m").read_text())) == {"ccc_mean"}  # the headline of a regression family


def test_ccc_loss_is_one_minus_the_population_ccc_over_valid_steps():
    from pipeline.runs.metrics import ccc
    from pipeline.train.loop import ccc_loss

    g = torch.Generator().manual_seed(0)
    y, p = torch.randn(3, 5, 2, generator=g), torch.randn(3, 5, 2, generator=g)
    m = torch.rand(3, 5, generator=g) < 0.7
    expected = 1 - np.mean([ccc(y[..., k][m].numpy(), p[..., k][m].numpy()) for k in range(2)])
    assert float(ccc_loss(p, y, m)) == pytest.approx(expected, abs=1e-5)
    p2 = p.clone()
    p2[~m] = 100.0  # invalid steps do not count
    assert float(ccc_loss(p2, y, m)) == pytest.approx(expected, abs=1e-5)


class _DropB:
    """A strategy that drops 'b' on even epochs and records what it was given."""

    def __init__(self, calls):
        self.calls = calls

    def apply(self, x, mask, rng, epoch):
        self.calls.append((epoch, {k: v.clone() for k, v in mask.items()}))
        if epoch % 2:
            return dict(x), dict(mask)
        return drop_modalities(x, mask, ["b"])


class _Recorder(torch.nn.Module):
    """Wraps a model and records the TrainBatch its training_loss sees."""

    def __init__(self, inner, seen):
        super().__init__()
        self.inner, self.seen = inner, seen

    def forward(self, x, mask):
        return self.inner(x, mask)

    def training_loss(self, batch, task_loss):
        self.seen.append(batch)
        main = task_loss(self(batch.x, batch.mask))
        aux = 0.1 * task_loss(self(batch.x_full, batch.mask_full))
        return {"total": main + aux, "main": main, "aux": aux}


def test_strategies_and_training_losses_pass_through(segments, tmp_path, monkeypatch):
    import pipeline.missing as missing_mod
    import pipeline.train.loop as train_mod
    from pipeline.train.loop import TrainBatch

    calls, seen, made = [], [], []

    def make_strategy(name, modalities, params, importance):
        made.append((name, modalities, params, importance))
        return _DropB(calls)

    real_build = train_mod.build_model
    monkeypatch.setattr(missing_mod, "make_strategy", make_strategy, raising=False)
    monkeypatch.setattr(train_mod, "build_model", lambda *a, **k: _Recorder(real_build(*a, **k), seen))
    p = PARAMS.model_copy(update={
        "strategies": ["dropb"], "seeds": [0], "epochs": 2, "patience": 5, "strategy_params": {"dropb": {"p": 0.5}},
    })
    summary = train_all(segments, p, tmp_path, device="cpu", progress=False)
    assert list(summary) == ["crossmodal/dropb"] and (tmp_path / "crossmodal/dropb/seed_0/model.pt").exists()
    assert made[-1] == ("dropb", ["a", "b", "c"], {"p": 0.5}, None)
    assert all(isinstance(b, TrainBatch) for b in seen) and {b.epoch for b in seen} == {1, 2}
    for b in seen:
        assert b.y.dtype == torch.long and b.y_mask is None
        assert b.mask_full["b"].any()  # the complete view keeps 'b'
        assert (not b.mask["b"].any()) == (b.epoch == 2)  # the strategy's view drops it on epoch 2
    assert len(calls) == len(seen) and all(c[1]["b"].any() for c in calls)  # the strategy got the full view
    hist = pl.read_csv(tmp_path / "crossmodal/dropb/seed_0" / HISTORY_FILE)
    assert hist.columns[:5] == ["epoch", "lr", "train_loss", "train_main", "train_aux"]
    assert hist["train_loss"].to_list() == pytest.approx((hist["train_main"] + hist["train_aux"]).to_list(), rel=1e-5)


def test_grid_layout_and_model_validation(segments, tmp_path):
    from pipeline.train.grid import resolve_grid

    with pytest.raises(TrainError, match=r"unknown model.*'nope'.*available: .*crossmodal"):
        train_all(segments, PARAMS.model_copy(update={"models": ["nope"]}), tmp_path, progress=False)
    with pytest.raises(TrainError, match="eliminate.*importance"):
        resolve_grid(PARAMS.model_copy(update={"strategies": ["eliminate"]}))
    assert ("crossmodal", "standard") in resolve_grid(PARAMS.model_copy(update={"all_models": True}))
    assert ("crossmodal", "eliminate") not in resolve_grid(PARAMS.model_copy(update={"all_models": True}))


def test_importance_search_finds_the_modality_that_carries_the_signal(regression, tmp_path):
    from pipeline.evaluate.importance import ImportanceParams, importance_search

    segs, out, _ = regression
    res = importance_search(segs, out, ImportanceParams(alpha=0.05, min_drop=0.1), device="cpu", progress=False)
    r = res["crossmodal"]
    assert r["important"] == ["a"] and r["metric"] == "ccc_mean" and r["partition"] == "devel" and r["seeds"] == [0, 1, 2]
    # 000's defaults: two-sided tests without Holm (§6.2), ρ 0.25 for one important modality (§6.2)
    assert (r["alternative"], r["holm"]) == ("two-sided", False)
    assert r["rho"] == {"a": 0.25} and r["rho_none"] == 0.75
    t = r["tests"]
    assert t["a"]["significant"] and t["a"]["mean_drop"] > 0.4 and t["a"]["p_holm"] < 0.05
    assert all(abs(t[m]["mean_drop"]) < 0.1 and not t[m]["important"] for m in ("b", "c"))
    assert t["a"]["p_holm"] == pytest.approx(min(1.0, 3 * min(v["p"] for v in t.values())))  # Holm, smallest p
    # the scores behind the test are the evaluation's: all-present devel mean CCC of each seed
    from pipeline.runs.feed import predict, score, task_split

    dv = task_split(segs, "devel", list(DIMS), "regression", ["arousal", "valence"])
    means = [score("regression", dv, predict(load_trained(run_dir(out, "crossmodal", "standard", s) / MODEL_FILE)[0], dv.x, dv.mask, valid=dv.valid))["ccc_mean"] for s in (0, 1, 2)]
    assert t["a"]["all_present"] == pytest.approx(np.mean(means))


def test_standard_importance_eliminate_stages_in_order(segments_dir, tmp_path, monkeypatch, capsys):
    """train@crossmodal-standard → importance@crossmodal → train_eliminate@crossmodal → evaluate, in-process
    (the eliminate strategy is a stand-in that records the importance entry it gets)."""
    import pipeline.missing as missing_mod

    got = []

    class Keep:
        def apply(self, x, mask, rng, epoch):
            return dict(x), dict(mask)

    def make_strategy(name, modalities, params, importance):
        got.append((name, importance))
        return Keep()

    monkeypatch.setattr(missing_mod, "make_strategy", make_strategy, raising=False)
    monkeypatch.chdir(tmp_path)
    load_segments(segments_dir).save(tmp_path / "data" / "segments")
    params = _family_params(seeds=[0, 1], epochs=2)
    params["evaluate"]["conditions"] = ["all_present"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    train, importance, evaluate = _stage_main("train"), _stage_main("importance"), _stage_main("evaluate")
    train(["--model", "crossmodal", "--strategy", "standard"])
    assert sorted(p.name for p in (tmp_path / "data/models/crossmodal").iterdir()) == ["standard"]
    importance(["--model", "crossmodal"])
    imp = json.loads((tmp_path / "data/importance/crossmodal.json").read_text())
    assert set(imp["tests"]) == {"a", "b", "c"}
    assert imp["rho"] == {m: 0.25 for m in imp["important"]}
    train(["--model", "crossmodal", "--strategy", "eliminate"])
    assert got[-1] == ("eliminate", imp)
    assert (tmp_path / "data/models/crossmodal/eliminate/seed_1/model.pt").exists()
    assert json.loads((tmp_path / "data/models/crossmodal/eliminate/importance.json").read_text()) == imp
    evaluate(["--model", "crossmodal", "--strategy", "eliminate"])
    assert set(json.loads((tmp_path / "metrics/crossmodal-eliminate.json").read_text())) == {"macro_f1"}
    # a model without standard runs has nothing to search: one clear line
    with pytest.raises(SystemExit):
        run_stage(lambda: importance(["--model", "auxformer"]))
    assert "data/models/auxformer/standard: no trained runs" in capsys.readouterr().err


def test_all_models_skips_models_that_do_not_take_the_inputs(segments, tmp_path, monkeypatch):
    from pipeline.models import registry
    from pipeline.runs.feed import ModelBuildError

    # a registered model whose builder refuses these inputs (as AuxFormer refuses three modalities)
    monkeypatch.setattr(registry, "MODELS", {"crossmodal": registry.MODELS["crossmodal"], "two_only": registry.ModelEntry("crossmodal", "no_such_builder")})
    import pipeline.train.loop as train_mod

    real = train_mod.build_model

    def build(name, *a, **k):
        if name == "two_only":
            raise registry.ModelError("model 'two_only': takes exactly 2 modalities")
        return real(name, *a, **k)

    monkeypatch.setattr(train_mod, "build_model", build)
    p = PARAMS.model_copy(update={"seeds": [0], "epochs": 1})
    with pytest.raises(ModelBuildError, match="exactly 2"):
        train_all(segments, p.model_copy(update={"models": ["two_only"]}), tmp_path, progress=False)
    summary = train_all(segments, p.model_copy(update={"all_models": True}), tmp_path, strategies=["standard"], progress=False)
    assert list(summary) == ["crossmodal/standard"] and not (tmp_path / "two_only").exists()


def test_plateau_schedule_halves_the_lr_and_grad_clip_is_applied(segments, tmp_path, monkeypatch):
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: clipped.append(max_norm) or real_clip(params, max_norm))
    # lr so small that the devel macro-F1 never changes: epoch 1 stays the best, every later epoch is "bad"
    p = PARAMS.model_copy(update={"seeds": [0], "epochs": 20, "patience": 7, "lr": 1e-12,
                                  "grad_clip": 0.8, "lr_schedule": "plateau", "lr_patience": 2})
    train_all(segments, p, tmp_path, device="cpu", progress=False)
    hist = pl.read_csv(run_dir(tmp_path, "crossmodal", "standard", 0) / HISTORY_FILE)
    assert hist["epoch"].to_list() == list(range(1, 9))  # early stop after 7 epochs without improvement
    assert (hist["lr"] / 1e-12).to_list() == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125])  # halved every 2 bad epochs
    assert clipped and set(clipped) == {0.8}


def test_all_models_grid_gives_each_model_only_strategies_it_can_run():
    from pipeline.models.registry import available_models
    from pipeline.train.grid import resolve_grid

    grid = resolve_grid(PARAMS.model_copy(update={"all_models": True}), strategies=["standard", "auxformer", "clip_zero"])
    assert {m for m, _ in grid} == set(available_models())
    # `unimodal` takes one modality: the auxformer strategy (audio and video) cannot run for it
    assert ("unimodal", "auxformer") not in grid and ("unimodal", "clip_zero") in grid
    assert ("auxformer", "auxformer") in grid and ("crossmodal", "auxformer") in grid


def test_condition_columns_are_the_conditions_own_attributes():
    from pipeline.evaluate.grid import condition_columns
    from pipeline.missing import parse_conditions

    entries = ["all_present", "missing:a", "missing:a+b", "clip_zero:a@0.5", "random_missing@0.3", "random_missing:b@0.3"]
    got = {c.name: condition_columns(c) for c in parse_conditions(entries, ["a", "b", "c"])}
    assert got == {
        "all_present": {"family": "all_present", "modality": "all", "level": None},
        "missing:a": {"family": "missing", "modality": "a", "level": None},
        "missing:a+b": {"family": "missing", "modality": "a+b", "level": None},
        "clip_zero:a@0.5": {"family": "clip_zero", "modality": "a", "level": 0.5},
        "random_missing@0.3": {"family": "random_missing", "modality": "all", "level": 0.3},
        "random_missing:b@0.3": {"family": "random_missing", "modality": "b", "level": 0.3},
    }


def test_tables_write_the_tidy_columns_and_an_empty_level_cell():
    from pipeline.evaluate.grid import _tables
    from pipeline.missing import parse_conditions

    conditions = parse_conditions(["all_present", "missing:a+b", "clip_zero:a@0.5", "random_missing@0.3"], ["a", "b", "c"])
    rows = [{"model": "m/standard", "fold": 0, "seed": s, "condition": c.name, "metric": "macro_f1", "value": 0.1 * s + 0.01 * i}
            for s in (0, 1) for i, c in enumerate(reversed(conditions))]
    out = _tables(rows, conditions, ["macro_f1"], ("macro_f1",), "macro_f1")
    assert out.results.columns == ["model", "fold", "seed", "condition", "family", "modality", "level", "metric", "value"]
    assert out.results.select("condition", "family", "modality", "level").rows()[:4] == [
        ("random_missing@0.3", "random_missing", "all", 0.3), ("clip_zero:a@0.5", "clip_zero", "a", 0.5),
        ("missing:a+b", "missing", "a+b", None), ("all_present", "all_present", "all", None)]
    assert out.summary.select("condition", "family", "modality", "level").rows() == [
        ("all_present", "all_present", "all", None), ("missing:a+b", "missing", "a+b", None),
        ("clip_zero:a@0.5", "clip_zero", "a", 0.5), ("random_missing@0.3", "random_missing", "all", 0.3)]
    assert out.summary["n_seeds"].to_list() == [2] * 4
    csv_lines = out.summary.write_csv().splitlines()
    assert csv_lines[0] == "model,condition,family,modality,level,metric,mean,std,n_seeds"
    assert csv_lines[2].startswith("m/standard,missing:a+b,missing,a+b,,macro_f1,")  # no level: an empty cell


def test_saving_the_same_model_twice_gives_the_same_bytes(trained, tmp_path):
    # DVC hashes model.pt: identical runs must give identical files (no temporary names inside)
    from pipeline.runs.files import save_trained

    out, _ = trained
    blob = torch.load(run_dir(out, "crossmodal", "standard", 0) / MODEL_FILE, weights_only=False)
    blob.pop("format", None)
    save_trained(tmp_path / "a" / "model.pt", blob)
    save_trained(tmp_path / "b" / "model.pt", blob)
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


# ---- evaluation under the windows layout: every clip (clip step) scored once ----------------------


def test_windows_merge_counts_a_step_covered_by_two_windows_once():
    """Clip A: windows at origin 0 and 2 (4 steps each), so clip steps 2 and 3 are covered twice; clip B:
    one window. Window step 3 of A's second window is unlabelled (y_mask False): clip step 5 is left out."""
    from pipeline.evaluate.clip_scores import clip_metrics, clip_predictions
    from pipeline.runs.feed import Split
    from pipeline.runs.metrics import regression_metrics

    clip_ids = np.array(["A", "B", "A"])
    origin = np.array([0, 0, 2])
    true_a = np.array([0.1, 0.4, -0.2, 0.3, 0.0, 0.9])  # A's label curve over clip steps 0..5
    y = np.zeros((3, 4, 1), np.float32)
    y[0, :, 0], y[2, :, 0] = true_a[0:4], true_a[2:6]
    y[1, :, 0] = [0.5, -0.5, 0.2, 0.0]
    y_mask = np.ones((3, 4), bool)
    y_mask[2, 3] = False
    y_mask[1, 3] = False
    out = np.arange(12, dtype=np.float32).reshape(3, 4, 1) / 10  # window 0: .0 .1 .2 .3; B: .4 .5 .6 .7; window 2: .8 .9 1.0 1.1
    split = Split(np.arange(3), {}, {}, y, y_mask)
    got = clip_predictions("regression", split, clip_ids, out, origin)
    assert got.clip_id.tolist() == ["A"] * 5 + ["B"] * 3
    assert got.step.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    # A: steps 2 and 3 are the mean of both windows' predictions, once each
    want_pred = np.array([0.0, 0.1, (0.2 + 0.8) / 2, (0.3 + 0.9) / 2, 1.0, 0.4, 0.5, 0.6])
    want_true = np.array([0.1, 0.4, -0.2, 0.3, 0.0, 0.5, -0.5, 0.2])
    np.testing.assert_allclose(got.out[:, 0], want_pred, atol=1e-6)
    np.testing.assert_allclose(got.true[:, 0], want_true, atol=1e-6)
    # the metrics are over these 8 clip steps (hand CCC), not over the 10 window steps
    m = clip_metrics("regression", ["arousal"], got)
    t, p = want_true, want_pred
    hand = 2 * np.mean((t - t.mean()) * (p - p.mean())) / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)
    assert m["ccc_arousal"] == pytest.approx(hand, abs=1e-6)
    assert m == pytest.approx(regression_metrics(want_true[:, None], want_pred[:, None], ["arousal"]))
    # classification: the windows' logits averaged per clip, the class their argmax
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [-1.5, 0.0]])
    cls = clip_predictions("classification", Split(np.arange(3), {}, {}, np.array([0, 1, 0]), None), clip_ids, logits, origin)
    assert cls.clip_id.tolist() == ["A", "B"] and cls.true.tolist() == [0, 1]
    np.testing.assert_allclose(cls.out, [[0.25, 0.0], [0.0, 1.0]])
    assert clip_metrics("classification", [], cls)["accuracy"] == 1.0  # per window it would be 2 of 3


def test_step_ranges():
    from pipeline.evaluate.clip_scores import step_ranges

    assert step_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert step_ranges([3]) == "3" and step_ranges([]) == ""


def test_windows_evaluation_scores_each_clip_once(segments, trained, tmp_path):
    """The test partition recut as windows: pairs of rows become one clip (the second window starting
    at step 3), so evaluation writes one prediction per clip from the mean of its two windows' logits,
    and which steps of the missing modality each clip lost."""
    from dataclasses import replace

    from pipeline.runs.metrics import classification_metrics

    test = segments.indices("test")
    clip_id, origin, label = segments.clip_id.astype(object).copy(), np.zeros(segments.n, np.int64), segments.label.copy()
    for j, i in enumerate(test):
        clip_id[i] = f"w{j // 2:02d}"
        origin[i] = 3 * (j % 2)
        label[i] = segments.label[test[j - j % 2]]
    win = replace(segments, clip_id=clip_id.astype(str), origin=origin, label=label, layout="windows")
    res = evaluate_all(win, trained[0], EvaluateParams(), tmp_path / "e", device="cpu", progress=False)
    preds = pl.read_csv(tmp_path / "e" / "predictions.csv")
    assert preds.height == 2 * len(CONDITIONS) * len(test) // 2
    te = task_split(win, "test", list(DIMS))
    model, _ = load_trained(run_dir(trained[0], "crossmodal", "standard", 0) / MODEL_FILE)
    xd, md = drop_modalities(te.x, te.mask, ["b"])
    logits = predict(model, xd, md, valid=te.valid)
    mean = (logits[0::2] + logits[1::2]) / 2
    got = preds.filter((pl.col("seed") == 0) & (pl.col("condition") == "missing:b"))
    assert got["clip_id"].to_list() == [f"w{k:02d}" for k in range(len(test) // 2)]
    assert got["pred"].to_list() == np.asarray(CLASSES)[mean.argmax(1)].tolist()
    y = te.y[0::2]
    want = classification_metrics(y, mean.argmax(1))
    assert res.results.filter((pl.col("seed") == 0) & (pl.col("condition") == "missing:b")
                              & (pl.col("metric") == "macro_f1"))["value"][0] == pytest.approx(want["macro_f1"])
    # masked steps in the clip's own steps: window 2 starts at step 3, so its steps shift by 3
    masked = pl.read_csv(tmp_path / "e" / "masked_steps.csv")
    assert masked.columns == ["fold", "condition", "clip_id", "modality", "steps", "n_masked", "n_steps"]
    assert set(masked["condition"]) == {"missing:a", "missing:b", "missing:c"}
    row = masked.filter((pl.col("condition") == "missing:b") & (pl.col("clip_id") == "w00")).row(0, named=True)
    present = set(np.flatnonzero(te.mask["b"][0]).tolist()) | set((3 + np.flatnonzero(te.mask["b"][1])).tolist())
    assert row["modality"] == "b" and row["n_masked"] == len(present)
    from pipeline.evaluate.clip_scores import step_ranges

    assert row["steps"] == step_ranges(sorted(present))
    n_valid = len(set(range(te.valid["b"][0].sum())) | set(range(3, 3 + te.valid["b"][1].sum())))
    assert row["n_steps"] == n_valid


def test_seed_per_fold_gives_each_split_its_own_seed(tmp_path, one_torch_thread):
    """001 §4.2: 20 trials "using random seeds with different splits every time". Two folds with the same
    partition: with the configured seed alone they train the same model; under `seed_per_fold` each fold
    draws replicate(fold, seed), so the two differ, from each other and from seed 0."""
    base = make_segments(40)
    two = Segments(**{**base.__dict__, "folds": np.stack([base.partition, base.partition]),
                      "fold_mean": {m: np.stack([v, v]) for m, v in base.mean.items()},
                      "fold_std": {m: np.stack([v, v]) for m, v in base.std.items()}})
    params = PARAMS.model_copy(update={"seeds": [0], "epochs": 2})
    weights = {}
    for per_fold in (False, True):
        out = tmp_path / str(per_fold)
        summary = train_all(two, params.model_copy(update={"seed_per_fold": per_fold}), out, device="cpu", progress=False)
        assert list(summary["crossmodal/standard"]) == ["fold_0/seed_0", "fold_1/seed_0"]  # named by the configured seed
        weights[per_fold] = [torch.load(run_dir(out, "crossmodal", "standard", 0, k) / MODEL_FILE, weights_only=False)
                             for k in (0, 1)]

    def same(a, b) -> bool:
        sa, sb = a["state_dict"], b["state_dict"]
        return all(torch.equal(sa[k], sb[k]) for k in sa)

    assert same(*weights[False])
    assert not same(*weights[True]) and not same(weights[True][0], weights[False][0])
