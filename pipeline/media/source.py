"""A video as the extractors read it: a file, a window of it and a crop of its frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.media.decode import iter_video_frames, window_label


@dataclass(frozen=True)
class VideoSource:
    """What a clip's video is: a file, a window [start, end) of it and a crop of its frames."""

    path: Path
    start: float | None = None
    end: float | None = None
    crop: tuple[float, float, float, float] | None = None

    def frames(self, rate_hz: float) -> Iterator[tuple[float, np.ndarray]]:
        return iter_video_frames(self.path, rate_hz, self.start, self.end, self.crop)

    def window(self) -> tuple[float, float | None]:
        """(start, end) with start 0 for null."""
        return float(self.start or 0.0), self.end

    def __str__(self) -> str:
        parts = [str(self.path)]
        if self.start is not None or self.end is not None:
            parts.append(window_label(self.start, self.end))
        if self.crop is not None:
            parts.append(f"crop {list(self.crop)}")
        return " ".join(parts)
