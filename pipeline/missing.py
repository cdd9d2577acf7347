"""Every way of making a modality missing; training strategies and evaluation share this module.

Absent means the modality's mask is False at that step (masks go into attention); zero-filling the
values as well is an explicit option (`zero_fill`, on by default everywhere: the `Segments` contract
is "0 where absent", and the papers zero their ablated features — 001 §3.6, 002 §2.2, 003 §4.4.2).
A model whose paper feeds zeros without masks (Params `missing="zero"`) then sees exactly the paper's
input. Every function takes and returns dicts {modality: array} of either numpy arrays or torch
tensors ([B,T,D] values, [B,T] masks), never modifies its inputs, and draws its randomness only from
the `numpy.random.Generator` it is given (draws are made in numpy, so they do not depend on device).
Modalities it leaves alone are returned as the same objects, not copies.

The shared operations (`clip_zero`, `frame_zero`, `frame_repeat`, `availability`, `drop_modalities`)
derive one generator per modality from the one given (`_modality_rngs`), so a modality's missing
steps do not depend on which other modalities are in the data: every model sees the same frames
missing, whatever subset of modalities it was trained on.

Training strategies (`train.strategies`; `make_strategy(name, modalities, params, importance)`):
    standard      identity
    auxformer     001 §3.6: each batch split at random into 20 % audio zeroed / 20 % video zeroed / 60 % intact
    clip_zero     002 §2.2: a sample's target modality zeroed for the whole sequence with p_clip = 0.5
    frame_zero    002 §2.2: each frame of the target modality zeroed with p_frame = 0.5
    frame_repeat  002 §2.2: each frame of the target modality replaced by the last kept frame with p_frame = 0.5
    dynamic       003 §4.4.2: per-step Bernoulli masking (p_miss = 0.2) on every modality, for a share of
                  the batch that ramps linearly 0 → 1 over the first 5 epochs
    eliminate     000 §4: per batch, modality i eliminated with probability ρ_i (from the importance search)
Each strategy's parameters are a pydantic model (`<Strategy>.Params`, extra fields forbidden); see their
docstrings for the choices made where a paper is silent.

Evaluation conditions (`evaluate.conditions` in params.yaml; `parse_conditions`):
    all_present                     the data as it is
    missing:<mod>                   <mod> absent for every sequence
    missing:<mod1>+<mod2>[+…]       several modalities absent for every sequence
    each_missing                    one missing:<mod> per modality
    each_pair_missing               one missing:<m1>+<m2> per pair of modalities (only with ≥ 3 modalities)
    clip_zero:<mod>@<p>             002 §4: each sequence's <mod> zeroed with probability p
    frame_zero:<mod>@<p>            002 §4: each frame of <mod> zeroed with probability p
    frame_repeat:<mod>@<p>          002 §4: each frame of <mod> repeated (last kept frame) with probability p
    random_missing@<rate>           003 §5.5: each step of every modality missing with probability rate
    random_missing:<mod>@<rate>     the same for one modality
    availability:<mod>@<share>      001 §5.2.2: only <share> of <mod>'s frames kept, the rest chosen at random
    clip_zero_grid                  clip_zero for every modality × p ∈ {1.0, 0.7, 0.5, 0.3, 0.0} (002 §4)
    frame_zero_grid                 frame_zero for every modality × p ∈ {1.0, 0.95, 0.9, 0.85, 0.0} (002 §4)
    frame_repeat_grid               frame_repeat likewise
    random_missing_grid             rates 0.0, 0.1, …, 0.9 (003 §5.5), all modalities and each modality
    availability_grid               shares 0.1, 0.2, …, 0.9 (001 §5.2.2), each modality
Every condition has `name` (canonical: levels written as Python floats, e.g. `frame_zero:face@0.9`),
`family`, `modality` (a name, a tuple of names, or None = every modality) and `level` (p, rate or
share; None where there is none), so a report can draw a curve per family and modality. A condition
applied with a generator seeded by `condition_seed(name)` gives every model the same missing data.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    """An evaluation condition that cannot be parsed or names an unknown modality."""


class StrategyError(PipelineError, ValueError):
    """A training strategy that is unknown, or has invalid parameters or importance."""


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


def _split(rng: np.random.Generator, n: int, shares: Sequence[float]) -> np.ndarray:
    """Group index [n] for a random split of n samples into groups of the given shares (the rest is
    group len(shares)). Systematic sampling: each group's size is ⌊n·share⌋ or ⌈n·share⌉ with
    expectation exactly n·share, so small (or last) batches keep the stated proportions on average."""
    if n == 0:
        return np.zeros(0, dtype=int)
    pos = (np.arange(n) + rng.random()) / n
    group = np.searchsorted(np.cumsum(shares), pos, side="right")
    return group[rng.permutation(n)]


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


# --------------------------------------------------------------------------------------------------
# training strategies


class _StrategyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zero_fill: bool = Field(True, description="zero the values of absent steps too (else mask only)")


class _Targets(_StrategyParams):
    modalities: list[str] | None = Field(
        None,
        description="modalities to ablate; None = the FIRST modality (002 §2.2 ablates only the visual "
        "modality, the first one in the demo's order face, acoustic, …)",
    )


class Strategy(ABC):
    """A training strategy: `apply(x, mask, rng, epoch)` on one batch (torch or numpy), 1-based epoch."""

    name: ClassVar[str]
    Params: ClassVar[type[_StrategyParams]] = _StrategyParams

    def __init__(self, modalities: Sequence[str], params: _StrategyParams, importance: dict | None = None) -> None:
        self.modalities, self.params = tuple(modalities), params

    @abstractmethod
    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]: ...

    def _targets(self, given: Sequence[str] | None) -> tuple[str, ...]:
        if given is None:
            if not self.modalities:
                raise StrategyError(f"strategy '{self.name}': no modalities to ablate")
            return (self.modalities[0],)
        unknown = [m for m in given if m not in self.modalities]
        if unknown or not given:
            raise StrategyError(f"strategy '{self.name}': modalities {list(given)} must be a non-empty subset of {list(self.modalities)}")
        return tuple(given)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


class Standard(Strategy):
    """Train on the data as it is."""

    name = "standard"

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        return dict(x), dict(mask)


class AuxFormerTraining(Strategy):
    """001 §3.6 optimized training: each batch is split at random into three groups; the first (20 %)
    has its acoustic features replaced by zeros, the second (20 %) its visual features, the third
    (60 %) is intact. Group sizes are ⌊·⌋ or ⌈·⌉ of the shares (exact in expectation, see `_split`).
    `audio`/`video` name the modalities of each group (a name or a list); defaults: the first and the
    second modality (paper silent on >2 modalities; set them explicitly, e.g. audio: [acoustic, speech],
    video: face). `unit: batch` follows the authors' code instead (IMPLEMENTATION_NOTES: the whole
    batch's audio or video zeroed, each with probability 0.2)."""

    name = "auxformer"

    class Params(_StrategyParams):
        audio: list[str] | str | None = Field(None, description="modalities zeroed in the audio group; None = the first modality")
        video: list[str] | str | None = Field(None, description="modalities zeroed in the video group; None = the second modality")
        p_audio: float = Field(0.2, ge=0, le=1, description="001 §3.6: 20 % of each batch")
        p_video: float = Field(0.2, ge=0, le=1, description="001 §3.6: 20 % of each batch")
        unit: Literal["sample", "batch"] = Field("sample", description="sample: 001 §3.6 split; batch: authors' code")

    def __init__(self, modalities: Sequence[str], params: Params, importance: dict | None = None) -> None:
        super().__init__(modalities, params)
        if params.p_audio + params.p_video > 1 + 1e-9:
            raise StrategyError(f"strategy 'auxformer': p_audio + p_video = {params.p_audio + params.p_video} > 1")

        def group(v: list[str] | str | None, default: int) -> tuple[str, ...]:
            if v is None:
                if len(self.modalities) < 2:
                    raise StrategyError(f"strategy 'auxformer' needs two modalities (audio, video); got {list(self.modalities)}")
                return (self.modalities[default],)
            return self._targets([v] if isinstance(v, str) else v)

        self.audio, self.video = group(params.audio, 0), group(params.video, 1)
        if set(self.audio) & set(self.video):
            raise StrategyError(f"strategy 'auxformer': audio {list(self.audio)} and video {list(self.video)} overlap")

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        p: AuxFormerTraining.Params = self.params  # type: ignore[assignment]
        n = _bt(mask[self.audio[0]])[0]
        if p.unit == "batch":
            group = np.full(n, int(np.searchsorted(np.cumsum([p.p_audio, p.p_video]), rng.random(), side="right")))
        else:
            group = _split(rng, n, [p.p_audio, p.p_video])
        x, mask = drop_modalities(x, mask, self.audio, p.zero_fill, rows=_like(group == 0, mask[self.audio[0]]))
        return drop_modalities(x, mask, self.video, p.zero_fill, rows=_like(group == 1, mask[self.video[0]]))


class ClipZeroTraining(Strategy):
    """002 §2.2 Clip-Zero: each sample's target modality zeroed for the whole sequence with probability
    p_clip (0.5, 002 §3.3), independently per sample (and per target modality if several)."""

    name = "clip_zero"

    class Params(_Targets):
        p_clip: float = Field(0.5, ge=0, le=1, description="002 §3.3: p_clip = 0.5")

    def __init__(self, modalities: Sequence[str], params: Params, importance: dict | None = None) -> None:
        super().__init__(modalities, params)
        self.targets = self._targets(params.modalities)

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        p: ClipZeroTraining.Params = self.params  # type: ignore[assignment]
        return clip_zero(x, mask, self.targets, p.p_clip, rng, p.zero_fill)


class FrameZeroTraining(Strategy):
    """002 §2.2 Frame-Zero: each frame of the target modality zeroed with probability p_frame (0.5)."""

    name = "frame_zero"

    class Params(_Targets):
        p_frame: float = Field(0.5, ge=0, le=1, description="002 §3.3: p_frame = 0.5")

    def __init__(self, modalities: Sequence[str], params: Params, importance: dict | None = None) -> None:
        super().__init__(modalities, params)
        self.targets = self._targets(params.modalities)

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        p: FrameZeroTraining.Params = self.params  # type: ignore[assignment]
        return frame_zero(x, mask, self.targets, p.p_frame, rng, p.zero_fill)


class FrameRepeatTraining(FrameZeroTraining):
    """002 §2.2 Frame-Repeat: each present frame of the target modality replaced, with probability
    p_frame (0.5), by the last kept frame before it; the mask stays True for repeated frames (the data
    is there, only stale). A replaced frame with no kept frame before it (e.g. the first one) becomes
    absent — the paper is silent; there is nothing to repeat. `zero_fill` applies to those only."""

    name = "frame_repeat"

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        p: FrameZeroTraining.Params = self.params  # type: ignore[assignment]
        return frame_repeat(x, mask, self.targets, p.p_frame, rng, p.zero_fill)


class DynamicTraining(Strategy):
    """003 §4.4.2 dynamic incomplete training: in a share of each batch's samples, every step of every
    modality is masked (mask False, values zeroed — 003 zeroes missing features; [UNK] for text is an
    extractor matter) independently with probability p_miss = 0.2. The share "increases linearly from
    0.0 to 1.0 in the first 5 epochs": share(epoch) = min(1, (epoch − 1)/(ramp_epochs − 1)), i.e. 0 at
    epoch 1 (consistent with the authors' code starting the auxiliary losses at epoch 2) and 1 from
    epoch `ramp_epochs` on. The samples are a random split of the batch (sizes ⌊·⌋/⌈·⌉ of the share)."""

    name = "dynamic"

    class Params(_StrategyParams):
        p_miss: float = Field(0.2, ge=0, le=1, description="003 §4.4.2: p_miss = 0.2")
        ramp_epochs: int = Field(5, ge=1, description="003 §4.4.2: share 0 → 1 over the first 5 epochs")
        modalities: list[str] | None = Field(None, description="modalities masked; None = every modality (003)")

    def __init__(self, modalities: Sequence[str], params: Params, importance: dict | None = None) -> None:
        super().__init__(modalities, params)
        self.targets = self.modalities if params.modalities is None else self._targets(params.modalities)

    def share(self, epoch: int) -> float:
        r = self.params.ramp_epochs  # type: ignore[attr-defined]
        return 1.0 if r <= 1 else float(min(1.0, max(0.0, (epoch - 1) / (r - 1))))

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        p: DynamicTraining.Params = self.params  # type: ignore[assignment]
        rows = _split(rng, _bt(mask[self.targets[0]])[0], [self.share(epoch)]) == 0
        return frame_zero(x, mask, self.targets, p.p_miss, rng, p.zero_fill, rows=rows)


class EliminateTraining(Strategy):
    """000 §4 optimized training: "for each batch, we randomly select to eliminate the important
    modality i with probability ρ_i, and to keep all modalities with probability 1 − Σρ_i" — at most
    one modality per batch, eliminated for the whole sequence (000: "completely absent"). ρ comes from
    `importance = {"rho": {mod: ρ}, …}` (the model's entry of the importance search; other keys are
    ignored), unless the `rho` parameter is set (e.g. 000 §6.2's {video: 0.25} for arousal), which
    then takes precedence; neither is an error. Modalities without ρ are never eliminated. `unit: sample` draws per
    sample instead (an option; the paper draws per batch)."""

    name = "eliminate"

    class Params(_StrategyParams):
        rho: dict[str, float] | None = Field(None, description="ρ per modality; None = from the importance search")
        unit: Literal["batch", "sample"] = Field("batch", description="000 §4: per batch")

    def __init__(self, modalities: Sequence[str], params: Params, importance: dict | None = None) -> None:
        super().__init__(modalities, params)
        if params.rho is not None:  # an explicit setting overrides the importance search
            rho = params.rho
        elif importance is None:
            raise StrategyError(
                "strategy 'eliminate' needs the modalities' elimination probabilities ρ (000 §4): run the importance "
                "search first (importance = {'rho': {modality: ρ}}) or set train.strategy_params.eliminate.rho"
            )
        elif not isinstance(importance, dict) or not isinstance(importance.get("rho"), dict):
            raise StrategyError(f"strategy 'eliminate': importance must be {{'rho': {{modality: ρ}}}}, got {importance!r}")
        else:
            rho = importance["rho"]
        unknown = [m for m in rho if m not in self.modalities]
        bad = {m: r for m, r in rho.items() if not (isinstance(r, (int, float)) and 0 <= r <= 1)}
        if unknown or bad:
            raise StrategyError(f"strategy 'eliminate': ρ {dict(rho)} must map modalities of {list(self.modalities)} to [0, 1]")
        if sum(rho.values()) > 1 + 1e-9:
            raise StrategyError(f"strategy 'eliminate': Σρ = {sum(rho.values()):.4g} > 1 (000 §4: ρ_none = 1 − Σρ ≥ 0)")
        self.rho = {m: float(rho[m]) for m in self.modalities if m in rho}  # the model's modality order

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        p: EliminateTraining.Params = self.params  # type: ignore[assignment]
        mods = list(self.rho)
        if not mods:
            return dict(x), dict(mask)
        cum = np.cumsum(list(self.rho.values()))
        n = _bt(mask[mods[0]])[0]
        draws = np.full(n, rng.random()) if p.unit == "batch" else rng.random(n)
        choice = np.searchsorted(cum, draws, side="right")  # index into mods, len(mods) = keep all
        for i, m in enumerate(mods):
            x, mask = drop_modalities(x, mask, [m], p.zero_fill, rows=_like(choice == i, mask[m]))
        return x, mask


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s
    for s in (Standard, AuxFormerTraining, ClipZeroTraining, FrameZeroTraining, FrameRepeatTraining, DynamicTraining, EliminateTraining)
}


def make_strategy(name: str, modalities: Sequence[str], params: dict | None = None, importance: dict | None = None) -> Strategy:
    """The training strategy `name` for a model on `modalities`, with `params` overriding its paper
    defaults (validated; unknown keys are errors) and `importance` (for 'eliminate')."""
    if name not in STRATEGIES:
        raise StrategyError(f"unknown training strategy '{name}'; known: {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    try:
        p = cls.Params(**(params or {}))
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(params)'}: {err['msg']}" for err in e.errors())
        raise StrategyError(f"strategy '{name}': invalid parameters {params!r}: {msgs}") from None
    return cls(modalities, p, importance)


# --------------------------------------------------------------------------------------------------
# evaluation conditions


def _fmt(level: float) -> str:
    return repr(round(float(level), 6))


class Condition(ABC):
    """A named way of making data (partly) missing: `apply(x, mask, rng) -> (x, mask)`."""

    name: str
    family: str
    modality: str | tuple[str, ...] | None = None
    level: float | None = None

    @abstractmethod
    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AllPresent(Condition):
    name = family = "all_present"

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]:
        return dict(x), dict(mask)


class MissingModality(Condition):
    """One modality (or several, joined by '+' in the name) absent for every sequence (002 §4
    Clip-Zero at p = 1.0; 001 §5.2.1 modality clipping; 000 §6.2)."""

    family = "missing"

    def __init__(self, modality: str | Sequence[str], zero_fill: bool = True) -> None:
        self.modalities = (modality,) if isinstance(modality, str) else tuple(modality)
        self.modality = self.modalities[0] if len(self.modalities) == 1 else self.modalities
        self.zero_fill = zero_fill
        self.name = "missing:" + "+".join(self.modalities)

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]:
        return drop_modalities(x, mask, self.modalities, zero_fill=self.zero_fill)


class _Leveled(Condition):
    """A condition with a level in [0, 1] on one modality, or on every modality (modality None)."""

    _op: ClassVar[Any]

    def __init__(self, modality: str | None, level: float, zero_fill: bool = True) -> None:
        if not 0.0 <= float(level) <= 1.0:
            raise ConditionError(f"{self.family}: level {level} is not in [0, 1]")
        self.modality, self.level, self.zero_fill = modality, float(level), zero_fill
        self.name = f"{self.family}{'' if modality is None else ':' + modality}@{_fmt(level)}"

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]:
        mods = list(x) if self.modality is None else [self.modality]
        return type(self)._op(x, mask, mods, self.level, rng, zero_fill=self.zero_fill)


class ClipZero(_Leveled):
    """002 §4 Clip-Zero: each sequence's modality zeroed (absent) with probability `level`."""

    family, _op = "clip_zero", clip_zero


class FrameZero(_Leveled):
    """002 §4 Frame-Zero: each frame of the modality zeroed (absent) with probability `level`."""

    family, _op = "frame_zero", frame_zero


class FrameRepeat(_Leveled):
    """002 §4 Frame-Repeat: each frame replaced by the last kept frame with probability `level`."""

    family, _op = "frame_repeat", frame_repeat


class RandomMissing(_Leveled):
    """003 §5.5: each step of each modality (modality None: every modality, independently) missing with
    probability `level` (the missing rate of the AUILC curves, Eq. 19)."""

    family, _op = "random_missing", frame_zero


class Availability(_Leveled):
    """001 §5.2.2: only a share `level` of the modality's frames available; the others, chosen at
    random, zeroed."""

    family, _op = "availability", availability


def condition_seed(name: str, base_seed: int = 0) -> int:
    """Stable seed for a condition's generator (same across processes and models)."""
    return (zlib.crc32(name.encode()) + base_seed) % 2**32


_LEVELED: dict[str, type[_Leveled]] = {c.family: c for c in (ClipZero, FrameZero, FrameRepeat, RandomMissing, Availability)}
_GRIDS: dict[str, tuple[type[_Leveled], tuple[float, ...]]] = {
    "clip_zero_grid": (ClipZero, CLIP_ZERO_LEVELS),
    "frame_zero_grid": (FrameZero, FRAME_LEVELS),
    "frame_repeat_grid": (FrameRepeat, FRAME_LEVELS),
    "random_missing_grid": (RandomMissing, RANDOM_MISSING_RATES),
    "availability_grid": (Availability, AVAILABILITY_SHARES),
}
ACCEPTED_FORMS = (
    "all_present, each_missing, each_pair_missing, missing:<modality>[+<modality>…], "
    "clip_zero:<modality>@<p>, frame_zero:<modality>@<p>, frame_repeat:<modality>@<p>, "
    "random_missing@<rate>, random_missing:<modality>@<rate>, availability:<modality>@<share> "
    "(levels in [0, 1]), " + ", ".join(_GRIDS)
)
_LEVELED_RE = re.compile(r"^(?P<family>[a-z_]+)(?::(?P<mod>[^@]+))?@(?P<level>[^@]+)$")


def _expand(entry: str, modalities: Sequence[str]) -> list[Condition]:
    def known(mod: str) -> str:
        if mod not in modalities:
            raise ConditionError(f"condition '{entry}': modality '{mod}' is not one the models were trained on {list(modalities)}")
        return mod

    if entry == "all_present":
        return [AllPresent()]
    if entry == "each_missing":
        return [MissingModality(m) for m in modalities]
    if entry == "each_pair_missing":  # with 2 modalities a pair is everything: nothing left to evaluate
        return [MissingModality(p) for p in itertools.combinations(modalities, 2)] if len(modalities) >= 3 else []
    if entry.startswith("missing:"):
        mods = entry.split(":", 1)[1].split("+")
        mods = [known(m.strip()) for m in mods]
        if len(set(mods)) != len(mods):
            raise ConditionError(f"condition '{entry}' names a modality twice")
        if set(modalities) <= set(mods):
            raise ConditionError(f"condition '{entry}' leaves no modality of {list(modalities)}")
        return [MissingModality(mods)]
    if entry in _GRIDS:
        cls, levels = _GRIDS[entry]
        mods: list[str | None] = ([None] if cls is RandomMissing else []) + list(modalities)
        return [cls(m, lv) for m in mods for lv in levels]
    match = _LEVELED_RE.match(entry)
    if match and match["family"] in _LEVELED:
        cls = _LEVELED[match["family"]]
        mod = match["mod"]
        if mod is None and cls is not RandomMissing:
            raise ConditionError(f"condition '{entry}': {cls.family} needs a modality: {cls.family}:<modality>@<level>")
        try:
            level = float(match["level"])
        except ValueError:
            raise ConditionError(f"condition '{entry}': level '{match['level']}' is not a number") from None
        if not (math.isfinite(level) and 0.0 <= level <= 1.0):
            raise ConditionError(f"condition '{entry}': level {match['level']} is not in [0, 1]")
        return [cls(None if mod is None else known(mod.strip()), level)]
    raise ConditionError(f"unknown condition '{entry}'; accepted forms: {ACCEPTED_FORMS}")


def parse_conditions(entries: Sequence[str], modalities: Sequence[str]) -> list[Condition]:
    """Conditions for `evaluate.conditions` entries, given the trained modalities; grids and `each_*`
    expand; duplicates (same canonical name) dropped, first occurrence kept."""
    out: dict[str, Condition] = {}
    for entry in entries:
        for c in _expand(entry.strip(), modalities):
            out.setdefault(c.name, c)
    if not out:
        raise ConditionError(f"evaluate.conditions is empty (or expands to nothing for modalities {list(modalities)})")
    return list(out.values())
