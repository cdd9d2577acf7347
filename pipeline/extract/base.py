"""The one extractor protocol.

In the spirit of opensmile-python's `Smile`: an extractor is built from its params section, declares
its output name, modality, rate and dimension, and turns one clip into rows (`ClipFeatures`). It does
not loop over the corpus, write files or catch errors: the runner (`pipeline.extract.runner`) owns
that, so every extractor gets the same progress bars, error policy and atomic writes.
"""

from __future__ import annotations

from pipeline.errors import PipelineError
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pipeline.corpus.manifest import Clip
from pipeline.store import ClipFeatures, FeatureMeta


class ExtractionError(PipelineError):
    """One clip could not be processed; the message names the file and the cause."""


class Extractor(ABC):
    #: feature table name: data/features/<name>.parquet
    name: ClassVar[str]
    #: bump when the output of the same params changes
    version: ClassVar[str] = "1"
    #: 'video', 'audio' or 'text'
    modality: ClassVar[str]

    #: output dimension and rate (None: irregular steps such as words); set by the constructor
    dim: int
    rate_hz: float | None

    @abstractmethod
    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        """Rows for one clip. Raise ExtractionError (naming the file) for unusable media; steps where
        the modality is absent are rows with present=False, not an error."""

    @abstractmethod
    def backbone(self) -> tuple[str, bool]:
        """(backbone identity, whether its weights are pretrained)."""

    def params(self) -> dict[str, Any]:
        return {}

    def meta(self) -> FeatureMeta:
        backbone, pretrained = self.backbone()
        return FeatureMeta(
            name=self.name,
            extractor=type(self).__name__,
            version=self.version,
            dim=self.dim,
            rate_hz=self.rate_hz,
            modality=self.modality,
            backbone=backbone,
            pretrained=pretrained,
            params=self.params(),
        )
