"""The feature tables' contract. Feature table (`data/features/<name>.parquet`), one row per time step of one clip, sorted by clip then
time:

    clip_id: string, t: float64 (seconds, frame centre), present: bool,
    value: fixed_size_list<float32>[D]
    [t_start, t_end: float64]  only for irregular steps (words): the span each row covers

`present` is false where the modality is missing at that step (no face, no transcript…); the value
there is all zeros and must not be read as data. Schema metadata (key `mer`, JSON) records the
extractor, its version and params, the backbone, whether its weights are pretrained, rate and
dimension, so every downstream output can say what it was computed from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.store import (
    META_KEY,
    StoreError,
    json_default,
    read_meta,
    read_table,
    write_table,
)


@dataclass
class FeatureMeta:
    """What a feature table was computed from. Stored as JSON in the Parquet schema metadata."""

    name: str
    extractor: str
    version: str
    dim: int
    rate_hz: float | None  # None for irregular steps (e.g. words)
    modality: str  # 'video', 'audio' or 'text'
    backbone: str
    pretrained: bool
    params: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    learned: bool = True  # False for fixed feature sets (openSMILE): no weights to be random
    # the feature of the token a missing step stands for (BERT's [UNK], 003 §5.2.1), written in the
    # table's schema only (not in each clip's cache entry); None: the extractor has none
    missing_token: list[float] | None = None

    def to_json(self) -> str:
        # a table without a missing token writes none: it keeps the bytes it had before tokens existed
        fields = {k: v for k, v in self.__dict__.items() if not (k == "missing_token" and v is None)}
        return json.dumps(fields, sort_keys=True, default=json_default)

    @classmethod
    def from_json(cls, blob: bytes | str) -> "FeatureMeta":
        return cls(**json.loads(blob))

    @property
    def weights_statement(self) -> str:
        """Plain-words statement of the weights, repeated in every output and the report."""
        if not self.learned:
            return f"{self.backbone}: fixed feature set (no learned weights)"
        if self.pretrained:
            return f"{self.backbone}: pretrained weights"
        return (
            f"{self.backbone}: RANDOM weights (not pretrained) — features carry no learned "
            f"knowledge; results are for testing the pipeline only"
        )


@dataclass
class ClipFeatures:
    """One clip's rows: times (T,), presence (T,), values (T, D) float32 (zeros where absent), and
    for irregular steps (words) the span (T, 2) each row covers."""

    t: np.ndarray
    present: np.ndarray
    values: np.ndarray
    span: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        self.present = np.asarray(self.present, dtype=bool).reshape(-1)
        self.values = np.asarray(self.values, dtype=np.float32)
        n = len(self.t)
        if self.values.ndim != 2 or self.values.shape[0] != n or len(self.present) != n:
            raise ValueError(
                f"inconsistent clip rows: t {self.t.shape}, present {self.present.shape}, values {self.values.shape}"
            )
        if self.span is not None:
            self.span = np.asarray(self.span, dtype=np.float64).reshape(n, 2)
        if not np.all(np.isfinite(self.values[self.present])):
            raise ValueError("non-finite feature values at steps marked present")
        if np.any(self.values[~self.present]):
            self.values = self.values.copy()
            self.values[~self.present] = 0.0

    @classmethod
    def empty(cls, dim: int, spans: bool = False) -> "ClipFeatures":
        return cls(np.zeros(0), np.zeros(0, bool), np.zeros((0, dim), np.float32), np.zeros((0, 2)) if spans else None)


def feature_schema(meta: FeatureMeta) -> pa.Schema:
    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("t", pa.float64(), nullable=False),
        pa.field("present", pa.bool_(), nullable=False),
        pa.field("value", pa.list_(pa.float32(), meta.dim), nullable=False),
    ]
    if meta.rate_hz is None:  # irregular steps carry the span each row covers
        fields += [pa.field("t_start", pa.float64(), nullable=False), pa.field("t_end", pa.float64(), nullable=False)]
    return pa.schema(fields, metadata={META_KEY: meta.to_json().encode()})


def feature_table(meta: FeatureMeta, clips: dict[str, ClipFeatures]) -> pa.Table:
    """Assemble the table for `clips` (sorted by clip id, then time)."""
    irregular = meta.rate_hz is None
    ids, ts, pres, vals, spans = [], [], [], [], []
    for clip_id in sorted(clips):
        c = clips[clip_id]
        if c.values.shape[1] != meta.dim:
            raise ValueError(f"clip {clip_id}: dimension {c.values.shape[1]} != declared {meta.dim}")
        if irregular and c.span is None:
            raise ValueError(f"clip {clip_id}: irregular feature '{meta.name}' needs row spans")
        order = np.argsort(c.t, kind="stable")
        ids.append(np.full(len(c.t), clip_id, dtype=object))
        ts.append(c.t[order])
        pres.append(c.present[order])
        vals.append(c.values[order])
        if irregular:
            spans.append(c.span[order])
    schema = feature_schema(meta)
    if not ids or sum(len(t) for t in ts) == 0:
        return schema.empty_table()
    flat = np.concatenate(vals).astype(np.float32, copy=False)
    value = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), meta.dim)
    columns = [pa.array(np.concatenate(ids), pa.string()), pa.array(np.concatenate(ts)), pa.array(np.concatenate(pres)), value]
    if irregular:
        span = np.concatenate(spans)
        columns += [pa.array(span[:, 0]), pa.array(span[:, 1])]
    return pa.Table.from_arrays(columns, schema=schema)


def write_features(target: str | Path, meta: FeatureMeta, clips: dict[str, ClipFeatures]) -> None:
    write_table(target, feature_table(meta, clips), row_group_size=64_000)


def read_feature_meta(path: str | Path) -> FeatureMeta:
    return FeatureMeta(**read_meta(path, "feature table"))


def read_features(path: str | Path) -> tuple[FeatureMeta, dict[str, ClipFeatures]]:
    """Read a feature table back into per-clip arrays, the whole table at once (small tables; the segment
    stage streams with `iter_clip_features`)."""
    meta = read_feature_meta(path)
    table = read_table(path)
    expected = {"clip_id", "t", "present", "value"}
    if not expected <= set(table.column_names):
        raise StoreError(f"{path}: columns {table.column_names} lack {sorted(expected - set(table.column_names))}")
    clip_ids = table.column("clip_id").to_numpy(zero_copy_only=False)
    t = table.column("t").to_numpy()
    present = table.column("present").to_numpy(zero_copy_only=False)
    value = table.column("value").combine_chunks()
    values = value.flatten().to_numpy(zero_copy_only=False).reshape(len(table), meta.dim)
    out: dict[str, ClipFeatures] = {}
    if len(table) == 0:
        return meta, out
    # rows are grouped by clip: split at the boundaries
    change = np.flatnonzero(clip_ids[1:] != clip_ids[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(table)]])
    span = None
    if meta.rate_hz is None:
        span = np.stack([table.column("t_start").to_numpy(), table.column("t_end").to_numpy()], axis=1)
    for s, e in zip(starts, ends):
        out[str(clip_ids[s])] = ClipFeatures(t[s:e], present[s:e], values[s:e], None if span is None else span[s:e])
    return meta, out


# rows per batch when a feature table is streamed: about this many bytes of values (`iter_clip_features`)
STREAM_BATCH_BYTES = 32 << 20


def iter_clip_features(path: str | Path, batch_rows: int | None = None) -> tuple[FeatureMeta, Iterator[tuple[str, ClipFeatures]]]:
    """(meta, (clip_id, rows) for each clip in table order): the table read a batch of rows at a time
    (`ParquetFile.iter_batches` over a buffered stream), so memory holds one batch and one clip, never
    the table. Each clip's rows are what `read_features` gives for it (the same `ClipFeatures`); a clip
    whose rows span batches is carried over. `batch_rows` (default: about `STREAM_BATCH_BYTES`) is for
    tests. The table must be grouped by clip (its contract: sorted by clip then time)."""
    path = Path(path)
    meta = read_feature_meta(path)
    try:
        pf = pq.ParquetFile(path, buffer_size=8 << 20, pre_buffer=False)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise StoreError(f"{path}: unreadable Parquet file: {e}") from None
    names = pf.schema_arrow.names
    expected = {"clip_id", "t", "present", "value"}
    if not expected <= set(names):
        raise StoreError(f"{path}: columns {names} lack {sorted(expected - set(names))}")
    columns = ["clip_id", "t", "present", "value"] + (["t_start", "t_end"] if meta.rate_hz is None else [])
    batch_rows = batch_rows or max(1, STREAM_BATCH_BYTES // (4 * max(1, meta.dim)))

    def columns_of(batch: pa.RecordBatch) -> tuple[np.ndarray, ...]:
        n = batch.num_rows
        out = [batch.column("clip_id").to_numpy(zero_copy_only=False), batch.column("t").to_numpy(),
               batch.column("present").to_numpy(zero_copy_only=False),
               batch.column("value").flatten().to_numpy(zero_copy_only=False).reshape(n, meta.dim)]
        if meta.rate_hz is not None:
            return (*out, None)
        return (*out, np.stack([batch.column("t_start").to_numpy(), batch.column("t_end").to_numpy()], axis=1))

    def clip(parts: list[tuple[np.ndarray, ...]]) -> ClipFeatures:
        if len(parts) == 1:
            return ClipFeatures(*parts[0][1:])
        t, present, values = (np.concatenate([part[j] for part in parts]) for j in (1, 2, 3))
        span = None if parts[0][4] is None else np.concatenate([part[4] for part in parts])
        return ClipFeatures(t, present, values, span)

    def clips() -> Iterator[tuple[str, ClipFeatures]]:
        pending: list[tuple[np.ndarray, ...]] = []  # the last clip's rows so far (it may go on in the next batch)
        pending_id = None
        try:
            batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                ids, t, present, values, span = columns_of(batch)
                change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
                starts = np.concatenate([[0], change])
                ends = np.concatenate([change, [len(ids)]])
                for s, e in zip(starts, ends):
                    cid = str(ids[s])
                    part = (cid, t[s:e], present[s:e], values[s:e], None if span is None else span[s:e])
                    if pending and cid != pending_id:
                        yield pending_id, clip(pending)
                        pending = []
                    pending.append(part)
                    pending_id = cid
        except StoreError:
            raise
        except (OSError, pa.ArrowException) as e:
            raise StoreError(f"{path}: unreadable Parquet file: {e}") from None
        if pending:
            yield pending_id, clip(pending)

    return meta, clips()
