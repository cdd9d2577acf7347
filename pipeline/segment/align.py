"""One clip's features on the step grid, and the training partition's z-scores: the pieces every layout
(the `aligned` one in stage.py, the others in builders.py) builds from. The rules: stage.py's docstring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from pipeline.core.features import ClipFeatures, FeatureMeta
from pipeline.corpus.manifest import Clip, read_labels
from pipeline.segment.contract import ModalityInfo
from pipeline.segment.layouts import statistics, streamed_statistics
from pipeline.segment.lazy import iter_chunks, release_pages
from pipeline.segment.params import SegmentError

__all__ = ["ALIGN_BLOCK_BYTES", "align_clip", "check_present", "continuous_labels", "fold_statistics", "grid_steps",
           "modality_info", "normalise", "normalised"]


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
    return apply_statistics(x, mask, *train_statistics(x, mask, train))


def train_statistics(x: np.ndarray, mask: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float64 over the present steps of the training sequences `train` (bool [N], or rows):
    the rows of x[train][mask[train]] in that order, selected without the x[train] copy for a bool."""
    train = np.asarray(train)
    stats = statistics(x[mask & train[:, None]] if train.dtype == bool else x[train][mask[train]])
    if stats is None:
        raise SegmentError("no present step in the training partition to compute normalisation statistics from")
    return stats


def apply_statistics(x: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray, out: np.ndarray | None = None):
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


def fold_statistics(x, selections: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mean, std) float64 of each fold: `statistics(x[sel])` over the selected rows of x ([N, T] or [R]
    bool, row-major), streamed two passes over a memory-mapped x (`streamed_statistics`, the same bits)."""
    if isinstance(x, np.memmap):
        stats = streamed_statistics(x, selections)
    else:
        stats = [statistics(x[sel]) for sel in selections]
    if any(s is None for s in stats):
        raise SegmentError("no present step in the training partition to compute normalisation statistics from")
    return stats


def check_present(modality: str, path: Path, has: np.ndarray, folds: np.ndarray) -> None:
    """Every fold's training partition must have the modality somewhere; `has` [N] per sequence."""
    for k, fold in enumerate(folds):
        if not has[fold == "train"].any():
            where = "the corpus" if not has.any() else "the training partition" + (f" of fold {k}" if len(folds) > 1 else "")
            raise SegmentError(
                f"modality '{modality}' ({path}): no step of {where} has it (a corpus without transcripts, "
                f"faces or audio?); remove '{modality}' from segment.modalities and train.modalities"
            )


def modality_info(feature: str, meta: FeatureMeta, dim: int | None = None) -> ModalityInfo:
    return ModalityInfo(feature=feature, dim=meta.dim if dim is None else dim, backbone=meta.backbone,
                        pretrained=meta.pretrained, weights_statement=meta.weights_statement, rate_hz=meta.rate_hz,
                        silence=meta.params.get("silence"),
                        missing_token=meta.missing_token if dim in (None, meta.dim) else None)  # stacked: no token


def normalised(xm: np.ndarray, mm: np.ndarray, folds: np.ndarray, counted: np.ndarray | None = None):
    """(x, mean, std, fold_mean | None, fold_std | None) of one modality: fold 0's z-scores (written over
    xm: the caller's raw values are consumed, no second N×T×D array), each fold's statistics over the
    present steps of its training sequences (and of `counted` [N, T] where given: each clip step once)."""
    present = mm if counted is None else mm & counted
    stats = fold_statistics(xm, [present & (fold == "train")[:, None] for fold in folds])
    fold_mean = fold_std = None
    if len(folds) > 1:  # each fold's statistics from its own training partition (Segments.for_fold)
        fold_mean = np.stack([m_ for m_, _ in stats]).astype(np.float32)
        fold_std = np.stack([s_ for _, s_ in stats]).astype(np.float32)
    return (*apply_statistics(xm, mm, *stats[0], out=xm), fold_mean, fold_std)


def continuous_labels(path: Path, clips: list[Clip], t: np.ndarray, lengths: np.ndarray):
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
