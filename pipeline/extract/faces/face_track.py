"""Which face a step keeps, and what the steps between two detections get (pure logic, numpy only).

Selection (params `faces.selection`, `faces.track`). Of the faces MTCNN finds in a frame, those with
probability >= `min_probability` are eligible; one is kept:

* `selection: probability`: the most confident; `selection: largest`: the largest box (area);
* `track: true` (the default): the eligible face that best continues the face kept last in the same
  clip — the highest IoU with that face's box — so a more confident face passing in the background
  does not replace the speaker. Where no eligible face overlaps the last kept box (IoU = 0: the face
  left, a cut) and at the clip's first face, `selection` decides. The papers' OpenFace front-end
  (001 §4.2.1, 003 §5.2.3) likewise follows one face through a video; they are silent on the policy
  among several faces, so `probability` is the default.

A step without an eligible face is not present; its box, landmarks and probability hold the most
probable sub-threshold candidate (so a reader sees why), or nothing when MTCNN returned none. It
does not reset the track: the next face is matched against the face kept last.

Detect-every-k (params `faces.detect_every` = k). MTCNN runs on steps 0, k, 2k, … and on the clip's
last step. Between two detected steps a < b:

* both present and the same track (IoU(box_a, box_b) > 0): box, landmarks and probability are
  linearly interpolated in time; the crop is cut from each step's own frame at the interpolated box;
* both without a face: the steps between are not present (with no candidate);
* otherwise — a face appears or disappears, or the kept face jumps to another track — nothing is
  guessed: MTCNN runs on every step between a and b (and b is selected again after them), so
  presence changes are exact to the step and only cost detections where they happen.

So detect_every = 1 is exactly per-step detection, and with a steady face the detector runs on
about 1/k of the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

N_LANDMARKS = 5


@dataclass
class Candidates:
    """All faces MTCNN found in one frame: boxes (n, 4), probabilities (n,), landmarks (n, 5, 2)."""

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def none(cls) -> "Candidates":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, N_LANDMARKS, 2), np.float32))

    @classmethod
    def from_mtcnn(cls, boxes: Any, probs: Any, points: Any) -> "Candidates":
        # MTCNN.detect gives None (and probs [None]) for a frame without faces, and object-dtype
        # arrays whose shape depends on how many faces the other frames of the batch had
        if boxes is None or len(boxes) == 0:
            return cls.none()
        b = np.stack([np.asarray(x, np.float32) for x in boxes]).reshape(-1, 4)
        p = np.asarray([float(x) for x in np.asarray(probs, dtype=object).reshape(-1)], np.float32)
        lm = np.stack([np.asarray(x, np.float32) for x in points]).reshape(-1, N_LANDMARKS, 2)
        return cls(b, p, lm)

    def scaled(self, sx: float, sy: float) -> "Candidates":
        """Boxes and landmarks multiplied by (sx, sy): back to the original frame's pixels."""
        f = np.asarray([sx, sy], np.float32)
        return Candidates(self.boxes * np.tile(f, 2), self.probs, self.landmarks * f)

    def __len__(self) -> int:
        return len(self.probs)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x1, y1, x2, y2) box with each of boxes (n, 4)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    box = np.asarray(box, np.float64)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _by_probability(c: Candidates, eligible: np.ndarray) -> int:
    return int(eligible[np.argmax(c.probs[eligible])])


def _by_size(c: Candidates, eligible: np.ndarray) -> int:
    area = (c.boxes[eligible, 2] - c.boxes[eligible, 0]) * (c.boxes[eligible, 3] - c.boxes[eligible, 1])
    return int(eligible[np.argmax(area)])


#: which of a frame's eligible faces is kept when no track decides (params `faces.selection`)
SELECTORS: dict[str, Callable[[Candidates, np.ndarray], int]] = {
    "probability": _by_probability,
    "largest": _by_size,
}


@dataclass
class StepFace:
    """The face kept for one step (present) or the best sub-threshold candidate (not present)."""

    present: bool
    probability: float | None = None
    box: np.ndarray | None = None  # (4,)
    landmarks: np.ndarray | None = None  # (10,)


def select_face(
    c: Candidates, min_probability: float, policy: str = "probability", previous: np.ndarray | None = None
) -> StepFace:
    """The face kept among candidates `c`: the eligible one overlapping `previous` (the box kept last)
    most, else the one `policy` prefers; not present when none is eligible."""
    if len(c) == 0:
        return StepFace(False)
    eligible = np.flatnonzero(c.probs >= min_probability)
    if len(eligible) == 0:
        i = int(np.argmax(c.probs))
        return StepFace(False, float(c.probs[i]), c.boxes[i].copy(), c.landmarks[i].reshape(-1).copy())
    overlap = iou(previous, c.boxes[eligible]) if previous is not None else np.zeros(0)
    i = int(eligible[np.argmax(overlap)]) if overlap.size and overlap.max() > 0 else SELECTORS[policy](c, eligible)
    return StepFace(True, float(c.probs[i]), c.boxes[i].copy(), c.landmarks[i].reshape(-1).copy())


class FaceTracker:
    """Selection along one clip: remembers the box kept last when `track` is on."""

    def __init__(self, min_probability: float, policy: str = "probability", track: bool = True):
        if policy not in SELECTORS:
            raise ValueError(f"unknown face selection policy {policy!r}; one of {sorted(SELECTORS)}")
        self.min_probability, self.policy, self.track = min_probability, policy, track
        self.previous: np.ndarray | None = None

    def select(self, c: Candidates) -> StepFace:
        face = select_face(c, self.min_probability, self.policy, self.previous if self.track else None)
        if face.present:
            self.previous = face.box
        return face


def same_track(a: StepFace, b: StepFace) -> bool:
    return a.present and b.present and float(iou(a.box, b.box[None])[0]) > 0


def needs_detection(a: StepFace, b: StepFace) -> bool:
    """Whether the steps between detected steps a and b must be detected rather than filled."""
    return not same_track(a, b) and (a.present or b.present)


def interpolate(a: StepFace, b: StepFace, w: float) -> StepFace:
    """The step a fraction w of the way from detected step a to b (see the module docstring)."""
    if not same_track(a, b):
        if a.present or b.present:
            raise ValueError("steps between a face and no face (or two tracks) are detected, not interpolated")
        return StepFace(False)
    lerp = lambda x, y: ((1.0 - w) * np.asarray(x, np.float64) + w * np.asarray(y, np.float64)).astype(np.float32)  # noqa: E731
    return StepFace(True, float(lerp(a.probability, b.probability)), lerp(a.box, b.box), lerp(a.landmarks, b.landmarks))

