import av
import numpy as np
import pytest

from pipeline.media import (
    MediaError,
    iter_video_frames,
    probe,
    read_audio,
    sample_times,
)


def _write_video(path, n_frames=10, fps=10, audio=False, sr=16000):
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=sr) if audio else None
        for i in range(n_frames):
            img = np.full((48, 64, 3), (i * 20) % 250, np.uint8)  # frame i has brightness 20*i (mod 250)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            samples = (0.5 * np.sin(2 * np.pi * 440 * np.arange(sr * n_frames // fps) / sr)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
            frame.sample_rate = sr
            for p in a.encode(frame):
                c.mux(p)
            for p in a.encode():
                c.mux(p)


def test_crema_d_decodes(crema_d_dir):
    path = crema_d_dir / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    info = probe(path)
    assert info.has_video and info.has_audio and info.width == 480 and info.sample_rate == 44100
    frames = list(iter_video_frames(path, 5.0))
    assert [round(t, 3) for t, _ in frames] == [round(t, 3) for t in sample_times(info.duration, 5.0)]
    assert frames[0][1].shape == (360, 480, 3) and frames[0][1].dtype == np.uint8
    audio = read_audio(path, 16000)
    assert audio.dtype == np.float32 and abs(len(audio) / 16000 - info.duration) < 0.1
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_frames_are_the_ones_on_screen(tmp_path):
    path = tmp_path / "v.mp4"
    _write_video(path, n_frames=10, fps=10)  # frame i shown during [i/10, (i+1)/10)
    got = list(iter_video_frames(path, 5.0))  # step centres 0.1, 0.3, ... -> frames 1, 3, 5, 7, 9
    assert [round(t, 2) for t, _ in got] == [0.1, 0.3, 0.5, 0.7, 0.9]
    brightness = [int(round(f.mean() / 20)) for _, f in got]
    assert brightness == [1, 3, 5, 7, 9]


def test_audio_resampled_to_mono_at_rate(tmp_path):
    path = tmp_path / "av.mp4"
    _write_video(path, n_frames=10, fps=10, audio=True, sr=44100)
    audio = read_audio(path, 16000)
    assert abs(len(audio) - 16000) < 2000  # 1 s, give or take the AAC priming frames
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 440) < 5


def test_bad_media_errors_name_the_file(tmp_path):
    with pytest.raises(MediaError, match="missing.mp4: file not found"):
        probe(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(MediaError, match="empty.mp4: file is empty"):
        read_audio(empty, 16000)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match="junk.mp4"):
        list(iter_video_frames(junk, 5.0))
    silent = tmp_path / "video_only.mp4"
    _write_video(silent)
    with pytest.raises(MediaError, match="video_only.mp4: no audio track"):
        read_audio(silent, 16000)


def test_truncated_file_is_an_error_or_shorter_never_a_crash(tmp_path):
    path = tmp_path / "v.mp4"
    _write_video(path, n_frames=30, fps=10, audio=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    try:
        frames = list(iter_video_frames(cut, 5.0))
    except MediaError as e:
        assert "cut.mp4" in str(e)
    else:
        assert len(frames) < 15
