"""The `report` section of params.yaml (pipeline/report/build.py)."""

from __future__ import annotations

from pipeline.config import Section


class ReportParams(Section):
    title: str = "Multimodal emotion recognition under missing modalities"
