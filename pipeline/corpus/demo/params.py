"""The `corpus` section of params.yaml: the synthetic demo corpus (pipeline/corpus/demo/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.core.config import Section

DEMO_ROOT = "pipeline/corpus/demo"


class CorpusParams(Section):
    name: Literal["demo"] = "demo"
    # the demo's source is its generator: dvc.yaml's corpus stage depends on `${corpus.root}`, which for
    # the demo is this folder. Not part of the generated corpus's metadata (excluded from dumps), so
    # the demo's outputs are the same bytes as before the option existed.
    root: str = Field(DEMO_ROOT, min_length=1, exclude=True, description="the demo's source: its generator's folder")
    seed: int = 0
    speakers: int = Field(8, ge=3, description="speakers; partitions are drawn by speaker")
    clips_per_speaker: int = Field(8, ge=1)
    seconds: float = Field(4.0, gt=0.5, description="length of each clip")
    fps: int = Field(15, ge=1, le=60)
    sample_rate: int = Field(16000, ge=8000)
    width: int = Field(320, ge=96)
    height: int = Field(240, ge=96)
    label_rate_hz: float = Field(2.0, gt=0, description="rate of the arousal/valence curves")
