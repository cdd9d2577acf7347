"""Scoring each test clip once: windowed predictions merged per clip, and the masked-steps record.

pipeline/evaluate/grid.py scores every run under every condition; what it scores and the steps each
`missing` condition removed (masked_steps.csv) are computed here, in the clips' own steps.

Sequences cut from longer clips (layouts `windows` and `frames`: the segments carry `origin`, the first
step of each sequence in its clip, and a clip id repeats once per sequence): conditions are still applied
per window (the same seeds as everywhere), and the model predicts each window; then every clip is scored
once (`clip_predictions`). Regression: each window's per-step prediction goes back onto its clip's step
origin + step, a step covered by several overlapping windows (up to ceil(win / hop) under `windows`)
gets the mean of their predictions, and only steps where the clip's label mask holds (and within the
window's true length) count; CCC and RMSE are then computed over those clip steps, each once (000 §5.3
scores the full test recordings). Classification (one label per clip): the windows' logits are averaged
per clip and the class is their argmax. Without `origin` (layouts `aligned`, `native`) nothing is merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import polars as pl

from pipeline.missing import Condition
from pipeline.runs.feed import Split
from pipeline.runs.metrics import classification_metrics, regression_metrics

__all__ = ["MASKED_SCHEMA", "ClipPredictions", "clip_metrics", "clip_predictions", "masked_steps", "step_ranges"]


@dataclass
class ClipPredictions:
    """What a run is scored on: classification one row per clip (`true` [n] class indices, `out` [n, C]
    logits), regression one row per valid clip step (`step` [n], `true` and `out` [n, K])."""

    clip_id: np.ndarray
    true: np.ndarray
    out: np.ndarray
    step: np.ndarray | None = None


def _first_seen(clip_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clips in order of first appearance, each row's index into them)."""
    uniq, first, inv = np.unique(clip_ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inv.reshape(-1)]


def clip_predictions(task: str, split: Split, clip_ids: np.ndarray, out: np.ndarray,
                     origin: np.ndarray | None = None) -> ClipPredictions:
    """The split's outputs `out` as scored. Without `origin` one row per sequence (per valid target
    step). With `origin` (windows/frames: sequence i starts at step origin[i] of clip clip_ids[i]) each
    clip once: classification averages its windows' logits; regression puts window step s on clip step
    origin + s and averages the windows covering a step, over the steps where `split.y_mask` holds;
    rows in order of the clips' first window, then clip step."""
    if task == "classification":
        if origin is None:
            return ClipPredictions(clip_ids, split.y, out)
        clips, inv = _first_seen(clip_ids)
        sums = np.zeros((len(clips), out.shape[1]), np.float64)
        np.add.at(sums, inv, out)
        true = np.empty(len(clips), np.int64)
        true[inv] = split.y
        return ClipPredictions(clips, true, sums / np.bincount(inv, minlength=len(clips))[:, None])
    row, step = np.nonzero(split.y_mask)
    if origin is None:
        return ClipPredictions(clip_ids[row], split.y[row, step], out[row, step], step.astype(np.int64))
    clips, inv = _first_seen(clip_ids)
    cstep = origin[row] + step
    span = int(cstep.max(initial=0)) + 1
    keys, at = np.unique(inv[row] * span + cstep, return_inverse=True)
    at = at.reshape(-1)
    k = out.shape[-1]
    sums = np.zeros((len(keys), k), np.float64)
    np.add.at(sums, at, out[row, step])
    true = np.empty((len(keys), k), np.float64)
    true[at] = split.y[row, step]
    return ClipPredictions(clips[keys // span], true, sums / np.bincount(at, minlength=len(keys))[:, None],
                           (keys % span).astype(np.int64))


def clip_metrics(task: str, targets: list[str], scored: ClipPredictions) -> dict[str, float]:
    """The task's metrics over `clip_predictions` (each clip, or clip step, once)."""
    if task == "classification":
        return classification_metrics(scored.true, scored.out.argmax(axis=1))
    return regression_metrics(scored.true, scored.out, targets)


MASKED_SCHEMA = {"fold": pl.Int64, "condition": pl.String, "clip_id": pl.String, "modality": pl.String,
                 "steps": pl.String, "n_masked": pl.Int64, "n_steps": pl.Int64}


def step_ranges(steps: Sequence[int] | np.ndarray) -> str:
    """Sorted distinct steps as run lengths: [0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' ('' for none)."""
    s = np.unique(np.asarray(steps, np.int64))
    if s.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(s) != 1)
    starts, ends = s[np.r_[0, breaks + 1]], s[np.r_[breaks, s.size - 1]]
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in zip(starts.tolist(), ends.tolist()))


def masked_steps(conditions: list[Condition], applied: dict[str, tuple[dict, dict]], split: Split,
                 clip_ids: np.ndarray, origin: np.ndarray | None, fold: int = 0) -> list[dict[str, Any]]:
    """For the instance view: per test clip, `missing`-family condition and modality it names, the steps
    the condition removed (present in the data, absent under it) as `step_ranges`, in the clip's own
    steps (with `origin`: window step s is clip step origin + s, a step counted when any window covering
    it lost it), their number and the clip's valid steps of that modality. Of `applied` {name: (x, mask)}
    only the masks are read (the streamed scoring passes one condition's plan masks at a time)."""
    rows: list[dict[str, Any]] = []
    clips, inv = _first_seen(clip_ids)
    start = np.zeros(len(clip_ids), np.int64) if origin is None else origin
    for c in conditions:
        if c.family != "missing" or c.name not in applied:
            continue
        named = list(split.mask) if c.modality is None else [c.modality] if isinstance(c.modality, str) else list(c.modality)
        for m in [m for m in named if m in split.mask]:
            valid = split.valid[m] if split.valid is not None else np.ones_like(split.mask[m], dtype=bool)
            removed = split.mask[m] & ~np.asarray(applied[c.name][1][m], dtype=bool) & valid
            gone: list[set[int]] = [set() for _ in clips]
            have: list[set[int]] = [set() for _ in clips]
            for i in range(len(clip_ids)):
                gone[inv[i]].update((start[i] + np.flatnonzero(removed[i])).tolist())
                have[inv[i]].update((start[i] + np.flatnonzero(valid[i])).tolist())
            rows += [{"fold": fold, "condition": c.name, "clip_id": str(clip), "modality": m,
                      "steps": step_ranges(sorted(g)), "n_masked": len(g), "n_steps": len(h)}
                     for clip, g, h in zip(clips, gone, have)]
    return rows
