"""Training strategies: how each training batch is made partly missing (`train.strategies` in
params.yaml; `make_strategy(name, modalities, params, importance)`).

    standard      identity
    auxformer     001 §3.6: each batch split at random into 20 % audio zeroed / 20 % video zeroed / 60 % intact
    clip_zero     002 §2.2: a sample's target modality zeroed for the whole sequence with p_clip = 0.5
    frame_zero    002 §2.2: each frame of the target modality zeroed with p_frame = 0.5
    frame_repeat  002 §2.2: each frame of the target modality replaced by the last kept frame with p_frame = 0.5
    dynamic       003 §4.4.2: per-step Bernoulli masking (p_miss = 0.2) on every modality, for a share of
                  the batch that ramps linearly 0 → 1 over the first 5 epochs
    eliminate     000 §4: per batch, modality i eliminated with probability ρ_i (from the importance search)
    one_to_one    003 §6: each step of every modality missing with probability p_miss, drawn ONCE per training
                  sample (static), at the test data's rate: one model per rate (grid.rates)

Each strategy's parameters are a pydantic model (`<Strategy>.Params`, extra fields forbidden); see their
docstrings for the choices made where a paper is silent. `strategy_names()` lists the strategies and
`validate_strategy_params(name, params)` checks a strategy's parameters without building it (for
config validation). Strategies draw only from the generator passed to `apply`, through the shared
operations of `pipeline.missing.ops`; a `static` strategy instead draws per sample (`apply_static`: the
samples' rows and the run's seed), the same in every epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.errors import PipelineError
from pipeline.missing.ops import (
    Arrays,
    _bt,
    _like,
    clip_zero,
    drop_modalities,
    frame_repeat,
    frame_zero,
    static_frame_zero,
)


class StrategyError(PipelineError, ValueError):
    """A training strategy that is unknown, or has invalid parameters or importance."""


def _split(rng: np.random.Generator, n: int, shares: Sequence[float]) -> np.ndarray:
    """Group index [n] for a random split of n samples into groups of the given shares (the rest is
    group len(shares)). Systematic sampling: each group's size is ⌊n·share⌋ or ⌈n·share⌉ with
    expectation exactly n·share, so small (or last) batches keep the stated proportions on average."""
    if n == 0:
        return np.zeros(0, dtype=int)
    pos = (np.arange(n) + rng.random()) / n
    group = np.searchsorted(np.cumsum(shares), pos, side="right")
    return group[rng.permutation(n)]




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
    #: True: the training loop calls `apply_static(x, mask, samples, seed)` instead of `apply`
    static: ClassVar[bool] = False

    def __init__(self, modalities: Sequence[str], params: _StrategyParams, importance: dict | None = None) -> None:
        self.modalities, self.params = tuple(modalities), params

    @abstractmethod
    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]: ...

    def apply_static(self, x: Arrays, mask: Arrays, samples: np.ndarray, seed: int) -> tuple[Arrays, Arrays]:
        """A static strategy's batch: what it makes missing depends on the samples (their rows in the
        segments) and the run's seed only."""
        raise StrategyError(f"strategy '{self.name}' is not static")

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


class _Targeted(Strategy):
    """A strategy applying one shared operation (`_op`: clip_zero, frame_zero, frame_repeat) to its
    target modalities (`Params.modalities`; None = the first modality) with the probability held in
    the Params field named by `_level`."""

    Params: ClassVar[type[_Targets]] = _Targets
    _op: ClassVar[Any]
    _level: ClassVar[str]

    def __init__(self, modalities: Sequence[str], params: _Targets, importance: dict | None = None) -> None:
        super().__init__(modalities, params)
        self.targets = self._targets(params.modalities)

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        p = self.params
        return type(self)._op(x, mask, self.targets, getattr(p, self._level), rng, p.zero_fill)


class ClipZeroTraining(_Targeted):
    """002 §2.2 Clip-Zero: each sample's target modality zeroed for the whole sequence with probability
    p_clip (0.5, 002 §3.3), independently per sample (and per target modality if several)."""

    name, _op, _level = "clip_zero", clip_zero, "p_clip"

    class Params(_Targets):
        p_clip: float = Field(0.5, ge=0, le=1, description="002 §3.3: p_clip = 0.5")


class FrameZeroTraining(_Targeted):
    """002 §2.2 Frame-Zero: each frame of the target modality zeroed with probability p_frame (0.5)."""

    name, _op, _level = "frame_zero", frame_zero, "p_frame"

    class Params(_Targets):
        p_frame: float = Field(0.5, ge=0, le=1, description="002 §3.3: p_frame = 0.5")


class FrameRepeatTraining(_Targeted):
    """002 §2.2 Frame-Repeat: each present frame of the target modality replaced, with probability
    p_frame (0.5), by the last kept frame before it; the mask stays True for repeated frames (the data
    is there, only stale). A replaced frame with no kept frame before it (e.g. the first one) becomes
    absent — the paper is silent; there is nothing to repeat. `zero_fill` applies to those only."""

    name, _op, _level = "frame_repeat", frame_repeat, "p_frame"
    Params = FrameZeroTraining.Params


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


class OneToOneTraining(Strategy):
    """003 §6's "one-to-one training" (its TFR-Net and EMT-DLFR baselines, and MCT-HFR†): "generates the
    incomplete training data statically before model training, and the feature missing rate is aligned
    with the testing data", so one model is trained per test missing rate. Each step of every modality
    is missing with probability p_miss — the draw of the `random_missing@<rate>` condition — drawn once
    per training sample from (the run's seed, the sample), the same in every epoch. The paper is silent
    on whether the incomplete copy changes with the seed; here it does. Train one model per rate with
    grid.rates.one_to_one (e.g. 0.0 … 0.9, 003 §5.5); the report's train × test matrix holds them, its
    diagonal the one-to-one curve."""

    name = "one_to_one"
    static = True

    class Params(_StrategyParams):
        p_miss: float = Field(0.5, ge=0, le=1, description="the test data's missing rate this model trains at "
                              "(003 §5.5: one of 0.0 … 0.9; paper silent on a default: 0.5, the middle)")
        modalities: list[str] | None = Field(None, description="modalities masked; None = every modality (003)")

    def __init__(self, modalities: Sequence[str], params: Params, importance: dict | None = None) -> None:
        super().__init__(modalities, params)
        self.targets = self.modalities if params.modalities is None else self._targets(params.modalities)

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator, epoch: int) -> tuple[Arrays, Arrays]:
        raise StrategyError("strategy 'one_to_one' draws per sample: the training loop calls apply_static")

    def apply_static(self, x: Arrays, mask: Arrays, samples: np.ndarray, seed: int) -> tuple[Arrays, Arrays]:
        p: OneToOneTraining.Params = self.params  # type: ignore[assignment]
        return static_frame_zero(x, mask, self.targets, p.p_miss, seed, samples, p.zero_fill)


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s
    for s in (Standard, AuxFormerTraining, ClipZeroTraining, FrameZeroTraining, FrameRepeatTraining, DynamicTraining, EliminateTraining,
              OneToOneTraining)
}


def strategy_names() -> tuple[str, ...]:
    """The training strategies' names, in a fixed order (`standard` first)."""
    return tuple(STRATEGIES)


def validate_strategy_params(name: str, params: Mapping[str, Any] | None = None) -> _StrategyParams:
    """The validated Params of strategy `name` (paper defaults overridden by `params`), without a
    model's modalities: StrategyError naming the strategy for an unknown name, a non-mapping, or an
    invalid or unknown key (each bad key named). Modality names are checked by `make_strategy`."""
    if name not in STRATEGIES:
        raise StrategyError(f"unknown training strategy '{name}'; known: {', '.join(STRATEGIES)}")
    if params is not None and not isinstance(params, Mapping):
        raise StrategyError(f"strategy '{name}': parameters must be a mapping, got {params!r}")
    try:
        return STRATEGIES[name].Params.model_validate(dict(params or {}))
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(params)'}: {err['msg']}" for err in e.errors())
        raise StrategyError(f"strategy '{name}': invalid parameters {params!r}: {msgs}") from None


def make_strategy(name: str, modalities: Sequence[str], params: dict | None = None, importance: dict | None = None) -> Strategy:
    """The training strategy `name` for a model on `modalities`, with `params` overriding its paper
    defaults (validated; unknown keys are errors) and `importance` (for 'eliminate')."""
    p = validate_strategy_params(name, params)  # first: it rejects an unknown name
    return STRATEGIES[name](modalities, p, importance)
