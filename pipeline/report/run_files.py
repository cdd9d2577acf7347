"""Readers of the report's run and upstream files: what each training run left beside its model and what
the corpus and segment stages wrote. The evaluate stages' tables are read in `eval_files` (which re-exports
everything here); the checked reading both share is `reading`.

    data/models/<model>/<strategy>/seed_<s>/history.csv  epoch, devel_macro_f1 (+ train_loss, devel_loss, …)
    data/models/<model>/<strategy>/seed_<s>/model.pt     the modalities the run was trained on
    data/models/<model>/eliminate/importance.json   the importance search behind those runs (optional)
    data/segments/segments.json                     classes, rate_hz, modalities (backbone, pretrained…)
    data/segments/partition.npy                     optional: the partition of every sequence (or
                                                    segments.npz's, the older format)
    data/corpus/manifest.parquet                    corpus name, classes, clips, speakers
Under several folds a run's files sit one level deeper, in fold_<f>/seed_<s>/ (`history_path`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.core.paths import MANIFEST, MODELS_DIR, SEGMENTS_DIR
from pipeline.core.store import StoreError
from pipeline.corpus.manifest import read_manifest
from pipeline.report.reading import ReportError, json_object, read_csv, require
from pipeline.segment.contract import META, ModalityInfo, read_segments_array
from pipeline.segment.protocols import REPLICATE

HISTORY = "history.csv"
DEVEL_METRICS = ("devel_macro_f1", "devel_ccc_mean")  # classification, regression (pipeline.train.loop)


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
    """`model` is a run name '<model>/<strategy>'; `seed` a replicate (`inputs.replicates`)."""
    plain = root / MODELS_DIR / model / f"seed_{seed}" / HISTORY
    if seed < REPLICATE or plain.exists():
        return plain
    fold, seed = divmod(seed, REPLICATE)
    return root / MODELS_DIR / model / f"fold_{fold - 1}" / f"seed_{seed}" / HISTORY


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
    if not partitions:
        # the corpus leaves partitions to `segment`; read only that array (either segments format)
        try:
            partition = read_segments_array(root / SEGMENTS_DIR, "partition")
        except StoreError:
            partition = None
        if partition is not None:
            partitions = Counter(str(p) for p in partition)
            source = "segments"
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
        out[path.parent.parent.name] = json_object(path, f"`dvc repro train_eliminate@{path.parent.parent.name}`")
    return out


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
