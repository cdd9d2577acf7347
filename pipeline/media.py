"""Media files with PyAV (FFmpeg): decoding video frames and audio, whatever the container and codec,
and encoding an MP4 (H.264 + AAC) whose bytes depend on its input alone (`write_mp4`).

Every failure is a `MediaError` that names the file and the cause (missing file, no such stream,
corrupt or truncated data, an unwritable target), so a stage can report it per clip instead of dying
with a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from pipeline.errors import PipelineError
from pipeline.store import atomic_path


class MediaError(PipelineError):
    """A media file cannot be used; the message names the file and the cause."""


@dataclass
class MediaInfo:
    path: Path
    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: cannot open as media ({e})") from None


def probe(path: str | Path) -> MediaInfo:
    with _open(path) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        duration = float(c.duration / av.time_base) if c.duration else 0.0
        if not duration:
            for s in (v, a):
                if s is not None and s.duration and s.time_base:
                    duration = max(duration, float(s.duration * s.time_base))
        return MediaInfo(
            path=Path(path),
            duration=duration,
            has_video=v is not None,
            has_audio=a is not None,
            fps=float(v.average_rate) if v is not None and v.average_rate else None,
            width=v.codec_context.width if v is not None else None,
            height=v.codec_context.height if v is not None else None,
            sample_rate=a.codec_context.sample_rate if a is not None else None,
            channels=a.codec_context.channels if a is not None else None,
        )


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The whole audio track as mono float32 in [-1, 1] at `sample_rate` (channels averaged)."""
    path = Path(path)
    with _open(path) as c:
        if not c.streams.audio:
            raise MediaError(f"{path}: no audio track")
        stream = c.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: audio track is corrupt or truncated ({e})") from None
    if not chunks:
        raise MediaError(f"{path}: audio track holds no samples")
    signal = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(signal)):
        raise MediaError(f"{path}: audio decodes to non-finite samples")
    return signal


def sample_times(duration: float, rate_hz: float) -> np.ndarray:
    """Step centres (k + 0.5) / rate that fall inside [0, duration)."""
    n = int(np.floor(duration * rate_hz + 1e-9))
    return (np.arange(n) + 0.5) / rate_hz


def iter_video_frames(path: str | Path, rate_hz: float) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t, RGB uint8 H×W×3) at step centres (k + 0.5)/rate_hz: for each step, the last frame
    whose presentation time is at or before t (the frame on screen at that moment)."""
    path = Path(path)
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"{path}: no video track")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        step = 1.0 / rate_hz
        k = 0
        target = 0.5 * step
        on_screen: av.VideoFrame | None = None  # the latest frame decoded so far
        last_time = 0.0
        try:
            for frame in c.decode(stream):
                if frame.time is None:
                    continue
                ft = float(frame.time)
                # every target before this frame's start shows the previous frame
                while on_screen is not None and target < ft - 1e-9:
                    yield target, on_screen.to_ndarray(format="rgb24")
                    k += 1
                    target = (k + 0.5) * step
                on_screen, last_time = frame, ft
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: video track is corrupt or truncated ({e})") from None
        previous = on_screen
        if previous is None:
            raise MediaError(f"{path}: video track holds no decodable frames")
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        end = last_time + 1.0 / fps
        last = previous.to_ndarray(format="rgb24")
        while target < end - 1e-9:
            yield target, last
            k += 1
            target = (k + 0.5) * step


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """H.264 (yuv420p) + AAC (mono) in MP4, written atomically.

    The bytes are a function of the input alone (checked by the tests): single-threaded x264,
    bit-exact muxing, and no B-frames / macroblock tree. With B-frames and mbtree on, the libx264 in
    PyAV's wheel gave different bitstreams for the same frames from run to run, even with one thread
    (not with asm=0, so presumably an assembly routine reads uninitialised memory); so they are off."""
    x264 = {
        "crf": "20", "preset": "veryfast", "threads": "1", "flags": "+bitexact",
        "x264-params": "bframes=0:no-mbtree=1",
    }
    try:
        with atomic_path(path, suffix=".mp4") as tmp:
            with av.open(str(tmp), mode="w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
                v = out.add_stream("libx264", rate=fps, options=x264)
                v.pix_fmt = "yuv420p"
                to_yuv = VideoReformatter()  # one converter for all frames (a new one per frame is slow)
                a = out.add_stream("aac", rate=sample_rate, options={"flags": "+bitexact"})
                a.layout = "mono"
                a.bit_rate = 64000
                first = True
                for i, img in enumerate(frames):
                    if first:
                        v.height, v.width = img.shape[:2]
                        first = False
                    frame = to_yuv.reformat(av.VideoFrame.from_ndarray(img, format="rgb24"), format="yuv420p")
                    frame.pts = i
                    frame.time_base = Fraction(1, fps)
                    out.mux(v.encode(frame))
                out.mux(v.encode())
                hop = a.codec_context.frame_size or 1024
                for i in range(0, len(audio), hop):
                    chunk = np.ascontiguousarray(audio[None, i : i + hop], dtype=np.float32)
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                    frame.sample_rate = sample_rate
                    frame.pts = i
                    frame.time_base = Fraction(1, sample_rate)
                    out.mux(a.encode(frame))
                out.mux(a.encode())
    except (OSError, av.error.FFmpegError) as e:
        raise MediaError(f"{path}: cannot write the clip ({e})") from None
