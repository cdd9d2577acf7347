"""Evaluation: every trained model × seed on the 'test' partition under every missing-modality condition.

Each condition is applied ONCE to the test data (its generator seeded with `condition_seed(name)`), and
every model sees those same arrays, so models are compared on identical missing data. A model is
named by its directory under the models folder (`<models_dir>/<model>/seed_<s>/model.pt`). Conditions
are built for the union of the models' modalities; a model never trained on a modality is, under
`missing:<that modality>`, simply evaluated on its own inputs (which that condition leaves intact).

Outputs (`out_dir` = data/evaluate, `metrics_dir` = data/metrics):
    results.csv      model, seed, condition, metric, value          (long format, one row per number)
    summary.csv      model, condition, metric, mean, std, n_seeds    (std over seeds, ddof 1; empty if 1 seed)
    predictions.csv  model, seed, condition, clip_id, true, pred     (class names)
    conditions.csv   condition, model, macro_f1                       (seed mean; for a DVC bar plot)
    evaluate.json    {model: {condition: {metric: seed mean}}} for accuracy, balanced_accuracy (UA),
                     macro_f1 (UF1), weighted_f1 (WF1)             (for `dvc metrics show`)
Metric names: see `pipeline.metrics`.
"""

from __future__ import annotations

from pipeline.errors import PipelineError

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from pipeline.config import EVALUATE_DIR, METRICS_DIR, MODELS_DIR, EvaluateParams
from pipeline.metrics import CLASSIFICATION_METRICS, classification_metrics
from pipeline.missing import Condition, condition_seed, parse_conditions
from pipeline.segments import Segments
from pipeline.store import write_json, write_text
from pipeline.train import MODEL_FILE, labelled_split, load_trained, pick_device, predict_logits, read_trained_info

JSON_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
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


def find_trained(models_dir: str | Path) -> list[tuple[str, int, Path]]:
    """(model, seed, path) of every `<models_dir>/<model>/seed_<s>/model.pt`, sorted by model, seed."""
    found = []
    for path in Path(models_dir).glob(f"*/seed_*/{MODEL_FILE}"):
        m = _SEED_DIR.match(path.parent.name)
        if m:
            found.append((path.parent.parent.name, int(m.group(1)), path))
    return sorted(found, key=lambda r: (r[0], r[1]))


def evaluate_all(
    segments: Segments,
    models_dir: str | Path = MODELS_DIR,
    params: EvaluateParams | None = None,
    out_dir: str | Path = EVALUATE_DIR,
    metrics_dir: str | Path = METRICS_DIR,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> EvaluationResults:
    params = params or EvaluateParams()
    runs = find_trained(models_dir)
    if not runs:
        raise EvaluateError(f"{models_dir}: no trained models (<model>/seed_<s>/{MODEL_FILE}); run the train stage")

    # modalities any model was trained on, in first-seen order; every one must be in the segments
    modalities: list[str] = []
    for _, _, path in runs:
        info = read_trained_info(path)
        _check_fits(path, info, segments)
        modalities += [m for m in info["modalities"] if m not in modalities]
    conditions = parse_conditions(params.conditions, modalities)

    idx, x, mask, y = labelled_split(segments, "test", modalities, who="evaluation")
    if len(y) == 0:
        raise EvaluateError("no labelled sequences in the 'test' partition")
    clip_ids = segments.clip_id[idx].astype(str)
    applied = {c.name: c.apply(x, mask, np.random.default_rng(condition_seed(c.name))) for c in conditions}

    dev = pick_device(device)
    classes = np.asarray(segments.classes)
    rows: list[dict[str, Any]] = []
    preds: list[pl.DataFrame] = []
    for model_name, seed, path in tqdm(runs, desc="evaluate", disable=not progress):
        model, info = load_trained(path, dev)
        for cond in conditions:
            xc, mc = applied[cond.name]
            mods = info["modalities"]
            logits = predict_logits(model, {m: xc[m] for m in mods}, {m: mc[m] for m in mods}, dev)
            if not np.all(np.isfinite(logits)):
                raise EvaluateError(f"{path}: non-finite outputs under condition '{cond.name}'")
            pred = logits.argmax(axis=1)
            for metric, value in classification_metrics(y, pred).items():
                rows.append({"model": model_name, "seed": seed, "condition": cond.name, "metric": metric, "value": value})
            preds.append(
                pl.DataFrame(
                    {
                        "model": model_name,
                        "seed": seed,
                        "condition": cond.name,
                        "clip_id": clip_ids,
                        "true": classes[y],
                        "pred": classes[pred],
                    }
                )
            )
        del model

    out = _tables(rows, preds, conditions)
    out_dir = Path(out_dir)
    write_text(out_dir / "results.csv", out.results.write_csv())
    write_text(out_dir / "summary.csv", out.summary.write_csv())
    write_text(out_dir / "predictions.csv", out.predictions.write_csv())
    write_text(out_dir / "conditions.csv", out.conditions.write_csv())
    write_json(Path(metrics_dir) / "evaluate.json", out.metrics)
    return out


def _check_fits(path: Path, info: dict[str, Any], segments: Segments) -> None:
    lacking = [m for m in info["modalities"] if m not in segments.x]
    if lacking:
        raise EvaluateError(f"{path}: trained on modalities {lacking} that the segments lack ({list(segments.x)})")
    wrong = {m: (d, int(segments.x[m].shape[-1])) for m, d in info["dims"].items() if d != segments.x[m].shape[-1]}
    if wrong:
        raise EvaluateError(f"{path}: feature dimensions (trained, segments) differ: {wrong}; retrain")
    if list(info["classes"]) != list(segments.classes):
        raise EvaluateError(f"{path}: trained on classes {info['classes']}, the segments have {segments.classes}; retrain")


def _tables(rows: list[dict[str, Any]], preds: list[pl.DataFrame], conditions: list[Condition]) -> EvaluationResults:
    results = pl.DataFrame(rows, schema={"model": pl.String, "seed": pl.Int64, "condition": pl.String, "metric": pl.String, "value": pl.Float64})
    cond_order = {c.name: i for i, c in enumerate(conditions)}
    metric_order = {m: i for i, m in enumerate(CLASSIFICATION_METRICS)}
    summary = (
        results.group_by(["model", "condition", "metric"], maintain_order=True)
        .agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").std(ddof=1).alias("std"),
            pl.col("seed").n_unique().alias("n_seeds"),
        )
        .with_columns(
            pl.col("condition").replace_strict(cond_order).alias("_c"),
            pl.col("metric").replace_strict(metric_order).alias("_m"),
        )
        .sort(["model", "_c", "_m"])
        .drop(["_c", "_m"])
    )
    conditions_table = (
        summary.filter(pl.col("metric") == "macro_f1").select("condition", "model", pl.col("mean").alias("macro_f1"))
    )
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for r in summary.filter(pl.col("metric").is_in(JSON_METRICS)).iter_rows(named=True):
        metrics.setdefault(r["model"], {}).setdefault(r["condition"], {})[r["metric"]] = r["mean"]
    return EvaluationResults(results, summary, pl.concat(preds), conditions_table, metrics)
