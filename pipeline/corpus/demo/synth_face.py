"""Animated face video from the photograph that ships in scikit-image (`skimage.data.astronaut()`).

A frame is rendered in two warps of the 512x512 photograph:

1. Expression: a smooth displacement field over the face, a weighted sum of fixed Gaussian "muscle"
   fields (mouth corners up/out for a smile, down for a frown, brows lowered and drawn together,
   inner brows raised, jaw drop while speaking). Only the face region is re-sampled
   (`skimage.transform.warp` with a coordinate map), so a frame costs a few milliseconds.
2. Camera: a similarity transform (head translation, rotation, scale) from the frame to the photo
   (`skimage.transform.warp` with a 3x3 matrix: scikit-image's fast path). The photo sits on a wide
   canvas of the speaker's background colour, so the head can move anywhere.

A flush (reddened cheeks) is added in the face region before the camera warp; lighting (overall
gain, a left/right gradient) after it; then, when asked, a solid occluder over the face. "Out of
frame" is a head translation that puts the whole head (hair included) outside the frame.

The landmarks below were read off a 4x zoom of the photograph (eyes, brows, mouth corners, chin…);
`(x, y)` = (column, row) in the 512x512 image. The photograph already smiles with teeth showing, so
valence 0 renders that face, positive valence lifts the mouth corners further and negative valence
pulls them down into a frown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import data as skdata
from skimage.transform import warp

LANDMARKS: dict[str, tuple[float, float]] = {
    "eye_l": (201, 101),
    "eye_r": (248, 102),
    "brow_l_outer": (190, 92),
    "brow_l_inner": (211, 93),
    "brow_r_inner": (237, 94),
    "brow_r_outer": (258, 95),
    "mouth_l": (204, 140),
    "mouth_r": (245, 141),
    "mouth_c": (224, 146),
    "lip_upper": (224, 137),
    "lip_lower": (224, 155),
    "nose": (225, 127),
    "chin": (222, 179),
    "cheek_l": (196, 124),
    "cheek_r": (253, 125),
}
FACE_BOX = (180.0, 84.0, 271.0, 184.0)  # x0, y0, x1, y1 in the photo: brows to chin, cheek to cheek
HEAD_CENTRE = (225.0, 108.0)  # centre of the head (hair included) in the photo
HEAD_HEIGHT = 168.0  # top of the hair to the chin, photo pixels
HEAD_HALF_WIDTH = 75.0  # hair to hair, photo pixels
ROI = (150, 60, 300, 205)  # x0, y0, x1, y1: the region the expression warp re-samples
PAD = 320  # background margin around the photo on the render canvas, photo pixels

# Expression controls: name -> [(landmark, sigma px, (dx, dy) px per unit of the control)].
# Forward displacements of the features; sigmas keep |grad| < 1 so the map never folds.
CONTROLS: dict[str, list[tuple[str, float, tuple[float, float]]]] = {
    "smile": [  # positive valence: corners up and out, cheeks raised
        ("mouth_l", 11.0, (-2.5, -4.5)),
        ("mouth_r", 11.0, (2.5, -4.5)),
        ("cheek_l", 13.0, (0.0, -2.5)),
        ("cheek_r", 13.0, (0.0, -2.5)),
    ],
    "frown": [  # negative valence: corners down and in, lips pressed together over the teeth
        ("mouth_l", 12.0, (2.0, 8.0)),
        ("mouth_r", 12.0, (-2.0, 8.0)),
        ("lip_upper", 8.0, (0.0, 2.0)),
        ("lip_lower", 9.0, (0.0, -4.0)),
    ],
    "brow_lower": [  # anger: brows lowered and drawn together
        ("brow_l_inner", 9.0, (3.0, 5.5)),
        ("brow_r_inner", 9.0, (-3.0, 5.5)),
        ("brow_l_outer", 10.0, (0.0, 2.5)),
        ("brow_r_outer", 10.0, (0.0, 2.5)),
    ],
    "brow_raise_inner": [  # sadness: inner brows raised, outer ends slightly down
        ("brow_l_inner", 9.0, (1.0, -6.0)),
        ("brow_r_inner", 9.0, (-1.0, -6.0)),
        ("brow_l_outer", 9.0, (0.0, 1.5)),
        ("brow_r_outer", 9.0, (0.0, 1.5)),
    ],
    "jaw": [  # speaking: lower lip and chin down
        ("lip_lower", 10.0, (0.0, 3.5)),
        ("chin", 16.0, (0.0, 3.0)),
    ],
}


@dataclass(frozen=True)
class FaceState:
    """Everything that varies per frame. Expression controls are in [0, 1] (smile/frown: [-1, 1])."""

    valence: float = 0.0  # >0 smile, <0 frown
    brow_lower: float = 0.0
    brow_raise_inner: float = 0.0
    jaw: float = 0.0
    dx: float = 0.0  # head translation in frame pixels
    dy: float = 0.0
    angle: float = 0.0  # degrees of in-plane head rotation
    scale: float = 1.0
    gain: float = 1.0  # overall brightness
    light: float = 0.0  # left/right lighting gradient, [-1, 1]
    flush: float = 0.0  # reddening of the cheeks, [0, 1]
    occluded: bool = False


@dataclass(frozen=True)
class Look:
    """Per-speaker appearance: colour balance, background, framing."""

    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background: tuple[float, float, float] = (0.35, 0.40, 0.45)
    zoom: float = 1.0  # relative to a head height of 60% of the frame
    offset: tuple[float, float] = (0.0, 0.0)  # framing offset, share of width/height
    occluder: tuple[float, float, float] = (0.2, 0.2, 0.22)


def _gaussian_fields(xs: np.ndarray, ys: np.ndarray) -> dict[str, np.ndarray]:
    """Displacement field (2, h, w) = (dx, dy) per unit of each control, on the ROI grid."""
    fields = {}
    for name, parts in CONTROLS.items():
        f = np.zeros((2,) + xs.shape, np.float32)
        for landmark, sigma, (vx, vy) in parts:
            lx, ly = LANDMARKS[landmark]
            g = np.exp(-((xs - lx) ** 2 + (ys - ly) ** 2) / (2 * sigma**2)).astype(np.float32)
            f[0] += vx * g
            f[1] += vy * g
        fields[name] = f
    return fields


class FaceRenderer:
    """Renders `FaceState`s of one speaker into `height x width` RGB uint8 frames."""

    def __init__(self, width: int, height: int, look: Look = Look()):
        self.width, self.height, self.look = width, height, look
        photo = skdata.astronaut().astype(np.float32) / 255.0 * np.asarray(look.tint, np.float32)
        # The photo on a canvas of background colour: the camera warp reads 'edge' beyond it, so no
        # alpha channel is needed however far the head moves.
        pad = PAD
        # channel-first: warp reads contiguous planes (a strided channel would be copied per call)
        self._photo = np.empty((3, photo.shape[0] + 2 * pad, photo.shape[1] + 2 * pad), np.float32)
        self._photo[:] = np.asarray(look.background, np.float32)[:, None, None]
        self._photo[:, pad:-pad, pad:-pad] = photo.transpose(2, 0, 1)
        self._work = self._photo.copy()
        x0, y0, x1, y1 = ROI
        ry, rx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self._roi_grid = np.stack([ry, rx]) + pad  # (row, col) order, canvas coordinates
        fields = _gaussian_fields(rx, ry)
        self._control_names = list(fields)
        self._fields = np.stack([fields[n] for n in self._control_names])  # (K, 2, h, w)
        cheeks = np.zeros(rx.shape, np.float32)
        for name in ("cheek_l", "cheek_r"):
            cx, cy = LANDMARKS[name]
            cheeks += np.exp(-((rx - cx) ** 2 + (ry - cy) ** 2) / (2 * 12.0**2))
        self._flush = np.array([0.06, -0.02, -0.02], np.float32)[:, None, None] * np.clip(cheeks, 0, 1)
        # head height = 60% of the frame height at zoom 1
        self.base_zoom = 0.6 * height / HEAD_HEIGHT * look.zoom
        self._xnorm = (np.arange(width, dtype=np.float32) / max(width - 1, 1) - 0.5)[None, :, None]

    # ------------------------------------------------------------------------------------------
    def out_of_frame_dx(self) -> float:
        """A head translation (frame px) that puts the whole head outside the frame."""
        # half the frame + the framing offset + the head's half width at the largest scale, with margin
        return self.width * (0.5 + abs(self.look.offset[0])) + 1.5 * HEAD_HALF_WIDTH * self.base_zoom * 1.1

    def camera(self, s: FaceState) -> np.ndarray:
        """3x3 matrix mapping photo (x, y, 1) to frame coordinates."""
        z = self.base_zoom * s.scale
        a = np.deg2rad(s.angle)
        c, si = np.cos(a) * z, np.sin(a) * z
        fx = self.width * (0.5 + self.look.offset[0]) + s.dx
        fy = self.height * (0.5 + self.look.offset[1]) + s.dy
        hx, hy = HEAD_CENTRE
        # rotate/scale about the head centre, then place it at (fx, fy); y grows downwards
        return np.array(
            [[c, si, fx - c * hx - si * hy], [-si, c, fy + si * hx - c * hy], [0.0, 0.0, 1.0]]
        )

    def to_frame(self, s: FaceState, points: np.ndarray) -> np.ndarray:
        """Photo points (N, 2) as (x, y) -> frame points (N, 2), for the neutral (unwarped) face."""
        m = self.camera(s)
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return pts @ m[:2, :2].T + m[:2, 2]

    def face_box(self, s: FaceState) -> tuple[float, float, float, float]:
        """Bounding box (x0, y0, x1, y1) of the face (brows to chin) in frame pixels."""
        x0, y0, x1, y1 = FACE_BOX
        p = self.to_frame(s, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())

    # ------------------------------------------------------------------------------------------
    def _controls(self, s: FaceState) -> np.ndarray:
        w = {
            "smile": max(s.valence, 0.0),
            "frown": max(-s.valence, 0.0),
            "brow_lower": s.brow_lower,
            "brow_raise_inner": s.brow_raise_inner,
            "jaw": s.jaw,
        }
        return np.array([w[n] for n in self._control_names], np.float32)

    def _express(self, s: FaceState) -> None:
        """Re-sample the face region of the working canvas with the expression (and the flush)."""
        disp = np.tensordot(self._controls(s), self._fields, axes=1)  # (2, h, w): dx, dy
        # inverse map: the output pixel q shows the photo at q - d(q) (d is small and smooth)
        coords = self._roi_grid - disp[::-1]
        x0, y0, x1, y1 = (v + PAD for v in ROI)
        roi = self._work[:, y0:y1, x0:x1]
        for ch in range(3):
            roi[ch] = warp(self._photo[ch], coords, order=1, mode="edge", clip=False)
        if s.flush:
            roi += s.flush * self._flush

    def render(self, s: FaceState) -> np.ndarray:
        """One RGB uint8 frame (height x width x 3)."""
        self._express(s)
        shift = np.array([[1.0, 0.0, PAD], [0.0, 1.0, PAD], [0.0, 0.0, 1.0]])
        inv = shift @ np.linalg.inv(self.camera(s))  # frame -> canvas, warp's inverse map
        rgb = np.empty((self.height, self.width, 3), np.float32)
        for ch in range(3):
            rgb[..., ch] = warp(
                self._work[ch], inv, output_shape=(self.height, self.width), order=1, mode="edge", clip=False
            )
        rgb *= s.gain * (1.0 + 0.18 * s.light * self._xnorm)
        if s.occluded:
            x0, y0, x1, y1 = self.face_box(s)
            pw, ph = 0.12 * (x1 - x0), 0.12 * (y1 - y0)
            c0, r0 = max(int(x0 - pw), 0), max(int(y0 - 2 * ph), 0)
            c1, r1 = min(int(np.ceil(x1 + pw)), self.width), min(int(np.ceil(y1 + ph)), self.height)
            if c1 > c0 and r1 > r0:
                rgb[r0:r1, c0:c1] = np.asarray(self.look.occluder, np.float32)
        return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
