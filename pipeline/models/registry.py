"""Models by name: `build_model(name, dims, n_outputs, params)` and `list_models(...)`.

A model module registers a builder `(dims, n_outputs, params: TrainParams) -> nn.Module` under its
name with `@register("name")`; the builder maps the shared `TrainParams` onto the model's own
arguments. Every model takes `forward(x: {mod: [B,T,D]}, mask: {mod: bool [B,T]}) -> [B, n_outputs]`.
"""

from __future__ import annotations

from pipeline.errors import PipelineError

from typing import Callable

from torch import nn

from pipeline.config import TrainParams

Builder = Callable[[dict[str, int], int, TrainParams], nn.Module]
_BUILDERS: dict[str, Builder] = {}


class ModelError(PipelineError, ValueError):
    """Unknown model name or a model that cannot be built from the given dimensions/params."""


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if name in _BUILDERS:
            raise ModelError(f"model '{name}' registered twice")
        _BUILDERS[name] = fn
        return fn

    return deco


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def build_model(name: str, dims: dict[str, int], n_outputs: int, params: TrainParams) -> nn.Module:
    if name not in _BUILDERS:
        raise ModelError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    if not dims:
        raise ModelError(f"model '{name}': no input modalities")
    if n_outputs < 1:
        raise ModelError(f"model '{name}': n_outputs must be >= 1, got {n_outputs}")
    try:
        return _BUILDERS[name](dict(dims), n_outputs, params)
    except ValueError as e:
        raise ModelError(f"model '{name}': {e}") from None


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def list_models(dims: dict[str, int], n_outputs: int, params: TrainParams) -> dict[str, int]:
    """{name: trainable parameter count} of every registered model built for these inputs."""
    return {name: count_parameters(build_model(name, dims, n_outputs, params)) for name in available_models()}


# ---- builders ------------------------------------------------------------------------------------


@register("crossmodal")
def _crossmodal(dims: dict[str, int], n_outputs: int, params: TrainParams) -> nn.Module:
    from pipeline.models.crossmodal import CrossModalTransformer

    return CrossModalTransformer(
        dims, n_outputs, d_model=params.d_model, layers=params.layers, heads=params.heads, dropout=params.dropout
    )
