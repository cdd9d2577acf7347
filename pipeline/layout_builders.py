"""The builders of the layouts other than `aligned`: feature tables → `Segments` (pipeline/segments.py).

pipeline/segment.py reads the tables, assigns the partitions and dispatches here by `segment.layout`;
the pure pieces these builders put together are in pipeline/layouts.py. The alignment, normalisation
and label helpers come from pipeline/segment.py, which imports this module only inside
`segment_corpus` (a module-level import there would be circular).

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

from pathlib import Path

import numpy as np

from pipeline.corpus.manifest import read_labels
from pipeline.layouts import (
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
from pipeline.segment import (
    SegmentError,
    SegmentParams,
    _apply,
    _check_present,
    _continuous_labels,
    _info,
    _normalised,
    align_clip,
    grid_steps,
)
from pipeline.segments import Segments
from pipeline.store import FeatureMeta

__all__ = ["build_native", "build_pieces"]


def build_pieces(clips, params: SegmentParams, folds, tables, labels_path) -> Segments:
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


def build_native(clips, params: SegmentParams, folds, tables, labels_path) -> Segments:
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
