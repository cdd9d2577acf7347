"""The builders of the layouts other than `aligned`: feature tables → `Segments` (pipeline/segment/contract.py).

pipeline/segment/stage.py reads the tables, assigns the partitions and dispatches here by `segment.layout`;
the pure pieces these builders put together are in pipeline/segment/layouts.py. The alignment, normalisation
and label helpers come from pipeline/segment/stage.py, which imports this module only inside
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
  `extra["stack_seconds"]`); statistics over the training clips' frames, each once. The stacked frames
  are not built: x[m] is a `ContextFrames` (pipeline/segment/lazy.py) over the D-dim frames.
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
from pipeline.segment.align import (
    align_clip,
    check_present,
    continuous_labels,
    grid_steps,
    modality_info,
    normalised,
)
from pipeline.segment.contract import Segments
from pipeline.segment.layouts import (
    context_frames,
    context_statistics_of_totals,
    context_sums,
    native_rows,
    sample_starts,
    stack_factor,
    stack_frames,
    streamed_statistics,
    window_starts,
)
from pipeline.segment.lazy import ContextFrames, release_pages
from pipeline.segment.params import SegmentError, SegmentParams

__all__ = ["build_native", "build_pieces"]


def build_pieces(clips, params: SegmentParams, folds, tables, labels_path, store) -> Segments:
    """windows / frames: each clip on the grid over its whole duration, cut into pieces (clip, first step).
    Each clip's pieces are filled as its rows arrive (`store`: in memory or the staged .npy); statistics
    count each step of a clip once (`first_cover`: the steps no earlier piece of the clip covers)."""
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
    bounds = np.searchsorted(clip_of, np.arange(len(clips) + 1))  # clip i's pieces: bounds[i] … bounds[i+1] − 1
    counted = first_cover(clip_of, origin, length, T)
    x, mask, mean, std, mods, fold_mean, fold_std = {}, {}, {}, {}, {}, {}, {}
    for modality, table in tables.items():
        path, meta = table.path, table.meta
        k = 1
        if params.layout == "frames" and modality in params.stack and params.stack_seconds:
            n = context_frames(params.stack_seconds, r)
            extra["stack"][modality] = n
            x[modality], mask[modality], mean[modality], std[modality], fm, fs = _context_modality(
                table, store, n, r, full, pieces, T, folds)
            if fm is not None:
                fold_mean[modality], fold_std[modality] = fm, fs
            mods[modality] = modality_info(params.modalities[modality], meta, n * meta.dim)
            continue
        if params.layout == "frames" and modality in params.stack:
            try:
                k = stack_factor(meta.rate_hz, r)
            except ValueError as e:
                raise SegmentError(f"segment.stack: modality '{modality}' ({path}) {e}") from None
            extra["stack"][modality] = k
        xm = store.zeros(f"x__{modality}", (len(pieces), T, k * meta.dim))
        mm = np.zeros((len(pieces), T), bool)
        has = np.zeros(len(clips), bool)
        for i, rows in table:
            if k > 1:  # on a grid k times finer, then each frame's k sub-steps side by side
                v, p = stack_frames(*align_clip(rows, int(full[i]) * k, r * k, meta.dim), k)
            else:
                v, p = align_clip(rows, int(full[i]), r, meta.dim, meta.rate_hz)
            has[i] = p.any()
            for w in range(bounds[i], bounds[i + 1]):  # the piece's steps; past the clip's end it stays zero
                s, steps = origin[w], length[w]
                xm[w, :steps], mm[w, :steps] = v[s : s + steps], p[s : s + steps]
            store.wrote(xm, v.nbytes)
        check_present(modality, path, has, folds)
        # z-scored in place (no second copy); statistics over the training clips' whole grids, each step once
        x[modality], mean[modality], std[modality], fm, fs = normalised(xm, mm, folds[:, clip_of], counted)
        if fm is not None:
            fold_mean[modality], fold_std[modality] = fm, fs
        mask[modality] = mm
        mods[modality] = modality_info(params.modalities[modality], meta, k * meta.dim)

    t = (origin[:, None] + np.arange(T)[None, :] + 0.5) / r
    arousal = valence = label_mask = None
    if labels_path is not None and Path(labels_path).exists():
        t_full = (np.arange(int(full.max()))[None, :] + 0.5) / r * np.ones((len(clips), 1))
        labels = continuous_labels(labels_path, clips, t_full, full)
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


def first_cover(clip_of: np.ndarray, origin: np.ndarray, length: np.ndarray, steps: int) -> np.ndarray:
    """[P, steps] bool: the steps of each piece that no earlier piece of its clip covers. Over the pieces in
    order (each clip's in order of their first step, together), its True steps visit every step of each
    clip's grid once, in time order: `x[first_cover & …]` holds the rows of the clips' whole grids."""
    out = np.zeros((len(clip_of), steps), bool)
    reached = -1, 0  # (clip, first step not yet covered)
    for w, (i, s, n) in enumerate(zip(clip_of, origin, length)):
        upto = reached[1] if reached[0] == i else 0
        out[w, max(upto, s) - s : n] = True
        reached = i, max(upto, s + n)
    return out


def _context_modality(table, store, n: int, r: float, full: np.ndarray, pieces: list[tuple[int, int]], T: int,
                      folds: np.ndarray):
    """(x [P, T, n·D] z-scored, mask, mean, std, fold_mean | None, fold_std | None) of one modality under
    frames with a context window (002 §3.2.2): the modality averaged onto the frames (as under aligned),
    each frame with the n frames around it (`stack_context`). x is a `ContextFrames`: each clip's D-dim
    frames stored once (padded with the zero slots outside the clip) and every piece's first row, the
    n·D-dim frames built when rows are read (at 002's size the stacked copy would be 60× the frames);
    statistics come from per-clip sums (`context_sums`), each training frame once, added up clip by
    clip in clip order. The padded table is filled as the clips' rows arrive (`store`), then read back
    a clip at a time."""
    meta, path, modality = table.meta, table.path, table.modality
    before, after = n // 2, n - 1 - n // 2  # slot j of frame f is the clip's padded row f + j
    first = np.concatenate([[0], np.cumsum(before + full + after)]).astype(np.int64)
    frames = store.zeros(f"ctx__{modality}", (int(first[-1]), meta.dim))
    present = np.zeros(len(frames), bool)  # by padded row, as the table
    for i, rows in table:
        v, p = align_clip(rows, int(full[i]), r, meta.dim, meta.rate_hz)
        frames[first[i] + before : first[i] + before + len(v)] = v
        present[first[i] + before : first[i] + before + len(p)] = p
        store.wrote(frames, v.nbytes)
    own = [slice(first[i] + before, first[i] + before + int(full[i])) for i in range(len(full))]
    check_present(modality, path, np.array([present[rows].any() for rows in own]), folds)
    # the mean of every clip's present frames, in clip order: the table's present rows, row-major
    shift = streamed_statistics(frames, [present])[0][0] if isinstance(frames, np.memmap) else \
        frames[present].mean(axis=0, dtype=np.float64)
    totals = [[0, 0, 0] for _ in folds]  # each fold's (Σ, Σ², count) over its training clips, as `sum` adds them
    for i, rows in enumerate(own):
        sums = context_sums(np.asarray(frames[rows]), present[rows], n, shift)
        release_pages(frames)
        for k, fold in enumerate(folds):
            if fold[i] == "train":
                totals[k] = [a + b for a, b in zip(totals[k], sums)]
    stats = [context_statistics_of_totals(*tot, shift) for tot in totals]
    start = np.array([first[i] + s for i, s in pieces], np.int64)
    mm = np.zeros((len(pieces), T), bool)
    for w, (i, s) in enumerate(pieces):
        mm[w, : min(T, int(full[i]) - s)] = present[own[i]][s : s + T]
    mean, std = (a.astype(np.float32) for a in stats[0])
    fold_mean = fold_std = None
    if len(folds) > 1:
        fold_mean = np.stack([m_ for m_, _ in stats]).astype(np.float32)
        fold_std = np.stack([s_ for _, s_ in stats]).astype(np.float32)
    return ContextFrames(frames, start, mm, n, mean, std), mm, mean, std, fold_mean, fold_std


def _cut_steps(a: np.ndarray, full: np.ndarray, pieces: list[tuple[int, int]], steps: int) -> np.ndarray:
    """Per-step values [C, L] of each clip (its first full[i] steps) → [P, steps] of each piece (clip, first step)."""
    out = np.zeros((len(pieces), steps), a.dtype)
    for w, (i, s) in enumerate(pieces):
        n = min(steps, int(full[i]) - s)
        out[w, :n] = a[i, s : s + n]
    return out


def build_native(clips, params: SegmentParams, folds, tables, labels_path, store) -> Segments:
    """Each modality at its own rate: one step per row (word) in time order, cut to its own maximum."""
    caps = {m: params.native_max_steps.get(m, params.max_steps) for m in tables}
    x, mask, mean, std, mods, fold_mean, fold_std, lengths, times = {}, {}, {}, {}, {}, {}, {}, {}, {}
    for modality, table in tables.items():
        path, meta = table.path, table.meta
        counts = table.row_counts()  # the lengths `native_rows` gives, before the rows: x's shape
        lengths[modality] = np.where(counts == 0, 1, np.minimum(counts, caps[modality])).astype(np.int64)
        T_m = int(lengths[modality].max())
        xm = store.zeros(f"x__{modality}", (len(clips), T_m, meta.dim))
        mm = np.zeros((len(clips), T_m), bool)
        tm = np.zeros((len(clips), T_m))
        for i, rows in table:
            v, p, t_, n = native_rows(rows, caps[modality], meta.dim)
            xm[i, :n], mm[i, :n], tm[i, :n] = v, p, t_
            store.wrote(xm, v.nbytes)
        check_present(modality, path, mm.any(axis=1), folds)
        x[modality], mean[modality], std[modality], fm, fs = normalised(xm, mm, folds)
        if fm is not None:
            fold_mean[modality], fold_std[modality] = fm, fs
        mask[modality], times[modality] = mm, tm
        mods[modality] = modality_info(params.modalities[modality], meta)

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
