"""Atomic writes and Parquet tables: every file is written to a temporary name beside its target and
renamed into place, so a crash never leaves a half-written output that a later stage would take as done;
`publish_dir` and `staged_dir` do the same for a whole folder (a staging folder swapped into place).
Tables carry their provenance as JSON in the schema metadata (key `mer`, `read_meta`). The feature
tables' contract: pipeline/core/features.py."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import PipelineError

META_KEY = b"mer"
_UMASK = os.umask(0)
os.umask(_UMASK)
COMPRESSION = "zstd"


class StoreError(PipelineError):
    """A table is missing or does not follow its contract; the message names the file."""


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _make_readable(tree: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; give the tree the permissions the umask allows."""
    for dirpath, _, filenames in os.walk(tree):
        os.chmod(dirpath, 0o777 & ~_UMASK)
        for f in filenames:
            os.chmod(Path(dirpath) / f, 0o666 & ~_UMASK)


def publish_dir(out_dir: str | Path, files: dict[str, bytes | str]) -> None:
    """Write `files` (relative path -> text or bytes) as the whole of `out_dir`, all or nothing (`staged_dir`)."""
    with staged_dir(out_dir) as staging:
        for rel, content in files.items():
            target = staging / rel
            if isinstance(content, str):
                write_text(target, content)
            else:
                with atomic_path(target) as tmp:
                    tmp.write_bytes(content)


@contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a staging folder beside `out_dir`; when the block succeeds it is swapped into place as the
    whole of `out_dir`. A failure leaves the previous `out_dir` (or none) as it was, never a mix of old
    and new files, and removes the staging folder."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    old = None
    try:
        yield staging
        _make_readable(staging)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old)  # an empty placeholder dir is replaced
        os.replace(staging, out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            os.replace(old, out_dir)  # put the previous folder back
            old = None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_table(target: str | Path, table: pa.Table, row_group_size: int | None = None) -> None:
    with atomic_path(target, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=row_group_size)


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: not found; run the stage that writes it (`dvc repro`)")
    try:
        return pq.read_table(path, columns=columns)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise StoreError(f"{path}: unreadable Parquet file: {e}") from None


class TableWriter:
    """Streams per-clip tables into one Parquet file (written atomically), holding at most about
    `buffer_bytes` in memory, so writing a corpus's table costs memory flat in the corpus size.
    Callers append clips in the table's sort order."""

    def __init__(self, target: str | Path, schema: pa.Schema, buffer_bytes: int = 32 << 20):
        self.target, self.schema, self.buffer_bytes = Path(target), schema, buffer_bytes
        self._pending: list[pa.Table] = []
        self._size = 0
        self.rows = 0

    def __enter__(self) -> "TableWriter":
        self._atomic = atomic_path(self.target, suffix=".parquet")
        tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(tmp, self.schema, compression=COMPRESSION)
        return self

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        self._pending.append(table)
        self._size += table.nbytes
        self.rows += len(table)
        if self._size >= self.buffer_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._size = [], 0

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        try:
            if exc_type is None:
                self._flush()
        finally:
            self._writer.close()
        return self._atomic.__exit__(exc_type, exc, tb)


def read_meta(path: str | Path, what: str, stage: str | None = None) -> dict[str, Any]:
    """The `mer` JSON in a Parquet file's schema metadata, without reading its rows; `what` names the
    kind of table in errors, `stage` the DVC stage that writes it."""
    path = Path(path)
    if not path.exists():
        run = f"run the `{stage}` stage (`dvc repro {stage}`)" if stage else "run the stage that writes it (`dvc repro`)"
        raise StoreError(f"{path}: not found; {run}")
    try:
        md = pq.read_schema(path).metadata or {}
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise StoreError(f"{path}: unreadable Parquet file: {e}") from None
    if META_KEY not in md:
        raise StoreError(f"{path}: not a {what} (no '{META_KEY.decode()}' schema metadata)")
    return json.loads(md[META_KEY])
