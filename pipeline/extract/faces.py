"""Face detection and cropping with MTCNN (Zhang et al. 2016, as packaged by facenet-pytorch).

001 §4.2.1 finds faces with MTCNN before VGG-Face; this stage does the same on frames sampled at
`faces.rate_hz` (the frame on screen at each step centre, `pipeline.media.iter_video_frames`); the
default 5 Hz is 003 §5.2.3's face rate (001 uses every frame; that is rate_hz = the video's fps).

Per step, one of the faces MTCNN finds is kept (`faces.selection`: most confident or largest;
`faces.track`: the face continuing the one kept last — `pipeline.extract.face_track` documents the
policy, and how `faces.detect_every` = k fills the steps between detections), with its box,
probability, five landmarks and a square crop:

* the crop is the square centred on the box with side max(w, h) · (1 + margin), i.e. margin/2 of
  the side on each side (facenet-pytorch's `extract_face` margin convention), axis-aligned (no
  rotation; the landmarks are stored so a similarity alignment can be added), zero-padded where it
  leaves the frame, cut from the full-resolution frame, resized to `crop_size`² (bilinear,
  antialiased) and stored as JPEG, quality 95;
* a step without a face, or whose best face is below `min_probability`, is present=false with a null
  crop; box, landmarks and probability then hold the most probable sub-threshold candidate MTCNN
  returned (so a reader sees why), or null when MTCNN returned none (or did not run on that step).

`faces.downscale` (optional): frames whose longer side exceeds it are shrunk to that side (area
resampling, rounded to 8-bit like any image) before MTCNN; boxes and landmarks are scaled back to
the original frame. `min_face_size` then applies to the shrunk frame: at downscale D a face must be
min_face_size · max(W, H) / D original pixels wide — fewer pyramid levels is where the speed comes
from.

MTCNN's own hyper-parameters stay at facenet-pytorch's defaults, which are the MTCNN paper's
(thresholds 0.6/0.7/0.7, pyramid factor 0.709); `min_face_size` comes from params.

Speed without changing a detection (`pipeline.extract.mtcnn_fast`): facenet-pytorch's `detect_face` spends
most of its CPU time area-resampling — the whole frame once per pyramid level, then each candidate
box one at a time in a Python loop (stages 2 and 3). Here every one of those resamplings is read off
one integral image of the batch: the sums of 8-bit pixels are exact integers, divided in the same
order as torch's `adaptive_avg_pool2d`, so the networks see bit-identical inputs and the detections
equal facenet-pytorch's own (tested). The networks, NMS and box regression are facenet-pytorch's.
Frames are batched (`batch_size`) across clips of the same frame size, and each clip is decoded
once, converting to RGB only the frames a step shows.

Output `data/faces/detections.parquet` (`pipeline.config.FACES`), sorted by clip then t:

    clip_id string, t float64, present bool, probability float32?,
    box fixed_size_list<float32>[4]? (x1, y1, x2, y2 in frame pixels),
    landmarks fixed_size_list<float32>[10]? (x, y of left eye, right eye, nose, mouth left, mouth right),
    crop binary? (JPEG), frame_width int32, frame_height int32

Schema metadata `mer` (JSON): detector, its version, params, selection policy, tracking,
detect_every, downscale, crop format, the clip ids processed (`clips`, including clips with zero
steps) and those skipped with their error (`skipped`), so face_embed can tell "no face for this
clip" from "table made for another corpus".

Per-clip cache (`pipeline.extract.cache.ClipCache`): each clip's rows are stored under the digest of
its video file and a key of detector version, STAGE_VERSION and the params that change detections
(`cache_key`), so a rerun after adding a clip detects only that clip.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.config import ERRORS_DIR, FACES, FacesParams
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import file_digest
from pipeline.extract.cache import ClipCache, config_key
from pipeline.extract.device import pick_device
from pipeline.extract.face_track import (
    N_LANDMARKS,
    SELECTORS,
    Candidates,
    FaceTracker,
    StepFace,
    interpolate,
    needs_detection,
    select_face,
)
from pipeline.extract.mtcnn_fast import EmptyCrop, area_downscale, fast_mtcnn_detect, fast_pools
from pipeline.extract.runner import StageError, write_errors
from pipeline.media import MediaError, iter_video_frames, probe
from pipeline.store import META_KEY, StoreError, read_meta, read_table, write_table

DETECTOR = "facenet-pytorch MTCNN"
STAGE_VERSION = "2"  # bump when the output of the same params changes
JPEG_QUALITY = 95

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

__all__ = [
    "DETECTOR", "SCHEMA", "Candidates", "ClipDetections", "FaceDetector", "SELECTORS", "StepFace",
    "decode_jpeg", "detect_corpus", "detections_meta", "detections_table", "read_detections",
    "select_face", "square_crop",
]


# --------------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Clips: detection steps, tracking, detect-every-k
# --------------------------------------------------------------------------------------------------


class _ClipState:
    """One clip on its way through the detector: the steps resolved so far, the last detected step
    (`anchor`) and the undetected steps since the last step queued for detection (`segment`, frames
    kept for their crops)."""

    def __init__(self, key: Any, path: Path, params: FacesParams):
        self.key, self.path, self.params = key, path, params
        self.tracker = FaceTracker(params.min_probability, params.selection, params.track)
        self.times: list[float] = []
        self.faces: list[StepFace] = []
        self.crops: list[bytes | None] = []
        self.size: tuple[int, int] = (0, 0)
        self.anchor: StepFace | None = None
        self.segment: list[tuple[float, np.ndarray]] = []
        self.error: MediaError | None = None

    def emit(self, t: float, frame: np.ndarray, face: StepFace) -> None:
        p = self.params
        self.times.append(t)
        self.faces.append(face)
        self.crops.append(encode_jpeg(square_crop(frame, face.box, p.crop_size, p.margin)) if face.present else None)

    def detected(self, t: float, frame: np.ndarray, cand: Candidates, before: list[tuple[float, np.ndarray]], detector: "FaceDetector") -> None:
        """Step (t, frame) was detected: resolve the undetected steps `before` it (since the last
        detected step, the anchor), then the step itself (rules: pipeline.extract.face_track)."""
        previous = self.tracker.previous
        face = self.tracker.select(cand)
        if before and needs_detection(self.anchor, face):  # a face appears / disappears / jumps
            self.tracker.previous = previous
            for (tm, fm), cm in zip(before, detector.detect([f for _, f in before])):
                self.emit(tm, fm, self.tracker.select(cm))
            face = self.tracker.select(cand)
        else:
            for j, (tm, fm) in enumerate(before, 1):
                self.emit(tm, fm, interpolate(self.anchor, face, j / (len(before) + 1)))
        self.emit(t, frame, face)
        self.anchor = face

    def result(self) -> ClipDetections | MediaError:
        if self.error is None:
            try:
                _check_not_truncated(self.path, self.times, self.params.rate_hz)
            except MediaError as e:
                self.error = e
        return self.error or ClipDetections.from_steps(self.times, self.faces, self.crops, self.size)


#: what a failing MTCNN batch raises (facenet-pytorch #224 and kin)
DETECT_ERRORS = (ValueError, RuntimeError, IndexError, TypeError)


def _mark_last(items: Iterable) -> Iterator[tuple[Any, bool]]:
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


class FaceDetector:
    """MTCNN over batches of same-sized frames, one kept face and crop per step."""

    def __init__(self, params: FacesParams, device: str | torch.device | None = None):
        from facenet_pytorch import MTCNN  # weights ship inside the package

        if params.selection not in SELECTORS:
            raise ValueError(f"unknown face selection policy {params.selection!r}; one of {sorted(SELECTORS)}")
        self.params = params
        self.device = pick_device(device)
        # select_largest=False: candidates stay in detection order; SELECTORS choose among them
        self.mtcnn = MTCNN(min_face_size=params.min_face_size, select_largest=False, keep_all=True, device=self.device)
        self.mtcnn.eval()
        fast_pools(self.mtcnn)
        self.calls = 0  # detect() calls on a non-empty batch, and frames detected (for tests, benchmarks)
        self.frames_detected = 0

    def _detect_batch(self, frames: np.ndarray) -> list[Candidates]:
        with torch.inference_mode():
            try:
                return fast_mtcnn_detect(self.mtcnn, frames)
            except EmptyCrop:
                boxes, probs, points = self.mtcnn.detect(frames, landmarks=True)
                return [Candidates.from_mtcnn(b, p, lm) for b, p, lm in zip(boxes, probs, points)]

    def detect(self, frames: Sequence[np.ndarray]) -> list[Candidates]:
        """Candidates per frame (boxes in the given frames' pixels); frames must share one size.
        Frames are downscaled first when params.downscale asks. A batch that raises is redone one
        frame at a time (facenet-pytorch's own batch code crashes on frames without faces next to
        frames with them, its #224), so one frame never takes its neighbours down with it."""
        if len(frames) == 0:
            return []
        self.calls += 1
        self.frames_detected += len(frames)
        batch = np.stack(frames)
        h, w = batch.shape[1:3]
        longest = self.params.downscale
        if longest is not None and max(h, w) > longest:
            batch = area_downscale(batch, longest, self.device)
            sy, sx = h / batch.shape[1], w / batch.shape[2]
        else:
            sx = sy = 1.0
        try:
            found = self._detect_batch(batch)
        except DETECT_ERRORS:
            if len(batch) == 1:
                raise
            found = [c for f in batch for c in self._detect_batch(f[None])]
        return found if sx == sy == 1.0 else [c.scaled(sx, sy) for c in found]

    def run(self, videos: Iterable[tuple[Any, Path]]) -> Iterator[tuple[Any, ClipDetections | MediaError]]:
        """(key, detections or the MediaError naming the file) per (key, video path), in order.
        Detection steps are batched (params.batch_size) across consecutive clips of one frame size;
        a clip whose media or detection fails does not affect the others."""
        k = self.params.detect_every
        queue: list[tuple[_ClipState, float, np.ndarray, list]] = []  # steps awaiting detection
        states: list[_ClipState] = []  # clips started and not yet handed out, in order

        def flush() -> None:
            try:
                cands = self.detect([f for _, _, f, _ in queue])
            except DETECT_ERRORS:  # one frame fails even alone: fail its clip only
                cands = [self._detect_one(s, t, f) for s, t, f, _ in queue]
            for (s, t, f, before), c in zip(queue, cands):
                if s.error is None:
                    try:
                        s.detected(t, f, c, before, self)
                    except DETECT_ERRORS as e:
                        s.error = MediaError(f"{s.path}: face detection failed near t={t:.3f} s: {e}")
            queue.clear()

        def done(everything: bool) -> Iterator[tuple[Any, ClipDetections | MediaError]]:
            waiting = {id(s) for s, *_ in queue}
            while states and (everything or id(states[0]) not in waiting):
                s = states.pop(0)
                yield s.key, s.result()

        for key, path in videos:
            state = _ClipState(key, Path(path), self.params)
            states.append(state)
            try:
                for i, ((t, frame), last) in enumerate(_mark_last(iter_video_frames(state.path, self.params.rate_hz))):
                    state.size = (frame.shape[1], frame.shape[0])
                    if i % k and not last:
                        state.segment.append((t, frame))
                        continue
                    if queue and queue[0][2].shape != frame.shape:
                        flush()
                    queue.append((state, t, frame, state.segment))
                    state.segment = []
                    if len(queue) >= self.params.batch_size:
                        flush()
            except MediaError as e:
                state.error = e
            yield from done(False)
        if queue:
            flush()
        yield from done(True)

    def _detect_one(self, s: _ClipState, t: float, frame: np.ndarray) -> Candidates:
        try:
            return self.detect([frame])[0]
        except DETECT_ERRORS as e:
            s.error = s.error or MediaError(f"{s.path}: face detection failed on the frame at t={t:.3f} s: {e}")
            return Candidates.none()

    def process_video(self, path: str | Path) -> ClipDetections:
        """Detections for one video at params.rate_hz. Raises MediaError (naming the file) for
        unusable or truncated media."""
        ((_, result),) = list(self.run([(None, Path(path))]))
        if isinstance(result, MediaError):
            raise result
        return result


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


# --------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------

#: params that do not change a detection (left out of the cache key)
_NOT_IN_CACHE_KEY = ("on_error", "batch_size")


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


def cache_key(params: FacesParams) -> str:
    """Config part of the per-clip cache key: detector, its version, STAGE_VERSION, the params that
    change detections (selection and tracking included)."""
    kept = params.model_dump(mode="json", exclude=set(_NOT_IN_CACHE_KEY))
    return config_key(DETECTOR, package_version("facenet-pytorch"), STAGE_VERSION, kept)


def detect_corpus(
    clips: list[Clip],
    params: FacesParams,
    root: Path = Path("."),
    out: Path = FACES,
    errors_dir: Path = ERRORS_DIR,
    device: str | torch.device | None = None,
    cache_root: Path | None = None,
    detector: FaceDetector | None = None,
) -> Path:
    """Detect faces in every clip's video and write the detections table; returns its path.

    Clips found in the per-clip cache under `cache_root` (None: a throw-away cache) are not decoded
    again. A clip whose media is unusable (MediaError) stops the stage under on_error=fail
    (StageError naming clip and file); under skip it gets no rows, is listed in the table's metadata
    and in data/errors/faces.csv."""
    results: dict[str, ClipDetections] = {}
    errors: list[tuple[str, str]] = []
    with ClipCache("faces", cache_key(params), root=cache_root) as cache:
        todo: list[tuple[tuple[str, str], Path]] = []
        for clip in clips:
            path = clip.media(root)
            digest = file_digest(path)
            hit = cache.get(digest) if digest != "-" else None
            if hit is None:
                todo.append(((clip.clip_id, digest), path))
            else:
                results[clip.clip_id] = next(iter(clips_from_table(hit).values()), None) or ClipDetections.empty()
        if todo:
            detector = detector or FaceDetector(params, device=device)
            for (clip_id, digest), got in tqdm(detector.run(todo), total=len(todo), desc="faces", unit="clip", dynamic_ncols=True):
                if isinstance(got, MediaError):
                    if params.on_error == "fail":
                        raise StageError(f"faces: clip {clip_id}: {got}") from None
                    errors.append((clip_id, str(got)))
                    continue
                results[clip_id] = got
                cache.put(digest, detections_table({clip_id: got}, {}))
    write_table(out, detections_table(results, table_meta(params, results, dict(errors))))
    write_errors(Path(errors_dir) / "faces.csv", errors)
    return Path(out)
