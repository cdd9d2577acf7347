"""Models: the shared attention blocks (`blocks`), one module per paper, and the name registry."""

from pipeline.models.registry import (
    ModelError,
    available_models,
    build_model,
    count_parameters,
    list_models,
)

__all__ = ["ModelError", "available_models", "build_model", "count_parameters", "list_models"]
