"""The report's robustness scorecard and train-rate × test-rate matrix: pure logic on the evaluate stages'
tables (pipeline/evaluate/robustness.py computes every figure; nothing is re-derived here). No files here.

Scorecard (docs/robustness.md): per replicate (fold, seed) of every run, the relative robustness (RR) of
each score-vs-missing-rate curve and, where the late-fusion reference family was evaluated on the same
curve, its effective robustness (ER) — `robustness.scorecard` over every family's results.csv at once,
since one family's own scorecard_summary.csv cannot hold ER against another family. One column per curve
family and figure: the all-modality curve where the family has one (random_missing's headline curve),
else the mean over its per-modality curves that are inputs of the run (imbalanced, one_present: the
`auc_<mechanism>` of the headline metrics, leaving out a modality the run does not take). Cells are
mean ± sd over replicates; † = the run's figure is significantly higher than the reference's, one-sided
paired t-test over shared replicates, Holm across the runs compared with that reference
(`robustness.compare_to`, 000 §6.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import polars as pl

from pipeline.evaluate import robustness
from pipeline.report.tables import (
    EVERY_MODALITY,
    ConditionInfo,
    TableData,
    fmt_stat,
    seed_stat,
)

SIGNIFICANT = "†"
FIGURES = {"relative_robustness": "RR", "effective_robustness": "ER"}
REFERENCE_CELL = "reference"


@dataclass
class Scorecard:
    """`card`: model, fold, seed, figure, family, value (one value per replicate and column);
    `tests`: robustness.compare_to's rows against each run's reference; `references`: run -> reference."""

    card: pl.DataFrame
    tests: pl.DataFrame
    references: dict[str, str | None]


def scorecard(results: pl.DataFrame, metric: str, inputs: Mapping[str, list[str] | None] | None = None,
              blind=None) -> Scorecard:
    """The scorecard of every run in `results` (results.csv rows of every family: model, fold, seed,
    condition, family, modality, level, metric, value). `inputs` {run: its modalities} and `blind`
    (report.robust.blind) drop a per-modality curve on a modality the run does not take."""
    if "fold" not in results.columns:
        results = results.with_columns(pl.lit(0, pl.Int64).alias("fold"))
    results = results.with_columns(pl.col("fold").fill_null(0))
    per = robustness.scorecard(finite_curves(results, metric), metric, by=("model", "fold", "seed"), value="value")
    if blind is not None and inputs:
        keep = [not blind(ConditionInfo(r["family"], r["modality"], None), inputs.get(r["model"]))
                for r in per.iter_rows(named=True)]
        per = per.filter(pl.Series(keep, dtype=pl.Boolean))
    has_all = per.group_by("model", "figure", "family").agg((pl.col("modality") == EVERY_MODALITY).any().alias("has_all"))
    per = per.join(has_all, on=["model", "figure", "family"], how="left")
    card = (per.filter(~pl.col("has_all") | (pl.col("modality") == EVERY_MODALITY))
            .group_by("model", "fold", "seed", "figure", "family", maintain_order=True)
            .agg(pl.col("value").mean())
            .with_columns(pl.lit("").alias("modality")))
    models = set(card["model"].unique().to_list())
    references = {m: robustness.reference_for(m, models) for m in sorted(models)}
    refs = sorted({r for r in references.values() if r})
    parts = [robustness.compare_to(card, ref) for ref in refs]
    tests = pl.concat(parts) if parts else robustness.compare_to(card.clear(), "")
    return Scorecard(card, tests, references)


def finite_curves(results: pl.DataFrame, metric: str) -> pl.DataFrame:
    """`results`' rows of `metric` without the curves that hold a non-finite score (a NaN CCC of constant
    predictions): such a replicate's curve has no figure (its cell averages the replicates that have one)
    rather than a number from a curve with a point left out. A replicate whose all-present score is not
    finite loses every curve that would take it as the rate-0 point."""
    rows = results.filter(pl.col("metric") == metric)
    bad = ~pl.col("value").is_finite().fill_null(False)
    rep = ["model", "fold", "seed"]
    curve = [*rep, "family", "modality"]
    bad_curves = rows.filter(bad & pl.col("family").is_in(robustness.CURVE_FAMILIES)).select(curve).unique()
    bad_reps = rows.filter(bad & (pl.col("family") == "all_present")).select(rep).unique()
    return (rows.join(bad_curves, on=curve, how="anti", nulls_equal=True)
            .join(bad_reps, on=rep, how="anti", nulls_equal=True))


def columns(sc: Scorecard) -> list[tuple[str, str]]:
    """(figure, family) columns present, RR first, families in `robustness.CURVE_FAMILIES` order."""
    have = set(sc.card.select("figure", "family").unique().iter_rows())
    order = list(robustness.CURVE_FAMILIES) + sorted({f for _, f in have} - set(robustness.CURVE_FAMILIES))
    return [(fig, fam) for fig in FIGURES for fam in order if (fig, fam) in have]


def table(sc: Scorecard, runs: Sequence[str], figure: str = "relative_robustness") -> TableData | None:
    """One figure's table (two narrow tables rather than one wide one): rows the runs with a curve,
    columns the curve families (ER: after the run's reference); None when no run has that figure."""
    cols = [fam for fig, fam in columns(sc) if fig == figure]
    if not cols:
        return None
    significant = {(r["model"], r["family"]) for r in sc.tests.filter(pl.col("significant") & (pl.col("figure") == figure))
                   .iter_rows(named=True)}
    values: dict[tuple[str, str], list[float]] = {}
    for r in sc.card.filter(pl.col("figure") == figure).iter_rows(named=True):
        values.setdefault((r["model"], r["family"]), []).append(r["value"])
    effective = figure == "effective_robustness"
    rows = []
    for run in [r for r in runs if r in sc.references]:
        ref = sc.references[run]
        if effective and ref is None:
            continue
        row = [run, ref] if effective else [run]
        for fam in cols:
            v = values.get((run, fam))
            if effective and run == ref:
                row.append(REFERENCE_CELL)
            elif not v:
                row.append("–")
            else:
                text = fmt_stat(seed_stat(v), signed=effective)
                row.append(text + (f" {SIGNIFICANT}" if (run, fam) in significant else ""))
        rows.append(row)
    return TableData(["Run"] + (["reference"] if effective else []) + [f"{FIGURES[figure]} {fam}" for fam in cols], rows)


def several_rates(train_test: pl.DataFrame) -> pl.DataFrame:
    """The rows of the train_test.csv tables whose (model, test family, test modality) holds more than one
    training rate (what a heat map can show); empty otherwise."""
    if train_test.height == 0:
        return train_test
    key = ["model", "test_family", "test_modality"]
    counts = train_test.group_by(key).agg(pl.col("train_rate").n_unique().alias("_n"))
    return (train_test.join(counts, on=key, how="left").filter(pl.col("_n") > 1).drop("_n")
            .sort(["model", "test_family", "test_modality", "train_rate", "test_rate"]))


def heat_panels(tt: pl.DataFrame) -> list[tuple[str, list[float], list[float], list[list[float]]]]:
    """(title, train rates, test rates, mean [train × test], NaN where not evaluated) per panel of
    `several_rates` rows, in (model, test family, test modality) order."""
    out = []
    for (model, fam, mod), part in tt.group_by(["model", "test_family", "test_modality"], maintain_order=True):
        train = sorted(set(part["train_rate"].to_list()))
        test = sorted(set(part["test_rate"].to_list()))
        cell = {(r["train_rate"], r["test_rate"]): r["mean"] for r in part.iter_rows(named=True)}
        grid = [[cell.get((a, b), math.nan) for b in test] for a in train]
        out.append((f"{model}: {fam}, {mod}", train, test, grid))
    return out


def one_to_one(tt: pl.DataFrame) -> TableData | None:
    """003 §6's one-to-one curve: the diagonal (train rate = test rate) of each one_to_one family's
    random_missing matrix (`several_rates` rows), with its AUILC (003 Eq. 19) where the diagonal covers
    exactly 0.0 … 0.9; None when no such family was trained at several rates."""
    diag = tt.filter((pl.col("strategy") == "one_to_one") & (pl.col("test_family") == "random_missing")
                     & ((pl.col("train_rate") - pl.col("test_rate")).abs() < 1e-9)) if tt.height else tt
    if diag.height == 0:
        return None
    from pipeline.evaluate.stats import StatsError, auilc

    rates = sorted(set(diag["test_rate"].to_list()))
    rows = []
    for (model, mod), part in diag.group_by(["model", "test_modality"], maintain_order=True):
        cell = {r["test_rate"]: r["mean"] for r in part.iter_rows(named=True)}
        row = [model, "all modalities" if mod == EVERY_MODALITY else mod]
        row += [f"{cell[r]:.3f}" if r in cell else "–" for r in rates]
        try:
            row.append(f"{auilc(sorted(cell), [cell[r] for r in sorted(cell)]):.3f}")
        except StatsError:
            row.append("n/a (incomplete grid)")
        rows.append(row)
    return TableData(["Run", "modality"] + [f"{r:g}" for r in rates] + ["AUILC"], rows)

