"""Which face a step keeps (selection, tracking) and how detect-every-k fills the steps between
detections: pure logic on synthetic candidate sequences."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.extract.faces.face_track import (
    Candidates,
    FaceTracker,
    StepFace,
    interpolate,
    iou,
    needs_detection,
    select_face,
)

LEFT = [10, 10, 50, 60]
RIGHT = [200, 20, 300, 140]  # larger
NEAR_LEFT = [14, 12, 54, 62]


def cands(*faces: tuple[list[float], float]) -> Candidates:
    if not faces:
        return Candidates.none()
    boxes = np.asarray([b for b, _ in faces], np.float32)
    probs = np.asarray([p for _, p in faces], np.float32)
    lm = np.repeat(boxes[:, None, :2], 5, axis=1)  # landmarks at each box's corner: traceable
    return Candidates(boxes, probs, lm)


def boxes(faces: list[StepFace]) -> list[list[float] | None]:
    return [None if f.box is None else f.box.tolist() for f in faces]


def test_iou():
    assert iou([0, 0, 10, 10], np.array([[0, 0, 10, 10]]))[0] == 1.0
    assert iou([0, 0, 10, 10], np.array([[5, 0, 15, 10]]))[0] == pytest.approx(50 / 150)
    np.testing.assert_array_equal(iou([0, 0, 10, 10], np.array([[20, 20, 30, 30], [10, 0, 20, 10]])), [0, 0])
    assert iou([0, 0, 0, 0], np.array([[0, 0, 0, 0]]))[0] == 0  # degenerate boxes: no overlap, no NaN


def test_policies_without_tracking():
    c = cands((LEFT, 0.99), (RIGHT, 0.95))
    assert select_face(c, 0.9, "probability").box.tolist() == LEFT
    assert select_face(c, 0.9, "largest").box.tolist() == RIGHT
    # the threshold filters before the policy chooses
    assert select_face(c, 0.97, "largest").box.tolist() == LEFT
    low = select_face(c, 0.999)
    assert not low.present and low.probability == pytest.approx(0.99) and low.box.tolist() == LEFT
    assert select_face(Candidates.none(), 0.9) == StepFace(False)
    with pytest.raises(ValueError, match="unknown face selection policy"):
        FaceTracker(0.9, "nearest")


def test_tracking_follows_the_face_and_falls_back_to_the_policy():
    """A: the actor on the left from step 0; B: a larger, more confident face from step 2; A leaves
    at step 4 and B is the only face; at step 6 A comes back."""
    seq = [
        cands((LEFT, 0.95)),
        cands((NEAR_LEFT, 0.95)),
        cands((RIGHT, 0.999), (LEFT, 0.95)),
        cands((NEAR_LEFT, 0.93), (RIGHT, 0.999)),
        cands((RIGHT, 0.999)),
        cands((RIGHT, 0.999)),
        cands((LEFT, 0.999), (RIGHT, 0.95)),
    ]
    t = FaceTracker(0.9, "largest", track=True)
    got = boxes([t.select(c) for c in seq])
    assert got == [LEFT, NEAR_LEFT, LEFT, NEAR_LEFT, RIGHT, RIGHT, RIGHT]
    # without tracking, the policy decides every step
    u = FaceTracker(0.9, "largest", track=False)
    assert boxes([u.select(c) for c in seq]) == [LEFT, NEAR_LEFT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT]
    p = FaceTracker(0.9, "probability", track=False)
    assert boxes([p.select(c) for c in seq])[6] == LEFT


def test_a_step_without_a_face_does_not_reset_the_track():
    t = FaceTracker(0.9, "probability", track=True)
    t.select(cands((LEFT, 0.95)))
    missing = t.select(cands((RIGHT, 0.5)))  # sub-threshold only: not present, the candidate kept
    assert not missing.present and missing.box.tolist() == RIGHT
    assert not t.select(Candidates.none()).present
    # back: the face overlapping the last kept one wins over a more confident one elsewhere
    assert t.select(cands((RIGHT, 0.999), (NEAR_LEFT, 0.91))).box.tolist() == NEAR_LEFT


def test_interpolation_between_two_detections_of_one_track():
    a = StepFace(True, 0.9, np.array([0, 0, 10, 10], np.float32), np.arange(10, dtype=np.float32))
    b = StepFace(True, 1.0, np.array([4, 2, 14, 12], np.float32), np.arange(10, dtype=np.float32) + 3)
    assert not needs_detection(a, b)
    mid = interpolate(a, b, 0.25)
    assert mid.present
    np.testing.assert_allclose(mid.box, [1, 0.5, 11, 10.5])
    np.testing.assert_allclose(mid.landmarks, np.arange(10) + 0.75)
    assert mid.probability == pytest.approx(0.925)
    np.testing.assert_allclose(interpolate(a, b, 0.0).box, a.box)
    np.testing.assert_allclose(interpolate(a, b, 1.0).box, b.box)


def test_what_is_detected_rather_than_filled():
    face = StepFace(True, 0.99, np.array(LEFT, np.float32), np.zeros(10, np.float32))
    other = StepFace(True, 0.99, np.array(RIGHT, np.float32), np.zeros(10, np.float32))
    below = StepFace(False, 0.4, np.array(LEFT, np.float32), np.zeros(10, np.float32))
    nothing = StepFace(False)
    assert needs_detection(face, nothing) and needs_detection(nothing, face)
    assert needs_detection(face, below)  # a sub-threshold candidate is no face
    assert needs_detection(face, other)  # a jump to another track
    assert not needs_detection(nothing, below)
    assert interpolate(nothing, below, 0.5) == StepFace(False)
    with pytest.raises(ValueError, match="detected, not interpolated"):
        interpolate(face, nothing, 0.5)


def test_candidates_scaled_back_to_the_frame():
    c = cands((LEFT, 0.95))
    s = c.scaled(2.0, 3.0)
    assert s.boxes[0].tolist() == [20, 30, 100, 180]
    assert s.landmarks[0, 0].tolist() == [20, 30]
    assert s.probs is c.probs
