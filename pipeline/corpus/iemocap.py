"""IEMOCAP (Busso et al. 2008) as USC SAIL ships it (`IEMOCAP_full_release/`) → the manifest contract.

Layout read (`root` = the folder holding Session1 … Session5):

    Session<k>/dialog/EmoEvaluation/<dialog>.txt        one block per evaluated utterance:
        [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
        followed by the raters' lines (C-E2: …, A-E3: …) which are not read; the bracketed triple
        is the consensus [valence, activation, dominance] on 1–5
    Session<k>/dialog/avi/DivX/<dialog>.avi             the dyadic video of the whole dialog
    Session<k>/sentences/wav/<dialog>/<utterance>.wav   the utterance's audio (one file per utterance)
    Session<k>/dialog/transcriptions/<dialog>.txt       lines `Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.`

Only the EmoEvaluation folders are required (`LayoutError` when a session has none, or there is no
session at all); a missing AVI, WAV or a bad line is a `Problem` of that utterance.

Every evaluated utterance becomes one clip:

    clip_id     the utterance id (Ses01F_impro01_F000)
    media_path  the dialog's AVI; start/end = the utterance's [start - end] in seconds into that AVI
    audio_path  the utterance WAV
    duration    end - start
    speaker     session + the utterance speaker's gender, from the id's last field (Ses01F_…_M003 → Ses01M)
    session     the folder (Session1 … Session5)
    crop        the speaker's half of the frame (option `crop: auto`), see below
    transcript  the transcription line with bracketed noise tokens ([LAUGHTER], [BREATHING],
                [GARBAGE], …) removed (003 §5.1); null when there is no line or nothing is left

THE WINDOW RULE (what the extractors implement): `start`/`end` are a window of `media_path`. When
`audio_path` is a separate file (here: the per-utterance WAV, cut by the corpus authors to the same
turn), the audio is that WHOLE file; the window does not apply to it. Word, label and extractor row
times count from the clip's start, i.e. from 0 of the utterance WAV. A clip without `audio_path`
would take its audio from the same window of `media_path`.

CROP: each dialog AVI shows both actors side by side. The actor whose gender is in the dialog name
(the F in Ses01F_impro01) sits in the LEFT half, the other actor in the RIGHT half; so an utterance by
that actor gets crop (0, 0, 0.5, 1), one by the other actor (0.5, 0, 1, 1). Source: two independent
third-party IEMOCAP video preprocessors (IoannisKansizoglou/Iemocap-preprocess extractionmapCreator.py,
"if fileNAME[5] == 'F': female speaker is on the left side", and an EmoBox-based chunking script
cropping x 0–360 / 360–720 of the 720×480 frame by the same rule); the corpus documentation we could
read does not state it. `crop: none` leaves crop null (whole frame).

Labels: the categorical code of the EmoEvaluation line. `classes: four` (default, 003 §5.1):
neutral, happy, angry, sad, with excited (exc) merged into happy; fru, sur, fea, dis, oth and xxx (no
majority) are left out and counted in CorpusInfo.params["left_out"] (not problems). `classes: all`:
neutral, happy, angry, sad, excited, frustrated, surprised, fearful, disgusted, other (no merging);
only xxx is left out. The consensus valence/activation/dominance go to CorpusRead.labels as one row
per utterance at t = 0 (arousal = activation), declared range [0.5, 5.5]: the real files' consensus
values (rated on 1–5 scales) run from 0.5 to 5.5.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.corpus.adapter import (
    CorpusOptions,
    CorpusRead,
    LayoutError,
    Problem,
    read_lines,
    utterance_labels,
)
from pipeline.corpus.manifest import Clip, CorpusInfo
from pipeline.media import MediaError, probe

NAME = "iemocap"

# the EmoEvaluation codes → class names
CODES = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
    "sur": "surprised",
    "fea": "fearful",
    "dis": "disgusted",
    "oth": "other",
}
NO_MAJORITY = "xxx"  # the evaluators did not agree: never a class
FOUR = ["neutral", "happy", "angry", "sad"]
ALL = ["neutral", "happy", "angry", "sad", "excited", "frustrated", "surprised", "fearful", "disgusted", "other"]

LEFT_HALF = [0.0, 0.0, 0.5, 1.0]
RIGHT_HALF = [0.5, 0.0, 1.0, 1.0]
# The consensus valence/activation/dominance: rated on 1–5 scales, but the released consensus values
# (EmoEvaluation, all five sessions) run from 0.5 to 5.5 — 5 utterances of the 5,531 four-class ones lie
# outside [1, 5]; the declared range is the one the real files hold, so none of them is a problem.
SCALE = (0.5, 5.5)
WINDOW_SLACK_S = 0.1  # an utterance may end this much after the AVI's last frame (rounding of the times)

_NUM = r"(\d+(?:\.\d*)?)"
HEAD = re.compile(
    rf"^\[\s*{_NUM}\s*-\s*{_NUM}\s*\]\s+(\S+)\s+(\S+)\s+\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]\s*$"
)
UTTERANCE = re.compile(r"^(Ses(\d\d)([FM])_\w+?)_([FM])[X\d]{2}\d$")
TRANSCRIPT = re.compile(rf"^(\S+)\s+\[\s*{_NUM}\s*-\s*{_NUM}\s*\]\s*:\s?(.*)$")
NOISE = re.compile(r"\[[A-Za-z_]+\]")  # [LAUGHTER], [BREATHING], [GARBAGE], [LIPSMACK], …
SESSION_DIR = re.compile(r"^Session(\d+)$")


class Params(CorpusOptions):
    name: Literal["iemocap"] = "iemocap"
    classes: Literal["four", "all"] = Field(
        "four", description="four: neutral, happy(+excited), angry, sad (003 §5.1); all: the ten categorical labels"
    )
    crop: Literal["auto", "none"] = Field(
        "auto", description="auto: the speaker's half of the dyadic frame; none: the whole frame"
    )


def clean_transcript(text: str) -> str | None:
    """The words of a transcription line with the bracketed noise tokens removed; None if none left."""
    words = " ".join(NOISE.sub(" ", text).split())
    return words or None


def read_transcripts(path: Path) -> dict[str, str | None]:
    """{utterance id: cleaned text} of a dialog's transcription file; lines of other forms are skipped."""
    out: dict[str, str | None] = {}
    if not path.is_file():
        return out
    for line in read_lines(path):
        m = TRANSCRIPT.match(line.strip())
        if m:
            out[m.group(1)] = clean_transcript(m.group(4))
    return out


def sessions(root: Path) -> list[tuple[int, Path]]:
    found = sorted(
        (int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := SESSION_DIR.match(p.name))
    )
    if not found:
        raise LayoutError(f"{root}: no Session1 … Session5 folders; expected the IEMOCAP release (IEMOCAP_full_release)")
    return found


def read(params: Params) -> CorpusRead:
    root = params.root_path().resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: not found; expected the IEMOCAP release folder holding Session1 … Session5")
    classes = FOUR if params.classes == "four" else ALL

    clips: list[Clip] = []
    problems: list[Problem] = []
    origin: dict[str, tuple[str, int | None]] = {}
    dims: dict[str, dict[str, float]] = {}
    left_out: Counter[str] = Counter()
    no_transcript = 0
    seen: dict[str, tuple[str, int]] = {}
    avi_durations: dict[Path, float | str] = {}  # duration, or why the AVI is unusable
    unusable: dict[Path, tuple[str, int, str, list[str]]] = {}  # AVI -> (first file, row, why, its utterances)

    for number, session_dir in sessions(root):
        emo_dir = session_dir / "dialog" / "EmoEvaluation"
        if not emo_dir.is_dir():
            raise LayoutError(
                f"{emo_dir}: not found; expected the session's EmoEvaluation folder (one <dialog>.txt per dialog)"
            )
        session = session_dir.name
        for emo_file in sorted(p for p in emo_dir.glob("*.txt") if p.is_file() and not p.name.startswith(".")):
            dialog = emo_file.stem
            avi = session_dir / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            transcripts = read_transcripts(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt")
            where = str(emo_file)
            for row, raw in enumerate(read_lines(emo_file), start=1):
                line = raw.strip()
                if not line.startswith("["):
                    continue  # header (%), blank, the raters' C-/A- lines
                m = HEAD.match(line)
                if not m:
                    problems.append(Problem(where, f"malformed utterance line {line!r}; expected "
                                            "'[start - end]<TAB>utterance<TAB>code<TAB>[V, A, D]'", row))
                    continue
                start, end = float(m.group(1)), float(m.group(2))
                utt, code = m.group(3), m.group(4).lower()
                val, act, dom = float(m.group(5)), float(m.group(6)), float(m.group(7))
                um = UTTERANCE.match(utt)
                if not um:
                    problems.append(Problem(where, f"utterance id {utt!r} is not of the form Ses01F_<dialog>_F000", row))
                    continue
                if um.group(1) != dialog:
                    problems.append(Problem(where, f"utterance {utt} belongs to dialog {um.group(1)}, not {dialog}", row, utt))
                    continue
                if int(um.group(2)) != number:
                    problems.append(Problem(where, f"utterance {utt} is of session {int(um.group(2))}, found in {session}", row, utt))
                    continue
                if code == NO_MAJORITY:
                    left_out[code] += 1
                    continue
                if code not in CODES:
                    problems.append(Problem(where, f"unknown label code {code!r}; known: {', '.join([*CODES, NO_MAJORITY])}", row, utt))
                    continue
                label = CODES[code]
                if params.classes == "four":
                    if code == "exc":
                        label = "happy"
                    if label not in FOUR:
                        left_out[code] += 1
                        continue
                if utt in seen:
                    f0, r0 = seen[utt]
                    problems.append(Problem(where, f"utterance {utt} listed again (first at {f0}:{r0}); the later one is ignored", row, utt))
                    continue
                seen[utt] = (where, row)
                if not end > start:
                    problems.append(Problem(where, f"empty or reversed window [{start} - {end}]", row, utt))

                speaker_gender = um.group(4)
                wav = session_dir / "sentences" / "wav" / dialog / f"{utt}.wav"
                if not wav.is_file():
                    problems.append(Problem(where, f"utterance WAV not found: {wav}", row, utt))
                if avi.is_file():  # an absent one: the checks name it once for all its utterances
                    if avi not in avi_durations:
                        try:
                            avi_durations[avi] = probe(avi).duration
                        except MediaError as e:
                            avi_durations[avi] = str(e)
                    d = avi_durations[avi]
                    if isinstance(d, str):  # one line per video, after the loop
                        unusable.setdefault(avi, (where, row, d, []))[3].append(utt)
                    elif end > d + WINDOW_SLACK_S:
                        problems.append(Problem(where, f"window [{start} - {end}] ends after the video {avi} ({d:.3f} s)", row, utt))
                transcript = transcripts.get(utt)
                if transcript is None:
                    no_transcript += 1
                crop = None
                if params.crop == "auto":
                    crop = list(LEFT_HALF if speaker_gender == um.group(3) else RIGHT_HALF)
                clips.append(
                    Clip(
                        clip_id=utt,
                        speaker=f"Ses{um.group(2)}{speaker_gender}",
                        media_path=str(avi),
                        audio_path=str(wav) if wav.is_file() else None,
                        duration=max(end - start, 0.0),
                        transcript=transcript,
                        label=label,
                        start=start,
                        end=end,
                        crop=crop,
                        session=session,
                    )
                )
                origin[utt] = (where, row)
                dims[utt] = {"arousal": act, "valence": val, "dominance": dom}

    for avi, (where, row, why, utts) in unusable.items():
        problems.append(Problem(where, f"dialog video unusable ({len(utts)} utterance{'s' * (len(utts) != 1)}): {why}",
                                row, None, tuple(utts)))
    labels = utterance_labels(clips, dims)

    info = CorpusInfo(
        name=NAME,
        classes=list(classes),
        label_rate_hz=None,
        params={
            **params.model_dump(),
            "left_out": dict(sorted(left_out.items())),
            "no_transcript": no_transcript,
        },
    )
    return CorpusRead(
        info=info,
        clips=clips,
        labels=labels,
        problems=problems,
        label_ranges={"arousal": SCALE, "valence": SCALE, "dominance": SCALE},
        origin=origin,
    )
