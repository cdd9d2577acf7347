"""Decoding video frames and audio with PyAV (FFmpeg), whatever the container and codec.

Every failure is a `MediaError` that names the file and the cause (missing file, no such stream,
corrupt or truncated data), so a stage can report it per clip instead of dying with a traceback.
"""

from __future__ import annotations

from pipeline.errors import PipelineError
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np


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
