"""The corpus adapter protocol: a corpus as its licensor ships it → the manifest contract.

An adapter is a module `pipeline/corpus/<name>.py` (registered in `pipeline/corpus/registry.py`) with

    Params      a pydantic `CorpusOptions` subclass: `name: Literal["<name>"]`, `root` (the corpus
                exactly as unpacked; never written to), `on_error`, and the adapter's own options
                (unknown keys and wrong types are errors naming the key);
    read(params) -> CorpusRead
                the clips (manifest rows, `pipeline.corpus.manifest.Clip`), the time-continuous
                labels if any, and every problem found on the way as a `Problem` (file, row, clip,
                what was expected). It raises `LayoutError` only for a missing part of the layout
                that makes reading impossible (no summaryTable.csv, no EmoEvaluation folder): one
                line naming the path and what the adapter expected there.

Then `pipeline.corpus.validate.check(read)` adds the problems every corpus can have (duplicate ids,
labels outside the classes, non-finite or out-of-range continuous labels, label times outside the
clip, media listed but absent, empty paths), and the corpus stage reports them ALL at once: under
`on_error: fail` one error listing every problem; under `skip` the clips with problems are left out
and listed in data/errors/corpus.csv. A clip is never silently dropped, and a class is never
silently lost.

Paths in the manifest are absolute (or relative to the repository root for the demo's generated
media), so the corpus stays where it is: nothing of it is copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.core.config import Section
from pipeline.core.errors import PipelineError
from pipeline.corpus.manifest import Clip, CorpusInfo


class LayoutError(PipelineError):
    """A part of the published layout that reading needs is missing or unreadable; names the path."""


class CorpusOptions(Section):
    """What every real corpus takes; adapters add their own options."""

    root: str = Field(..., min_length=1, description="the corpus folder exactly as unpacked from its distribution")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail: stop listing every problem; skip: leave the clips with problems out (data/errors/corpus.csv)"
    )

    def root_path(self) -> Path:
        return Path(self.root).expanduser()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a corpus: where (file, 1-based row or line), which clip, what."""

    file: str
    message: str
    row: int | None = None
    clip_id: str | None = None
    # every clip the problem concerns when it is more than `clip_id` (e.g. the utterances of one missing
    # dialog video: one line for the file, all of them left out under `on_error: skip`)
    clip_ids: tuple[str, ...] = ()

    def clips(self) -> set[str]:
        return set(self.clip_ids) | ({self.clip_id} if self.clip_id is not None else set())

    def line(self) -> str:
        where = self.file + (f":{self.row}" if self.row is not None else "")
        return f"{where}: {f'clip {self.clip_id}: ' if self.clip_id else ''}{self.message}"


@dataclass
class CorpusRead:
    info: CorpusInfo
    clips: list[Clip]
    # time-continuous labels (LABELS_SCHEMA columns: clip_id, t, and float targets), or None
    labels: dict[str, list[Any]] | None = None
    problems: list[Problem] = field(default_factory=list)
    # the declared range of every continuous label column, e.g. {"arousal": (-1.0, 1.0)}
    label_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    # where each clip came from, for error lines: clip_id -> (file, row)
    origin: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    # what the stage should say without it being a problem (one line each), e.g. an inferred label scale
    notes: list[str] = field(default_factory=list)


def utterance_labels(clips: list[Clip], values: dict[str, dict[str, float | None]]) -> dict[str, list[Any]]:
    """The labels table of utterance-level dimensions (IEMOCAP's, MSP-IMPROV's arousal/valence/dominance):
    one row per clip at t = 0, which segment holds over the clip."""
    names = ["arousal", "valence", "dominance"]
    rows: dict[str, list[Any]] = {"clip_id": [c.clip_id for c in clips], "t": [0.0] * len(clips)}
    rows.update({n: [values[c.clip_id].get(n) for c in clips] for n in names})
    return rows


def read_lines(path: Path) -> list[str]:
    """A label or transcript file's lines: UTF-8, else Latin-1 (older corpus releases ship both)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.splitlines()


def require_path(path: Path, what: str) -> Path:
    """`path` if it exists, else a LayoutError naming it and what the layout puts there."""
    if not path.exists():
        raise LayoutError(f"{path}: not found; expected {what}")
    return path
