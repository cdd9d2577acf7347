"""The run grid: which (model, strategy) families exist, and each one's TrainParams.

params.yaml: `train` holds the loop settings every run shares (`TrainSection`); which runs exist is
`grid` (`GridParams`: every model × strategy, the models that also get 000 §4's importance search
and `eliminate` runs, and `rates`: the extra training missing rates of a strategy's families); each model's and strategy's own settings are `model.<name>` (`ModelSettings`)
and `strategy.<name>` (`StrategySettings`). One DVC stage per family (train@<model>-<strategy>,
evaluate@<model>-<strategy>) lists only its entries (dvc.yaml), so an edit to one strategy's settings
retrains only that strategy's runs. `family_params` assembles a family's TrainParams from those
sections; `resolve_grid` lists the (model, strategy) pairs a TrainParams trains (pipeline/train/families.py).

Reading these sections imports no torch: the model and strategy registries are imported inside the
functions that need them.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Mapping, Sequence

from pydantic import ConfigDict, Field, RootModel, ValidationError, model_validator

from pipeline.core.config import (
    Problems,
    Section,
    flat_errors,
    load_section,
    unknown_name,
)
from pipeline.core.errors import PipelineError
from pipeline.core.paths import PARAMS_FILE
from pipeline.runs.params import TrainParams, model_names, strategy_names

# keys that used to live in `train` and now have their own place (a clear error, never silently ignored)
MOVED_FROM_TRAIN = {
    "models": "grid.models", "strategies": "grid.strategies", "all_models": "grid.models (list them; `mer models`)",
    "model_params": "model.<name>.params", "model_train": "model.<name>.train", "strategy_params": "strategy.<name>",
}
# the strategies with a training missing rate and its parameter (pipeline/missing/strategies.py; the same
# as pipeline.evaluate.robustness.TRAIN_RATE_PARAM, which evaluation reads, checked by tests/test_grid_rates.py)
RATE_PARAM = {"clip_zero": "p_clip", "frame_zero": "p_frame", "frame_repeat": "p_frame", "dynamic": "p_miss", "one_to_one": "p_miss"}
Rate = Annotated[float, Field(ge=0, le=1)]


class TrainSection(TrainParams):
    """The `train` section: TrainParams without the grid (see MOVED_FROM_TRAIN)."""

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [(k, f"moved to {MOVED_FROM_TRAIN[k]}") for k in data if k in MOVED_FROM_TRAIN]
            if moved:
                raise Problems(moved)
        return data


class GridParams(Section):
    """Which runs exist: every model × strategy (stages train@<model>-<strategy> and
    evaluate@<model>-<strategy>) and, for the models in `eliminate`, 000 §4's importance search on
    their `standard` runs and the `eliminate` runs it drives (importance@, train_eliminate@,
    evaluate_eliminate@<model>). `rates`: {strategy: [training missing rates]}, each trained in the
    strategy's train@ stages besides its configured rate (pipeline/train/families.py `train_all(rates=…)`)."""

    models: list[str] = Field(default_factory=lambda: ["crossmodal"], description="registry names (`mer models`)")
    strategies: list[str] = Field(default_factory=lambda: ["standard"], description="training strategies but eliminate")
    eliminate: list[str] = Field(default_factory=list, description="models that also get importance search + eliminate")
    # The train-rate × test-rate matrix (train_test.csv): a strategy with a training missing rate (RATE_PARAM)
    # also trains at each of these rates, in the same stage, under <strategy>/rate_<r>/; its configured
    # rate (strategy.<name>) stays the family's run. No paper trains at several rates: default none.
    rates: dict[str, list[Rate]] = Field(
        default_factory=dict, description="{strategy: [training missing rates]}, one entry per grid strategy ([]: none)")

    @model_validator(mode="after")
    def _grid(self) -> "GridParams":
        problems: list[tuple[str, str]] = []
        known_m, known_s = model_names(), strategy_names()
        # a misspelled name is one line: the checks that depend on it see the name it was meant to be
        # (difflib's closest, as the did-you-mean says) or, without one, do not see it at all
        strategies = [s if s in known_s else _closest(s, known_s) for s in self.strategies]
        strategies = [s for s in strategies if s is not None]
        problems += rate_problems(self.rates, strategies, explicit="rates" in self.model_fields_set)
        for key in ("models", "strategies", "eliminate"):
            v = getattr(self, key)
            if len(set(v)) != len(v):
                problems.append((key, f"lists an entry twice: {v}"))
        if not self.models:
            problems.append(("models", "must not be empty"))
        if not self.strategies:
            problems.append(("strategies", "must not be empty"))
        problems += [(f"models.{i}", unknown_name("model", m, known_m)) for i, m in enumerate(self.models) if m not in known_m]
        for i, s in enumerate(self.strategies):
            if s == "eliminate":
                problems.append((f"strategies.{i}", "'eliminate' runs after the importance search: list its models in grid.eliminate"))
            elif s not in known_s:
                problems.append((f"strategies.{i}", unknown_name("strategy", s, known_s)))
        # a misspelled grid model is one line: the eliminate entry it was meant to match adds none
        meant = {_closest(m, known_m) for m in self.models if m not in known_m}
        for i, m in enumerate(self.eliminate):
            if m not in self.models and m not in meant:
                problems.append((f"eliminate.{i}", f"'{m}' is not in grid.models: its standard runs drive the search"))
        if self.eliminate and "standard" not in strategies:
            problems.append(("eliminate", "the importance search needs the 'standard' runs: add it to grid.strategies"))
        if problems:
            raise Problems(problems)
        return self


def _closest(name: str, known: Sequence[str]) -> str | None:
    """The known name `did_you_mean` would suggest for `name`, or None."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return close[0] if close else None


def rate_problems(rates: Mapping[str, Sequence[float]], strategies: Sequence[str], explicit: bool = True) -> list[tuple[str, str]]:
    """(key, problem) of `grid.rates`: each entry a known strategy, a non-empty list only for a strategy
    of grid.strategies with a training rate, no rate twice; `explicit` (the key is in params.yaml): every
    grid strategy has an entry, since its stages list `grid.rates.<strategy>` and DVC needs the key
    (params.yaml lists every strategy, as the `strategy` section does, so a preset's grid finds its own)."""
    problems: list[tuple[str, str]] = []
    with_rate = ", ".join(f"{s} ({p})" for s, p in RATE_PARAM.items())
    known = strategy_names()
    for s, values in rates.items():
        if s not in known:
            problems.append((f"rates.{s}", unknown_name("strategy", s, known)))
        elif values and s not in strategies:  # an empty entry may stay for a strategy out of the grid
            problems.append((f"rates.{s}", f"'{s}' is not in grid.strategies {list(strategies)}: its rates would not train"))
        elif values and s not in RATE_PARAM:
            problems.append((f"rates.{s}", f"strategy '{s}' has no training missing rate (those with one: {with_rate}); use []"))
        elif len(set(values)) != len(values):
            problems.append((f"rates.{s}", f"lists a rate twice: {list(values)}"))
    lacking = [s for s in strategies if s not in rates]
    if explicit and lacking:
        problems.append(("rates", f"lacks an entry for {lacking}: the stages train@<model>-<strategy> list "
                                  "grid.rates.<strategy> (DVC needs the key); [] trains the configured rate only"))
    return problems


def configured_rate(params: TrainParams, strategy: str) -> float | None:
    """The training missing rate `strategy` runs at under `params` (strategy.<name>, else its paper's
    default), None for a strategy without one."""
    if strategy not in RATE_PARAM:
        return None
    from pipeline.missing import (
        validate_strategy_params,  # imports torch: only when runs are trained
    )

    return float(getattr(validate_strategy_params(strategy, params.strategy_params.get(strategy)), RATE_PARAM[strategy]))


def extra_rates(params: TrainParams, strategy: str, rates: Sequence[float] | None) -> list[float]:
    """The rates of `grid.rates.<strategy>` that get runs of their own: all but the configured rate,
    whose runs are the family's (they stay at <model>/<strategy>/seed_<s>), in the given order."""
    from pipeline.runs.feed import TrainError

    if not rates:
        return []
    problems = rate_problems({strategy: list(rates)}, [strategy]) + [
        (f"rates.{strategy}.{i}", f"{r} is not a rate in [0, 1]") for i, r in enumerate(rates) if not 0 <= r <= 1]
    if problems:
        raise TrainError("; ".join(f"grid.{k}: {m}" for k, m in problems))
    own = configured_rate(params, strategy)
    return [float(r) for r in rates if float(r) != own]


def with_rate(params: TrainParams, strategy: str, rate: float) -> TrainParams:
    """`params` with `strategy`'s training missing rate set to `rate` (model.pt records it there)."""
    from pipeline.runs.feed import TrainError

    if strategy not in RATE_PARAM:
        raise TrainError(f"grid.rates.{strategy}: strategy '{strategy}' has no training missing rate")
    given = dict(params.strategy_params.get(strategy) or {})
    return TrainParams.model_validate({
        **params.model_dump(mode="json"),
        "strategy_params": {**params.strategy_params, strategy: {**given, RATE_PARAM[strategy]: float(rate)}},
    })


def family_rates(strategy: str, params_file: str | Path = PARAMS_FILE) -> list[float]:
    """`grid.rates.<strategy>` of params.yaml ([] when it has none)."""
    return list(load_section("grid", params_file).rates.get(strategy, []))


class ModelEntry(Section):
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the paper defaults (`mer models`)")
    train: dict[str, Any] = Field(default_factory=dict, description="the model's own loop settings (a paper's recipe)")


class ModelSettings(RootModel[dict[str, ModelEntry]]):
    """The `model` section: {model name: {params: {...}, train: {...}}}; names and keys validated."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _valid(self) -> "ModelSettings":
        try:  # TrainParams' validators know each model's Params and the loop fields
            TrainParams(model_params={n: e.params for n, e in self.root.items()},
                        model_train={n: e.train for n, e in self.root.items()})
        except ValidationError as e:
            problems: list[tuple[str, str]] = []
            for loc, msg in flat_errors(e):  # loc: (model_params | model_train, name, key…)
                part = "params" if loc[0] == "model_params" else "train"
                where = ".".join(loc[1:2] if msg.startswith("unknown model") else loc[1:2] + (part,) + loc[2:])
                if (where, msg) not in problems:
                    problems.append((where, msg))
            raise Problems(problems) from None
        return self

    def get(self, name: str) -> ModelEntry:
        return self.root.get(name) or ModelEntry()


class StrategySettings(RootModel[dict[str, dict[str, Any]]]):
    """The `strategy` section: {strategy name: its parameters}; names and keys validated."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _valid(self) -> "StrategySettings":
        try:
            TrainParams(strategy_params={n: dict(v or {}) for n, v in self.root.items()})
        except ValidationError as e:
            raise Problems([(".".join(loc[1:]), msg) for loc, msg in flat_errors(e)]) from None
        return self

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.root.get(name) or {})


# ---- a family's TrainParams and the runs a TrainParams trains (pipeline/train/families.py, stages/train.py) ----


def known_strategies() -> list[str]:
    return strategy_names()


def make_training_strategy(name: str, modalities: list[str], params: TrainParams, importance: dict | None = None) -> Any:
    """`pipeline.missing.make_strategy(name, modalities, params.strategy_params[name], importance)`;
    `importance` is the run's model entry of data/importance/<model>.json (for `eliminate`)."""
    from pipeline import missing
    from pipeline.runs.feed import TrainError

    try:
        return missing.make_strategy(name, list(modalities), dict(params.strategy_params.get(name, {})), importance)
    except (PipelineError, ValueError) as e:  # StrategyError: unknown name, bad params, no ρ for eliminate
        raise TrainError(str(e) if str(e).startswith(f"strategy '{name}'") else f"strategy '{name}': {e}") from None


def family_params(model: str, strategy: str, params_file: str | Path = PARAMS_FILE) -> TrainParams:
    """The TrainParams of one run family from params.yaml: the shared `train` loop settings, the
    model's `model.<model>` entry (paper-default overrides and its own loop settings) and the
    strategy's `strategy.<strategy>` parameters — exactly the keys the family's DVC stage lists."""
    train = load_section("train", params_file)
    entry = load_section("model", params_file).get(model)
    strategy_params = load_section("strategy", params_file).get(strategy)
    return TrainParams.model_validate({
        **train.model_dump(mode="json"),
        "models": [model],
        "strategies": [strategy],
        "model_params": {model: entry.params} if entry.params else {},
        "model_train": {model: entry.train} if entry.train else {},
        "strategy_params": {strategy: strategy_params} if strategy_params else {},
    })


def resolve_models(params: TrainParams) -> list[str]:
    from pipeline.models.registry import available_models
    from pipeline.runs.feed import TrainError

    if params.all_models:
        return available_models()
    unknown = [m for m in params.models if m not in available_models()]
    if unknown:
        raise TrainError(f"train.models: unknown model(s) {unknown}; available: {', '.join(available_models())}")
    return list(params.models)


def resolve_grid(
    params: TrainParams, strategies: list[str] | None = None, importance: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(model, strategy) pairs to train. `strategies` (default: `params.strategies`, or every known
    strategy when `params.all_models`) limits them. Under `all_models` a strategy that cannot run for a
    model (e.g. `eliminate` without an importance entry) is left out; otherwise that is an error."""
    from pipeline.models.registry import ModelError, fit_modalities
    from pipeline.runs.feed import TrainError

    models = resolve_models(params)
    wanted = list(strategies) if strategies is not None else (known_strategies() if params.all_models else list(params.strategies))
    pairs = []
    for model in models:
        try:  # the modalities this model takes (fixed-arity models take the first ones)
            mods = list(fit_modalities(model, {m: 0 for m in params.modalities}))
        except ModelError:
            if params.all_models:
                continue
            raise
        for strategy in wanted:
            entry = (importance or {}).get(model)
            try:  # e.g. `eliminate` without the model's importance entry (and no explicit ρ) fails here
                make_training_strategy(strategy, mods, params, entry)
            except TrainError:
                if params.all_models:
                    continue
                raise
            pairs.append((model, strategy))
    return pairs


def loop_params(params: TrainParams, model: str) -> TrainParams:
    """`params` with the model's `model_train` overrides applied (validated like params.yaml)."""
    from pipeline.runs.feed import TrainError

    override = params.model_train.get(model)
    if not override:
        return params
    try:
        return TrainParams.model_validate({**params.model_dump(mode="json"), **override})
    except ValueError as e:
        raise TrainError(f"train.model_train.{model}: invalid: {e}") from None
