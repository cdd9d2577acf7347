"""Alignment, partitions and normalisation: feature tables → `Segments` (see pipeline/segments.py).

- Alignment: every modality is put on one grid of `rate_hz` steps per clip; step k covers
  [k/r, (k+1)/r). A regular feature's step value is the mean of its present rows whose time falls in
  the step; a word (irregular feature with a span) counts for every step its span overlaps. A step
  with no present row is absent (mask False, value 0).
- Sequences: one per clip (the categorical task), cut to `max_steps` and padded to the longest.
- Partitions: by `partition.protocol` (pipeline/protocols.py): the corpus's own split (or one seeded
  speaker split), repeated speaker splits, or leave-one-group-out folds; no speaker is in two
  partitions of a fold. Several folds are stored once, with each fold's statistics (`Segments.for_fold`).
- Normalisation: z-scores with mean and standard deviation over the present steps of the training
  partition only; dimensions that are constant there keep a scale of 1.
- Memory (`segment_to`, the DVC stage): each feature table is streamed clip by clip
  (`store.iter_clip_features`), each modality's x is written into its `.npy` in the segments' staging
  folder as the clips arrive (a memory map whose written pages are given back every block), every fold's
  statistics come from two streamed passes over it (`layouts.streamed_statistics`: the same bits as
  numpy's mean/std of the selected rows) and the z-scores are written in place, a block at a time. So
  the stage holds one batch of rows, one clip and one block, plus the N×T masks, never N×T×D; its
  folder is byte for byte `segment_corpus(...).save(...)`'s (tests/test_segment_stream.py).
  `segment_corpus` alone builds in memory (small corpora, tests).

Layouts (`layout`):

- `aligned` (default, built here): the above, one sequence per clip cut to `max_steps`.
- `windows` (000 §5.3), `frames` (002 §3.3) and `native` (003 §5.3): built in pipeline/layout_builders.py
  (which describes them) from the pure pieces in pipeline/layouts.py; `segment_corpus` dispatches there.
"""

from __future__ import annotations

from pipeline.errors import PipelineError
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import Problems, Section
from pipeline.corpus.manifest import Clip, CorpusInfo, read_labels
from pipeline import lazy_arrays
from pipeline.lazy_arrays import iter_chunks, release_pages
from pipeline.layouts import MIN_STD, context_frames, statistics, streamed_statistics
from pipeline.paths import FEATURES_DIR
from pipeline.protocols import ProtocolError, assign_folds
from pipeline.segments import ModalityInfo, Segments
from pipeline.store import ClipFeatures, FeatureMeta, StoreError, iter_clip_features, read_features, read_table, staged_dir

__all__ = ["MIN_STD", "PartitionParams", "SegmentParams", "SegmentError", "align_clip", "grid_steps", "normalise",
           "segment_corpus", "segment_to"]


class PartitionParams(Section):
    """Which clips train, select and test (pipeline/protocols.py)."""

    protocol: Literal["corpus", "official", "speaker_random", "leave_one_group_out"] = Field(
        "corpus", description="corpus: the corpus's split (else one seeded speaker split); official: its validation "
        "set tests, devel carved from its training speakers (Aff-Wild2; 002, 004); speaker_random: "
        "`repeats` speaker splits (001 §4.3); leave_one_group_out: a fold per `group` (003)",
    )
    devel: float = Field(0.2, ge=0, lt=1, description="share of speakers for devel (of the training groups' under leave_one_group_out)")
    test: float = Field(0.2, gt=0, lt=1, description="share of speakers for test (speaker splits)")
    repeats: int = Field(1, ge=1, description="speaker_random: number of fresh splits (001 §4.3: 20)")
    group: Literal["speaker", "session"] = Field("speaker", description="leave_one_group_out: what a fold holds out")
    devel_from: Literal["training", "held_out"] = Field(
        "training", description="leave_one_group_out: devel speakers drawn from the training groups (a `devel` share) "
        "or from the held-out group (half its speakers, seeded; the other half tests: 003 §5.3)")
    seed: int = 0


class SegmentParams(Section):
    """The `segment` section of params.yaml."""

    # modality name -> feature table name under data/features (faces come from face_embed)
    modalities: dict[str, str] = Field(
        default_factory=lambda: {"face": "vggface", "acoustic": "egemaps", "speech": "wav2vec2", "text": "bert"}
    )
    layout: Literal["aligned", "windows", "frames", "native"] = Field(
        "aligned", description="aligned: one grid, one sequence per clip; windows: overlapping windows of long "
        "clips (000); frames: samples of `frames` frames, faster modalities stacked (002); native: each modality "
        "at its own rate and length (003)",
    )
    rate_hz: float = Field(5.0, gt=0, description="aligned/windows: the common grid; frames: the frame rate")
    max_steps: int = Field(64, ge=1, description="aligned: sequences are cut/padded to this many steps; "
                           "native: the maximum of a modality not in native_max_steps")
    win: int = Field(250, ge=1, description="windows: steps per window (000 §5.3: 250 steps = 125 s at 2 Hz)")
    hop: int = Field(50, ge=1, description="windows: steps between window starts (000 §5.3: 50 steps = 25 s)")
    frames: int = Field(100, ge=1, description="frames: frames per sample (002 §3.3: 100)")
    stack: list[str] = Field(
        default_factory=list, description="frames: modalities whose rows within one frame are stacked (k·D dims), "
        "not averaged (002 §3.2.2: the ComParE LLDs)",
    )
    stack_seconds: float | None = Field(
        None, ge=0, description="frames: instead, each frame of a `stack` modality gets that modality averaged "
        "onto the frames over a window of this many seconds centred on it, n = round(stack_seconds × rate_hz) "
        "frames side by side (n·D dims; 002 §3.2.2: 2 s at 30 fps, 60 × 65 = 3,900-d); empty or 0: off",
    )
    native_max_steps: dict[str, int] = Field(
        default_factory=dict, description="native: {modality: maximum length}; others take max_steps "
        "(003 §5.3: audio 400, vision 40, language 50)",
    )
    partition: PartitionParams = PartitionParams()

    @model_validator(mode="after")
    def _named_modalities(self) -> "SegmentParams":
        known = ", ".join(self.modalities)
        problems = [] if self.modalities else [("modalities", "names no modality; expected {name: feature table}, "
                                                "e.g. {face: vggface, acoustic: egemaps}")]
        problems += [(f"stack.{i}", f"'{m}' is not in segment.modalities ({known})")
                    for i, m in enumerate(self.stack) if m not in self.modalities]
        problems += [(f"stack.{i}", f"'{m}' is listed twice") for i, m in enumerate(self.stack) if m in self.stack[:i]]
        if self.stack_seconds and context_frames(self.stack_seconds, self.rate_hz) < 1:
            problems.append(("stack_seconds", f"{self.stack_seconds:g} s at segment.rate_hz {self.rate_hz:g} Hz is "
                             f"round({self.stack_seconds * self.rate_hz:g}) = 0 frames; use at least one frame period "
                             f"({1 / self.rate_hz:g} s), or 0 for no context"))
        problems += [(f"native_max_steps.{m}", f"'{m}' is not in segment.modalities ({known})")
                     for m in self.native_max_steps if m not in self.modalities]
        problems += [(f"native_max_steps.{m}", f"must be at least 1, got {v}")
                     for m, v in self.native_max_steps.items() if v < 1]
        if problems:
            raise Problems(problems)
        return self


class SegmentError(PipelineError):
    """Segmentation cannot proceed; the message names the table or clip and the cause."""


def grid_steps(duration: float, rate_hz: float, max_steps: int) -> int:
    return int(min(max_steps, max(1, np.ceil(duration * rate_hz - 1e-9))))


# bytes of float64 step sums `align_clip` holds at once (a block of steps)
ALIGN_BLOCK_BYTES = 16 << 20


def align_clip(
    rows: ClipFeatures | None, n_steps: int, rate_hz: float, dim: int, source_rate_hz: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(values [n_steps, dim], present [n_steps]) of one clip's rows on the grid.

    Rows are averaged per grid step. A regular feature slower than the grid (`source_rate_hz` <
    `rate_hz`, e.g. 2 Hz MuSe biosignals on a 5 Hz grid) holds each sample over its own period
    [t − ½/rate, t + ½/rate), so its steps are not marked missing between samples."""
    if rows is not None and rows.span is None and source_rate_hz and source_rate_hz < rate_hz and len(rows.t):
        half = 0.5 / source_rate_hz
        rows = ClipFeatures(rows.t, rows.present, rows.values, np.stack([rows.t - half, rows.t + half], axis=1))
    present = np.zeros(n_steps, bool)
    values = np.zeros((n_steps, dim), np.float32)
    if rows is None or not len(rows.t):
        return values, present
    keep = np.flatnonzero(rows.present)
    if rows.span is None:
        step = np.floor(rows.t[keep] * rate_hz).astype(np.int64)
        source = keep
    else:  # a row counts for every step its span overlaps (at least the step of its centre)
        first = np.floor(rows.span[keep, 0] * rate_hz).astype(np.int64)
        last = np.maximum(first, np.ceil(rows.span[keep, 1] * rate_hz - 1e-9).astype(np.int64) - 1)
        reps = last - first + 1
        step = np.repeat(first, reps) + _ranges(reps)
        source = np.repeat(keep, reps)
    inside = (step >= 0) & (step < n_steps)
    order = np.argsort(step[inside], kind="stable")  # by step; a step's rows in their order, as np.add.at adds them
    step, source = step[inside][order], source[inside][order]
    # a block of steps at a time: the float64 sums are one block's, not a long clip's (Aff-Wild2: 10⁴ frames × 4,096)
    block = max(1, ALIGN_BLOCK_BYTES // (8 * max(1, dim)))
    edges = np.searchsorted(step, np.arange(0, n_steps + block, block))
    for j, a in enumerate(range(0, n_steps, block)):
        lo, hi = edges[j], edges[j + 1]
        if lo == hi:
            continue
        b = min(n_steps, a + block)
        sums = np.zeros((b - a, dim), np.float64)
        counts = np.zeros(b - a, np.int64)
        np.add.at(sums, step[lo:hi] - a, rows.values[source[lo:hi]])
        np.add.at(counts, step[lo:hi] - a, 1)
        here = counts > 0
        values[a:b][here] = (sums[here] / counts[here, None]).astype(np.float32)
        present[a:b] = here
    return values, present


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """[0..l0-1, 0..l1-1, ...] for an array of lengths."""
    if len(lengths) == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    return np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)


def normalise(x: np.ndarray, mask: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-score x [N,T,D] with statistics over present steps of the training sequences."""
    return _apply(x, mask, *_train_statistics(x, mask, train))


def _train_statistics(x: np.ndarray, mask: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float64 over the present steps of the training sequences `train` (bool [N], or rows):
    the rows of x[train][mask[train]] in that order, selected without the x[train] copy for a bool."""
    train = np.asarray(train)
    stats = statistics(x[mask & train[:, None]] if train.dtype == bool else x[train][mask[train]])
    if stats is None:
        raise SegmentError("no present step in the training partition to compute normalisation statistics from")
    return stats


def _apply(x: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray, out: np.ndarray | None = None):
    """(z-scores [N,T,D] with 0 where absent, mean, std as float32), into `out` when given (it may be x,
    e.g. the memory-mapped .npy the stage builds). A block of rows at a time: the float64 intermediate is
    one block's, not the whole array's, and a memory-mapped block's pages are given back after it; the
    arithmetic is elementwise, so the values are those of the whole-array expression."""
    out = np.empty(x.shape, np.float32) if out is None else out
    for a, b in iter_chunks(x):
        block = (x[a:b] - mean) / std
        block[~mask[a:b]] = 0.0
        out[a:b] = block
        release_pages(out)
        release_pages(x)
    return out, mean.astype(np.float32), std.astype(np.float32)


def _fold_statistics(x, selections: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mean, std) float64 of each fold: `statistics(x[sel])` over the selected rows of x ([N, T] or [R]
    bool, row-major), streamed two passes over a memory-mapped x (`streamed_statistics`, the same bits)."""
    if isinstance(x, np.memmap):
        stats = streamed_statistics(x, selections)
    else:
        stats = [statistics(x[sel]) for sel in selections]
    if any(s is None for s in stats):
        raise SegmentError("no present step in the training partition to compute normalisation statistics from")
    return stats


def segment_to(
    out_dir: Path,
    info: CorpusInfo,
    clips: list[Clip],
    params: SegmentParams,
    features_dir: Path = FEATURES_DIR,
    labels_path: Path | None = None,
) -> Segments:
    """The segment stage: `segment_corpus` written to the segments folder `out_dir` in bounded memory. The
    feature tables are streamed clip by clip and every feature array is built straight into its `.npy` in
    the folder's staging copy (`staged_dir`: swapped into place when complete), statistics and z-scores
    a block at a time; the same bytes as `segment_corpus(...).save(out_dir)` (tests/test_segment_stream.py)."""
    with staged_dir(out_dir) as staging:
        seg = segment_corpus(info, clips, params, features_dir, labels_path, staging=staging)
        seg.write_into(staging)
    return seg


def segment_corpus(
    info: CorpusInfo,
    clips: list[Clip],
    params: SegmentParams,
    features_dir: Path = FEATURES_DIR,
    labels_path: Path | None = None,
    staging: Path | None = None,
) -> Segments:
    """The segments in memory (feature tables read whole; small corpora and tests), or, with `staging` (a
    folder the caller then completes with `Segments.write_into`, as `segment_to` does), with every
    feature array a `.npy` there built clip by clip from the streamed tables."""
    if not clips:
        raise SegmentError("the manifest holds no clips")
    split = params.partition
    try:
        folds = assign_folds(clips, split.protocol, split.devel, split.test, split.repeats, split.group, split.seed,
                             split.devel_from)
    except ProtocolError as e:
        raise SegmentError(f"segment.partition: {e}") from None
    for k, fold in enumerate(folds):
        if not (fold == "train").any():
            raise SegmentError(f"fold {k}: the training partition is empty")
    from pipeline.layout_builders import build_native, build_pieces  # not at the top: it imports this module

    tables = _Tables(params.modalities, Path(features_dir), clips, streamed=staging is not None)
    build = {"aligned": _aligned, "windows": build_pieces, "frames": build_pieces, "native": build_native}[params.layout]
    # its `label` holds each sequence's clip index
    seg = build(clips, params, folds, tables, labels_path, _ArrayStore(staging))
    seg.label = np.array([info.classes.index(c.label) if c.label is not None else -1 for c in clips], np.int64)[seg.label]
    seg.classes = list(info.classes)
    seg.extra = {"corpus": info.name, "max_steps": params.max_steps, "protocol": split.protocol, "folds": len(folds), **seg.extra}
    return seg


class _Tables:
    """(modality, `_Table`) of each modality, one table at a time as it is iterated."""

    def __init__(self, modalities: dict[str, str], features_dir: Path, clips: list[Clip], streamed: bool) -> None:
        self.modalities, self.features_dir, self.clips, self.streamed = modalities, features_dir, clips, streamed

    def __iter__(self):
        return iter(self.modalities)

    def items(self):
        for modality, feature in self.modalities.items():
            path = self.features_dir / f"{feature}.parquet"
            try:
                if self.streamed:
                    meta, stream = iter_clip_features(path)
                    table = _Table(modality, path, meta, self.clips, stream=stream)
                else:
                    meta, rows = read_features(path)
                    table = _Table(modality, path, meta, self.clips, rows=rows)
            except StoreError as e:
                raise SegmentError(f"modality '{modality}': {e}") from None
            yield modality, table


class _Table:
    """One modality's feature table: iterating gives (clip index, its rows or None) once for every clip
    of the manifest: from the table read whole (`rows`), in manifest order; or streamed (`stream`,
    `iter_clip_features`), in table order, then the clips the table lacks (None). Iterate once."""

    def __init__(self, modality: str, path: Path, meta: FeatureMeta, clips: list[Clip], rows=None, stream=None) -> None:
        self.modality, self.path, self.meta, self.clips, self.rows, self.stream = modality, path, meta, clips, rows, stream

    def __iter__(self):
        if self.rows is not None:
            for i, clip in enumerate(self.clips):
                yield i, self.rows.get(clip.clip_id)
            return
        index = {c.clip_id: i for i, c in enumerate(self.clips)}
        seen = np.zeros(len(self.clips), bool)
        try:
            for clip_id, rows in self.stream:
                i = index.get(clip_id)
                if i is None:
                    continue
                if seen[i]:
                    raise SegmentError(f"modality '{self.modality}' ({self.path}): the rows of clip '{clip_id}' are "
                                       f"not together (a table must be sorted by clip, then time); rerun its extraction")
                seen[i] = True
                yield i, rows
        except StoreError as e:
            raise SegmentError(f"modality '{self.modality}': {e}") from None
        for i in np.flatnonzero(~seen):
            yield int(i), None

    def row_counts(self) -> np.ndarray:
        """[N] rows of each manifest clip in the table (its clip_id column only, when streamed)."""
        if self.rows is not None:
            return np.array([len(self.rows[c.clip_id].t) if c.clip_id in self.rows else 0 for c in self.clips], np.int64)
        try:
            counts = read_table(self.path, columns=["clip_id"]).column("clip_id").value_counts().to_pylist()
        except StoreError as e:
            raise SegmentError(f"modality '{self.modality}': {e}") from None
        per_clip = {c["values"]: c["counts"] for c in counts}
        return np.array([per_clip.get(c.clip_id, 0) for c in self.clips], np.int64)


class _ArrayStore:
    """Where the builders put a feature array: in memory (`folder` None), or a `.npy` in the segments'
    staging folder (`np.lib.format.open_memmap`) filled clip by clip, whose written pages are given back
    every `lazy_arrays._CHUNK_BYTES` (`wrote`) so the resident set stays about one block."""

    def __init__(self, folder: Path | None) -> None:
        self.folder, self._since = folder, 0

    def zeros(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if self.folder is None:
            return np.zeros(shape, np.float32)
        return np.lib.format.open_memmap(self.folder / f"{key}.npy", mode="w+", dtype=np.float32, shape=shape)

    def wrote(self, arr: np.ndarray, nbytes: int) -> None:
        self._since += nbytes
        if self._since >= lazy_arrays._CHUNK_BYTES:
            release_pages(arr)
            self._since = 0


def _check_present(modality: str, path: Path, has: np.ndarray, folds: np.ndarray) -> None:
    """Every fold's training partition must have the modality somewhere; `has` [N] per sequence."""
    for k, fold in enumerate(folds):
        if not has[fold == "train"].any():
            where = "the corpus" if not has.any() else "the training partition" + (f" of fold {k}" if len(folds) > 1 else "")
            raise SegmentError(
                f"modality '{modality}' ({path}): no step of {where} has it (a corpus without transcripts, "
                f"faces or audio?); remove '{modality}' from segment.modalities and train.modalities"
            )


def _info(feature: str, meta: FeatureMeta, dim: int | None = None) -> ModalityInfo:
    return ModalityInfo(feature=feature, dim=meta.dim if dim is None else dim, backbone=meta.backbone,
                        pretrained=meta.pretrained, weights_statement=meta.weights_statement, rate_hz=meta.rate_hz,
                        silence=meta.params.get("silence"))


def _normalised(xm: np.ndarray, mm: np.ndarray, folds: np.ndarray, counted: np.ndarray | None = None):
    """(x, mean, std, fold_mean | None, fold_std | None) of one modality: fold 0's z-scores (written over
    xm: the caller's raw values are consumed, no second N×T×D array), each fold's statistics over the
    present steps of its training sequences (and of `counted` [N, T] where given: each clip step once)."""
    present = mm if counted is None else mm & counted
    stats = _fold_statistics(xm, [present & (fold == "train")[:, None] for fold in folds])
    fold_mean = fold_std = None
    if len(folds) > 1:  # each fold's statistics from its own training partition (Segments.for_fold)
        fold_mean = np.stack([m_ for m_, _ in stats]).astype(np.float32)
        fold_std = np.stack([s_ for _, s_ in stats]).astype(np.float32)
    return (*_apply(xm, mm, *stats[0], out=xm), fold_mean, fold_std)


def _aligned(clips, params: SegmentParams, folds, tables, labels_path, store: _ArrayStore) -> Segments:
    """Every modality on one grid, one sequence per clip cut to max_steps."""
    r = params.rate_hz
    lengths = np.array([grid_steps(c.duration, r, params.max_steps) for c in clips])
    T = int(lengths.max())
    x, mask, mean, std, mods, fold_mean, fold_std = {}, {}, {}, {}, {}, {}, {}
    for modality, table in tables.items():
        path, meta = table.path, table.meta
        xm = store.zeros(f"x__{modality}", (len(clips), T, meta.dim))
        mm = np.zeros((len(clips), T), bool)
        for i, rows in table:
            v, p = align_clip(rows, int(lengths[i]), r, meta.dim, meta.rate_hz)
            xm[i, : lengths[i]], mm[i, : lengths[i]] = v, p
            store.wrote(xm, v.nbytes)
        _check_present(modality, path, mm.any(axis=1), folds)
        x[modality], mean[modality], std[modality], fm, fs = _normalised(xm, mm, folds)
        if fm is not None:
            fold_mean[modality], fold_std[modality] = fm, fs
        mask[modality] = mm
        mods[modality] = _info(params.modalities[modality], meta)

    t = (np.arange(T)[None, :] + 0.5) / r * np.ones((len(clips), 1))
    arousal = valence = label_mask = None
    if labels_path is not None and Path(labels_path).exists():
        arousal, valence, label_mask = _continuous_labels(labels_path, clips, t, lengths)
    return Segments(
        clip_id=np.array([c.clip_id for c in clips]), partition=folds[0], label=np.arange(len(clips)),
        length=lengths, t=t, x=x, mask=mask, mean=mean, std=std, classes=[], rate_hz=r, modalities=mods,
        arousal=arousal, valence=valence, label_mask=label_mask,
        folds=folds if len(folds) > 1 else None, fold_mean=fold_mean, fold_std=fold_std,
    )


def _continuous_labels(path: Path, clips: list[Clip], t: np.ndarray, lengths: np.ndarray):
    """Arousal/valence at the step centres, interpolated linearly between ANNOTATED samples only.

    A null label is "not annotated" (Aff-Wild2's -5 frames, MuSe's unlabelled test samples): a step
    counts (label_mask) only where both targets have annotated samples on either side that are at most
    1.5 label periods apart (the median spacing of the clip's samples), so no value is invented across
    a gap. A clip with a single label row (utterance-level A/V/D, e.g. IEMOCAP) holds it over the clip.
    (None, None, None) when the table has no annotated arousal/valence at all."""
    table = read_labels(path).sort_by([("clip_id", "ascending"), ("t", "ascending")])
    if table.num_rows == 0 or all(table.column(c).null_count == table.num_rows for c in ("arousal", "valence")):
        return None, None, None
    n, T = t.shape
    out = {"arousal": np.zeros((n, T), np.float32), "valence": np.zeros((n, T), np.float32)}
    label_mask = np.zeros((n, T), bool)
    index = {c.clip_id: i for i, c in enumerate(clips)}
    for clip_id in pc.unique(table.column("clip_id")).to_pylist():
        i = index.get(clip_id)
        if i is None:
            continue
        rows = table.filter(pc.equal(table.column("clip_id"), clip_id))
        lt = rows.column("t").to_numpy()
        steps = t[i, : lengths[i]]
        valid = np.ones(len(steps), bool)
        for name, arr in out.items():
            v = rows.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            ok = np.isfinite(v)
            if not ok.any():
                valid[:] = False
                continue
            lt_ok, v_ok = lt[ok], v[ok]
            if len(lt) == 1:
                arr[i, : lengths[i]] = v_ok[0]
                continue
            arr[i, : lengths[i]] = np.interp(steps, lt_ok, v_ok)
            gap = 1.5 * float(np.median(np.diff(lt))) if len(lt) > 1 else 0.0
            after = np.searchsorted(lt_ok, steps, side="left")  # first annotated sample at or after the step
            before = np.clip(after - 1, 0, len(lt_ok) - 1)
            after_c = np.clip(after, 0, len(lt_ok) - 1)
            exact = np.isclose(lt_ok[after_c], steps)
            bracketed = (after > 0) & (after < len(lt_ok)) & (lt_ok[after_c] - lt_ok[before] <= gap + 1e-9)
            valid &= (exact | bracketed) & (steps >= lt_ok.min()) & (steps <= lt_ok.max())
        label_mask[i, : lengths[i]] = valid
    return out["arousal"], out["valence"], label_mask
