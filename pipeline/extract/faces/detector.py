"""The MTCNN face detector (Zhang et al. 2016, as packaged by facenet-pytorch): one kept face,
its box, landmarks and crop per step of a video.

001 §4.2.1 finds faces with MTCNN before VGG-Face; this does the same on frames sampled at
`faces.rate_hz` (the frame on screen at each step centre, `pipeline.media.iter_video_frames`); the
default 5 Hz is 003 §5.2.3's face rate (001 uses every frame; that is rate_hz = the video's fps).

Per step, one of the faces MTCNN finds is kept (`faces.selection`: most confident or largest;
`faces.track`: the face continuing the one kept last — `face_track` documents the policy, and how
`faces.detect_every` = k fills the steps between detections), with its box, probability, five
landmarks and a square crop (`crops`). A step without a face, or whose best face is below
`min_probability`, is present=false with a null crop.

`faces.downscale` (optional): frames whose longer side exceeds it are shrunk to that side (area
resampling, rounded to 8-bit like any image) before MTCNN; boxes and landmarks are scaled back to
the original frame. `min_face_size` then applies to the shrunk frame: at downscale D a face must be
min_face_size · max(W, H) / D original pixels wide — fewer pyramid levels is where the speed comes
from.

MTCNN's own hyper-parameters stay at facenet-pytorch's defaults, which are the MTCNN paper's
(thresholds 0.6/0.7/0.7, pyramid factor 0.709); `min_face_size` comes from params.

Speed without changing a detection (`mtcnn_fast`): facenet-pytorch's `detect_face` spends most of its
CPU time area-resampling — the whole frame once per pyramid level, then each candidate box one at a
time in a Python loop (stages 2 and 3). Here every one of those resamplings is read off one integral
image of the batch: the sums of 8-bit pixels are exact integers, divided in the same order as torch's
`adaptive_avg_pool2d`, so the networks see bit-identical inputs and the detections equal
facenet-pytorch's own (tested). The networks, NMS and box regression are facenet-pytorch's. Frames
are batched (`batch_size`) within one clip, never across clips: CPU kernels and NMS give other bits
for other batch compositions (a box moves by float rounding, which can flip a tracking or threshold
decision), so a clip's detections must not depend on its neighbours, the resume point of a killed
run, the group size or the worker count (issue 22; tests/test_extract_determinism.py). A clip's
batches start at its first detection step, so they depend on the clip and `batch_size` alone
(`batch_size` is part of the cache key). Each clip is decoded once,
converting to RGB only the frames a step shows, by a background thread that runs up to
`DECODE_AHEAD` frames ahead of detection (PyAV releases the GIL while decoding, so decoding overlaps
the networks; results do not depend on it).

Windows and crops (the manifest's start/end/crop; `pipeline.media.clip_video_source`): a clip that is
a window of its video is decoded from the keyframe before its start, and its step times count from
the clip's start. A clip's `crop` (fractions of the frame) is cut from every frame BEFORE detection:
MTCNN runs on the cropped region only, the boxes and landmarks are in the cropped frame's pixels
(frame_width/frame_height are the cropped frame's size), and the face crops are cut from the cropped
frame (zero-padded beyond its edges, not filled from the rest of the frame).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from pipeline.core.device import pick_device
from pipeline.extract.faces.crops import encode_jpeg, square_crop
from pipeline.extract.faces.face_track import (
    SELECTORS,
    Candidates,
    FaceTracker,
    StepFace,
    interpolate,
    needs_detection,
)
from pipeline.extract.faces.mtcnn_fast import (
    EmptyCrop,
    area_downscale,
    fast_mtcnn_detect,
    fast_pools,
)
from pipeline.extract.faces.params import FacesParams
from pipeline.extract.faces.table import ClipDetections
from pipeline.media import MediaError, VideoSource, probe

#: a video whose frames end this much before the duration its container declares is truncated
TRUNCATION_TOLERANCE_S = 0.5
#: frames decoded ahead of detection by the decoding thread (`_decode_ahead`)
DECODE_AHEAD = 32


# --------------------------------------------------------------------------------------------------
# Clips: detection steps, tracking, detect-every-k
# --------------------------------------------------------------------------------------------------


class _ClipState:
    """One clip on its way through the detector: the steps resolved so far, the last detected step
    (`anchor`) and the undetected steps since the last step queued for detection (`segment`, frames
    kept for their crops)."""

    def __init__(self, key: Any, source: VideoSource, params: FacesParams):
        self.key, self.source, self.params = key, source, params
        self.path = source.path
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
        detected step, the anchor), then the step itself (rules: pipeline.extract.faces.face_track)."""
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
                _check_not_truncated(self.source, self.times, self.params.rate_hz)
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


def _decode_ahead(videos: Iterable[tuple[Any, Path | VideoSource]], rate_hz: float, depth: int = DECODE_AHEAD) -> Iterator[tuple[Any, VideoSource, Iterator]]:
    """(key, source, its frames) per video, in order, decoded by one background thread up to `depth`
    frames ahead: PyAV releases the GIL while it decodes and converts, so decoding the next frames
    overlaps detection of the last ones. A frames iterator raises its video's MediaError where the
    video's own iterator would; an error of `videos` itself is raised where the loop over it would meet
    it. Each frames iterator must be used up before the next item is taken (as `FaceDetector.run` does)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for key, video in videos:
                source = video if isinstance(video, VideoSource) else VideoSource(Path(video))
                put(("clip", key, source))
                try:
                    for frame in source.frames(rate_hz):
                        if stop.is_set():
                            return
                        put(("frame", frame))
                except MediaError as e:
                    put(("error", e))  # ends the clip
                else:
                    put(("end",))
        except BaseException as e:  # noqa: BLE001 — handed to the consumer, raised there
            put(("fatal", e))
        finally:
            put(("done",))

    def frames() -> Iterator:
        while True:
            item = items.get()
            if item[0] == "frame":
                yield item[1]
            elif item[0] in ("error", "fatal"):
                raise item[1]
            else:
                return

    thread = threading.Thread(target=produce, name="faces-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item[0] == "fatal":
                raise item[1]
            if item[0] == "done":
                return
            yield item[1], item[2], frames()
    finally:
        stop.set()
        thread.join()


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

    def run(self, videos: Iterable[tuple[Any, Path | VideoSource]]) -> Iterator[tuple[Any, ClipDetections | MediaError]]:
        """(key, detections or the MediaError naming the file) per (key, video path or VideoSource: a
        window and crop of a file), in order.
        Detection steps are batched (params.batch_size) within each clip, from its first step (so a
        clip's detections do not depend on the other clips); a clip whose media or detection fails
        does not affect the others. Frames are decoded by a background thread a little ahead of
        detection (`_decode_ahead`), the next clip's while this one's last batch runs."""
        k = self.params.detect_every
        queue: list[tuple[_ClipState, float, np.ndarray, list]] = []  # the clip's steps awaiting detection

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
                        s.error = MediaError(f"{s.source}: face detection failed near t={t:.3f} s: {e}")
            queue.clear()

        for key, source, frames in _decode_ahead(videos, self.params.rate_hz):
            state = _ClipState(key, source, self.params)
            try:
                for i, ((t, frame), last) in enumerate(_mark_last(frames)):
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
            if queue and state.error is None:  # the clip's last batch: never shared with the next clip
                flush()
            queue.clear()
            yield key, state.result()

    def _detect_one(self, s: _ClipState, t: float, frame: np.ndarray) -> Candidates:
        try:
            return self.detect([frame])[0]
        except DETECT_ERRORS as e:
            s.error = s.error or MediaError(f"{s.source}: face detection failed on the frame at t={t:.3f} s: {e}")
            return Candidates.none()

    def process_video(self, video: str | Path | VideoSource) -> ClipDetections:
        """Detections for one video (a file, or a VideoSource: a window and crop of one) at
        params.rate_hz. Raises MediaError (naming the file) for unusable or truncated media."""
        ((_, result),) = list(self.run([(None, video if isinstance(video, VideoSource) else Path(video))]))
        if isinstance(result, MediaError):
            raise result
        return result


def _check_not_truncated(source: VideoSource, times: list[float], rate_hz: float) -> None:
    # FFmpeg stops quietly at the end of a cut-off file; the container's declared duration (probe)
    # tells a truncated video from a short one. A video track may legitimately end a little before
    # the audio, hence the tolerance. For a window, the steps should reach the window's end (or the
    # declared end, when that comes first); times count from the window's start.
    declared = probe(source.path).duration
    start, end = source.window()
    expected = (min(end, declared) if end is not None and declared > 0 else declared) - start
    covered = (times[-1] + 0.5 / rate_hz) if times else 0.0
    if declared > 0 and expected - covered > max(TRUNCATION_TOLERANCE_S, 1.0 / rate_hz):
        raise MediaError(
            f"{source}: video frames end at {start + covered:.2f} s but the file declares {declared:.2f} s: "
            f"truncated or partly corrupt"
        )
