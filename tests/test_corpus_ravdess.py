"""The RAVDESS adapter on a fixture tree in the Zenodo zips' layout, its clips re-muxed from real
CREMA-D clips (the identifiers in the names are what is read)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile
from pydantic import ValidationError

from pipeline.corpus.adapter import LayoutError
from pipeline.corpus.ravdess import CLASSES, STATEMENTS, Params, parse_name, read
from pipeline.media import iter_video_frames, probe, read_audio, write_mp4

# name -> the CREMA-D clip it is made of
FILES = {
    "Actor_01/01-01-05-01-02-01-01.mp4": "1001_DFA_ANG_XX",  # AV speech angry normal "dogs" rep 1
    "Actor_01/01-01-03-02-01-02-01.mp4": "1001_DFA_HAP_XX",  # AV speech happy strong "kids" rep 2
    "Actor_01/02-01-04-01-01-01-01.mp4": "1001_DFA_SAD_XX",  # video-only speech sad
    "Actor_01/01-02-02-01-01-01-01.mp4": "1001_DFA_SAD_XX",  # AV song calm
    "Actor_01/03-01-05-01-02-01-01.wav": "1001_DFA_ANG_XX",  # audio-only speech angry
    "Actor_02/01-01-02-02-02-01-02.mp4": "1001_DFA_SAD_XX",  # AV speech calm strong "dogs", actress 02
    "Actor_02/01-01-01-01-01-01-02.mp4": "1001_DFA_SAD_XX",  # AV speech neutral
}


@pytest.fixture(scope="module")
def media(crema_d_dir, tmp_path_factory):
    """Per CREMA-D clip: an H.264 + AAC MP4 re-encode and a 48 kHz WAV of its audio (made once)."""
    out = tmp_path_factory.mktemp("ravdess_media")
    made = {}
    for stem in sorted(set(FILES.values())):
        flv = crema_d_dir / "VideoFlash" / f"{stem}.flv"
        mp4, wav = out / f"{stem}.mp4", out / f"{stem}.wav"
        write_mp4(mp4, [f for _, f in iter_video_frames(flv, 15)], read_audio(flv, 16000), 15, 16000)
        soundfile.write(wav, read_audio(flv, 48000), 48000, subtype="PCM_16")
        made[stem] = {".mp4": mp4, ".wav": wav}
    return made


def place(root: Path, media, files: dict[str, str]) -> Path:
    for name, stem in files.items():
        dst = root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(media[stem][Path(name).suffix], dst)
    return root


@pytest.fixture
def corpus(tmp_path, media) -> Path:
    return place(tmp_path / "RAVDESS", media, FILES)


def by_id(r):
    return {c.clip_id: c for c in r.clips}


def test_default_full_av_speech(corpus):
    r = read(Params(root=str(corpus)))
    assert r.problems == []
    assert r.info.name == "ravdess"
    assert r.info.classes == ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"] == CLASSES
    clips = by_id(r)
    assert sorted(clips) == ["01-01-01-01-01-01-02", "01-01-02-02-02-01-02", "01-01-03-02-01-02-01", "01-01-05-01-02-01-01"]
    angry = clips["01-01-05-01-02-01-01"]
    assert (angry.label, angry.speaker, angry.transcript) == ("angry", "01", "Dogs are sitting by the door")
    happy = clips["01-01-03-02-01-02-01"]
    assert (happy.label, happy.speaker, happy.transcript) == ("happy", "01", "Kids are talking by the door")
    calm = clips["01-01-02-02-02-01-02"]
    assert (calm.label, calm.speaker, calm.transcript) == ("calm", "02", STATEMENTS["02"])
    assert clips["01-01-01-01-01-01-02"].label == "neutral"
    for cid, c in clips.items():
        assert Path(c.media_path).is_absolute() and Path(c.media_path) == corpus / f"Actor_{cid[-2:]}" / f"{cid}.mp4"
        assert c.audio_path is None and c.partition is None and c.session is None
        assert c.duration == pytest.approx(probe(c.media_path).duration, abs=1e-3)
        assert r.origin[cid] == (c.media_path, None)


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"vocal_channel": "song"}, {"01-02-02-01-01-01-01"}),
        ({"vocal_channel": "both"}, {"01-01-05-01-02-01-01", "01-01-03-02-01-02-01", "01-02-02-01-01-01-01",
                                     "01-01-02-02-02-01-02", "01-01-01-01-01-01-02"}),
        ({"modalities": ["video"]}, {"02-01-04-01-01-01-01"}),
        ({"modalities": ["audio"]}, {"03-01-05-01-02-01-01"}),
        ({"modalities": ["av", "audio"], "vocal_channel": "song"}, {"01-02-02-01-01-01-01"}),
    ],
)
def test_filters_by_modality_and_vocal_channel(corpus, options, expected):
    r = read(Params(root=str(corpus), **options))
    assert r.problems == [] and set(by_id(r)) == expected


def test_audio_only_clips_are_the_wav(corpus):
    [c] = read(Params(root=str(corpus), modalities=["audio"])).clips
    assert Path(c.media_path) == corpus / "Actor_01" / "03-01-05-01-02-01-01.wav"
    assert (c.label, c.speaker, c.transcript) == ("angry", "01", "Dogs are sitting by the door")
    assert c.duration == pytest.approx(soundfile.info(c.media_path).duration, abs=1e-3)
    assert c.duration == pytest.approx(probe(c.media_path).duration, abs=1e-3)


def test_merge_calm_into_neutral(corpus):
    r = read(Params(root=str(corpus), merge_calm=True, vocal_channel="both"))
    assert r.info.classes == ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    labels = {k: c.label for k, c in by_id(r).items()}
    assert labels["01-01-02-02-02-01-02"] == "neutral" and labels["01-02-02-01-01-01-01"] == "neutral"
    assert labels["01-01-05-01-02-01-01"] == "angry"


def test_zips_unpacked_into_their_own_folders(tmp_path, media):
    """Audio_Speech_Actors_01-24.zip and Video_Speech_Actor_01.zip each unpacked into a folder of their name."""
    root = place(tmp_path / "r", media, {
        "Video_Speech_Actor_01/Actor_01/01-01-05-01-02-01-01.mp4": "1001_DFA_ANG_XX",
        "Audio_Speech_Actors_01-24/Actor_01/03-01-05-01-02-01-01.wav": "1001_DFA_ANG_XX",
    })
    r = read(Params(root=str(root), modalities=["av", "audio"]))
    assert r.problems == [] and sorted(by_id(r)) == ["01-01-05-01-02-01-01", "03-01-05-01-02-01-01"]


def test_a_clip_found_twice_is_read_once(tmp_path, media):
    root = place(tmp_path / "r", media, {
        "Actor_01/01-01-05-01-02-01-01.mp4": "1001_DFA_ANG_XX",
        "Video_Speech_Actor_01/Actor_01/01-01-05-01-02-01-01.mp4": "1001_DFA_ANG_XX",
    })
    r = read(Params(root=str(root)))
    assert [c.media_path for c in r.clips] == [str(root / "Actor_01" / "01-01-05-01-02-01-01.mp4")]
    [p] = r.problems
    assert p.file == str(root / "Video_Speech_Actor_01" / "Actor_01" / "01-01-05-01-02-01-01.mp4")
    assert "same clip" in p.message and p.clip_id is None  # the clip read is not the one at fault


def test_bad_names_are_problems_naming_the_file(corpus, media):
    bad = {
        "Actor_01/01-01-09-01-01-01-01.mp4": "unknown emotion code '09'",
        "Actor_01/04-01-05-01-01-01-01.mp4": "unknown modality code '04'",
        "Actor_01/01-03-05-01-01-01-01.mp4": "unknown vocal channel code '03'",
        "Actor_01/01-01-05-03-01-01-01.mp4": "unknown intensity code '03'",
        "Actor_01/01-01-05-01-03-01-01.mp4": "unknown statement code '03'",
        "Actor_01/01-01-05-01-01-03-01.mp4": "unknown repetition code '03'",
        "Actor_01/01-01-05-01-01-01.mp4": "seven two-digit identifiers",
        "Actor_01/video.mp4": "seven two-digit identifiers",
        "Actor_01/01-01-05-01-01-01-25.mp4": "not 01-24",
        "Actor_01/01-01-05-01-01-01-02.mp4": "the folder is Actor_01",
        "Actor_01/01-01-01-02-01-01-01.mp4": "neutral at strong intensity",
        "Actor_01/01-02-07-01-01-01-01.mp4": "disgust song",
        "Actor_01/01-01-05-01-01-02-01.wav": "comes as .mp4",
    }
    place(corpus, media, {name: "1001_DFA_ANG_XX" for name in bad})
    (corpus / "Actor_01" / "notes.txt").write_text("not a clip")  # other files are not clips
    r = read(Params(root=str(corpus), vocal_channel="both"))
    assert len(by_id(r)) == 5  # the good ones still read
    got = {p.file: p for p in r.problems}
    assert set(got) == {str(corpus / name) for name in bad}
    for name, why in bad.items():
        p = got[str(corpus / name)]
        assert why in p.message and p.clip_id == Path(name).stem, p


def test_unreadable_media_are_problems(corpus):
    lfs = corpus / "Actor_01" / "01-01-06-01-01-01-01.mp4"
    lfs.write_bytes(b"")
    r = read(Params(root=str(corpus)))
    assert [(p.file, p.clip_id) for p in r.problems] == [(str(lfs), "01-01-06-01-01-01-01")]
    assert "empty" in r.problems[0].message


def test_missing_layout_raises_naming_the_path(tmp_path):
    (tmp_path / "r" / "Audio").mkdir(parents=True)
    with pytest.raises(LayoutError, match=str(tmp_path / "r") + ".*Actor_XX"):
        read(Params(root=str(tmp_path / "r")))
    with pytest.raises(LayoutError, match="not found"):
        read(Params(root=str(tmp_path / "nowhere")))


def test_params_validate(tmp_path):
    with pytest.raises(ValidationError, match="modalities"):
        Params(root=str(tmp_path), modalities=[])
    with pytest.raises(ValidationError, match="modalities"):
        Params(root=str(tmp_path), modalities=["av", "av"])
    with pytest.raises(ValidationError, match="modalities"):
        Params(root=str(tmp_path), modalities=["full-AV"])
    with pytest.raises(ValidationError, match="vocal_channel"):
        Params(root=str(tmp_path), vocal_channel="sung")
    with pytest.raises(ValidationError, match="merge_neutral"):
        Params(root=str(tmp_path), merge_neutral=True)


def test_parse_name():
    parts, why = parse_name("03-01-06-01-02-01-12")  # the Zenodo page's example: audio-only, fearful, "dogs", actress 12
    assert why is None
    assert parts == {"modality": "audio", "channel": "speech", "emotion": "06", "intensity": "01",
                     "statement": "02", "repetition": "01", "actor": "12"}


def test_files_not_chosen_are_not_judged(corpus, media):
    """A broken name of a modality or vocal channel not asked for is skipped like its well-named peers."""
    place(corpus, media, {"Actor_01/02-01-09-01-01-01-01.mp4": "1001_DFA_ANG_XX", "Actor_01/01-02-07-01-01-01-01.mp4": "1001_DFA_ANG_XX"})
    r = read(Params(root=str(corpus)))
    assert r.problems == [] and len(r.clips) == 4
    r = read(Params(root=str(corpus), modalities=["av", "video"], vocal_channel="both"))
    assert {Path(p.file).name for p in r.problems} == {"02-01-09-01-01-01-01.mp4", "01-02-07-01-01-01-01.mp4"}
