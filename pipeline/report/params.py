"""The `report` section of params.yaml (pipeline/report/build.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline.core.config import Section


class Published(Section):
    """A number a paper reports, printed beside ours in the paper-style table (never compared by a test:
    the corpus, split and features differ). `condition` is one of ours ('all_present', 'missing:<m>') or
    'auilc'; `metric` one of results.csv's ('macro_f1', 'accuracy', …); `source` where it is printed,
    e.g. '001 Table 3'."""

    model: str
    strategy: str | None = None  # None: the paper's own training recipe, without a strategy of ours
    condition: str
    metric: str
    value: float
    source: str
    target: str | None = None  # per-target experiments (000): the regression target it is for

    @field_validator("model", "condition", "metric", "source")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()


class InstanceParams(Section):
    """The instance view: the test clips whose prediction changes when a modality goes missing."""

    run: str = ""  # '<model>/<strategy>'; empty: the first run (sorted)
    seed: int | None = None  # a replicate of that run; None: its first
    conditions: list[str] = Field(default_factory=list)  # empty: each modality of the run missing
    limit: int = Field(25, ge=1)  # clips listed per condition (the rest are counted)


class ReportParams(Section):
    title: str = "Multimodal emotion recognition under missing modalities"
    # published numbers beside ours (the papers' tables; empty by default: the demo corpus is none of theirs)
    published: list[Published] = Field(default_factory=list)
    instances: InstanceParams = Field(default_factory=InstanceParams)
