"""The generated demo corpus: real files, determinism, labels, words, and that each modality carries
the cues it is meant to carry (measured on the decoded media)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from skimage.color import rgb2gray
from skimage.transform import warp

from pipeline.corpus.demo import (
    CLASSES,
    SENTENCES,
    CorpusError,
    biosignals_path_for,
    clip_biosignals,
    face_states,
    generate_demo,
    label_times,
    plan_corpus,
    session_of,
    speaker_look,
    write_biosignals,
)
from pipeline.corpus.demo.params import CorpusParams
from pipeline.corpus.demo.synth_face import FaceRenderer, FaceState
from pipeline.corpus.manifest import (
    read_labels,
    read_manifest,
    write_labels,
    write_manifest,
)
from pipeline.media import read_audio
from pipeline.segment.protocols import assign_folds

REPO = Path(__file__).resolve().parents[1]
# every speaker says all four emotions once: within-speaker comparisons are possible
MEASURE = CorpusParams(speakers=4, clips_per_speaker=4, seconds=2.0, fps=10, width=160, height=120)
TINY = CorpusParams(speakers=3, clips_per_speaker=2, seconds=2.0, fps=8, width=128, height=96)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    info, clips, labels = generate_demo(MEASURE, root / "corpus", progress=False, workers=2)
    write_manifest(root / "manifest.parquet", info, clips)
    write_labels(root / "labels.parquet", labels)
    return root, info, clips, labels


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _decoded_frames(path: str | Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def test_media_are_h264_aac_mp4_with_the_configured_geometry(corpus):
    _, _, clips, _ = corpus
    assert len(clips) == 16
    for clip in clips:
        path = Path(clip.media_path)
        assert path.parent.name == "media" and path.name == f"{clip.clip_id}.mp4" and path.is_file()
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
            assert (v.codec_context.width, v.codec_context.height) == (160, 120)
            assert float(v.average_rate) == pytest.approx(10)
            assert a.codec_context.name == "aac" and a.codec_context.sample_rate == 16000
            assert a.codec_context.channels == 1
            assert float(c.duration / av.time_base) == pytest.approx(2.0, abs=0.07)
            assert sum(1 for _ in c.decode(video=0)) == 20
        audio = read_audio(path, 16000)
        assert len(audio) == pytest.approx(32000, abs=1100)  # AAC pads the last frame
        assert np.abs(audio).max() > 0.02
    assert not list((Path(clips[0].media_path).parent).glob(".*"))  # no temporary files left


def test_manifest_and_labels(corpus):
    root, info, clips, labels = corpus
    info2, clips2 = read_manifest(root / "manifest.parquet")
    assert info2.name == "demo" and info2.classes == CLASSES == ["neutral", "happy", "angry", "sad"]
    assert info2.label_rate_hz == 2.0 and info2.params == MEASURE.model_dump()
    assert [c.clip_id for c in clips2] == [f"spk{s:02d}_clip{c:03d}" for s in range(4) for c in range(4)]
    assert all(c.partition is None and c.duration == 2.0 for c in clips2)
    assert all(c.speaker == c.clip_id[:5] for c in clips2)
    # sessions as IEMOCAP's, two speakers each: spk00/spk01 → Ses01, spk02/spk03 → Ses02
    assert [c.session for c in clips2] == ["Ses01"] * 8 + ["Ses02"] * 8
    # so 003's leave-one-session-out runs on it: each fold tests one session, devel from the other's speakers
    folds = assign_folds(clips2, "leave_one_group_out", devel=0.5, group="session")
    assert folds.shape == (2, 16)
    for k, held in enumerate(["Ses01", "Ses02"]):
        assert {c.session for c, p in zip(clips2, folds[k]) if p == "test"} == {held}
        assert {p for c, p in zip(clips2, folds[k]) if c.session != held} == {"train", "devel"}
    table = read_labels(root / "labels.parquet")
    assert table.num_rows == 16 * 5
    assert table.column("t").to_pylist()[:5] == [0.0, 0.5, 1.0, 1.5, 2.0] == label_times(MEASURE).tolist()
    for key in ("arousal", "valence"):
        x = table.column(key).to_numpy()
        assert np.all(np.abs(x) <= 1) and np.std(x) > 0.1


def test_sessions_pair_consecutive_speakers():
    assert [session_of(s) for s in range(12)] == [f"Ses{k:02d}" for k in range(1, 7) for _ in range(2)]
    plans = plan_corpus(CorpusParams(speakers=5, clips_per_speaker=2))  # an odd last speaker is alone
    assert [p.session for p in plans] == ["Ses01"] * 4 + ["Ses02"] * 4 + ["Ses03"] * 2


def test_labels_follow_the_emotions_and_are_balanced():
    params = CorpusParams(speakers=8, clips_per_speaker=8)
    plans = plan_corpus(params)
    for s in range(8):
        counts = [sum(p.speaker_index == s and p.emotion == e for p in plans) for e in CLASSES]
        assert counts == [2, 2, 2, 2]
    # 6 clips per speaker: every speaker has each class once or twice, the corpus stays balanced
    odd = plan_corpus(CorpusParams(speakers=4, clips_per_speaker=6))
    assert [sum(p.emotion == e for p in odd) for e in CLASSES] == [6, 6, 6, 6]
    t = np.linspace(0, params.seconds, 41)
    mean = {
        e: np.mean([[p.arousal(t).mean(), p.valence(t).mean()] for p in plans if p.emotion == e], axis=0)
        for e in CLASSES
    }
    assert min(mean["angry"][0], mean["happy"][0]) > max(mean["sad"][0], mean["neutral"][0]) + 0.4
    assert mean["happy"][1] > mean["neutral"][1] + 0.3 > max(mean["angry"][1], mean["sad"][1]) + 0.6
    # smooth: steps between 2 Hz samples are small
    steps = np.concatenate([np.abs(np.diff(p.valence(label_times(params)))) for p in plans])
    assert steps.max() < 0.4


def test_transcripts_missing_and_emotional_in_the_planned_shares():
    plans = plan_corpus(CorpusParams(speakers=8, clips_per_speaker=8))
    assert sum(p.text_kind is None for p in plans) == 6  # round(10% of 64)
    emotional = [p for p in plans if p.emotion != "neutral" and p.text_kind is not None]
    carried = [p for p in emotional if p.text_kind != "neutral"]
    assert 0.4 <= len(carried) / len(emotional) <= 0.6
    for p in carried:  # an emotional clip opens with a sentence of its emotion (or general negativity)
        first = " ".join(p.sentences[0])
        banks = ["happy"] if p.emotion == "happy" else [p.emotion, "negative"]
        assert any(first in SENTENCES[b] for b in banks)
    for p in plans:
        if p.emotion == "neutral" or p.text_kind in (None, "neutral"):
            assert all(" ".join(s) in SENTENCES["neutral"] for s in p.sentences)


def test_words_are_timed_on_the_speech(corpus):
    _, _, clips, _ = corpus
    assert sum(c.transcript is None for c in clips) == 2  # round(10% of 16), at least one
    inside, outside = [], []
    for c in clips:
        if c.transcript is None:
            assert c.words is None
            continue
        assert c.transcript == " ".join(w["word"] for w in c.words)
        ends = [0.0]
        for w in c.words:
            assert ends[-1] <= w["start"] < w["end"] <= c.duration
            ends.append(w["end"])
        # the word spans are where the sound is: 20 ms frame levels inside vs. outside the words
        audio = read_audio(c.media_path, 16000)[:32000]
        level = 10 * np.log10(np.mean(audio.reshape(-1, 320) ** 2, axis=1) + 1e-12)
        centre = (np.arange(len(level)) + 0.5) * 0.02
        in_word = np.zeros(len(level), bool)
        for w in c.words:
            in_word |= (centre > w["start"] + 0.02) & (centre < w["end"] - 0.02)
        near = np.zeros(len(level), bool)
        for w in c.words:
            near |= (centre > w["start"] - 0.06) & (centre < w["end"] + 0.06)
        inside.append(np.median(level[in_word]))
        if (~near).any():
            outside.append(np.median(level[~near]))
    assert min(inside) > max(outside) + 20


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    info1, clips1, labels1 = generate_demo(TINY, tmp_path / "a", progress=False, workers=1)
    info2, clips2, labels2 = generate_demo(TINY, tmp_path / "b", progress=False, workers=2)
    assert info1 == info2 and labels1 == labels2
    strip = lambda clips: [{**c.__dict__, "media_path": Path(c.media_path).name} for c in clips]  # noqa: E731
    assert strip(clips1) == strip(clips2)
    # byte-identical media, whatever the number of worker processes (see write_mp4 on x264)
    assert [_sha(c.media_path) for c in clips1] == [_sha(c.media_path) for c in clips2]
    _, clips3, labels3 = generate_demo(TINY.model_copy(update={"seed": 1}), tmp_path / "c", progress=False, workers=1)
    assert labels3["arousal"] != labels1["arousal"]
    assert [c.transcript for c in clips3] != [c.transcript for c in clips1]
    assert all(_sha(a.media_path) != _sha(b.media_path) for a, b in zip(clips1, clips3))
    decoded = [_decoded_frames(c.media_path) for c in (clips1[0], clips3[0])]
    assert np.abs(decoded[0].astype(int) - decoded[1]).mean() > 5


def test_relative_out_dir_gives_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = TINY.model_copy(update={"speakers": 3, "clips_per_speaker": 1, "seconds": 1.0})
    _, clips, _ = generate_demo(params, Path("data/corpus"), progress=False, workers=1)
    expected = [str(Path("data/corpus/media") / f"spk{s:02d}_clip000.mp4") for s in range(3)]
    assert [c.media_path for c in clips] == expected
    assert all(Path(c.media_path).is_file() for c in clips)


def test_odd_frame_size_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="even"):
        generate_demo(TINY.model_copy(update={"width": 131}), tmp_path, progress=False)


# ----------------------------------------------------------------------------------------------
# What each modality carries (measured)
# ----------------------------------------------------------------------------------------------


def _f0_and_level(audio: np.ndarray, sr: int = 16000) -> tuple[float, float]:
    """Median F0 (Hz) over voiced 40 ms frames (autocorrelation) and the 90th-percentile frame level (dB)."""
    hop, win = 160, 640
    frames = np.lib.stride_tricks.sliding_window_view(audio, win)[::hop]
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    f0 = []
    lo, hi = sr // 400, sr // 70
    for fr, lv in zip(frames, level):
        if lv < level.max() - 25:
            continue
        x = (fr - fr.mean()) * np.hanning(win)
        ac = np.correlate(x, x, "full")[win - 1 :]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5:
            f0.append(sr / lag)
    return float(np.median(f0)), float(np.percentile(level, 90))


def test_voice_carries_arousal(corpus):
    """Decoded audio: aroused clips (angry, happy) are higher in pitch and louder than sad ones of
    the same speaker (within-speaker differences in semitones and dB, averaged over speakers)."""
    _, _, clips, _ = corpus
    measured = {c.clip_id: _f0_and_level(read_audio(c.media_path, 16000)) for c in clips}
    d_pitch, d_level = [], []
    for s in range(4):
        own = {c.label: measured[c.clip_id] for c in clips if c.speaker == f"spk{s:02d}"}
        for e in ("angry", "happy"):
            d_pitch.append(12 * np.log2(own[e][0] / own["sad"][0]))
            d_level.append(own[e][1] - own["sad"][1])
    assert np.mean(d_pitch) > 2.0 and np.mean(d_level) > 4.0
    assert sum(d > 0 for d in d_level) >= 6  # of 8 pairs
    # the speakers differ: low (even) and high (odd) voices
    f0_speaker = [np.median([measured[c.clip_id][0] for c in clips if c.speaker == f"spk{s:02d}"]) for s in range(4)]
    assert min(f0_speaker[1], f0_speaker[3]) > 1.3 * max(f0_speaker[0], f0_speaker[2])


MOUTH_BOX = (192, 122, 258, 168)  # photo coordinates around the mouth (see synth_face.LANDMARKS)


def _canonical_mouth(frame: np.ndarray, renderer: FaceRenderer, state: FaceState) -> np.ndarray:
    """The mouth region of a frame, warped back into photo coordinates with the frame's camera,
    grey and standardised (so lighting and tint drop out)."""
    x0, y0, x1, y1 = MOUTH_BOX
    to_frame = renderer.camera(state) @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    patch = warp(rgb2gray(frame), to_frame, output_shape=(y1 - y0, x1 - x0), order=1)
    return (patch - patch.mean()) / (patch.std() + 1e-9)


def test_face_mouth_differs_between_smile_and_frown():
    renderer = FaceRenderer(160, 120)
    pose = FaceState(dx=4, dy=-3, angle=3, scale=1.05)
    smile, frown = (renderer.render(FaceState(**{**pose.__dict__, "valence": v})) for v in (0.8, -0.8))
    x0, y0, x1, y1 = (int(v) for v in renderer.face_box(pose))
    mouth_rows = slice(y0 + (y1 - y0) * 5 // 10, y1)
    diff = np.abs(smile.astype(int) - frown)
    assert diff[mouth_rows, x0:x1].mean() > 3 * diff[y0 : y0 + (y1 - y0) // 3, x0:x1].mean() + 1
    assert diff[:, : max(x0 - 10, 1)].max() <= 1  # away from the face nothing moves (rounding aside)
    # the mouth corners are lower in the frown: darkest row near the left corner moves down
    cx, cy = renderer.to_frame(pose, np.array([[204.0, 140.0]]))[0]
    win = lambda img: rgb2gray(img)[int(cy) - 8 : int(cy) + 10, int(cx) - 3 : int(cx) + 4]  # noqa: E731
    assert np.argmin(win(frown).mean(axis=1)) > np.argmin(win(smile).mean(axis=1))


def test_face_carries_valence_in_the_decoded_video(corpus):
    """Decoded frames, mouth region in photo coordinates, projected on the smile-minus-frown template:
    happy clips score above angry and sad ones of the same speaker."""
    _, _, clips, _ = corpus
    plans = {p.clip_id: p for p in plan_corpus(MEASURE)}
    score: dict[str, float] = {}
    for c in clips:
        plan = plans[c.clip_id]
        renderer = FaceRenderer(MEASURE.width, MEASURE.height, speaker_look(MEASURE, plan.speaker_index))
        template = _canonical_mouth(renderer.render(FaceState(valence=1.0)), renderer, FaceState()) - _canonical_mouth(
            renderer.render(FaceState(valence=-1.0)), renderer, FaceState()
        )
        states = face_states(plan, MEASURE, renderer, [])
        frames = _decoded_frames(c.media_path)
        usable = [i for i, s in enumerate(states) if abs(s.dx) < 20 and not s.occluded][::2]
        projections = [np.sum(_canonical_mouth(frames[i], renderer, states[i]) * template) for i in usable]
        score[c.clip_id] = float(np.mean(projections))
    by = {e: np.array([score[c.clip_id] for c in clips if c.label == e]) for e in CLASSES}
    assert by["happy"].mean() > by["neutral"].mean() > max(by["angry"].mean(), by["sad"].mean())
    for s in range(4):
        own = {c.label: score[c.clip_id] for c in clips if c.speaker == f"spk{s:02d}"}
        assert own["happy"] > max(own["angry"], own["sad"])


def test_mtcnn_finds_the_face_except_out_of_frame_and_occluded(corpus):
    from facenet_pytorch import MTCNN

    _, _, clips, _ = corpus
    plans = {p.clip_id: p for p in plan_corpus(MEASURE)}
    spans = [(c, sp) for c in clips for sp in plans[c.clip_id].spans]
    assert {sp.kind for _, sp in spans} == {"out_of_frame", "occluded"}
    away, normal, covered = [], [], []
    for c, sp in spans:
        frames = _decoded_frames(c.media_path)
        inside = list(sp.frames())
        (away if sp.kind == "out_of_frame" else covered).extend(frames[i] for i in inside[:: max(1, len(inside) // 3)])
        blocked = {i for s in plans[c.clip_id].spans for i in range(s.start - s.ramp - 1, s.end + s.ramp + 1)}
        free = [i for i in range(len(frames)) if i not in blocked]
        normal.extend(frames[i] for i in free[:: max(1, len(free) // 3)][:3])
    detector = MTCNN(keep_all=False, device="cpu", min_face_size=20)

    def found(frames: list[np.ndarray]) -> np.ndarray:
        _, probs = detector.detect(frames)
        return np.array([p is not None and p[0] is not None and float(p[0]) >= 0.9 for p in probs])

    assert found(normal).all()
    assert not found(away).any()
    assert found(covered).mean() <= 0.2


# ----------------------------------------------------------------------------------------------
# The stage script
# ----------------------------------------------------------------------------------------------


def _run_stage(cwd: Path, corpus_yaml: str) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(corpus_yaml)
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "corpus.py")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_stage_writes_the_corpus_and_removes_stale_media(tmp_path):
    stale = tmp_path / "data/corpus/media/spk09_clip000.mp4"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (stale.parent / ".spk00_clip000.mp4.abc.mp4").write_bytes(b"left by a killed run")
    yaml = "corpus:\n  speakers: 3\n  clips_per_speaker: 1\n  seconds: 1.0\n  fps: 5\n  width: 96\n  height: 96\n"
    r = _run_stage(tmp_path, yaml)
    assert r.returncode == 0, r.stderr
    info, clips = read_manifest(tmp_path / "data/corpus/manifest.parquet")
    assert [c.media_path for c in clips] == [f"data/corpus/media/spk{s:02d}_clip000.mp4" for s in range(3)]
    assert [c.session for c in clips] == ["Ses01", "Ses01", "Ses02"]
    left = sorted(p.name for p in (tmp_path / "data/corpus/media").iterdir())
    assert left == [Path(c.media_path).name for c in clips]
    assert read_labels(tmp_path / "data/corpus/labels.parquet").num_rows == 3 * 3


@pytest.mark.parametrize(
    "yaml, message",
    [("corpus:\n  speakers: 2\n", "corpus.speakers"), ("corpus:\n  width: 161\n", "even")],
)
def test_stage_reports_bad_settings_without_a_traceback(tmp_path, yaml, message):
    r = _run_stage(tmp_path, yaml)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------
# Biosignals (MuSe-style CSVs, read by the `import` extractor)
# ----------------------------------------------------------------------------------------------


def test_biosignal_csvs_are_written_for_every_clip_in_the_muse_layout(corpus):
    import pandas as pd

    root, _, clips, _ = corpus
    folder = root / "corpus" / "biosignals"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c.clip_id}.csv" for c in clips)
    for c in clips:
        table = pd.read_csv(biosignals_path_for(root / "corpus", c.clip_id))
        assert list(table.columns) == ["timestamp", "segment_id", "ECG", "RESP", "BPM", "EDA"]
        assert table.timestamp.tolist() == [0, 500, 1000, 1500, 2000]  # ms, at the 2 Hz label times
        assert (table.segment_id == 1).all()
        ok = table.BPM.notna()
        assert table.BPM[ok].between(40, 130).all() and (table.EDA[ok] > 0).all()


def test_biosignals_follow_arousal_fast_and_deterministic():
    import io

    import pandas as pd

    params = CorpusParams(speakers=12, clips_per_speaker=8)  # the demo's size
    plans = plan_corpus(params)
    start = time.perf_counter()
    texts = [clip_biosignals(p, params) for p in plans]
    assert time.perf_counter() - start < 1.0
    assert texts == [clip_biosignals(p, params) for p in plans]
    other = CorpusParams(speakers=12, clips_per_speaker=8, seed=1)
    assert all(a != b for a, b in zip(texts, [clip_biosignals(p, other) for p in plan_corpus(other)]))
    tables = [pd.read_csv(io.StringIO(text)) for text in texts]
    lost = [t.BPM.isna().any() for t in tables]
    assert 0.03 <= np.mean(lost) <= 0.25  # sensor dropouts in some clips: empty rows
    for t in tables:  # a dropout empties every signal of its rows
        assert (t[["ECG", "RESP", "BPM", "EDA"]].isna().sum(axis=1).isin([0, 4])).all()
    arousal = np.concatenate([p.arousal(t.timestamp.to_numpy() / 1000) for p, t in zip(plans, tables)])
    data = pd.concat(tables)
    ok = data.BPM.notna().to_numpy()
    assert np.corrcoef(data.BPM.to_numpy()[ok], arousal[ok])[0, 1] > 0.5
    # skin conductance: within speaker (tonic levels differ between speakers), the clip means follow arousal
    eda, ar = [], []
    for s in range(params.speakers):
        own = [(t.EDA.mean(), p.arousal(t.timestamp.to_numpy() / 1000).mean()) for p, t in zip(plans, tables)
               if p.speaker_index == s]
        e, a = np.array(own).T
        eda += list(e - e.mean())
        ar += list(a - a.mean())
    assert np.corrcoef(eda, ar)[0, 1] > 0.5
    # ECG at 2 Hz is a downsampled beat: small values mostly, an R peak now and then
    ecg = data.ECG.to_numpy()[ok]
    assert np.median(np.abs(ecg)) < 0.2 and ecg.max() > 0.5


def test_write_biosignals_removes_stale_files(tmp_path):
    params = TINY.model_copy(update={"speakers": 3, "clips_per_speaker": 1})
    stale = tmp_path / "biosignals" / "spk09_clip000.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    (stale.parent / ".spk00_clip000.csv.x.tmp").write_text("left by a killed run")
    write_biosignals(plan_corpus(params), params, tmp_path)
    assert sorted(p.name for p in stale.parent.iterdir()) == [f"spk{s:02d}_clip000.csv" for s in range(3)]
