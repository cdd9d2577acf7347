"""The `corpus` section of params.yaml: the synthetic demo corpus (pipeline/corpus/demo/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config import Section


class CorpusParams(Section):
    name: Literal["demo"] = "demo"
    seed: int = 0
    speakers: int = Field(8, ge=3, description="speakers; partitions are drawn by speaker")
    clips_per_speaker: int = Field(8, ge=1)
    seconds: float = Field(4.0, gt=0.5, description="length of each clip")
    fps: int = Field(15, ge=1, le=60)
    sample_rate: int = Field(16000, ge=8000)
    width: int = Field(320, ge=96)
    height: int = Field(240, ge=96)
    label_rate_hz: float = Field(2.0, gt=0, description="rate of the arousal/valence curves")
