"""A user's own corpus (`corpus.name: manifest`): a CSV listing the clips, or MMSA-FET's layout.

`format: csv` (the default) reads, under `root`:

    manifest.csv (option `csv`)   one row per clip. Columns: clip_id, speaker, media_path (required);
                                  audio_path, partition (train | devel | test), transcript, label,
                                  start, end (seconds: the clip is that window of its media), session,
                                  crop ("x0 y0 x1 y1", fractions of the frame), duration (seconds; else
                                  read from the media file's header) — all optional, empty = none.
    labels.csv (option `labels_csv`, optional)
                                  time-continuous (or per-clip, t = 0) labels: clip_id, t (seconds from
                                  the clip's start), then one column per target (arousal, valence,
                                  dominance, …); an empty cell is "not annotated".

Paths in a CSV are relative to the CSV's folder (or absolute). `classes` fixes the classes' order
(default: the labels found, sorted); `label_ranges` ({column: [lo, hi]}) is what the checks hold each
label column to; arousal/valence/dominance without an entry are held to the usual scale ([-1, 1],
[1, 5], [1, 7]) most of their values lie in, and the stage says which (`infer_ranges`). A column the
adapter does not read is a problem naming it, with did-you-mean (`extra_columns: ignore` accepts it).

`format: mmsa` reads MMSA-FET's layout (CMU-MOSI, CMU-MOSEI, CH-SIMS as MMSA ships them):

    label.csv                     video_id, clip_id, text, label (regression: [-3, 3] for MOSI/MOSEI,
                                  [-1, 1] for SIMS), label_T / label_A / label_V (SIMS's unimodal
                                  labels; absent in MOSI/MOSEI), annotation (Negative | Neutral |
                                  Positive), mode (train | valid | test)
    Raw/<video_id>/<clip_id>.mp4  the clips

A clip's id is `<video_id>_<clip_id>`, its speaker the video id (one speaker per video in MOSI/MOSEI),
its transcript `text`, its categorical label `annotation`, its partition `mode` (valid → devel); the
regression label goes to the labels table at t = 0 as `sentiment` (label_T/A/V as sentiment_text /
sentiment_audio / sentiment_video), held to [-3, 3] unless `label_ranges` says otherwise (CH-SIMS:
`{sentiment: [-1, 1]}`). docs/corpora/manifest.md has examples.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.corpus.adapter import CorpusOptions, CorpusRead, LayoutError, Problem
from pipeline.corpus.crema_d import header_duration, media_problem
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.media import MediaError

NAME = "manifest"
REQUIRED = ("clip_id", "speaker", "media_path")
OPTIONAL = ("audio_path", "partition", "transcript", "label", "start", "end", "session", "crop", "duration")
MMSA_REQUIRED = ("video_id", "clip_id", "text", "label", "annotation", "mode")
MMSA_UNIMODAL = {"label_T": "sentiment_text", "label_A": "sentiment_audio", "label_V": "sentiment_video"}
MMSA_MODES = {"train": "train", "valid": "devel", "test": "test"}
MMSA_RANGE = (-3.0, 3.0)
MMSA_OPTIONAL = tuple(MMSA_UNIMODAL)
# The usual scales of the usual dimensional targets: a labels column among USUAL_TARGETS without a
# declared `label_ranges` entry is held to the scale most of its values lie in (the narrowest on a
# tie), and the stage says which it inferred; a value outside it is a problem like any other.
USUAL_TARGETS = ("arousal", "valence", "dominance")
USUAL_SCALES = ((-1.0, 1.0), (1.0, 5.0), (1.0, 7.0))


class Params(CorpusOptions):
    name: Literal["manifest"] = "manifest"
    format: Literal["csv", "mmsa"] = Field("csv", description="csv: the manifest CSV below; mmsa: MMSA-FET's label.csv + Raw/")
    csv: str | None = Field(
        None, min_length=1, description="the clips' CSV, relative to root (default manifest.csv; mmsa: label.csv)"
    )
    labels_csv: str | None = Field(
        None, min_length=1, description="format csv: the labels CSV (clip_id, t, targets), relative to root; none: no labels table"
    )
    classes: list[str] | None = Field(None, description="the classes in order; default: the labels found, sorted")
    label_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="{label column: [lo, hi]} the checks hold each column to"
    )
    label_rate_hz: float | None = Field(None, gt=0, description="rate of the labels CSV's rows (label times may exceed the clip by half a period)")
    extra_columns: Literal["error", "ignore"] = Field(
        "error", description="a column the adapter does not read: error (one problem naming it) or ignore"
    )

    @field_validator("label_ranges")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for k, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"{k}: [{lo}, {hi}] is not a range (expected lo < hi)")
        return v

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("a class is listed twice")
        return v


@dataclass
class ManifestRead(CorpusRead):
    # (file, row) of each clip by position (duplicate ids are each named) and of each labels row
    clip_origin: list[tuple[str, int | None]] = field(default_factory=list)
    label_origin: list[tuple[str, int | None]] = field(default_factory=list)


def _rows(path: Path, required: tuple[str, ...], what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]) of a CSV whose header must name `required`; LayoutError when it
    is absent, unreadable or lacks a column."""
    if not path.is_file():
        raise LayoutError(f"{path}: not found; expected {what}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = []
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                rows.append((reader.line_num, dict(zip(header, (v.strip() for v in values)))))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LayoutError(f"{path}: unreadable ({getattr(e, 'strerror', None) or e}); expected {what}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise LayoutError(f"{path}: no column {', '.join(missing)} in the header ({', '.join(header) or 'empty'}); "
                          f"expected {what}")
    return header, rows


def _unknown_columns(params: Params, path: Path, header: list[str], known: tuple[str, ...], problems: list[Problem],
                     hint: str = "") -> None:
    """One problem per column of `header` the adapter does not read (unless `extra_columns: ignore`):
    a misspelled `audio` for `audio_path` must not leave the clips without their audio file."""
    if params.extra_columns == "ignore":
        return
    from pipeline.core.config import did_you_mean

    for column in header:
        if column and column not in known:
            problems.append(Problem(str(path), f"column '{column}' is not one the adapter reads"
                                    f"{did_you_mean(column, known)}; its columns: {', '.join(known)}{hint}; "
                                    "`corpus.extra_columns: ignore` accepts unread columns", 1))


def infer_ranges(labels: dict[str, list[Any]] | None, declared: dict[str, tuple[float, float]], file: str,
                 problems: list[Problem]) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """(the range of each usual target column without a declared one, one note per inference): the
    usual scale (USUAL_SCALES) holding most of the column's finite values, the narrowest on a tie. A
    column whose values fit no usual scale is a problem asking for `label_ranges`."""
    inferred: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    for column in USUAL_TARGETS:
        if not labels or column not in labels or column in declared:
            continue
        values = [v for v in labels[column] if isinstance(v, (int, float)) and math.isfinite(v)]
        if not values:
            continue
        inside = [sum(lo <= v <= hi for v in values) for lo, hi in USUAL_SCALES]
        best = max(range(len(USUAL_SCALES)), key=lambda i: (inside[i], -i))
        scales = ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in USUAL_SCALES)
        if 2 * inside[best] <= len(values):
            problems.append(Problem(file, f"{column}: values from {min(values):g} to {max(values):g} fit none of the "
                                    f"usual scales ({scales}); declare its range in corpus.label_ranges"))
            continue
        lo, hi = USUAL_SCALES[best]
        inferred[column] = (lo, hi)
        outside = len(values) - inside[best]
        where = f"{outside} of {len(values)} outside it, each a problem" if outside else f"all {len(values)} inside it"
        notes.append(f"{file}: {column}: no corpus.label_ranges entry; inferred the scale [{lo:g}, {hi:g}] from its "
                     f"values ({where}); declare corpus.label_ranges.{column} if that is not its scale")
    return inferred, notes


def _number(text: str | None) -> float | None:
    """None for an empty cell; a float (NaN/inf as written: the checks report them); ValueError otherwise."""
    if text is None or not text.strip():
        return None
    return float(text)


def _path(base: Path, text: str | None) -> str | None:
    if text is None:
        return None
    if not text.strip():
        return ""  # an empty path: a problem the checks name
    p = Path(text).expanduser()
    return os.path.abspath(p if p.is_absolute() else base / p)


def _duration(media: str, start: float | None, end: float | None, problems: list[Problem], where: tuple[str, int], clip_id: str) -> float:
    if start is not None and end is not None:
        return end - start
    if not media or not os.path.exists(media):
        return math.nan  # the checks report the absent file
    try:
        total = header_duration(media)
    except MediaError as e:
        problems.append(Problem(where[0], f"media {media}: {media_problem(Path(media), e)}", where[1], clip_id))
        return math.nan
    return total - (start or 0.0)


def read(params: Params) -> ManifestRead:
    root = Path(os.path.abspath(params.root_path()))
    if not root.is_dir():
        raise LayoutError(f"{root}: not found; expected the corpus folder holding "
                          f"{'label.csv and Raw/' if params.format == 'mmsa' else 'its manifest CSV'}")
    return _read_mmsa(params, root) if params.format == "mmsa" else _read_csv(params, root)


def _info(params: Params, clips: list[Clip], label_rate_hz: float | None) -> CorpusInfo:
    classes = list(params.classes) if params.classes is not None else sorted({c.label for c in clips if c.label is not None})
    return CorpusInfo(name=NAME, classes=classes, label_rate_hz=label_rate_hz,
                      params={"format": params.format, "csv": params.csv, "labels_csv": params.labels_csv})


def _read_csv(params: Params, root: Path) -> ManifestRead:
    path = root / (params.csv or "manifest.csv")
    header, rows = _rows(path, REQUIRED, "the clips' manifest CSV (clip_id, speaker, media_path, …)")
    base, file = path.parent, str(path)
    problems: list[Problem] = []
    _unknown_columns(params, path, header, REQUIRED + OPTIONAL, problems,
                     "" if params.labels_csv else " (dimensional targets such as arousal go to `labels_csv`)")
    clips: list[Clip] = []
    origin: dict[str, tuple[str, int | None]] = {}
    clip_origin: list[tuple[str, int | None]] = []
    for line, row in rows:
        clip_id = row.get("clip_id", "")
        if not clip_id:
            problems.append(Problem(file, "empty clip_id; expected the clip's id", line))
            continue
        if any(sep in clip_id for sep in ("/", "\\")) or clip_id in (".", ".."):
            problems.append(Problem(file, "clip_id is not safe as a file name (no / or \\)", line, clip_id))
        speaker = row.get("speaker", "")
        if not speaker:
            problems.append(Problem(file, "empty speaker; expected the clip's speaker (partitions are drawn by speaker)", line, clip_id))
        numbers: dict[str, float | None] = {}
        for key in ("start", "end", "duration"):
            try:
                numbers[key] = _number(row.get(key))
            except ValueError:
                problems.append(Problem(file, f"{key} '{row.get(key)}': expected a number of seconds or empty", line, clip_id))
                numbers[key] = None
        crop = None
        if row.get("crop"):
            try:
                crop = [float(x) for x in row["crop"].replace(",", " ").split()]
                if len(crop) != 4:
                    raise ValueError
            except ValueError:
                problems.append(Problem(file, f"crop '{row['crop']}': expected four numbers 'x0 y0 x1 y1'", line, clip_id))
                crop = None
        media = _path(base, row.get("media_path")) or ""
        audio = _path(base, row.get("audio_path") or None)
        duration = numbers["duration"]
        if duration is None:
            duration = _duration(media or audio or "", numbers["start"], numbers["end"], problems, (file, line), clip_id)
        clips.append(Clip(
            clip_id=clip_id, speaker=speaker or clip_id, media_path=media, duration=float(duration),
            partition=row.get("partition") or None, audio_path=audio, transcript=row.get("transcript") or None,
            label=row.get("label") or None, start=numbers["start"], end=numbers["end"], crop=crop,
            session=row.get("session") or None,
        ))
        origin.setdefault(clip_id, (file, line))
        clip_origin.append((file, line))

    labels, label_origin, notes = None, [], []
    ranges = dict(params.label_ranges)
    if params.labels_csv:
        labels, label_origin = _read_labels(root / params.labels_csv, problems)
        inferred, notes = infer_ranges(labels, ranges, str(root / params.labels_csv), problems)
        ranges |= inferred
    info = _info(params, clips, params.label_rate_hz)
    info.params["label_ranges"] = {k: list(v) for k, v in sorted(ranges.items())}
    return ManifestRead(
        info=info, clips=clips, labels=labels, problems=problems, label_ranges=ranges, origin=origin,
        clip_origin=clip_origin, label_origin=label_origin, notes=notes,
    )


def _read_labels(path: Path, problems: list[Problem]) -> tuple[dict[str, list[Any]], list[tuple[str, int | None]]]:
    header, rows = _rows(path, ("clip_id", "t"), "the labels CSV (clip_id, t, then one column per target)")
    targets = [h for h in header if h not in ("clip_id", "t") and h]
    labels: dict[str, list[Any]] = {"clip_id": [], "t": [], **{k: [] for k in targets}}
    where: list[tuple[str, int | None]] = []
    for line, row in rows:
        clip_id = row.get("clip_id", "")
        try:
            t = _number(row.get("t"))
        except ValueError:
            t = None
        if not clip_id or t is None:
            problems.append(Problem(str(path), f"expected a clip_id and a time t in seconds, got "
                                    f"'{clip_id}', '{row.get('t', '')}'", line, clip_id or None))
            continue
        values = {}
        for k in targets:
            try:
                values[k] = _number(row.get(k))
            except ValueError:
                problems.append(Problem(str(path), f"{k} '{row.get(k)}': expected a number or empty (not annotated)", line, clip_id))
                values[k] = None
        labels["clip_id"].append(clip_id)
        labels["t"].append(t)
        for k in targets:
            labels[k].append(values[k])
        where.append((str(path), line))
    return labels, where


def _read_mmsa(params: Params, root: Path) -> ManifestRead:
    path = root / (params.csv or "label.csv")
    header, rows = _rows(path, MMSA_REQUIRED, "MMSA's label.csv (video_id, clip_id, text, label, annotation, mode)")
    raw = root / "Raw"
    if not raw.is_dir():
        raise LayoutError(f"{raw}: not found; expected MMSA's Raw/<video_id>/<clip_id>.mp4")
    file = str(path)
    unimodal = {k: v for k, v in MMSA_UNIMODAL.items() if k in header}
    problems: list[Problem] = []
    _unknown_columns(params, path, header, MMSA_REQUIRED + MMSA_OPTIONAL, problems)
    clips: list[Clip] = []
    origin: dict[str, tuple[str, int | None]] = {}
    clip_origin: list[tuple[str, int | None]] = []
    labels: dict[str, list[Any]] = {"clip_id": [], "t": [], "sentiment": [], **{v: [] for v in unimodal.values()}}
    label_origin: list[tuple[str, int | None]] = []
    for line, row in rows:
        video, clip = row.get("video_id", ""), row.get("clip_id", "")
        if not video or not clip:
            problems.append(Problem(file, "empty video_id or clip_id", line))
            continue
        clip_id = f"{video}_{clip}"
        mode = row.get("mode", "")
        partition = MMSA_MODES.get(mode)
        if partition is None:
            problems.append(Problem(file, f"mode '{mode}': expected train, valid or test", line, clip_id))
        media = str(raw / video / f"{clip}.mp4")
        clips.append(Clip(
            clip_id=clip_id, speaker=video, media_path=media,
            duration=_duration(media, None, None, problems, (file, line), clip_id),
            partition=partition, transcript=row.get("text") or None, label=row.get("annotation") or None,
        ))
        origin.setdefault(clip_id, (file, line))
        clip_origin.append((file, line))
        values = {}
        for column, target in (("label", "sentiment"), *unimodal.items()):
            try:
                values[target] = _number(row.get(column))
            except ValueError:
                problems.append(Problem(file, f"{column} '{row.get(column)}': expected a number", line, clip_id))
                values[target] = None
        labels["clip_id"].append(clip_id)
        labels["t"].append(0.0)
        for k, v in values.items():
            labels[k].append(v)
        label_origin.append((file, line))
    ranges = {k: MMSA_RANGE for k in labels if k not in ("clip_id", "t")} | dict(params.label_ranges)
    return ManifestRead(
        info=_info(params, clips, None), clips=clips, labels=labels, problems=problems, label_ranges=ranges,
        origin=origin, clip_origin=clip_origin, label_origin=label_origin,
    )
