"""The corpus contract: a manifest (one row per clip) and a table of time-continuous labels.

Manifest columns:
    clip_id      string   unique, safe as a file name
    speaker      string   partitions are drawn by speaker (speaker-independent)
    partition    string?  'train' | 'devel' | 'test' where the corpus defines it, else null
    media_path   string   video container (with audio track when audio_path is null); relative
                          paths are relative to the repository root
    audio_path   string?  separate audio file, when the corpus ships one
    duration     float64  seconds
    transcript   string?  null when the corpus has none for the clip
    words        list<struct<word string, start float64, end float64>>?  word timings if known
    label        string?  categorical emotion, one of the manifest's `classes`
    start, end   float64? the clip is this time window of its media files (seconds; IEMOCAP's
                          utterances are windows of a dialog video); null: the whole file. Word times,
                          label times and every extractor's row times count from `start`.
    crop         list<float64>[4]?  the region of the video frame the clip's face is in, as fractions
                          of the frame (x0, y0, x1, y1), e.g. the speaker's half of a dyadic recording
    session      string?  recording session (leave-one-session-out protocols), null if none
Labels table columns: clip_id string, t float64 (s from the clip's start), arousal float32, valence
float32 (null where a step is not annotated: a missing label, never a value; all null where the corpus
has no such dimension), then any further float32 targets the corpus gives (e.g. `dominance` from
IEMOCAP / MSP-IMPROV, `sentiment` from MMSA's CMU-MOSI/MOSEI/CH-SIMS), nullable likewise.

Schema metadata (`mer` JSON): corpus name, classes (ordered), label rate, generator params.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.core.store import META_KEY, StoreError, read_table, write_table

PARTITIONS = ("train", "devel", "test")

WORD = pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())])

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("partition", pa.string()),
        pa.field("media_path", pa.string(), nullable=False),
        pa.field("audio_path", pa.string()),
        pa.field("duration", pa.float64(), nullable=False),
        pa.field("transcript", pa.string()),
        pa.field("words", pa.list_(WORD)),
        pa.field("label", pa.string()),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("crop", pa.list_(pa.float64(), 4)),
        pa.field("session", pa.string()),
    ]
)

LABELS_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("t", pa.float64(), nullable=False),
        pa.field("arousal", pa.float32()),
        pa.field("valence", pa.float32()),
    ]
)


@dataclass
class Clip:
    clip_id: str
    speaker: str
    media_path: str
    duration: float
    partition: str | None = None
    audio_path: str | None = None
    transcript: str | None = None
    words: list[dict[str, Any]] | None = None
    label: str | None = None
    start: float | None = None
    end: float | None = None
    crop: list[float] | None = None
    session: str | None = None

    def media(self, root: str | Path = ".") -> Path:
        p = Path(self.media_path)
        return p if p.is_absolute() else Path(root) / p

    def audio(self, root: str | Path = ".") -> Path:
        p = Path(self.audio_path) if self.audio_path else Path(self.media_path)
        return p if p.is_absolute() else Path(root) / p


@dataclass
class CorpusInfo:
    name: str
    classes: list[str]
    label_rate_hz: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


def write_manifest(path: str | Path, info: CorpusInfo, clips: list[Clip]) -> None:
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate clip ids in manifest")
    for c in clips:
        if c.partition is not None and c.partition not in PARTITIONS:
            raise ValueError(f"clip {c.clip_id}: partition {c.partition!r} not in {PARTITIONS}")
        if c.label is not None and c.label not in info.classes:
            raise ValueError(f"clip {c.clip_id}: label {c.label!r} not in classes {info.classes}")
    rows = {f.name: [getattr(c, f.name) for c in clips] for f in MANIFEST_SCHEMA}
    schema = MANIFEST_SCHEMA.with_metadata({META_KEY: json.dumps(info.__dict__, sort_keys=True).encode()})
    write_table(path, pa.Table.from_pydict(rows, schema=schema))


def read_manifest(path: str | Path) -> tuple[CorpusInfo, list[Clip]]:
    table = read_table(path)
    # start/end/crop/session came later: a manifest without them is read as whole files, no sessions
    missing = set(MANIFEST_SCHEMA.names) - set(table.column_names) - {"start", "end", "crop", "session"}
    if missing:
        raise StoreError(f"{path}: manifest lacks columns {sorted(missing)}")
    md = table.schema.metadata or {}
    if META_KEY not in md:
        raise StoreError(f"{path}: manifest has no '{META_KEY.decode()}' metadata (corpus name, classes)")
    info = CorpusInfo(**json.loads(md[META_KEY]))
    clips = [Clip(**{k: row.get(k) for k in MANIFEST_SCHEMA.names}) for row in table.to_pylist()]
    return info, clips


def labels_schema(columns: list[str]) -> pa.Schema:
    """LABELS_SCHEMA plus a nullable float32 column for each further target in `columns`."""
    extra = [c for c in columns if c not in LABELS_SCHEMA.names]
    return pa.schema(list(LABELS_SCHEMA) + [pa.field(c, pa.float32()) for c in extra])


def write_labels(path: str | Path, rows: dict[str, list]) -> None:
    """Write the labels table: clip_id, t, arousal, valence (all null where `rows` lacks them) and the
    further float targets of `rows` in their order."""
    n = len(rows.get("clip_id", []))
    full = {name: rows[name] if name in rows else [None] * n for name in LABELS_SCHEMA.names} | dict(rows)
    schema = labels_schema(list(rows))
    write_table(path, pa.Table.from_pydict({f.name: full[f.name] for f in schema}, schema=schema))


def read_labels(path: str | Path) -> pa.Table:
    table = read_table(path)
    missing = set(LABELS_SCHEMA.names) - set(table.column_names)
    if missing:
        raise StoreError(f"{path}: labels table lacks columns {sorted(missing)}")
    return table
