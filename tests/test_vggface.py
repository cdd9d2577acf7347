"""The face_embed stage: VGG-Face fc6 on real face crops, weights handling, precision."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pipeline.core.config import ConfigError
from pipeline.core.device import (
    autocast_context,
    bf16_supported,
    cpu_has_amx,
    pick_device,
    precision,
)
from pipeline.core.features import read_features
from pipeline.core.store import write_table
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError
from pipeline.extract.faces import FacesExtractor, detections_table, read_detections
from pipeline.extract.faces.params import FacesParams
from pipeline.extract.params import FaceEmbedParams
from pipeline.extract.precision import MIN_COSINE
from pipeline.extract.runner import extract_corpus
from pipeline.extract.vggface import (
    MEAN_RGB,
    VggFaceDag,
    VggFaceExtractor,
    build_network,
    preprocess,
)
from pipeline.media import probe

CLIP = "1001_DFA_ANG_XX"
HOLE = 1  # the step made faceless in the detections fixture


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def clip(crema_d_dir: Path) -> Clip:
    path = crema_d_dir / "VideoFlash" / f"{CLIP}.flv"
    return Clip(clip_id=CLIP, speaker="1001", media_path=str(path), duration=probe(path).duration)


@pytest.fixture(scope="module")
def detections(tmp_path_factory, clip) -> Path:
    """Real MTCNN detections of one clip at 2 Hz (5 steps), with step HOLE made faceless and one
    clip recorded as skipped by the faces stage."""
    tmp = tmp_path_factory.mktemp("faces")
    out = extract_corpus(FacesExtractor(FacesParams(rate_hz=2.0), device="cpu"), [clip], out=tmp / "det.parquet", errors_dir=tmp / "err")
    meta, det = read_detections(out)
    d = det[CLIP]
    assert d.present.all()
    d.present[HOLE] = False
    d.crops[HOLE] = None
    meta["skipped"] = {"broken": "broken.flv: file not found"}
    write_table(out, detections_table(det, meta))
    return out


def _faces(path: Path) -> dict:
    """What a face embedder takes: the detections table read once (metadata, clip id → detections)."""
    meta, det = read_detections(path)
    return dict(faces_meta=meta, detections=det, source=str(path))


@pytest.fixture(scope="module")
def crops(detections) -> np.ndarray:
    _, det = read_detections(detections)
    return np.stack([det[CLIP].crop(i) for i in (0, 2)])


@pytest.fixture(scope="module")
def net0() -> VggFaceDag:
    return build_network("random", seed=0)


def test_preprocess_is_rgb_minus_the_conversion_mean(crops):
    x = preprocess(crops)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    np.testing.assert_allclose(x[1, :, 100, 50].numpy(), crops[1, 100, 50].astype(float) - np.array(MEAN_RGB), rtol=1e-6)
    # another crop size is resized to the network's 224²
    assert preprocess(crops[:, ::2, ::2]).shape == (2, 3, 224, 224)


def test_fc6_equals_torchvision_vgg16(net0, crops):
    """The same weights in torchvision's own VGG16 give the same first fully connected layer."""
    tv = torchvision.models.vgg16(weights=None).eval()
    tv_convs = [m for m in tv.features if isinstance(m, torch.nn.Conv2d)]
    assert len(tv_convs) == len(net0.convs()) == 13
    with torch.no_grad():
        for ours, theirs in zip(net0.convs(), tv_convs):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        tv.classifier[0].weight.copy_(net0.fc6.weight)
        tv.classifier[0].bias.copy_(net0.fc6.bias)
    x = preprocess(crops)
    with torch.inference_mode():
        ours = net0(x)
        ref = tv.classifier[0](torch.flatten(tv.avgpool(tv.features(x)), 1))
    assert ours.shape == (2, 4096)
    scale = ref.abs().max().item()
    assert scale > 0.1
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * scale)
    assert (ours < 0).any(), "fc6 is taken before its ReLU"
    # relu=True: the same layer after its ReLU
    post = VggFaceDag(relu=True).eval()
    post.load_state_dict(net0.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(post(x), torch.relu(ours))


def test_random_weights_are_seeded(net0, crops):
    state = torch.random.get_rng_state()
    same, other = build_network("random", seed=0), build_network("random", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must not be consumed"
    for k, v in net0.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    x = preprocess(crops[:1])
    with torch.inference_mode():
        a, b, c = net0(x).numpy(), same(x).numpy(), other(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert _cos(a, c)[0] < 0.99
    # torchvision's VGG init: kaiming normal fan_out for convs, N(0, 0.01) for Linear, zero biases
    assert net0.conv1_1.weight.std().item() == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.05)
    assert net0.conv5_3.weight.std().item() == pytest.approx(np.sqrt(2 / (512 * 9)), rel=0.05)
    assert net0.fc6.weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert all(not m.bias.any() for m in [*net0.convs(), net0.fc6, net0.fc7, net0.fc8])


def test_extractor_rows_meta_and_table(tmp_path, detections, clip, net0):
    ex = VggFaceExtractor(FaceEmbedParams(bf16=False), **_faces(detections), device="cpu")
    assert (ex.name, ex.modality, ex.dim, ex.rate_hz) == ("vggface", "video", 4096, 2.0)
    rows = ex.process_clip(clip, Path("."))
    _, det = read_detections(detections)
    np.testing.assert_array_equal(rows.t, det[CLIP].t)
    assert rows.present.tolist() == [i != HOLE for i in range(len(rows.t))]
    assert not rows.values[HOLE].any()
    idx = np.flatnonzero(rows.present)
    with torch.inference_mode():
        expected = net0(preprocess(np.stack([det[CLIP].crop(i) for i in idx]))).numpy()
    np.testing.assert_allclose(rows.values[idx], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())

    meta = ex.meta()
    assert meta.pretrained is False and meta.backbone == "VGG-Face (VGG16) fc6"
    assert "RANDOM" in meta.weights_statement and "RANDOM" in meta.notes
    assert meta.params["precision"] == "fp32" and meta.params["faces"]["detector"] == "facenet-pytorch MTCNN"

    out = extract_corpus(ex, [clip], out_dir=tmp_path / "features", errors_dir=tmp_path / "errors")
    back_meta, back = read_features(out)
    assert out.name == "vggface.parquet" and back_meta == meta
    np.testing.assert_array_equal(back[CLIP].values, rows.values)


def test_unknown_and_skipped_clips(detections):
    faces = _faces(detections)
    by_mapping = VggFaceExtractor(FaceEmbedParams(), **faces, device="cpu")
    by_callable = VggFaceExtractor(FaceEmbedParams(), detections=faces["detections"].get, faces_meta=faces["faces_meta"], device="cpu")
    for ex in (by_mapping, by_callable):
        skipped = ex.process_clip(Clip(clip_id="broken", speaker="x", media_path="broken.flv", duration=1.0), Path("."))
        assert len(skipped.t) == 0 and skipped.values.shape == (0, 4096)
        with pytest.raises(ExtractionError, match="no detections for clip stranger"):
            ex.process_clip(Clip(clip_id="stranger", speaker="x", media_path="s.flv", duration=1.0), Path("."))


def test_state_dict_file_round_trip(tmp_path_factory, detections, crops):
    """A full vgg_face_dag.pth-style file loads strictly and reproduces the network's outputs."""
    source = build_network("random", seed=7)
    path = tmp_path_factory.mktemp("weights") / "vgg_face_dag.pth"
    torch.save(source.state_dict(), path)
    loaded = build_network(str(path))
    x = preprocess(crops[:1])
    with torch.inference_mode():
        np.testing.assert_array_equal(loaded(x).numpy(), source(x).numpy())
    ex = VggFaceExtractor(FaceEmbedParams(weights=str(path), bf16=False), **_faces(detections), device="cpu")
    meta = ex.meta()
    assert meta.pretrained is True and meta.weights_statement.endswith("pretrained weights")
    assert len(meta.params["weights_sha256"]) == 64 and "vgg_face_dag.pth" in meta.notes
    path.unlink()  # 550 MB; pytest keeps its last temporary directories


def test_state_dict_key_errors(tmp_path, net0):
    state = net0.state_dict()
    partial = {k: v for k, v in state.items() if k.startswith("conv1_1")}
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": partial, "epoch": 3}, nested)
    with pytest.raises(ConfigError) as e:
        build_network(str(nested))
    msg = str(e.value)
    assert "missing keys" in msg and "'fc6.weight'" in msg and "'conv5_3.bias'" in msg
    assert "unexpected keys: none" in msg  # the nesting was unwrapped

    renamed = {("features.0.weight" if k == "conv1_1.weight" else k): v for k, v in partial.items()}
    bare = tmp_path / "bare.pth"
    torch.save(renamed, bare)
    with pytest.raises(ConfigError, match=r"unexpected keys: \['features.0.weight'\]"):
        build_network(str(bare))


def test_bad_weights_files(tmp_path):
    missing = tmp_path / "models" / "vgg_face_dag.pth"
    with pytest.raises(ConfigError) as e:
        build_network(str(missing))
    msg = str(e.value)
    assert str(missing) in msg and "not found" in msg and "vgg_face_dag.pth" in msg and "Vgg_face_dag" in msg
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth is not a loadable PyTorch state dict"):
        build_network(str(junk))


def test_device_helpers():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert isinstance(autocast_context("cpu", enabled=False), nullcontext)
    assert precision("cpu", enabled=False) == "fp32"
    assert isinstance(cpu_has_amx(), bool)
    if cpu_has_amx():
        assert bf16_supported("cpu")


def test_forced_bf16_agrees_with_fp32(detections, net0, crops):
    """bf16: true runs bf16 whatever the CPU (slowly where it has no bf16 instructions), within the
    tolerance the precision chooser demands of it."""
    ex = VggFaceExtractor(FaceEmbedParams(bf16=True), **_faces(detections), device="cpu")
    assert ex.precision == "bf16" and next(ex.fast_net.parameters()).dtype == torch.bfloat16
    with torch.inference_mode():
        fp32 = net0(preprocess(crops)).numpy()
    bf16 = ex.embed(crops)
    assert (_cos(fp32, bf16) >= MIN_COSINE).all(), _cos(fp32, bf16)
    assert not np.array_equal(fp32, bf16)  # it did run in bf16
    assert ex.precision_decision is None and "bf16, forced by face_embed.bf16: true" in ex.meta().notes
