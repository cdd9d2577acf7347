"""Reading what the report is made of. The evaluate stages' tables are read here; the run and upstream
files (training histories, model.pt, the importance search, segments, corpus) in `run_files`, and the
checked reading both share (`ReportError`, `read_csv`, `require`, `json_object`) in `reading`. Their names
are re-exported, so `from pipeline.report.eval_files import X` works for every reader. Every missing or
malformed input is a `ReportError` that names the file and the stage that writes it, so a user knows
what to rerun.

Inputs read here (relative to the repository root; one folder per run family, written by its own DVC stages):
    data/evaluate/<model>/<strategy>/results.csv    model, fold, seed, condition, family, modality, level, metric,
                                                    value (one row per fold and seed; the replicate of the
                                                    report's statistics is the (fold, seed) pair)
    data/evaluate/<model>/<strategy>/summary.csv    model, condition, family, modality, level, metric, mean, std,
                                                    n_seeds
    data/evaluate/<model>/<strategy>/predictions.csv
    data/evaluate/<model>/<strategy>/masked_steps.csv  optional: the steps each `missing` condition removed
                                                    per test clip (the instance view)
    data/evaluate/<model>/<strategy>/train_test.csv optional: the train-rate × test-rate matrix
    metrics/<model>-<strategy>.json                 the evaluate stages' headline metrics
family, modality and level describe each condition (pipeline.evaluate.grid.condition_columns): the robustness
curves are drawn from them, condition names are never parsed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.core.paths import EVALUATE_DIR
from pipeline.report.reading import (
    Kind,
    ReportError,
    json_object,
    read_csv,
    read_csv_where,
    require,
)
from pipeline.report.run_files import (
    DEVEL_METRICS,
    HISTORY,
    CorpusSummary,
    History,
    SegmentsMeta,
    history_path,
    read_corpus,
    read_history,
    read_importance,
    read_run_inputs,
    read_segments_meta,
)
from pipeline.segment.protocols import REPLICATE

__all__ = [  # this module's readers and, re-exported, those of `reading` and `run_files`
    "DEVEL_METRICS", "HISTORY", "MASKED_STEPS", "PREDICTIONS", "RESULTS", "RESULT_COLUMNS", "SUMMARY",
    "SUMMARY_COLUMNS", "TRAIN_TEST", "CorpusSummary", "History", "Kind", "ReportError", "Result", "SegmentsMeta",
    "SummaryRow", "Trace", "family_files", "history_path", "json_object", "read_corpus", "read_csv",
    "read_headlines", "read_history", "read_importance", "read_masked_steps", "read_predictions", "read_results",
    "read_results_table", "read_run_inputs", "read_segments_meta", "read_summary", "read_trace",
    "read_train_test", "replicates", "require",
]

RESULTS = "results.csv"
SUMMARY = "summary.csv"
PREDICTIONS = "predictions.csv"
MASKED_STEPS = "masked_steps.csv"
TRAIN_TEST = "train_test.csv"
RESULT_COLUMNS: dict[str, Kind] = {"model": "str", "seed": "int", "condition": "str", "family": "str",
                                   "modality": "str", "level": "level", "metric": "str", "value": "float"}
SUMMARY_COLUMNS: dict[str, Kind] = {"model": "str", "condition": "str", "family": "str", "modality": "str",
                                    "level": "level", "metric": "str", "mean": "float", "std": "std", "n_seeds": "int"}


@dataclass(frozen=True)
class Result:
    model: str
    seed: int
    condition: str
    metric: str
    value: float
    # the condition's tidy columns: family, modality ('a+b' for several, 'all' for every one), level
    family: str = ""
    modality: str = ""
    level: float | None = None


@dataclass(frozen=True)
class SummaryRow:
    model: str
    condition: str
    metric: str
    mean: float
    std: float
    n_seeds: int
    family: str = ""
    modality: str = ""
    level: float | None = None


def replicates(table: pl.DataFrame) -> pl.DataFrame:
    """`seed` as the report's replicate: under several folds each (fold, seed) pair is one, numbered
    (fold + 1)·REPLICATE + seed (pipeline.segment.protocols.replicate), so paired statistics pair the same fold and seed."""
    if "fold" not in table.columns:
        return table
    fold = table["fold"].cast(pl.Int64, strict=False)
    if fold.max() in (None, 0):
        return table
    return table.with_columns(((fold + 1) * REPLICATE + pl.col("seed")).alias("seed"))


def family_files(root: Path, name: str) -> list[Path]:
    """data/evaluate/<model>/<strategy>/<name> of every evaluated run family, sorted; a ReportError
    when there is none."""
    paths = sorted((root / EVALUATE_DIR).glob(f"*/*/{name}"))
    if not paths:
        raise ReportError(f"{root / EVALUATE_DIR}/<model>/<strategy>/{name}: not found; it is written by the "
                          "`evaluate@<model>-<strategy>` stages (run `dvc repro`)")
    return paths


def read_results(root: Path) -> list[Result]:
    return [Result(**{k: r[k] for k in RESULT_COLUMNS}) for p in family_files(root, RESULTS)
            for r in replicates(read_csv(p, "evaluate", RESULT_COLUMNS)).iter_rows(named=True)]


def read_summary(root: Path) -> list[SummaryRow]:
    return [SummaryRow(**{k: r[k] for k in SUMMARY_COLUMNS}) for p in family_files(root, SUMMARY)
            for r in read_csv(p, "evaluate", SUMMARY_COLUMNS).iter_rows(named=True)]


@dataclass
class Trace:
    """Predicted and true regression curves of one test clip: {target: (steps, true, pred)}."""

    model: str
    seed: int
    clip_id: str
    targets: dict[str, tuple[list[int], list[float], list[float]]]


def _header(path: Path) -> list[str] | None:
    """The column names of a predictions.csv; None when it is absent or empty."""
    if not path.is_file():
        return None
    try:
        return pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except pl.exceptions.NoDataError:
        return None


def read_trace(root: Path, model: str, seed: int, condition: str) -> Trace | None:
    """The first (sorted) clip of `model`/`seed`/`condition` in a regression predictions.csv (`seed` the
    report's replicate, see `replicates`); None when the file is absent, holds classification predictions
    or no such rows. The file holds every test step under every condition (2.3 GB, 22 M rows at
    Aff-Wild2's size), so it is read twice, streamed (`read_csv_where`): the run's clip names under the
    condition, then the first clip's rows."""
    path = root / EVALUATE_DIR / model / PREDICTIONS
    header = _header(path)
    if header is None or not {"step", "target"} <= set(header):
        return None
    fold, own_seed = divmod(seed, REPLICATE)  # (fold + 1)·REPLICATE + seed under several folds, else the seed
    where = (pl.col("model") == model) & (pl.col("condition") == condition) & _number_is("seed", own_seed)
    if "fold" in header:
        where &= _number_is("fold", max(fold - 1, 0))
    clip = read_csv_where(path, "evaluate", {"clip_id": "str"}, where)["clip_id"].min()
    if clip is None:
        return None
    rows = read_csv_where(path, "evaluate", {"step": "int", "target": "str", "true": "float", "pred": "float"},
                          where & (pl.col("clip_id") == clip))
    targets: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for r in rows.sort("step", maintain_order=True).iter_rows(named=True):
        t = targets.setdefault(r["target"], ([], [], []))
        t[0].append(r["step"]), t[1].append(r["true"]), t[2].append(r["pred"])
    return Trace(model, seed, clip, targets)


def _number_is(column: str, value: int) -> pl.Expr:
    """A text cell holding the integer `value` (a cell that is no number matches nothing)."""
    return pl.col(column).str.strip_chars().cast(pl.Int64, strict=False) == value


def read_predictions(root: Path, run: str) -> pl.DataFrame | None:
    """data/evaluate/<run>/predictions.csv of a classification run (seed as the report's replicate;
    an `origin` column, the window of a clip, kept when present); None when absent or regression."""
    path = root / EVALUATE_DIR / run / PREDICTIONS
    header = _header(path)
    if header is None or "step" in header:
        return None
    cols: dict[str, Kind] = {"model": "str", "seed": "int", "condition": "str", "clip_id": "str", "true": "str", "pred": "str"}
    table = replicates(read_csv(path, "evaluate", cols))
    return table.filter(pl.col("model") == run)


def read_headlines(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{'<model>-<strategy>': {metric: {key: value}}} from metrics/*.json (the evaluate stages'
    headline metrics; nested keys dotted, non-numeric leaves left out); {} when the folder is absent."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for path in sorted((root / "metrics").glob("*.json")):
        data = json_object(path, "the `evaluate` stage")
        out[path.stem] = {m: _flatten(keys) for m, keys in data.items() if isinstance(keys, dict)}
    return out


def _flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """{'a': {'b': 1}} -> {'a.b': 1.0}: nested headline keys (a matrix of rates) as dotted names."""
    out: dict[str, float] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def read_results_table(root: Path) -> pl.DataFrame:
    """Every family's results.csv as one polars table (`robustness.read_tables`: level and value as
    floats; fold 0 where the column is absent): the input of the report's scorecard."""
    from pipeline.evaluate import robustness

    paths = family_files(root, RESULTS)
    try:
        table = robustness.read_tables(paths)
    except pl.exceptions.PolarsError as e:
        raise ReportError(f"{root / EVALUATE_DIR}/<model>/<strategy>/{RESULTS}: not readable as one table ({e}); "
                          "rerun the `evaluate` stages") from None
    if "fold" not in table.columns:
        table = table.with_columns(pl.lit(0, pl.Int64).alias("fold"))
    return table.with_columns(pl.col("fold").cast(pl.Int64), pl.col("seed").cast(pl.Int64))


def read_train_test(root: Path) -> pl.DataFrame:
    """Every family's train_test.csv as one table (`robustness.read_train_test`); empty when none
    has one (written by evaluate since the scorecard)."""
    from pipeline.evaluate import robustness

    paths = sorted((root / EVALUATE_DIR).glob(f"*/*/{TRAIN_TEST}"))
    try:
        return robustness.read_train_test(paths)
    except robustness.RobustnessError as e:
        raise ReportError(f"{e}; rerun the `evaluate` stages") from None
    except pl.exceptions.PolarsError as e:
        raise ReportError(f"{root / EVALUATE_DIR}/<model>/<strategy>/{TRAIN_TEST}: not readable ({e}); "
                          "rerun the `evaluate` stages") from None


def read_masked_steps(root: Path, run: str) -> pl.DataFrame | None:
    """data/evaluate/<run>/masked_steps.csv (fold, condition, clip_id, modality, steps, n_masked,
    n_steps); None when absent (written by evaluate since the instance view names the masked steps)."""
    path = root / EVALUATE_DIR / run / MASKED_STEPS
    if not path.is_file():
        return None
    table = read_csv(path, "evaluate", {"fold": "int", "condition": "str", "clip_id": "str", "modality": "str",
                                        "steps": "str", "n_masked": "int", "n_steps": "int"}) if _has_rows(path) else None
    return table


def _has_rows(path: Path) -> bool:
    with path.open() as f:
        return sum(1 for _ in zip(range(2), f)) > 1
