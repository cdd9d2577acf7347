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

from pipeline.config import EvaluateParams, TrainParams
from pipeline.evaluate import EvaluateError, evaluate_all, find_trained
from pipeline.missing import drop_modalities
from pipeline.segments import ModalityInfo, Segments, load_segments
from pipeline.stage import run_stage
from pipeline.train import (
    HISTORY_FILE,
    MODEL_FILE,
    TrainError,
    labelled_split,
    load_trained,
    predict_logits,
    run_dir,
    train_all,
)

REPO = Path(__file__).resolve().parents[1]
DIMS = {"a": 5, "b": 3, "c": 7}
CLASSES = ["neutral", "happy", "angry", "sad"]
N, T = 80, 12
PARAMS = TrainParams(
    modalities=list(DIMS), seeds=[0, 1], epochs=20, batch_size=8, lr=3e-3, patience=3, d_model=16, layers=1, heads=2
)


def make_segments(n: int = N, seed: int = 0) -> Segments:
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
    res = evaluate_all(segments, trained[0], EvaluateParams(), root / "evaluate", root / "metrics", device="cpu", progress=False)
    return root, res


# ---- training ------------------------------------------------------------------------------------


def test_training_learns_the_task_and_writes_its_files(trained):
    out, summary = trained
    assert set(summary) == {"crossmodal"} and set(summary["crossmodal"]) == {"seed_0", "seed_1"}
    for s in PARAMS.seeds:
        r = summary["crossmodal"][f"seed_{s}"]
        assert r["devel_macro_f1"] >= 0.8  # chance is 0.25
        hist = pl.read_csv(run_dir(out, "crossmodal", s) / HISTORY_FILE)
        assert hist.columns == ["epoch", "train_loss", "devel_loss", "devel_accuracy", "devel_macro_f1"]
        assert hist["epoch"].to_list() == list(range(1, r["epochs_run"] + 1))
        best = hist["devel_macro_f1"].max()
        assert r["devel_macro_f1"] == pytest.approx(best)
        assert r["best_epoch"] == hist.filter(pl.col("devel_macro_f1") == best)["epoch"][0]  # earliest best
        # early stopping: ran until `patience` epochs without improvement (or the epoch limit)
        assert r["epochs_run"] == min(PARAMS.epochs, r["best_epoch"] + PARAMS.patience)
        assert hist["train_loss"][-1] < hist["train_loss"][0]


def test_saved_model_round_trips(trained, segments):
    out, summary = trained
    path = run_dir(out, "crossmodal", 0) / MODEL_FILE
    blob = torch.load(path, weights_only=True)
    assert {"state_dict", "model", "params", "dims", "classes", "modalities"} <= set(blob)
    model, info = load_trained(path)
    assert not model.training
    assert info["model"] == "crossmodal" and info["params"] == PARAMS and info["dims"] == DIMS
    assert info["classes"] == CLASSES and info["modalities"] == ["a", "b", "c"] and info["seed"] == 0
    assert info["best_epoch"] == summary["crossmodal"]["seed_0"]["best_epoch"]
    # the saved weights are the best epoch's: they reproduce its devel macro-F1
    _, x, m, y = labelled_split(segments, "devel", list(DIMS))
    from pipeline.metrics import macro_f1

    assert macro_f1(y, predict_logits(model, x, m).argmax(1)) == pytest.approx(info["devel_macro_f1"])
    assert find_trained(out) == [("crossmodal", 0, path), ("crossmodal", 1, run_dir(out, "crossmodal", 1) / MODEL_FILE)]


def test_training_is_deterministic(segments, tmp_path):
    p = PARAMS.model_copy(update={"seeds": [3], "epochs": 3})
    train_all(segments, p, tmp_path / "one", device="cpu", progress=False)
    train_all(segments, p, tmp_path / "two", device="cpu", progress=False)
    train_all(segments, p.model_copy(update={"seeds": [4]}), tmp_path / "one", device="cpu", progress=False)
    sd = {k: torch.load(run_dir(tmp_path / k.split("/")[0], "crossmodal", int(k[-1])) / MODEL_FILE, weights_only=True)["state_dict"] for k in ("one/3", "two/3", "one/4")}
    assert sd["one/3"].keys() == sd["two/3"].keys()
    assert all(torch.equal(sd["one/3"][k], sd["two/3"][k]) for k in sd["one/3"])
    assert not all(torch.equal(sd["one/3"][k], sd["one/4"][k]) for k in sd["one/3"])
    assert (tmp_path / "one/crossmodal/seed_3/history.csv").read_text() == (tmp_path / "two/crossmodal/seed_3/history.csv").read_text()


def test_training_errors(segments, tmp_path):
    with pytest.raises(TrainError, match=r"\['z', 'y'\]"):
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
    _, info = load_trained(run_dir(tmp_path, "crossmodal", 0) / MODEL_FILE)
    assert info["modalities"] == ["b"] and info["dims"] == {"b": 3}


# ---- evaluation ----------------------------------------------------------------------------------

CONDITIONS = ["all_present", "missing:a", "missing:b", "missing:c"]
METRICS = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "micro_f1"]
N_TEST = N - int(N * 0.8)


def test_evaluation_writes_its_files(evaluated):
    root, res = evaluated
    results = pl.read_csv(root / "evaluate" / "results.csv")
    assert results.columns == ["model", "seed", "condition", "metric", "value"]
    assert results.height == 2 * len(CONDITIONS) * len(METRICS)
    assert sorted(set(results["condition"])) == sorted(CONDITIONS)
    assert results["value"].is_between(0, 1).all()

    summary = pl.read_csv(root / "evaluate" / "summary.csv")
    assert summary.columns == ["model", "condition", "metric", "mean", "std", "n_seeds"]
    assert summary.height == len(CONDITIONS) * len(METRICS) and (summary["n_seeds"] == 2).all()
    row = summary.filter((pl.col("condition") == "missing:a") & (pl.col("metric") == "macro_f1"))
    vals = results.filter((pl.col("condition") == "missing:a") & (pl.col("metric") == "macro_f1"))["value"]
    assert row["mean"][0] == pytest.approx(vals.mean()) and row["std"][0] == pytest.approx(vals.std(ddof=1))

    preds = pl.read_csv(root / "evaluate" / "predictions.csv")
    assert preds.columns == ["model", "seed", "condition", "clip_id", "true", "pred"]
    assert preds.height == 2 * len(CONDITIONS) * N_TEST
    assert set(preds["true"]) <= set(CLASSES) and set(preds["pred"]) <= set(CLASSES)

    conds = pl.read_csv(root / "evaluate" / "conditions.csv")
    assert conds.columns == ["condition", "model", "macro_f1"] and conds["condition"].to_list() == CONDITIONS

    js = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert list(js) == ["crossmodal"] and sorted(js["crossmodal"]) == sorted(CONDITIONS)
    assert sorted(js["crossmodal"]["all_present"]) == ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"]
    assert js == res.metrics


def test_missing_a_needed_modality_lowers_the_score(evaluated):
    f1 = {c: v["macro_f1"] for c, v in evaluated[1].metrics["crossmodal"].items()}
    assert f1["all_present"] >= 0.8
    assert f1["missing:a"] <= f1["all_present"] - 0.3
    assert f1["missing:b"] <= f1["all_present"] - 0.3
    assert f1["missing:c"] >= f1["all_present"] - 0.15  # 'c' carries nothing


def test_predictions_are_the_models_outputs_under_the_condition(evaluated, trained, segments):
    preds = pl.read_csv(evaluated[0] / "evaluate" / "predictions.csv")
    model, _ = load_trained(run_dir(trained[0], "crossmodal", 1) / MODEL_FILE)
    idx, x, m, y = labelled_split(segments, "test", list(DIMS))
    xd, md = drop_modalities(x, m, ["b"])
    expected = np.asarray(CLASSES)[predict_logits(model, xd, md).argmax(1)]
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


def _stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py")], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_stages_run_from_a_repository_root(segments_dir, tmp_path):
    (tmp_path / "data").mkdir()
    load_segments(segments_dir).save(tmp_path / "data" / "segments")
    params = {
        "train": {**PARAMS.model_dump(mode="json"), "seeds": [0], "epochs": 2},
        "evaluate": {"conditions": ["all_present", "missing:c"]},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = _stage("train", tmp_path)
    assert r.returncode == 0, r.stderr
    train_json = json.loads((tmp_path / "data/metrics/train.json").read_text())
    assert set(train_json["crossmodal"]["seed_0"]) == {"best_epoch", "devel_macro_f1", "epochs_run"}
    assert (tmp_path / "data/models/crossmodal/seed_0/model.pt").exists()
    r = _stage("evaluate", tmp_path)
    assert r.returncode == 0, r.stderr
    js = json.loads((tmp_path / "data/metrics/evaluate.json").read_text())
    assert sorted(js["crossmodal"]) == ["all_present", "missing:c"]
    for f in ("results", "summary", "predictions", "conditions"):
        assert (tmp_path / "data/evaluate" / f"{f}.csv").exists()


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
    train, evaluate = _stage_main("train"), _stage_main("evaluate")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"modalities": ["a"]}}))
    assert _fails(train, capsys).startswith("error: data/segments/segments.npz: not found")
    load_segments(segments_dir).save(tmp_path / "data" / "segments")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"modalities": ["a", "face"]}}))
    assert "error: training needs modalities ['face']" in _fails(train, capsys)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 0}}))
    assert "train.epochs" in _fails(train, capsys)
    assert _fails(evaluate, capsys).startswith("error: data/models: no trained models")
