"""The detections table contract: `data/faces/detections.parquet` (`pipeline.core.paths.FACES`).

One row per detection step of each clip, sorted by clip then t:

    clip_id string, t float64, present bool, probability float32?,
    box fixed_size_list<float32>[4]? (x1, y1, x2, y2 in frame pixels),
    landmarks fixed_size_list<float32>[10]? (x, y of left eye, right eye, nose, mouth left, mouth right),
    crop binary? (JPEG), frame_width int32, frame_height int32

t counts from the clip's start (a clip that is a window of its video: from the window's start). For
a clip with a `crop` (the manifest's face region), detection ran on the cropped frame: box and
landmarks are in the CROPPED frame's pixels, frame_width/frame_height are the cropped frame's size, and
the face crop was cut from the cropped frame.

A step without a face is present=false with a null crop; box, landmarks and probability then hold the
most probable sub-threshold candidate MTCNN returned, or null when it returned none.

Schema metadata `mer` (JSON, `table_meta`): detector, its version, params, selection policy, tracking,
detect_every, downscale, crop format, the clip ids processed (`clips`, including clips with zero
steps) and those skipped with their error (`skipped`), so face embedders can tell "no face for this
clip" from "table made for another corpus".

In memory a clip's rows are a `ClipDetections`; `read_detections` gives (metadata, clip id →
ClipDetections), which is what the face embedders (`pipeline.extract.face_embed`) take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from pipeline.core.store import META_KEY, StoreError, read_meta, read_table
from pipeline.extract.faces.crops import JPEG_QUALITY, decode_jpeg
from pipeline.extract.faces.face_track import N_LANDMARKS, StepFace
from pipeline.extract.faces.params import FacesParams

DETECTOR = "facenet-pytorch MTCNN"
STAGE_VERSION = "2"  # bump when the output of the same params changes

SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("t", pa.float64(), nullable=False),
        pa.field("present", pa.bool_(), nullable=False),
        pa.field("probability", pa.float32()),
        pa.field("box", pa.list_(pa.float32(), 4)),
        pa.field("landmarks", pa.list_(pa.float32(), 2 * N_LANDMARKS)),
        pa.field("crop", pa.binary()),
        pa.field("frame_width", pa.int32(), nullable=False),
        pa.field("frame_height", pa.int32(), nullable=False),
    ]
)


@dataclass
class ClipDetections:
    """One clip's steps: t (T,), present (T,), probability (T,) float32 (NaN: no candidate),
    box (T, 4), landmarks (T, 10) float32 (NaN rows: no candidate), crops (JPEG bytes or None)."""

    t: np.ndarray
    present: np.ndarray
    probability: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    crops: list[bytes | None]
    frame_width: int
    frame_height: int

    def __len__(self) -> int:
        return len(self.t)

    def crop(self, i: int) -> np.ndarray | None:
        """Step i's crop as RGB uint8, or None where no face is present."""
        blob = self.crops[i]
        return None if blob is None else decode_jpeg(blob)

    @classmethod
    def empty(cls, width: int = 0, height: int = 0) -> "ClipDetections":
        return cls(
            np.zeros(0), np.zeros(0, bool), np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
            np.zeros((0, 2 * N_LANDMARKS), np.float32), [], width, height,
        )

    @classmethod
    def from_steps(cls, times: list[float], faces: list[StepFace], crops: list[bytes | None], size: tuple[int, int]) -> "ClipDetections":
        if not faces:
            return cls.empty(*size)
        nan4, nan10 = np.full(4, np.nan, np.float32), np.full(2 * N_LANDMARKS, np.nan, np.float32)
        return cls(
            t=np.asarray(times, np.float64),
            present=np.asarray([f.present for f in faces], bool),
            probability=np.asarray([np.nan if f.probability is None else f.probability for f in faces], np.float32),
            box=np.stack([nan4 if f.box is None else f.box for f in faces]).astype(np.float32),
            landmarks=np.stack([nan10 if f.landmarks is None else f.landmarks for f in faces]).astype(np.float32),
            crops=crops,
            frame_width=size[0],
            frame_height=size[1],
        )


def table_meta(params: FacesParams, clips: Iterable[str], skipped: dict[str, str]) -> dict[str, Any]:
    """The `mer` metadata of a detections table made with `params`."""
    return {
        "detector": DETECTOR,
        "version": package_version("facenet-pytorch"),
        "stage_version": STAGE_VERSION,
        "params": params.model_dump(mode="json"),
        "rate_hz": params.rate_hz,
        "selection": params.selection,
        "track": params.track,
        "detect_every": params.detect_every,
        "downscale": params.downscale,
        "crop": {"format": "jpeg", "quality": JPEG_QUALITY, "size": params.crop_size, "margin": params.margin},
        "clips": sorted(clips),
        "skipped": dict(skipped),
    }


def table_schema(meta: dict[str, Any]) -> pa.Schema:
    return SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})


def detections_table(clips: dict[str, ClipDetections], meta: dict[str, Any]) -> pa.Table:
    """The rows of `clips` (sorted by clip, then t) under `meta`."""
    ids, t, present, prob, box, lm, crops, fw, fh = [], [], [], [], [], [], [], [], []
    for clip_id in sorted(clips):
        d = clips[clip_id]
        order = np.argsort(d.t, kind="stable")
        ids += [clip_id] * len(d)
        t.append(d.t[order])
        present.append(d.present[order])
        prob.append(d.probability[order])
        box.append(d.box[order])
        lm.append(d.landmarks[order])
        crops += [d.crops[i] for i in order]
        fw += [d.frame_width] * len(d)
        fh += [d.frame_height] * len(d)
    schema = table_schema(meta)
    if not ids:
        return schema.empty_table()
    prob_a, box_a, lm_a = np.concatenate(prob), np.concatenate(box), np.concatenate(lm)

    def fixed(values: np.ndarray, size: int) -> pa.Array:
        missing = np.isnan(values).any(axis=1)
        flat = np.where(np.isnan(values), 0.0, values).astype(np.float32).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), size, mask=pa.array(missing))

    columns = [
        pa.array(ids, pa.string()),
        pa.array(np.concatenate(t), pa.float64()),
        pa.array(np.concatenate(present), pa.bool_()),
        pa.array(prob_a, pa.float32(), mask=np.isnan(prob_a)),
        fixed(box_a, 4),
        fixed(lm_a, 2 * N_LANDMARKS),
        pa.array(crops, pa.binary()),
        pa.array(fw, pa.int32()),
        pa.array(fh, pa.int32()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def detections_meta(path: str | Path) -> dict[str, Any]:
    """The `mer` metadata of a detections table (detector, params, clips, skipped)."""
    return read_meta(path, "face detections table", stage="faces")


def clips_from_table(table: pa.Table) -> dict[str, ClipDetections]:
    """clip id -> ClipDetections of the rows of a detections table (sorted by clip)."""
    out: dict[str, ClipDetections] = {}
    n = len(table)
    if n == 0:
        return out

    def fixed(name: str, size: int) -> np.ndarray:
        col = table.column(name).combine_chunks()
        values = col.values.to_numpy(zero_copy_only=False)[col.offset * size : (col.offset + n) * size]
        values = values.astype(np.float32).reshape(n, size)
        values[col.is_null().to_numpy(zero_copy_only=False)] = np.nan  # no candidate at that step
        return values

    ids = table.column("clip_id").to_numpy(zero_copy_only=False)
    t = table.column("t").to_numpy()
    present = table.column("present").to_numpy(zero_copy_only=False)
    prob = table.column("probability").combine_chunks().to_numpy(zero_copy_only=False).astype(np.float32)
    box, lm = fixed("box", 4), fixed("landmarks", 2 * N_LANDMARKS)
    crops = table.column("crop").to_pylist()
    fw = table.column("frame_width").to_numpy()
    fh = table.column("frame_height").to_numpy()
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    for s, e in zip(np.concatenate([[0], change]), np.concatenate([change, [n]])):
        out[str(ids[s])] = ClipDetections(
            t[s:e], present[s:e], prob[s:e], box[s:e], lm[s:e], crops[s:e], int(fw[s]), int(fh[s])
        )
    return out


def read_detections(path: str | Path) -> tuple[dict[str, Any], dict[str, ClipDetections]]:
    """(metadata, clip id -> ClipDetections) of a detections table."""
    meta = detections_meta(path)
    table = read_table(path)
    missing = set(SCHEMA.names) - set(table.column_names)
    if missing:
        raise StoreError(f"{path}: detections table lacks columns {sorted(missing)}")
    out = clips_from_table(table)
    for clip_id in meta.get("clips", []):  # clips too short for one step have no rows
        out.setdefault(clip_id, ClipDetections.empty())
    return meta, out
