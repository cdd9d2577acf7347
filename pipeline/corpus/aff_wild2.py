"""Aff-Wild2 as the ABAW challenges ship it: YouTube videos with per-frame valence and arousal (002).

`root` is the folder the licensee unpacked the videos and the annotations into; read here
(docs/corpora/aff_wild2.md has the sources):

    <videos>/**/<name>.mp4 | .avi              the videos (`videos`: folders searched recursively,
                                               e.g. videos/ or batch1/ batch2/)
    <annotations>/Train_Set/<name>.txt         per-frame valence/arousal of the train set
    <annotations>/Validation_Set/<name>.txt    ... of the validation set (-> partition devel)
        first line "valence,arousal", then one line "v,a" per video frame; -5 marks a frame that is
        not annotated. A video with two annotated persons has two files, <name>_left.txt and
        <name>_right.txt, both for the video <name>.

A clip is an annotation file: clip_id = its name (with _left/_right), speaker = the video name,
partition = train | devel (the official split; the test set has no public labels and is not read),
media_path = the video, crop = the left or right half of the frame for the _left/_right files.
Labels: one row per annotation line (= per video frame), t = (frame index + 0.5) / fps with fps from
probing the video; a -5 value is null (a missing label, never a value). Videos are whole clips here:
the segmentation cuts them into samples.

Videos without a VA annotation file (annotated for other ABAW tasks only, or in the VA test set) are
not clips: `unlabelled_videos: leave_out` lists them in the manifest's params, `problem` reports each.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.corpus.adapter import (
    CorpusOptions,
    CorpusRead,
    LayoutError,
    Problem,
    require_path,
)
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.media import MediaError, probe

NAME = "aff_wild2"
VIDEO_SUFFIXES = (".mp4", ".avi")
SETS = (("Train_Set", "train"), ("Validation_Set", "devel"))
UNANNOTATED = -5.0
LABEL_RANGE = (-1.0, 1.0)
CROPS = {"_left": [0.0, 0.0, 0.5, 1.0], "_right": [0.5, 0.0, 1.0, 1.0]}
HEADER = ["valence", "arousal"]


class Params(CorpusOptions):
    """Aff-Wild2 (ABAW VA Estimation Challenge): videos + per-frame valence/arousal annotation files."""

    name: Literal["aff_wild2"]
    videos: list[str] = Field(
        default_factory=lambda: ["videos"], min_length=1,
        description="folders of the videos, relative to root, searched recursively for .mp4/.avi "
        "(e.g. [batch1, batch2] as the original distribution unpacks)",
    )
    annotations: str | None = Field(
        None, min_length=1,
        description="the VA_Estimation_Challenge folder, relative to root; null: annotations/VA_Estimation_Challenge "
        "or <any folder>/VA_Estimation_Challenge (e.g. '6th ABAW Annotations/')",
    )
    unlabelled_videos: Literal["leave_out", "problem"] = Field(
        "leave_out",
        description="videos without a VA annotation file: leave_out (listed in the manifest params) or problem",
    )


# ----------------------------------------------------------------------------------------------


def read(params: Params) -> CorpusRead:
    root = params.root_path()
    require_path(root, "the unpacked Aff-Wild2 videos and ABAW annotations")
    va_dir = _annotations_dir(root, params.annotations)
    set_dirs = [(require_path(va_dir / folder, f"the {partition} annotation files (<video>.txt)"), partition)
                for folder, partition in SETS]
    problems: list[Problem] = []
    videos = _index_videos(root, params.videos, problems)

    clips: list[Clip] = []
    labels: dict[str, list[Any]] = {"clip_id": [], "t": [], "arousal": [], "valence": []}
    origin: dict[str, tuple[str, int | None]] = {}
    used: set[str] = set()
    for folder, partition in set_dirs:
        for path in sorted(folder.glob("*.txt")):
            clip_id = path.stem
            if clip_id in origin:
                problems.append(Problem(str(path), f"annotated again (also {origin[clip_id][0]})", None, clip_id))
                continue
            video_name, crop = _video_name(clip_id)
            video = videos.get(video_name)
            if video is None:
                problems.append(Problem(str(path), f"no video '{video_name}' (.mp4 or .avi) in "
                                        f"{', '.join(params.videos)}", None, clip_id))
                continue
            used.add(video_name)
            try:
                info = probe(video)
            except MediaError as e:
                problems.append(Problem(str(video), f"cannot probe the video ({e})", None, clip_id))
                continue
            if not info.has_video or not info.fps or info.fps <= 0 or info.duration <= 0:
                problems.append(Problem(str(video), "no video stream with a frame rate and a duration", None, clip_id))
                continue
            origin[clip_id] = (str(path), None)
            rows = _read_annotation(path, clip_id, info.fps, info.duration, problems)
            for t, valence, arousal in rows:
                labels["clip_id"].append(clip_id)
                labels["t"].append(t)
                labels["arousal"].append(arousal)
                labels["valence"].append(valence)
            clips.append(Clip(clip_id=clip_id, speaker=video_name, media_path=str(video), duration=info.duration,
                              partition=partition, crop=crop))

    unlabelled = sorted(name for name in videos if name not in used)
    if params.unlabelled_videos == "problem":
        for name in unlabelled:
            problems.append(Problem(str(videos[name]), f"no VA annotation file ({va_dir}/Train_Set or Validation_Set "
                                    f"/{name}.txt, _left/_right)", None, name))

    corpus = CorpusInfo(
        name=NAME,
        classes=[],
        label_rate_hz=None,  # the frame rate of each video
        params={
            **params.model_dump(mode="json"),
            "annotations_dir": str(va_dir),
            "videos_without_va_annotation": unlabelled,
        },
    )
    return CorpusRead(info=corpus, clips=clips, labels=labels, problems=problems,
                      label_ranges={"arousal": LABEL_RANGE, "valence": LABEL_RANGE}, origin=origin)


# ----------------------------------------------------------------------------------------------


def _annotations_dir(root: Path, rel: str | None) -> Path:
    if rel is not None:
        path = Path(rel).expanduser()
        return require_path(path if path.is_absolute() else root / path,
                            "the VA_Estimation_Challenge folder (Train_Set/, Validation_Set/)")
    default = root / "annotations" / "VA_Estimation_Challenge"
    if default.is_dir():
        return default
    found = sorted(p for p in root.glob("*/VA_Estimation_Challenge") if p.is_dir())
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise LayoutError(f"{root}: several VA_Estimation_Challenge folders ({', '.join(str(p) for p in found)}); "
                          f"choose one with aff_wild2.annotations")
    raise LayoutError(f"{default}: not found (nor <folder>/VA_Estimation_Challenge under {root}); expected the ABAW "
                      f"VA annotations, Train_Set/ and Validation_Set/ of <video>.txt")


def _index_videos(root: Path, folders: list[str], problems: list[Problem]) -> dict[str, Path]:
    videos: dict[str, Path] = {}
    for rel in folders:
        path = Path(rel).expanduser()
        folder = require_path(path if path.is_absolute() else root / path, "the Aff-Wild2 videos (.mp4, .avi)")
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() not in VIDEO_SUFFIXES or not p.is_file():
                continue
            if p.stem in videos:
                problems.append(Problem(str(p), f"a second video named '{p.stem}' (using {videos[p.stem]})", None, p.stem))
                continue
            videos[p.stem] = p
    return videos


def _video_name(clip_id: str) -> tuple[str, list[float] | None]:
    for suffix, crop in CROPS.items():
        if clip_id.endswith(suffix):
            return clip_id[: -len(suffix)], list(crop)
    return clip_id, None


def _value(text: str) -> float | None:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return None if value == UNANNOTATED else value


def _read_annotation(path: Path, clip_id: str, fps: float, duration: float,
                     problems: list[Problem]) -> list[tuple[float, float | None, float | None]]:
    """(t, valence, arousal) per frame line; [] with a Problem where the file does not parse."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), f"unreadable annotation file ({e})", None, clip_id))
        return []
    if not lines or [c.strip().lower() for c in lines[0].split(",")] != HEADER:
        problems.append(Problem(str(path), f"first line {lines[0] if lines else ''!r}, expected 'valence,arousal'",
                                1, clip_id))
        return []
    rows: list[tuple[float, float | None, float | None]] = []
    last_t = duration + 1.0 / fps  # one frame of slack for a container's rounded duration
    for line, text in enumerate(lines[1:], start=2):
        if not text.strip():
            if any(t.strip() for t in lines[line:]):
                problems.append(Problem(str(path), "empty line before the last frame", line, clip_id))
                return []
            break
        cells = text.split(",")
        try:
            if len(cells) != 2:
                raise ValueError(text)
            valence, arousal = _value(cells[0]), _value(cells[1])
        except ValueError:
            problems.append(Problem(str(path), f"expected 'valence,arousal' numbers, got {text!r}", line, clip_id))
            return []
        frame = line - 2
        t = (frame + 0.5) / fps
        if t > last_t:
            n = len(lines) - 1
            problems.append(Problem(str(path), f"{n} frame lines, the video has about {round(duration * fps)} frames "
                                    f"({duration:.3f} s at {fps:g} fps): the lines from here on are past its end",
                                    line, clip_id))
            break
        bad = [(name, v) for name, v in (("valence", valence), ("arousal", arousal))
               if v is not None and not (LABEL_RANGE[0] <= v <= LABEL_RANGE[1])]
        for name, v in bad:
            problems.append(Problem(str(path), f"{name} {v:g} outside [-1, 1] (and not -5, the unannotated mark)",
                                    line, clip_id))
        if bad:
            valence = None if ("valence", valence) in bad else valence
            arousal = None if ("arousal", arousal) in bad else arousal
        rows.append((t, valence, arousal))
    return rows
