"""Face crops: the square around a detected box, and their JPEG encoding in the detections table.

The crop is the square centred on the box with side max(w, h) · (1 + margin), i.e. margin/2 of the
side on each side (facenet-pytorch's `extract_face` margin convention), axis-aligned (no rotation; the
landmarks are stored so a similarity alignment can be added), zero-padded where it leaves the frame,
cut from the full-resolution frame, resized to `crop_size`² (bilinear, antialiased) and stored as
JPEG, quality 95.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

JPEG_QUALITY = 95


def square_crop(frame: np.ndarray, box: Sequence[float], crop_size: int, margin: float) -> np.ndarray:
    """The crop_size² RGB square centred on `box` with side max(w, h)·(1 + margin); zero-padded
    where the square leaves the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    side_px = max(1, int(round(side)))
    left = int(round((x1 + x2) / 2 - side / 2))
    top = int(round((y1 + y2) / 2 - side / 2))
    h, w = frame.shape[:2]
    canvas = np.zeros((side_px, side_px, 3), np.uint8)
    sx0, sy0 = max(left, 0), max(top, 0)
    sx1, sy1 = min(left + side_px, w), min(top + side_px, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = frame[sy0:sy1, sx0:sx1]
    return np.asarray(Image.fromarray(canvas).resize((crop_size, crop_size), Image.BILINEAR))


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(blob: bytes) -> np.ndarray:
    """RGB uint8 H×W×3 from JPEG bytes."""
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"))
