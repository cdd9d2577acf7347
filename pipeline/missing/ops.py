"""The array operations that make a modality missing, shared by training strategies and evaluation
conditions: `drop_modalities`, `clip_zero`, `frame_zero`, `frame_repeat`, `availability`.

Absent means the modality's mask is False at that step (masks go into attention); zero-filling the
values as well is an explicit option (`zero_fill`, on by default everywhere: the `Segments` contract
is "0 where absent", and the papers zero their ablated features — 001 §3.6, 002 §2.2, 003 §4.4.2).
A model whose paper feeds zeros without masks (Params `missing_input="zero"`, pipeline/missing/inputs.py) sees the paper's
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
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pipeline.core.errors import PipelineError

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


def static_frame_zero(x: Arrays, mask: Arrays, modalities: Sequence[str], p: float, seed: int, samples: np.ndarray,
                      zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """`frame_zero` drawn once per sample: each step of each modality absent with probability p, from a
    generator of (seed, modality, sample), so a sample (`samples` [B]: its row in the segments) loses the
    same steps in every batch and epoch it appears in: incomplete data generated statically, before training
    (003 §6's one-to-one training)."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m in modalities:
        tag, steps_per_row = zlib.crc32(m.encode()), _bt(mask[m])[1]
        steps = np.stack([np.random.default_rng([seed, tag, int(s)]).random(steps_per_row) < p for s in samples]) \
            if len(samples) else np.zeros((0, steps_per_row), bool)
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


# --------------------------------------------------------------------------------------------------
# missingness mechanisms beyond MCAR (evaluation only; docs/robustness.md)

# levels of the mechanism grids (missing rate, or share of weakest steps): three points, plus the clean
# score (all_present) at 0, span the same range as 003's 0.0–0.9 grid at a quarter of its cost
MECHANISM_LEVELS = (0.3, 0.6, 0.9)
# imbalanced: the other modalities go missing at this fraction of the heavy modality's rate (r and r/4;
# no paper fixes it — chosen so the heavy modality clearly dominates while the others are not spared)
IMBALANCE_FACTOR = 0.25
# bursts: mean span length in grid steps (geometric lengths; no paper fixes it — a few steps is a short
# dropout of a sensor or a face tracker at the demo's step rate)
BURST_MEAN_STEPS = 5.0


def _present(m: Any) -> np.ndarray:
    return (m.detach().cpu().numpy() if _is_torch(m) else np.asarray(m)).astype(bool)


def _exact_drop(present: np.ndarray, rate: float, g: np.random.Generator) -> np.ndarray:
    """[B,T] bool: exactly round(rate · n_present) of each row's present steps, chosen at random."""
    n_drop = np.floor(rate * present.sum(axis=1) + 0.5 + 1e-9).astype(int)
    keys = np.where(present, g.random(present.shape), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return rank < n_drop[:, None]


def exact_missing(x: Arrays, mask: Arrays, rates: dict[str, float], rng: np.random.Generator, zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """Per modality m, exactly round(rates[m] · n_present) of each sequence's PRESENT steps made absent,
    chosen at random (availability's draw with share 1 − rate). Steps already absent (padding
    included) stay absent and are not counted, so padding never becomes present and the rate is
    the share of present steps lost. One generator per modality (`_modality_rngs`)."""
    _check_known(x, mask, list(rates))
    x, mask = dict(x), dict(mask)
    for m, g in _modality_rngs(rng, list(rates)).items():
        steps = _exact_drop(_present(mask[m]), float(rates[m]), g)
        x[m], mask[m] = _mask_steps(x[m], mask[m], steps, zero_fill)
    return x, mask


def imbalanced_missing(x: Arrays, mask: Arrays, heavy: str, rate: float, rng: np.random.Generator,
                       factor: float = IMBALANCE_FACTOR, zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """Per-modality imbalanced missingness: `heavy` loses exactly a share `rate` of each sequence's
    present steps, every other modality a share `factor · rate` (`exact_missing`)."""
    return exact_missing(x, mask, {m: rate if m == heavy else factor * rate for m in x}, rng, zero_fill)


def one_present(x: Arrays, mask: Arrays, keep: str, rate: float, rng: np.random.Generator, zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """"One modality always present": every modality but `keep` loses exactly a share `rate` of each
    sequence's present steps (`exact_missing`); `keep` is returned as the same objects, untouched."""
    _check_known(x, mask, [keep])
    return exact_missing(x, mask, {m: rate for m in x if m != keep}, rng, zero_fill)


def signal_norm(xv: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """[B,T] float64: each step's signal strength for `weakest_missing`, ‖(x·std + mean) / √(mean² + std²)‖₂
    over the feature axis of `xv` [B,T,D] (`mean`, `std` [D]). Rows are independent: computed on any
    batch of rows, a row's values are the same floats as on the whole array."""
    mu, sd = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    rms = np.sqrt(mu**2 + sd**2)
    raw = np.asarray(xv).astype(np.float64) * sd + mu
    return np.linalg.norm(raw / np.where(rms > 0, rms, 1.0), axis=-1)


def weakest_steps(norm: np.ndarray, present: np.ndarray, share: float) -> np.ndarray:
    """[B,T] bool: in each row, the round(share · n_present) present steps of lowest `norm` (ties to the
    earlier step: stable sort)."""
    norm = np.where(present, norm, np.inf)
    n_drop = np.floor(share * present.sum(axis=1) + 0.5 + 1e-9).astype(int)
    rank = np.argsort(np.argsort(norm, axis=1, kind="stable"), axis=1, kind="stable")
    return rank < n_drop[:, None]


def weakest_missing(x: Arrays, mask: Arrays, modalities: Sequence[str], share: float,
                    mean: dict[str, Any], std: dict[str, Any], zero_fill: bool = True,
                    norms: Mapping[str, np.ndarray] | None = None) -> tuple[Arrays, Arrays]:
    """Missing not at random, driven by the data: in each sequence, the round(share · n_present) present
    steps of each modality with the WEAKEST signal are made absent. Signal strength is the L2 norm of
    the de-normalised (raw) features, each dimension in units of its training root mean square:
    ‖(x·std + mean) / √(mean² + std²)‖₂ (`mean`, `std` [D]: the segments' normalisation statistics;
    `signal_norm`). A raw value of 0 contributes nothing (silence, unvoiced F0, a blank embedding), and
    no dimension dominates by its unit (eGeMAPS formants in Hz beside loudness in sones). Ties go to
    the earlier step (stable sort). No randomness: the same data gives the same mask. `norms`
    {modality: [B,T]}: the `signal_norm`s of these rows computed beforehand (e.g. batch by batch), so
    the values of `x` are not read (the streamed scoring, pipeline/evaluate/scoring.py, passes step indices)."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m in modalities:
        if m not in mean or m not in std:
            raise ConditionError(f"missing-not-at-random on '{m}' needs its normalisation statistics (mean, std)")
        if norms is not None:
            norm = norms[m]
        else:
            norm = signal_norm(x[m].detach().cpu().numpy() if _is_torch(x[m]) else np.asarray(x[m]), mean[m], std[m])
        x[m], mask[m] = _mask_steps(x[m], mask[m], weakest_steps(norm, _present(mask[m]), share), zero_fill)
    return x, mask


def burst_steps(valid: np.ndarray, rate: float, mean_len: float, g: np.random.Generator) -> np.ndarray:
    """[B,T] bool: contiguous spans covering exactly round(rate · L) of each row's valid steps (L = its
    valid steps, a prefix of the row). Spans have geometric lengths of mean `mean_len` (≥ 1) and
    uniform random starts within the valid prefix; they are added until the target is reached, the
    last one cut short so the covered count is exact. Realised runs of missing steps differ from
    `mean_len`: spans cut at the sequence end and the last one cut short make them shorter,
    overlapping spans merge into longer ones (tests: within [0.6, 2]·mean_len at rates 0.3–0.6)."""
    if mean_len < 1:
        raise ConditionError(f"burst mean length {mean_len} must be at least 1 step")
    valid = np.asarray(valid, bool)
    out = np.zeros_like(valid)
    lengths = valid.sum(axis=1)
    for b, L in enumerate(lengths):
        target = int(np.floor(rate * L + 0.5 + 1e-9))
        covered = 0
        while covered < target:
            start = int(g.integers(0, L))
            span = int(g.geometric(1.0 / mean_len))
            for t in range(start, min(start + span, L)):
                if not out[b, t]:
                    out[b, t] = True
                    covered += 1
                    if covered == target:
                        break
    return out


def bursts(x: Arrays, mask: Arrays, modalities: Sequence[str], rate: float, rng: np.random.Generator,
           valid: dict[str, Any] | None = None, mean_len: float = BURST_MEAN_STEPS, zero_fill: bool = True) -> tuple[Arrays, Arrays]:
    """Contiguous bursts: for each modality, spans (`burst_steps`) covering exactly round(rate · L) of
    each sequence's L valid steps are made absent. `valid[m]` [B,T] marks the steps within the true
    length (padding False); without it a row's valid steps are those up to its last present one.
    Only mask values go False, so padding never becomes present."""
    _check_known(x, mask, modalities)
    x, mask = dict(x), dict(mask)
    for m, g in _modality_rngs(rng, modalities).items():
        present = _present(mask[m])
        if valid is not None and m in valid:
            v = np.asarray(valid[m], bool)
        else:
            last = np.where(present.any(axis=1), present.shape[1] - np.argmax(present[:, ::-1], axis=1), 0)
            v = np.arange(present.shape[1])[None, :] < last[:, None]
        x[m], mask[m] = _mask_steps(x[m], mask[m], burst_steps(v, rate, mean_len, g), zero_fill)
    return x, mask
