"""Clips that are windows of their media (manifest start/end) and crops of their frames (manifest
crop), on the real CREMA-D clips: the window rule of `pipeline.media` and every extractor reading
through it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import opensmile
import pytest
import soundfile as sf

import pipeline.media.decode as media  # the decoding internals (seek points)
from pipeline.corpus.clip_media import clip_audio, clip_audio_source, clip_frames
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import clip_window_key, file_digest
from pipeline.extract.faces import FaceDetector, FacesExtractor
from pipeline.extract.faces.face_track import iou
from pipeline.extract.faces.params import FacesParams
from pipeline.extract.opensmile_lld import EgemapsLld, LldParams
from pipeline.extract.runner import RunStats, extract_corpus
from pipeline.media import MediaError, VideoSource, iter_video_frames, read_audio

SR = 16000
NAMES = ("1001_DFA_ANG_XX", "1001_DFA_HAP_XX", "1001_DFA_SAD_XX")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def flv(crema_d_dir) -> Path:
    return crema_d_dir / "VideoFlash" / f"{NAMES[0]}.flv"


@pytest.fixture(scope="module")
def flvs(crema_d_dir) -> list[Path]:
    return [crema_d_dir / "VideoFlash" / f"{n}.flv" for n in NAMES]


@pytest.fixture(scope="module")
def lld() -> EgemapsLld:
    return EgemapsLld(LldParams())


def clip(path: Path, clip_id: str = "c", start=None, end=None, crop=None, audio_path=None) -> Clip:
    duration = (end if end is not None else 2.0) - (start or 0.0)
    return Clip(clip_id=clip_id, speaker="1001", media_path=str(path), duration=duration, start=start, end=end,
                crop=crop, audio_path=None if audio_path is None else str(audio_path))


# --------------------------------------------------------------------------------------------------
# (a) audio of a window


def test_window_audio_is_the_whole_file_sliced(flvs):
    """Tolerance: none. A window starting within AUDIO_PREROLL_S of the file start is decoded from
    the start; a later one seeks, and its samples are fed to the resampler from an input sample on the
    output grid: either way the samples are the whole file's own, bit for bit (resampler edge
    effects stay in the pre-roll and post-roll, outside the window)."""
    for path in flvs:
        whole = read_audio(path, SR)
        for start, end in [(0.5, 1.5), (1.2, 1.8), (1.05, 1.9)]:
            got = clip_audio(clip(path, start=start, end=end), Path("."), SR)
            np.testing.assert_array_equal(got, whole[round(start * SR) : round(end * SR)])
        # null end: to the end of the file; null start with an end: from 0
        np.testing.assert_array_equal(read_audio(path, SR, 1.7, None), whole[round(1.7 * SR) :])
        np.testing.assert_array_equal(read_audio(path, SR, None, 0.8), whole[: round(0.8 * SR)])


def test_window_audio_of_a_long_file_seeks(tmp_path):
    """A window 12 s into a 20 s 44.1 kHz WAV: decoded from 1 s before the window (not from the file
    start), and equal to the whole file resampled then sliced, bit for bit."""
    rng = np.random.default_rng(0)
    sr_in = 44100
    t = np.arange(20 * sr_in) / sr_in
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    wav = tmp_path / "long.wav"
    sf.write(wav, x, sr_in, subtype="FLOAT")
    c, _, first, origin, n_first = media._start_audio(wav, 12.3)
    c.close()
    assert origin == 0.0 and 0 < n_first <= (12.3 - media.AUDIO_PREROLL_S) * sr_in
    whole = read_audio(wav, SR)
    got = read_audio(wav, SR, 12.3, 13.1)
    np.testing.assert_array_equal(got, whole[round(12.3 * SR) : round(13.1 * SR)])


# --------------------------------------------------------------------------------------------------
# (b) video frames of a window


def test_window_frames_are_the_whole_file_frames_at_those_times(flvs):
    for path in flvs:
        whole = list(iter_video_frames(path, 10.0))  # steps at 0.05, 0.15, …: window steps fall on them
        got = list(clip_frames(clip(path, start=0.5, end=1.5), Path("."), 10.0))
        np.testing.assert_allclose([t for t, _ in got], (np.arange(10) + 0.5) / 10, atol=1e-12)  # from 0
        assert len(got) == 10
        for (_, a), (_, b) in zip(got, whole[5:15]):
            np.testing.assert_array_equal(a, b)


def _write_numbered_video(path: Path, seconds: int, fps: int, gop: int) -> None:
    """Frame i has brightness 2·(i mod 120); a keyframe every `gop` frames."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"g": str(gop), "bframes": "0"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i in range(seconds * fps):
            img = np.full((48, 64, 3), 2 * (i % 120), np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)


def test_window_frames_of_a_long_file_seek(tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    _write_numbered_video(path, seconds=20, fps=10, gop=25)
    seeks = []
    real = media._open_video
    monkeypatch.setattr(media, "_open_video", lambda p, seek_to: seeks.append(seek_to) or real(p, seek_to))
    got = list(iter_video_frames(path, 10.0, 13.0, 14.5))
    assert seeks == [13.0]  # one seek to the window, no fallback to the file start
    whole = list(iter_video_frames(path, 10.0))
    np.testing.assert_allclose([t for t, _ in got], (np.arange(15) + 0.5) / 10, atol=1e-12)
    for (_, a), (_, b) in zip(got, whole[130:145], strict=True):
        np.testing.assert_array_equal(a, b)


def test_crop_cuts_every_frame(flv):
    whole = list(iter_video_frames(flv, 5.0))
    h, w = whole[0][1].shape[:2]  # 360 × 480
    got = list(iter_video_frames(flv, 5.0, crop=(0.1, 0.0, 0.9, 1.0)))
    assert len(got) == len(whole)
    for (_, a), (_, b) in zip(got, whole):
        np.testing.assert_array_equal(a, b[:, round(0.1 * w) : round(0.9 * w)])
    with pytest.raises(MediaError, match=rf"{NAMES[0]}\.flv: crop \[0.5, 0.0, 0.2, 1.0\] is not a region"):
        list(iter_video_frames(flv, 5.0, crop=(0.5, 0.0, 0.2, 1.0)))


# --------------------------------------------------------------------------------------------------
# (c) eGeMAPS of a window


def test_egemaps_of_a_window_equal_the_window_cut_into_its_own_wav(lld, flvs, tmp_path):
    """Tolerance: none (the window's samples are the whole file's, test (a); openSMILE then sees the
    same samples as from the cut WAV)."""
    for path in flvs:
        rows = lld.process_clip(clip(path, start=0.5, end=1.5), Path("."))
        wav = tmp_path / f"{path.stem}-window.wav"
        sf.write(wav, read_audio(path, SR)[round(0.5 * SR) : round(1.5 * SR)], SR, subtype="FLOAT")
        ref = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        ).process_file(str(wav))
        np.testing.assert_array_equal(rows.values, ref.to_numpy(np.float32))
        start = ref.index.get_level_values("start").total_seconds().to_numpy()
        np.testing.assert_allclose(rows.t, start + 0.010, atol=1e-9)
        assert rows.t[0] == pytest.approx(0.010) and rows.t[-1] < 1.0  # from the window's start


def test_whole_file_clip_is_unchanged(lld, flv):
    """A whole-file clip reads the whole file as before windows existed (same samples, same rows)."""
    whole = clip(flv)
    np.testing.assert_array_equal(clip_audio(whole, Path("."), SR), read_audio(flv, SR))
    a = lld.process_clip(whole, Path("."))
    b = lld.process_signal(read_audio(flv, SR), SR, flv)
    np.testing.assert_array_equal(a.values, b.values)


# --------------------------------------------------------------------------------------------------
# (d) faces on a crop


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(FacesParams(), device="cpu")


def test_faces_on_a_crop_containing_the_face(detector, flv):
    crop = (0.1, 0.0, 0.9, 1.0)  # CREMA-D's actor is centred in the 480 × 360 frame
    d = FacesExtractor(FacesParams(), device="cpu", detector=detector).process_clip(
        clip(flv, start=0.5, end=1.5, crop=list(crop)), Path(".")
    )
    assert (d.frame_width, d.frame_height) == (384, 360)  # the cropped frame's size
    np.testing.assert_allclose(d.t, (np.arange(5) + 0.5) / 5, atol=1e-12)  # 5 Hz, from the window's start
    assert d.present.all()
    assert (d.box[:, [0, 2]] >= -5).all() and (d.box[:, [0, 2]] <= 384 + 5).all()  # MTCNN boxes may overhang a little
    assert (d.box[:, [1, 3]] >= -5).all() and (d.box[:, [1, 3]] <= 360 + 5).all()
    # the same face as on the whole frame, moved by the crop's left edge (48 px); MTCNN sees another
    # image (another pyramid), so the boxes agree to IoU > 0.8, not to the pixel (here ≤ 10 px apart)
    full = detector.process_video(VideoSource(flv, 0.5, 1.5))
    assert full.present.all() and (full.frame_width, full.frame_height) == (480, 360)
    for a, b in zip(d.box + np.float32([48, 0, 48, 0]), full.box):
        assert iou(a, b)[0] > 0.8


def test_faces_on_a_crop_without_the_face(detector, flv):
    d = detector.process_video(VideoSource(flv, 0.5, 1.5, (0.0, 0.0, 0.2, 0.2)))
    assert (d.frame_width, d.frame_height) == (96, 72)
    assert len(d) == 5 and not d.present.any()


# --------------------------------------------------------------------------------------------------
# (e) cache keys


def test_cache_key_covers_window_and_crop(lld, flv):
    root = Path(".")
    faces = FacesExtractor(FacesParams(), device="cpu")
    for ex in (lld, faces):
        key = lambda **kw: ex.input_fingerprint(clip(flv, **kw), root)  # noqa: E731
        a, b = key(start=0.5, end=1.5), key(start=1.0, end=2.0)
        assert a != b  # two windows of one file: two inputs
        assert a == key(start=0.5, end=1.5)  # the same window twice: one input
        assert key(crop=[0.0, 0.0, 0.5, 1.0]) != key(crop=[0.5, 0.0, 1.0, 1.0]) != key()
        assert key(start=0.5, end=1.5) != key()
    # a whole-file clip keeps its key from before windows existed
    assert faces.input_fingerprint(clip(flv), root) == file_digest(flv)
    assert clip_window_key(clip(flv)) is None


def test_runner_extracts_two_windows_of_one_file_once_each(lld, flv, tmp_path):
    clips = [clip(flv, "w1", 0.5, 1.5), clip(flv, "w2", 1.0, 2.0), clip(flv, "w1bis", 0.5, 1.5)]
    cache = tmp_path / "cache"
    extract_corpus(lld, clips, out_dir=tmp_path / "f", errors_dir=tmp_path / "e", cache_dir=cache)
    stats = RunStats()
    extract_corpus(lld, clips, out_dir=tmp_path / "f", errors_dir=tmp_path / "e", cache_dir=cache, stats=stats)
    assert stats.cached == 3 and stats.extracted == 0
    assert len(list(cache.rglob("*.arrow"))) == 2  # the same window under two ids is one entry


# --------------------------------------------------------------------------------------------------
# (f) a separate audio file is read whole


def test_separate_audio_file_is_read_whole(lld, flv, tmp_path):
    wav = tmp_path / "utterance.wav"
    sf.write(wav, read_audio(flv, SR), SR, subtype="FLOAT")
    c = clip(flv, start=0.5, end=1.5, audio_path=wav)
    assert clip_audio_source(c, Path(".")) == (wav, None, None)
    np.testing.assert_array_equal(clip_audio(c, Path("."), SR), sf.read(wav, dtype="float32")[0])
    rows = lld.process_clip(c, Path("."))
    np.testing.assert_array_equal(rows.values, lld.process_signal(read_audio(wav, SR), SR, wav).values)
    # the video still is the window
    assert len(list(clip_frames(c, Path("."), 5.0))) == 5


# --------------------------------------------------------------------------------------------------
# (g) a window beyond the media


def test_window_beyond_the_end_is_a_media_error_naming_the_file(lld, flv, detector):
    name = rf"{NAMES[0]}\.flv"
    with pytest.raises(MediaError, match=rf"{name}: window \[5\.000, 6\.000\) s starts after the end of the audio"):
        read_audio(flv, SR, 5.0, 6.0)
    with pytest.raises(MediaError, match=rf"{name}: window \[1\.000, 9\.000\) s ends after the end of the audio"):
        read_audio(flv, SR, 1.0, 9.0)
    with pytest.raises(MediaError, match=rf"{name}: window \[5\.000, 6\.000\) s starts after the end of the video"):
        list(iter_video_frames(flv, 5.0, 5.0, 6.0))
    with pytest.raises(MediaError, match=rf"{name}: window \[1\.000, 9\.000\) s ends after the end of the video"):
        list(iter_video_frames(flv, 5.0, 1.0, 9.0))
    with pytest.raises(MediaError, match=rf"{name}: window \[1\.500, 0\.500\) s is empty"):
        read_audio(flv, SR, 1.5, 0.5)
    with pytest.raises(MediaError, match=rf"{name}: window \[5\.000, 6\.000\) s"):
        lld.process_clip(clip(flv, start=5.0, end=6.0), Path("."))
    with pytest.raises(MediaError, match=rf"{name}: window \[5\.000, 6\.000\) s"):
        detector.process_video(VideoSource(flv, 5.0, 6.0))
    # a window ending within WINDOW_TOLERANCE_S after the track is cut at its end
    whole = read_audio(flv, SR)
    end = len(whole) / SR + 0.1
    np.testing.assert_array_equal(read_audio(flv, SR, 1.0, end), whole[SR:])


# --------------------------------------------------------------------------------------------------
# the other extractors


def test_wav2vec2_of_a_window_is_the_window_signal(flv):
    from pipeline.extract.params import Wav2Vec2Params
    from pipeline.extract.wav2vec2 import Wav2Vec2Features

    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "conv_dim": [32] * 7}
    ex = Wav2Vec2Features(Wav2Vec2Params(random_config=tiny, seed=1), device="cpu")
    rows = ex.process_clip(clip(flv, start=0.5, end=1.5), Path("."))
    ref = ex.process_signal(read_audio(flv, SR)[round(0.5 * SR) : round(1.5 * SR)], "cut")
    np.testing.assert_array_equal(rows.values, ref.values)
    np.testing.assert_allclose(rows.t, ref.t)
    assert rows.t[0] == pytest.approx(0.0125)  # centre of the first 25 ms receptive field, from the window's start


def test_csv_import_keeps_the_window_rows_from_its_start(tmp_path):
    from pipeline.extract.base import ExtractionError
    from pipeline.extract.csv_import import CsvImport, ImportParams

    folder = tmp_path / "feats"
    folder.mkdir()
    lines = ["timestamp,ECG,RESP,BPM"] + [f"{500 * i},{i},{2 * i},{3 * i}" for i in range(20)]  # 0 … 9.5 s at 2 Hz
    (folder / "c.csv").write_text("\n".join(lines) + "\n")
    imp = CsvImport(ImportParams(dir=str(folder)), root=tmp_path)
    whole = imp.process_clip(clip(Path("unused.mp4")), tmp_path)
    assert len(whole.t) == 20  # no window: every row, as given
    rows = imp.process_clip(clip(Path("unused.mp4"), start=2.0, end=4.0), tmp_path)
    np.testing.assert_allclose(rows.t, [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(rows.values[:, 0], [4, 5, 6, 7])
    key = lambda **kw: imp.input_fingerprint(clip(Path("unused.mp4"), **kw), tmp_path)  # noqa: E731
    assert key(start=2.0, end=4.0) != key(start=4.0, end=6.0) != key()
    with pytest.raises(ExtractionError, match=r"c\.csv: no row in the clip's window \[20\.000, 21\.000\) s"):
        imp.process_clip(clip(Path("unused.mp4"), start=20.0, end=21.0), tmp_path)
