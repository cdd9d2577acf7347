"""What a model is given for missing steps: its input convention, applied in ONE place for training and
evaluation (`model_inputs`; `pipeline.models.registry.forward` calls it for every forward pass).

Strategies (training) and conditions (evaluation) only change x and the presence mask. Padding — steps
beyond a sequence's true length, `Segments.valid(m)` — is a separate boolean [B, T_m] that travels with
them (`mask[m]` ⊆ `valid[m]`). A model's pydantic Params field `missing_input` then says what it sees:

    mask   the model is told: missing and padded steps are masked out of attention and pooling
           (model mask = mask & valid); the values there are zeroed so nothing stale can leak through.
    zero   the model is not told: missing values are zeros and count as ordinary steps (model mask =
           valid, so padding is still excluded); what 001 §3.6 / §5.2, 002 §2.2 and 003 §5.2 feed.
    token  as zero, but a missing step of a modality with a missing token (`tokens[m]`: its extractor's
           feature of, e.g., BERT's [UNK], z-scored as the modality) holds that token, not zeros
           (003 §5.2.1); a modality without one gets zeros.

`valid=None` means "no padding" (every step valid). Works on torch tensors and numpy arrays alike.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from pipeline.core.errors import PipelineError

MissingInput = Literal["mask", "zero", "token"]
CONVENTIONS: tuple[str, ...] = ("mask", "zero", "token")


class InputConventionError(PipelineError, ValueError):
    """An unknown input convention, or masks that do not fit the inputs."""


def _bool(a: Any) -> Any:
    return a.bool() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=bool)


def _zero_where_not(x: Any, keep: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.masked_fill(~keep.unsqueeze(-1), 0.0)
    return np.where(keep[..., None], x, np.zeros((), dtype=x.dtype))


def _fill_where(x: Any, where: Any, token: Any) -> Any:
    if isinstance(x, torch.Tensor):
        token = torch.as_tensor(token, dtype=x.dtype, device=x.device)
        return torch.where(where.unsqueeze(-1), token, x)
    return np.where(where[..., None], np.asarray(token, dtype=x.dtype), x)


def full_valid(mask: dict[str, Any]) -> dict[str, Any]:
    """Every step valid (no padding): an all-True array shaped like each mask."""
    return {m: (torch.ones_like(v, dtype=torch.bool) if isinstance(v, torch.Tensor) else np.ones(np.shape(v), bool))
            for m, v in mask.items()}


def model_inputs(
    convention: str, x: dict[str, Any], mask: dict[str, Any], valid: dict[str, Any] | None = None,
    tokens: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(x, mask) as a model of this `convention` sees them (module docstring). `mask` is the presence
    mask after strategies/conditions, `valid` the steps within each sequence's true length, `tokens`
    {mod: [D]} the missing tokens the `token` convention fills in."""
    if convention not in CONVENTIONS:
        raise InputConventionError(f"missing_input: unknown convention {convention!r}; use one of {list(CONVENTIONS)}")
    valid = full_valid(mask) if valid is None else valid
    xs, ms = {}, {}
    for m, v in x.items():
        if m not in mask or m not in valid:
            raise InputConventionError(f"modality '{m}': no {'mask' if m not in mask else 'valid (padding) mask'} given")
        present, inside = _bool(mask[m]), _bool(valid[m])
        if tuple(present.shape) != tuple(inside.shape):
            raise InputConventionError(
                f"modality '{m}': presence mask {tuple(present.shape)} and valid mask {tuple(inside.shape)} differ in shape"
            )
        present = present & inside
        xs[m] = _zero_where_not(v, present)
        if convention == "token" and tokens and m in tokens:
            xs[m] = _fill_where(xs[m], inside & ~present, tokens[m])
        ms[m] = present if convention == "mask" else inside
    return xs, ms
