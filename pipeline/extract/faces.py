"""Face detection and cropping with MTCNN (Zhang et al. 2016, as packaged by facenet-pytorch).

001 §4.2.1 finds faces with MTCNN before VGG-Face; this stage does the same on frames sampled at
`faces.rate_hz` (the frame on screen at each step centre, `pipeline.media.iter_video_frames`); the
default 5 Hz is 003 §5.2.3's face rate (001 uses every frame; that is rate_hz = the video's fps).

Per step, of the faces MTCNN finds with probability >= `min_probability`, one is kept (policy
`probability`: the most confident; `largest`: the largest box — see SELECTORS, where tracking would
go), with its box, probability, five landmarks and a square crop:

* the crop is the square centred on the box with side max(w, h) · (1 + margin), i.e. margin/2 of
  the side on each side (facenet-pytorch's `extract_face` margin convention), axis-aligned (no
  rotation; the landmarks are stored so a similarity alignment can be added), zero-padded where it
  leaves the frame, resized to `crop_size`² (bilinear, antialiased) and stored as JPEG, quality 95;
* a step without a face, or whose best face is below `min_probability`, is present=false with a null
  crop; box, landmarks and probability then hold the most probable sub-threshold candidate MTCNN
  returned (so a reader sees why), or null when MTCNN returned none.

MTCNN's own hyper-parameters stay at facenet-pytorch's defaults, which are the MTCNN paper's
(thresholds 0.6/0.7/0.7, pyramid factor 0.709); `min_face_size` comes from params.

Output `data/faces/detections.parquet` (`pipeline.config.FACES`), sorted by clip then t:

    clip_id string, t float64, present bool, probability float32?,
    box fixed_size_list<float32>[4]? (x1, y1, x2, y2 in frame pixels),
    landmarks fixed_size_list<float32>[10]? (x, y of left eye, right eye, nose, mouth left, mouth right),
    crop binary? (JPEG), frame_width int32, frame_height int32

Schema metadata `mer` (JSON): detector, its version, params, selection policy, crop format, the
clip ids processed (`clips`, including clips with zero steps) and those skipped with their error
(`skipped`), so face_embed can tell "no face for this clip" from "table made for another corpus".
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.config import ERRORS_DIR, FACES, FacesParams
from pipeline.corpus.manifest import Clip
from pipeline.extract.device import pick_device
from pipeline.extract.runner import StageError, write_errors
from pipeline.media import MediaError, iter_video_frames, probe
from pipeline.store import META_KEY, StoreError, read_meta, read_table, write_table

DETECTOR = "facenet-pytorch MTCNN"
STAGE_VERSION = "1"  # bump when the output of the same params changes
JPEG_QUALITY = 95
N_LANDMARKS = 5

#: a video whose frames end this much before the duration its container declares is truncated
TRUNCATION_TOLERANCE_S = 0.5

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


# --------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------


@dataclass
class Candidates:
    """All faces MTCNN found in one frame: boxes (n, 4), probabilities (n,), landmarks (n, 5, 2)."""

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def from_mtcnn(cls, boxes: Any, probs: Any, points: Any) -> "Candidates":
        # MTCNN.detect gives None (and probs [None]) for a frame without faces, and object-dtype
        # arrays whose shape depends on how many faces the other frames of the batch had
        if boxes is None or len(boxes) == 0:
            return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, N_LANDMARKS, 2), np.float32))
        b = np.stack([np.asarray(x, np.float32) for x in boxes]).reshape(-1, 4)
        p = np.asarray([float(x) for x in np.asarray(probs, dtype=object).reshape(-1)], np.float32)
        lm = np.stack([np.asarray(x, np.float32) for x in points]).reshape(-1, N_LANDMARKS, 2)
        return cls(b, p, lm)

    def __len__(self) -> int:
        return len(self.probs)


def _by_probability(c: Candidates, eligible: np.ndarray) -> int:
    return int(eligible[np.argmax(c.probs[eligible])])


def _by_size(c: Candidates, eligible: np.ndarray) -> int:
    area = (c.boxes[eligible, 2] - c.boxes[eligible, 0]) * (c.boxes[eligible, 3] - c.boxes[eligible, 1])
    return int(eligible[np.argmax(area)])


#: which of a frame's eligible faces is kept; a tracker (continuity with the previous step's box)
#: would be one more entry taking the previous selection as state
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


def select_face(c: Candidates, min_probability: float, policy: str = "probability") -> StepFace:
    if len(c) == 0:
        return StepFace(False)
    eligible = np.flatnonzero(c.probs >= min_probability)
    present = len(eligible) > 0
    i = SELECTORS[policy](c, eligible) if present else int(np.argmax(c.probs))
    return StepFace(present, float(c.probs[i]), c.boxes[i].copy(), c.landmarks[i].reshape(-1).copy())


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


class FaceDetector:
    """MTCNN over batches of same-sized frames, one kept face and crop per frame."""

    def __init__(self, params: FacesParams, device: str | torch.device | None = None, selection: str = "probability"):
        from facenet_pytorch import MTCNN  # weights ship inside the package

        if selection not in SELECTORS:
            raise ValueError(f"unknown face selection policy {selection!r}; one of {sorted(SELECTORS)}")
        self.params = params
        self.selection = selection
        self.device = pick_device(device)
        # select_largest=False: candidates stay in detection order; SELECTORS choose among them
        self.mtcnn = MTCNN(min_face_size=params.min_face_size, select_largest=False, keep_all=True, device=self.device)
        self.mtcnn.eval()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Candidates]:
        """Candidates per frame; frames must share one size. A batch that facenet-pytorch cannot
        handle as a whole (its #224: frames without faces next to frames with them) falls back to
        one frame at a time, so a faceless frame never takes its neighbours down with it."""
        if len(frames) == 0:
            return []
        try:
            boxes, probs, points = self.mtcnn.detect(np.stack(frames), landmarks=True)
            return [Candidates.from_mtcnn(b, p, lm) for b, p, lm in zip(boxes, probs, points)]
        except (ValueError, RuntimeError, IndexError, TypeError):
            if len(frames) == 1:
                raise
        return [c for f in frames for c in self.detect([f])]

    def process_video(self, path: str | Path) -> ClipDetections:
        """Detections for one video at params.rate_hz. Raises MediaError (naming the file) for
        unusable or truncated media."""
        path = Path(path)
        p = self.params
        times: list[float] = []
        faces: list[StepFace] = []
        crops: list[bytes | None] = []
        size: tuple[int, int] | None = None
        for batch in _batched(iter_video_frames(path, p.rate_hz), p.batch_size):
            frames = [f for _, f in batch]
            if size is None:
                size = (frames[0].shape[1], frames[0].shape[0])
            try:
                candidates = self.detect(frames)
            except (ValueError, RuntimeError, IndexError, TypeError) as e:
                raise MediaError(f"{path}: face detection failed on frames at t={batch[0][0]:.3f} s: {e}") from None
            for (t, frame), cand in zip(batch, candidates):
                face = select_face(cand, p.min_probability, self.selection)
                times.append(t)
                faces.append(face)
                crops.append(encode_jpeg(square_crop(frame, face.box, p.crop_size, p.margin)) if face.present else None)
        _check_not_truncated(path, times, p.rate_hz)
        if size is None:
            return ClipDetections.empty()
        nan4, nan10 = np.full(4, np.nan, np.float32), np.full(2 * N_LANDMARKS, np.nan, np.float32)
        return ClipDetections(
            t=np.asarray(times, np.float64),
            present=np.asarray([f.present for f in faces], bool),
            probability=np.asarray([np.nan if f.probability is None else f.probability for f in faces], np.float32),
            box=np.stack([nan4 if f.box is None else f.box for f in faces]).astype(np.float32),
            landmarks=np.stack([nan10 if f.landmarks is None else f.landmarks for f in faces]).astype(np.float32),
            crops=crops,
            frame_width=size[0],
            frame_height=size[1],
        )


def _batched(items: Iterable, n: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_not_truncated(path: Path, times: list[float], rate_hz: float) -> None:
    # FFmpeg stops quietly at the end of a cut-off file; the container's declared duration (probe)
    # tells a truncated video from a short one. A video track may legitimately end a little before
    # the audio, hence the tolerance.
    declared = probe(path).duration
    covered = (times[-1] + 0.5 / rate_hz) if times else 0.0
    if declared > 0 and declared - covered > max(TRUNCATION_TOLERANCE_S, 1.0 / rate_hz):
        raise MediaError(
            f"{path}: video frames end at {covered:.2f} s but the file declares {declared:.2f} s: "
            f"truncated or partly corrupt"
        )


# --------------------------------------------------------------------------------------------------
# The detections table
# --------------------------------------------------------------------------------------------------


def detections_table(clips: dict[str, ClipDetections], meta: dict[str, Any]) -> pa.Table:
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
    schema = SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
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


def read_detections(path: str | Path) -> tuple[dict[str, Any], dict[str, ClipDetections]]:
    """(metadata, clip id -> ClipDetections) of a detections table."""
    meta = detections_meta(path)
    table = read_table(path)
    missing = set(SCHEMA.names) - set(table.column_names)
    if missing:
        raise StoreError(f"{path}: detections table lacks columns {sorted(missing)}")
    out: dict[str, ClipDetections] = {}
    n = len(table)
    if n == 0:
        return meta, out

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
    for clip_id in meta.get("clips", []):  # clips too short for one step have no rows
        out.setdefault(clip_id, ClipDetections.empty())
    return meta, out


# --------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------


def detect_corpus(
    clips: list[Clip],
    params: FacesParams,
    root: Path = Path("."),
    out: Path = FACES,
    errors_dir: Path = ERRORS_DIR,
    device: str | torch.device | None = None,
    selection: str = "probability",
) -> Path:
    """Detect faces in every clip's video and write the detections table; returns its path.

    A clip whose media is unusable (MediaError) stops the stage under on_error=fail (StageError
    naming clip and file); under skip it gets no rows, is listed in the table's metadata and in
    data/errors/faces.csv."""
    detector = FaceDetector(params, device=device, selection=selection)
    results: dict[str, ClipDetections] = {}
    errors: list[tuple[str, str]] = []
    for clip in tqdm(clips, desc="faces", unit="clip", dynamic_ncols=True):
        try:
            results[clip.clip_id] = detector.process_video(clip.media(root))
        except MediaError as e:
            if params.on_error == "fail":
                raise StageError(f"faces: clip {clip.clip_id}: {e}") from None
            errors.append((clip.clip_id, str(e)))
    meta = {
        "detector": DETECTOR,
        "version": package_version("facenet-pytorch"),
        "stage_version": STAGE_VERSION,
        "params": params.model_dump(mode="json"),
        "rate_hz": params.rate_hz,
        "selection": selection,
        "crop": {"format": "jpeg", "quality": JPEG_QUALITY, "size": params.crop_size, "margin": params.margin},
        "clips": sorted(results),
        "skipped": dict(errors),
    }
    write_table(out, detections_table(results, meta))
    write_errors(Path(errors_dir) / "faces.csv", errors)
    return Path(out)
