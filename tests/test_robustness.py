"""The robustness scorecard (pipeline.evaluate.robustness) and its headline figures, on hand-computed curves."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from pipeline.evaluate import robustness as rb
from pipeline.evaluate.grid import condition_columns, headline_metrics
from pipeline.missing import parse_conditions

RATES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_relative_robustness_is_the_mean_score_over_the_rate_range():
    r = np.linspace(0, 1, 11)
    assert rb.relative_robustness(r, 0.8 - 0.4 * r) == pytest.approx(0.6)  # linear 0.8 → 0.4
    r9 = np.asarray(RATES)
    assert rb.relative_robustness(r9, 0.8 - 0.4 * r9) == pytest.approx(0.8 - 0.4 * 0.45)  # 003's grid 0–0.9
    assert rb.relative_robustness([0, 0.3, 0.6, 0.9], [0.7] * 4) == pytest.approx(0.7)  # flat: the score
    # trapezoids on an uneven grid: (0.8+0.6)/2·0.5 + (0.6+0.1)/2·0.25 over 0.75
    assert rb.relative_robustness([0, 0.5, 0.75], [0.8, 0.6, 0.1]) == pytest.approx((0.35 + 0.0875) / 0.75)
    with pytest.raises(rb.RobustnessError, match="increase"):
        rb.relative_robustness([0, 0.5, 0.5], [1, 1, 1])
    with pytest.raises(rb.RobustnessError, match=">= 2"):
        rb.relative_robustness([0], [1])


def test_effective_robustness_is_the_gain_over_shifted_late_fusion():
    r = np.linspace(0, 1, 11)
    model, late = 0.8 - 0.2 * r, 0.7 - 0.4 * r  # late fusion shifted up by 0.1: 0.8 − 0.4 r; gap 0.2 r
    assert rb.effective_robustness(r, model, late) == pytest.approx(0.1)
    assert rb.effective_robustness(r, late + 0.05, late) == pytest.approx(0.0)  # same slope, other clean score
    assert rb.effective_robustness(r, late, late) == 0.0
    with pytest.raises(rb.RobustnessError, match="reference"):
        rb.effective_robustness(r, model, late[:5])


def _summary(curves: dict[str, dict[str, list[float]]], clean: dict[str, float]) -> pl.DataFrame:
    """A summary.csv-like table: per model all_present and random_missing curves (per modality key)."""
    rows = []
    for model, by_mod in curves.items():
        rows.append({"model": model, "condition": "all_present", "family": "all_present", "modality": "all", "level": None,
                     "metric": "macro_f1", "mean": clean[model]})
        rows.append({"model": model, "condition": "all_present", "family": "all_present", "modality": "all", "level": None,
                     "metric": "accuracy", "mean": 0.123})
        for key, scores in by_mod.items():
            family, mod = key.split(":") if ":" in key else ("random_missing", key)
            rates = RATES if family == "random_missing" else [0.3, 0.6, 0.9]
            for lv, s in zip(rates, scores):
                rows.append({"model": model, "condition": f"{family}:{mod}@{lv}", "family": family, "modality": mod,
                             "level": lv, "metric": "macro_f1", "mean": s})
    return pl.DataFrame(rows, schema={"model": pl.String, "condition": pl.String, "family": pl.String, "modality": pl.String,
                                      "level": pl.Float64, "metric": pl.String, "mean": pl.Float64})


def _lin(a: float, b: float, rates=RATES) -> list[float]:
    return [a + b * r for r in rates]


def test_scorecard_does_not_depend_on_the_other_models():
    two = {"crossmodal/standard": {"all": _lin(0.8, -0.3)}, "late_fusion_lstm/standard": {"all": _lin(0.7, -0.5)}}
    clean = {"crossmodal/standard": 0.8, "late_fusion_lstm/standard": 0.7, "mult/standard": 0.95}
    card = rb.scorecard(_summary(two, clean), "macro_f1")
    three = rb.scorecard(_summary({**two, "mult/standard": {"all": _lin(0.95, -0.9)}}, clean), "macro_f1")
    mine = lambda c: c.filter(pl.col("model") == "crossmodal/standard").sort("figure").rows()  # noqa: E731
    assert mine(card) == mine(three)
    got = {r["figure"]: r for r in card.filter(pl.col("model") == "crossmodal/standard").iter_rows(named=True)}
    assert got["relative_robustness"]["value"] == pytest.approx(0.8 - 0.3 * 0.45)
    # gap to late fusion shifted to 0.8: (−0.3 + 0.5)·r → mean over [0, 0.9] = 0.2 · 0.45
    assert got["effective_robustness"]["value"] == pytest.approx(0.2 * 0.45)
    assert got["effective_robustness"]["reference"] == "late_fusion_lstm/standard"
    # the reference's own effective robustness is 0; without a reference there is no ER row
    ref = card.filter((pl.col("model") == "late_fusion_lstm/standard") & (pl.col("figure") == "effective_robustness"))
    assert ref["value"][0] == pytest.approx(0.0)
    alone = rb.scorecard(_summary({"crossmodal/standard": two["crossmodal/standard"]}, clean), "macro_f1")
    assert alone["figure"].to_list() == ["relative_robustness"]


def test_curves_take_the_clean_point_from_all_present():
    s = _summary({"m/standard": {"burst:all": [0.6, 0.4, 0.2]}}, {"m/standard": 0.8})
    (key, (rates, scores)), = rb.curves(s, "macro_f1").items()
    assert key == ("m/standard", "burst", "all") and rates == [0.0, 0.3, 0.6, 0.9] and scores == [0.8, 0.6, 0.4, 0.2]
    card = rb.scorecard(s, "macro_f1")
    # trapezoids over 0, 0.3, 0.6, 0.9 of a linear curve 0.8 → 0.2: its mean 0.5
    assert card["value"][0] == pytest.approx(0.5)


def test_reference_prefers_the_same_strategy():
    models = ["late_fusion_lstm/clip_zero", "late_fusion_lstm/standard", "x/clip_zero", "x/dynamic"]
    assert rb.reference_for("x/clip_zero", models) == "late_fusion_lstm/clip_zero"
    assert rb.reference_for("x/dynamic", models) == "late_fusion_lstm/standard"
    assert rb.reference_for("x/dynamic", ["late_fusion_lstm/frame_zero"]) == "late_fusion_lstm/frame_zero"
    assert rb.reference_for("x/dynamic", ["x/standard"]) is None


def test_headline_metrics_carry_the_scorecard():
    mods = ["a", "b"]
    conditions = parse_conditions(["all_present", "random_missing_grid", "imbalanced_grid", "mnar_grid", "burst_grid",
                                   "one_present_grid"], mods)
    score = {"all_present": 0.9}
    for c in conditions:
        if c.level is not None:
            # imbalanced: 'a' heavy loses 0.5 per unit rate, 'b' heavy 0.1; the others 0.2
            slope = {"imbalanced": 0.5 if c.modality == "a" else 0.1}.get(c.family, 0.2)
            score[c.name] = 0.9 - slope * c.level
    rows = [{"model": "m/standard", "condition": c.name, **condition_columns(c), "metric": "macro_f1", "mean": score[c.name]}
            for c in conditions]
    summary = pl.DataFrame(rows, schema_overrides={"level": pl.Float64})
    head = headline_metrics(summary, conditions, "macro_f1")["macro_f1"]
    assert head["all_present"] == 0.9 and head["auilc"] == pytest.approx(0.9 * 0.9 - 0.2 * 0.81 / 2, abs=1e-6)
    assert head["relative_robustness"] == pytest.approx(0.9 - 0.2 * 0.45, abs=1e-6)
    assert head["auc_imbalanced"] == pytest.approx(((0.9 - 0.5 * 0.45) + (0.9 - 0.1 * 0.45)) / 2, abs=1e-6)
    for mech in ("mnar", "burst", "one_present"):
        assert head[f"auc_{mech}"] == pytest.approx(0.9 - 0.2 * 0.45, abs=1e-6)
    assert "effective_robustness" not in head  # no late-fusion reference evaluated with it


def test_compare_to_runs_paired_tests_with_holm():
    rng = np.random.default_rng(0)
    rows = []
    base = rng.normal(0.5, 0.02, 5)
    for model, shift in (("late_fusion_lstm/standard", 0.0), ("a/standard", 0.05), ("b/standard", 0.001)):
        for seed, v in enumerate(base + shift + rng.normal(0, 0.01, 5)):
            rows.append({"model": model, "fold": 0, "seed": seed, "figure": "relative_robustness", "family": "random_missing",
                         "modality": "all", "reference": None, "value": float(v)})
    card = pl.DataFrame(rows)
    out = rb.compare_to(card, "late_fusion_lstm/standard")
    assert out["model"].to_list() == ["a/standard", "b/standard"]
    lf = card.filter(pl.col("model") == "late_fusion_lstm/standard")["value"].to_numpy()
    p = {m: sps.ttest_rel(card.filter(pl.col("model") == m)["value"].to_numpy(), lf, alternative="greater").pvalue
         for m in ("a/standard", "b/standard")}
    got = {r["model"]: r for r in out.iter_rows(named=True)}
    assert got["a/standard"]["p"] == pytest.approx(p["a/standard"]) and got["b/standard"]["p"] == pytest.approx(p["b/standard"])
    # Holm with two tests: the smaller p doubled, the larger max(itself, that)
    lo, hi = sorted(p.values())
    assert sorted(out["p_holm"].to_list()) == pytest.approx([min(1, 2 * lo), min(1, max(hi, 2 * lo))])
    assert got["a/standard"]["significant"] and got["a/standard"]["n"] == 5


def test_train_rate_reads_the_strategy_params():
    info = lambda s, sp: {"strategy": s, "params": SimpleNamespace(strategy_params=sp)}  # noqa: E731
    assert rb.train_rate(info("clip_zero", {"clip_zero": {"p_clip": 0.3}})) == ("p_clip", 0.3, "clip_zero")
    assert rb.train_rate(info("clip_zero", {})) == ("p_clip", 0.5, "clip_zero")  # 002 §3.3's default
    assert rb.train_rate(info("dynamic", {})) == ("p_miss", 0.2, "random_missing")
    assert rb.train_rate(info("standard", {})) is None


def test_train_test_matrix_pairs_training_and_test_rates(tmp_path):
    rows = []
    for seed, train_rate in ((0, 0.3), (1, 0.3), (2, 0.7)):
        rows.append(("m/clip_zero", 0, seed, "all_present", "all_present", "all", None, 0.8 + seed / 100))
        for p in (0.5, 1.0):
            rows.append(("m/clip_zero", 0, seed, f"clip_zero:a@{p}", "clip_zero", "a", p, 0.8 - train_rate * p + seed / 100))
        rows.append(("m/clip_zero", 0, seed, "random_missing@0.5", "random_missing", "all", 0.5, 0.1))  # not the matching family
    results = pl.DataFrame(rows, schema=["model", "fold", "seed", "condition", "family", "modality", "level", "value"], orient="row")
    results = results.with_columns(pl.lit("macro_f1").alias("metric"))
    runs = pl.DataFrame({"model": ["m/clip_zero"] * 3, "fold": [0] * 3, "seed": [0, 1, 2], "strategy": ["clip_zero"] * 3,
                         "train_param": ["p_clip"] * 3, "train_rate": [0.3, 0.3, 0.7]})
    mat = rb.train_test_matrix(results, runs, "macro_f1")
    assert mat.columns == list(rb.TRAIN_TEST_COLUMNS)
    assert set(mat["test_family"]) == {"clip_zero"}
    cell = {(r["train_rate"], r["test_rate"]): r for r in mat.iter_rows(named=True)}
    assert set(cell) == {(0.3, 0.0), (0.3, 0.5), (0.3, 1.0), (0.7, 0.0), (0.7, 0.5), (0.7, 1.0)}
    assert cell[(0.3, 0.5)]["mean"] == pytest.approx(0.8 - 0.15 + 0.005) and cell[(0.3, 0.5)]["n_seeds"] == 2
    assert cell[(0.7, 1.0)]["mean"] == pytest.approx(0.8 - 0.7 + 0.02) and cell[(0.7, 0.0)]["mean"] == pytest.approx(0.82)
    # experiments combine; a cell given twice is an error naming both files
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    mat.filter(pl.col("train_rate") == 0.3).write_csv(a)
    mat.filter(pl.col("train_rate") == 0.7).write_csv(b)
    assert rb.read_train_test([a, b]).height == mat.height
    with pytest.raises(rb.RobustnessError, match="also in"):
        rb.read_train_test([a, a])
    assert rb.train_test_matrix(results, runs.clear(), "macro_f1").height == 0


def test_evaluate_applies_mechanisms_with_the_segments_context():
    from pipeline.evaluate.grid import apply_conditions

    rng = np.random.default_rng(3)
    n, t = 8, 10
    length = np.array([10, 4, 7, 10, 3, 9, 6, 10])
    valid = np.arange(t)[None, :] < length[:, None]
    mean, std = {"a": np.array([5.0, 5.0], np.float32)}, {"a": np.array([2.0, 2.0], np.float32)}
    seg = SimpleNamespace(valid=lambda m: valid, mean=mean, std=std)
    x = {"a": np.where(valid[..., None], rng.normal(size=(n, t, 2)), 0).astype(np.float32)}
    split = SimpleNamespace(idx=np.arange(n), x=x, mask={"a": valid.copy()}, valid=None)
    applied = apply_conditions(parse_conditions(["burst@0.5", "mnar@0.5"], ["a"]), split, seg)
    burst_mask, mnar_mask = applied["burst@0.5"][1]["a"], applied["mnar@0.5"][1]["a"]
    # bursts cover exactly half of each sequence's valid steps; padding stays absent
    assert np.array_equal((valid & ~burst_mask).sum(axis=1), np.floor(0.5 * length + 0.5 + 1e-9))
    assert not (burst_mask & ~valid).any() and not (mnar_mask & ~valid).any()
    # mnar used the segments' statistics: the dropped steps have the lowest raw strength
    strength = np.linalg.norm((x["a"] * 2 + 5) / np.sqrt(29), axis=-1)
    for i in range(n):
        gone, kept = valid[i] & ~mnar_mask[i], mnar_mask[i]
        assert strength[i][gone].max() <= strength[i][kept].min()
    # a Split that carries its own valid steps wins over the segments'
    split.valid = {"a": np.ones((n, t), bool)}
    wide = apply_conditions(parse_conditions(["burst@0.5"], ["a"]), split, seg)["burst@0.5"][1]["a"]
    assert np.array_equal((valid & ~wide).sum(axis=1) <= np.floor(0.5 * t + 0.5), np.ones(n, bool))


def test_stage_prints_one_summary_line():
    from stages.evaluate import summary_line

    results = pl.DataFrame({"fold": [0, 0, 0, 0], "seed": [0, 0, 1, 1], "condition": ["all_present", "missing:a"] * 2})
    line = summary_line("m/standard", results, {"macro_f1": {"all_present": 0.61234, "relative_robustness": 0.5}})
    assert line == "m/standard: 2 runs × 2 conditions; macro_f1: all_present 0.612, relative_robustness 0.500"
    assert "\n" not in line


def test_scorecard_across_families_read_from_their_files(tmp_path):
    clean = {"crossmodal/standard": 0.8, "late_fusion_lstm/standard": 0.7}
    paths = []
    for model, slope in (("crossmodal/standard", -0.3), ("late_fusion_lstm/standard", -0.5)):
        p = tmp_path / f"{model.replace('/', '-')}.csv"
        _summary({model: {"all": _lin(clean[model], slope)}}, clean).write_csv(p)
        paths.append(p)
    card = rb.scorecard(rb.read_tables(paths), "macro_f1")
    er = card.filter((pl.col("model") == "crossmodal/standard") & (pl.col("figure") == "effective_robustness"))
    assert er["value"][0] == pytest.approx(0.2 * 0.45) and er["reference"][0] == "late_fusion_lstm/standard"
