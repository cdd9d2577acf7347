"""Runs one extractor over a corpus: progress, error policy, atomic output.

Errors: a clip whose media cannot be used raises `ExtractionError` (or `MediaError`); under
`on_error: fail` the stage stops with that message, under `skip` the clip gets no rows (segment
then treats the modality as missing for the whole clip) and the error is recorded in
`data/errors/<feature>.csv`, so nothing is silently dropped.
"""

from __future__ import annotations

from pipeline.errors import PipelineError
import csv
import io
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from pipeline.config import ERRORS_DIR, FEATURES_DIR
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.media import MediaError
from pipeline.store import ClipFeatures, write_features, write_text

OnError = Literal["fail", "skip"]


class StageError(PipelineError):
    """A stage cannot finish; the message says which clip/file and why."""


def extract_corpus(
    extractor: Extractor,
    clips: list[Clip],
    root: Path = Path("."),
    out_dir: Path = FEATURES_DIR,
    errors_dir: Path = ERRORS_DIR,
    on_error: OnError = "fail",
) -> Path:
    """Extract every clip and write data/features/<name>.parquet; returns its path."""
    rows: dict[str, ClipFeatures] = {}
    errors: list[tuple[str, str]] = []
    for clip in tqdm(clips, desc=f"{extractor.name}", unit="clip", dynamic_ncols=True):
        try:
            rows[clip.clip_id] = extractor.process_clip(clip, root)
        except (ExtractionError, MediaError) as e:
            if on_error == "fail":
                raise StageError(f"{extractor.name}: clip {clip.clip_id}: {e}") from None
            errors.append((clip.clip_id, str(e)))
    out = Path(out_dir) / f"{extractor.name}.parquet"
    write_features(out, extractor.meta(), rows)
    write_errors(Path(errors_dir) / f"{extractor.name}.csv", errors)
    return out


def write_errors(path: Path, errors: list[tuple[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["clip_id", "error"])
    w.writerows(errors)
    write_text(path, buf.getvalue())
