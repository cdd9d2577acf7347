"""Evaluation: every trained run (model × strategy × seed) on 'test' under every missing-modality condition.

Runs are found under one or more models folders (`<dir>/<model>/<strategy>/seed_<s>/model.pt`, see
`pipeline.train`); a run is named `<model>/<strategy>` in every output (the `model` column). Each
condition is applied ONCE to the test data (its generator seeded with `condition_seed(name)`), and
every run sees those same arrays, so runs are compared on identical missing data. Conditions are built
for the union of the runs' modalities; a run never trained on a modality is, under `missing:<that
modality>`, simply evaluated on its own inputs (which that condition leaves intact). All runs must
share one task.

Outputs (`out_dir` = data/evaluate, `metrics_dir` = data/metrics):
    results.csv      model, seed, condition, metric, value          (long format, one row per number)
    summary.csv      model, condition, metric, mean, std, n_seeds    (std over seeds, ddof 1; empty if 1 seed)
    predictions.csv  classification: model, seed, condition, clip_id, true, pred   (class names)
                     regression:     model, seed, condition, clip_id, step, target, true, pred
                                     (valid target steps only)
    conditions.csv   condition, model, <main metric>                 (seed mean; all_present and missing:*; a DVC bar plot;
                                                                       macro_f1, or ccc_mean for regression)
    evaluate.json    {model: {condition: {metric: seed mean}}}       (for `dvc metrics show`; all_present and
                                                                      missing:* conditions only):
                     classification accuracy, balanced_accuracy (UA), macro_f1 (UF1), weighted_f1 (WF1);
                     regression ccc_<target>, ccc_mean, rmse_<target>
Metrics: see `pipeline.metrics`. Regression CCC and RMSE are computed per target over the valid steps of
all test sequences concatenated (time-continuous CCC, population statistics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from pipeline.config import EVALUATE_DIR, METRICS_DIR, MODELS_DIR, EvaluateParams
from pipeline.errors import PipelineError
from pipeline.metrics import CLASSIFICATION_METRICS, regression_metric_names
from pipeline.missing import Condition, condition_seed, parse_conditions
from pipeline.segments import Segments
from pipeline.store import write_json, write_text
from pipeline.train import (
    MODEL_FILE,
    Split,
    load_trained,
    pick_device,
    predict,
    read_trained_info,
    run_name,
    score,
    selection_metric,
    task_split,
)

JSON_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
CURVES_DIR = "curves"
_SEED_DIR = re.compile(r"^seed_(-?\d+)$")


class EvaluateError(PipelineError):
    """Evaluation cannot run (no trained models, models that do not fit the segments…)."""


@dataclass
class EvaluationResults:
    results: pl.DataFrame
    summary: pl.DataFrame
    predictions: pl.DataFrame
    conditions: pl.DataFrame
    metrics: dict[str, dict[str, dict[str, float]]]


def find_trained(models_dirs: str | Path | Sequence[str | Path]) -> list[tuple[str, int, Path]]:
    """(name "<model>/<strategy>", seed, path) of every `<dir>/<model>/<strategy>/seed_<s>/model.pt`
    under the given folder(s) (missing folders are skipped), sorted by name, seed."""
    dirs = [models_dirs] if isinstance(models_dirs, (str, Path)) else list(models_dirs)
    found = []
    for d in dirs:
        for path in Path(d).glob(f"*/*/seed_*/{MODEL_FILE}"):
            m = _SEED_DIR.match(path.parent.name)
            if m:
                found.append((run_name(path.parent.parent.parent.name, path.parent.parent.name), int(m.group(1)), path))
    return sorted(found, key=lambda r: (r[0], r[1]))


def run_task(runs: list[tuple[str, int, Path]], segments: Segments) -> tuple[str, list[str], list[str]]:
    """(task, targets, modalities) shared by `runs`, after checking every run fits the segments."""
    modalities: list[str] = []
    tasks: dict[tuple[str, tuple[str, ...]], Path] = {}
    for _, _, path in runs:
        info = read_trained_info(path)
        check_fits(path, info, segments)
        tasks.setdefault((info["task"], tuple(info["targets"])), path)
        modalities += [m for m in info["modalities"] if m not in modalities]
    if len(tasks) > 1:
        listed = "; ".join(f"{p}: {t}{list(tg) if tg else ''}" for (t, tg), p in tasks.items())
        raise EvaluateError(f"the trained runs mix tasks/targets ({listed}); retrain them with one train.task")
    (task, targets), = tasks
    return task, list(targets), modalities


def score_conditions(
    model: torch.nn.Module,
    info: dict[str, Any],
    split: Split,
    applied: dict[str, tuple[dict, dict]],
    device: torch.device,
    path: Path,
) -> dict[str, tuple[dict[str, float], np.ndarray]]:
    """{condition: (metrics, outputs)} of one run on `split` under each already-applied condition."""
    mods, out = info["modalities"], {}
    for name, (xc, mc) in applied.items():
        pred = predict(model, {m: xc[m] for m in mods}, {m: mc[m] for m in mods}, device)
        if not np.all(np.isfinite(pred)):
            raise EvaluateError(f"{path}: non-finite outputs under condition '{name}'")
        out[name] = (score(info["task"], split, pred, info["targets"]), pred)
    return out


def apply_conditions(conditions: list[Condition], split: Split) -> dict[str, tuple[dict, dict]]:
    return {c.name: c.apply(split.x, split.mask, np.random.default_rng(condition_seed(c.name))) for c in conditions}


def evaluate_all(
    segments: Segments,
    models_dir: str | Path | Sequence[str | Path] = MODELS_DIR,
    params: EvaluateParams | None = None,
    out_dir: str | Path = EVALUATE_DIR,
    metrics_dir: str | Path = METRICS_DIR,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> EvaluationResults:
    params = params or EvaluateParams()
    runs = find_trained(models_dir)
    if not runs:
        where = models_dir if isinstance(models_dir, (str, Path)) else " or ".join(map(str, models_dir))
        raise EvaluateError(f"{where}: no trained models (<model>/<strategy>/seed_<s>/{MODEL_FILE}); run the train stage")
    task, targets, modalities = run_task(runs, segments)
    conditions = parse_conditions(params.conditions, modalities)

    split = task_split(segments, "test", modalities, task, targets or ("arousal", "valence"), who="evaluation")
    if len(split) == 0:
        raise EvaluateError("no labelled sequences in the 'test' partition")
    clip_ids = segments.clip_id[split.idx].astype(str)
    applied = apply_conditions(conditions, split)

    dev = pick_device(device)
    rows: list[dict[str, Any]] = []
    preds: list[pl.DataFrame] = []
    for name, seed, path in tqdm(runs, desc="evaluate", disable=not progress):
        model, info = load_trained(path, dev)
        for cond, (metrics, out) in score_conditions(model, info, split, applied, dev, path).items():
            rows += [{"model": name, "seed": seed, "condition": cond, "metric": k, "value": v} for k, v in metrics.items()]
            preds.append(_predictions(task, targets, segments.classes, split, clip_ids, out, name, seed, cond))
        del model

    metric_order = list(CLASSIFICATION_METRICS) if task == "classification" else regression_metric_names(targets)
    json_metrics = JSON_METRICS if task == "classification" else tuple(metric_order)
    out = _tables(rows, preds, conditions, metric_order, json_metrics, selection_metric(task))
    out_dir = Path(out_dir)
    write_text(out_dir / "results.csv", out.results.write_csv())
    write_text(out_dir / "summary.csv", out.summary.write_csv())
    write_text(out_dir / "predictions.csv", out.predictions.write_csv())
    headline_rows = pl.col("condition").eq("all_present") | pl.col("condition").str.starts_with("missing:")
    write_text(out_dir / "conditions.csv", out.conditions.filter(headline_rows).write_csv())  # the bar chart
    write_curves(out_dir / CURVES_DIR, out.conditions, conditions, selection_metric(task))
    # `dvc metrics show` gets the headline conditions (all present, whole modalities missing); the
    # graded grid is in results.csv / summary.csv and drawn as curves
    headline = {run: {c: m for c, m in conds.items() if c == "all_present" or c.startswith("missing:")}
                for run, conds in out.metrics.items()}
    write_json(Path(metrics_dir) / "evaluate.json", headline)
    return out


def curve_tables(table: pl.DataFrame, conditions: list[Condition], metric: str) -> dict[str, pl.DataFrame]:
    """{'<family>_<modality|all>': level, run, score} for the condition families with levels (clip_zero,
    frame_zero, frame_repeat, random_missing, availability): the robustness curves as DVC plots."""
    by_name = {c.name: c for c in conditions if getattr(c, "level", None) is not None}
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in table.iter_rows(named=True):
        cond = by_name.get(r["condition"])
        if cond is None:
            continue
        key = f"{cond.family}_{cond.modality or 'all'}"
        rows.setdefault(key, []).append({"level": float(cond.level), "run": r["model"], "score": float(r[metric])})
    return {k: pl.DataFrame(v).sort(["run", "level"]) for k, v in rows.items()}


def write_curves(out_dir: Path, table: pl.DataFrame, conditions: list[Condition], metric: str) -> None:
    """One CSV per curve (`dvc plots show` draws one line per run, template .dvc/plots/robustness.json)."""
    for key, frame in curve_tables(table, conditions, metric).items():
        write_text(Path(out_dir) / f"{key}.csv", frame.write_csv())


def check_fits(path: Path, info: dict[str, Any], segments: Segments) -> None:
    lacking = [m for m in info["modalities"] if m not in segments.x]
    if lacking:
        raise EvaluateError(f"{path}: trained on modalities {lacking} that the segments lack ({list(segments.x)})")
    wrong = {m: (d, int(segments.x[m].shape[-1])) for m, d in info["dims"].items() if d != segments.x[m].shape[-1]}
    if wrong:
        raise EvaluateError(f"{path}: feature dimensions (trained, segments) differ: {wrong}; retrain")
    if info["task"] == "classification" and list(info["classes"]) != list(segments.classes):
        raise EvaluateError(f"{path}: trained on classes {info['classes']}, the segments have {segments.classes}; retrain")


def _predictions(
    task: str, targets: list[str], classes: list[str], split: Split, clip_ids: np.ndarray,
    out: np.ndarray, name: str, seed: int, cond: str,
) -> pl.DataFrame:
    if task == "classification":
        cls = np.asarray(classes)
        return pl.DataFrame(
            {"model": name, "seed": seed, "condition": cond, "clip_id": clip_ids, "true": cls[split.y], "pred": cls[out.argmax(axis=1)]}
        )
    row, step = np.nonzero(split.y_mask)
    k = len(targets)
    return pl.DataFrame(
        {
            "model": name,
            "seed": seed,
            "condition": cond,
            "clip_id": np.repeat(clip_ids[row], k),
            "step": np.repeat(step, k).astype(np.int64),
            "target": np.tile(np.asarray(targets), len(row)),
            "true": split.y[row, step].reshape(-1).astype(np.float64),
            "pred": out[row, step].reshape(-1).astype(np.float64),
        }
    )


def _tables(
    rows: list[dict[str, Any]],
    preds: list[pl.DataFrame],
    conditions: list[Condition],
    metric_order: list[str],
    json_metrics: tuple[str, ...],
    main_metric: str,
) -> EvaluationResults:
    results = pl.DataFrame(rows, schema={"model": pl.String, "seed": pl.Int64, "condition": pl.String, "metric": pl.String, "value": pl.Float64})
    cond_order = {c.name: i for i, c in enumerate(conditions)}
    metric_rank = {m: i for i, m in enumerate(metric_order)}
    summary = (
        results.group_by(["model", "condition", "metric"], maintain_order=True)
        .agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").std(ddof=1).alias("std"),
            pl.col("seed").n_unique().alias("n_seeds"),
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
    return EvaluationResults(results, summary, pl.concat(preds), conditions_table, metrics)
