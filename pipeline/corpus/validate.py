"""The checks every corpus gets before anything is extracted from it.

`check(read)` returns the adapter's own problems followed by those every corpus can have:

    duplicate clip ids             one problem per occurrence, each naming the other origin(s)
    labels outside the classes     a clip's `label` not in `info.classes`
    partitions                     not one of train / devel / test
    media                          an empty media_path or audio_path; a listed file that is absent
    duration                       not a finite number > 0 (when the media is there)
    start / end                    negative, end ≤ start, end without start
    crop                           not four numbers in [0, 1] with x0 < x1 and y0 < y1
    continuous labels              non-finite, or outside `read.label_ranges[column]` (null is fine:
                                   not annotated); t < 0 or t > duration + half a label period; labels
                                   for a clip the manifest does not list

`empty_classes(classes, clips)` names the classes no clip is left with (a warning: a class is never
dropped silently, and never dropped from `classes` either). `split(read, problems)` leaves out every
clip a problem names (with its label rows), for `on_error: skip`.

A problem's file and row are the clip's origin (`read.origin`), or for a label row the labels file's
row when the adapter gives `read.label_origin` (one (file, row) per labels row), else the clip's origin.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any

from pipeline.corpus.adapter import CorpusRead, Problem
from pipeline.corpus.manifest import PARTITIONS, Clip

KEY_COLUMNS = ("clip_id", "t")


def label_columns(labels: dict[str, list[Any]] | None) -> list[str]:
    """The target columns of a labels table (every column but clip_id and t)."""
    return [k for k in (labels or {}) if k not in KEY_COLUMNS]


def _fmt(x: float) -> str:
    return f"{x:g}"


def check(read: CorpusRead, root: str | os.PathLike = ".") -> list[Problem]:
    """Every problem of `read` (the adapter's first), one `Problem` each. Relative media paths are
    resolved against `root` (the repository root)."""
    problems = list(read.problems)

    def where(clip_id: str) -> tuple[str, int | None]:
        return read.origin.get(clip_id, ("manifest", None))

    def add(clip: Clip | str, message: str, at: tuple[str, int | None] | None = None) -> None:
        clip_id = clip if isinstance(clip, str) else clip.clip_id
        file, row = at or where(clip_id)
        problems.append(Problem(file, message, row, clip_id))

    # duplicate ids: `origin` keeps one place per id, so the clips' own order says which occurrence
    seen: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(read.clips):
        seen[c.clip_id].append(i)
    places = _occurrence_origins(read)
    for clip_id, idx in seen.items():
        if len(idx) > 1:
            at = [places.get(i) or where(clip_id) for i in idx]
            for k, here in enumerate(at):
                others = ", ".join(_place(p) for j, p in enumerate(at) if j != k)
                add(clip_id, f"duplicate clip id (also at {others}); expected each clip id once", here)

    classes = list(read.info.classes)
    known = set(classes)
    absent_media: set[str] = set()
    exists_cache: dict[str, bool] = {}

    def exists(path: str) -> bool:
        if path not in exists_cache:
            p = path if os.path.isabs(path) else os.path.join(root, path)
            exists_cache[path] = os.path.exists(p)
        return exists_cache[path]

    absent_paths: dict[tuple[str, str], list[str]] = defaultdict(list)  # (column, path) -> its clips
    absent_at: dict[tuple[str, str], int] = {}  # (column, path) -> its problem's index
    named = {cid for p in read.problems for cid in p.clips()}  # the clips the adapter has a problem with
    for c in read.clips:
        if c.label is not None and c.label not in known:
            add(c, f"label '{c.label}' is not one of the classes ({', '.join(classes) or 'none'})")
        if c.partition is not None and c.partition not in PARTITIONS:
            add(c, f"partition '{c.partition}': expected one of {', '.join(PARTITIONS)} or empty")
        for what, path in (("media_path", c.media_path), ("audio_path", c.audio_path)):
            if path is None and what == "audio_path":
                continue
            if path is None or not str(path).strip():
                add(c, f"empty {what}; expected the path of the clip's {'media' if what == 'media_path' else 'audio'} file")
                absent_media.add(c.clip_id)
            elif not exists(str(path)):
                # one line per file (a dialog's utterances share one), in the place of its first clip
                if (what, str(path)) not in absent_paths:
                    add(c, f"{what} {path}: file not found")
                    absent_at[(what, str(path))] = len(problems) - 1
                absent_paths[(what, str(path))].append(c.clip_id)
                absent_media.add(c.clip_id)
        # a NaN duration of a clip the adapter already named (an unreadable file) is that problem, not another
        if c.clip_id not in absent_media and not (isinstance(c.duration, float) and math.isnan(c.duration)
                                                  and c.clip_id in named) and not (
                isinstance(c.duration, (int, float)) and math.isfinite(c.duration) and c.duration > 0):
            add(c, f"duration {c.duration!r}: expected a number of seconds > 0")
        if c.start is not None or c.end is not None:
            if c.start is None:
                add(c, f"end {_fmt(c.end)} without a start: expected both or neither")
            elif not math.isfinite(c.start) or c.start < 0:
                add(c, f"start {_fmt(c.start)}: expected a time ≥ 0 s")
            elif c.end is not None and not (math.isfinite(c.end) and c.end > c.start):
                add(c, f"end {_fmt(c.end)} ≤ start {_fmt(c.start)}: expected end > start")
        if c.crop is not None:
            crop = list(c.crop)
            ok = len(crop) == 4 and all(isinstance(x, (int, float)) and math.isfinite(x) and 0 <= x <= 1 for x in crop)
            if not ok or not (crop[0] < crop[2] and crop[1] < crop[3]):
                add(c, f"crop {' '.join(_fmt(x) if isinstance(x, (int, float)) else str(x) for x in crop)}: "
                       "expected x0 y0 x1 y1 as fractions of the frame in [0, 1] with x0 < x1 and y0 < y1")

    for key, ids in absent_paths.items():
        if len(ids) > 1:
            first = problems[absent_at[key]]
            listed = ", ".join(ids[:3]) + (", …" if len(ids) > 3 else "")
            problems[absent_at[key]] = Problem(first.file, f"{first.message} ({len(ids)} clips use it: {listed})",
                                               first.row, None, tuple(ids))
    problems += _label_problems(read, absent_media, where)
    return problems


def _occurrence_origins(read: CorpusRead) -> dict[int, tuple[str, int | None]]:
    """(file, row) of each clip by position, where the adapter records it (`clip_origin`)."""
    per_clip = getattr(read, "clip_origin", None)
    return dict(enumerate(per_clip)) if per_clip else {}


def _place(p: tuple[str, int | None]) -> str:
    return p[0] + (f":{p[1]}" if p[1] is not None else "")


def _label_problems(read: CorpusRead, absent_media: set[str], where) -> list[Problem]:
    labels = read.labels
    if not labels:
        return []
    out: list[Problem] = []
    clips = {c.clip_id: c for c in read.clips}
    row_origin = getattr(read, "label_origin", None)
    half_step = 0.5 / read.info.label_rate_hz if read.info.label_rate_hz else 0.0
    columns = label_columns(labels)
    unknown_reported: set[str] = set()
    ids, times = labels.get("clip_id", []), labels.get("t", [])
    for i, clip_id in enumerate(ids):
        at = row_origin[i] if row_origin else where(clip_id)

        def add(message: str) -> None:
            out.append(Problem(at[0], message, at[1], clip_id))

        clip = clips.get(clip_id)
        if clip is None:
            if row_origin or clip_id not in unknown_reported:
                add("labels for a clip the manifest does not list")
                unknown_reported.add(clip_id)
            continue
        t = times[i]
        if t is None or not isinstance(t, (int, float)) or not math.isfinite(t):
            add(f"label time {t!r}: expected a finite time in seconds")
        elif clip_id not in absent_media and (t < 0 or t > clip.duration + half_step + 1e-9):
            add(f"label at t={_fmt(t)} s is outside the clip (0 to {_fmt(clip.duration)} s"
                + (f" + half a label period, {_fmt(half_step)} s" if half_step else "") + ")")
        for col in columns:
            v = labels[col][i]
            if v is None:
                continue  # not annotated: fine
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                add(f"{col} {v!r} at t={_fmt(t) if isinstance(t, (int, float)) else t}: expected a finite number "
                    "or empty (not annotated)")
                continue
            lo_hi = read.label_ranges.get(col)
            if lo_hi is not None and not (lo_hi[0] <= v <= lo_hi[1]):
                add(f"{col} {_fmt(v)} at t={_fmt(t)}: expected a value in [{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]")
    return out


def empty_classes(classes: list[str], clips: list[Clip]) -> list[str]:
    """The classes of `classes` that no clip of `clips` has (in the classes' order)."""
    have = {c.label for c in clips}
    return [k for k in classes if k not in have]


def split(read: CorpusRead, problems: list[Problem]) -> tuple[list[Clip], dict[str, list[Any]] | None, set[str]]:
    """(clips left, their label rows, ids left out): every clip a problem names is left out, with all
    its occurrences and label rows."""
    bad = {cid for p in problems for cid in p.clips()}
    clips = [c for c in read.clips if c.clip_id not in bad]
    labels = read.labels
    if labels:
        keep_ids = {c.clip_id for c in clips}
        keep = [i for i, cid in enumerate(labels["clip_id"]) if cid in keep_ids]
        labels = {k: [col[i] for i in keep] for k, col in labels.items()}
    return clips, labels, bad & {c.clip_id for c in read.clips}
