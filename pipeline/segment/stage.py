"""Alignment, partitions and normalisation: feature tables → `Segments` (see pipeline/segment/contract.py).

- Alignment: every modality is put on one grid of `rate_hz` steps per clip; step k covers
  [k/r, (k+1)/r). A regular feature's step value is the mean of its present rows whose time falls in
  the step; a word (irregular feature with a span) counts for every step its span overlaps. A step
  with no present row is absent (mask False, value 0).
- Sequences: one per clip (the categorical task), cut to `max_steps` and padded to the longest.
- Partitions: by `partition.protocol` (pipeline/segment/protocols.py): the corpus's own split (or one seeded
  speaker split), repeated speaker splits, or leave-one-group-out folds; no speaker is in two
  partitions of a fold. Several folds are stored once, with each fold's statistics (`Segments.for_fold`).
- Normalisation: z-scores with mean and standard deviation over the present steps of the training
  partition only; dimensions that are constant there keep a scale of 1.
- Memory (`segment_to`, the DVC stage): each feature table is streamed clip by clip
  (`features.iter_clip_features`), each modality's x is written into its `.npy` in the segments' staging
  folder as the clips arrive (a memory map whose written pages are given back every block), every fold's
  statistics come from two streamed passes over it (`layouts.streamed_statistics`: the same bits as
  numpy's mean/std of the selected rows) and the z-scores are written in place, a block at a time. So
  the stage holds one batch of rows, one clip and one block, plus the N×T masks, never N×T×D; its
  folder is byte for byte `segment_corpus(...).save(...)`'s (tests/test_segment_stream.py).
  `segment_corpus` alone builds in memory (small corpora, tests).

Layouts (`layout`):

- `aligned` (default, built here): the above, one sequence per clip cut to `max_steps`.
- `windows` (000 §5.3), `frames` (002 §3.3) and `native` (003 §5.3): built in pipeline/segment/builders.py
  (which describes them) from the pure pieces in pipeline/segment/layouts.py; `segment_corpus` dispatches there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.core.features import FeatureMeta, iter_clip_features, read_features
from pipeline.core.paths import FEATURES_DIR
from pipeline.core.store import StoreError, read_table, staged_dir
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.segment import lazy as lazy_arrays
from pipeline.segment.align import (
    align_clip,
    check_present,
    continuous_labels,
    grid_steps,
    modality_info,
    normalised,
)
from pipeline.segment.builders import build_native, build_pieces
from pipeline.segment.contract import Segments
from pipeline.segment.lazy import release_pages
from pipeline.segment.params import SegmentError, SegmentParams
from pipeline.segment.protocols import ProtocolError, assign_folds

__all__ = ["segment_corpus", "segment_to"]


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
        notes: list[str] = []
        folds = assign_folds(clips, split.protocol, split.devel, split.test, split.repeats, split.group, split.seed,
                             split.devel_from, notes)
        for note in notes:
            print(f"segment.partition: {note}", file=sys.stderr)
    except ProtocolError as e:
        raise SegmentError(f"segment.partition: {e}") from None
    for k, fold in enumerate(folds):
        if not (fold == "train").any():
            raise SegmentError(f"fold {k}: the training partition is empty")
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
        check_present(modality, path, mm.any(axis=1), folds)
        x[modality], mean[modality], std[modality], fm, fs = normalised(xm, mm, folds)
        if fm is not None:
            fold_mean[modality], fold_std[modality] = fm, fs
        mask[modality] = mm
        mods[modality] = modality_info(params.modalities[modality], meta)

    t = (np.arange(T)[None, :] + 0.5) / r * np.ones((len(clips), 1))
    arousal = valence = label_mask = None
    if labels_path is not None and Path(labels_path).exists():
        arousal, valence, label_mask = continuous_labels(labels_path, clips, t, lengths)
    return Segments(
        clip_id=np.array([c.clip_id for c in clips]), partition=folds[0], label=np.arange(len(clips)),
        length=lengths, t=t, x=x, mask=mask, mean=mean, std=std, classes=[], rate_hz=r, modalities=mods,
        arousal=arousal, valence=valence, label_mask=label_mask,
        folds=folds if len(folds) > 1 else None, fold_mean=fold_mean, fold_std=fold_std,
    )
