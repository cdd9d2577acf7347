"""The `evaluate` section of params.yaml (`EvaluateParams`) and the check of one condition entry."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline.core.config import Problems, Section
from pipeline.core.errors import PipelineError
from pipeline.missing import BURST_MEAN_STEPS

__all__ = ["EvaluateParams", "condition_problem"]


def condition_problem(entry: str, modalities: list[str] | None = None) -> str | None:
    """Why the `evaluate.conditions` entry is invalid, or None. Without `modalities` any modality
    name passes (only the form, family and level are checked)."""
    from pipeline.missing import (
        parse_conditions,  # imports torch: only when evaluate is validated
    )

    if not isinstance(entry, str):
        return f"condition {entry!r} is not a string"
    if modalities is None:
        named = entry.split(":", 1)[1].split("@", 1)[0] if ":" in entry else ""
        if ":" in entry and not named.strip():
            return f"condition '{entry}' names no modality"
        # the named modalities plus three others (so that `each_pair_missing` expands and a
        # `missing:` entry leaves one modality)
        modalities = list(dict.fromkeys(m.strip() for m in named.split("+") if m.strip())) + ["<m1>", "<m2>", "<m3>"]
    try:
        parse_conditions([entry, "all_present"], modalities)  # all_present: an entry may rightly expand to nothing
    except (PipelineError, ValueError) as e:
        return str(e)
    return None


class EvaluateParams(Section):
    """The `evaluate` section: the missing-modality conditions every trained run is scored under."""

    conditions: list[str] = Field(
        default_factory=lambda: ["all_present", "each_missing"],
        description="condition entries and grid shorthands; pipeline/missing/conditions.py's docstring lists every form",
    )
    # no paper fixes a burst length: 5 grid steps, a short sensor or face-tracker dropout (docs/robustness.md)
    burst_mean_steps: float = Field(BURST_MEAN_STEPS, ge=1, description="mean span length (grid steps) of the burst conditions")

    @field_validator("conditions")
    @classmethod
    def _valid_conditions(cls, v: list[str]) -> list[str]:
        """Each entry's form, family and level (`pipeline.missing.parse_conditions`); whether its
        modalities are the trained ones is checked by `check_params` and the evaluate stage."""
        if not v:
            raise ValueError("evaluate.conditions must not be empty")
        problems = [(str(i), why) for i, entry in enumerate(v) if (why := condition_problem(entry))]
        if problems:
            raise Problems(problems)
        return v
