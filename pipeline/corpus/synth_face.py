"""Animated face video for the demo corpus, from the photograph that ships in scikit-image.

`skimage.data.astronaut()` holds one real face. Each frame warps it: mouth corners up for positive
valence and down for negative, mouth opening with arousal, brows lowered and drawn together for anger
and inner brows raised for sadness; plus head motion (translation, rotation, scale), lighting, a
flush with arousal, and a per-speaker tint and background so that speakers look different. Spans
where the head leaves the frame or an occluder covers the face make the face modality really
missing there (MTCNN finds nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from skimage import data as skdata
from skimage.transform import AffineTransform, warp

# Landmarks of astronaut() (512×512), from facenet-pytorch's MTCNN on the image: box (181, 62)–(268, 172).
LEFT_EYE = (205.0, 101.7)
RIGHT_EYE = (246.8, 103.7)
MOUTH_LEFT = (201.7, 139.2)
MOUTH_RIGHT = (245.3, 141.9)
# The head patch cut from the photograph (x0, y0, x1, y1), and the face centre inside the photograph.
PATCH = (140, 30, 310, 210)
FACE_CENTRE = (225.0, 118.0)


@dataclass
class Expression:
    """One frame's expression, each in about [-1, 1]."""

    smile: float  # + corners up (positive valence), - corners down
    mouth_open: float  # 0..1
    brow_lower: float  # + lowered and drawn together (anger), - raised
    inner_brow_raise: float  # + inner ends raised (sadness)
    flush: float  # 0..1 redness with arousal


@dataclass
class HeadPose:
    dx: float  # pixels in the frame
    dy: float
    angle: float  # degrees
    scale: float


@lru_cache(maxsize=1)
def _patch() -> np.ndarray:
    x0, y0, x1, y1 = PATCH
    return skdata.astronaut()[y0:y1, x0:x1].astype(np.float32) / 255.0


def _bump(xx: np.ndarray, yy: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    cx, cy = centre[0] - PATCH[0], centre[1] - PATCH[1]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))


@lru_cache(maxsize=1)
def _grids():
    h, w = _patch().shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mid_mouth = ((MOUTH_LEFT[0] + MOUTH_RIGHT[0]) / 2, (MOUTH_LEFT[1] + MOUTH_RIGHT[1]) / 2)
    brow_y = LEFT_EYE[1] - 16
    bumps = {
        "corner_l": _bump(xx, yy, MOUTH_LEFT, 9),
        "corner_r": _bump(xx, yy, MOUTH_RIGHT, 9),
        "lower_lip": _bump(xx, yy, (mid_mouth[0], mid_mouth[1] + 6), 10),
        "upper_lip": _bump(xx, yy, (mid_mouth[0], mid_mouth[1] - 3), 8),
        "brow_l": _bump(xx, yy, (LEFT_EYE[0], brow_y), 11),
        "brow_r": _bump(xx, yy, (RIGHT_EYE[0], brow_y), 11),
        "inner_l": _bump(xx, yy, (LEFT_EYE[0] + 9, brow_y), 7),
        "inner_r": _bump(xx, yy, (RIGHT_EYE[0] - 9, brow_y), 7),
        "face": _bump(xx, yy, FACE_CENTRE, 38),
    }
    return xx, yy, bumps


def expressive_patch(e: Expression) -> np.ndarray:
    """The head patch with the expression applied (float RGB in [0, 1])."""
    patch = _patch()
    xx, yy, b = _grids()
    # displacement of the content, in pixels; warp samples the source at (x - dx, y - dy)
    dy = (
        -9.0 * e.smile * (b["corner_l"] + b["corner_r"])
        + 7.0 * e.mouth_open * b["lower_lip"]
        - 1.5 * e.mouth_open * b["upper_lip"]
        + 8.0 * e.brow_lower * (b["brow_l"] + b["brow_r"])
        - 7.0 * e.inner_brow_raise * (b["inner_l"] + b["inner_r"])
    )
    dx = (
        -3.0 * e.smile * b["corner_l"] + 3.0 * e.smile * b["corner_r"]
        + 5.0 * max(e.brow_lower, 0.0) * (b["brow_l"] - b["brow_r"])
    )
    coords = np.stack([yy - dy, xx - dx])
    out = np.stack([_map(patch[..., c], coords) for c in range(3)], axis=-1)
    # flush: redden and darken the green/blue of the face with arousal
    tint = e.flush * 0.18 * b["face"][..., None] * np.array([1.0, -0.35, -0.35], np.float32)
    return np.clip(out + tint, 0.0, 1.0)


def _map(channel: np.ndarray, coords: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    return map_coordinates(channel, coords, order=1, mode="nearest")


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A speaker's background: a smooth two-colour gradient with faint texture."""
    c0, c1 = rng.uniform(0.15, 0.85, 3), rng.uniform(0.15, 0.85, 3)
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    img = c0 * (1 - ramp) + c1 * ramp
    img = np.broadcast_to(img, (height, width, 3)).copy()
    img += rng.normal(0, 0.02, (height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def render_frame(
    e: Expression,
    pose: HeadPose,
    bg: np.ndarray,
    tint: np.ndarray,
    light: float,
    occluder: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """One RGB uint8 frame: the expressive head placed on the background with the pose."""
    h, w = bg.shape[:2]
    patch = expressive_patch(e) * tint
    ph, pw = patch.shape[:2]
    base_scale = 0.8 * h / ph * pose.scale
    fc = (FACE_CENTRE[0] - PATCH[0], FACE_CENTRE[1] - PATCH[1])
    # frame ← patch: scale and rotate about the face centre, then put it at the frame centre + offset
    tform = (
        AffineTransform(translation=(-fc[0], -fc[1]))
        + AffineTransform(scale=base_scale, rotation=np.deg2rad(pose.angle))
        + AffineTransform(translation=(w / 2 + pose.dx, h / 2 + pose.dy))
    )
    rgba = np.concatenate([patch, _soft_alpha(ph, pw)], axis=-1)
    placed = warp(rgba, tform.inverse, output_shape=(h, w), order=1, cval=0.0, preserve_range=True)
    alpha = placed[..., 3:4]
    img = bg * (1 - alpha) + placed[..., :3] * alpha
    if occluder is not None:  # a flat grey card (a hand, a cup…) in front of the face
        x0, y0, x1, y1 = (int(round(v)) for v in occluder)
        img[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = 0.42
    return (np.clip(img * light, 0, 1) * 255 + 0.5).astype(np.uint8)


@lru_cache(maxsize=4)
def _soft_alpha(h: int, w: int) -> np.ndarray:
    """An elliptical mask with soft edges, so the patch blends into the background."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
    return np.clip((1.0 - r) / 0.15, 0, 1)[..., None].astype(np.float32)


def face_box_in_frame(pose: HeadPose, width: int, height: int) -> tuple[float, float, float, float]:
    """Approximate face box (x0, y0, x1, y1) in frame pixels for this pose (for occluders/tests)."""
    ph = PATCH[3] - PATCH[1]
    s = 0.8 * height / ph * pose.scale
    cx, cy = width / 2 + pose.dx, height / 2 + pose.dy
    half_w, half_h = 45 * s, 58 * s
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
