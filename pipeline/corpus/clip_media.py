"""The window rule, per clip: how a manifest clip's audio and frames are read (every extractor uses these)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from pipeline.media.decode import read_audio, window_label
from pipeline.media.source import VideoSource

if TYPE_CHECKING:
    from pipeline.corpus.manifest import Clip


# --------------------------------------------------------------------------------------------------
# The window rule, per clip (every extractor reads a clip's media through these)
# --------------------------------------------------------------------------------------------------


def clip_video_source(clip: "Clip", root: str | Path = ".") -> VideoSource:
    """The clip's video: `media_path`, the clip's window of it and its crop."""
    crop = tuple(float(v) for v in clip.crop) if clip.crop is not None else None
    return VideoSource(clip.media(root), clip.start, clip.end, crop)  # type: ignore[arg-type]


def clip_frames(clip: "Clip", root: str | Path, rate_hz: float) -> Iterator[tuple[float, np.ndarray]]:
    """The clip's video frames at `rate_hz` (`iter_video_frames` on `clip_video_source`); t from the
    clip's start."""
    return clip_video_source(clip, root).frames(rate_hz)


def clip_audio_source(clip: "Clip", root: str | Path = ".") -> tuple[Path, float | None, float | None]:
    """(file, start, end) of the clip's audio: a separate `audio_path` is read WHOLE (the window does
    not apply to it); without one, the clip's window of `media_path`."""
    if clip.audio_path:
        return clip.audio(root), None, None
    return clip.media(root), clip.start, clip.end


def clip_audio_label(clip: "Clip", root: str | Path = ".") -> str:
    """The clip's audio in words, for error messages: the file, and its window where one applies."""
    path, start, end = clip_audio_source(clip, root)
    return str(path) if start is None and end is None else f"{path} {window_label(start, end)}"


def clip_audio(clip: "Clip", root: str | Path, sample_rate: int) -> np.ndarray:
    """The clip's audio (`clip_audio_source`) as `read_audio` gives it; sample 0 is the clip's t = 0."""
    path, start, end = clip_audio_source(clip, root)
    return read_audio(path, sample_rate, start, end)
