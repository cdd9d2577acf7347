"""The faces stage: MTCNN on real CREMA-D frames, faceless frames, crops, the table, bad media."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch.nn.functional import interpolate

from pipeline.corpus.manifest import Clip
from pipeline.extract.faces import (
    SCHEMA,
    Candidates,
    FaceDetector,
    FacesExtractor,
    cache_key,
    decode_jpeg,
    read_detections,
    select_face,
    square_crop,
)
from pipeline.extract.faces.face_track import iou
from pipeline.extract.faces.mtcnn_fast import (
    ONET_CHUNK,
    RNET_CHUNK,
    AreaSampler,
    ExactMaxPool,
    fast_mtcnn_detect,
    in_chunks,
)
from pipeline.extract.faces.params import FacesParams
from pipeline.extract.runner import RunStats, StageError, extract_corpus
from pipeline.media import MediaError, iter_video_frames, probe, sample_times

CLIPS = ("1001_DFA_ANG_XX", "1001_DFA_HAP_XX", "1001_DFA_SAD_XX")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(FacesParams(), device="cpu")


@pytest.fixture(scope="module")
def video(crema_d_dir: Path) -> Path:
    return crema_d_dir / "VideoFlash" / f"{CLIPS[0]}.flv"


@pytest.fixture(scope="module")
def frames(video: Path) -> list[tuple[float, np.ndarray]]:
    return list(iter_video_frames(video, FacesParams().rate_hz))


def _clip(path: Path, clip_id: str | None = None) -> Clip:
    return Clip(clip_id=clip_id or path.stem, speaker="1001", media_path=str(path), duration=2.0)


def _detect(clips: list[Clip], params: FacesParams, out: Path, errors_dir: Path, cache_root: Path | None = None,
            detector: FaceDetector | None = None, stats: RunStats | None = None) -> Path:
    """The faces stage's run: FacesExtractor on the one runner, writing the detections table `out`."""
    ex = FacesExtractor(params, device="cpu", detector=detector)
    return extract_corpus(ex, clips, out=out, errors_dir=errors_dir, on_error=params.on_error, cache_dir=cache_root, stats=stats)


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 5) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"qscale": "2"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def test_face_in_every_sampled_frame_of_real_clips(detector, crema_d_dir):
    for clip_id in CLIPS:
        path = crema_d_dir / "VideoFlash" / f"{clip_id}.flv"
        d = detector.process_video(path)
        np.testing.assert_allclose(d.t, sample_times(probe(path).duration, 5.0))
        assert d.present.all(), f"{clip_id}: no face at t={d.t[~d.present]}"
        assert (d.probability > 0.99).all()
        assert (d.frame_width, d.frame_height) == (480, 360)
        # the actor's face is in the middle of a 480×360 frame, roughly 95×125 px
        w, h = d.box[:, 2] - d.box[:, 0], d.box[:, 3] - d.box[:, 1]
        assert ((w > 60) & (w < 160) & (h > 80) & (h < 200)).all()
        # landmarks: both eyes above the nose, the nose above both mouth corners, all inside the box
        lm = d.landmarks.reshape(-1, 5, 2)
        assert (lm[:, :2, 1] < lm[:, 2:3, 1]).all() and (lm[:, 2:3, 1] < lm[:, 3:, 1]).all()
        assert ((lm[..., 0] > d.box[:, None, 0]) & (lm[..., 0] < d.box[:, None, 2])).all()
        for i in range(len(d)):
            crop = d.crop(i)
            assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
            assert d.crops[i][:2] == b"\xff\xd8"  # JPEG start-of-image


def test_detections_equal_facenet_pytorch_detect(detector, frames):
    """Our batched detection + selection = facenet-pytorch's MTCNN.detect on each frame alone,
    most probable face."""
    from facenet_pytorch import MTCNN

    reference = MTCNN(min_face_size=FacesParams().min_face_size, device="cpu")
    ours = detector.detect([f for _, f in frames])
    assert len(ours) == len(frames)
    for (t, frame), cand in zip(frames, ours):
        boxes, probs, points = reference.detect(frame, landmarks=True)  # object-dtype arrays
        boxes, probs, points = (np.asarray(a, np.float64) for a in (boxes, probs, points))
        best = int(np.argmax(probs))
        face = select_face(cand, 0.9)
        assert face.present
        np.testing.assert_allclose(face.box, boxes[best], atol=1e-3, err_msg=f"t={t}")
        np.testing.assert_allclose(face.probability, probs[best], atol=1e-6)
        np.testing.assert_allclose(face.landmarks, points[best].reshape(-1), atol=1e-3)


def test_faceless_frames_in_a_batch(detector, frames):
    face = frames[0][1]
    blank = np.zeros_like(face)
    noise = np.random.default_rng(0).integers(0, 256, face.shape, dtype=np.uint8)
    cands = detector.detect([face, blank, noise, face])
    assert [len(c) > 0 for c in cands] == [True, False, False, True]
    assert not select_face(cands[1], 0.9).present
    assert select_face(cands[1], 0.9).box is None


def test_batch_failure_falls_back_to_single_frames(detector, frames, monkeypatch):
    """facenet-pytorch #224: a batch that raises is redone frame by frame, with the same result."""
    batch = [f for _, f in frames[:4]]
    expected = detector.detect(batch)
    real_detect = detector._detect_batch
    calls = []

    def fragile(imgs):
        calls.append(len(imgs))
        if len(imgs) > 1:
            raise ValueError("setting an array element with a sequence (inhomogeneous shape)")
        return real_detect(imgs)

    monkeypatch.setattr(detector, "_detect_batch", fragile)
    got = detector.detect(batch)
    assert calls == [4, 1, 1, 1, 1]
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


def test_candidates_from_object_arrays():
    """MTCNN.detect's object arrays: (n, 4) per frame, or None/[None] for a frame without faces."""
    boxes = np.array([np.array([[1, 2, 3, 4], [5, 6, 7, 9]], np.float32), None], dtype=object)
    probs = np.array([np.array([0.95, 0.99]), [None]], dtype=object)
    points = np.array([np.zeros((2, 5, 2), np.float32), None], dtype=object)
    c0 = Candidates.from_mtcnn(boxes[0], probs[0], points[0])
    c1 = Candidates.from_mtcnn(boxes[1], probs[1], points[1])
    assert len(c0) == 2 and c0.boxes.dtype == np.float32 and c0.landmarks.shape == (2, 5, 2)
    assert len(c1) == 0
    # most probable vs largest, and the threshold
    assert select_face(c0, 0.9).box.tolist() == [5, 6, 7, 9]
    assert select_face(c0, 0.9, "largest").box.tolist() == [5, 6, 7, 9]
    low = select_face(c0, 0.999)
    assert not low.present and low.probability == pytest.approx(0.99)  # best sub-threshold kept


def test_square_crop_geometry():
    frame = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    frame[:] = np.random.default_rng(1).integers(1, 256, frame.shape, dtype=np.uint8)  # no zeros
    # inside the frame, margin 0: exactly the box, resized
    crop = square_crop(frame, (50, 20, 90, 60), crop_size=40, margin=0.0)
    assert crop.shape == (40, 40, 3)
    np.testing.assert_array_equal(crop, frame[20:60, 50:90])
    # margin 0.5 on a 40 px box: a 60 px square centred on the box
    big = square_crop(frame, (50, 20, 90, 60), crop_size=60, margin=0.5)
    np.testing.assert_array_equal(big, frame[10:70, 40:100])
    # a box at the top-left corner: the part outside the frame is zero padding
    edge = square_crop(frame, (0, 0, 20, 20), crop_size=40, margin=1.0)
    np.testing.assert_array_equal(edge[:10], 0)
    np.testing.assert_array_equal(edge[:, :10], 0)
    np.testing.assert_array_equal(edge[10:, 10:], frame[0:30, 0:30])
    # non-square boxes give square crops of the longer side
    assert square_crop(frame, (10, 10, 30, 90), crop_size=32, margin=0.2).shape == (32, 32, 3)


def test_table_with_faceless_steps(tmp_path, frames):
    face = frames[0][1]
    blank = np.zeros_like(face)
    video = _write_video(tmp_path / "mixed.mp4", [face, face, blank, blank, face, face, blank, face])
    params = FacesParams(crop_size=112, batch_size=3)
    out = _detect([_clip(video, "mixed")], params, out=tmp_path / "det.parquet", errors_dir=tmp_path / "err")
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == SCHEMA
    meta, det = read_detections(out)
    d = det["mixed"]
    assert d.present.tolist() == [True, True, False, False, True, True, False, True]
    np.testing.assert_allclose(d.t, (np.arange(8) + 0.5) / 5.0)
    assert [c is None for c in d.crops] == [not p for p in d.present]
    assert np.isnan(d.box[~d.present]).all() and np.isnan(d.probability[~d.present]).all()
    assert np.isfinite(d.box[d.present]).all()
    assert decode_jpeg(d.crops[0]).shape == (112, 112, 3)
    assert table.column("crop").null_count == 3 and table.column("box").null_count == 3
    assert meta["detector"] == "facenet-pytorch MTCNN" and meta["version"]
    assert meta["params"]["crop_size"] == 112 and meta["rate_hz"] == 5.0 and meta["clips"] == ["mixed"]
    assert meta["crop"]["quality"] == 95
    assert list(csv.reader(open(tmp_path / "err" / "faces.csv"))) == [["clip_id", "error"]]


def test_corpus_sorted_and_per_clip(tmp_path, crema_d_dir):
    clips = [_clip(crema_d_dir / "VideoFlash" / f"{c}.flv") for c in reversed(CLIPS[:2])]
    out = _detect(clips, FacesParams(), out=tmp_path / "det.parquet", errors_dir=tmp_path / "err")
    table = pq.read_table(out, columns=["clip_id", "t"])
    ids = table.column("clip_id").to_pylist()
    assert ids == sorted(ids) and set(ids) == set(CLIPS[:2])
    _, det = read_detections(out)
    for d in det.values():
        assert np.all(np.diff(d.t) > 0)


def test_corrupt_and_truncated_video(tmp_path, detector, video):
    data = video.read_bytes()
    corrupt = tmp_path / "corrupt.flv"
    corrupt.write_bytes(data[:100] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    truncated = tmp_path / "truncated.flv"
    truncated.write_bytes(data[: len(data) // 2])
    for bad in (corrupt, truncated):
        with pytest.raises(MediaError, match=bad.name):
            detector.process_video(bad)
    with pytest.raises(MediaError, match="truncated"):
        detector.process_video(truncated)

    clips = [_clip(video), _clip(truncated), _clip(corrupt)]
    with pytest.raises(StageError, match="truncated.flv"):
        _detect(clips, FacesParams(on_error="fail"), out=tmp_path / "a.parquet", errors_dir=tmp_path / "e1")
    assert not (tmp_path / "a.parquet").exists()

    out = _detect(clips, FacesParams(on_error="skip"), out=tmp_path / "b.parquet", errors_dir=tmp_path / "e2")
    meta, det = read_detections(out)
    assert set(det) == {video.stem}
    assert set(meta["skipped"]) == {"truncated", "corrupt"}
    rows = list(csv.DictReader(open(tmp_path / "e2" / "faces.csv")))
    assert {r["clip_id"] for r in rows} == {"truncated", "corrupt"}
    assert all(r["clip_id"] + ".flv" in r["error"] for r in rows)


def test_missing_video_file(detector, tmp_path):
    with pytest.raises(MediaError, match="nothere.flv: file not found"):
        detector.process_video(tmp_path / "nothere.flv")


def test_crop_is_the_face(detector, frames):
    """The crop shows the square around the detected box (margin 0.2), resized to 224²."""
    t, frame = frames[3]
    face = select_face(detector.detect([frame])[0], 0.9)
    crop = square_crop(frame, face.box, 224, 0.2)
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1) * 1.2
    left, top = int(round((x1 + x2 - side) / 2)), int(round((y1 + y2 - side) / 2))
    s = int(round(side))
    assert left > 0 and top > 0 and left + s < frame.shape[1] and top + s < frame.shape[0]
    expected = np.asarray(Image.fromarray(frame[top : top + s, left : left + s]).resize((224, 224), Image.BILINEAR))
    np.testing.assert_array_equal(crop, expected)
    # and that square is where the face is: the landmarks fall inside its middle
    lm = face.landmarks.reshape(5, 2)
    assert ((lm[:, 0] > left + 0.2 * s) & (lm[:, 0] < left + 0.8 * s)).all()
    assert ((lm[:, 1] > top + 0.2 * s) & (lm[:, 1] < top + 0.8 * s)).all()


# --------------------------------------------------------------------------------------------------
# Speed without changing a detection: integral-image resampling, exact max pooling
# --------------------------------------------------------------------------------------------------


def test_area_sampler_is_torch_area_interpolation_bit_for_bit():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    sampler = AreaSampler(frames, torch.device("cpu"))
    nchw = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    for size in [(22, 32), (9, 13), (37, 53), (5, 4)]:
        assert torch.equal(sampler.resize(*size), interpolate(nchw, size=size, mode="area"))
    # rectangles of either frame, resized: facenet-pytorch's per-box imresample
    y0, y1, x0, x1, f = (torch.tensor(v) for v in ([0, 5, 30], [37, 29, 31], [2, 0, 40], [50, 24, 53], [0, 1, 1]))
    crops = sampler.crops(f, y0, y1, x0, x1, 24)
    for k in range(3):
        ref = interpolate(nchw[f[k] : f[k] + 1, :, y0[k] : y1[k], x0[k] : x1[k]], size=(24, 24), mode="area")
        assert torch.equal(crops[k : k + 1], ref)


def test_exact_max_pool():
    g = torch.Generator().manual_seed(0)
    for k, s in ((2, 2), (3, 2)):
        pool = torch.nn.MaxPool2d(k, s, ceil_mode=True)
        for h, w in ((7, 9), (8, 8), (3, 5), (24, 11)):
            for channels_last in (False, True):
                x = torch.randn(2, 5, h, w, generator=g)
                x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                ref, got = pool(x), ExactMaxPool(pool)(x)
                assert torch.equal(ref, got)
                assert got.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="ceil-mode"):
        ExactMaxPool(torch.nn.MaxPool2d(2, 2))


def test_fast_detect_equals_facenet_pytorch_bit_for_bit(frames):
    """The same candidates, in the same order, as facenet-pytorch's MTCNN.detect on the same batch
    (with a faceless and a noise frame in it)."""
    from facenet_pytorch import MTCNN

    reference = MTCNN(min_face_size=20, keep_all=True, device="cpu")
    face = frames[2][1]
    noise = np.random.default_rng(0).integers(0, 256, face.shape, dtype=np.uint8)
    batch = np.stack([face, np.zeros_like(face), frames[5][1], noise])
    boxes, probs, points = reference.detect(batch, landmarks=True)
    fast = FaceDetector(FacesParams(), device="cpu").mtcnn  # with ExactMaxPool
    with torch.inference_mode():
        ours = fast_mtcnn_detect(fast, batch)
    for got, b, p, lm in zip(ours, boxes, probs, points):
        want = Candidates.from_mtcnn(b, p, lm)
        assert len(got) == len(want)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.probs, want.probs)
        np.testing.assert_array_equal(got.landmarks, want.landmarks)
    assert [len(c) for c in ours][1] == 0
    # R-Net and O-Net in balanced chunks give what one batch gives, bit for bit, a shorter chunk included
    rng = np.random.default_rng(1)
    for net, size, chunk in ((fast.rnet, 24, RNET_CHUNK), (fast.onet, 48, ONET_CHUNK)):
        crops = (torch.as_tensor(rng.integers(0, 256, (3 * chunk + 5, 3, size, size)), dtype=torch.float32) - 127.5) * 0.0078125
        with torch.inference_mode():
            whole, chunked = net(crops), in_chunks(net, crops, chunk)
            assert all(torch.equal(a, b) for a, b in zip(whole, chunked))


# --------------------------------------------------------------------------------------------------
# Downscaling, detect-every-k, tracking, batching across clips, the per-clip cache
# --------------------------------------------------------------------------------------------------


def test_downscale_keeps_the_boxes(detector, video):
    full = detector.process_video(video)
    small_detector = FaceDetector(FacesParams(downscale=240), device="cpu")
    small = small_detector.process_video(video)
    assert small.present.all() and (small.frame_width, small.frame_height) == (480, 360)
    # boxes in full-frame pixels, within a few pixels of the full-resolution detection
    overlap = [iou(a, b[None])[0] for a, b in zip(full.box, small.box)]
    assert min(overlap) > 0.85, overlap
    assert np.abs(full.box - small.box).max() < 8
    assert np.abs(full.landmarks - small.landmarks).max() < 6
    # the crop is cut from the full-resolution frame at that box
    t, frame = next(iter_video_frames(video, 5.0))
    expected = square_crop(frame, small.box[0], 224, 0.2)
    assert np.abs(small.crop(0).astype(int) - expected.astype(int)).mean() < 3  # JPEG q95


def test_detect_every_k_on_a_steady_face(detector, video):
    every1 = detector.process_video(video)
    every3 = FaceDetector(FacesParams(detect_every=3), device="cpu")
    got = every3.process_video(video)
    n = len(every1)
    assert every3.frames_detected == len(range(0, n, 3)) + (0 if (n - 1) % 3 == 0 else 1)
    np.testing.assert_array_equal(got.present, every1.present)
    np.testing.assert_array_equal(got.t, every1.t)
    detected = sorted(set(range(0, n, 3)) | {n - 1})
    np.testing.assert_array_equal(got.box[detected], every1.box[detected])  # detected steps: MTCNN's own
    overlap = [iou(a, b[None])[0] for a, b in zip(every1.box, got.box)]
    assert min(overlap) > 0.8
    # between detections: the linear interpolation of the two detections
    np.testing.assert_allclose(got.box[1], (2 * got.box[0] + got.box[3]) / 3, rtol=1e-5)
    assert all(c is not None for c in got.crops)


def test_detect_every_k_with_faceless_frames_detects_the_changes(tmp_path, frames):
    """Where a face appears or disappears between two detections, the steps between are detected:
    presence is exactly that of detecting every step, and no batch crashes."""
    face = frames[0][1]
    blank = np.zeros_like(face)
    pattern = [face] * 6 + [blank] * 3 + [face] * 4 + [blank]
    video = _write_video(tmp_path / "gaps.mp4", pattern)
    want = [f is face for f in pattern]
    # k=3 detects 0, 3, 6, 9, 12, 13, then 4, 5 (face → none) and 7, 8 (none → face)
    # k=4 detects 0, 4, 8, 12, 13, then 5, 6, 7 and 9, 10, 11
    for k, detections in ((1, 14), (3, 10), (4, 11)):
        det = FaceDetector(FacesParams(detect_every=k, batch_size=2), device="cpu")
        d = det.process_video(video)
        assert d.present.tolist() == want, k
        assert [c is None for c in d.crops] == [not p for p in want]
        assert det.frames_detected == detections, k


def test_tracking_keeps_the_face_it_follows(tmp_path, frames):
    """The actor alone on the left, then a larger copy appears on the right. `largest` alone jumps
    to the copy; with tracking the kept face stays on the actor (the face it follows)."""
    face = frames[0][1]
    canvas = np.zeros((240, 480, 3), np.uint8)
    canvas[60:180, :160] = np.asarray(Image.fromarray(face).resize((160, 120), Image.BILINEAR))
    both = canvas.copy()
    both[:, 160:] = np.asarray(Image.fromarray(face).resize((320, 240), Image.BILINEAR))
    video = _write_video(tmp_path / "two.mp4", [canvas, canvas, both, both, both])
    cands = FaceDetector(FacesParams(), device="cpu").detect([both])[0]
    assert len(cands) == 2 and (cands.probs > 0.9).all()  # both faces are found
    tracked = FaceDetector(FacesParams(selection="largest", track=True), device="cpu").process_video(video)
    jumping = FaceDetector(FacesParams(selection="largest", track=False), device="cpu").process_video(video)
    assert tracked.present.all() and jumping.present.all()
    assert (tracked.box[:, 2] < 170).all()  # every step keeps the left face
    assert (jumping.box[:2, 2] < 170).all() and (jumping.box[2:, 0] > 160).all()


def test_clips_run_together_equal_clip_by_clip_bit_for_bit(detector, crema_d_dir):
    """Batches never span clips (issue 22): a clip's detections are the same bits whatever clips run
    with it (a frame batched with other frames can get other bits from the CPU kernels and NMS: a
    box moved by ~1e-5 px here when clip 0 shared a batch with clip 1)."""
    paths = [crema_d_dir / "VideoFlash" / f"{c}.flv" for c in CLIPS[:2]]
    together = dict(detector.run([(p.stem, p) for p in paths]))
    assert detector.params.batch_size < sum(len(d) for d in together.values())  # one batch could span both
    for p in paths:
        alone = detector.process_video(p)
        for field in ("t", "present", "box", "probability", "landmarks"):
            np.testing.assert_array_equal(getattr(together[p.stem], field), getattr(alone, field), err_msg=field)
        assert together[p.stem].crops == alone.crops


def test_cache_detects_only_the_new_clip(tmp_path, crema_d_dir):
    clips = [_clip(crema_d_dir / "VideoFlash" / f"{c}.flv") for c in CLIPS]
    params = FacesParams()
    first = FaceDetector(params, device="cpu")
    out1 = _detect(clips[:2], params, out=tmp_path / "a.parquet", errors_dir=tmp_path / "e", cache_root=tmp_path / "cache", detector=first)
    second = FaceDetector(params, device="cpu")
    out2 = _detect(clips, params, out=tmp_path / "b.parquet", errors_dir=tmp_path / "e", cache_root=tmp_path / "cache", detector=second)
    _, det1 = read_detections(out1)
    _, det2 = read_detections(out2)
    assert second.frames_detected == len(det2[CLIPS[2]])  # only the added clip went through MTCNN
    assert first.frames_detected == len(det1[CLIPS[0]]) + len(det1[CLIPS[1]])
    for c in CLIPS[:2]:
        np.testing.assert_array_equal(det1[c].box, det2[c].box)
        assert det1[c].crops == det2[c].crops
    # a rerun extracts nothing (MTCNN is not even loaded) and writes the same table
    stats, rerun = RunStats(), FacesExtractor(params, device="cpu")
    out3 = extract_corpus(rerun, clips, out=tmp_path / "c.parquet", errors_dir=tmp_path / "e", cache_dir=tmp_path / "cache", stats=stats)
    assert (stats.extracted, stats.cached, rerun._detector) == (0, 3, None)
    assert pq.read_table(out3).equals(pq.read_table(out2))
    # params that change detections change the key (batch size too: it cuts a clip's batches); the
    # error policy does not
    assert cache_key(params) != cache_key(FacesParams(track=False)) != cache_key(FacesParams(detect_every=2))
    assert cache_key(params) != cache_key(FacesParams(batch_size=4))
    assert cache_key(params) == cache_key(FacesParams(on_error="skip"))


def test_decode_ahead_keeps_order_and_errors():
    """The decoding thread hands over each video's frames in order, a video's MediaError inside its
    own frames (the next video still comes), an error of the list of videos where the loop meets it,
    and stops when the consumer does."""
    import threading

    from pipeline.extract.faces.detector import _decode_ahead
    from pipeline.media import VideoSource

    class Fake(VideoSource):
        def frames(self, rate_hz):
            n = int(self.path.stem[1:])
            for i in range(n):
                yield i / rate_hz, np.full((2, 2, 3), i, np.uint8)
            if self.path.suffix == ".bad":
                raise MediaError(f"{self.path}: broken after {n} frames")

    videos = [("a", Fake(Path("n3.mp4"))), ("b", Fake(Path("n2.bad"))), ("c", Fake(Path("n40.mp4")))]
    seen = []
    for key, source, frames in _decode_ahead(videos, 5.0, depth=4):
        try:
            seen.append((key, [int(f[0, 0, 0]) for _, f in frames]))
        except MediaError as e:
            seen.append((key, str(e)))
    assert seen == [("a", [0, 1, 2]), ("b", "n2.bad: broken after 2 frames"), ("c", list(range(40)))]

    def failing():
        yield "a", Fake(Path("n1.mp4"))
        raise ValueError("manifest row 2: bad")

    got = _decode_ahead(failing(), 5.0)
    key, _, frames = next(got)
    assert key == "a" and len(list(frames)) == 1
    with pytest.raises(ValueError, match="manifest row 2"):
        next(got)
    # a consumer that stops early: the thread ends (no frames decoded for nobody, no hang)
    before = threading.active_count()
    got = _decode_ahead([("c", Fake(Path("n1000.mp4")))], 5.0, depth=2)
    _, _, frames = next(got)
    next(frames)
    got.close()
    assert threading.active_count() == before
