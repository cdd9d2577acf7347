"""Every way of making a modality missing; training strategies and evaluation share this module.

Absent means the modality's mask is False (masks go into attention); zero-filling the values as well
is an explicit option (on by default, matching the `Segments` contract "0 where absent" and 002 §2.2's
"zeroed out" ablations). Functions take and return dicts {modality: array} of either numpy arrays
or torch tensors ([B,T,D] values, [B,T] masks) and never modify their inputs.

Evaluation conditions (`evaluate.conditions` in params.yaml):
    all_present        the data as it is
    missing:<mod>      <mod> absent for every sequence
    each_missing       expands to one missing:<mod> per trained modality
A condition draws any randomness from the `numpy.random.Generator` it is given, so evaluating every
model with a generator seeded by `condition_seed(name)` gives every model the same missing frames.
"""

from __future__ import annotations

from pipeline.errors import PipelineError

import zlib
from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np
import torch

Arrays = dict[str, Any]  # {modality: np.ndarray | torch.Tensor}


class ConditionError(PipelineError, ValueError):
    """An evaluation condition that cannot be parsed or names an unknown modality."""


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
    unknown = [m for m in modalities if m not in x or m not in mask]
    if unknown:
        raise ConditionError(f"cannot drop {unknown}: the data holds modalities {sorted(x)}")
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


class Condition(ABC):
    """A named way of making data (partly) missing: `apply(x, mask, rng) -> (x, mask)`."""

    name: str

    @abstractmethod
    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AllPresent(Condition):
    name = "all_present"

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]:
        return dict(x), dict(mask)


class MissingModality(Condition):
    """One modality absent for every sequence (002 §4 Clip-Zero at p = 1.0)."""

    def __init__(self, modality: str, zero_fill: bool = True) -> None:
        self.modality, self.zero_fill = modality, zero_fill
        self.name = f"missing:{modality}"

    def apply(self, x: Arrays, mask: Arrays, rng: np.random.Generator) -> tuple[Arrays, Arrays]:
        return drop_modalities(x, mask, [self.modality], zero_fill=self.zero_fill)


def condition_seed(name: str, base_seed: int = 0) -> int:
    """Stable seed for a condition's generator (same across processes and models)."""
    return (zlib.crc32(name.encode()) + base_seed) % 2**32


def parse_conditions(entries: Sequence[str], modalities: Sequence[str]) -> list[Condition]:
    """Conditions for `evaluate.conditions` entries, given the trained modalities; duplicates dropped."""
    out: dict[str, Condition] = {}
    for entry in entries:
        entry = entry.strip()
        if entry == "all_present":
            conds: list[Condition] = [AllPresent()]
        elif entry == "each_missing":
            conds = [MissingModality(m) for m in modalities]
        elif entry.startswith("missing:"):
            mod = entry.split(":", 1)[1]
            if mod not in modalities:
                raise ConditionError(
                    f"condition '{entry}': modality '{mod}' is not one the models were trained on {list(modalities)}"
                )
            conds = [MissingModality(mod)]
        else:
            raise ConditionError(
                f"unknown condition '{entry}'; use 'all_present', 'each_missing' or 'missing:<modality>'"
            )
        for c in conds:
            out.setdefault(c.name, c)
    if not out:
        raise ConditionError("evaluate.conditions is empty")
    return list(out.values())
