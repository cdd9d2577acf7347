"""Precomputed per-timestamp features from MuSe-style CSV files (feature `import`, 000 §5.2, 004).

The MuSe data packages (MuSe-Stress / Ulm-TSST, MuSe 2021/2022) ship every feature as a folder of CSV
files, one per subject, `feature_segments/<feature>/<id>.csv`, with a `timestamp` column in
milliseconds, a `segment_id` column, then the feature columns (the MuSe 2022 baseline reads them from
the third column on). 000 §5.2 uses the Ulm-TSST features as given, all at 2 Hz (aligned with the
annotations): eGeMAPS, facial action units, and the physiological signals ECG, RESP and BPM
concatenated; 004 feeds BioVid's EDA to a 1D-CNN. This extractor reads such a folder into the feature
table schema, one row per CSV row:

- the file of a clip is `import.dir / import.pattern` with {clip_id} (or {speaker}) filled in;
- t = the time column in seconds (`time_unit`: ms or s), as the file gives it;
- values = the chosen `columns` in their order ('all': every numeric column except the time column and
  `segment_id`, in file order, read from the first file of the folder when the extractor is built);
- present = False where any chosen value is empty, NaN or infinite (values zero there).

The files hold one row per sample of the whole recording, and MuSe's clips are whole recordings, so
rows are read as given. A clip that is a window [start, end) of its recording (the manifest's
start/end; null start: 0, null end: the last row) keeps the rows with start ≤ t < end and their t
counted from `start`, the rule every extractor follows; a window holding no row is an ExtractionError
naming the file and the window. `crop` does not apply (the features are precomputed).

Several folders (`sources`): a corpus such as Ulm-TSST ships each feature as its own folder, and 000 §5.2
uses three of them (the facial action units, the 2 Hz eGeMAPS and the biosignals). `import.sources:
{name: settings}` reads each into its own table, feature `import/<name>` (data/features/import/<name>.parquet,
errors in data/errors/import/<name>.csv), for `segment.modalities` to name. A source's `dir` lies under
`sources_root` (default: the folder named like the source; MuSe: `feature_segments/<feature>`), which the
stage depends on as a whole; every setting a source does not give is the section's own.

`rate_hz` declares the rows' sampling rate (default 2 Hz, 000 §5.2) or, null, is inferred from the
first file's median step; every file must then step by whole multiples of that period (5 % tolerance):
missing rows are allowed (the steps are then absent in `segment`), other steps are an error.

Errors (each an ExtractionError naming the file): the file is missing (under `on_error: skip` the
clip's modality is then missing), unreadable, lacks the time column or a chosen column, holds a
non-numeric value in one of them (line and value quoted), or has unsorted or duplicate timestamps.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator, model_validator

from pipeline.core.config import ON_ERROR_HELP, ConfigError, OnError, Problems, Section
from pipeline.core.features import ClipFeatures
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import (
    ExtractionError,
    Extractor,
    clip_window_key,
    file_digest,
)

SEGMENT_ID = "segment_id"  # MuSe's segment column: never a feature
FEATURE = "import"  # the section's own table; its sources are import/<name>
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
RATE_TOLERANCE = 0.05  # share of the sampling period a step may deviate from a whole number of periods


class ImportParams(Section):
    """Precomputed per-timestamp features from MuSe-style CSV files (the `import` section; feature `import`, 000 §5.2, 004)."""

    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    dir: str = Field("data/corpus/biosignals", description="directory of the CSV files (relative: to the repo root)")
    pattern: str = Field("{clip_id}.csv", description="file name of a clip's CSV; fields {clip_id} and {speaker}")
    time_column: str = Field("timestamp", min_length=1, description="column holding each row's time")
    time_unit: Literal["ms", "s"] = Field("ms", description="unit of time_column (MuSe: milliseconds)")
    columns: Literal["all"] | list[str] = Field(
        default_factory=lambda: ["ECG", "RESP", "BPM"],
        description="feature columns, in this order; 'all': every numeric column but the time and segment_id "
        "(000 §5.2: ECG, RESP, BPM; EDA is left out because Ulm-TSST folds it into the arousal labels)",
    )
    rate_hz: float | None = Field(
        2.0, gt=0, description="sampling rate of the rows (000 §5.2: 2 Hz); null: inferred from the timestamps"
    )
    modality: str = Field("physio", pattern=r"^[a-z][a-z0-9_]*$", description="modality the feature stands for")
    sources_root: str = Field(
        "data/corpus", description="the folder every source's `dir` lies in (a DVC dependency of the import "
        "stage: editing any file under it reruns the stage)")
    sources: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="further feature folders, each its own table: {name: settings} → feature "
        "`import/<name>` (data/features/import/<name>.parquet); `dir` relative to sources_root (default: the name), "
        "every setting not given is this section's own (000 §5.2: the MuSe package's FAUs, eGeMAPS and biosignals)")

    @model_validator(mode="after")
    def _sources(self) -> "ImportParams":
        problems: list[tuple[str, str]] = []
        for name, raw in self.sources.items():
            where = f"sources.{name}"
            if not SOURCE_NAME.fullmatch(str(name)):
                problems.append((where, "a source's name is lower-case letters, digits, _ or - (it names a file)"))
                continue
            if not isinstance(raw, dict):
                problems.append((where, f"expected a mapping of import settings, got {raw!r}"))
                continue
            inner = [k for k in ("sources", "sources_root") if k in raw]
            if inner:
                problems.append((where, f"{', '.join(inner)}: set on the section, not per source"))
            elif Path(str(raw.get("dir", name))).is_absolute() or ".." in Path(str(raw.get("dir", name))).parts:
                problems.append((f"{where}.dir", f"'{raw['dir']}' must lie inside sources_root ({self.sources_root}): "
                                 "give it relative to that folder"))
            else:
                try:
                    self.source(name)
                except ValidationError as e:
                    problems += [(f"{where}.{'.'.join(map(str, err['loc']))}", err["msg"]) for err in e.errors()]
        if problems:
            raise Problems(problems)
        return self

    def source(self, name: str) -> "ImportParams":
        """The settings of source `name`: its own over the section's, its `dir` under sources_root."""
        raw = dict(self.sources[name])
        folder = raw.pop("dir", name)
        base = self.model_dump(exclude={"sources"})
        return ImportParams.model_validate({**base, **raw, "dir": str(Path(self.sources_root) / str(folder)), "sources": {}})

    def features(self) -> dict[str, "ImportParams"]:
        """{feature name: settings}: `import` (this section's folder), then `import/<name>` per source."""
        return {FEATURE: self, **{f"{FEATURE}/{name}": self.source(name) for name in self.sources}}

    @field_validator("pattern")
    @classmethod
    def _pattern_fields(cls, v: str) -> str:
        import string

        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        if "clip_id" not in fields and "speaker" not in fields or fields - {"clip_id", "speaker"}:
            raise ValueError(f"must name each clip's file with {{clip_id}} (or {{speaker}}) and no other field, got {v!r}")
        return v

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"must list at least one column, each once, or be 'all'; got {v}")
        return v


class CsvImport(Extractor):
    learned = False
    name = "import"
    version = "1"
    modality = "physio"  # replaced by `import.modality`

    def __init__(self, params: ImportParams, root: str | Path = ".", name: str = FEATURE) -> None:
        self.name = name  # `import`, or `import/<source>` (ImportParams.features)
        self.params_ = params
        self.modality = params.modality
        if isinstance(params.columns, list) and params.time_column in params.columns:
            raise ConfigError(f"import.columns lists the time column '{params.time_column}'")
        self.reference: Path | None = None  # the file 'all' columns or an inferred rate were read from
        columns, rate = params.columns, params.rate_hz
        if columns == "all" or rate is None:
            self.reference = first_file(Path(root) / params.dir, params.pattern)
            table = read_csv(self.reference, params.time_column)
            if columns == "all":
                columns = numeric_columns(table, self.reference, params.time_column)
            if rate is None:
                rate = infer_rate(seconds(table, self.reference, params), self.reference)
        self.columns: list[str] = list(columns)
        self.dim = len(self.columns)
        self.rate_hz = float(rate)

    # ------------------------------------------------------------------------------------------
    def path_for(self, clip: Clip, root: Path) -> Path:
        return Path(root) / self.params_.dir / self.params_.pattern.format(clip_id=clip.clip_id, speaker=clip.speaker)

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        path = self.path_for(clip, root)
        if not path.is_file():
            raise ExtractionError(
                f"{path}: not found (import.dir '{self.params_.dir}', pattern '{self.params_.pattern}')"
            )
        rows = self.read_rows(path)
        if clip.start is None and clip.end is None:
            return rows
        return window_rows(rows, clip.start, clip.end, path)

    def read_rows(self, path: Path) -> ClipFeatures:
        table = read_csv(path, self.params_.time_column)
        t = seconds(table, path, self.params_)
        check_steps(t, self.rate_hz, path, self.params_.time_column)
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise ExtractionError(
                f"{path}: no column {', '.join(repr(c) for c in missing)} (import.columns); "
                f"it has {', '.join(map(str, table.columns))}"
            )
        values = np.column_stack([numeric(table[c], path, c) for c in self.columns]).astype(np.float32)
        values = values.reshape(len(t), self.dim)
        present = np.all(np.isfinite(values), axis=1)
        return ClipFeatures(t=t, present=present, values=np.where(present[:, None], values, 0.0))

    def input_fingerprint(self, clip: Clip, root: Path) -> str:
        path = self.path_for(clip, root)
        key = f"{clip.clip_id}\0{path.name}\0{file_digest(path)}"
        window = clip_window_key(clip)
        if window is not None:  # whole-file clips keep the key they had before windows existed
            key += f"\0window\0{[window[0], window[1]]}"
        return hashlib.sha256(key.encode()).hexdigest()

    # ------------------------------------------------------------------------------------------
    def backbone(self) -> tuple[str, bool]:
        return f"CSV import {Path(self.params_.dir) / self.params_.pattern} [{', '.join(self.columns)}]", True

    def params(self) -> dict[str, Any]:
        return {
            # what this table was read with; the other sources are not (a table keeps its bytes when one is added)
            **self.params_.model_dump(mode="json", exclude={"sources", "sources_root"}),
            "feature_columns": self.columns,
            "reference_file": str(self.reference) if self.reference else None,
        }

    def notes(self) -> str:
        return (
            f"precomputed {self.modality} features read as given from CSV files "
            f"({Path(self.params_.dir) / self.params_.pattern}; {self.dim} columns: {', '.join(self.columns)}; "
            f"t = {self.params_.time_column} in seconds; {self.rate_hz:g} Hz). Rows with an empty or "
            f"non-finite value are present=False."
        )


# ----------------------------------------------------------------------------------------------
# Reading and checking one file
# ----------------------------------------------------------------------------------------------


def window_rows(rows: ClipFeatures, start: float | None, end: float | None, path: Path) -> ClipFeatures:
    """The rows with start ≤ t < end, t counted from `start` (null start: 0, null end: no bound)."""
    s = float(start or 0.0)
    keep = (rows.t >= s - 1e-9) & (rows.t < (np.inf if end is None else float(end)) - 1e-9)
    if not keep.any():
        bound = "end" if end is None else f"{float(end):.3f}"
        raise ExtractionError(f"{path}: no row in the clip's window [{s:.3f}, {bound}) s")
    return ClipFeatures(t=rows.t[keep] - s, present=rows.present[keep], values=rows.values[keep])


def no_feature_files(params: ImportParams, root: str | Path = ".") -> bool:
    """True when import.dir holds no file matching import.pattern (a corpus without precomputed features)."""
    folder = Path(root) / params.dir
    return not folder.is_dir() or not any(p.is_file() for p in folder.glob(params.pattern.format(clip_id="*", speaker="*")))


def first_file(folder: Path, pattern: str) -> Path:
    found = sorted(p for p in folder.glob(pattern.format(clip_id="*", speaker="*")) if p.is_file())
    if not found:
        raise ExtractionError(
            f"{folder}: no file matches '{pattern}' (import.columns 'all' and import.rate_hz null read the "
            f"columns and the rate from the first one)"
        )
    return found[0]


def read_csv(path: Path, time_column: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ExtractionError(f"{path}: unreadable CSV file ({str(e).strip() or type(e).__name__})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if time_column not in table.columns:
        raise ExtractionError(
            f"{path}: no time column '{time_column}' (import.time_column); it has {', '.join(table.columns)}"
        )
    return table


def numeric(column: pd.Series, path: Path, name: str) -> np.ndarray:
    """The column as float64 (empty cells NaN); a value that is not a number is an error quoting it."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(np.float64, na_value=np.nan)
    parsed = pd.to_numeric(column, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy() & column.notna().to_numpy())
    if len(bad) or pd.api.types.is_bool_dtype(column):
        i = int(bad[0]) if len(bad) else 0
        raise ExtractionError(f"{path}: column '{name}' is not numeric (line {i + 2}: {column.iloc[i]!r})")
    return parsed.to_numpy(np.float64, na_value=np.nan)


def numeric_columns(table: pd.DataFrame, path: Path, time_column: str) -> list[str]:
    skip = {time_column.lower(), SEGMENT_ID}
    columns = [
        c for c in table.columns
        if c.lower() not in skip and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
    ]
    if not columns:
        raise ExtractionError(f"{path}: no numeric feature column besides '{time_column}' and '{SEGMENT_ID}'")
    return columns


def seconds(table: pd.DataFrame, path: Path, params: ImportParams) -> np.ndarray:
    """The time column in seconds, checked: numeric, never empty, strictly increasing."""
    name = params.time_column
    t = numeric(table[name], path, name)
    if np.isnan(t).any():
        raise ExtractionError(f"{path}: column '{name}' is empty at line {int(np.flatnonzero(np.isnan(t))[0]) + 2}")
    t = t * (1e-3 if params.time_unit == "ms" else 1.0)
    back = np.flatnonzero(np.diff(t) <= 0)
    if len(back):
        i = int(back[0]) + 1
        what = "duplicate" if t[i] == t[i - 1] else "unsorted"
        raise ExtractionError(
            f"{path}: column '{name}' has {what} timestamps at line {i + 2} "
            f"({table[name].iloc[i - 1]} then {table[name].iloc[i]}); rows must be in increasing time"
        )
    return t


def infer_rate(t: np.ndarray, path: Path) -> float:
    if len(t) < 2:
        raise ExtractionError(f"{path}: fewer than two rows, import.rate_hz cannot be inferred from it; set it")
    return float(1.0 / np.median(np.diff(t)))


def check_steps(t: np.ndarray, rate_hz: float, path: Path, name: str) -> None:
    """Every step a whole number (≥ 1) of sampling periods, within RATE_TOLERANCE of a period."""
    if len(t) < 2:
        return
    period = 1.0 / rate_hz
    steps = np.diff(t)
    k = np.maximum(np.round(steps / period), 1)
    bad = np.flatnonzero(np.abs(steps - k * period) > RATE_TOLERANCE * period)
    if len(bad):
        i = int(bad[0])
        raise ExtractionError(
            f"{path}: column '{name}' steps {steps[i] * 1000:g} ms at line {i + 3}, not a multiple of the "
            f"{period * 1000:g} ms period of {rate_hz:g} Hz (import.rate_hz)"
        )
