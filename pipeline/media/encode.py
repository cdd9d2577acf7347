"""Encoding: an MP4 (H.264 + AAC) whose bytes depend on its input alone."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.core.store import atomic_path
from pipeline.media.decode import MediaError


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
