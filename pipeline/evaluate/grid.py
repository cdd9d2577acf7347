"""Evaluation: every trained run (model × strategy × seed) on 'test' under every missing-modality condition.

Runs are found under one or more models folders (`<dir>/<model>/<strategy>/seed_<s>/model.pt`, see
`pipeline.runs`); a run is named `<model>/<strategy>` in every output (the `model` column). Each
condition's generator is seeded with `condition_seed(name)`, so every run sees the same missing data
and runs are compared on identical inputs. Scoring streams (`pipeline.evaluate.scoring`): one condition at a
time, applied to step indices and materialised a batch of rows at a time, so memory does not grow with
the number of conditions; predictions.csv is written run by run, condition by condition. Conditions are built
for the union of the runs' modalities; a run never trained on a modality is, under `missing:<that
modality>`, simply evaluated on its own inputs (which that condition leaves intact). All runs must
share one task.

Outputs of one run family (`out_dir` = data/evaluate/<model>/<strategy>):
    results.csv      model, seed, condition, family, modality, level, metric, value   (long format, one row per number)
    summary.csv      model, condition, family, modality, level, metric, mean, std, n_seeds
                                                                     (std over seeds, ddof 1; empty if 1 seed)
    predictions.csv  classification: model, fold, seed, condition, clip_id, true, pred   (class names)
                     regression:     model, fold, seed, condition, clip_id, step, target, true, pred
                                     (valid target steps only)
                     the predictions the metrics were computed from: one row per clip (per clip step),
                     also under `windows`/`frames` (below), so clip_id is a key with or without origin
    masked_steps.csv fold, condition, clip_id, modality, steps, n_masked, n_steps   (the instance view's
                     "which steps were masked": for each test clip and condition of the `missing`
                     family, the steps of each modality the condition removed, run-length 0-12,20-31
                     in the clip's own steps; n_steps: the clip's valid steps of that modality.
                     Conditions do not depend on the run or seed (`condition_seed(name)`), so one table
                     serves every run and replicate of the family)
family, modality and level describe the condition (`condition_columns`: the `pipeline.missing.Condition`'s
own attributes, modality 'a+b' for several and 'all' for every one, level empty where it has none), so
the tables are tidy: the report draws its robustness curves from these columns, never from the names.
    scorecard.csv    model, fold, seed, figure, family, modality, reference, value   (per replicate: the
                     robustness figures of every missing-rate curve, `pipeline.evaluate.robustness.scorecard`)
    scorecard_summary.csv  model, figure, family, modality, reference, mean, std, n_seeds
    scorecard_tests.csv    figure, family, modality, model, baseline, n, mean_diff, p, p_holm, significant
                     (each model against the late-fusion reference when it was evaluated; else header only)
    train_test.csv   model, strategy, train_param, train_rate, test_family, test_modality, test_rate, metric,
                     mean, std, n_seeds   (runs with a training missing rate: `robustness.train_test_matrix`)
Also written: the family's headline metrics (`headline_metrics`, metrics/<model>-<strategy>.json, tracked
by git so that `dvc exp show` and `dvc metrics diff` compare experiments). The report reads every
family's files.
Metrics: see `pipeline.runs.metrics`. Regression CCC and RMSE are computed per target over the valid steps of
all test sequences concatenated (time-continuous CCC, population statistics).

Sequences cut from longer clips (layouts `windows` and `frames`, which carry `origin`) are predicted per
window and then scored once per clip (or clip step), windows merged: pipeline/evaluate/clip_scores.py, which also
gives the rows of masked_steps.csv. Without `origin` (layouts `aligned`, `native`) nothing is merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from pipeline.core.device import pick_device
from pipeline.core.paths import EVALUATE_DIR, MODELS_DIR
from pipeline.core.store import atomic_path, write_json, write_text
from pipeline.evaluate import robustness, stats
from pipeline.evaluate import scoring as run_scoring
from pipeline.evaluate.clip_scores import (
    MASKED_SCHEMA,
    ClipPredictions,
    clip_metrics,
    clip_predictions,
    step_ranges,  # noqa: F401  (re-exported from its former home)
)
from pipeline.evaluate.params import EvaluateParams
from pipeline.evaluate.scoring import (
    MaskedRecord,
    ScoreJob,
    ScoringContext,
    condition_context,
    score_runs,
)
from pipeline.missing import Condition, parse_conditions
from pipeline.runs.feed import EvaluateError, Split, selection_metric, task_split
from pipeline.runs.files import (
    MODEL_FILE,
    find_trained,
    read_trained_info,
    run_task,
)
from pipeline.runs.metrics import CLASSIFICATION_METRICS, regression_metric_names
from pipeline.segment.contract import Segments

JSON_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
# headline metrics per run family: in git (not data/), so every commit and experiment carries them
HEADLINE_DIR = Path("metrics")


@dataclass
class EvaluationResults:
    results: pl.DataFrame
    summary: pl.DataFrame
    conditions: pl.DataFrame
    metrics: dict[str, dict[str, dict[str, float]]]
    scorecard: pl.DataFrame | None = None  # per replicate (`robustness.scorecard`)
    train_test: pl.DataFrame | None = None
    predictions_path: Path | None = None  # predictions.csv as written
    task: str = "classification"

    @property
    def predictions(self) -> pl.DataFrame:
        """predictions.csv read back (it is written run by run and never held whole: at the size of a
        regression corpus it is the largest output by far)."""
        if self.predictions_path is None:
            raise EvaluateError("these evaluation results were not written to a predictions.csv")
        return pl.read_csv(self.predictions_path, schema=PREDICTION_SCHEMA[self.task])


# predictions.csv's columns (`_predictions`)
PREDICTION_SCHEMA = {
    "classification": {"model": pl.String, "fold": pl.Int64, "seed": pl.Int64, "condition": pl.String,
                       "clip_id": pl.String, "true": pl.String, "pred": pl.String},
    "regression": {"model": pl.String, "fold": pl.Int64, "seed": pl.Int64, "condition": pl.String, "clip_id": pl.String,
                   "step": pl.Int64, "target": pl.String, "true": pl.Float64, "pred": pl.Float64},
}


def evaluate_all(
    segments: Segments,
    models_dir: str | Path | Sequence[str | Path] = MODELS_DIR,
    params: EvaluateParams | None = None,
    out_dir: str | Path = EVALUATE_DIR,
    headline_path: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    only: str | None = None,
) -> EvaluationResults:
    """Evaluate the runs under `models_dir` (only those named `only`, e.g. "crossmodal/standard", when
    given) under every condition; write results.csv, summary.csv and predictions.csv to `out_dir` and,
    when `headline_path` is given, the run family's headline metrics there (`headline_metrics`)."""
    params = params or EvaluateParams()
    where = models_dir if isinstance(models_dir, (str, Path)) else " or ".join(map(str, models_dir))
    which = f"'{only}' " if only else ""
    by_fold = {}  # each fold's runs, tested on that fold's test partition (with its statistics)
    for fold in segments.fold_ids:
        # with the runs at grid.rates' other training rates (run.rate): they enter train_test.csv only
        runs = [r for r in find_trained(models_dir, fold, rates=True) if only is None or r[0] == only]
        if not any(r.rate is None for r in runs):
            layout = "seed_<s>" if fold is None else f"fold_{fold}/seed_<s>"
            raise EvaluateError(f"{where}: no trained {which}models (<model>/<strategy>/{layout}/{MODEL_FILE}); run the train stage")
        by_fold[fold] = runs
    task, targets, modalities = run_task([r for runs in by_fold.values() for r in runs], segments)
    conditions = parse_conditions(params.conditions, modalities, burst_mean=params.burst_mean_steps)

    dev = pick_device(device)
    rows: list[dict[str, Any]] = []
    masked: list[dict[str, Any]] = []
    run_rates: list[dict[str, Any]] = []
    rate_rows: list[dict[str, Any]] = []  # the grid.rates runs' scores, named "<model>/<strategy>@<rate>"
    cond_family = {c.name: c.family for c in conditions}
    contexts: dict[int | None, ScoringContext] = {}
    jobs: list[tuple[int | None, Any, ScoreJob]] = []  # (fold, run, job), each fold's runs together
    for fold, runs in by_fold.items():
        view = segments.for_fold(fold or 0)
        split = task_split(view, "test", modalities, task, targets or ("arousal", "valence"), who="evaluation")
        if len(split) == 0:
            raise EvaluateError(f"no labelled sequences in the 'test' partition{'' if fold is None else f' of fold {fold}'}")
        clip_ids = view.clip_id[split.idx].astype(str)
        origin = None if view.origin is None else np.asarray(view.origin)[split.idx].astype(np.int64)
        contexts[fold] = ScoringContext(split, tuple(conditions), condition_context(split, view), MaskedRecord(clip_ids, origin, fold or 0))
        for i, run in enumerate(runs):
            used = None
            if run.rate is not None:  # a grid.rates run: all_present and its test family's curve only, for train_test.csv
                rate = robustness.train_rate(read_trained_info(run.path))
                used = tuple(c.name for c in conditions if cond_family[c.name] in ("all_present", rate and rate[2]))
            # the fold's first job also returns its masked steps (the conditions do not depend on the run)
            jobs.append((fold, run, ScoreJob(run.path, fold, used, masked=i == 0)))

    metric_order = list(CLASSIFICATION_METRICS) if task == "classification" else regression_metric_names(targets)
    json_metrics = JSON_METRICS if task == "classification" else tuple(metric_order)
    out_dir = Path(out_dir)
    # predictions.csv is appended run by run and condition by condition (header once), renamed into place
    # with results.csv and summary.csv: the bytes of one table written at once, never held whole
    with atomic_path(out_dir / "predictions.csv") as preds_tmp:
        with open(preds_tmp, "wb") as preds_file:
            # one bar for the whole family (every fold's runs); no line per condition or fold
            bar = tqdm(total=len(jobs), desc=only or "evaluate", disable=not progress, mininterval=1.0, leave=False)
            for (fold, run, job), scored_run in zip(jobs, score_runs([j for _, _, j in jobs], contexts, dev)):
                ctx = contexts[fold]
                split, clip_ids, origin = ctx.split, ctx.masked.clip_ids, ctx.masked.origin
                masked += scored_run.masked_rows or []
                (name, seed, _), own = run, run.rate is None
                name = name if own else f"{name}@{run.rate:g}"
                if (rate := robustness.train_rate(scored_run.info)) is not None:
                    run_rates.append({"model": name, "fold": fold or 0, "seed": seed, "strategy": scored_run.info["strategy"],
                                      "train_param": rate[0], "train_rate": rate[1]})
                for cond in list(scored_run.scores):
                    metrics, out = scored_run.scores.pop(cond)  # each condition's outputs freed once written
                    scored = clip_predictions(task, split, clip_ids, out, origin)
                    if origin is not None:  # every clip (clip step) once, not once per window
                        metrics = clip_metrics(task, targets, scored)
                    (rows if own else rate_rows).extend({"model": name, "fold": fold or 0, "seed": seed, "condition": cond,
                                                         "metric": k, "value": v} for k, v in metrics.items())
                    if own:
                        chunk = _predictions(task, targets, segments.classes, scored, name, seed, cond, fold or 0)
                        chunk.write_csv(preds_file, include_header=preds_file.tell() == 0)
                bar.update()
            bar.close()
        out = _tables(rows, conditions, metric_order, json_metrics, selection_metric(task))
        write_text(out_dir / "results.csv", out.results.write_csv())
        write_text(out_dir / "summary.csv", out.summary.write_csv())
    out.predictions_path, out.task = out_dir / "predictions.csv", task
    write_text(out_dir / "masked_steps.csv", pl.DataFrame(masked, schema=MASKED_SCHEMA).write_csv())
    main = selection_metric(task)
    out.scorecard = robustness.scorecard(out.results, main, by=("model", "fold", "seed"), value="value")
    write_text(out_dir / "scorecard.csv", out.scorecard.write_csv())
    write_text(out_dir / "scorecard_summary.csv", _scorecard_summary(out.scorecard).write_csv())
    write_text(out_dir / "scorecard_tests.csv", _scorecard_tests(out.scorecard).write_csv())
    runs_table = pl.DataFrame(run_rates, schema={"model": pl.String, "fold": pl.Int64, "seed": pl.Int64, "strategy": pl.String,
                                                 "train_param": pl.String, "train_rate": pl.Float64})
    every = out.results if not rate_rows else pl.concat(
        [out.results, _tables(rate_rows, conditions, metric_order, json_metrics, main).results])
    out.train_test = robustness.train_test_matrix(every, runs_table, main)
    if rate_rows:  # the grid.rates runs under their family's name again
        out.train_test = out.train_test.with_columns(pl.col("model").str.replace(r"@.*$", "")).sort(
            ["model", "train_rate", "test_family", "test_modality", "test_rate"])
    write_text(out_dir / "train_test.csv", out.train_test.write_csv())
    if headline_path is not None:
        write_json(headline_path, headline_metrics(out.summary, conditions, main))
    return out


def apply_conditions(conditions: list[Condition], split: Split, segments: Segments | None = None) -> dict[str, tuple[dict, dict]]:
    """Each condition applied to the whole split at once (generator seeded by `condition_seed(name)`), with
    the context the mechanisms need (`pipeline.evaluate.scoring.condition_context`): a full copy of the split per
    condition, for small data and tests; `evaluate_all` streams instead (`pipeline.evaluate.scoring`)."""
    return run_scoring.apply_conditions(conditions, split, condition_context(split, segments))


def _scorecard_summary(card: pl.DataFrame) -> pl.DataFrame:
    """Seed means of the per-replicate scorecard (RR and ER are linear in the scores, so the mean of
    the replicates' figures is the figure of the seed-mean curve)."""
    return (card.group_by(["model", "figure", "family", "modality", "reference"], maintain_order=True)
            .agg(pl.col("value").mean().alias("mean"), pl.col("value").std(ddof=1).alias("std"),
                 pl.struct("fold", "seed").n_unique().alias("n_seeds").cast(pl.Int64)))


def _scorecard_tests(card: pl.DataFrame) -> pl.DataFrame:
    """Every evaluated model's figures against the late-fusion reference's, when it was evaluated."""
    models = set(card["model"].unique())
    refs = sorted({r for m in models if (r := robustness.reference_for(m, models))})
    parts = [robustness.compare_to(card, ref) for ref in refs]
    return pl.concat(parts) if parts else robustness.compare_to(card.clear(), "")


def headline_metrics(summary: pl.DataFrame, conditions: list[Condition], metric: str) -> dict[str, Any]:
    """The numbers a paper's table shows for one run family, seed means of the selection metric
    (macro-F1 = UF1, or mean CCC): all modalities present, each modality missing, and the AUILC over
    003's random-missing rates 0.0–0.9 of all modalities (Eq. 19) when those conditions were run;
    then the robustness scorecard's figures where their curves were run: relative_robustness,
    effective_robustness (late-fusion reference evaluated alongside), auc_imbalanced, auc_mnar,
    auc_burst, auc_one_present (`robustness.headline_figures`).
    Small on purpose: `dvc exp show` / `dvc metrics diff` compare these across experiments; the full
    grid stays in results.csv and summary.csv."""
    rows = summary.filter(pl.col("metric") == metric)
    mean = {r["condition"]: float(r["mean"]) for r in rows.iter_rows(named=True)}
    out: dict[str, Any] = {}
    if "all_present" in mean:
        out["all_present"] = round(mean["all_present"], 6)
    for c in conditions:
        if c.family == "missing" and isinstance(c.modality, str) and c.name in mean:
            out[f"no_{c.modality}"] = round(mean[c.name], 6)
    rates = [(float(c.level), mean[c.name]) for c in conditions
             if c.family == "random_missing" and c.modality is None and c.name in mean]
    if {r for r, _ in rates} >= set(stats.AUILC_RATES):
        rates.sort()
        out["auilc"] = round(stats.auilc([r for r, _ in rates], [v for _, v in rates]), 6)
    # the robustness scorecard (pipeline/evaluate/robustness.py, docs/robustness.md): relative robustness and,
    # when the late-fusion reference was evaluated with it, effective robustness of the random-missing
    # curve; one AUC (mean relative robustness) per mechanism beyond MCAR
    card = robustness.scorecard(summary, metric)
    for model in summary["model"].unique(maintain_order=True).to_list()[:1]:
        out.update({k: round(v, 6) for k, v in robustness.headline_figures(card, model).items()})
    return {metric: out}


def condition_columns(condition: Condition) -> dict[str, Any]:
    """The tidy columns of one condition: family, modality (a name; several joined by '+', 'a+b'; 'all'
    for every modality) and level (p, rate or share; None, an empty cell, where there is none)."""
    mod = condition.modality
    modality = "all" if mod is None else mod if isinstance(mod, str) else "+".join(mod)
    return {"family": condition.family, "modality": modality, "level": condition.level}


def _predictions(
    task: str, targets: list[str], classes: list[str], scored: ClipPredictions, name: str, seed: int, cond: str,
    fold: int = 0,
) -> pl.DataFrame:
    if task == "classification":
        cls = np.asarray(classes)
        return pl.DataFrame(
            {"model": name, "fold": fold, "seed": seed, "condition": cond, "clip_id": scored.clip_id,
             "true": cls[scored.true], "pred": cls[scored.out.argmax(axis=1)]}
        )
    k = len(targets)
    n = len(scored.clip_id)
    return pl.DataFrame(
        {
            "model": name,
            "fold": fold,
            "seed": seed,
            "condition": cond,
            "clip_id": np.repeat(scored.clip_id, k),
            "step": np.repeat(scored.step, k).astype(np.int64),
            "target": np.tile(np.asarray(targets), n),
            "true": scored.true.reshape(-1).astype(np.float64),
            "pred": scored.out.reshape(-1).astype(np.float64),
        }
    )


def _tables(
    rows: list[dict[str, Any]],
    conditions: list[Condition],
    metric_order: list[str],
    json_metrics: tuple[str, ...],
    main_metric: str,
) -> EvaluationResults:
    tidy = pl.DataFrame([{"condition": c.name, **condition_columns(c)} for c in conditions],
                        schema={"condition": pl.String, "family": pl.String, "modality": pl.String, "level": pl.Float64})
    results = (
        pl.DataFrame(rows, schema={"model": pl.String, "fold": pl.Int64, "seed": pl.Int64, "condition": pl.String,
                                   "metric": pl.String, "value": pl.Float64})
        .join(tidy, on="condition", how="left", maintain_order="left")
        .select("model", "fold", "seed", "condition", "family", "modality", "level", "metric", "value")
    )
    cond_order = {c.name: i for i, c in enumerate(conditions)}
    metric_rank = {m: i for i, m in enumerate(metric_order)}
    summary = (
        results.group_by(["model", "condition", "family", "modality", "level", "metric"], maintain_order=True)
        .agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").std(ddof=1).alias("std"),
            pl.struct("fold", "seed").n_unique().alias("n_seeds"),  # replicates: (fold, seed) pairs
        )
        .with_columns(
            pl.col("condition").replace_strict(cond_order).alias("_c"),
            pl.col("metric").replace_strict(metric_rank).alias("_m"),
        )
        .sort(["model", "_c", "_m"])
        .drop(["_c", "_m"])
    )
    conditions_table = summary.filter(pl.col("metric") == main_metric).select("condition", "model", pl.col("mean").alias(main_metric))
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for r in summary.filter(pl.col("metric").is_in(json_metrics)).iter_rows(named=True):
        metrics.setdefault(r["model"], {}).setdefault(r["condition"], {})[r["metric"]] = r["mean"]
    return EvaluationResults(results, summary, conditions_table, metrics)
