"""grid.rates: a strategy's family trained at several training missing rates in its own stage, the
extra rates under <strategy>/rate_<r>/, evaluated into train_test.csv only (the train-rate × test-rate
matrix), the family's own runs and headline metrics untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from pipeline.core.config import ConfigError, load_section
from pipeline.evaluate import robustness
from pipeline.evaluate.grid import evaluate_all
from pipeline.evaluate.params import EvaluateParams
from pipeline.runs.feed import TrainError
from pipeline.runs.files import (
    MODEL_FILE,
    find_trained,
    read_trained_info,
    run_dir,
    run_key,
)
from pipeline.runs.params import TrainParams
from pipeline.segment.contract import load_segments
from pipeline.train.families import train_all
from pipeline.train.grid import RATE_PARAM, GridParams, extra_rates
from tests.test_train_evaluate import DIMS, make_segments

REPO = Path(__file__).resolve().parents[1]
FAMILY = "crossmodal/clip_zero"
# tiny and quick: 2 seeds × 2 epochs; the configured rate 0.5 (002 §3.3) plus 0.2 and 0.8 (0.5 listed
# again: it is the family's own run, never trained twice)
PARAMS = TrainParams(
    modalities=list(DIMS), seeds=[0, 1], epochs=2, batch_size=16, lr=3e-3, patience=2, strategies=["clip_zero"],
    model_params={"crossmodal": {"d_model": 8, "layers": 1, "heads": 2}},
    strategy_params={"clip_zero": {"modalities": ["a"], "p_clip": 0.5}},
)
RATES = {"clip_zero": [0.2, 0.5, 0.8]}
CONDITIONS = EvaluateParams(conditions=["all_present", "each_missing", "clip_zero_grid"])


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "segments"
    make_segments(n=40).save(d)
    return load_segments(d)


@pytest.fixture(scope="module")
def trained(segments, tmp_path_factory, one_torch_thread):
    plain, rated = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("rated")
    return (plain, train_all(segments, PARAMS, plain, device="cpu", progress=False),
            rated, train_all(segments, PARAMS, rated, device="cpu", progress=False, rates=RATES))


def test_every_rate_trains_in_its_folder_and_the_configured_runs_stay(trained):
    plain, s_plain, rated, s_rated = trained
    assert list(s_plain[FAMILY]) == ["seed_0", "seed_1"]
    assert list(s_rated[FAMILY]) == ["seed_0", "seed_1", "rate_0.2/seed_0", "rate_0.2/seed_1", "rate_0.8/seed_0", "rate_0.8/seed_1"]
    for seed in (0, 1):  # the family's own runs: byte-identical to a training without grid.rates
        for f in (MODEL_FILE, "history.csv"):
            a, b = run_dir(plain, "crossmodal", "clip_zero", seed) / f, run_dir(rated, "crossmodal", "clip_zero", seed) / f
            assert a.read_bytes() == b.read_bytes(), f
    for rate in (0.2, 0.8):
        info = read_trained_info(run_dir(rated, "crossmodal", "clip_zero", 0, rate=rate) / MODEL_FILE)
        assert info["params"].strategy_params["clip_zero"] == {"modalities": ["a"], "p_clip": rate}
        assert robustness.train_rate(info) == ("p_clip", rate, "clip_zero")
    assert not (rated / "crossmodal" / "clip_zero" / "rate_0.5").exists()
    # the same seed at another rate: other clips zeroed in training, other weights
    a, b = (torch.load(run_dir(rated, "crossmodal", "clip_zero", 0, rate=r) / MODEL_FILE, weights_only=True)["state_dict"]
            for r in (0.2, 0.8))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_find_trained_sees_the_rates_only_when_asked(trained):
    _, _, rated, _ = trained
    own = find_trained(rated)
    assert [(r.name, r.seed, r.rate) for r in own] == [(FAMILY, 0, None), (FAMILY, 1, None)]
    every = find_trained(rated, rates=True)
    assert [(r.name, r.seed, r.rate) for r in every] == [
        (FAMILY, 0, None), (FAMILY, 1, None), (FAMILY, 0, 0.2), (FAMILY, 1, 0.2), (FAMILY, 0, 0.8), (FAMILY, 1, 0.8)]
    name, seed, path = every[2]  # still a (name, seed, path) triple
    assert path == run_dir(rated, "crossmodal", "clip_zero", 0, rate=0.2) / MODEL_FILE
    assert run_key(3, 1, 0.25) == "rate_0.25/fold_1/seed_3" and run_key(3) == "seed_3"
    assert [r.rate for r in find_trained(rated, fold=1, rates=True)] == []


def test_find_trained_under_folds(tmp_path):
    for key in ("fold_0/seed_0", "fold_1/seed_0", "rate_0.25/fold_1/seed_0", "rate_0.75/fold_1/seed_2", "rate_x/fold_1/seed_0"):
        (tmp_path / "m" / "clip_zero" / key).mkdir(parents=True)
        (tmp_path / "m" / "clip_zero" / key / MODEL_FILE).touch()
    runs = find_trained(tmp_path, fold=1, rates=True)
    assert [(r.name, r.seed, r.rate, r.path.relative_to(tmp_path / "m" / "clip_zero").parent.as_posix()) for r in runs] == [
        ("m/clip_zero", 0, None, "fold_1/seed_0"), ("m/clip_zero", 0, 0.25, "rate_0.25/fold_1/seed_0"),
        ("m/clip_zero", 2, 0.75, "rate_0.75/fold_1/seed_2")]
    assert [r.rate for r in find_trained(tmp_path, fold=1)] == [None]
    assert run_dir(tmp_path, "m", "clip_zero", 2, 1, 0.75) == runs[2].path.parent


def test_evaluate_builds_the_matrix_from_every_rate_and_the_headline_from_the_family(segments, trained, tmp_path):
    plain, _, rated, _ = trained
    a = evaluate_all(segments, plain, CONDITIONS, tmp_path / "a", tmp_path / "a.json", device="cpu", progress=False, only=FAMILY)
    b = evaluate_all(segments, rated, CONDITIONS, tmp_path / "b", tmp_path / "b.json", device="cpu", progress=False, only=FAMILY)
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    for f in ("results.csv", "summary.csv", "predictions.csv", "scorecard.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    tt = pl.read_csv(tmp_path / "b" / "train_test.csv")
    assert sorted(tt["train_rate"].unique().to_list()) == [0.2, 0.5, 0.8]
    assert set(tt["model"]) == {FAMILY} and set(tt["train_param"]) == {"p_clip"} and set(tt["n_seeds"]) == {2}
    # the configured rate's rows are those of the evaluation without grid.rates
    alone = pl.read_csv(tmp_path / "a" / "train_test.csv")
    assert alone["train_rate"].unique().to_list() == [0.5]
    assert tt.filter(pl.col("train_rate") == 0.5).equals(alone)
    # a rate run's cell is the seed mean of its own scores: test rate 0 is its all-present macro-F1
    res = b.results  # the family's runs only
    assert set(res["model"]) == {FAMILY}
    cells = tt.filter((pl.col("train_rate") == 0.8) & (pl.col("test_rate") == 0.0))
    assert cells.height == len(DIMS) and cells["mean"].n_unique() == 1  # one clean score under every modality's curve
    assert sorted(tt.filter(pl.col("train_rate") == 0.8)["test_rate"].unique().to_list()) == [0.0, 0.3, 0.5, 0.7, 1.0]


def test_rate_validation_names_the_key():
    ok = GridParams(models=["crossmodal"], strategies=["standard", "clip_zero"], rates={"standard": [], "clip_zero": [0.1, 0.9]})
    assert ok.rates["clip_zero"] == [0.1, 0.9]
    assert GridParams(strategies=["standard", "clip_zero"]).rates == {}  # no key: nothing extra
    cases = {
        "rates.clip_zero.0": {"standard": [], "clip_zero": [1.5]},
        "rates.standard": {"standard": [0.3], "clip_zero": []},
        "rates.frame_zero": {"standard": [], "clip_zero": [], "frame_zero": [0.2]},
        "rates.clip_zro": {"standard": [], "clip_zero": [], "clip_zro": []},
        "rates: lacks an entry for ['standard']": {"clip_zero": [0.2]},
        "lists a rate twice": {"standard": [], "clip_zero": [0.2, 0.2]},
    }
    for key, rates in cases.items():
        with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
            GridParams(models=["crossmodal"], strategies=["standard", "clip_zero"], rates=rates)
    # an empty entry for a strategy out of the grid is fine (params.yaml lists every strategy)
    GridParams(strategies=["standard"], rates={"standard": [], "dynamic": []})
    with pytest.raises(TrainError, match=r"grid\.rates\.standard: strategy 'standard' has no training missing rate"):
        extra_rates(TrainParams(), "standard", [0.2])
    assert extra_rates(PARAMS, "clip_zero", [0.5, 0.1]) == [0.1]


def test_params_yaml_rates_one_line_per_edit_and_errors_name_the_key(tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    grid = load_section("grid", path)
    assert set(grid.strategies) <= set(grid.rates)
    # the demo trains clip_zero at two more rates (the report's heat map), nothing else
    assert grid.rates["clip_zero"] == [0.2, 0.8] and not any(v for k, v in grid.rates.items() if k != "clip_zero")
    apply_overrides(str(path), ["grid.rates.clip_zero=[0.1,0.3]"])
    assert load_section("grid", path).rates["clip_zero"] == [0.1, 0.3]
    data = yaml.safe_load(path.read_text())
    data["grid"]["rates"]["standard"] = [0.3]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"grid\.rates\.standard: strategy 'standard' has no training missing rate"):
        load_section("grid", path)


def test_one_to_one_trains_a_model_per_rate_and_the_matrix_holds_its_diagonal(segments, tmp_path, one_torch_thread):
    """003 §6's one-to-one training: one model per missing rate (grid.rates.one_to_one), each tested at every
    rate of random_missing; the train_test.csv diagonal (train rate = test rate) is the one-to-one curve."""
    params = PARAMS.model_copy(update={"strategies": ["one_to_one"], "seeds": [0], "strategy_params": {"one_to_one": {"p_miss": 0.5}}})
    summaries = train_all(segments, params, tmp_path / "m", device="cpu", progress=False, rates={"one_to_one": [0.0, 0.3]})
    assert list(summaries["crossmodal/one_to_one"]) == ["seed_0", "rate_0/seed_0", "rate_0.3/seed_0"]
    again = train_all(segments, params, tmp_path / "again", device="cpu", progress=False, rates={"one_to_one": [0.3]})
    assert again["crossmodal/one_to_one"]["rate_0.3/seed_0"] == summaries["crossmodal/one_to_one"]["rate_0.3/seed_0"]
    assert (run_dir(tmp_path / "m", "crossmodal", "one_to_one", 0, rate=0.3) / MODEL_FILE).read_bytes() == \
        (run_dir(tmp_path / "again", "crossmodal", "one_to_one", 0, rate=0.3) / MODEL_FILE).read_bytes()
    conditions = EvaluateParams(conditions=["all_present", "random_missing_grid"])
    evaluate_all(segments, tmp_path / "m", conditions, tmp_path / "e", tmp_path / "e.json", device="cpu", progress=False)
    tt = pl.read_csv(tmp_path / "e" / "train_test.csv").filter(pl.col("test_modality") == "all")
    assert sorted(tt["train_rate"].unique().to_list()) == [0.0, 0.3, 0.5]
    assert set(tt["train_param"]) == {"p_miss"} and set(tt["test_family"]) == {"random_missing"}
    diagonal = tt.filter(pl.col("train_rate") == pl.col("test_rate")).sort("train_rate")
    assert diagonal["train_rate"].to_list() == [0.0, 0.3, 0.5]


def test_the_rate_parameters_are_evaluations():
    assert RATE_PARAM == {s: p for s, (p, _) in robustness.TRAIN_RATE_PARAM.items()}


def test_dvc_yaml_train_stage_lists_its_strategys_rates_only():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["params"] == ["train", "model.${item.model}", "strategy.${item.strategy}", "grid.rates.${item.strategy}"]
    assert not any(str(p).startswith("grid") for p in stages["train_eliminate"]["do"]["params"])
