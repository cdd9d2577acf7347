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

Layouts (`layout`; pure pieces in pipeline/layouts.py):

- `aligned` (default): the above, one sequence per clip cut to `max_steps`.
- `windows` (000 §5.3): each clip on the grid over its whole duration (no `max_steps` cut), cut into
  windows of `win` steps starting every `hop` steps, the last window ending at the clip's end (a shorter
  clip is one padded window); one row per window (clip_id repeats, `origin` its first step, the
  clip's partition and label, the per-step arousal/valence/label_mask cut the same way); T = `win`.
  Statistics from the training clips' whole grids, each step counted once (not once per window).
- `frames` (002 §3.3): the grid at `rate_hz` (the frame rate), cut into consecutive samples of
  `frames` frames (the last one padded; `origin` set); a modality in `stack` has the k = round(source
  rate / frame rate) rows within each frame stacked into k·D dims (an absent row zero, the frame
  present if any row is; ModalityInfo.dim = k·D), the others averaged as under `aligned`. With
  `stack_seconds` (002 §3.2.2: the LLDs "downsampled by a factor of 3.3 and concatenated over a 2 s
  window") a modality in `stack` is instead averaged onto the frames too, and each frame gets the
  n = round(stack_seconds × rate_hz) frames of a window centred on it side by side (n·D dims; zeros
  outside the clip; the frame present iff its own slot is; `extra["stack"][m]` = n and
  `extra["stack_seconds"]`); statistics over the training clips' frames, each once.
- `native` (003 §5.3): each modality at its own rate, unaligned: one step per row of its table in time
  order (one per word for a table of words), cut to `native_max_steps.get(m, max_steps)`; x__<m> is
  [N, T_m, D] with T_m the longest cut sequence of m; `lengths[m]` the true lengths (a clip without
  rows of m gets one absent step: L ≥ 1, absence is `mask`); `length` the longest over modalities;
  `t` the row times of the modality with the most steps in each sequence (0 past its length). For
  per-clip classification: no arousal/valence is written.
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
from pipeline.layouts import (
    MIN_STD,
    context_frames,
    context_statistics,
    context_sums,
    cut,
    native_rows,
    sample_starts,
    stack_context,
    stack_factor,
    stack_frames,
    statistics,
    window_starts,
)
from pipeline.paths import FEATURES_DIR
from pipeline.protocols import ProtocolError, assign_folds
from pipeline.segments import ModalityInfo, Segments
from pipeline.store import ClipFeatures, FeatureMeta, StoreError, read_features

__all__ = ["MIN_STD", "PartitionParams", "SegmentParams", "SegmentError", "align_clip", "grid_steps", "normalise", "segment_corpus"]


class PartitionParams(Section):
    """Which clips train, select and test (pipeline/protocols.py)."""

    protocol: Literal["corpus", "speaker_random", "leave_one_group_out"] = Field(
        "corpus", description="corpus: the corpus's split (else one seeded speaker split); speaker_random: "
        "`repeats` speaker splits (001 §4.3); leave_one_group_out: a fold per `group` (003)",
    )
    devel: float = Field(0.2, ge=0, lt=1, description="share of speakers for devel (of the training groups' under leave_one_group_out)")
    test: float = Field(0.2, gt=0, lt=1, description="share of speakers for test (speaker splits)")
    repeats: int = Field(1, ge=1, description="speaker_random: number of fresh splits (001 §4.3: 20)")
    group: Literal["speaker", "session"] = Field("speaker", description="leave_one_group_out: what a fold holds out")
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
        problems = [(f"stack.{i}", f"'{m}' is not in segment.modalities ({known})")
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
    sums = np.zeros((n_steps, dim), np.float64)
    counts = np.zeros(n_steps, np.int64)
    if rows is not None and len(rows.t):
        keep = rows.present
        if rows.span is None:
            step = np.floor(rows.t[keep] * rate_hz).astype(np.int64)
            vals = rows.values[keep]
        else:  # a row counts for every step its span overlaps (at least the step of its centre)
            first = np.floor(rows.span[keep, 0] * rate_hz).astype(np.int64)
            last = np.maximum(first, np.ceil(rows.span[keep, 1] * rate_hz - 1e-9).astype(np.int64) - 1)
            reps = last - first + 1
            step = np.repeat(first, reps) + _ranges(reps)
            vals = np.repeat(rows.values[keep], reps, axis=0)
        inside = (step >= 0) & (step < n_steps)
        np.add.at(sums, step[inside], vals[inside])
        np.add.at(counts, step[inside], 1)
    present = counts > 0
    values = np.zeros((n_steps, dim), np.float32)
    values[present] = (sums[present] / counts[present, None]).astype(np.float32)
    return values, present


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """[0..l0-1, 0..l1-1, ...] for an array of lengths."""
    if len(lengths) == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    return np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)


def normalise(x: np.ndarray, mask: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-score x [N,T,D] with statistics over present steps of the training sequences."""
    stats = statistics(x[train][mask[train]])
    if stats is None:
        raise SegmentError("no present step in the training partition to compute normalisation statistics from")
    return _apply(x, mask, *stats)


def _apply(x: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """(z-scores [N,T,D] with 0 where absent, mean, std as float32)."""
    out = ((x - mean) / std).astype(np.float32)
    out[~mask] = 0.0
    return out, mean.astype(np.float32), std.astype(np.float32)


def segment_corpus(
    info: CorpusInfo,
    clips: list[Clip],
    params: SegmentParams,
    features_dir: Path = FEATURES_DIR,
    labels_path: Path | None = None,
) -> Segments:
    if not clips:
        raise SegmentError("the manifest holds no clips")
    split = params.partition
    try:
        folds = assign_folds(clips, split.protocol, split.devel, split.test, split.repeats, split.group, split.seed)
    except ProtocolError as e:
        raise SegmentError(f"segment.partition: {e}") from None
    for k, fold in enumerate(folds):
        if not (fold == "train").any():
            raise SegmentError(f"fold {k}: the training partition is empty")
    tables = _Tables(params.modalities, Path(features_dir))
    build = {"aligned": _aligned, "windows": _pieces, "frames": _pieces, "native": _native}[params.layout]
    seg = build(clips, params, folds, tables, labels_path)  # its `label` holds each sequence's clip index
    seg.label = np.array([info.classes.index(c.label) if c.label is not None else -1 for c in clips], np.int64)[seg.label]
    seg.classes = list(info.classes)
    seg.extra = {"corpus": info.name, "max_steps": params.max_steps, "protocol": split.protocol, "folds": len(folds), **seg.extra}
    return seg


class _Tables:
    """{modality: (path, meta, rows)} read one table at a time as it is iterated (one in memory at once)."""

    def __init__(self, modalities: dict[str, str], features_dir: Path) -> None:
        self.modalities, self.features_dir = modalities, features_dir

    def __iter__(self):
        return iter(self.modalities)

    def items(self):
        for modality, feature in self.modalities.items():
            path = self.features_dir / f"{feature}.parquet"
            try:
                meta, rows = read_features(path)
            except StoreError as e:
                raise SegmentError(f"modality '{modality}': {e}") from None
            yield modality, (path, meta, rows)


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
                        pretrained=meta.pretrained, weights_statement=meta.weights_statement, rate_hz=meta.rate_hz)


def _normalised(xm: np.ndarray, mm: np.ndarray, folds: np.ndarray):
    """(x, mean, std, fold_mean | None, fold_std | None) of one modality: fold 0's z-scores, each fold's statistics."""
    fold_mean = fold_std = None
    if len(folds) > 1:  # each fold's statistics from its own training partition (Segments.for_fold)
        stats = [normalise(xm, mm, fold == "train")[1:] for fold in folds]
        fold_mean, fold_std = np.stack([m_ for m_, _ in stats]), np.stack([s_ for _, s_ in stats])
    return (*normalise(xm, mm, folds[0] == "train"), fold_mean, fold_std)


def _aligned(clips, params: SegmentParams, folds, tables, labels_path) -> Segments:
    """Every modality on one grid, one sequence per clip cut to max_steps."""
    r = params.rate_hz
    lengths = np.array([grid_steps(c.duration, r, params.max_steps) for c in clips])
    T = int(lengths.max())
    x, mask, mean, std, mods, fold_mean, fold_std = {}, {}, {}, {}, {}, {}, {}
    for modality, (path, meta, rows) in tables.items():
        xm = np.zeros((len(clips), T, meta.dim), np.float32)
        mm = np.zeros((len(clips), T), bool)
        for i, clip in enumerate(clips):
            v, p = align_clip(rows.get(clip.clip_id), int(lengths[i]), r, meta.dim, meta.rate_hz)
            xm[i, : lengths[i]], mm[i, : lengths[i]] = v, p
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


def _pieces(clips, params: SegmentParams, folds, tables, labels_path) -> Segments:
    """windows / frames: each clip on the grid over its whole duration, cut into pieces (clip, first step)."""
    r = params.rate_hz
    full = np.array([grid_steps(c.duration, r, np.iinfo(np.int64).max) for c in clips])
    if params.layout == "windows":
        T, starts = params.win, [window_starts(int(n), params.win, params.hop) for n in full]
        extra = {"win": params.win, "hop": params.hop}
    else:
        T, starts = params.frames, [sample_starts(int(n), params.frames) for n in full]
        extra = {"frames": params.frames, "stack": {}}
        if params.stack_seconds:
            extra["stack_seconds"] = params.stack_seconds
    pieces = [(i, int(s)) for i, st in enumerate(starts) for s in st]
    clip_of = np.array([i for i, _ in pieces], np.int64)
    origin = np.array([s for _, s in pieces], np.int64)
    length = np.minimum(T, full[clip_of] - origin)
    x, mask, mean, std, mods, fold_mean, fold_std = {}, {}, {}, {}, {}, {}, {}
    for modality, (path, meta, rows) in tables.items():
        k = 1
        if params.layout == "frames" and modality in params.stack and params.stack_seconds:
            n = context_frames(params.stack_seconds, r)
            extra["stack"][modality] = n
            x[modality], mask[modality], mean[modality], std[modality], fm, fs = _context_modality(
                clips, rows, meta, path, modality, n, r, full, pieces, T, folds)
            if fm is not None:
                fold_mean[modality], fold_std[modality] = fm, fs
            mods[modality] = _info(params.modalities[modality], meta, n * meta.dim)
            continue
        if params.layout == "frames" and modality in params.stack:
            try:
                k = stack_factor(meta.rate_hz, r)
            except ValueError as e:
                raise SegmentError(f"segment.stack: modality '{modality}' ({path}) {e}") from None
            extra["stack"][modality] = k
        values, present = [], []
        for i, clip in enumerate(clips):
            if k > 1:  # on a grid k times finer, then each frame's k sub-steps side by side
                v, p = stack_frames(*align_clip(rows.get(clip.clip_id), int(full[i]) * k, r * k, meta.dim), k)
            else:
                v, p = align_clip(rows.get(clip.clip_id), int(full[i]), r, meta.dim, meta.rate_hz)
            values.append(v)
            present.append(p)
        _check_present(modality, path, np.array([p.any() for p in present]), folds)
        stats = []
        for fold in folds:  # statistics over the training clips' whole grids: each step once
            train = np.flatnonzero(fold == "train")
            stats.append(statistics(np.concatenate([values[i][present[i]] for i in train])))
        xm, mm, _ = cut(values, present, pieces, T)
        x[modality], mean[modality], std[modality] = _apply(xm, mm, *stats[0])
        if len(folds) > 1:
            fold_mean[modality] = np.stack([m_ for m_, _ in stats]).astype(np.float32)
            fold_std[modality] = np.stack([s_ for _, s_ in stats]).astype(np.float32)
        mask[modality] = mm
        mods[modality] = _info(params.modalities[modality], meta, k * meta.dim)

    t = (origin[:, None] + np.arange(T)[None, :] + 0.5) / r
    arousal = valence = label_mask = None
    if labels_path is not None and Path(labels_path).exists():
        t_full = (np.arange(int(full.max()))[None, :] + 0.5) / r * np.ones((len(clips), 1))
        labels = _continuous_labels(labels_path, clips, t_full, full)
        if labels[0] is not None:  # the clip's per-step targets cut like its features
            arousal, valence, label_mask = (_cut_steps(a, full, pieces, T) for a in labels)
    pfolds = folds[:, clip_of]
    return Segments(
        clip_id=np.array([clips[i].clip_id for i in clip_of]), partition=pfolds[0], label=clip_of,
        length=length, t=t, x=x, mask=mask, mean=mean, std=std, classes=[], rate_hz=r, modalities=mods,
        arousal=arousal, valence=valence, label_mask=label_mask,
        folds=pfolds if len(folds) > 1 else None, fold_mean=fold_mean, fold_std=fold_std,
        layout=params.layout, origin=origin, extra=extra,
    )


def _context_modality(clips, rows, meta: FeatureMeta, path: Path, modality: str, n: int, r: float, full: np.ndarray,
                      pieces: list[tuple[int, int]], T: int, folds: np.ndarray):
    """(x [P, T, n·D] z-scored, mask, mean, std, fold_mean | None, fold_std | None) of one modality under
    frames with a context window (002 §3.2.2): the modality averaged onto the frames (as under aligned),
    each frame with the n frames around it (`stack_context`). The n·D-d frames are built once, straight
    into the pieces, and normalised in place; statistics come from per-clip sums (`context_sums`), each
    training frame once."""
    values, present = [], []
    for i, clip in enumerate(clips):
        v, p = align_clip(rows.get(clip.clip_id), int(full[i]), r, meta.dim, meta.rate_hz)
        values.append(v)
        present.append(p)
    _check_present(modality, path, np.array([p.any() for p in present]), folds)
    shift = np.concatenate([v[p] for v, p in zip(values, present)]).mean(axis=0, dtype=np.float64)
    sums = [context_sums(v, p, n, shift) for v, p in zip(values, present)]
    stats = [context_statistics([sums[i] for i in np.flatnonzero(fold == "train")], shift) for fold in folds]
    dim = n * meta.dim
    xm = np.zeros((len(pieces), T, dim), np.float32)
    mm = np.zeros((len(pieces), T), bool)
    for w, (i, s) in enumerate(pieces):
        steps = min(T, len(present[i]) - s)
        _, mm[w, :steps] = stack_context(values[i], present[i], n, s, steps, out=xm[w, :steps])
    mean, std = stats[0]
    xm -= mean.astype(np.float32)  # in place: at 002's size (3,900-d per frame) no float64 copy
    xm /= std.astype(np.float32)
    xm[~mm] = 0.0
    fold_mean = fold_std = None
    if len(folds) > 1:
        fold_mean = np.stack([m_ for m_, _ in stats]).astype(np.float32)
        fold_std = np.stack([s_ for _, s_ in stats]).astype(np.float32)
    return xm, mm, mean.astype(np.float32), std.astype(np.float32), fold_mean, fold_std


def _cut_steps(a: np.ndarray, full: np.ndarray, pieces: list[tuple[int, int]], steps: int) -> np.ndarray:
    """Per-step values [C, L] of each clip (its first full[i] steps) → [P, steps] of each piece (clip, first step)."""
    out = np.zeros((len(pieces), steps), a.dtype)
    for w, (i, s) in enumerate(pieces):
        n = min(steps, int(full[i]) - s)
        out[w, :n] = a[i, s : s + n]
    return out


def _native(clips, params: SegmentParams, folds, tables, labels_path) -> Segments:
    """Each modality at its own rate: one step per row (word) in time order, cut to its own maximum."""
    caps = {m: params.native_max_steps.get(m, params.max_steps) for m in tables}
    x, mask, mean, std, mods, fold_mean, fold_std, lengths, times = {}, {}, {}, {}, {}, {}, {}, {}, {}
    for modality, (path, meta, rows) in tables.items():
        per_clip = [native_rows(rows.get(c.clip_id), caps[modality], meta.dim) for c in clips]
        lengths[modality] = np.array([n for *_, n in per_clip], np.int64)
        T_m = int(lengths[modality].max())
        xm = np.zeros((len(clips), T_m, meta.dim), np.float32)
        mm = np.zeros((len(clips), T_m), bool)
        tm = np.zeros((len(clips), T_m))
        for i, (v, p, t_, n) in enumerate(per_clip):
            xm[i, :n], mm[i, :n], tm[i, :n] = v, p, t_
        _check_present(modality, path, mm.any(axis=1), folds)
        x[modality], mean[modality], std[modality], fm, fs = _normalised(xm, mm, folds)
        if fm is not None:
            fold_mean[modality], fold_std[modality] = fm, fs
        mask[modality], times[modality] = mm, tm
        mods[modality] = _info(params.modalities[modality], meta)

    names = list(tables)
    stacked = np.stack([lengths[m] for m in names])  # [M, N]
    length = stacked.max(axis=0)
    longest = stacked.argmax(axis=0)  # the modality with the most steps (the first of equals)
    t = np.zeros((len(clips), int(length.max())))
    for i, j in enumerate(longest):
        t[i, : length[i]] = times[names[j]][i, : length[i]]
    extra: dict = {"native_max_steps": caps}
    if labels_path is not None and Path(labels_path).exists() and _has_continuous(labels_path):
        extra["continuous_labels"] = "not written: layout native is for per-clip classification"
    return Segments(
        clip_id=np.array([c.clip_id for c in clips]), partition=folds[0], label=np.arange(len(clips)),
        length=length, t=t, x=x, mask=mask, mean=mean, std=std, classes=[], rate_hz=params.rate_hz,
        modalities=mods, folds=folds if len(folds) > 1 else None, fold_mean=fold_mean, fold_std=fold_std,
        layout="native", lengths=lengths, extra=extra,
    )


def _has_continuous(path: Path) -> bool:
    table = read_labels(path)
    return any(table.column(c).null_count < table.num_rows for c in ("arousal", "valence"))


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
