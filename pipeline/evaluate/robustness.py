"""The robustness scorecard: one number per score-vs-missing-rate curve, comparable across models and
experiments (docs/robustness.md gives every figure with its formula and source).

A *curve* is a model's score (the selection metric: macro-F1, or mean CCC) against the missing rate
of one condition family and modality — `random_missing` (003 §5.5), and the mechanisms beyond MCAR of
`pipeline.missing.conditions` (`imbalanced`, `mnar`, `burst`, `one_present`), whose level is a
missing rate (or share of steps made missing). The clean point (rate 0) is the `all_present` score
when the grid does not hold rate 0 itself.

Figures (MultiBench, Liang et al. 2021, §3 "Robustness" and its eval_scripts/robustness.py; effective
robustness after Taori et al. 2020):

    relative robustness  RR(f) = 1/(r_K − r_0) · Σ_k (s_k + s_{k+1})/2 · (r_{k+1} − r_k)
                         the trapezoid area under the curve s(r) over its rates r_0 < … < r_K,
                         divided by the rate range: the mean score over the range, in the metric's
                         units (a linear curve from 0.8 at r = 0 to 0.4 at r = 1 gives 0.6).
    effective robustness ER(f) = RR of the gap s_f(r) − [s_LF(r) − s_LF(r_0) + s_f(r_0)]
                         the mean gain over the late-fusion reference LF shifted to the same clean
                         score; ER > 0: f degrades more slowly than late fusion.

MultiBench's code sums the gaps over its 11 levels instead of averaging them and then min-max
normalises RR and ER over the set of methods compared; here neither is done, so a model's figure
depends on its own curve (and the reference's) only — adding a model changes nobody else's.

The late-fusion reference is the `late_fusion_lstm` model (000's late-fusion baseline) when it was
evaluated: `late_fusion_lstm/<same strategy>`, else `late_fusion_lstm/standard`, else the first
`late_fusion_lstm/*` by name. Without one, ER is not available (absent, not a guessed number).

Across run families (each DVC stage evaluates one): `scorecard(read_tables([...summary.csv]), metric)`
gives every family's figures, with effective robustness wherever the late-fusion family is among them.

The train-rate × test-rate matrix (`train_test_matrix`): runs of a strategy with a training missing
rate (clip_zero's p_clip, frame_zero's and frame_repeat's p_frame, dynamic's p_miss) scored at each
test level of the matching condition family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import polars as pl

from pipeline.core.errors import PipelineError
from pipeline.evaluate import stats

REFERENCE_MODEL = "late_fusion_lstm"
# condition families whose level is a missing rate (share of steps made missing) — the curves
CURVE_FAMILIES = ("random_missing", "imbalanced", "mnar", "burst", "one_present")
MECHANISMS = ("imbalanced", "mnar", "burst", "one_present")
HEADLINE_CURVE = ("random_missing", "all")  # relative/effective robustness in the headline metrics
# training strategy → (its training-rate parameter, the condition family that tests the same kind of missingness)
TRAIN_RATE_PARAM: dict[str, tuple[str, str]] = {
    "clip_zero": ("p_clip", "clip_zero"),
    "frame_zero": ("p_frame", "frame_zero"),
    "frame_repeat": ("p_frame", "frame_repeat"),
    "dynamic": ("p_miss", "random_missing"),
    "one_to_one": ("p_miss", "random_missing"),
}
SCORECARD_COLUMNS = ("figure", "family", "modality", "reference", "value")
TRAIN_TEST_COLUMNS = ("model", "strategy", "train_param", "train_rate", "test_family", "test_modality", "test_rate",
                      "metric", "mean", "std", "n_seeds")


class RobustnessError(PipelineError, ValueError):
    """A curve that cannot be scored (too few points, rates not increasing, grids that differ…)."""


def curve_area(rates: Sequence[float], scores: Sequence[float]) -> float:
    """Relative robustness of one curve: trapezoid area under scores(rates) divided by the rate range,
    RR = 1/(r_K − r_0) · Σ_k (s_k + s_{k+1})/2 · (r_{k+1} − r_k) (MultiBench §3; normalised so that the
    figure is the mean score over the range, whatever the grid)."""
    r, s = np.asarray(rates, float), np.asarray(scores, float)
    if r.ndim != 1 or r.shape != s.shape or r.size < 2:
        raise RobustnessError(f"a robustness curve needs two 1-D sequences of one length >= 2, got {r.shape} and {s.shape}")
    if not np.all(np.diff(r) > 0):
        raise RobustnessError(f"missing rates must increase, got {r.tolist()}")
    if not np.all(np.isfinite(s)):
        raise RobustnessError("robustness of non-finite scores")
    return float(np.trapezoid(s, r) / (r[-1] - r[0]))


relative_robustness = curve_area


def effective_robustness(rates: Sequence[float], scores: Sequence[float], reference: Sequence[float]) -> float:
    """ER = RR of s(r) − [s_ref(r) − s_ref(r_0) + s(r_0)]: the mean gain over the reference curve
    (late fusion) shifted to the same clean score (MultiBench §3 after Taori et al. 2020). `reference`
    holds the reference's scores at the same `rates`."""
    s, ref = np.asarray(scores, float), np.asarray(reference, float)
    if ref.shape != s.shape:
        raise RobustnessError(f"effective robustness: the reference curve has {ref.shape} points, the model's {s.shape}")
    return curve_area(rates, s - (ref - ref[0] + s[0]))


def reference_for(model: str, models: Iterable[str], reference: str = REFERENCE_MODEL) -> str | None:
    """The late-fusion run family `model` ("<model>/<strategy>") is compared with among `models`:
    <reference>/<same strategy>, else <reference>/standard, else the first <reference>/* by name."""
    have = sorted(m for m in models if m.split("/", 1)[0] == reference)
    strategy = model.split("/", 1)[1] if "/" in model else "standard"
    for want in (f"{reference}/{strategy}", f"{reference}/standard"):
        if want in have:
            return want
    return have[0] if have else None


def curves(table: pl.DataFrame, metric: str, by: Sequence[str] = ("model",), value: str = "mean") -> dict[tuple, tuple[list[float], list[float]]]:
    """{(*by, family, modality): (rates, scores)} of every curve family in a tidy evaluation table
    (summary.csv with value "mean", or results.csv with by ("model", "fold", "seed") and value
    "value"), rates increasing; the `all_present` score is the rate-0 point where the grid lacks one.
    Curves with fewer than two points are left out."""
    rows = table.filter(pl.col("metric") == metric)
    clean = {tuple(r[k] for k in by): float(r[value]) for r in rows.filter(pl.col("family") == "all_present").iter_rows(named=True)}
    points: dict[tuple, dict[float, float]] = {}
    for r in rows.filter(pl.col("family").is_in(CURVE_FAMILIES) & pl.col("level").is_not_null()).iter_rows(named=True):
        key = (*(r[k] for k in by), r["family"], r["modality"])
        points.setdefault(key, {})[round(float(r["level"]), 9)] = float(r[value])
    out = {}
    for key, pts in points.items():
        base = key[: len(by)]
        if 0.0 not in pts and base in clean:
            pts[0.0] = clean[base]
        if len(pts) >= 2:
            rates = sorted(pts)
            out[key] = (rates, [pts[r] for r in rates])
    return out


def scorecard(table: pl.DataFrame, metric: str, by: Sequence[str] = ("model",), value: str = "mean",
              reference: str = REFERENCE_MODEL) -> pl.DataFrame:
    """The scorecard as a tidy table: *by, figure, family, modality, reference, value — for every curve
    (`curves`) its relative robustness, and its effective robustness where the reference family
    (`reference_for`) has the same curve on the same rates (reference: its name; else no row). Per
    replicate (by model, fold, seed) the reference is its seed-mean curve, so a replicate's ER varies
    with the model's own seed only. A model's figures depend on its own curves and the reference's,
    never on which other models are in the table."""
    cs = curves(table, metric, by, value)
    models = {k[0] for k in cs}
    ref_mean: dict[tuple, tuple[list[float], list[float]]] = {}
    if any(reference_for(m, models, reference) for m in models):
        ref_mean = curves(_seed_mean(table, by, value), metric, ("model",), "mean") if tuple(by) != ("model",) or value != "mean" else cs
    rows: list[dict[str, Any]] = []
    for key, (rates, scores) in cs.items():
        ids, family, modality = key[: len(by)], key[-2], key[-1]
        base = dict(zip(by, ids))
        rows.append({**base, "figure": "relative_robustness", "family": family, "modality": modality, "reference": None,
                     "value": relative_robustness(rates, scores)})
        ref = reference_for(ids[0], models, reference)
        ref_curve = ref_mean.get((ref, family, modality)) if ref else None
        if ref_curve is not None and len(ref_curve[0]) == len(rates) and np.allclose(ref_curve[0], rates, atol=1e-9):
            rows.append({**base, "figure": "effective_robustness", "family": family, "modality": modality, "reference": ref,
                         "value": effective_robustness(rates, scores, ref_curve[1])})
    schema = {**{k: (pl.Int64 if k in ("fold", "seed") else pl.String) for k in by},
              "figure": pl.String, "family": pl.String, "modality": pl.String, "reference": pl.String, "value": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _seed_mean(table: pl.DataFrame, by: Sequence[str], value: str) -> pl.DataFrame:
    return (table.group_by(["model", "condition", "family", "modality", "level", "metric"], maintain_order=True)
            .agg(pl.col(value).mean().alias("mean")))


def headline_figures(card: pl.DataFrame, model: str) -> dict[str, float]:
    """The scorecard's headline numbers of one model (a seed-mean scorecard, by ("model",)):
    relative_robustness and effective_robustness of the all-modality random-missing curve (003's grid),
    and auc_<mechanism> = the mean relative robustness of that mechanism's curves (one per modality
    for imbalanced and one_present, one for mnar and burst). Keys are absent where the curve is."""
    rows = card.filter(pl.col("model") == model)
    out: dict[str, float] = {}
    fam, mod = HEADLINE_CURVE
    for figure in ("relative_robustness", "effective_robustness"):
        hit = rows.filter((pl.col("figure") == figure) & (pl.col("family") == fam) & (pl.col("modality") == mod))
        if hit.height:
            out[figure] = float(hit["value"][0])
    rr = rows.filter(pl.col("figure") == "relative_robustness")
    for mech in MECHANISMS:
        vals = rr.filter(pl.col("family") == mech)["value"]
        if len(vals):
            out[f"auc_{mech}"] = float(vals.mean())
    return out


def compare_to(card: pl.DataFrame, baseline: str, higher_is_better: bool = True, alpha: float = stats.ALPHA) -> pl.DataFrame:
    """Paired t-tests of every model's scorecard figures against `baseline`'s, on a per-replicate
    scorecard (by model, fold, seed): per (figure, family, modality), one-sided tests "model better
    than baseline" paired by (fold, seed) (`stats.paired_ttest`), Holm-corrected across the models
    (000 §6.1, `stats.holm`). Columns: figure, family, modality, model, baseline, n, mean_diff, p,
    p_holm, significant. Figures with fewer than two shared replicates are left out."""
    rows: list[dict[str, Any]] = []
    for (figure, family, modality), part in card.group_by(["figure", "family", "modality"], maintain_order=True):
        per = {m: {(r["fold"], r["seed"]): r["value"] for r in g.iter_rows(named=True)} for (m,), g in part.group_by(["model"], maintain_order=True)}
        if baseline not in per:
            continue
        tests = {}
        for m, scores in per.items():
            shared = sorted(set(scores) & set(per[baseline]))
            if m == baseline or len(shared) < 2:
                continue
            tests[m] = (len(shared), stats.paired_ttest([scores[k] for k in shared], [per[baseline][k] for k in shared],
                                                        "greater" if higher_is_better else "less"))
        reject, adjusted = stats.holm({m: t.p for m, (_, t) in tests.items()}, alpha)
        rows += [{"figure": figure, "family": family, "modality": modality, "model": m, "baseline": baseline, "n": n,
                  "mean_diff": t.mean_diff, "p": t.p, "p_holm": adjusted[m], "significant": reject[m]} for m, (n, t) in tests.items()]
    return pl.DataFrame(rows, schema={"figure": pl.String, "family": pl.String, "modality": pl.String, "model": pl.String,
                                      "baseline": pl.String, "n": pl.Int64, "mean_diff": pl.Float64, "p": pl.Float64,
                                      "p_holm": pl.Float64, "significant": pl.Boolean})


def train_rate(info: Mapping[str, Any]) -> tuple[str, float, str] | None:
    """(parameter, training missing rate, matching test family) of a trained run's info (model.pt), or
    None for a strategy without a training rate. The rate is the strategy's validated params (its
    paper default when params.yaml left it unset)."""
    strategy = info.get("strategy")
    if strategy not in TRAIN_RATE_PARAM:
        return None
    from pipeline.missing import (
        validate_strategy_params,  # torch: only when runs are read
    )

    param, family = TRAIN_RATE_PARAM[strategy]
    given = getattr(info.get("params"), "strategy_params", {}) or {}
    return param, float(getattr(validate_strategy_params(strategy, given.get(strategy)), param)), family


def train_test_matrix(results: pl.DataFrame, runs: pl.DataFrame, metric: str) -> pl.DataFrame:
    """The train-rate × test-rate matrix as a tidy table (a heat map: train_rate × test_rate per
    test_family/test_modality): for each run family and training rate, the seed mean (std, number of
    replicates) of `metric` at each level of the matching test family (`TRAIN_RATE_PARAM`), the
    `all_present` score as test_rate 0 of every curve. `results`: results.csv rows; `runs`: model,
    fold, seed, strategy, train_param, train_rate of each evaluated run with a training rate."""
    empty = pl.DataFrame(schema={k: (pl.Float64 if k in ("train_rate", "test_rate", "mean", "std") else pl.Int64 if k == "n_seeds" else pl.String)
                                 for k in TRAIN_TEST_COLUMNS})
    if runs.height == 0:
        return empty
    test_family = {s: f for s, (_, f) in TRAIN_RATE_PARAM.items()}
    joined = results.filter(pl.col("metric") == metric).join(runs, on=["model", "fold", "seed"], how="inner")
    joined = joined.with_columns(pl.col("strategy").replace_strict(test_family, default=None).alias("test_family"))
    curve = joined.filter((pl.col("family") == pl.col("test_family")) & pl.col("level").is_not_null())
    cells = curve.select("model", "test_family", "modality").unique()
    clean = (joined.filter(pl.col("family") == "all_present").drop("modality")
             .join(cells, on=["model", "test_family"], how="inner").with_columns(pl.lit(0.0).alias("level")))
    both = pl.concat([curve.select(clean.columns), clean.select(clean.columns)])
    both = both.unique(subset=["model", "train_param", "train_rate", "test_family", "modality", "level", "fold", "seed"], keep="first",
                       maintain_order=True)
    out = (both.group_by(["model", "strategy", "train_param", "train_rate", "test_family", "modality", "level", "metric"])
           .agg(pl.col("value").mean().alias("mean"), pl.col("value").std(ddof=1).alias("std"),
                pl.struct("fold", "seed").n_unique().alias("n_seeds").cast(pl.Int64))
           .rename({"modality": "test_modality", "level": "test_rate"})
           .sort(["model", "train_rate", "test_family", "test_modality", "test_rate"]))
    return out.select(TRAIN_TEST_COLUMNS) if out.height else empty


def read_train_test(paths: Iterable[str | Path]) -> pl.DataFrame:
    """The train_test.csv tables of several experiments (each a commit or `dvc exp` workspace's
    data/evaluate/<model>/<strategy>/train_test.csv) as one matrix; a cell given twice (same family,
    training rate and test cell) is an error naming both files."""
    parts, seen = [], {}
    key = ["model", "train_param", "train_rate", "test_family", "test_modality", "test_rate"]
    for p in paths:
        df = pl.read_csv(p, schema_overrides={**{k: pl.Float64 for k in ("train_rate", "test_rate", "mean", "std")},
                                              "n_seeds": pl.Int64})
        for k in df.select(key).unique().iter_rows():
            if k in seen:
                raise RobustnessError(f"{p}: train/test cell {dict(zip(key, k))} is also in {seen[k]}")
            seen[k] = p
        parts.append(df)
    return pl.concat(parts) if parts else pl.DataFrame()


def read_tables(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Several run families' summary.csv, results.csv or scorecard.csv files as one table (level and
    value columns read as floats, so an all-empty level column still concatenates): the input of
    `scorecard` / `compare_to` across families, where effective robustness against the late-fusion
    family becomes available."""
    floats = {k: pl.Float64 for k in ("level", "value", "mean", "std")}
    parts = []
    for p in paths:
        head = pl.read_csv(p, n_rows=0).columns
        parts.append(pl.read_csv(p, schema_overrides={k: v for k, v in floats.items() if k in head}))
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
