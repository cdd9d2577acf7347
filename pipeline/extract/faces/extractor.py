"""The faces stage as an extractor on the one runner (`pipeline.extract.runner.extract_corpus`).

`FacesExtractor` adapts `FaceDetector` to the extractor protocol (`pipeline.extract.base`):

* `process_clips` hands the uncached clips to `FaceDetector.run`, which batches detection frames
  within each clip (never across clips: a clip's detections depend on the clip and the params alone,
  not on its neighbours, the resume point, the groups or the worker count) and yields each clip's
  detections (or the MediaError naming its file) in order. `batch_clips` is unbounded: the runner
  hands over every uncached clip at once, so the next clip decodes while this one is detected.
* Per-clip cache key: `input_fingerprint` = the digest of the clip's video file (the only thing the
  detector reads), with the clip's window and crop where it has one (`clip_window_key`; a whole-file
  clip's key is the file digest alone, as before windows existed), `config_fingerprint` =
  `cache_key(params)`: detector, its version, STAGE_VERSION
  and the params that change a detection (batch_size too: a clip's batches are cut at batch_size, and
  CPU kernels round other batch sizes differently; not on_error).
* Windows and crops: each clip is read through `pipeline.media.clip_video_source` (its window of
  `media_path`, its crop); detection runs on the cropped frames and boxes are in the cropped frame's
  pixels (`pipeline.extract.faces.detector`).
* Output: `clip_table` / `table_schema` make the rows and schema of the detections table
  (`pipeline.extract.faces.table`); the stage passes `out=FACES`, so the runner writes
  data/faces/detections.parquet and data/errors/faces.csv.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import pyarrow as pa
import torch

from pipeline.corpus.clip_media import clip_video_source
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import Extractor, clip_window_key, file_digest
from pipeline.extract.cache import config_key
from pipeline.extract.faces.detector import FaceDetector
from pipeline.extract.faces.params import FacesParams
from pipeline.extract.faces.table import (
    DETECTOR,
    STAGE_VERSION,
    ClipDetections,
    detections_table,
    table_meta,
    table_schema,
)

#: params that do not change a detection (left out of the cache key)
_NOT_IN_CACHE_KEY = ("on_error",)


def cache_key(params: FacesParams) -> str:
    """Config part of the per-clip cache key: detector, its version, STAGE_VERSION, the params that
    change detections (selection and tracking included)."""
    kept = params.model_dump(mode="json", exclude=set(_NOT_IN_CACHE_KEY))
    return config_key(DETECTOR, package_version("facenet-pytorch"), STAGE_VERSION, kept)


class FacesExtractor(Extractor):
    """MTCNN detections and crops of every clip's video, for the runner. The detector (MTCNN) is
    built on first use, so a run whose clips are all cached loads nothing."""

    name = "faces"
    version = STAGE_VERSION
    modality = "video"
    batch_clips: ClassVar[int] = sys.maxsize
    dim = 0  # a detections table, not feature vectors

    def __init__(self, params: FacesParams, device: str | torch.device | None = None, detector: FaceDetector | None = None):
        self.settings = params
        self.rate_hz = params.rate_hz
        self._device = device
        self._detector = detector

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.settings, device=self._device)
        return self._detector

    # -- identity --------------------------------------------------------------------------------

    def backbone(self) -> tuple[str, bool]:
        return DETECTOR, True

    def params(self) -> dict[str, Any]:
        return self.settings.model_dump(mode="json")

    def config_fingerprint(self) -> str:
        return cache_key(self.settings)

    def input_fingerprint(self, clip: Clip, root: Path) -> str:
        digest = file_digest(clip.media(root))
        window = clip_window_key(clip)
        return digest if window is None else config_key(digest, "window", window)

    # -- computing -------------------------------------------------------------------------------

    def process_clip(self, clip: Clip, root: Path) -> ClipDetections:
        return self.detector.process_video(clip_video_source(clip, root))

    def process_clips(self, clips: Iterable[Clip], root: Path) -> Iterator[tuple[Clip, ClipDetections | Exception]]:
        yield from self.detector.run((clip, clip_video_source(clip, root)) for clip in clips)

    # -- the detections table --------------------------------------------------------------------

    def clip_table(self, clip_id: str, rows: ClipDetections) -> pa.Table:
        return detections_table({clip_id: rows}, {})

    def table_schema(self, clip_ids: list[str], skipped: dict[str, str]) -> pa.Schema:
        return table_schema(table_meta(self.settings, clip_ids, skipped))
