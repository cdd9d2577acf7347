"""The array operations that make a modality missing, shared by training strategies and evaluation
conditions: `drop_modalities`, `clip_zero`, `frame_zero`, `frame_repeat`, `availability`.

Absent means the modality's mask is False at that step (masks go into attention); zero-filling the
values as well is an explicit option (`zero_fill`, on by default everywhere: the `Segments` contract
is "0 where absent", and the papers zero their ablated features — 001 §3.6, 002 §2.2, 003 §4.4.2).
A model whose paper feeds zeros without masks (Params `missing="zero"`) then sees exactly the paper's
input. Every function takes and returns dicts {modality: array} of either numpy arrays or torch
tensors ([B,T,D] values, [B,T] masks), never modifies its inputs, and draws its randomness only from
the `numpy.random.Generator` it is given (draws are made in numpy, so they do not depend on device).
Modalities it leaves alone are returned as the same objects, not copies.

The random operations derive one generator per modality from the one given (`_modality_rngs`), so a
modality's missing steps do not depend on which other modalities are in the data: every model sees
the same frames missing, whatever subset of modalities it was trained on.

The evaluation levels of the papers (`CLIP_ZERO_LEVELS`, `FRAME_LEVELS`, `RANDOM_MISSING_RATES`,
`AVAILABILITY_SHARES`) are defined here too; the condition grids use them.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np
import torch

from pipeline.errors import PipelineError

Arrays = dict[str, Any]  # {modality: np.ndarray | torch.Tensor}

# 002 §4: evaluation probabilities
CLIP_ZERO_LEVELS = (1.0, 0.7, 0.5, 0.3, 0.0)
FRAME_LEVELS = (1.0, 0.95, 0.9, 0.85, 0.0)
# 003 §5.5 (AUILC, Eq. 19): missing rates 0.0 … 0.9
RANDOM_MISSING_RATES = tuple(round(0.1 * i, 1) for i in range(10))
# 001 §5.2.2: available frames 10 % … 90 %
AVAILABILITY_SHARES = tuple(round(0.1 * i, 1) for i in range(1, 10))


class ConditionError(PipelineError, ValueError):
    """An evaluation condition that cannot be parsed or names an unknown modality (also raised by
    the operations when asked to affect a modality the data does not hold)."""


# --------------------------------------------------------------------------------------------------
# array helpers (numpy or torch)


def _is_torch(a: Any) -> bool:
    return isinstance(a, torch.Tensor)


def _like(sel: np.ndarray, ref: Any) -> Any:
    """A numpy bool array as the kind of `ref` (torch tensor on ref's device, or numpy)."""
    return torch.as_tensor(sel, device=ref.device) if _is_torch(ref) else sel


def _check_known(x: Arrays, mask: Arrays, modalities: Sequence[str]) -> None:
    unknown = [m for m in modalities if m not in x or m not in mask]
    if unknown:
        raise ConditionError(f"cannot drop {unknown}: the data holds modalities {sorted(x)}")


def _rows(mask: Any, rows: Any) -> Any:
    """Boolean selector [B] (numpy or torch, like `mask`) of the sequences to affect; None = all."""
    n = mask.shape[0]
    if isinstance(mask, torch.Tensor):
        sel = torch.ones(n, dtype=torch.bool, device=mask.device) if rows is None else torch.as_tensor(rows, device=mask.device)
        if sel.dtype != torch.bool:
            sel = torch.zeros(n, dtype=torch.bool, device=mask.device).index_fill_(0, sel.long(), True)
        return sel
    sel = np.ones(n, dtype=bool) if rows is None else np.asarray(rows)
    if sel.dtype != bool:
        idx, sel = sel, np.zeros(n, dtype=bool)
        sel[idx] = True
    return sel


def _mask_steps(xm: Any, mm: Any, steps: np.ndarray, zero_fill: bool) -> tuple[Any, Any]:
    """Mask False (and values 0 when `zero_fill`) at the steps where `steps` [B,T] is True."""
    sel = _like(steps, mm)
    if _is_torch(mm):
        mm = mm.masked_fill(sel, False)
        if zero_fill:
            xm = xm.masked_fill(sel[..., None], 0.0)
        return xm, mm
    mm = np.where(sel, False, mm)
    if zero_fill:
        xm = np.where(sel[..., None], np.zeros((), xm.dtype), xm)
    return xm, mm


def _repeat_steps(xm: Any, mm: Any, steps: np.ndarray, zero_fill: bool) -> tuple[Any, Any]:
    """Replace the PRESENT steps where `steps` is True by the last kept present step before them
    (kept = present and not replaced); their mask stays True (the data is there, only stale). A
    replaced step with no kept step before it has nothing to repeat and becomes absent. Absent steps
    stay as they are."""
    present = (mm.detach().cpu().numpy() if _is_torch(mm) else np.asarray(mm)).astype(bool)
    hit = steps & present
    kept = present & ~hit
    t = np.arange(hit.shape[1])
    src = np.maximum.accumulate(np.where(kept, t, -1), axis=1)  # last kept step at or before t
    orphan = hit & (src < 0)
    src = np.where(hit & (src >= 0), src, t)  # untouched steps (and orphans) point at themselves
    if _is_torch(xm):
        idx = torch.as_tensor(src, device=xm.device, dtype=torch.long)[..., None].expand(-1, -1, xm.shape[-1])
        xm = xm.gather(1, idx)
    else:
        xm = np.take_along_axis(xm, src[..., None], axis=1)
    return _mask_steps(xm, mm, orphan, zero_fill)


def _modality_rngs(rng: np.random.Generator, modalities: Sequence[str]) -> dict[str, np.random.Generator]:
    """One generator per modality, derived from one draw of `rng` and the modality's name, so a
    modality's draws do not depend on which other modalities are affected."""
    base = int(rng.integers(0, 2**63))
    return {m: np.random.default_rng([base, zlib.crc32(m.encode())]) for m in modalities}


def _bt(mask: Any) -> tuple[int, int]:
    return int(mask.shape[0]), int(mask.shape[1])


# --------------------------------------------------------------------------------------------------
# the operations (shared by strategies and conditions)


def drop_modalities(
    x: Arrays,
    mask: Arrays,
    modalities: Sequence[str],
    zero_fill: bool = True,
    rows: Any = None,
) -> tuple[Arrays, Arrays]:
    """Make `modalities` absent for whole sequences: mask False at every step (values zeroed too
    when `zero_fill`). `rows` (bool [B] or indices) limits this to some sequences; None = all.
    Returns new dicts; arrays of untouched modalities are shared, not copied."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m in modalities:
        sel = _rows(mask[m], rows)
        if isinstance(mask[m], torch.Tensor):
            mask[m] = mask[m].masked_fill(sel[:, None], False)
            if zero_fill:
                x[m] = x[m].masked_fill(sel.view(-1, *([1] * (x[m].dim() - 1))), 0.0)
        else:
            mask[m] = np.where(sel[:, None], False, mask[m])
            if zero_fill:
                x[m] = np.where(sel.reshape(-1, *([1] * (x[m].ndim - 1))), np.zeros((), x[m].dtype), x[m])
    return x, mask


def clip_zero(x: Arrays, mask: Arrays, modalities: Sequence[str], p: float, rng: np.random.Generator, zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """002 Clip-Zero: each sequence's modality made absent with probability p (independently per
    sequence and per modality)."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m, g in _modality_rngs(rng, modalities).items():
        rows = g.random(mask[m].shape[0]) < p
        x, mask = drop_modalities(x, mask, [m], zero_fill=zero_fill, rows=_like(rows, mask[m]))
    return x, mask


def frame_zero(x: Arrays, mask: Arrays, modalities: Sequence[str], p: float, rng: np.random.Generator, zero_fill: bool = True, rows: np.ndarray | None = None) -> tuple[Arrays, Arrays]:
    """002 Frame-Zero (and 003's random feature missing): each step of each modality made absent
    with probability p, independently. `rows` (bool [B]) limits this to some sequences."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m, g in _modality_rngs(rng, modalities).items():
        steps = g.random(_bt(mask[m])) < p
        if rows is not None:
            steps &= np.asarray(rows, bool)[:, None]
        x[m], mask[m] = _mask_steps(x[m], mask[m], steps, zero_fill)
    return x, mask


def frame_repeat(x: Arrays, mask: Arrays, modalities: Sequence[str], p: float, rng: np.random.Generator, zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """002 Frame-Repeat: each present step of each modality replaced, with probability p, by the last
    kept step before it (mask stays True); one with no kept step before it (e.g. a replaced first
    frame) becomes absent, as there is nothing to repeat. At p = 1 the modality is thus fully absent,
    matching 002 §4's "complete absence" at p = 1.0."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m, g in _modality_rngs(rng, modalities).items():
        steps = g.random(_bt(mask[m])) < p
        x[m], mask[m] = _repeat_steps(x[m], mask[m], steps, zero_fill)
    return x, mask


def availability(x: Arrays, mask: Arrays, modalities: Sequence[str], share: float, rng: np.random.Generator, zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """001 §5.2.2 random masking: only `share` of each sequence's present frames stay available; the
    others — exactly round((1 − share)·n_present) of them, "selected at random" (not a contiguous
    block) — are made absent (zeroed, as in the paper, when `zero_fill`)."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m, g in _modality_rngs(rng, modalities).items():
        present = (mask[m].detach().cpu().numpy() if _is_torch(mask[m]) else np.asarray(mask[m])).astype(bool)
        n_drop = np.floor((1.0 - share) * present.sum(axis=1) + 0.5 + 1e-9).astype(int)
        keys = np.where(present, g.random(present.shape), np.inf)  # random order of present frames
        rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
        x[m], mask[m] = _mask_steps(x[m], mask[m], rank < n_drop[:, None], zero_fill)
    return x, mask
