"""The `faces` section of params.yaml: MTCNN detection and cropping (this package's `FaceDetector`).

Its own module so that reading the section imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.core.config import ON_ERROR_HELP, OnError, Section


class FacesParams(Section):
    on_error: OnError = Field("fail", description=ON_ERROR_HELP)
    rate_hz: float = Field(5.0, gt=0, description="frames sampled per second for detection")
    min_probability: float = Field(0.90, ge=0, le=1, description="detections below are 'no face'")
    min_face_size: int = Field(20, ge=8, description="MTCNN min_face_size in pixels")
    crop_size: int = Field(224, ge=32, description="side of the aligned square crop")
    margin: float = Field(0.2, ge=0, le=1, description="crop margin around the box, share of its side")
    batch_size: int = Field(16, ge=1, description="frames per MTCNN batch, within one clip (never across clips)")
    selection: Literal["probability", "largest"] = Field(
        "probability", description="which of several faces is kept: the most confident or the largest"
    )
    track: bool = Field(True, description="keep the face that overlaps the face kept last (IoU); selection decides otherwise")
    downscale: int | None = Field(
        None, ge=48, description="shrink frames to this longer side (px) before MTCNN; null: full resolution"
    )
    detect_every: int = Field(
        1, ge=1, description="run MTCNN every k-th step (and the last), interpolating boxes of a steady face between"
    )
