"""Evaluation conditions: the named ways test data is made missing (`evaluate.conditions` in
params.yaml; `parse_conditions(entries, modalities)`).

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
  mechanisms beyond MCAR (docs/robustness.md; levels of the grids: 0.3, 0.6, 0.9, the clean score at 0
  coming from all_present):
    imbalanced:<mod>@<rate>         <mod> loses exactly a share rate of each sequence's present steps, every
                                    other modality rate/4 (`ops.IMBALANCE_FACTOR`)
    mnar@<share>, mnar:<mod>@<share>  missing not at random: each sequence's weakest share of present steps
                                    (lowest L2 norm of the raw features, each dimension over its training
                                    RMS; `ops.weakest_missing`) absent, per modality
    burst@<rate>, burst:<mod>@<rate>  contiguous spans (mean `evaluate.burst_mean_steps` steps) covering
                                    exactly a share rate of each sequence's valid steps
    one_present:<mod>@<rate>        every modality but <mod> loses exactly a share rate of its present steps
    imbalanced_grid, one_present_grid   each modality × 0.3, 0.6, 0.9
    mnar_grid, burst_grid           every modality at once × 0.3, 0.6, 0.9
Every condition has `name` (canonical: levels written as Python floats, e.g. `frame_zero:face@0.9`),
`family`, `modality` (a name, a tuple of names, or None = every modality) and `level` (p, rate or
share; None where there is none), so a report can draw a curve per family and modality. A condition
applied with a generator seeded by `condition_seed(name)` gives every model the same missing data.
`apply_with(x, mask, rng, context)` passes what some mechanisms need beyond the arrays
(`ConditionContext`: the valid steps of each modality and the normalisation statistics); no condition
ever marks a step present, so padding (mask ⊆ valid) stays absent.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from pipeline.missing.ops import (
    AVAILABILITY_SHARES,
    BURST_MEAN_STEPS,
    CLIP_ZERO_LEVELS,
    FRAME_LEVELS,
    MECHANISM_LEVELS,
    RANDOM_MISSING_RATES,
    Arrays,
    ConditionError,
    availability,
    bursts,
    clip_zero,
    drop_modalities,
    frame_repeat,
    frame_zero,
    imbalanced_missing,
    one_present,
    weakest_missing,
)


def _fmt(level: float) -> str:
    return repr(round(float(level), 6))


@dataclass(frozen=True)
class ConditionContext:
    """What a condition may need beyond the arrays: `valid` {modality: [B,T] bool} the steps within each
    sequence's true length (`Segments.valid`, padding False), and the normalisation statistics
    `mean`, `std` {modality: [D]} that turn the z-scored features back into raw values. `norms`
    {modality: [B,T]}: the rows' signal norms (`ops.signal_norm`) computed beforehand, which `mnar` then
    uses instead of reading the values (the streamed scoring applies conditions to step indices)."""

    valid: dict[str, np.ndarray] | None = None
    mean: dict[str, np.ndarray] | None = None
    std: dict[str, np.ndarray] | None = None
    norms: Mapping[str, np.ndarray] | None = None


class Condition(ABC):
    """A named way of making data (partly) missing: `apply(x, mask, rng) -> (x, mask)`."""

    name: str
    family: str
    modality: str | tuple[str, ...] | None = None
    level: float | None = None

    @abstractmethod
    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]: ...

    def apply_with(self, x: Arrays, mask: Arrays, rng: np.random.Generator, context: ConditionContext | None = None) -> tuple[Arrays, Arrays]:
        """`apply`, given the context some mechanisms need (the others ignore it)."""
        return self.apply(x, mask, rng)

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


class _Mechanism(_Leveled):
    """A missingness mechanism beyond MCAR (docs/robustness.md): like `_Leveled`, and `apply_with`
    takes the `ConditionContext`."""

    needs_modality: ClassVar[bool] = False

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]:
        return self.apply_with(x, mask, rng, None)


class Imbalanced(_Mechanism):
    """Per-modality imbalanced missingness: `modality` loses exactly a share `level` of each sequence's
    present steps, every other modality `IMBALANCE_FACTOR` · level (r and r/4)."""

    family, needs_modality = "imbalanced", True

    def apply_with(self, x, mask, rng, context=None):
        return imbalanced_missing(x, mask, self.modality, self.level, rng, zero_fill=self.zero_fill)


class OnePresent(_Mechanism):
    """One modality always present: every modality but `modality` loses exactly a share `level` of each
    sequence's present steps; `modality` is never touched."""

    family, needs_modality = "one_present", True

    def apply_with(self, x, mask, rng, context=None):
        return one_present(x, mask, self.modality, self.level, rng, zero_fill=self.zero_fill)


class WeakestMissing(_Mechanism):
    """Missing not at random: the share `level` of each sequence's present steps with the weakest signal
    (`ops.weakest_missing`: lowest L2 norm of the raw features, each dimension over its training RMS)
    absent, per modality (modality None: each modality on its own signal). Needs `context.mean` and
    `context.std`; deterministic."""

    family = "mnar"

    def apply_with(self, x, mask, rng, context=None):
        if context is None or context.mean is None or context.std is None:
            raise ConditionError(f"condition '{self.name}' needs the features' normalisation statistics "
                                 "(apply_with(…, ConditionContext(mean=…, std=…)))")
        mods = list(x) if self.modality is None else [self.modality]
        return weakest_missing(x, mask, mods, self.level, context.mean, context.std, zero_fill=self.zero_fill,
                               norms=context.norms)


class Burst(_Mechanism):
    """Contiguous bursts: spans of mean length `mean_len` steps covering exactly a share `level` of
    each sequence's valid steps, per modality (modality None: each modality, independently)."""

    family = "burst"

    def __init__(self, modality: str | None, level: float, zero_fill: bool = True, mean_len: float = BURST_MEAN_STEPS) -> None:
        super().__init__(modality, level, zero_fill)
        self.mean_len = float(mean_len)

    def apply_with(self, x, mask, rng, context=None):
        mods = list(x) if self.modality is None else [self.modality]
        valid = None if context is None else context.valid
        return bursts(x, mask, mods, self.level, rng, valid=valid, mean_len=self.mean_len, zero_fill=self.zero_fill)


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
_MECHANISMS: dict[str, type[_Mechanism]] = {c.family: c for c in (Imbalanced, OnePresent, WeakestMissing, Burst)}
# mechanism grids: per modality (each one heavy / kept) or every modality at once (modality None)
_MECHANISM_GRIDS: dict[str, type[_Mechanism]] = {
    "imbalanced_grid": Imbalanced,
    "one_present_grid": OnePresent,
    "mnar_grid": WeakestMissing,
    "burst_grid": Burst,
}
ACCEPTED_FORMS = (
    "all_present, each_missing, each_pair_missing, missing:<modality>[+<modality>…], "
    "clip_zero:<modality>@<p>, frame_zero:<modality>@<p>, frame_repeat:<modality>@<p>, "
    "random_missing@<rate>, random_missing:<modality>@<rate>, availability:<modality>@<share> "
    "imbalanced:<modality>@<rate>, one_present:<modality>@<rate>, mnar[:<modality>]@<share>, burst[:<modality>]@<rate> "
    "(levels in [0, 1]), " + ", ".join([*_GRIDS, *_MECHANISM_GRIDS])
)
_LEVELED_RE = re.compile(r"^(?P<family>[a-z_]+)(?::(?P<mod>[^@]+))?@(?P<level>[^@]+)$")


def _expand(entry: str, modalities: Sequence[str], burst_mean: float = BURST_MEAN_STEPS) -> list[Condition]:
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
    def make(cls: type[_Leveled], mod: str | None, level: float) -> Condition:
        return cls(mod, level, mean_len=burst_mean) if cls is Burst else cls(mod, level)

    if entry in _MECHANISM_GRIDS:
        cls = _MECHANISM_GRIDS[entry]
        if cls.needs_modality and len(modalities) < 2:
            return []  # one modality: nothing to be imbalanced against, nothing besides the kept one
        return [make(cls, m, lv) for m in (list(modalities) if cls.needs_modality else [None]) for lv in MECHANISM_LEVELS]
    match = _LEVELED_RE.match(entry)
    if match and (match["family"] in _LEVELED or match["family"] in _MECHANISMS):
        cls = _LEVELED.get(match["family"]) or _MECHANISMS[match["family"]]
        mod = match["mod"]
        optional = cls is RandomMissing or (cls in _MECHANISMS.values() and not cls.needs_modality)
        if mod is None and not optional:
            raise ConditionError(f"condition '{entry}': {cls.family} needs a modality: {cls.family}:<modality>@<level>")
        try:
            level = float(match["level"])
        except ValueError:
            raise ConditionError(f"condition '{entry}': level '{match['level']}' is not a number") from None
        if not (math.isfinite(level) and 0.0 <= level <= 1.0):
            raise ConditionError(f"condition '{entry}': level {match['level']} is not in [0, 1]")
        return [make(cls, None if mod is None else known(mod.strip()), level)]
    raise ConditionError(f"unknown condition '{entry}'; accepted forms: {ACCEPTED_FORMS}")


def parse_conditions(entries: Sequence[str], modalities: Sequence[str], burst_mean: float = BURST_MEAN_STEPS) -> list[Condition]:
    """Conditions for `evaluate.conditions` entries, given the trained modalities; grids and `each_*`
    expand; duplicates (same canonical name) dropped, first occurrence kept. `burst_mean`: the mean
    span length (steps) of the `burst` conditions."""
    out: dict[str, Condition] = {}
    for entry in entries:
        for c in _expand(entry.strip(), modalities, burst_mean):
            out.setdefault(c.name, c)
    if not out:
        raise ConditionError(f"evaluate.conditions is empty (or expands to nothing for modalities {list(modalities)})")
    return list(out.values())
