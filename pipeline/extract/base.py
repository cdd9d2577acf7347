"""The one extractor protocol.

In the spirit of opensmile-python's `Smile`: an extractor is built from its params section, declares
its output name, modality, rate and dimension, and turns one clip into rows (`ClipFeatures`). It does
not loop over the corpus, write files or catch errors: the runner (`pipeline.extract.runner`) owns
that, so every extractor gets the same progress bars, error policy and atomic writes. The optional
hooks (`process_clips`, `input_fingerprint`, `clip_table`, `table_schema`) let an extractor batch
across clips, say what it reads, or write another kind of table (the `faces` detector:
`pipeline.extract.faces`).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import pyarrow as pa

from pipeline.core.errors import PipelineError
from pipeline.core.features import (
    ClipFeatures,
    FeatureMeta,
    feature_schema,
    feature_table,
)
from pipeline.corpus.manifest import Clip


class ExtractionError(PipelineError):
    """One clip could not be processed; the message names the file and the cause."""


class Extractor(ABC):
    #: feature table name: data/features/<name>.parquet
    name: ClassVar[str]
    #: bump when the output of the same params changes
    version: ClassVar[str] = "1"
    #: 'video', 'audio' or 'text'
    modality: ClassVar[str]

    #: False for fixed feature sets (openSMILE, imported CSVs): no weights that could be random
    learned: ClassVar[bool] = True

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

    def notes(self) -> str:
        """A plain-words note stored with the table (what exactly was computed)."""
        return ""

    # ------------------------------------------------------------------------------------------
    # Optional hooks for the runner (defaults are right for extractors that read one clip's media)

    def process_clips(self, clips: Iterable[Clip], root: Path) -> Iterator[tuple[Clip, ClipFeatures | Exception]]:
        """(clip, rows or the ExtractionError/MediaError it raised) for each clip, in order. Override to
        share work across clips (e.g. decoding the next clip while this one runs); the runner hands in
        only clips missing from the per-clip cache, in groups of `batch_clips`. A clip's rows must not
        depend on the other clips of its group (issue 22: CPU kernels give other bits for other batch
        compositions), so batch a network's inputs within one clip (tests/test_extract_determinism.py)."""
        for clip in clips:
            try:
                yield clip, self.process_clip(clip, root)
            except Exception as e:  # the runner decides which errors are per-clip and which are bugs
                yield clip, e

    #: how many uncached clips the runner hands to `process_clips` at once
    batch_clips: ClassVar[int] = 1

    def clip_table(self, clip_id: str, rows: Any) -> pa.Table:
        """One clip's result (what `process_clips` yielded) as rows of the output table: what the
        per-clip cache stores and the runner streams into the table. Default: feature-table rows.
        An extractor writing another kind of table (the faces stage's detections) overrides this and
        `table_schema`; its first column must be clip_id."""
        return feature_table(self.meta(), {clip_id: rows})

    def table_schema(self, clip_ids: list[str], skipped: dict[str, str]) -> pa.Schema:
        """Schema (with its metadata) of the output table, asked once the run knows which clips it
        holds and which were skipped (clip id → error). Default: the feature table of `meta()`."""
        return feature_schema(self.meta())

    def input_fingerprint(self, clip: Clip, root: Path) -> str:
        """Hash of everything this extractor reads for `clip`: part of the per-clip cache key. The
        default covers the media file(s) by content, the transcript, word timings and duration, and
        the clip's window and crop where it has one (`clip_window_key`: two windows of one file are
        two inputs; a whole-file clip keeps the key it had before windows existed).
        Extractors reading other inputs (a detections table, CSV files) override it."""
        h = hashlib.sha256()
        for path in dict.fromkeys([clip.media(root), clip.audio(root)]):
            h.update(str(path.name).encode())
            h.update(file_digest(path).encode())
        h.update(json.dumps([clip.transcript, clip.words, clip.duration], sort_keys=True, default=str).encode())
        window = clip_window_key(clip)
        if window is not None:
            h.update(json.dumps(["window", window]).encode())
        return h.hexdigest()

    def config_fingerprint(self) -> str:
        """Hash of the extractor's identity and configuration: the other part of the cache key.
        Includes class, version, dimension, rate, backbone and params (which must name the weights by
        content, e.g. a sha256, where a file could change under the same path)."""
        m = self.meta()
        blob = json.dumps(
            [type(self).__name__, m.name, m.version, m.dim, m.rate_hz, m.backbone, m.pretrained, m.params],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

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
            notes=self.notes(),
            learned=self.learned,
        )


def clip_window_key(clip: Clip) -> list | None:
    """[start, end, crop] of a clip for its per-clip cache key, or None for a whole, uncropped file (so
    a whole-file clip keeps the key it had before windows existed)."""
    if clip.start is None and clip.end is None and clip.crop is None:
        return None
    crop = [float(v) for v in clip.crop] if clip.crop is not None else None
    return [clip.start, clip.end, crop]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime within one process); '-' when the
    file does not exist (the extractor then reports the missing file itself)."""
    try:
        st = path.stat()
    except OSError:
        return "-"
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
