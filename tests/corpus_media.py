"""Media the corpus fixture trees share: an AVI as IEMOCAP and MSP-IMPROV ship them."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_avi(path: Path, frames: list[np.ndarray], audio: np.ndarray, fps: int, sr: int) -> None:
    """MPEG-4 Part 2 video + 16-bit PCM in an AVI container (IEMOCAP's DivX AVIs are MPEG-4 Part 2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="avi") as out:
        v = out.add_stream("mpeg4", rate=fps)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        a = out.add_stream("pcm_s16le", rate=sr)
        a.layout = "mono"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(v.encode(frame))
        out.mux(v.encode())
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        for i in range(0, len(pcm), 1024):
            frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 1024], format="s16", layout="mono")
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = Fraction(1, sr)
            out.mux(a.encode(frame))
        out.mux(a.encode())
