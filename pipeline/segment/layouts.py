"""The pure pieces of the sequence layouts other than `aligned` (pipeline/segment/builders.py puts them together).

- `windows` (000 §5.3): each clip on the grid over its whole duration, cut into windows of `win` steps
  starting every `hop` steps; the last window ends at the clip's end; a clip shorter than `win` is
  one padded window (`window_starts`).
- `frames` (002 §3.3): the grid is the frame rate; a clip is cut into consecutive samples of `frames`
  frames (the last one padded, `sample_starts`); a modality listed in `segment.stack` has its
  k = round(source rate / frame rate) rows within each frame stacked into k·D dims (`stack_factor`,
  `stack_frames`) instead of averaged. With `segment.stack_seconds` (002 §3.2.2's 2 s context) such a
  modality is instead averaged onto the frames like the others and each frame gets the n = round(
  stack_seconds × frame rate) frames around it side by side, n·D dims (`context_frames`,
  `stack_context`, `context_sums`).
- `native` (003 §5.3): each modality at its own rate, one step per row of its table in time order
  (words: one per word), cut to its maximum length (`native_rows`).

Every layout's normalisation statistics are taken once per step of the training clips (`statistics`),
never once per overlapping window.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.features import ClipFeatures

MIN_STD = 1e-6


def statistics(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) float64 [D] over the rows of `sel` [n, D]; a dimension constant there keeps a
    scale of 1. None when there is no row."""
    if len(sel) == 0:
        return None
    mean = sel.mean(axis=0, dtype=np.float64)
    std = sel.std(axis=0, dtype=np.float64)
    return mean, np.where(std < MIN_STD, 1.0, std)


def streamed_statistics(x, selections: list[np.ndarray], chunk_bytes: int | None = None) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """`statistics(x[sel])` for each selection, reading x (an ndarray or a memory-mapped [N, T, D] or
    [R, D]) a block of rows at a time, never the selected rows whole: sel is bool [N, T] (or [R]), its
    rows visited in `x[sel]`'s order (row-major). The same bits as `statistics`: numpy reduces a
    C-contiguous [n, D] array over axis 0 (D ≥ 2) one row after another in float64, so a running sum
    carried from block to block (`np.add.reduce` over [carry; block]) adds in its order; the variance
    is numpy's two-pass formula (Σ (x − mean)² / n). A single dimension (D = 1) numpy sums pairwise,
    so there the selected column (4 bytes a row) is gathered and `statistics` applied.
    tests/test_segment_stream.py checks the equality, constant dimensions included, so a numpy that
    changes its reduction order is caught there. Every selection is served by the same two passes over x."""
    from pipeline.segment.lazy import (  # lazy_arrays imports nothing of the pipeline
        iter_chunks,
        take_rows,
    )

    dim = x.shape[-1]
    counts = [int(np.count_nonzero(sel)) for sel in selections]

    def blocks():
        for a, b in iter_chunks(x, chunk_bytes):
            yield a, b, take_rows(x, np.arange(a, b))

    if dim == 1:
        picked = [[] for _ in selections]
        for a, b, block in blocks():
            for k, sel in enumerate(selections):
                picked[k].append(block[sel[a:b]])
        return [statistics(np.concatenate(p)) if n else None for p, n in zip(picked, counts)]
    total = [np.zeros(dim) for _ in selections]
    for a, b, block in blocks():
        for k, sel in enumerate(selections):
            rows = block[sel[a:b]]
            if len(rows):
                total[k] = np.add.reduce(np.concatenate([total[k][None], rows.astype(np.float64)]), axis=0)
    means = [t / n if n else None for t, n in zip(total, counts)]
    squares = [np.zeros(dim) for _ in selections]
    for a, b, block in blocks():
        for k, sel in enumerate(selections):
            rows = block[sel[a:b]]
            if len(rows):
                centred = rows.astype(np.float64) - means[k]
                squares[k] = np.add.reduce(np.concatenate([squares[k][None], centred * centred]), axis=0)
    out = []
    for mean, sq, n in zip(means, squares, counts):
        if not n:
            out.append(None)
            continue
        std = np.sqrt(sq / n)
        out.append((mean, np.where(std < MIN_STD, 1.0, std)))
    return out


def window_starts(n_steps: int, win: int, hop: int) -> np.ndarray:
    """First step of each window of `win` steps every `hop` steps over a clip of `n_steps` steps;
    the last window ends at the clip's end (it may overlap its predecessor by more than win − hop);
    a clip of at most `win` steps is one window from step 0 (padded)."""
    if n_steps <= win:
        return np.zeros(1, np.int64)
    starts = np.arange(0, n_steps - win + 1, hop, dtype=np.int64)
    if starts[-1] + win < n_steps:
        starts = np.append(starts, n_steps - win)
    return starts


def sample_starts(n_steps: int, frames: int) -> np.ndarray:
    """First frame of each consecutive sample of `frames` frames (hop = frames; the last one padded)."""
    return np.arange(0, max(1, n_steps), frames, dtype=np.int64)


def stack_factor(source_rate_hz: float | None, frame_rate_hz: float) -> int:
    """k = round(source rate / frame rate): the rows of a faster modality that fall in one frame.
    ValueError (the caller names the key) when the modality is irregular or not faster than the frames."""
    if source_rate_hz is None:
        raise ValueError("has no regular rate (one row per word?); only a regular table faster than the frame rate can be stacked")
    k = int(round(source_rate_hz / frame_rate_hz))
    if source_rate_hz <= frame_rate_hz or k < 2:
        raise ValueError(
            f"its rate ({source_rate_hz:g} Hz) is not faster than the frame rate segment.rate_hz ({frame_rate_hz:g} Hz): "
            f"round({source_rate_hz:g} / {frame_rate_hz:g}) = {k} row per frame, nothing to stack"
        )
    return k


def stack_frames(values: np.ndarray, present: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-steps [n·k, D] on a grid k times finer than the frames → frames [n, k·D]: sub-step j of
    frame f (covering [(f + j/k)/r, (f + (j+1)/k)/r)) fills dims j·D … (j+1)·D − 1; an absent sub-step
    stays zero; a frame is present if any of its sub-steps is."""
    n = len(present) // k
    return values.reshape(n, k * values.shape[1]), present.reshape(n, k).any(axis=1)


def context_frames(stack_seconds: float, frame_rate_hz: float) -> int:
    """n = round(stack_seconds × frame rate): the frames of one context window (002 §3.2.2: 2 s at 30 fps = 60)."""
    return int(round(stack_seconds * frame_rate_hz))


def stack_context(values: np.ndarray, present: np.ndarray, n: int, start: int = 0, steps: int | None = None,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A clip's frames [F, D] (absent ones zero) → frames start … start+steps−1 [steps, n·D], each with
    its context: frame f holds frames f − n//2 … f + n − 1 − n//2 side by side, its own in slot n//2
    (dims n//2·D …). 002 §3.2.2 concatenates "over a 2 s window" without saying where it sits; centred
    on the frame is the natural reading (n odd: exactly; n even: the extra slot is the earlier one, so
    the window spans [f − n/2, f + n/2) in frames and leans half a frame to the past of frame f's
    centre). Slots before the clip's start or past its end are zero, as are absent frames; a frame is
    present iff its own slot is (`present[f]`). Written into `out` [steps, n·D] when given."""
    count, dim = values.shape
    steps = count - start if steps is None else steps
    before = n // 2
    padded = np.zeros((steps + n - 1, dim), values.dtype)  # frames start − before … start + steps − 1 + n − 1 − before
    lo, hi = max(0, start - before), min(count, start + steps + n - 1 - before)
    if hi > lo:
        padded[lo - (start - before) : hi - (start - before)] = values[lo:hi]
    windows = np.lib.stride_tricks.sliding_window_view(padded, n, axis=0)  # [steps, D, n], a view
    if out is None:
        out = np.empty((steps, n * dim), values.dtype)
    out.reshape(steps, n, dim)[:] = windows.transpose(0, 2, 1)
    return out, present[start : start + steps].copy()


def context_sums(values: np.ndarray, present: np.ndarray, n: int, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(Σ(x − shift), Σ(x − shift)², count): float64 [n·D] sums over the present frames of one clip's
    context-stacked frames x (`stack_context`), without building them. `shift` [D] (the same for every
    clip, near the features' mean) keeps the variance free of cancellation; `context_statistics` turns
    the training clips' sums into (mean, std)."""
    count, dim = values.shape
    before = n // 2
    padded = np.zeros((count + n - 1, dim), np.float64)
    padded[before : before + count] = values
    padded -= shift
    rows = np.flatnonzero(present)
    total, squares = np.zeros((n, dim)), np.zeros((n, dim))
    for j in range(n):  # slot j of frame f is padded row f + j
        slot = padded[rows + j]
        total[j], squares[j] = slot.sum(axis=0), np.square(slot).sum(axis=0)
    return total.reshape(-1), squares.reshape(-1), len(rows)


def context_statistics(sums: list[tuple[np.ndarray, np.ndarray, int]], shift: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) float64 [n·D] from the `context_sums` (with `shift`) of the training clips: what
    `statistics` gives over their stacked present frames (a constant dimension keeps a scale of 1).
    None without a present frame."""
    return context_statistics_of_totals(sum(s for s, _, _ in sums), sum(q for _, q, _ in sums), sum(c for *_, c in sums), shift)


def context_statistics_of_totals(total, squares, count: int, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`context_statistics` from the training clips' `context_sums` already added up in clip order
    (0 + s₀ + s₁ + …, as `sum` does), so they can be accumulated clip by clip."""
    if count == 0:
        return None
    centred = total / count
    std = np.sqrt(np.maximum(squares / count - centred**2, 0.0))
    n = len(centred) // len(shift)
    return centred + np.tile(np.asarray(shift, np.float64), n), np.where(std < MIN_STD, 1.0, std)


def native_rows(rows: ClipFeatures | None, max_steps: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(values [L, D], present [L], t [L], L) of one clip: one step per row in time order, cut to
    `max_steps`. Absent rows stay steps (mask False, value 0: MCT-HFR's zero vectors for frames without
    a face, 003 §5.2.3). A clip without rows gets one absent step, so no sequence is empty (L ≥ 1)."""
    if rows is None or len(rows.t) == 0:
        return np.zeros((1, dim), np.float32), np.zeros(1, bool), np.zeros(1), 1
    order = np.argsort(rows.t, kind="stable")[:max_steps]
    present = rows.present[order]
    values = np.where(present[:, None], rows.values[order], 0.0).astype(np.float32)
    return values, present, rows.t[order], len(order)

