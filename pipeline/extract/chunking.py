"""Overlap chunking of long sequences, shared by the `wav2vec2` (frames) and `bert` (words) extractors.

A sequence of items, each `lengths[i]` units long (a wav2vec2 frame: 1 frame; a word: its sub-tokens),
whose total exceeds the model's window of `window` units runs in windows of whole items. Each window
gives the outputs of a run of "kept" items with at least `context` units of context on each side
inside the window (wherever the sequence has that much), so kept items sit in the middle of their
window; the kept runs partition the sequence, so outputs keep the unchunked run's grid and count.
The windows advance greedily (each keeps as many items as fit between its two contexts) and the last
one reaches back to use the whole window. With unit lengths every window is exactly `window` long,
consecutive ones overlapping by 2·`context`. Memory is that of one window, whatever the length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """Items [start, stop) go through the model together; items [keep_start, keep_stop) take their
    output from this window."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def plan_windows(lengths: np.ndarray | list[int], window: int, context: int) -> list[Window]:
    """Windows over items of the given lengths (see the module docstring). An item too long to be
    kept with its contexts gets a window of its own, centred on it with whatever neighbours fit; an
    item longer than `window` then overflows it (the caller truncates)."""
    if window < 1 or context < 0 or window - 2 * context < 1:
        raise ValueError(f"chunking needs window > 2·context >= 0 (window {window}, context {context})")
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1]) if n else 0
    if total <= window:
        return [Window(0, n, 0, n)]

    def right_end(m: int) -> int:
        """Stop index of the fewest items after item m-1 that give `context` units (or all of them)."""
        return max(m, min(n, int(np.searchsorted(ends, ends[m - 1] + context, side="left")) + 1))

    plan: list[Window] = []
    k = 0
    while k < n:
        # left context: the fewest items before k giving `context` units (all of them near the start)
        s = min(k, max(0, int(np.searchsorted(starts, starts[k] - context, side="right")) - 1))
        if total - starts[s] <= window:  # the rest fits: the last window, reaching back to fill it
            s = int(np.searchsorted(starts, total - window, side="left"))
            plan.append(Window(s, n, k, n))
            break
        limit = starts[s] + window
        m = int(np.searchsorted(ends, limit - context, side="right"))
        while m > k and ends[right_end(m) - 1] > limit:
            m -= 1
        if m > k:
            plan.append(Window(s, right_end(m), k, m))
            k = m
            continue
        # item k does not fit between two contexts: centre a window on it
        lo = int(np.clip((starts[k] + ends[k] - window) // 2, 0, total - window))
        first = min(k, int(np.searchsorted(starts, lo, side="left")))
        stop = max(k + 1, int(np.searchsorted(ends, lo + window, side="right")))
        plan.append(Window(first, stop, k, k + 1))
        k += 1
    return plan
