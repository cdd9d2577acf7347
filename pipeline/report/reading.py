"""The checked reading every input reader of the report shares: `ReportError`, `require`, `read_csv`
(`read_csv_where`: the rows a filter keeps, streamed) and `json_object`. A missing or malformed file is a `ReportError` that names the file and the stage that
writes it, so a user knows what to rerun.

CSV files are read with polars (as the pipeline writes them), every cell as text first, so that a bad
cell is reported by file, line and column. This module sits below both reader modules (`inputs`, the
evaluate stages' tables, and `run_files`, the run and upstream files) so neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import polars as pl

# how read_csv converts a column: 'std' takes an empty cell as NaN (one seed), 'level' as None (no level)
Kind = Literal["str", "int", "float", "std", "level"]


class ReportError(Exception):
    """An input of the report is missing or does not follow its contract; the message names the file."""


def require(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise ReportError(f"{path}: not found; it is written by the `{stage}` stage (run `dvc repro {stage}`)")
    return path


def _convert(raw: pl.DataFrame, path: Path, col: str, kind: Kind) -> pl.Series:
    """Column `col` of an all-text table as `kind`; a ReportError naming the first bad cell. Numbers
    are what float() reads ('nan' and 'inf' included); an empty cell is an error, not a silent NaN,
    except where `kind` gives it a meaning ('std', 'level')."""
    if kind == "str":
        return raw[col].fill_null("")
    text = raw[col].str.strip_chars()
    num = text.cast(pl.Float64, strict=False)
    empty = text.fill_null("") == ""
    bad = num.is_null() & ~empty if kind in ("std", "level") else num.is_null()
    if kind == "int":
        bad = bad | ~num.is_finite().fill_null(False) | (num != num.floor()).fill_null(False)
    if bad.any():
        i = bad.arg_true()[0]
        cell = raw[col][i]
        line = raw[_LINE][i] if _LINE in raw.columns else i + 2  # rows kept by `read_csv_where`: their own line
        raise ReportError(f"{path}: line {line}: column '{col}' holds {cell or ''!r}, not a valid number")
    if kind == "int":
        return num.cast(pl.Int64)
    return num.fill_null(float("nan")) if kind == "std" else num


def read_csv(path: Path, stage: str, columns: dict[str, Kind]) -> pl.DataFrame:
    """The table at `path` with `columns` converted (see `Kind`); other columns are kept as text."""
    require(path, stage)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:  # an empty file: no header at all
        raw = pl.DataFrame()
    except pl.exceptions.PolarsError as e:
        raise ReportError(f"{path}: not a readable CSV ({e}); rerun the `{stage}` stage") from None
    _check_columns(path, stage, raw.columns, columns)
    table = raw.with_columns(_convert(raw, path, col, kind).alias(col) for col, kind in columns.items())
    if table.height == 0:
        raise ReportError(f"{path}: has a header but no rows; rerun the `{stage}` stage")
    return table


def _check_columns(path: Path, stage: str, have: list[str], columns: dict[str, Kind]) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise ReportError(f"{path}: lacks columns {missing} (has {have}); rerun the `{stage}` stage")


# the file line of a row read by `read_csv_where` (the header is line 1)
_LINE = "__line"


def read_csv_where(path: Path, stage: str, columns: dict[str, Kind], where: pl.Expr) -> pl.DataFrame:
    """`columns` (only these, converted as by `read_csv`) of the rows of the CSV at `path` that `where`
    keeps (an expression on the text cells); possibly none. Streamed (polars' lazy scan, the filter
    applied while reading), so memory holds the kept cells only: for a file that grows with the corpus
    times the conditions, such as a regression run's predictions.csv (2.3 GB at Aff-Wild2's size). A bad
    cell is reported with its line in the file."""
    require(path, stage)
    scan = pl.scan_csv(path, infer_schema=False, row_index_name=_LINE, row_index_offset=2)
    try:
        _check_columns(path, stage, [c for c in scan.collect_schema().names() if c != _LINE], columns)
        raw = scan.filter(where).select(_LINE, *columns).collect(engine="streaming")
    except pl.exceptions.NoDataError:  # an empty file: no header at all
        raise ReportError(f"{path}: empty; rerun the `{stage}` stage") from None
    except pl.exceptions.PolarsError as e:
        raise ReportError(f"{path}: not a readable CSV ({e}); rerun the `{stage}` stage") from None
    return raw.with_columns(_convert(raw, path, col, kind).alias(col) for col, kind in columns.items()).drop(_LINE)


def json_object(path: Path, rerun: str) -> dict[str, Any]:
    """A JSON file holding an object; a ReportError naming the file and what to rerun otherwise."""
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({e}); rerun {rerun}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a JSON object; rerun {rerun}")
    return data
