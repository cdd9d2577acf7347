"""IEMOCAP adapter on a fixture tree in the published layout, made from the three real CREMA-D clips:
one dyadic dialog AVI (each clip's frame beside its mirror image, the three clips one after another),
utterance WAVs, EmoEvaluation and transcription files written as the release writes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_media import write_avi as _write_avi

from pipeline.corpus import iemocap
from pipeline.corpus.adapter import LayoutError
from pipeline.corpus.validate import check, split
from pipeline.media import iter_video_frames, probe, read_audio

FPS = 15
SR = 16000

# (utterance, start, end, code, [V, A, D]) of Ses01F_impro01, as in the release: times in seconds
# into the dialog; the three CREMA-D clips cover about 0–2.2, 2.2–4.1 and 4.1–6.1 s of the dialog AVI
S1 = [
    ("Ses01F_impro01_F000", 0.1000, 2.1000, "ang", (1.5, 4.0, 4.5)),
    ("Ses01F_impro01_M000", 2.3000, 4.0000, "exc", (4.0, 3.5, 3.0)),
    ("Ses01F_impro01_F001", 4.2000, 6.0000, "sad", (1.5, 2.0, 2.0)),
    ("Ses01F_impro01_M001", 1.0000, 2.0000, "neu", (2.5, 2.5, 2.5)),
    ("Ses01F_impro01_F002", 2.5000, 3.0000, "fru", (2.0, 3.5, 3.0)),
    ("Ses01F_impro01_M002", 3.0000, 3.5000, "xxx", (2.5, 3.0, 3.0)),
]
S2 = [
    ("Ses02M_impro01_F000", 0.2000, 1.9000, "hap", (4.5, 3.0, 3.0)),
    ("Ses02M_impro01_M000", 2.2000, 3.9000, "ang", (1.0, 4.5, 4.0)),
]
TEXT = {
    "Ses01F_impro01_F000": "Excuse me. [LAUGHTER] Is this the line?",
    "Ses01F_impro01_M000": "[BREATHING] Yeah. [GARBAGE]",
    "Ses01F_impro01_F001": "I waited   all day.",
    "Ses01F_impro01_M001": "[LAUGHTER]",
    "Ses02M_impro01_F000": "Hi there.",
    "Ses02M_impro01_M000": "Go away!",
}


def write_avi(path, frames, audio, fps=FPS, sr=SR):
    _write_avi(path, frames, audio, fps, sr)


@pytest.fixture(scope="module")
def dialog_media(crema_d_dir, tmp_path_factory):
    """(dialog AVI, dialog audio at 16 kHz): the three clips one after another, each frame (halved)
    beside its mirror image — a 'dyadic' frame with a left and a right actor."""
    frames, audio = [], []
    for clip in sorted((crema_d_dir / "VideoFlash").glob("*.flv")):
        for _, img in iter_video_frames(clip, FPS):
            half = np.ascontiguousarray(img[::2, ::2])
            frames.append(np.concatenate([half, half[:, ::-1]], axis=1))
        audio.append(read_audio(clip, SR))
    signal = np.concatenate(audio)
    avi = tmp_path_factory.mktemp("iemocap_media") / "dialog.avi"
    write_avi(avi, frames, signal)
    return avi, signal


def emo_text(entries) -> str:
    """An EmoEvaluation file as the release writes it: header, blank line, then one block per utterance."""
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for utt, start, end, code, (v, a, d) in entries:
        lines.append(f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
        lines.append("C-E1:\tNeutral;\t()")
        lines.append("C-E2:\tNeutral;\t()")
        lines.append("A-E1:\tval 3; act 2; dom  2;\t()")
        lines.append("")
    return "\n".join(lines) + "\n"


def build(root: Path, dialog_media, sessions=None) -> Path:
    """The release layout under root for the given {session number: (dialog, entries)}."""
    avi_src, signal = dialog_media
    sessions = sessions or {1: ("Ses01F_impro01", S1), 2: ("Ses02M_impro01", S2)}
    for number, (dialog, entries) in sessions.items():
        s = root / f"Session{number}"
        emo = s / "dialog" / "EmoEvaluation"
        emo.mkdir(parents=True)
        (emo / "Categorical").mkdir()  # the release has these subfolders: not read
        (emo / f"{dialog}.txt").write_text(emo_text(entries))
        (s / "dialog" / "avi" / "DivX").mkdir(parents=True)
        shutil.copyfile(avi_src, s / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
        wav_dir = s / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True)
        trn = []
        for utt, start, end, _, _ in entries:
            sf.write(wav_dir / f"{utt}.wav", signal[int(start * SR) : int(end * SR)], SR, subtype="PCM_16")
            if utt in TEXT:
                trn.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {TEXT[utt]}")
        trn.append(f"{dialog}_MXX0 [004.0500-004.1500]: [BREATHING]")  # a turn nobody evaluated
        (s / "dialog" / "transcriptions").mkdir(parents=True)
        (s / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(trn) + "\n")
    return root


def params(root: Path, **kw) -> iemocap.Params:
    return iemocap.Params(name="iemocap", root=str(root), **kw)


def lines_of(problems) -> list[str]:
    return [p.line() for p in problems]


def test_fixture_avi_is_a_real_dyadic_video(dialog_media):
    info = probe(dialog_media[0])
    assert info.has_video and info.has_audio
    assert info.width == 480 and info.height == 180
    assert 5.9 < info.duration < 6.3


def test_reads_windows_halves_labels_speakers_sessions(tmp_path, dialog_media):
    root = build(tmp_path / "IEMOCAP_full_release", dialog_media)
    read = iemocap.read(params(root))
    assert read.problems == []
    assert read.info.name == "iemocap"
    assert read.info.classes == ["neutral", "happy", "angry", "sad"]
    by_id = {c.clip_id: c for c in read.clips}
    assert sorted(by_id) == sorted(
        ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_F001", "Ses01F_impro01_M001",
         "Ses02M_impro01_F000", "Ses02M_impro01_M000"]
    )
    c = by_id["Ses01F_impro01_F000"]
    avi = root.resolve() / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi"
    wav = root.resolve() / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    assert c.media_path == str(avi) and Path(c.media_path).is_absolute()
    assert c.audio_path == str(wav)
    assert (c.start, c.end) == (0.1, 2.1) and c.duration == pytest.approx(2.0)
    assert c.label == "angry" and c.speaker == "Ses01F" and c.session == "Session1"
    # the utterance WAV is the whole audio of the window
    assert sf.info(c.audio_path).duration == pytest.approx(c.end - c.start, abs=1e-3)
    # excited merged into happy; the male actor of a Ses01F dialog sits right
    m = by_id["Ses01F_impro01_M000"]
    assert m.label == "happy" and m.speaker == "Ses01M" and m.crop == [0.5, 0.0, 1.0, 1.0]
    assert c.crop == [0.0, 0.0, 0.5, 1.0]
    # in a Ses02M dialog the male actor sits left, the female right
    assert by_id["Ses02M_impro01_M000"].crop == [0.0, 0.0, 0.5, 1.0]
    assert by_id["Ses02M_impro01_F000"].crop == [0.5, 0.0, 1.0, 1.0]
    assert by_id["Ses02M_impro01_F000"].speaker == "Ses02F" and by_id["Ses02M_impro01_F000"].session == "Session2"
    assert by_id["Ses02M_impro01_F000"].label == "happy" and by_id["Ses01F_impro01_F001"].label == "sad"
    assert by_id["Ses01F_impro01_M001"].label == "neutral"
    # left out, counted, not problems
    assert read.info.params["left_out"] == {"fru": 1, "xxx": 1}
    assert read.info.params["classes"] == "four"


def test_transcripts_are_cleaned(tmp_path, dialog_media):
    read = iemocap.read(params(build(tmp_path / "r", dialog_media)))
    by_id = {c.clip_id: c for c in read.clips}
    assert by_id["Ses01F_impro01_F000"].transcript == "Excuse me. Is this the line?"
    assert by_id["Ses01F_impro01_M000"].transcript == "Yeah."
    assert by_id["Ses01F_impro01_F001"].transcript == "I waited all day."
    assert by_id["Ses01F_impro01_M001"].transcript is None  # nothing but laughter
    assert iemocap.clean_transcript("[LIPSMACK] well [GARBAGE] ok") == "well ok"


def test_avd_labels_one_row_per_utterance(tmp_path, dialog_media):
    read = iemocap.read(params(build(tmp_path / "r", dialog_media)))
    lab = read.labels
    assert set(lab) == {"clip_id", "t", "arousal", "valence", "dominance"}
    assert lab["clip_id"] == [c.clip_id for c in read.clips]
    assert set(lab["t"]) == {0.0}
    i = lab["clip_id"].index("Ses01F_impro01_F000")
    assert (lab["valence"][i], lab["arousal"][i], lab["dominance"][i]) == (1.5, 4.0, 4.5)
    assert read.label_ranges == {"arousal": (0.5, 5.5), "valence": (0.5, 5.5), "dominance": (0.5, 5.5)}
    assert read.origin["Ses01F_impro01_F000"][1] == 3  # the line of its EmoEvaluation entry


def test_all_classes_and_no_crop(tmp_path, dialog_media):
    read = iemocap.read(params(build(tmp_path / "r", dialog_media), classes="all", crop="none"))
    by_id = {c.clip_id: c for c in read.clips}
    assert read.info.classes[:4] == ["neutral", "happy", "angry", "sad"] and len(read.info.classes) == 10
    assert by_id["Ses01F_impro01_M000"].label == "excited"
    assert by_id["Ses01F_impro01_F002"].label == "frustrated"
    assert read.info.params["left_out"] == {"xxx": 1}
    assert all(c.crop is None for c in read.clips)


def test_params_reject_unknown_keys_and_values():
    with pytest.raises(Exception, match="extra"):
        iemocap.Params(name="iemocap", root="/x", classes="four", colour="red")
    with pytest.raises(Exception):
        iemocap.Params(name="iemocap", root="/x", classes="five")


def _hostile(tmp_path, dialog_media, entries):
    return build(tmp_path / "r", dialog_media, {1: ("Ses01F_impro01", entries)})


def test_unknown_code_is_a_problem_naming_file_and_line(tmp_path, dialog_media):
    root = _hostile(tmp_path, dialog_media, [S1[0], ("Ses01F_impro01_M000", 2.3, 4.0, "zzz", (3, 3, 3))])
    read = iemocap.read(params(root))
    assert [c.clip_id for c in read.clips] == ["Ses01F_impro01_F000"]
    (p,) = read.problems
    assert p.file.endswith("Session1/dialog/EmoEvaluation/Ses01F_impro01.txt") and p.row == 8
    assert p.clip_id == "Ses01F_impro01_M000" and "unknown label code 'zzz'" in p.message


def test_missing_wav_and_avi_are_problems(tmp_path, dialog_media):
    root = _hostile(tmp_path, dialog_media, S1[:2])
    (root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav").unlink()
    read = iemocap.read(params(root))
    (p,) = read.problems
    assert p.row == 8 and p.clip_id == "Ses01F_impro01_M000" and "utterance WAV not found" in p.message
    assert p.message.endswith("Ses01F_impro01_M000.wav")
    assert {c.clip_id for c in read.clips} == {"Ses01F_impro01_F000", "Ses01F_impro01_M000"}  # kept, with its problem
    (root / "Session1/dialog/avi/DivX/Ses01F_impro01.avi").unlink()
    read = iemocap.read(params(root))
    assert lines_of(read.problems) == lines_of([p])  # the adapter leaves the absent video to the checks
    # the checks: one line for the dialog video, not one per utterance; `skip` leaves out all its utterances
    problems = check(read)
    avi_lines = [q for q in problems if "Ses01F_impro01.avi" in q.message]
    assert len(problems) == 2 and len(avi_lines) == 1, lines_of(problems)
    assert avi_lines[0].row == 3 and "file not found (2 clips use it: Ses01F_impro01_F000, Ses01F_impro01_M000)" in avi_lines[0].message
    clips, _, left_out = split(read, problems)
    assert clips == [] and left_out == {"Ses01F_impro01_F000", "Ses01F_impro01_M000"}


def test_real_consensus_values_half_a_point_outside_the_rating_scale_pass(tmp_path, dialog_media):
    """The real EmoEvaluation files hold consensus values from 0.5 to 5.5 (e.g. `val 5.5`)."""
    root = _hostile(tmp_path, dialog_media, S1[:2])
    emo = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    # an utterance line of the release's format, its valence 5.5 and dominance 0.5
    text = emo.read_text().replace("[4.0000, 3.5000, 3.0000]", "[5.5000, 3.5000, 0.5000]")
    text = text.replace("A-E1:\tval 3; act 2; dom  2;\t()", "A-E1:\tval 5.5; act 3.5; dom  0.5;\t()", 1)
    emo.write_text(text)
    read = iemocap.read(params(root))
    i = read.labels["clip_id"].index("Ses01F_impro01_M000")
    assert (read.labels["valence"][i], read.labels["dominance"][i]) == (5.5, 0.5)
    assert check(read) == []
    # beyond the real range is still a problem
    emo.write_text(text.replace("[5.5000, 3.5000, 0.5000]", "[5.6000, 3.5000, 0.5000]"))
    (bad,) = check(iemocap.read(params(root)))
    assert bad.clip_id == "Ses01F_impro01_M000" and "valence 5.6 at t=0: expected a value in [0.5, 5.5]" in bad.message


def test_unusable_dialog_video_is_one_line(tmp_path, dialog_media):
    root = _hostile(tmp_path, dialog_media, S1[:3])
    (root / "Session1/dialog/avi/DivX/Ses01F_impro01.avi").write_bytes(b"not a video")
    read = iemocap.read(params(root))
    (p,) = read.problems
    assert "dialog video unusable (3 utterances)" in p.message and p.row == 3
    assert p.clips() == {"Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_F001"}
    assert len(check(read)) == 1


def test_malformed_line_and_window_beyond_video(tmp_path, dialog_media):
    root = _hostile(tmp_path, dialog_media, [S1[0], ("Ses01F_impro01_F001", 5.5, 9.0, "sad", (2, 2, 2))])
    emo = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    with emo.open("a") as f:
        f.write("[10.0 - ]\tSes01F_impro01_F009\tneu\t[2.5000, 2.5000]\n")
    read = iemocap.read(params(root))
    msgs = lines_of(read.problems)
    assert len(msgs) == 2, msgs
    beyond = read.problems[0]
    assert beyond.row == 8 and beyond.clip_id == "Ses01F_impro01_F001"
    assert "ends after the video" in beyond.message
    bad = read.problems[1]
    assert bad.row == 13 and bad.clip_id is None and "malformed utterance line" in bad.message
    assert bad.line().startswith(f"{emo.resolve()}:13: ")


def test_layout_errors(tmp_path, dialog_media):
    root = build(tmp_path / "r", dialog_media)
    shutil.rmtree(root / "Session2/dialog/EmoEvaluation")
    with pytest.raises(LayoutError, match="Session2/dialog/EmoEvaluation: not found"):
        iemocap.read(params(root))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="no Session1"):
        iemocap.read(params(tmp_path / "empty"))
    with pytest.raises(LayoutError, match="not found"):
        iemocap.read(params(tmp_path / "nowhere"))
