"""The contract between `segment` and everything downstream (train, evaluate, report, predict).

`data/segments/segments.npz` holds, for N sequences on a common grid of T steps:

    clip_id    str   [N]
    partition  str   [N]          'train' | 'devel' | 'test'
    label      int64 [N]          index into `classes`, -1 where the clip has none
    length     int64 [N]          number of grid steps the clip covers (the rest is padding); windows/frames:
                                  the steps of the window within its clip; native: the longest modality's
    t          float64 [N, T]     seconds from the clip start, step centre (windows/frames: origin included);
                                  native: the row times of the modality with the most steps, 0 past them
    x__<mod>   float32 [N, T, D]  z-normalised features (train-partition statistics); 0 where absent
    mask__<mod> bool  [N, T]      True where the modality is present at that step
    mean__<mod>, std__<mod> float32 [D]  the normalisation statistics
    folds      str [K, N]     only with several folds (segment.partition.protocol): fold k's partitions;
                              `partition` and the z-scores of `x` are fold 0's
    fold_mean__<mod>, fold_std__<mod> float32 [K, D]  each fold's statistics (`Segments.for_fold`)
    arousal, valence float32 [N, T] and label_mask bool [N, T]  time-continuous targets, if any
    length__<mod> int64 [N]  only under layout `native`: the modality's own true length (steps of its
                              own rate; x__<mod> is then [N, T_mod, D] with its own T_mod)
    origin     int64 [N]      only under layout `windows`/`frames` over long recordings: the first step
                              of the sequence within its clip (clip_id repeats, one row per window)

Layouts (`segment.layout`, segments.json "layout"): `aligned` (every modality on one grid, one sequence
per clip), `windows` (the grid cut into windows of `win` steps with hop `hop`), `frames` (a fixed number
of frames at one modality's rate, faster modalities stacked onto each frame), `native` (each modality at
its own rate and maximum length, unaligned). `Segments.valid(m)` [N, T_m] marks the steps within each
sequence's true length for modality m (padding False), whatever the layout; `mask[m]` ⊆ `valid(m)`.

`data/segments/segments.json` holds the rest: classes, rate, and per modality its feature table,
dimension, backbone and whether the backbone's weights are pretrained. Its "extra" names the corpus,
protocol and number of folds, and per layout: windows `win`/`hop`; frames `frames` and `stack`
({modality: k rows stacked per frame}; that modality's dim is k·D; with `stack_seconds` also there, k is
the n frames of context side by side, dim n·D); native `native_max_steps` ({modality:
maximum length}) and, where the corpus has arousal/valence, `continuous_labels` saying they were not
written. Under `native`, `rate_hz` is segment.rate_hz only (no common grid; ModalityInfo.rate_hz is each
modality's own, None for words).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.paths import SEGMENTS_DIR
from pipeline.store import StoreError, atomic_path, write_json

NPZ = "segments.npz"
META = "segments.json"


@dataclass
class ModalityInfo:
    feature: str
    dim: int
    backbone: str
    pretrained: bool
    weights_statement: str
    rate_hz: float | None = None


@dataclass
class Segments:
    clip_id: np.ndarray
    partition: np.ndarray
    label: np.ndarray
    length: np.ndarray
    t: np.ndarray
    x: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    classes: list[str]
    rate_hz: float
    modalities: dict[str, ModalityInfo]
    arousal: np.ndarray | None = None
    valence: np.ndarray | None = None
    label_mask: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # protocols with several folds (pipeline/protocols.py): partitions [K, N] and each fold's
    # normalisation statistics [K, D]; `partition`, `x`, `mean`, `std` are fold 0's
    folds: np.ndarray | None = None
    fold_mean: dict[str, np.ndarray] = field(default_factory=dict)
    fold_std: dict[str, np.ndarray] = field(default_factory=dict)
    layout: str = "aligned"
    # layout `native`: {modality: true length [N]} in the modality's own steps; otherwise empty (= `length`)
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    origin: np.ndarray | None = None  # windows/frames: first step of each sequence within its clip

    def modality_length(self, m: str) -> np.ndarray:
        """[N] true length of each sequence in modality m's steps."""
        return self.lengths.get(m, self.length)

    def valid(self, m: str) -> np.ndarray:
        """[N, T_m] bool: the steps within each sequence's true length (False on padding)."""
        steps = np.arange(self.x[m].shape[1])
        return steps[None, :] < self.modality_length(m)[:, None]

    @property
    def n(self) -> int:
        return len(self.clip_id)

    @property
    def n_folds(self) -> int:
        return 1 if self.folds is None else len(self.folds)

    def for_fold(self, k: int) -> "Segments":
        """These sequences as fold k sees them: its partition, its training partition's z-scores."""
        if k == 0 or self.folds is None:
            if k != 0:
                raise IndexError(f"fold {k}: the segments hold one fold")
            return self
        x = {}
        for m, v in self.x.items():
            raw = v * self.std[m] + self.mean[m]
            out = ((raw - self.fold_mean[m][k]) / self.fold_std[m][k]).astype(np.float32)
            out[~self.mask[m]] = 0.0
            x[m] = out
        return replace(self, partition=self.folds[k], x=x,
                       mean={m: self.fold_mean[m][k] for m in self.x}, std={m: self.fold_std[m][k] for m in self.x})

    def indices(self, partition: str) -> np.ndarray:
        return np.flatnonzero(self.partition == partition)

    def save(self, out_dir: str | Path = SEGMENTS_DIR) -> None:
        out_dir = Path(out_dir)
        arrays: dict[str, np.ndarray] = {
            "clip_id": self.clip_id.astype(str),
            "partition": self.partition.astype(str),
            "label": self.label.astype(np.int64),
            "length": self.length.astype(np.int64),
            "t": self.t.astype(np.float64),
        }
        for m in self.modalities:
            arrays[f"x__{m}"] = self.x[m].astype(np.float32)
            arrays[f"mask__{m}"] = self.mask[m].astype(bool)
            arrays[f"mean__{m}"] = self.mean[m].astype(np.float32)
            arrays[f"std__{m}"] = self.std[m].astype(np.float32)
        if self.folds is not None and len(self.folds) > 1:
            arrays["folds"] = self.folds.astype(str)
            for m in self.modalities:
                arrays[f"fold_mean__{m}"] = self.fold_mean[m].astype(np.float32)
                arrays[f"fold_std__{m}"] = self.fold_std[m].astype(np.float32)
        for m, v in self.lengths.items():
            arrays[f"length__{m}"] = v.astype(np.int64)
        if self.origin is not None:
            arrays["origin"] = self.origin.astype(np.int64)
        if self.arousal is not None:
            arrays["arousal"] = self.arousal.astype(np.float32)
            arrays["valence"] = self.valence.astype(np.float32)
            arrays["label_mask"] = self.label_mask.astype(bool)
        with atomic_path(out_dir / NPZ, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        write_json(
            out_dir / META,
            {
                "classes": self.classes,
                "rate_hz": self.rate_hz,
                "layout": self.layout,
                "modalities": {m: info.__dict__ for m, info in self.modalities.items()},
                "extra": self.extra,
            },
        )


def load_segments(in_dir: str | Path = SEGMENTS_DIR) -> Segments:
    in_dir = Path(in_dir)
    npz_path, meta_path = in_dir / NPZ, in_dir / META
    for p in (npz_path, meta_path):
        if not p.exists():
            raise StoreError(f"{p}: not found; run the segment stage (`dvc repro segment`)")
    meta = json.loads(meta_path.read_text())
    with np.load(npz_path, allow_pickle=False) as z:
        arr = {k: z[k] for k in z.files}
    mods = {m: ModalityInfo(**info) for m, info in meta["modalities"].items()}
    return Segments(
        clip_id=arr["clip_id"],
        partition=arr["partition"],
        label=arr["label"],
        length=arr["length"],
        t=arr["t"],
        x={m: arr[f"x__{m}"] for m in mods},
        mask={m: arr[f"mask__{m}"] for m in mods},
        mean={m: arr[f"mean__{m}"] for m in mods},
        std={m: arr[f"std__{m}"] for m in mods},
        classes=list(meta["classes"]),
        rate_hz=float(meta["rate_hz"]),
        modalities=mods,
        arousal=arr.get("arousal"),
        valence=arr.get("valence"),
        label_mask=arr.get("label_mask"),
        extra=meta.get("extra", {}),
        folds=arr.get("folds"),
        fold_mean={m: arr[f"fold_mean__{m}"] for m in mods if f"fold_mean__{m}" in arr},
        fold_std={m: arr[f"fold_std__{m}"] for m in mods if f"fold_std__{m}" in arr},
        layout=meta.get("layout", "aligned"),
        lengths={m: arr[f"length__{m}"] for m in mods if f"length__{m}" in arr},
        origin=arr.get("origin"),
    )
