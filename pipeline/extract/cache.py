"""Per-clip cache of extraction results, keyed by what was read and how it was processed.

A stage's output table is rebuilt from the cache every run, and only clips whose key is absent are
computed: adding one clip to a 40-clip corpus extracts one clip; changing an extractor's params
changes its config key and re-extracts that feature only (the other stages' keys do not change).

Key = (stage name, config key, input key):
- config key: `Extractor.config_fingerprint()` — class, version, dimension, rate, backbone, params
  (with weights named by content digest);
- input key: `Extractor.input_fingerprint(clip)` — the bytes the extractor reads for that clip
  (media file digest, transcript, the clip's detection rows…).

Layout: `<root>/<name>/<config key[:16]>/<input key[:2]>/<input key>.arrow`, one small Arrow IPC
(Feather v2, LZ4) table per clip — about 7× faster to read back than a small Parquet file, which is
what a run over a mostly cached corpus spends its time on — written atomically (a killed run never leaves an entry that reads as done). The root
is `data/cache` (`pipeline.core.paths.CACHE_DIR`; `MER_CACHE_DIR` overrides it). It is not a DVC output:
DVC deletes a stage's outputs before rerunning it, which is exactly when the cache must survive. It is
safe to delete at any time (everything is recomputed); entries of old configurations are kept so
switching params back costs nothing — `rm -rf data/cache/<name>` reclaims their space.

Written by hand: DVC caches whole stage outputs, not per-clip results, and joblib.Memory keys on
pickled Python arguments (clip objects, models), not on file content; neither gives this key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather

from pipeline.core.store import atomic_path


def config_key(*parts: Any) -> str:
    """sha256 of JSON-serialisable parts (params dumps, versions, digests)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ClipCache:
    """Per-clip tables of one stage under one configuration."""

    def __init__(self, name: str, config_key: str, root: str | Path | None = None):
        self._tmp = None
        if root is None:  # no persistent cache (tests, one-off runs): a private directory
            self._tmp = tempfile.TemporaryDirectory(prefix=f"mer-cache-{name}-")
            root = self._tmp.name
        self.dir = Path(root) / name / config_key[:16]

    def path(self, input_key: str) -> Path:
        return self.dir / input_key[:2] / f"{input_key}.arrow"

    def __contains__(self, input_key: str) -> bool:
        return self.path(input_key).exists()

    def get(self, input_key: str) -> pa.Table | None:
        """The cached table, or None when absent or unreadable (an unreadable entry is recomputed)."""
        p = self.path(input_key)
        if not p.exists():
            return None
        try:
            return feather.read_table(p, memory_map=False)
        except Exception:  # a corrupt entry (disk full, foreign file): drop it and recompute
            p.unlink(missing_ok=True)
            return None

    def put(self, input_key: str, table: pa.Table) -> None:
        with atomic_path(self.path(input_key), suffix=".arrow") as tmp:
            feather.write_feather(table, tmp, compression="lz4")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "ClipCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def clear(root: str | Path, name: str | None = None) -> None:
    """Delete the cache of one stage (or all)."""
    target = Path(root) / name if name else Path(root)
    shutil.rmtree(target, ignore_errors=True)
