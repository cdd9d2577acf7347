"""MSP-IMPROV adapter on a fixture tree in the published layout, made from the three real CREMA-D
clips re-muxed into per-turn AVIs (Video/session<k>/S<nn><E>/<T>/) with their WAVs (Audio/…) and an
Evalution.txt written as the release writes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_media import write_avi as _write_avi

from pipeline.corpus import msp_improv
from pipeline.corpus.adapter import LayoutError
from pipeline.media import iter_video_frames, read_audio

FPS = 15
SR = 16000

# (file stem fields, consensus code, source clip, seconds kept or None for all)
TURNS = [
    ("S01A-F01-S-FM01", "A", "1001_DFA_ANG_XX", None),
    ("S01H-M01-T-FM02", "H", "1001_DFA_HAP_XX", None),
    ("S01S-M01-S-FM03", "S", "1001_DFA_SAD_XX", None),
    ("S02N-F02-S-MF01", "N", "1001_DFA_HAP_XX", 0.6),  # shorter than 1 s
    ("S02A-M02-P-MF02", "X", "1001_DFA_ANG_XX", None),  # no agreement: left out
    ("S02H-F02-R-MF03", "H", "1001_DFA_HAP_XX", None),  # read
    ("S02S-F02-S-MF04", "O", "1001_DFA_SAD_XX", None),  # other: left out
]
AVD = {"A": (4.0, 1.8, 3.6), "H": (3.2, 4.4, 3.0), "S": (1.6, 1.8, 2.0), "N": (2.6, 3.0, "NaN"),
       "X": (3.0, 3.0, 3.0), "O": (3.0, 2.5, 3.0)}
RATER = {"A": "Angry", "H": "Happy", "S": "Sad", "N": "Neutral", "X": "Other", "O": "Other"}


def write_avi(path, frames, audio, fps=FPS, sr=SR):
    _write_avi(path, frames, audio, fps, sr)


@pytest.fixture(scope="module")
def turn_media(crema_d_dir, tmp_path_factory):
    """{stem fields: (AVI, WAV)} written once; each test copies them into its own tree."""
    base = tmp_path_factory.mktemp("msp_media")
    decoded = {}
    for clip in sorted((crema_d_dir / "VideoFlash").glob("*.flv")):
        frames = [np.ascontiguousarray(img[::2, ::2]) for _, img in iter_video_frames(clip, FPS)]
        decoded[clip.stem] = (frames, read_audio(clip, SR))
    out = {}
    for fields, _, src, seconds in TURNS:
        frames, audio = decoded[src]
        if seconds is not None:
            frames, audio = frames[: int(seconds * FPS)], audio[: int(seconds * SR)]
        avi, wav = base / f"{fields}.avi", base / f"{fields}.wav"
        write_avi(avi, frames, audio)
        sf.write(wav, audio, SR, subtype="PCM_16")
        out[fields] = (avi, wav)
    return out


def evaluation_text(turns) -> str:
    """Evalution.txt as the release writes it: a consensus line, the raters' lines, a blank line."""
    lines = []
    for fields, code, *_ in turns:
        a, v, d = (x if isinstance(x, str) else f"{x:.6f}" for x in AVD.get(code, (3.0, 3.0, 3.0)))
        lines.append(f"UTD-IMPROV-{fields}.avi; {code}; A:{a}; V:{v}; D:{d} ; N:3.400000;")
        for r in ("WORKER1", "WORKER2", "WORKER3"):
            lines.append(f"{r}; {RATER.get(code, 'Other')}; Frustrated; A:3.0; V:2.0; D:3.0; N:4.0;")
        lines.append("")
    return "\n".join(lines) + "\n"


def build(root: Path, turn_media, turns=TURNS, label_file="Evalution.txt", flat=False) -> Path:
    root.mkdir(parents=True)
    (root / label_file).write_text(evaluation_text(turns))
    for fields, *_ in turns:
        sm = msp_improv.STEM.match(fields)
        rel = Path(f"session{int(sm.group(4))}") / f"S{sm.group(1)}{sm.group(2)}" / sm.group(5)
        avi, wav = turn_media[fields]
        vdir = root / rel if flat else root / "Video" / rel
        adir = root / rel if flat else root / "Audio" / rel
        vdir.mkdir(parents=True, exist_ok=True)
        adir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(avi, vdir / f"MSP-IMPROV-{fields}.avi")
        shutil.copyfile(wav, adir / f"MSP-IMPROV-{fields}.wav")
    return root


def params(root: Path, **kw) -> msp_improv.Params:
    return msp_improv.Params(name="msp_improv", root=str(root), **kw)


def test_reads_turns_labels_speakers_sessions(tmp_path, turn_media):
    root = build(tmp_path / "MSP-IMPROV", turn_media)
    read = msp_improv.read(params(root))
    assert read.problems == []
    assert read.info.name == "msp_improv" and read.info.classes == ["neutral", "happy", "angry", "sad"]
    by_id = {c.clip_id: c for c in read.clips}
    assert sorted(by_id) == sorted(
        f"MSP-IMPROV-{f}" for f in ["S01A-F01-S-FM01", "S01H-M01-T-FM02", "S01S-M01-S-FM03", "S02N-F02-S-MF01",
                                    "S02H-F02-R-MF03"]
    )
    c = by_id["MSP-IMPROV-S01A-F01-S-FM01"]
    r = root.resolve()
    assert c.media_path == str(r / "Video/session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.avi")
    assert c.audio_path == str(r / "Audio/session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.wav")
    assert c.label == "angry" and c.speaker == "F01" and c.session == "1"
    assert c.start is None and c.end is None and c.crop is None
    assert 2.0 < c.duration < 2.5
    assert by_id["MSP-IMPROV-S02N-F02-S-MF01"].session == "2" and by_id["MSP-IMPROV-S01H-M01-T-FM02"].speaker == "M01"
    assert by_id["MSP-IMPROV-S01S-M01-S-FM03"].label == "sad" and by_id["MSP-IMPROV-S02N-F02-S-MF01"].label == "neutral"
    assert read.info.params["left_out"] == {"O": 1, "X": 1}
    assert read.origin["MSP-IMPROV-S01A-F01-S-FM01"] == (str(r / "Evalution.txt"), 1)


def test_avd_labels_with_missing_dominance(tmp_path, turn_media):
    read = msp_improv.read(params(build(tmp_path / "r", turn_media)))
    lab = read.labels
    assert lab["clip_id"] == [c.clip_id for c in read.clips] and set(lab["t"]) == {0.0}
    i = lab["clip_id"].index("MSP-IMPROV-S01A-F01-S-FM01")
    assert (lab["arousal"][i], lab["valence"][i], lab["dominance"][i]) == (4.0, 1.8, 3.6)
    j = lab["clip_id"].index("MSP-IMPROV-S02N-F02-S-MF01")
    assert lab["dominance"][j] is None  # NaN in the file: a missing label, never a value
    assert read.label_ranges["arousal"] == (1.0, 5.0)


def test_selection_improvised_other(tmp_path, turn_media):
    read = msp_improv.read(params(build(tmp_path / "r", turn_media), selection="improvised_other"))
    assert [c.clip_id for c in read.clips] == ["MSP-IMPROV-S01A-F01-S-FM01", "MSP-IMPROV-S01S-M01-S-FM03"]
    assert read.info.params["left_out"] == {"O": 1, "X": 1, "not_improvised_other": 2, "shorter_than_1s": 1}
    assert read.problems == []


def test_selection_non_read_is_001s_turns(tmp_path, turn_media):
    read = msp_improv.read(params(build(tmp_path / "r", turn_media), selection="non_read"))
    assert "MSP-IMPROV-S02H-F02-R-MF03" not in {c.clip_id for c in read.clips} and len(read.clips) == 4
    assert read.info.params["left_out"] == {"O": 1, "X": 1, "read": 1}
    assert read.problems == []


def test_flat_layout_and_other_spelling(tmp_path, turn_media):
    root = build(tmp_path / "r", turn_media, turns=TURNS[:2], label_file="Evaluation.txt", flat=True)
    read = msp_improv.read(params(root))
    assert read.problems == []
    assert read.clips[0].media_path == str(root.resolve() / "session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.avi")


def test_hostile_rows_are_problems_naming_file_and_line(tmp_path, turn_media):
    root = build(tmp_path / "r", turn_media, turns=TURNS[:3])
    ev = root / "Evalution.txt"
    text = ev.read_text().replace("UTD-IMPROV-S01H-M01-T-FM02.avi; H;", "UTD-IMPROV-S01H-M01-T-FM02.avi; Q;")
    text += "UTD-IMPROV-S03A-F03-S-FM01.avi; A; A:4.0\n"  # malformed (line 16)
    text += "UTD-IMPROV-S03A-F3-S-FM01.avi; A; A:4.0; V:2.0; D:3.0 ; N:3.0;\n"  # bad file name (line 17)
    ev.write_text(text)
    (root / "Video/session1/S01S/S/MSP-IMPROV-S01S-M01-S-FM03.avi").unlink()
    (root / "Audio/session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.wav").unlink()
    read = msp_improv.read(params(root))
    got = [(p.row, p.clip_id, p.message.split(":")[0]) for p in read.problems]
    assert got == [
        (1, "MSP-IMPROV-S01A-F01-S-FM01", "audio not found"),
        (6, "MSP-IMPROV-S01H-M01-T-FM02", "unknown label code 'Q'; known"),
        (11, "MSP-IMPROV-S01S-M01-S-FM03", "video not found"),
        (16, None, "malformed speaking-turn line 'UTD-IMPROV-S03A-F03-S-FM01.avi; A; A"),
        (17, "MSP-IMPROV-S03A-F3-S-FM01", "file name UTD-IMPROV-S03A-F3-S-FM01.avi is not of the form S<nn><A|H|S|N>-<F|M><kk>-<T|R|S|P>-<order><turn>"),
    ]
    assert all(p.file == str(ev.resolve()) for p in read.problems)
    assert read.problems[2].message.endswith("Video/session1/S01S/S/MSP-IMPROV-S01S-M01-S-FM03.avi")
    # the turns with missing media stay listed (with their problems): never silently dropped
    assert {c.clip_id for c in read.clips} == {"MSP-IMPROV-S01A-F01-S-FM01", "MSP-IMPROV-S01S-M01-S-FM03"}
    sad = next(c for c in read.clips if c.clip_id == "MSP-IMPROV-S01S-M01-S-FM03")
    assert sad.duration > 1.5  # measured from the WAV when the AVI is absent


def test_layout_errors(tmp_path, turn_media):
    root = build(tmp_path / "r", turn_media, turns=TURNS[:1])
    (root / "Evalution.txt").unlink()
    with pytest.raises(LayoutError, match="Evalution.txt: not found"):
        msp_improv.read(params(root))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "Evalution.txt").write_text(evaluation_text(TURNS[:1]))
    with pytest.raises(LayoutError, match="no Video/, Audio/"):
        msp_improv.read(params(bare))
    with pytest.raises(Exception, match="extra"):
        msp_improv.Params(name="msp_improv", root="/x", selecton="all")
