"""The CREMA-D adapter on a fixture tree in the corpus's own layout, built from three real clips."""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import pytest
import soundfile
from pydantic import ValidationError

from pipeline.corpus.adapter import LayoutError
from pipeline.corpus.crema_d import CLASSES, SENTENCES, Params, header_duration, read
from pipeline.media import iter_video_frames, probe, read_audio, write_mp4

STEMS = ["1001_DFA_ANG_XX", "1001_DFA_HAP_XX", "1001_DFA_SAD_XX"]
SUMMARY_HEADER = ["", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote", "MultiModalLevel"]


def read_sample_summary(crema_d_dir: Path) -> list[list[str]]:
    with open(crema_d_dir / "processedResults_summaryTable.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == SUMMARY_HEADER
    return rows[1:]


def write_summary(root: Path, rows: list[list[str]]) -> Path:
    path = root / "processedResults" / "summaryTable.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(SUMMARY_HEADER)
        w.writerows(rows)
    return path


def to_mp4(src: Path, dst: Path, fps: int = 15, sample_rate: int = 16000) -> None:
    """Re-encode a clip as H.264 + AAC MP4 (VP6 does not go into MP4), frames and audio as decoded."""
    frames = [f for _, f in iter_video_frames(src, fps)]
    write_mp4(dst, frames, read_audio(src, sample_rate), fps, sample_rate)


@pytest.fixture(scope="module")
def decoded(crema_d_dir, tmp_path_factory):
    """Per stem: its 16 kHz audio and an MP4 re-encode (made once for the module)."""
    out = tmp_path_factory.mktemp("crema_d_media")
    media = {}
    for stem in STEMS:
        flv = crema_d_dir / "VideoFlash" / f"{stem}.flv"
        to_mp4(flv, out / f"{stem}.mp4")
        media[stem] = (read_audio(flv, 16000), out / f"{stem}.mp4")
    return media


def build(root: Path, crema_d_dir: Path, decoded, *, flv: bool = True, mp4: bool = False, wav: bool = True) -> Path:
    """A CREMA-D tree as the repository lays it out: VideoFlash/ (and/or VideoMP4/), AudioWAV/,
    VideoDemographics.csv, processedResults/summaryTable.csv."""
    root.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        if flv:
            (root / "VideoFlash").mkdir(exist_ok=True)
            shutil.copy(crema_d_dir / "VideoFlash" / f"{stem}.flv", root / "VideoFlash" / f"{stem}.flv")
        if mp4:
            (root / "VideoMP4").mkdir(exist_ok=True)
            shutil.copy(decoded[stem][1], root / "VideoMP4" / f"{stem}.mp4")
        if wav:
            (root / "AudioWAV").mkdir(exist_ok=True)
            soundfile.write(root / "AudioWAV" / f"{stem}.wav", decoded[stem][0], 16000, subtype="PCM_16")
    shutil.copy(crema_d_dir / "VideoDemographics.csv", root / "VideoDemographics.csv")
    write_summary(root, read_sample_summary(crema_d_dir))
    return root


@pytest.fixture
def corpus(tmp_path, crema_d_dir, decoded) -> Path:
    return build(tmp_path / "CREMA-D", crema_d_dir, decoded)


def by_id(read_result):
    return {c.clip_id: c for c in read_result.clips}


def test_intended_labels_speakers_transcripts_paths(corpus):
    r = read(Params(root=str(corpus)))
    assert r.problems == []
    assert r.info.name == "crema_d"
    assert r.info.classes == ["angry", "disgust", "fearful", "happy", "neutral", "sad"] == CLASSES
    clips = by_id(r)
    assert sorted(clips) == STEMS
    assert {k: c.label for k, c in clips.items()} == dict(zip(STEMS, ["angry", "happy", "sad"]))
    for stem, c in clips.items():
        assert c.speaker == "1001" and c.partition is None and c.session is None
        assert c.transcript == "Don't forget a jacket" == SENTENCES["DFA"]
        assert Path(c.media_path).is_absolute() and Path(c.media_path) == corpus / "VideoFlash" / f"{stem}.flv"
        assert Path(c.audio_path) == corpus / "AudioWAV" / f"{stem}.wav" and Path(c.audio_path).is_file()
        assert c.duration == pytest.approx(probe(c.media_path).duration, abs=1e-3)
        assert c.start is None and c.end is None and c.crop is None
        assert r.origin[stem] == (c.media_path, None)
    assert r.info.params["label_source"] == "intended"


@pytest.mark.parametrize(
    "source, expected",
    [
        # the real summaryTable rows: HAP voice N / face H / both H; SAD N N N; ANG A A A
        ("voice_vote", ["angry", "neutral", "neutral"]),
        ("face_vote", ["angry", "happy", "neutral"]),
        ("multimodal_vote", ["angry", "happy", "neutral"]),
    ],
)
def test_perceived_labels_from_the_summary_table(corpus, source, expected):
    r = read(Params(root=str(corpus), label_source=source))
    assert r.problems == []
    clips = by_id(r)
    assert [clips[s].label for s in STEMS] == expected
    summary = str(corpus / "processedResults" / "summaryTable.csv")
    # rows as in the file: HAP on line 2, SAD 3, ANG 4
    assert r.origin == {"1001_DFA_HAP_XX": (summary, 2), "1001_DFA_SAD_XX": (summary, 3), "1001_DFA_ANG_XX": (summary, 4)}


def test_summary_table_header_spelled_as_the_readme(corpus, crema_d_dir):
    """The README names the column `fileName`, the file itself `FileName`: either is read."""
    path = corpus / "processedResults" / "summaryTable.csv"
    path.write_text(path.read_text().replace('"FileName"', '"fileName"', 1))
    r = read(Params(root=str(corpus), label_source="face_vote"))
    assert r.problems == [] and by_id(r)["1001_DFA_HAP_XX"].label == "happy"


def test_relative_root_gives_absolute_paths(corpus, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    r = read(Params(root=corpus.name))
    assert all(Path(c.media_path).is_absolute() and Path(c.audio_path).is_absolute() for c in r.clips)
    assert all(Path(c.media_path).is_file() for c in r.clips)


def test_missing_wav_takes_the_video_track_without_a_problem(corpus):
    (corpus / "AudioWAV" / "1001_DFA_SAD_XX.wav").unlink()
    r = read(Params(root=str(corpus)))
    assert r.problems == []
    clips = by_id(r)
    assert clips["1001_DFA_SAD_XX"].audio_path is None
    assert Path(clips["1001_DFA_SAD_XX"].audio()) == corpus / "VideoFlash" / "1001_DFA_SAD_XX.flv"
    assert clips["1001_DFA_ANG_XX"].audio_path is not None


def test_no_audio_folder_at_all(tmp_path, crema_d_dir, decoded):
    root = build(tmp_path / "c", crema_d_dir, decoded, wav=False)
    r = read(Params(root=str(root)))
    assert r.problems == [] and all(c.audio_path is None for c in r.clips) and len(r.clips) == 3


def test_mp4_layout(tmp_path, crema_d_dir, decoded):
    root = build(tmp_path / "c", crema_d_dir, decoded, flv=False, mp4=True)
    for video in ("mp4", "auto"):
        r = read(Params(root=str(root), video=video, label_source="voice_vote"))
        assert r.problems == []
        clips = by_id(r)
        assert [Path(clips[s].media_path) for s in STEMS] == [root / "VideoMP4" / f"{s}.mp4" for s in STEMS]
        assert [clips[s].label for s in STEMS] == ["angry", "neutral", "neutral"]
        for c in r.clips:  # the movie header's duration is FFmpeg's
            assert c.duration == pytest.approx(probe(c.media_path).duration, abs=1e-3)
    with pytest.raises(LayoutError, match="VideoFlash"):
        read(Params(root=str(root), video="flv"))


def test_auto_prefers_the_shipped_flash_video(tmp_path, crema_d_dir, decoded):
    root = build(tmp_path / "c", crema_d_dir, decoded, flv=True, mp4=True)
    assert all(c.media_path.endswith(".flv") for c in read(Params(root=str(root))).clips)
    assert all(c.media_path.endswith(".mp4") for c in read(Params(root=str(root), video="mp4")).clips)


def test_header_durations_match_ffmpeg(corpus, decoded):
    for stem in STEMS:
        for path in (corpus / "VideoFlash" / f"{stem}.flv", corpus / "AudioWAV" / f"{stem}.wav", decoded[stem][1]):
            assert header_duration(path) == pytest.approx(probe(path).duration, abs=1e-3), path


def _copy(corpus: Path, new_stem: str, src: str = "1001_DFA_ANG_XX") -> Path:
    dst = corpus / "VideoFlash" / f"{new_stem}.flv"
    shutil.copy(corpus / "VideoFlash" / f"{src}.flv", dst)
    return dst


def test_bad_file_names_are_problems_naming_the_file(corpus):
    bad = {
        "1001_DFA_XYZ_XX": "unknown emotion code 'XYZ'",
        "1001_ABC_ANG_XX": "unknown sentence code 'ABC'",
        "1001_DFA_ANG_ZZ": "unknown emotion level 'ZZ'",
        "1001_DFA_ANG": "not <ActorID>_<Sentence>_<Emotion>_<Level>",
        "somefile": "not <ActorID>_<Sentence>_<Emotion>_<Level>",
        "10x1_DFA_ANG_XX": "not a 4-digit id",
    }
    paths = {stem: _copy(corpus, stem) for stem in bad}
    r = read(Params(root=str(corpus)))
    assert sorted(by_id(r)) == STEMS  # the good ones still read
    assert len(r.problems) == len(bad)
    for p in r.problems:
        assert p.clip_id in bad and p.file == str(paths[p.clip_id]) and bad[p.clip_id] in p.message, p


def test_actor_missing_from_demographics(corpus):
    path = _copy(corpus, "1002_DFA_ANG_XX")
    r = read(Params(root=str(corpus)))
    assert [(p.file, p.clip_id) for p in r.problems] == [(str(path), "1002_DFA_ANG_XX")]
    assert "VideoDemographics.csv" in r.problems[0].message and "1002" in r.problems[0].message


def test_missing_summary_row_is_a_problem_only_for_perceived_labels(corpus, crema_d_dir):
    rows = [r for r in read_sample_summary(crema_d_dir) if r[1] != "1001_DFA_SAD_XX"]
    write_summary(corpus, rows)
    assert read(Params(root=str(corpus))).problems == []  # intended: the table is not read
    r = read(Params(root=str(corpus), label_source="multimodal_vote"))
    assert sorted(by_id(r)) == ["1001_DFA_ANG_XX", "1001_DFA_HAP_XX"]
    [p] = r.problems
    assert p.file == str(corpus / "VideoFlash" / "1001_DFA_SAD_XX.flv") and p.clip_id == "1001_DFA_SAD_XX"
    assert "no row" in p.message and "summaryTable.csv" in p.message


def test_tied_and_empty_votes_are_problems(corpus, crema_d_dir):
    rows = read_sample_summary(crema_d_dir)
    rows[0][2] = "N:H"  # HAP's voice vote: a tie
    rows[1][2] = ""  # SAD: no voice ratings
    rows[2][2] = "X"  # ANG: not a vote letter
    summary = write_summary(corpus, rows)
    r = read(Params(root=str(corpus), label_source="voice_vote"))
    assert r.clips == []
    got = {p.clip_id: p for p in r.problems}
    assert set(got) == set(STEMS)
    assert all(p.file == str(summary) for p in got.values())
    assert got["1001_DFA_HAP_XX"].row == 2 and "tie between N, H" in got["1001_DFA_HAP_XX"].message
    assert got["1001_DFA_SAD_XX"].row == 3 and "empty" in got["1001_DFA_SAD_XX"].message
    assert got["1001_DFA_ANG_XX"].row == 4 and "'X'" in got["1001_DFA_ANG_XX"].message
    # the face votes of the same rows are fine
    assert len(read(Params(root=str(corpus), label_source="face_vote")).clips) == 3


def test_summary_rows_without_media_and_duplicates(corpus, crema_d_dir):
    rows = read_sample_summary(crema_d_dir)
    summary = write_summary(corpus, rows + [["63", "1001_DFA_FEA_XX", "F", "50", "F", "50", "F", "50"], rows[0]])
    r = read(Params(root=str(corpus), label_source="face_vote"))
    assert len(r.clips) == 3
    got = {(p.row, p.clip_id): p for p in r.problems}
    assert set(got) == {(5, "1001_DFA_FEA_XX"), (6, "1001_DFA_HAP_XX")}
    assert all(p.file == str(summary) for p in r.problems)
    assert "absent" in got[5, "1001_DFA_FEA_XX"].message and "second row" in got[6, "1001_DFA_HAP_XX"].message


def test_unreadable_media_are_problems(corpus):
    lfs = corpus / "VideoFlash" / "1001_IEO_NEU_XX.flv"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 123456\n")
    empty = corpus / "VideoFlash" / "1001_IEO_SAD_XX.flv"
    empty.write_bytes(b"")
    junk = corpus / "VideoFlash" / "1001_IEO_HAP_XX.flv"
    junk.write_bytes(os.urandom(4096))
    r = read(Params(root=str(corpus)))
    assert sorted(by_id(r)) == STEMS
    got = {p.clip_id: p for p in r.problems}
    assert {k: p.file for k, p in got.items()} == {
        "1001_IEO_NEU_XX": str(lfs), "1001_IEO_SAD_XX": str(empty), "1001_IEO_HAP_XX": str(junk)
    }
    assert "git lfs pull" in got["1001_IEO_NEU_XX"].message and "empty" in got["1001_IEO_SAD_XX"].message


def test_missing_layout_parts_raise_naming_the_path(corpus):
    summary = corpus / "processedResults" / "summaryTable.csv"
    summary.unlink()
    assert len(read(Params(root=str(corpus))).clips) == 3  # intended labels need no summaryTable
    with pytest.raises(LayoutError, match=str(summary)):
        read(Params(root=str(corpus), label_source="voice_vote"))
    demographics = corpus / "VideoDemographics.csv"
    demographics.unlink()
    with pytest.raises(LayoutError, match=str(demographics)):
        read(Params(root=str(corpus)))
    shutil.rmtree(corpus / "VideoFlash")
    with pytest.raises(LayoutError, match="VideoFlash"):
        read(Params(root=str(corpus)))
    with pytest.raises(LayoutError, match="not found"):
        read(Params(root=str(corpus / "nowhere")))


def test_a_table_without_its_columns_is_a_layout_error(corpus):
    summary = corpus / "processedResults" / "summaryTable.csv"
    summary.write_text('"","FileName","VoiceVote"\n"1","1001_DFA_ANG_XX","A"\n')
    assert len(read(Params(root=str(corpus), label_source="voice_vote")).clips) == 1
    with pytest.raises(LayoutError, match="FaceVote"):
        read(Params(root=str(corpus), label_source="face_vote"))
    (corpus / "VideoDemographics.csv").write_text("Actor,Age\n1001,51\n")
    with pytest.raises(LayoutError, match="ActorID"):
        read(Params(root=str(corpus)))


def test_params_reject_unknown_keys_and_values(corpus):
    with pytest.raises(ValidationError, match="labels_source"):
        Params(root=str(corpus), labels_source="voice_vote")
    with pytest.raises(ValidationError, match="label_source"):
        Params(root=str(corpus), label_source="crowd")
    with pytest.raises(ValidationError, match="video"):
        Params(root=str(corpus), video="avi")
    with pytest.raises(ValidationError, match="name"):
        Params(name="ravdess", root=str(corpus))


def test_ten_thousand_clips_read_fast(tmp_path, crema_d_dir):
    """The full corpus has 7,442 clips: reading 10,000 (hard links to one real clip) takes seconds,
    not minutes; durations come from the FLV header."""
    root = tmp_path / "big"
    (root / "VideoFlash").mkdir(parents=True)
    src = crema_d_dir / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    actors = [str(a) for a in range(1001, 1092)]
    names = [
        f"{a}_{s}_{e}_{lv}" for a in actors for s in SENTENCES for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
        for lv in ("LO", "MD", "HI", "XX")
    ][:10_000]
    local = root / "src.flv"
    shutil.copy(src, local)  # same file system as the links
    for n in names:
        os.link(local, root / "VideoFlash" / f"{n}.flv")
    with open(root / "VideoDemographics.csv", "w") as f:
        f.write('"ActorID","Age","Sex","Race","Ethnicity"\n' + "".join(f'{a},30,"Male","Caucasian","Not Hispanic"\n' for a in actors))
    t = time.perf_counter()
    r = read(Params(root=str(root)))
    seconds = time.perf_counter() - t
    assert r.problems == [] and len(r.clips) == 10_000
    assert all(c.duration == pytest.approx(2.235) for c in r.clips)
    assert seconds < 30, seconds
    print(f"10,000 clips in {seconds:.2f} s")
