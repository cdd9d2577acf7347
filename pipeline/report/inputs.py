"""Reading what the report is made of. Every missing or malformed input is a `ReportError` that names
the file and the stage that writes it, so a user knows what to rerun.

Inputs (relative to the repository root; one folder per run family, written by its own DVC stages):
    data/evaluate/<model>/<strategy>/results.csv    model, seed, condition, metric, value (one row per seed)
    data/evaluate/<model>/<strategy>/summary.csv    model, condition, metric, mean, std, n_seeds
    data/evaluate/<model>/<strategy>/predictions.csv
    data/models/<model>/<strategy>/seed_<s>/history.csv  epoch, devel_macro_f1 (+ train_loss, devel_loss, …)
    data/models/<model>/eliminate/importance.json   the importance search behind those runs (optional)
    data/segments/segments.json                     classes, rate_hz, modalities (backbone, pretrained…)
    data/segments/segments.npz                      optional: the partition of every sequence
    data/corpus/manifest.parquet                    corpus name, classes, clips, speakers
CSV files are read with the csv module: they are small, and it keeps the report free of pandas.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.config import EVALUATE_DIR, MANIFEST, MODELS_DIR, SEGMENTS_DIR
from pipeline.corpus.manifest import read_manifest
from pipeline.segments import META, NPZ, ModalityInfo
from pipeline.store import StoreError

RESULTS = "results.csv"
SUMMARY = "summary.csv"
HISTORY = "history.csv"
PREDICTIONS = "predictions.csv"
DEVEL_METRICS = ("devel_macro_f1", "devel_ccc_mean")  # classification, regression (pipeline.train)


class ReportError(Exception):
    """An input of the report is missing or does not follow its contract; the message names the file."""


@dataclass(frozen=True)
class Result:
    model: str
    seed: int
    condition: str
    metric: str
    value: float


@dataclass(frozen=True)
class SummaryRow:
    model: str
    condition: str
    metric: str
    mean: float
    std: float
    n_seeds: int


@dataclass
class History:
    """One training run's per-epoch log: `epoch` and every other numeric column by name."""

    epoch: list[int]
    columns: dict[str, list[float]]


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


def history_path(root: Path, model: str, seed: int) -> Path:
    """`model` is a run name '<model>/<strategy>'."""
    return root / MODELS_DIR / model / f"seed_{seed}" / HISTORY


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


def _float(s: str) -> float:
    # float() accepts 'nan'/'inf'; an empty cell is an error, not a silent NaN
    if s is None or not s.strip():
        raise ValueError("empty")
    return float(s)


def _int(s: str) -> int:
    v = _float(s)
    if not v.is_integer():
        raise ValueError("not an integer")
    return int(v)


def read_csv(path: Path, stage: str, columns: dict[str, Callable[[str], Any]]) -> list[dict[str, Any]]:
    """Rows of `path` with `columns` converted; extra columns are kept as strings."""
    require(path, stage)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise ReportError(f"{path}: lacks columns {missing} (has {header}); rerun the `{stage}` stage")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, Any] = dict(raw)
            for col, conv in columns.items():
                try:
                    row[col] = conv(raw[col])
                except (TypeError, ValueError):
                    raise ReportError(
                        f"{path}: line {line}: column '{col}' holds {raw[col]!r}, not a valid number"
                    ) from None
            rows.append(row)
    if not rows:
        raise ReportError(f"{path}: has a header but no rows; rerun the `{stage}` stage")
    return rows


def read_results(root: Path) -> list[Result]:
    cols = {"model": str, "seed": _int, "condition": str, "metric": str, "value": _float}
    return [Result(**{k: r[k] for k in cols}) for p in family_files(root, RESULTS) for r in read_csv(p, "evaluate", cols)]


def read_summary(root: Path) -> list[SummaryRow]:
    cols = {"model": str, "condition": str, "metric": str, "mean": _float, "std": _std, "n_seeds": _int}
    return [SummaryRow(**{k: r[k] for k in cols}) for p in family_files(root, SUMMARY) for r in read_csv(p, "evaluate", cols)]


def _std(s: str) -> float:
    # one seed has no spread: evaluate may leave the cell empty
    return math.nan if s is None or not s.strip() else float(s)


def read_history(root: Path, model: str, seed: int) -> History:
    path = history_path(root, model, seed)
    rows = read_csv(path, "train", {"epoch": _int})
    if not any(c in rows[0] for c in DEVEL_METRICS):
        raise ReportError(f"{path}: lacks a devel metric column (one of {list(DEVEL_METRICS)}); rerun the `train` stage")
    numeric: dict[str, list[float]] = {}
    for col in rows[0]:
        if col == "epoch":
            continue
        try:
            numeric[col] = [_float(r[col]) if isinstance(r[col], str) else float(r[col]) for r in rows]
        except (TypeError, ValueError):
            continue  # a non-numeric column (a note, a timestamp) is not plotted
    return History(epoch=[r["epoch"] for r in rows], columns=numeric)


def read_segments_meta(root: Path) -> SegmentsMeta:
    path = require(root / SEGMENTS_DIR / META, "segment")
    try:
        meta = json.loads(path.read_text())
        mods = {m: ModalityInfo(**info) for m, info in meta["modalities"].items()}
        return SegmentsMeta(classes=list(meta["classes"]), rate_hz=float(meta["rate_hz"]), modalities=mods)
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


def read_importance(root: Path) -> dict[str, Any]:
    """{model: entry}: the importance search that drove each model's eliminate runs
    (data/models/<model>/eliminate/importance.json, a copy of data/importance/<model>.json); {} when
    no eliminate run exists."""
    out: dict[str, Any] = {}
    for path in sorted((root / MODELS_DIR).glob("*/eliminate/importance.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise ReportError(f"{path}: not valid JSON ({e}); rerun `dvc repro train_eliminate@{path.parent.parent.name}`") from None
        if not isinstance(data, dict):
            raise ReportError(f"{path}: not a JSON object; rerun `dvc repro train_eliminate@{path.parent.parent.name}`")
        out[path.parent.parent.name] = data
    return out


@dataclass
class Trace:
    """Predicted and true regression curves of one test clip: {target: (steps, true, pred)}."""

    model: str
    seed: int
    clip_id: str
    targets: dict[str, tuple[list[int], list[float], list[float]]]


def read_trace(root: Path, model: str, seed: int, condition: str) -> Trace | None:
    """The first (sorted) clip of `model`/`seed`/`condition` in a regression predictions.csv; None when
    the file is absent or holds classification predictions."""
    path = root / EVALUATE_DIR / model / PREDICTIONS
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    if not {"step", "target"} <= set(header):
        return None
    rows = [r for r in read_csv(path, "evaluate", {"seed": _int, "step": _int, "true": _float, "pred": _float})
            if r["model"] == model and r["seed"] == seed and r["condition"] == condition]
    if not rows:
        return None
    clip = min(r["clip_id"] for r in rows)
    targets: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for r in sorted((r for r in rows if r["clip_id"] == clip), key=lambda r: r["step"]):
        t = targets.setdefault(r["target"], ([], [], []))
        t[0].append(r["step"]), t[1].append(r["true"]), t[2].append(r["pred"])
    return Trace(model, seed, clip, targets)
