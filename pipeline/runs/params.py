"""The `train` section's schema: the settings of the training loop (pipeline/train/loop.py) and, as one
run family sees them (`pipeline.train.grid.family_params`), its model's and strategy's entries.

`TrainParams` is what a run is trained with (and what model.pt records); params.yaml's `train` section
is `pipeline.train.grid.TrainSection` (these settings without the grid). `LoopParams`: the loop settings a
model may override (`model.<name>.train`). Cheap to import: the model and strategy registries (torch)
are imported inside the validators only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveFloat, field_validator

from pipeline.core.config import Problems, Section, entry_problems, unknown_name
from pipeline.core.errors import PipelineError

# The validators import the model and strategy registries only to check names; the stages that train,
# evaluate or search import those registries themselves (pipeline/core/dvc_deps.py).
LAZY_IMPORTS_VALIDATE_ONLY = True


def model_names() -> list[str]:
    from pipeline.models.registry import (
        available_models,  # imports torch: only when train is validated
    )

    return available_models()


def strategy_names() -> list[str]:
    from pipeline.missing import (
        STRATEGIES,  # imports torch: only when train is validated
    )

    return list(STRATEGIES)


class TrainParams(Section):
    task: Literal["classification", "regression"] = Field(
        "classification", description="per-clip classes (cross-entropy) or per-step targets (CCC loss)"
    )
    targets: list[str] = Field(
        default_factory=lambda: ["arousal", "valence"], description="regression targets (segments arrays)"
    )
    models: list[str] = Field(default_factory=lambda: ["crossmodal"], description="registry names (`mer models`)")
    strategies: list[str] = Field(default_factory=lambda: ["standard"], description="missing-modality training strategies")
    all_models: bool = Field(False, description="one switch: every registered model under every strategy")
    modalities: list[str] = Field(default_factory=lambda: ["face", "acoustic", "speech", "text"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    seed_per_fold: bool = Field(
        False, description="under several folds, each fold's runs train with their own seed, replicate(fold, seed) "
        "(pipeline.segment.protocols): 001 §4.2 trains 20 times 'using random seeds with different splits every time'; "
        "false: every fold trains with the configured seeds (run directories are named by those either way)",
    )
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="torch.optim.Adam (000 §5.3, 001 §4.3, 002 §3.3) | AdamW (003 §5.3) | SGD (004 §4.2)"
    )
    lr: float = Field(1e-4, gt=0, description="002 §3.3 / 000 §5.3: 1e-4")
    lr_grid: list[PositiveFloat] | None = Field(
        None, description="learning rates to try, each a full run; the best on devel is kept (004 §4.2: "
        "8e-4, 6e-4, 3e-4); null = `lr` alone",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only (004 is silent; 0.9, the common choice)")
    weight_decay: float = Field(
        0.0, ge=0, description="L2 (adam, sgd) or decoupled (adamw) weight decay; the papers state none (0.0)"
    )
    patience: int = Field(
        10, ge=1, description="early stopping: epochs without a strictly better devel value (000 §5.3: 15; 003 §5.3: 8)"
    )
    early_stop: Literal["metric", "loss"] = Field(
        "metric", description="the devel quantity early stopping and model selection follow: the selection metric "
        "(macro-F1 / mean CCC, higher better) or the devel loss (lower better; 001 §4.3, 003 §5.3)",
    )
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-model overrides of the paper defaults, e.g. {crossmodal: {d_model: 128}}",
    )
    strategy_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-strategy overrides, e.g. {clip_zero: {p_clip: 0.5}}"
    )
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm (001 §4.3: 0.8); null = off")
    lr_schedule: Literal["none", "step", "plateau"] = Field(
        "none", description="step: lr × lr_factor every lr_step epochs (001 §4.3); plateau: lr × lr_factor after "
        "lr_patience epochs without a better early-stopping value (000 §5.3)",
    )
    lr_step: int = Field(5, ge=1, description="step schedule: epochs between decays (001 §4.3: 5)")
    lr_patience: int = Field(5, ge=1, description="plateau schedule (000 §5.3: 5)")
    lr_factor: float = Field(0.5, gt=0, lt=1, description="step and plateau schedules (000 §5.3: halve; 001 silent)")
    model_train: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-model overrides of the loop settings (lr, batch_size, epochs, patience, grad_clip, …)",
    )

    @field_validator("lr_grid")
    @classmethod
    def _grid_unique(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not v:
            raise ValueError("must not be empty (leave it empty/null to train with `lr` alone)")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"lists a learning rate twice: {v}")
        return v

    @field_validator("modalities", "models", "strategies", "seeds")
    @classmethod
    def _non_empty_unique(cls, v: list, info) -> list:
        if not v:
            raise ValueError(f"train.{info.field_name} must not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"train.{info.field_name} lists an entry twice: {v}")
        return v

    # Names are checked here, not when their stage runs: a typo fails `mer params` and every stage.
    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        known = model_names()
        bad = [(str(i), unknown_name("model", m, known)) for i, m in enumerate(v) if m not in known]
        if bad:
            raise Problems(bad)
        return v

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        known = strategy_names()
        bad = [(str(i), unknown_name("strategy", s, known)) for i, s in enumerate(v) if s not in known]
        if bad:
            raise Problems(bad)
        return v

    @field_validator("model_params")
    @classmethod
    def _valid_model_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each key a registered model, each entry valid for that model's pydantic Params."""
        import importlib

        from pipeline.models.registry import MODELS

        known, problems = model_names(), []
        for name, overrides in v.items():
            if name not in MODELS:
                problems.append((name, unknown_name("model", name, known)))
                continue
            entry = MODELS[name]
            params_cls = getattr(importlib.import_module(f"pipeline.models.{entry.module}"), entry.params)
            problems += entry_problems(name, overrides, params_cls, f"{name}'s parameters")
        if problems:
            raise Problems(problems)
        return v

    @field_validator("model_train")
    @classmethod
    def _valid_model_train(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each key a registered model, each entry loop settings only (LOOP_FIELDS), valid values."""
        known, problems = model_names(), []
        for name, overrides in v.items():
            if name not in known:
                problems.append((name, unknown_name("model", name, known)))
                continue
            problems += entry_problems(name, overrides, LoopParams, "loop settings")
        if problems:
            raise Problems(problems)
        return v

    @field_validator("strategy_params")
    @classmethod
    def _valid_strategy_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each key a training strategy, each entry valid for that strategy's Params (modality names
        are checked when a model's strategy is made: they depend on the model's modalities)."""
        import pipeline.missing as missing

        known, problems = strategy_names(), []
        for name, overrides in v.items():
            if name not in known:
                problems.append((name, unknown_name("strategy", name, known)))
                continue
            found = entry_problems(name, overrides, missing.STRATEGIES[name].Params, f"{name}'s parameters")
            validate = getattr(missing, "validate_strategy_params", None)
            if validate is not None and not found:  # the strategy's own checks beyond its Params
                try:
                    validate(name, overrides)
                except (PipelineError, ValueError) as e:
                    found.append((name, str(e)))
            problems += found
        if problems:
            raise Problems(problems)
        return v


# the settings of the training loop that `model_train` may override per model (pipeline/train/loop.py)
LOOP_FIELDS = (
    "epochs", "batch_size", "optimizer", "lr", "lr_grid", "momentum", "weight_decay", "patience", "early_stop", "grad_clip",
    "lr_schedule", "lr_step", "lr_patience", "lr_factor",
)


def _loop_params() -> type[Section]:
    from pydantic import create_model

    return create_model(
        "LoopParams", __base__=Section, **{f: (TrainParams.model_fields[f].annotation, TrainParams.model_fields[f]) for f in LOOP_FIELDS}
    )


LoopParams = _loop_params()
