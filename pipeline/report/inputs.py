"""Reading what the report is made of. Every missing or malformed input is a `ReportError` that names
the file and the stage that writes it, so a user knows what to rerun.

Inputs (relative to the repository root; one folder per run family, written by its own DVC stages):
    data/evaluate/<model>/<strategy>/results.csv    model, fold, seed, condition, family, modality, level, metric,
                                                    value (one row per fold and seed; the replicate of the
                                                    report's statistics is the (fold, seed) pair)
    data/evaluate/<model>/<strategy>/summary.csv    model, condition, family, modality, level, metric, mean, std,
                                                    n_seeds
    data/evaluate/<model>/<strategy>/predictions.csv
    data/evaluate/<model>/<strategy>/masked_steps.csv  optional: the steps each `missing` condition removed
                                                    per test clip (the instance view)
    data/evaluate/<model>/<strategy>/train_test.csv optional: the train-rate × test-rate matrix
    data/models/<model>/<strategy>/seed_<s>/history.csv  epoch, devel_macro_f1 (+ train_loss, devel_loss, …)
    data/models/<model>/eliminate/importance.json   the importance search behind those runs (optional)
    data/segments/segments.json                     classes, rate_hz, modalities (backbone, pretrained…)
    data/segments/segments.npz                      optional: the partition of every sequence
    data/corpus/manifest.parquet                    corpus name, classes, clips, speakers
family, modality and level describe each condition (pipeline.evaluate.condition_columns): the robustness
curves are drawn from them, condition names are never parsed here. CSV files are read with polars (as the
pipeline writes them), every cell as text first, so that a bad cell is reported by file, line and column.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline.config import EVALUATE_DIR, MANIFEST, MODELS_DIR, SEGMENTS_DIR
from pipeline.protocols import REPLICATE
from pipeline.corpus.manifest import read_manifest
from pipeline.segments import META, NPZ, ModalityInfo
from pipeline.store import StoreError

RESULTS = "results.csv"
SUMMARY = "summary.csv"
HISTORY = "history.csv"
PREDICTIONS = "predictions.csv"
MASKED_STEPS = "masked_steps.csv"
TRAIN_TEST = "train_test.csv"
DEVEL_METRICS = ("devel_macro_f1", "devel_ccc_mean")  # classification, regression (pipeline.train)
# how read_csv converts a column: 'std' takes an empty cell as NaN (one seed), 'level' as None (no level)
Kind = Literal["str", "int", "float", "std", "level"]
RESULT_COLUMNS: dict[str, Kind] = {"model": "str", "seed": "int", "condition": "str", "family": "str",
                                   "modality": "str", "level": "level", "metric": "str", "value": "float"}
SUMMARY_COLUMNS: dict[str, Kind] = {"model": "str", "condition": "str", "family": "str", "modality": "str",
                                    "level": "level", "metric": "str", "mean": "float", "std": "std", "n_seeds": "int"}


class ReportError(Exception):
    """An input of the report is missing or does not follow its contract; the message names the file."""


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


@dataclass
class History:
    """One training run's per-epoch log: `epoch` and every other numeric column by name."""

    epoch: list[int]
    columns: dict[str, list[float]]
    early_stop: str = ""  # the column that selected the kept epoch (history.csv's early_stop; '' when not logged)


@dataclass
class CorpusSummary:
    name: str
    classes: list[str]
    n_clips: int
    n_speakers: int
    class_counts: dict[str, int]
    partition_counts: dict[str, int]  # empty when neither manifest nor segments assign partitions
    partition_source: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SegmentsMeta:
    classes: list[str]
    rate_hz: float
    modalities: dict[str, ModalityInfo]
    extra: dict[str, Any] = field(default_factory=dict)  # protocol, folds, corpus… (segment stage)


def history_path(root: Path, model: str, seed: int) -> Path:
    """`model` is a run name '<model>/<strategy>'; `seed` a replicate (`replicates`)."""
    plain = root / MODELS_DIR / model / f"seed_{seed}" / HISTORY
    if seed < REPLICATE or plain.exists():
        return plain
    fold, seed = divmod(seed, REPLICATE)
    return root / MODELS_DIR / model / f"fold_{fold - 1}" / f"seed_{seed}" / HISTORY


def replicates(table: pl.DataFrame) -> pl.DataFrame:
    """`seed` as the report's replicate: under several folds each (fold, seed) pair is one, numbered
    (fold + 1)·REPLICATE + seed (pipeline.protocols.replicate), so paired statistics pair the same fold and seed."""
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


def require(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise ReportError(f"{path}: not found; it is written by the `{stage}` stage (run `dvc repro {stage}`)")
    return path


def _convert(raw: pl.DataFrame, path: Path, col: str, kind: Kind) -> pl.Series:
    """Column `col` of an all-text table as `kind`; a ReportError naming the first bad cell. Numbers
    are what float() reads ('nan' and 'inf' included); an empty cell is an error, not a silent NaN,
    except where `kind` gives it a meaning ('std', 'level')."""
    if kind == "str":
        return raw[col].fill_null("")
    text = raw[col].str.strip_chars()
    num = text.cast(pl.Float64, strict=False)
    empty = text.fill_null("") == ""
    bad = num.is_null() & ~empty if kind in ("std", "level") else num.is_null()
    if kind == "int":
        bad = bad | ~num.is_finite().fill_null(False) | (num != num.floor()).fill_null(False)
    if bad.any():
        i = bad.arg_true()[0]
        cell = raw[col][i]
        raise ReportError(f"{path}: line {i + 2}: column '{col}' holds {cell or ''!r}, not a valid number")
    if kind == "int":
        return num.cast(pl.Int64)
    return num.fill_null(float("nan")) if kind == "std" else num


def read_csv(path: Path, stage: str, columns: dict[str, Kind]) -> pl.DataFrame:
    """The table at `path` with `columns` converted (see `Kind`); other columns are kept as text."""
    require(path, stage)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:  # an empty file: no header at all
        raw = pl.DataFrame()
    except pl.exceptions.PolarsError as e:
        raise ReportError(f"{path}: not a readable CSV ({e}); rerun the `{stage}` stage") from None
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise ReportError(f"{path}: lacks columns {missing} (has {raw.columns}); rerun the `{stage}` stage")
    table = raw.with_columns(_convert(raw, path, col, kind).alias(col) for col, kind in columns.items())
    if table.height == 0:
        raise ReportError(f"{path}: has a header but no rows; rerun the `{stage}` stage")
    return table


def read_results(root: Path) -> list[Result]:
    return [Result(**{k: r[k] for k in RESULT_COLUMNS}) for p in family_files(root, RESULTS)
            for r in replicates(read_csv(p, "evaluate", RESULT_COLUMNS)).iter_rows(named=True)]


def read_summary(root: Path) -> list[SummaryRow]:
    return [SummaryRow(**{k: r[k] for k in SUMMARY_COLUMNS}) for p in family_files(root, SUMMARY)
            for r in read_csv(p, "evaluate", SUMMARY_COLUMNS).iter_rows(named=True)]


def read_history(root: Path, model: str, seed: int) -> History:
    path = history_path(root, model, seed)
    table = read_csv(path, "train", {"epoch": "int"})
    if not any(c in table.columns for c in DEVEL_METRICS):
        raise ReportError(f"{path}: lacks a devel metric column (one of {list(DEVEL_METRICS)}); rerun the `train` stage")
    numeric: dict[str, list[float]] = {}
    for col in table.columns:
        if col == "epoch":
            continue
        values = table[col].str.strip_chars().cast(pl.Float64, strict=False)
        if values.null_count() == 0:  # a non-numeric column (a note, a timestamp) or a gap is not plotted
            numeric[col] = values.to_list()
    stop = table["early_stop"].drop_nulls().to_list()[:1] if "early_stop" in table.columns else []
    return History(epoch=table["epoch"].to_list(), columns=numeric, early_stop=stop[0] if stop else "")


def read_segments_meta(root: Path) -> SegmentsMeta:
    path = require(root / SEGMENTS_DIR / META, "segment")
    try:
        meta = json.loads(path.read_text())
        mods = {m: ModalityInfo(**info) for m, info in meta["modalities"].items()}
        extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
        return SegmentsMeta(classes=list(meta["classes"]), rate_hz=float(meta["rate_hz"]), modalities=mods, extra=extra)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ReportError(f"{path}: does not follow the segments contract ({type(e).__name__}: {e}); "
                          f"rerun the `segment` stage") from None


def read_corpus(root: Path) -> CorpusSummary:
    path = require(root / MANIFEST, "corpus")
    try:
        info, clips = read_manifest(path)
    except StoreError as e:
        raise ReportError(f"{e}; rerun the `corpus` stage") from None
    partitions = Counter(c.partition for c in clips if c.partition)
    source = "manifest"
    npz = root / SEGMENTS_DIR / NPZ
    if not partitions and npz.is_file():
        # the corpus leaves partitions to `segment`; read only that array (np.load is lazy per key)
        try:
            with np.load(npz, allow_pickle=False) as z:
                partitions = Counter(str(p) for p in z["partition"])
            source = "segments"
        except (OSError, KeyError, ValueError):
            partitions = Counter()
    labels = Counter(c.label for c in clips if c.label is not None)
    return CorpusSummary(
        name=info.name,
        classes=list(info.classes),
        n_clips=len(clips),
        n_speakers=len({c.speaker for c in clips}),
        class_counts={k: labels.get(k, 0) for k in info.classes},
        partition_counts={p: partitions[p] for p in ("train", "devel", "test") if p in partitions},
        partition_source=source if partitions else "",
        params=dict(info.params),
    )


def _json_object(path: Path, rerun: str) -> dict[str, Any]:
    """A JSON file holding an object; a ReportError naming the file and what to rerun otherwise."""
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({e}); rerun {rerun}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a JSON object; rerun {rerun}")
    return data


def read_importance(root: Path) -> dict[str, Any]:
    """{model: entry}: the importance search that drove each model's eliminate runs
    (data/models/<model>/eliminate/importance.json, a copy of data/importance/<model>.json); {} when
    no eliminate run exists."""
    out: dict[str, Any] = {}
    for path in sorted((root / MODELS_DIR).glob("*/eliminate/importance.json")):
        out[path.parent.parent.name] = _json_object(path, f"`dvc repro train_eliminate@{path.parent.parent.name}`")
    return out


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
    """The first (sorted) clip of `model`/`seed`/`condition` in a regression predictions.csv; None when
    the file is absent or holds classification predictions."""
    path = root / EVALUATE_DIR / model / PREDICTIONS
    header = _header(path)
    if header is None or not {"step", "target"} <= set(header):
        return None
    table = read_csv(path, "evaluate", {"model": "str", "seed": "int", "condition": "str", "clip_id": "str",
                                        "step": "int", "target": "str", "true": "float", "pred": "float"})
    rows = replicates(table).filter((pl.col("model") == model) & (pl.col("seed") == seed) & (pl.col("condition") == condition))
    if rows.height == 0:
        return None
    clip = rows["clip_id"].min()
    targets: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for r in rows.filter(pl.col("clip_id") == clip).sort("step", maintain_order=True).iter_rows(named=True):
        t = targets.setdefault(r["target"], ([], [], []))
        t[0].append(r["step"]), t[1].append(r["true"]), t[2].append(r["pred"])
    return Trace(model, seed, clip, targets)


def read_run_inputs(root: Path, run: str, seed: int) -> list[str] | None:
    """The modalities run `run` (replicate `seed`) was trained on, from its model.pt ('modalities');
    None when the file is absent (a report built from results alone): then every modality counts as
    an input. torch is imported here only: the checkpoint is memory-mapped and its tensors never read."""
    path = history_path(root, run, seed).parent / "model.pt"
    if not path.is_file():
        return None
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise ReportError(f"{path}: unreadable model file ({type(e).__name__}); rerun the `train` stage") from None
    mods = blob.get("modalities") if isinstance(blob, dict) else None
    if not isinstance(mods, (list, tuple)) or not all(isinstance(m, str) for m in mods):
        raise ReportError(f"{path}: holds no list of 'modalities'; rerun the `train` stage")
    return list(mods)


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
        data = _json_object(path, "the `evaluate` stage")
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
    from pipeline import robustness

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
    from pipeline import robustness

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
