"""Decoding: probing a file, its audio and its video frames, for a window of it and a crop of its frames
(see the package docstring for the window rules and how long files are read)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np

from pipeline.core.errors import PipelineError

#: audio windows starting later than this into a file seek to this much before their start
AUDIO_PREROLL_S = 1.0
#: decoding runs this far past a window's end, so the resampler's flush does not reach the window
AUDIO_POSTROLL_S = 0.1
#: a window may end this much after the end of its track (cut there); further is a MediaError
WINDOW_TOLERANCE_S = 0.25


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
        # FFmpeg's reason alone: its full message repeats the path the line starts with
        raise MediaError(f"{path}: cannot open as media ({getattr(e, 'strerror', None) or e})") from None


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


def window_label(start: float | None, end: float | None) -> str:
    """'window [0.500, 1.500) s' (null start: 0, null end: 'end')."""
    e = "end" if end is None else f"{float(end):.3f}"
    return f"window [{float(start or 0.0):.3f}, {e}) s"


def _check_window(path: Path, start: float | None, end: float | None) -> float:
    s = float(start or 0.0)
    if not math.isfinite(s) or s < 0 or (end is not None and not (math.isfinite(end) and end > s)):
        raise MediaError(f"{path}: {window_label(start, end)} is empty or negative")
    return s


def read_audio(path: str | Path, sample_rate: int, start: float | None = None, end: float | None = None) -> np.ndarray:
    """The audio track as mono float32 in [-1, 1] at `sample_rate` (channels averaged): the whole
    track, or the window [start, end) seconds of it (module docstring)."""
    path = Path(path)
    if start is not None or end is not None:
        return _read_audio_window(path, sample_rate, start, end)
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


def _audio_frames(container: av.container.InputContainer, stream: av.AudioStream, path: Path) -> Iterator[av.AudioFrame]:
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: audio track is corrupt or truncated ({e})") from None


def _drop_samples(frame: av.AudioFrame, n: int) -> av.AudioFrame | None:
    """`frame` without its first n samples (None when nothing is left)."""
    if n <= 0:
        return frame
    if n >= frame.samples:
        return None
    data = frame.to_ndarray()
    cut = data[:, n:] if frame.format.is_planar else data[:, n * len(frame.layout.channels) :]
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(cut), format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


def _start_audio(path: Path, s: float) -> tuple[av.container.InputContainer, Iterator[av.AudioFrame], av.AudioFrame, float, int]:
    """Open `path` for decoding audio from `AUDIO_PREROLL_S` before `s` (from the file start when `s`
    is closer to it, the file is not seekable or the seek lands after `s`): (container, frames, the
    first frame, origin, n_first): input sample n_first of the track (counted from its first sample,
    at media time `origin`) is the first frame's first sample."""
    if s > AUDIO_PREROLL_S:
        c = _open(path)
        try:
            if not c.streams.audio:
                raise MediaError(f"{path}: no audio track")
            stream = c.streams.audio[0]
            c.seek(int((s - AUDIO_PREROLL_S) / stream.time_base), stream=stream, backward=True)
            frames = _audio_frames(c, stream, path)
            first = next(frames, None)
            if first is not None and first.time is not None and float(first.time) <= s:
                origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
                n_first = (float(first.time) - origin) * first.sample_rate
                if stream.time_base > Fraction(1, first.sample_rate):
                    # a timestamp coarser than a sample (FLV: 1 ms): the frame starts on the codec's
                    # frame grid (MP3: 1152 samples, AAC: 1024) of a track of equal frames from 0
                    n_first = round(n_first / first.samples) * first.samples
                return c, frames, first, origin, int(round(n_first))
        except av.error.FFmpegError:
            pass
        except BaseException:
            c.close()
            raise
        c.close()
    c = _open(path)
    try:
        if not c.streams.audio:
            raise MediaError(f"{path}: no audio track")
        frames = _audio_frames(c, c.streams.audio[0], path)
        first = next(frames, None)
        if first is None:
            raise MediaError(f"{path}: audio track holds no samples")
    except BaseException:
        c.close()
        raise
    return c, frames, first, (float(first.time) if first.time is not None else 0.0), 0


def _read_audio_window(path: Path, sample_rate: int, start: float | None, end: float | None) -> np.ndarray:
    s = _check_window(path, start, end)
    label = window_label(start, end)
    c, frames, first, origin, n_first = _start_audio(path, s)
    with c:
        sr_in = first.sample_rate
        g = math.gcd(sr_in, sample_rate)
        # feed the resampler from an input sample on the output grid (every sr_in/g input samples),
        # so its outputs are the whole-track outputs from there on
        drop = -n_first % (sr_in // g)
        out_first = (n_first + drop) // (sr_in // g) * (sample_rate // g)
        stop = (end if end is not None else math.inf) + AUDIO_POSTROLL_S
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        decoded = n_first  # input samples up to here were decoded
        frame: av.AudioFrame | None = first
        try:
            while frame is not None:
                kept = _drop_samples(frame, drop)
                drop = max(0, drop - frame.samples)
                decoded += frame.samples
                if kept is not None:
                    for out in resampler.resample(kept):
                        chunks.append(out.to_ndarray().reshape(-1))
                if origin + decoded / sr_in > stop:
                    break
                frame = next(frames, None)
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: audio track is corrupt or truncated ({e})") from None
    signal = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    track_end = origin + (out_first + len(signal)) / sample_rate
    if s >= track_end:
        raise MediaError(f"{path}: {label} starts after the end of the audio track ({track_end:.3f} s)")
    if end is not None and end > track_end + WINDOW_TOLERANCE_S:
        raise MediaError(f"{path}: {label} ends after the end of the audio track ({track_end:.3f} s)")
    a = int(round((s - origin) * sample_rate)) - out_first
    b = len(signal) if end is None else int(round((end - origin) * sample_rate)) - out_first
    signal = signal[max(a, 0) : b]
    if signal.size == 0:
        raise MediaError(f"{path}: {label} holds no audio samples")
    if not np.all(np.isfinite(signal)):
        raise MediaError(f"{path}: audio decodes to non-finite samples")
    return signal


def sample_times(duration: float, rate_hz: float) -> np.ndarray:
    """Step centres (k + 0.5) / rate that fall inside [0, duration)."""
    n = int(np.floor(duration * rate_hz + 1e-9))
    return (np.arange(n) + 0.5) / rate_hz


def silent_steps(signal: np.ndarray, sample_rate: int, centres: np.ndarray, window_s: float,
                 dbfs: float | None = None) -> np.ndarray:
    """(T,) bool: the steps whose window (`window_s` centred on each of `centres`, seconds from sample 0,
    cut to the signal) is digital silence — every sample exactly zero — or, with `dbfs`, has an RMS
    level below `dbfs` dB relative to full scale (1.0). The audio extractors' `silence: mask` marks
    these steps missing. Cumulative sums: one pass over the signal, however many steps."""
    centres = np.asarray(centres, dtype=np.float64)
    n = signal.size
    lo = np.clip(np.round((centres - window_s / 2) * sample_rate).astype(np.int64), 0, n)
    hi = np.clip(np.round((centres + window_s / 2) * sample_rate).astype(np.int64), 0, n)
    nonzero = np.concatenate([[0], np.cumsum(signal != 0)])
    silent = (nonzero[hi] - nonzero[lo]) == 0
    if dbfs is not None:
        energy = np.concatenate([[0.0], np.cumsum(np.square(signal, dtype=np.float64))])
        mean_square = (energy[hi] - energy[lo]) / np.maximum(hi - lo, 1)
        silent |= mean_square < 10.0 ** (dbfs / 10.0)  # RMS < 10^(dbfs/20)
    return silent


def check_crop(path: str | Path, crop: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """`crop` as a tuple of four fractions 0 ≤ x0 < x1 ≤ 1, 0 ≤ y0 < y1 ≤ 1; a MediaError otherwise."""
    if crop is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in crop)
    except (TypeError, ValueError):
        raise MediaError(f"{path}: crop {crop!r} is not four numbers (x0, y0, x1, y1)") from None
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise MediaError(f"{path}: crop {list(crop)} is not a region of the frame (fractions 0 ≤ x0 < x1 ≤ 1, 0 ≤ y0 < y1 ≤ 1)")
    return x0, y0, x1, y1


def crop_pixels(crop: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel bounds (left, top, right, bottom) of a fractional crop of a width × height frame."""
    x0, y0, x1, y1 = crop
    return round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height)


def _open_video(path: Path, seek_to: float) -> tuple[av.container.InputContainer, av.VideoStream]:
    c = _open(path)
    try:
        if not c.streams.video:
            raise MediaError(f"{path}: no video track")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        if seek_to > 0:
            c.seek(int(seek_to / stream.time_base), stream=stream, backward=True)  # the keyframe at or before
    except av.error.FFmpegError:  # not seekable: decode from the start
        c.close()
        return _open_video(path, 0.0)
    except BaseException:
        c.close()
        raise
    return c, stream


def iter_video_frames(
    path: str | Path,
    rate_hz: float,
    start: float | None = None,
    end: float | None = None,
    crop: Sequence[float] | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t, RGB uint8 H×W×3) at step centres t = (k + 0.5)/rate_hz: for each step, the last frame
    whose presentation time is at or before start + t (the frame on screen at that moment), cut to
    `crop` when given. With a window [start, end) (module docstring) t counts from `start` and the
    steps end before `end`; a long file is not decoded from its start (seek to the keyframe at or
    before `start`)."""
    path = Path(path)
    s = _check_window(path, start, end)
    crop = check_crop(path, crop)
    limit = math.inf if end is None else float(end) - s  # steps centred before this (window time)
    step = 1.0 / rate_hz
    box: tuple[int, int, int, int] | None = None

    def image(frame: av.VideoFrame) -> np.ndarray:
        nonlocal box
        rgb = frame.to_ndarray(format="rgb24")
        if crop is None:
            return rgb
        if box is None:
            box = crop_pixels(crop, rgb.shape[1], rgb.shape[0])
            if box[2] <= box[0] or box[3] <= box[1]:
                raise MediaError(f"{path}: crop {list(crop)} holds no pixel of the {rgb.shape[1]}×{rgb.shape[0]} frame")
        return np.ascontiguousarray(rgb[box[1] : box[3], box[0] : box[2]])

    for seek_to in (s, 0.0) if s > 0 else (0.0,):
        c, stream = _open_video(path, seek_to)
        with c:
            k = 0
            target = 0.5 * step  # window time of step k
            on_screen: av.VideoFrame | None = None  # the latest frame decoded so far
            last_time = 0.0
            landed_late = False
            try:
                for frame in c.decode(stream):
                    if frame.time is None:
                        continue
                    ft = float(frame.time) - s
                    if on_screen is None and seek_to > 0 and ft > target + 1e-9:
                        landed_late = True  # the seek passed the first step: decode from the start
                        break
                    # every target before this frame's start shows the previous frame
                    while on_screen is not None and target < ft - 1e-9:
                        if target >= limit - 1e-9:
                            return
                        yield target, image(on_screen)
                        k += 1
                        target = (k + 0.5) * step
                    on_screen, last_time = frame, ft
            except av.error.FFmpegError as e:
                raise MediaError(f"{path}: video track is corrupt or truncated ({e})") from None
            if landed_late:
                continue
            previous = on_screen
            if previous is None:
                raise MediaError(f"{path}: video track holds no decodable frames")
            fps = float(stream.average_rate) if stream.average_rate else 25.0
            track_end = last_time + 1.0 / fps  # window time
            if start is not None or end is not None:
                label = window_label(start, end)
                if track_end <= 0:
                    raise MediaError(f"{path}: {label} starts after the end of the video track ({s + track_end:.3f} s)")
                if limit > track_end + WINDOW_TOLERANCE_S:
                    raise MediaError(f"{path}: {label} ends after the end of the video track ({s + track_end:.3f} s)")
            last = image(previous)
            while target < min(track_end, limit) - 1e-9:
                yield target, last
                k += 1
                target = (k + 0.5) * step
            return
