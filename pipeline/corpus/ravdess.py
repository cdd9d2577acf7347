"""RAVDESS (Livingstone & Russo, 2018) as its Zenodo zips unpack → manifest rows.

Layout read (under `root`, the folder the zips were unpacked into):

    Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4   Video_Speech_Actor_XX.zip / Video_Song_Actor_XX.zip: full-AV (01)
                                        and video-only (02) clips
    Actor_XX/03-VV-EE-II-SS-RR-AA.wav   Audio_Speech_Actors_01-24.zip / Audio_Song_Actors_01-24.zip:
                                        audio-only (03) clips, in the same Actor_XX folders

The Actor_XX folders may also sit one level down (`<root>/<zip name>/Actor_XX/`, each zip unpacked into
its own folder). Identifiers: modality (01 full-AV, 02 video-only, 03 audio-only), vocal channel
(01 speech, 02 song), emotion (01 neutral … 08 surprised), intensity (01 normal, 02 strong),
statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"), repetition (01, 02),
actor (01–24; odd male, even female).

A clip is one file; its id the file's stem (unique: it holds modality and actor), its speaker the actor,
its transcript the statement, its label the emotion. Files of a modality or vocal channel not chosen are
skipped without a word; every other file left out is a `Problem` naming it. docs/corpora/ravdess.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from pipeline.corpus.adapter import CorpusOptions, CorpusRead, LayoutError, Problem
from pipeline.corpus.crema_d import header_duration, media_problem
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.media import MediaError

NAME = "ravdess"

# the emotion codes 01..08 in order
CLASSES = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
EMOTIONS = {f"{i:02d}": c for i, c in enumerate(CLASSES, 1)}
MODALITIES = {"01": "av", "02": "video", "03": "audio"}
EXTENSIONS = {"av": ".mp4", "video": ".mp4", "audio": ".wav"}
CHANNELS = {"01": "speech", "02": "song"}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS = {"01": 1, "02": 2}
# the song channel has neutral, calm, happy, sad, angry and fearful only
SONG_EMOTIONS = {"01", "02", "03", "04", "05", "06"}
NAME_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
ACTOR_DIR = re.compile(r"^Actor_(\d\d)$")


class Params(CorpusOptions):
    name: Literal["ravdess"] = "ravdess"
    modalities: list[Literal["av", "video", "audio"]] = Field(
        ["av"], min_length=1,
        description="av: full audio-video .mp4 (modality 01); video: video-only .mp4 (02, no sound); audio: audio-only .wav (03)",
    )
    vocal_channel: Literal["speech", "song", "both"] = Field("speech", description="speech (01), song (02) or both")
    merge_calm: bool = Field(False, description="label calm (02) as neutral: 7 classes instead of 8")

    @field_validator("modalities")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"modalities {v} name one twice")
        return v


def classes(params: Params) -> list[str]:
    return [c for c in CLASSES if not (params.merge_calm and c == "calm")]


def parse_name(stem: str) -> tuple[dict[str, str] | None, str | None]:
    """The seven identifiers of `MM-VV-EE-II-SS-RR-AA`, or (None, what is wrong with the name)."""
    m = NAME_RE.match(stem)
    if m is None:
        return None, f"name {stem!r} is not seven two-digit identifiers MM-VV-EE-II-SS-RR-AA"
    modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
    checks = [
        (modality, MODALITIES, "modality"), (channel, CHANNELS, "vocal channel"), (emotion, EMOTIONS, "emotion"),
        (intensity, INTENSITIES, "intensity"), (statement, STATEMENTS, "statement"), (repetition, REPETITIONS, "repetition"),
    ]
    for code, known, what in checks:
        if code not in known:
            return None, f"unknown {what} code {code!r} in {stem!r} (known: {' '.join(known)})"
    if not 1 <= int(actor) <= 24:
        return None, f"actor {actor!r} in {stem!r} is not 01-24"
    return {
        "modality": MODALITIES[modality], "channel": CHANNELS[channel], "emotion": emotion, "intensity": intensity,
        "statement": statement, "repetition": repetition, "actor": actor,
    }, None


def _actor_dirs(root: Path) -> list[Path]:
    """Actor_XX folders directly under root, or one level down (a zip unpacked into its own folder)."""
    found = []
    for top in sorted(os.scandir(root), key=lambda e: e.name):
        if not top.is_dir():
            continue
        if ACTOR_DIR.match(top.name):
            found.append(Path(top.path))
        else:
            found += [Path(e.path) for e in sorted(os.scandir(top.path), key=lambda e: e.name) if e.is_dir() and ACTOR_DIR.match(e.name)]
    return found


def read(params: Params) -> CorpusRead:
    root = Path(os.path.abspath(params.root_path()))
    if not root.is_dir():
        raise LayoutError(f"{root}: not found; expected the unpacked RAVDESS zips (Actor_01/ … Actor_24/)")
    dirs = _actor_dirs(root)
    if not dirs:
        raise LayoutError(
            f"{root}: no Actor_XX folder in it or one level down; expected the unpacked RAVDESS zips (Actor_01/ … Actor_24/)"
        )
    wanted_modalities = set(params.modalities)
    wanted_channels = {"speech", "song"} if params.vocal_channel == "both" else {params.vocal_channel}

    problems: list[Problem] = []
    clips: list[Clip] = []
    origin: dict[str, tuple[str, int | None]] = {}
    first: dict[str, Path] = {}
    for folder in dirs:
        folder_actor = ACTOR_DIR.match(folder.name).group(1)  # type: ignore[union-attr]
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            suffix = path.suffix.lower()
            if not entry.is_file() or suffix not in (".mp4", ".wav"):
                continue
            stem = path.stem
            m = NAME_RE.match(stem)
            if m and MODALITIES.get(m.group(1)) not in (None, *wanted_modalities):
                continue  # a modality not chosen: not read, not judged
            if m and CHANNELS.get(m.group(2)) not in (None, *wanted_channels):
                continue  # a vocal channel not chosen
            parts, why = parse_name(stem)
            if parts is None:
                problems.append(Problem(str(path), why or "malformed name", None, stem))
                continue
            if suffix != EXTENSIONS[parts["modality"]]:
                why = f"modality {parts['modality']} comes as {EXTENSIONS[parts['modality']]}, not {suffix}"
                problems.append(Problem(str(path), why, None, stem))
                continue
            if parts["actor"] != folder_actor:
                problems.append(Problem(str(path), f"actor {parts['actor']} in the name, but the folder is {folder.name}", None, stem))
                continue
            if parts["emotion"] == "01" and parts["intensity"] == "02":
                problems.append(Problem(str(path), "neutral at strong intensity: RAVDESS has no such condition", None, stem))
                continue
            if parts["channel"] == "song" and parts["emotion"] not in SONG_EMOTIONS:
                problems.append(Problem(str(path), f"{EMOTIONS[parts['emotion']]} song: RAVDESS's songs have no such emotion", None, stem))
                continue
            if stem in first:
                problems.append(Problem(str(path), f"the same clip as {first[stem]}; this copy is not read"))
                continue
            first[stem] = path
            try:
                duration = header_duration(path)
            except MediaError as e:
                problems.append(Problem(str(path), media_problem(path, e), None, stem))
                continue
            label = EMOTIONS[parts["emotion"]]
            if params.merge_calm and label == "calm":
                label = "neutral"
            clips.append(
                Clip(
                    clip_id=stem,
                    speaker=parts["actor"],
                    media_path=str(path),
                    duration=duration,
                    transcript=STATEMENTS[parts["statement"]],
                    label=label,
                )
            )
            origin[stem] = (str(path), None)

    info = CorpusInfo(name=NAME, classes=classes(params), params=params.model_dump())
    return CorpusRead(info=info, clips=clips, problems=problems, origin=origin)
