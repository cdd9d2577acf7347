"""CREMA-D (Cao et al., 2014) as its GitHub repository ships it → manifest rows.

Layout read (under `root`, the repository's checkout with its git-lfs files fetched):

    VideoFlash/<Actor>_<Sentence>_<Emotion>_<Level>.flv   the clips (VP6 + MP3 audio); or VideoMP4/*.mp4,
                                                          a re-mux the repository does not ship
    AudioWAV/<same name>.wav                              the audio as WAV, used as audio_path when present
    VideoDemographics.csv                                 ActorID, Age, Sex, Race, Ethnicity (always read)
    processedResults/summaryTable.csv                     the crowd's majority votes per clip (read only
                                                          for a perceived `label_source`)

A clip is one file of the video folder; its id is the file's stem (`1001_DFA_ANG_XX`), its speaker the
actor id, its transcript the sentence the code names, its label the intended emotion (the file name's)
or the crowd's vote for voice, face or both. Ties (votes such as `A:N`) are not a usable perceived
label: the clip is reported as a problem (and left out under `on_error: skip`). Every file left out is
a `Problem` naming it; the clips returned are all usable. docs/corpora/crema_d.md has the details.

Durations come from the container header (FLV's onMetaData, MP4's mvhd, a WAV's header), not from
opening every file with FFmpeg: 10,000 clips read in well under a second instead of ~25 s.
`header_duration` falls back to `pipeline.media.probe` where a header has no usable duration.
"""

from __future__ import annotations

import csv
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO, Literal

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

NAME = "crema_d"

# the corpus's six emotions, in the order of its codes (file name ANG DIS FEA HAP NEU SAD, votes A D F H N S)
CLASSES = ["angry", "disgust", "fearful", "happy", "neutral", "sad"]
EMOTIONS = dict(zip(["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"], CLASSES))
VOTES = dict(zip(["A", "D", "F", "H", "N", "S"], CLASSES))
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
VIDEO_DIRS = {"flv": ("VideoFlash", ".flv"), "mp4": ("VideoMP4", ".mp4")}
VOTE_COLUMNS = {"voice_vote": "VoiceVote", "face_vote": "FaceVote", "multimodal_vote": "MultiModalVote"}
DEMOGRAPHICS = "VideoDemographics.csv"
SUMMARY = Path("processedResults") / "summaryTable.csv"


class Params(CorpusOptions):
    name: Literal["crema_d"] = "crema_d"
    video: Literal["flv", "mp4", "auto"] = Field(
        "auto", description="flv: VideoFlash/*.flv (as shipped); mp4: VideoMP4/*.mp4 (a re-mux); auto: VideoFlash if present, else VideoMP4"
    )
    label_source: Literal["intended", "voice_vote", "face_vote", "multimodal_vote"] = Field(
        "intended",
        description="intended: the emotion the actor was asked for (file name); *_vote: the crowd's majority vote "
        "(processedResults/summaryTable.csv) for the voice alone, the face alone or both; a tie is a problem",
    )


# ---------------------------------------------------------------------------------------------------
# durations from container headers


def _flv_duration(f: BinaryIO) -> float | None:
    """`duration` of the onMetaData script tag that opens an FLV, or None."""
    f.seek(0)
    head = f.read(9)
    if len(head) < 9:
        return None
    f.seek(struct.unpack(">I", head[5:9])[0] + 4)  # the header, then PreviousTagSize0
    tag = f.read(11)
    if len(tag) < 11 or tag[0] != 18:  # 18: script data
        return None
    data = f.read(min(int.from_bytes(tag[1:4], "big"), 1 << 16))
    if not data.startswith(b"\x02\x00\x0aonMetaData"):
        return None
    # an ECMA array of (u16 length, key, AMF0 value); the key 'duration' with a number (marker 0)
    i = data.find(b"\x00\x08duration\x00")
    if i < 0 or i + 19 > len(data):
        return None
    return struct.unpack(">d", data[i + 11 : i + 19])[0]


def _boxes(f: BinaryIO, start: int, end: int):
    """(type, payload start, box end) of the ISO-BMFF boxes in [start, end)."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, pos + size
        pos += size


def _mp4_duration(f: BinaryIO) -> float | None:
    """The movie header's (moov/mvhd) duration / timescale, or None."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    for kind, payload, box_end in _boxes(f, 0, end):
        if kind != b"moov":
            continue
        for child, cpayload, _ in _boxes(f, payload, box_end):
            if child == b"mvhd":
                f.seek(cpayload)
                version = f.read(4)[0]
                if version == 1:
                    f.seek(16, os.SEEK_CUR)
                    timescale, duration = struct.unpack(">IQ", f.read(12))
                    unknown = duration == 0xFFFFFFFFFFFFFFFF
                else:
                    f.seek(8, os.SEEK_CUR)
                    timescale, duration = struct.unpack(">II", f.read(8))
                    unknown = duration == 0xFFFFFFFF
                return duration / timescale if timescale and not unknown else None
        return None
    return None


def _wav_duration(path: Path) -> float | None:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames / info.samplerate if info.samplerate else None


def header_duration(path: str | Path) -> float:
    """Seconds of media in `path`, read from its container header (FLV, MP4/MOV, WAV) where it has one,
    else with `pipeline.media.probe`. MediaError naming the file if it is unreadable, empty, a git-lfs
    pointer (a repository fetched without `git lfs pull`) or holds no positive duration."""
    path = Path(path)
    duration: float | None = None
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if not head:
                raise MediaError(f"{path}: file is empty")
            if head.startswith(b"version https://git-lfs"):
                raise MediaError(f"{path}: a git-lfs pointer, not the media (fetch the files with `git lfs pull`)")
            try:
                if head[:3] == b"FLV":
                    duration = _flv_duration(f)
                elif head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                    duration = _mp4_duration(f)
                elif head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                    duration = _wav_duration(path)
            except (struct.error, IndexError, ValueError, RuntimeError):
                duration = None  # a header we cannot parse: let FFmpeg judge the file
    except OSError as e:
        raise MediaError(f"{path}: cannot read ({e.strerror or e})") from None
    if duration is None or not math.isfinite(duration) or duration <= 0:
        duration = probe(path).duration
    if not math.isfinite(duration) or duration <= 0:
        raise MediaError(f"{path}: holds no media (duration {duration})")
    return float(duration)


def media_problem(path: Path, e: MediaError) -> str:
    """A MediaError's message without the path it starts with (a Problem names the file already)."""
    msg = str(e)
    return msg[len(f"{path}: ") :] if msg.startswith(f"{path}: ") else msg


# ---------------------------------------------------------------------------------------------------
# the tables


def _read_csv(path: Path, needed: list[str], what: str) -> tuple[dict[str, str], list[tuple[int, dict[str, str]]]]:
    """({wanted column: actual header}, [(line number, row)]) of a CSV whose header must name `needed`
    (matched ignoring case: the README spells summaryTable's `fileName`, the file `FileName`)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            by_lower = {h.strip().lower(): h for h in header if h is not None}
            missing = [c for c in needed if c.lower() not in by_lower]
            if missing:
                raise LayoutError(
                    f"{path}: no column {', '.join(missing)} in its header {header}; expected {what}"
                )
            columns = {c: by_lower[c.lower()] for c in needed}
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LayoutError(f"{path}: unreadable ({e}); expected {what}") from None
    return columns, rows


def _demographics(path: Path, problems: list[Problem]) -> dict[str, dict[str, str]]:
    cols, rows = _read_csv(path, ["ActorID", "Age", "Sex", "Race", "Ethnicity"], "CREMA-D's actor demographics")
    actors: dict[str, dict[str, str]] = {}
    for line, row in rows:
        actor = (row.get(cols["ActorID"]) or "").strip()
        if not (len(actor) == 4 and actor.isdigit()):
            problems.append(Problem(str(path), f"ActorID {actor!r} is not a 4-digit actor id", line))
        elif actor in actors:
            problems.append(Problem(str(path), f"actor {actor} is listed twice", line))
        else:
            actors[actor] = {k.lower(): (row.get(v) or "").strip() for k, v in cols.items() if k != "ActorID"}
    return actors


def _votes(path: Path, column: str, problems: list[Problem]) -> dict[str, tuple[int, str]]:
    """{file name: (line, vote)} of summaryTable.csv's `column`."""
    cols, rows = _read_csv(path, ["FileName", column], "CREMA-D's crowd-sourced votes (processedResults/summaryTable.csv)")
    votes: dict[str, tuple[int, str]] = {}
    for line, row in rows:
        name = (row.get(cols["FileName"]) or "").strip()
        if not name:
            problems.append(Problem(str(path), "row names no file", line))
        elif name in votes:
            problems.append(Problem(str(path), f"{name} has a second row (first at line {votes[name][0]})", line, name))
        else:
            votes[name] = (line, (row.get(cols[column]) or "").strip())
    return votes


def _perceived(vote: str, column: str) -> tuple[str | None, str | None]:
    """(class, None) or (None, why the vote is not a usable label)."""
    if not vote:
        return None, f"{column} is empty (no ratings)"
    if ":" in vote:
        return None, f"{column} {vote!r} is a tie between {', '.join(vote.split(':'))}: a tie is not a usable perceived label"
    if vote not in VOTES:
        return None, f"{column} {vote!r} is not one of {' '.join(VOTES)}"
    return VOTES[vote], None


def parse_name(stem: str) -> tuple[dict[str, str] | None, str | None]:
    """The parts of `Actor_Sentence_Emotion_Level`, or (None, what is wrong with the name)."""
    parts = stem.split("_")
    if len(parts) != 4:
        return None, f"name {stem!r} is not <ActorID>_<Sentence>_<Emotion>_<Level>"
    actor, sentence, emotion, level = parts
    if not (len(actor) == 4 and actor.isdigit()):
        return None, f"actor {actor!r} in {stem!r} is not a 4-digit id"
    if sentence not in SENTENCES:
        return None, f"unknown sentence code {sentence!r} (known: {' '.join(SENTENCES)})"
    if emotion not in EMOTIONS:
        return None, f"unknown emotion code {emotion!r} (known: {' '.join(EMOTIONS)})"
    if level not in LEVELS:
        return None, f"unknown emotion level {level!r} (known: {' '.join(LEVELS)})"
    return {"actor": actor, "sentence": sentence, "emotion": emotion, "level": level}, None


def _video_dir(root: Path, video: str) -> tuple[Path, str]:
    if video == "auto":
        for choice in ("flv", "mp4"):
            folder, ext = VIDEO_DIRS[choice]
            if (root / folder).is_dir():
                return root / folder, ext
        raise LayoutError(f"{root}: neither VideoFlash/ nor VideoMP4/ found; expected CREMA-D's clips (VideoFlash/*.flv)")
    folder, ext = VIDEO_DIRS[video]
    path = root / folder
    if not path.is_dir():
        raise LayoutError(f"{path}: not found; expected CREMA-D's clips as {folder}/*{ext} (video: {video})")
    return path, ext


def read(params: Params) -> CorpusRead:
    root = Path(os.path.abspath(params.root_path()))
    if not root.is_dir():
        raise LayoutError(f"{root}: not found; expected the CREMA-D repository (VideoFlash/, AudioWAV/, VideoDemographics.csv)")
    video_dir, ext = _video_dir(root, params.video)
    problems: list[Problem] = []
    demo_path = require_path(root / DEMOGRAPHICS, "CREMA-D's actor demographics (ActorID, Age, Sex, Race, Ethnicity)")
    actors = _demographics(demo_path, problems)
    votes: dict[str, tuple[int, str]] | None = None
    summary_path = root / SUMMARY
    column = VOTE_COLUMNS.get(params.label_source)
    if column is not None:
        require_path(summary_path, f"CREMA-D's crowd-sourced votes (label_source: {params.label_source})")
        votes = _votes(summary_path, column, problems)

    audio_dir = root / "AudioWAV"
    wavs = {e.name for e in os.scandir(audio_dir) if e.is_file()} if audio_dir.is_dir() else set()
    media = sorted(
        (Path(e.path) for e in os.scandir(video_dir) if e.is_file() and e.name.lower().endswith(ext)),
        key=lambda p: p.name,
    )

    clips: list[Clip] = []
    origin: dict[str, tuple[str, int | None]] = {}
    seen: set[str] = set()
    for path in media:
        stem = path.name[: -len(ext)]
        seen.add(stem)
        parts, why = parse_name(stem)
        if parts is None:
            problems.append(Problem(str(path), why or "malformed name", None, stem))
            continue
        if parts["actor"] not in actors:
            problems.append(Problem(str(path), f"actor {parts['actor']} is not listed in {demo_path}", None, stem))
            continue
        row: int | None = None
        if votes is not None:
            if stem not in votes:
                why = f"no row for {stem} in {summary_path} (label_source: {params.label_source})"
                problems.append(Problem(str(path), why, None, stem))
                continue
            row, vote = votes[stem]
            label, why = _perceived(vote, column or "")
            if label is None:
                problems.append(Problem(str(summary_path), why or "no label", row, stem))
                continue
        else:
            label = EMOTIONS[parts["emotion"]]
        try:
            duration = header_duration(path)
        except MediaError as e:
            problems.append(Problem(str(path), media_problem(path, e), None, stem))
            continue
        wav = f"{stem}.wav"
        clips.append(
            Clip(
                clip_id=stem,
                speaker=parts["actor"],
                media_path=str(path),
                duration=duration,
                audio_path=str(audio_dir / wav) if wav in wavs else None,
                transcript=SENTENCES[parts["sentence"]],
                label=label,
            )
        )
        origin[stem] = (str(summary_path), row) if row is not None else (str(path), None)

    if votes is not None:
        for name, (line, _) in votes.items():
            if name not in seen:
                problems.append(Problem(str(summary_path), f"lists {name}, but {video_dir / (name + ext)} is absent", line, name))

    info = CorpusInfo(name=NAME, classes=list(CLASSES), params=params.model_dump())
    return CorpusRead(info=info, clips=clips, problems=problems, origin=origin)
