import hashlib

import numpy as np
import pytest

from pipeline.config import CorpusParams
from pipeline.corpus.demo import CLASSES, generate_demo, plan_corpus
from pipeline.corpus.manifest import read_labels, read_manifest, write_labels, write_manifest
from pipeline.media import iter_video_frames, probe, read_audio

TINY = CorpusParams(speakers=3, clips_per_speaker=4, seconds=2.0, fps=10, width=200, height=160)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    info, clips, labels = generate_demo(TINY, root / "corpus", progress=False)
    write_manifest(root / "manifest.parquet", info, clips)
    write_labels(root / "labels.parquet", labels)
    return root, info, clips, labels


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_media_are_real_h264_aac_files(corpus):
    _, _, clips, _ = corpus
    for clip in clips:
        info = probe(clip.media_path)
        assert info.has_video and info.has_audio
        assert (info.width, info.height) == (200, 160)
        assert info.fps == pytest.approx(10)
        assert info.sample_rate == 16000
        assert info.duration == pytest.approx(2.0, abs=0.15)
    import av

    with av.open(clips[0].media_path) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"


def test_manifest_and_labels_round_trip(corpus):
    root, info, clips, _ = corpus
    info2, clips2 = read_manifest(root / "manifest.parquet")
    assert info2.classes == CLASSES == ["neutral", "happy", "angry", "sad"]
    assert [c.clip_id for c in clips2] == [c.clip_id for c in clips]
    labels = read_labels(root / "labels.parquet")
    assert labels.num_rows == len(clips) * 5  # 2 s at 2 Hz: t = 0, 0.5, …, 2.0
    arousal = labels.column("arousal").to_numpy()
    assert np.all(np.abs(arousal) <= 1)


def test_emotions_are_balanced_per_speaker(corpus):
    _, _, clips, _ = corpus
    for speaker in {c.speaker for c in clips}:
        assert sorted(c.label for c in clips if c.speaker == speaker) == sorted(CLASSES)


def test_words_are_timed_inside_the_clip_and_in_order(corpus):
    _, _, clips, _ = corpus
    timed = [c for c in clips if c.words]
    assert timed
    for c in timed:
        starts = [w["start"] for w in c.words]
        assert starts == sorted(starts)
        assert all(0 <= w["start"] < w["end"] <= c.duration for w in c.words)
        assert c.transcript == " ".join(w["word"] for w in c.words)


def test_same_seed_same_corpus_other_seed_other(tmp_path, corpus):
    _, _, clips, labels = corpus
    _, clips2, labels2 = generate_demo(TINY, tmp_path / "again", progress=False)
    assert labels2 == labels
    assert [c.transcript for c in clips2] == [c.transcript for c in clips]
    from pathlib import Path

    assert _digest(Path(clips2[0].media_path)) == _digest(Path(clips[0].media_path))  # byte-identical media
    other = plan_corpus(TINY.model_copy(update={"seed": 1}))
    assert [p.emotion for p in other] != [p.emotion for p in plan_corpus(TINY)] or not np.allclose(
        other[0].arousal, plan_corpus(TINY)[0].arousal
    )


def test_voice_carries_arousal():
    # a real measurement on the decoded audio: louder and higher-pitched when aroused
    params = CorpusParams(speakers=4, clips_per_speaker=4, seconds=2.0, fps=5, width=160, height=120)
    from pipeline.corpus.demo import synthesise_audio

    plans = plan_corpus(params)
    rms = {"high": [], "low": []}
    for p in plans:
        audio, _ = synthesise_audio(p, params, int(p.speaker[3:]), np.random.default_rng(0))
        group = "high" if p.emotion in ("angry", "happy") else "low"
        rms[group].append(np.sqrt(np.mean(audio**2)) * (1 if p.cue["voice"] > 0.5 else np.nan))
    assert np.nanmean(rms["high"]) > 1.2 * np.nanmean(rms["low"])


def test_face_is_found_except_where_it_left_the_frame(tmp_path):
    from facenet_pytorch import MTCNN

    params = CorpusParams(speakers=5, clips_per_speaker=4, seconds=3.0, fps=5, width=200, height=160)
    plans = plan_corpus(params)
    away = next(p for p in plans if p.away is not None)
    from pipeline.corpus.demo import render_video_frames

    frames = list(render_video_frames(away, params, int(away.speaker[3:]), np.random.default_rng(0)))
    times = np.arange(len(frames)) / params.fps
    inside = (times >= away.away[0]) & (times < away.away[0] + away.away[1])
    _, probs = MTCNN().detect(np.stack(frames))
    found = np.array([p is not None and p[0] is not None and p[0] > 0.9 for p in probs])
    assert found[~inside].mean() >= 0.9
    assert not found[inside].any()


def test_face_carries_valence():
    # the mouth region differs between a smiling and a frowning frame, the background does not
    from pipeline.corpus.synth_face import Expression, expressive_patch

    happy = expressive_patch(Expression(1, 0, 0, 0, 0))
    sad = expressive_patch(Expression(-1, 0, 0, 1, 0))
    mouth = np.abs(happy[100:120, 55:115] - sad[100:120, 55:115]).mean()
    corner = np.abs(happy[:10, :10] - sad[:10, :10]).mean()
    assert mouth > 0.02 and corner < 1e-6


def test_missing_transcripts_are_null(tmp_path):
    plans = plan_corpus(CorpusParams(speakers=10, clips_per_speaker=8))
    share = np.mean([p.text_kind is None for p in plans])
    assert 0.03 < share < 0.2
    carried = np.mean([p.text_kind in ("positive", "negative") for p in plans])
    assert 0.25 < carried < 0.6


def test_video_frames_decode_back(corpus):
    _, _, clips, _ = corpus
    frames = list(iter_video_frames(clips[0].media_path, 5.0))
    assert len(frames) == 10 and frames[0][1].shape == (160, 200, 3)
    audio = read_audio(clips[0].media_path, 16000)
    assert np.abs(audio).max() > 0.05
