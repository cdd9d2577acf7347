"""The contract between `segment` and everything downstream (train, evaluate, report, predict).

`data/segments/` holds, for N sequences on a common grid of T steps, one uncompressed `<key>.npy` per
array (format 2; `segments.json` lists each with its shape and dtype):

    clip_id    str   [N]          (fixed-width unicode, as every string array: no pickle)
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
    ctx__<mod> float32 [R, D], ctx_start__<mod> int64 [N]  instead of x__<mod> for a modality with a context
                              window (frames + `stack_seconds`): each clip's D-dim frames once, padded, and
                              each sequence's first row; `x[mod]` is then a `ContextFrames` [N, T, n·D]
                              built per batch (pipeline/segment/lazy.py), values identical to the stacked copy

Reading (`load_segments`): every `x__*`/`ctx__*` array is memory-mapped (`np.load(mmap_mode="r")`), the
small ones (masks, labels, times: N×T at most) are read; `Segments.for_fold` and a `Split`
(pipeline/runs/files.py) are lazy views over those arrays, so training and scoring read one batch of rows at
a time and nothing holds a corpus's features whole. Why `.npy` + mmap rather than Arrow IPC or one file
per fold: a shuffled batch is random rows of every array, which a memory-mapped `.npy` gives straight
from the page cache with no copy and no decode (Arrow IPC is built for columnar scans; its
fixed-size-list tensors add a layer for nothing here), folds share one copy of the features (per-fold
files would store them K times: 20 for 001's protocol), and numpy needs no new dependency. Writing is
atomic for the folder as a whole (`pipeline.core.store.staged_dir`: written beside it, `segments.json` last,
then swapped into place; the segment stage builds the feature arrays straight into that staging folder,
`pipeline.segment.stage.segment_to`); a folder lacking `segments.json` or one of the arrays it lists is rejected.
The previous format, one compressed `segments.npz` with the same keys (and `x__<mod>` stacked in full
for a context modality), is still read, whole into memory, with the same result.

Layouts (`segment.layout`, segments.json "layout"): `aligned` (every modality on one grid, one sequence
per clip), `windows` (the grid cut into windows of `win` steps with hop `hop`), `frames` (a fixed number
of frames at one modality's rate, faster modalities stacked onto each frame), `native` (each modality at
its own rate and maximum length, unaligned). `Segments.valid(m)` [N, T_m] marks the steps within each
sequence's true length for modality m (padding False), whatever the layout; `mask[m]` ⊆ `valid(m)`.

`data/segments/segments.json` holds the rest: classes, rate, and per modality its feature table,
dimension, backbone and whether the backbone's weights are pretrained (and "format": 2, "arrays"
{key: {shape, dtype}}, "context" {modality: n}). Its "extra" names the corpus,
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

from pipeline.core.errors import PipelineError
from pipeline.core.paths import SEGMENTS_DIR
from pipeline.core.store import StoreError, atomic_path, staged_dir, write_json
from pipeline.segment.lazy import (
    ContextFrames,
    LazyRows,
    Renormalised,
    iter_chunks,
    release_pages,
    take_rows,
)

NPZ = "segments.npz"  # format 1 (read only)
META = "segments.json"
FORMAT = 2
MMAP_PREFIXES = ("x__", "ctx__")  # the feature arrays: memory-mapped, never read whole


@dataclass
class ModalityInfo:
    feature: str
    dim: int
    backbone: str
    pretrained: bool
    weights_statement: str
    rate_hz: float | None = None
    silence: str | None = None  # an audio feature's silence policy (its params' `silence`: mask | keep)
    # raw (not z-scored) feature of the token a missing step stands for (BERT's [UNK]; `FeatureMeta`), or None
    missing_token: list[float] | None = None


class ModalitiesLacking(PipelineError):
    """A stage needs modalities that the segments do not hold."""


@dataclass
class Segments:
    clip_id: np.ndarray
    partition: np.ndarray
    label: np.ndarray
    length: np.ndarray
    t: np.ndarray
    x: dict[str, Any]  # {mod: [N, T, D] float32}: an ndarray, a read-only memmap or a lazy view (lazy_arrays)
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
    # protocols with several folds (pipeline/segment/protocols.py): partitions [K, N] and each fold's
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

    @property
    def fold_ids(self) -> list[int | None]:
        """The folds runs are stored under: [None] for one fold (no fold level in paths), else 0 … K−1."""
        return [None] if self.n_folds == 1 else list(range(self.n_folds))

    def require(self, modalities: list[str], who: str) -> None:
        """ModalitiesLacking (one line) unless the segments hold every one of `modalities`."""
        lacking = [m for m in modalities if m not in self.x]
        if lacking:
            raise ModalitiesLacking(
                f"{who} needs modalities {lacking} that the segments lack (they hold {list(self.x)}); "
                f"add them to segment.modalities or remove them from train.modalities"
            )

    def for_fold(self, k: int) -> "Segments":
        """These sequences as fold k sees them: its partition, its training partition's z-scores (a lazy
        view per modality, `Renormalised`: rows are re-normalised when read, the same bits as the whole)."""
        if k == 0 or self.folds is None:
            if k != 0:
                raise IndexError(f"fold {k}: the segments hold one fold")
            return self
        x = {m: Renormalised(v, self.mask[m], self.mean[m], self.std[m], self.fold_mean[m][k], self.fold_std[m][k])
             for m, v in self.x.items()}
        return replace(self, partition=self.folds[k], x=x,
                       mean={m: self.fold_mean[m][k] for m in self.x}, std={m: self.fold_std[m][k] for m in self.x})

    def indices(self, partition: str) -> np.ndarray:
        return np.flatnonzero(self.partition == partition)

    def save(self, out_dir: str | Path = SEGMENTS_DIR) -> None:
        """Write the folder (format 2), array by array, atomically as a whole (`staged_dir`)."""
        with staged_dir(out_dir) as tmp:
            self.write_into(tmp)

    def write_into(self, tmp: Path) -> None:
        """Write every array and segments.json (last) into the folder `tmp`; a feature array that is
        already its `.npy` there (memory-mapped: the segment stage builds them in place, `segment_to`) is
        flushed, not copied."""
        tmp = Path(tmp)
        small: dict[str, tuple[Any, Any]] = {
            "clip_id": (self.clip_id, str),
            "partition": (self.partition, str),
            "label": (self.label, np.int64),
            "length": (self.length, np.int64),
            "t": (self.t, np.float64),
        }
        for m in self.modalities:
            small[f"mask__{m}"] = (self.mask[m], bool)
            small[f"mean__{m}"] = (self.mean[m], np.float32)
            small[f"std__{m}"] = (self.std[m], np.float32)
        if self.folds is not None and len(self.folds) > 1:
            small["folds"] = (self.folds, str)
            for m in self.modalities:
                small[f"fold_mean__{m}"] = (self.fold_mean[m], np.float32)
                small[f"fold_std__{m}"] = (self.fold_std[m], np.float32)
        for m, v in self.lengths.items():
            small[f"length__{m}"] = (v, np.int64)
        if self.origin is not None:
            small["origin"] = (self.origin, np.int64)
        if self.arousal is not None:
            small.update(arousal=(self.arousal, np.float32), valence=(self.valence, np.float32),
                         label_mask=(self.label_mask, bool))
        arrays: dict[str, dict[str, Any]] = {}
        context: dict[str, int] = {}
        for key, (value, dtype) in small.items():
            arrays[key] = _write_array(tmp, key, value, dtype)
        for m in self.modalities:
            v = self.x[m]
            if isinstance(v, ContextFrames):  # the D-dim frames once, not the n·D-dim stacked copy
                arrays[f"ctx__{m}"] = _write_array(tmp, f"ctx__{m}", v.table, np.float32)
                arrays[f"ctx_start__{m}"] = _write_array(tmp, f"ctx_start__{m}", v.start, np.int64)
                context[m] = v.n
            else:
                arrays[f"x__{m}"] = _write_array(tmp, f"x__{m}", v, np.float32)
        write_json(tmp / META, {  # last: a folder without it is not a finished one
            "format": FORMAT,
            "classes": self.classes,
            "rate_hz": self.rate_hz,
            "layout": self.layout,
            # a modality without a missing token writes none (the folder keeps the bytes it had before tokens)
            "modalities": {m: {k: v for k, v in info.__dict__.items() if not (k == "missing_token" and v is None)}
                           for m, info in self.modalities.items()},
            "extra": self.extra,
            "context": context,
            "arrays": arrays,
        })


def _write_array(folder: Path, key: str, value: Any, dtype: Any) -> dict[str, Any]:
    """<folder>/<key>.npy; a lazy or memory-mapped array is written a block of rows at a time (never whole
    in memory). Returns {shape, dtype} for segments.json."""
    dtype = np.dtype(dtype)
    target = folder / f"{key}.npy"
    if isinstance(value, np.memmap) and value.filename and Path(value.filename).resolve() == target.resolve():
        value.flush()  # built in place (`segment_to`)
        release_pages(value)
        return {"shape": list(value.shape), "dtype": value.dtype.str}
    with atomic_path(target, suffix=".npy") as tmp, open(tmp, "wb") as f:
        if isinstance(value, (LazyRows, np.memmap)):
            shape = tuple(value.shape)
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
            for a, b in iter_chunks(value):
                f.write(np.ascontiguousarray(take_rows(value, np.arange(a, b)), dtype=dtype).data)
        else:
            arr = np.asarray(value).astype(dtype, copy=False)
            np.save(f, arr, allow_pickle=False)
            shape, dtype = arr.shape, arr.dtype
    return {"shape": list(shape), "dtype": dtype.str}


def load_segments(in_dir: str | Path = SEGMENTS_DIR) -> Segments:
    """The segments in `in_dir` (format 2: features memory-mapped; format 1's segments.npz: read whole).
    StoreError (one line naming the file) when the folder is missing, incomplete or not this contract."""
    in_dir = Path(in_dir)
    meta_path = in_dir / META
    if not meta_path.exists():
        if in_dir.is_dir() and any(in_dir.glob("*.npy")):
            raise StoreError(f"{meta_path}: not found beside the arrays: an incomplete segments folder (a write that "
                             f"did not finish?); rerun the segment stage (`dvc repro segment`)")
        raise StoreError(f"{meta_path}: not found; run the segment stage (`dvc repro segment`)")
    try:
        meta = json.loads(meta_path.read_text())
        mods = {m: ModalityInfo(**info) for m, info in meta["modalities"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StoreError(f"{meta_path}: does not follow the segments contract ({type(e).__name__}: {e}); "
                         f"rerun the segment stage") from None
    arr = _read_arrays(in_dir, meta)
    x = {}
    for m in mods:
        n = meta.get("context", {}).get(m)
        if n is None:
            x[m] = arr[f"x__{m}"]
        else:
            x[m] = ContextFrames(arr[f"ctx__{m}"], arr[f"ctx_start__{m}"], arr[f"mask__{m}"], n,
                                 arr[f"mean__{m}"], arr[f"std__{m}"])
    return Segments(
        clip_id=arr["clip_id"],
        partition=arr["partition"],
        label=arr["label"],
        length=arr["length"],
        t=arr["t"],
        x=x,
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


def read_segments_array(in_dir: str | Path, key: str) -> np.ndarray | None:
    """One small array (e.g. "partition") of the segments in `in_dir`, either format, without reading the
    others; None when the folder or the array is absent. StoreError when it is unreadable."""
    in_dir = Path(in_dir)
    path = in_dir / f"{key}.npy"
    try:
        if path.is_file():
            return np.load(path, allow_pickle=False)
        if (in_dir / NPZ).is_file():
            with np.load(in_dir / NPZ, allow_pickle=False) as z:  # lazy per key
                return z[key] if key in z.files else None
    except (OSError, ValueError) as e:
        raise StoreError(f"{path if path.is_file() else in_dir / NPZ}: unreadable ({e}); rerun the segment stage") from None
    return None


def _read_arrays(in_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """{key: array} of either format; format 2's feature arrays memory-mapped, after checking that every
    array segments.json lists is there with its shape and dtype."""
    if meta.get("format", 1) < FORMAT:
        npz_path = in_dir / NPZ
        if not npz_path.exists():
            raise StoreError(f"{npz_path}: not found; run the segment stage (`dvc repro segment`)")
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise StoreError(f"{npz_path}: unreadable ({e}); rerun the segment stage") from None
    listed = meta.get("arrays")
    if not isinstance(listed, dict):
        raise StoreError(f"{in_dir / META}: lists no arrays (format {meta.get('format')}); rerun the segment stage")
    out: dict[str, Any] = {}
    for key, spec in listed.items():
        path = in_dir / f"{key}.npy"
        if not path.is_file():
            raise StoreError(f"{path}: not found, though {META} lists it: an incomplete segments folder; "
                             f"rerun the segment stage (`dvc repro segment`)")
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        mmap = "r" if key.startswith(MMAP_PREFIXES) and int(np.prod(shape)) > 0 else None
        try:  # a truncated file fails here (its data shorter than its header says)
            a = np.load(path, mmap_mode=mmap, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: unreadable, truncated or not an array ({e}); rerun the segment stage") from None
        if a.shape != shape or a.dtype != dtype:
            raise StoreError(f"{path}: holds {a.dtype.str} {list(a.shape)}, {META} says {dtype.str} {list(shape)}: "
                             f"an incomplete or mixed segments folder; rerun the segment stage")
        out[key] = a
    return out
