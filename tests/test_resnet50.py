"""The resnet50 stage: ResNet-50 (VGGFace2) pooled features on real CREMA-D face crops, the two
weights formats, the Caffe layout, and the face-crop embedder's batching and cache keys."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from pipeline.core.config import ConfigError
from pipeline.core.features import read_features
from pipeline.core.store import write_table
from pipeline.corpus.manifest import Clip
from pipeline.extract import precision as precision_chooser
from pipeline.extract.base import ExtractionError
from pipeline.extract.face_embed import preprocess
from pipeline.extract.faces import FacesExtractor, detections_table, read_detections
from pipeline.extract.faces.params import FacesParams
from pipeline.extract.params import ResNet50Params
from pipeline.extract.precision import MIN_COSINE, PRECISION_CACHE_ENV
from pipeline.extract.resnet50 import (
    MEAN_RGB,
    ResNet50Extractor,
    ResNet50Face,
    build_network,
    dag_names,
)
from pipeline.extract.runner import RunStats, extract_corpus
from pipeline.media import probe

CLIPS = ("1001_DFA_ANG_XX", "1001_DFA_HAP_XX", "1001_DFA_SAD_XX")
HOLE = (CLIPS[1], 2)  # a step made faceless in the detections fixture
CLASSES = 16  # identities of the checkpoints written here (the real files have 8,631)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _close(ours: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, rel: float = 1e-4) -> None:
    ours, ref = torch.as_tensor(ours), torch.as_tensor(ref)
    scale = ref.abs().max().item()
    assert scale > 1e-3
    torch.testing.assert_close(ours, ref, rtol=rel, atol=rel * scale)


@pytest.fixture(scope="module")
def clips(crema_d_dir: Path) -> list[Clip]:
    paths = [crema_d_dir / "VideoFlash" / f"{c}.flv" for c in CLIPS]
    return [Clip(clip_id=c, speaker="1001", media_path=str(p), duration=probe(p).duration) for c, p in zip(CLIPS, paths)]


@pytest.fixture(scope="module")
def detections(tmp_path_factory, clips) -> Path:
    """Real MTCNN detections of the three clips at 2 Hz, with step HOLE made faceless."""
    tmp = tmp_path_factory.mktemp("faces")
    out = extract_corpus(FacesExtractor(FacesParams(rate_hz=2.0), device="cpu"), clips, out=tmp / "det.parquet", errors_dir=tmp / "err")
    meta, det = read_detections(out)
    assert all(det[c].present.all() for c in CLIPS) and all(len(det[c]) >= 4 for c in CLIPS)
    clip_id, step = HOLE
    det[clip_id].present[step] = False
    det[clip_id].crops[step] = None
    write_table(out, detections_table(det, meta))
    return out


def _faces(path: Path) -> dict:
    """What a face embedder takes: the detections table read once (metadata, clip id → detections)."""
    meta, det = read_detections(path)
    return dict(faces_meta=meta, detections=det, source=str(path))


@pytest.fixture(scope="module")
def crops(detections) -> np.ndarray:
    _, det = read_detections(detections)
    return np.stack([det[CLIPS[0]].crop(i) for i in (0, 3)])


@pytest.fixture(scope="module")
def net0() -> ResNet50Face:
    return build_network("random", seed=0)


def _caffe_torchvision(net: ResNet50Face) -> torchvision.models.ResNet:
    """torchvision's own ResNet-50 with `net`'s weights and the Caffe layout applied by hand."""
    tv = torchvision.models.resnet50(weights=None, num_classes=net.fc.out_features).eval()
    tv.load_state_dict(net.state_dict())
    tv.maxpool = torch.nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
    for stage in (tv.layer2, tv.layer3, tv.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    return tv


def test_pool5_equals_torchvision_resnet50_in_the_caffe_layout(net0, crops):
    x = preprocess(crops, MEAN_RGB)
    tv = _caffe_torchvision(net0)
    with torch.inference_mode():
        ours = net0(x)
        ref = torch.flatten(tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))), 1)
        plain = torchvision.models.resnet50(weights=None, num_classes=net0.fc.out_features).eval()
        plain.load_state_dict(net0.state_dict())
        plain.fc = torch.nn.Identity()
        v15 = plain(x)
    assert ours.shape == (2, 2048)
    _close(ours, ref)
    # torchvision's own layout (stride on the 3×3, padded max-pool) is a different function
    assert (ours - v15).abs().max() > 0.05 * ours.abs().max()


def test_caffe_bottleneck_by_hand(net0):
    """conv3_1 of the Caffe prototxt: stride 2 on the 1×1 reduce and on the projection."""
    b = net0.layer2[0]
    x = torch.randn(1, 256, 56, 56, generator=torch.Generator().manual_seed(0))

    def bn(y, m):
        return F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 1e-5)

    with torch.inference_mode():
        y = F.relu(bn(F.conv2d(x, b.conv1.weight, stride=2), b.bn1))
        y = F.relu(bn(F.conv2d(y, b.conv2.weight, padding=1), b.bn2))
        y = bn(F.conv2d(y, b.conv3.weight), b.bn3)
        proj = bn(F.conv2d(x, b.downsample[0].weight, stride=2), b.downsample[1])
        ref = F.relu(y + proj)
        _close(b(x), ref)
        # the stem's max-pool: 3×3/2, no padding, ceil mode (112² → 56², last window half outside)
        z = torch.randn(1, 1, 112, 112)
        pooled = net0.maxpool(z)
        assert pooled.shape[-2:] == (56, 56)
        assert pooled[0, 0, 0, 0] == z[0, 0, :3, :3].max() and pooled[0, 0, -1, -1] == z[0, 0, 110:, 110:].max()


def test_conv5_3_3x3_layer_is_512d(net0, crops):
    """layer conv5_3_3x3: global average of the last 3×3 convolution after its BN and ReLU."""
    net = ResNet50Face(layer="conv5_3_3x3").eval()
    net.load_state_dict(net0.state_dict())
    tv = _caffe_torchvision(net0)
    seen = []
    tv.layer4[2].bn2.register_forward_hook(lambda m, i, o: seen.append(o))
    x = preprocess(crops, MEAN_RGB)
    with torch.inference_mode():
        ours = net(x)
        tv(x)
    assert ours.shape == (2, 512)
    _close(ours, torch.relu(seen[0]).mean((2, 3)))


def _write_both_formats(net: ResNet50Face, tmp: Path) -> tuple[Path, Path]:
    """`net`'s weights as a resnet50_ft_dag.pth-style state dict (RGB conv1) and as a VGGFace2-pytorch
    pickle (dict of numpy arrays, torchvision names, Caffe BGR conv1, no num_batches_tracked)."""
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    to_dag = {tv: dag for dag, tv in dag_names().items()}
    dag = {}
    for key, value in state.items():
        module, _, suffix = key.rpartition(".")
        dag[f"{to_dag[module]}.{suffix}"] = value[:, :, None, None] if key == "fc.weight" else value
    dag_path = tmp / "resnet50_ft_dag.pth"
    torch.save(dag, dag_path)
    arrays = {k: v.numpy().copy() for k, v in state.items()}
    arrays["conv1.weight"] = arrays["conv1.weight"][:, ::-1].copy()  # RGB → BGR filters
    pkl_path = tmp / "resnet50_ft_weight.pkl"
    with open(pkl_path, "wb") as f:
        pickle.dump(arrays, f, protocol=2)
    return dag_path, pkl_path


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory) -> tuple[ResNet50Face, Path, Path]:
    source = ResNet50Face(num_classes=CLASSES)
    source.init_random(7)
    with torch.no_grad():  # non-trivial BN statistics, so a BN mapped to the wrong layer shows
        g = torch.Generator().manual_seed(1)
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return (source.eval(), *_write_both_formats(source, tmp_path_factory.mktemp("weights")))


def test_dag_names_are_the_oxford_conversions():
    names = dag_names()
    # 1 stem conv + 16 bottlenecks × 3 + 4 projections, each with its BN, and the classifier
    assert len(names) == 2 * (1 + 16 * 3 + 4) + 1
    for dag, tv in [("conv1_7x7_s2_bn", "bn1"), ("conv2_1_1x1_proj", "layer1.0.downsample.0"),
                    ("conv3_4_1x1_increase_bn", "layer2.3.bn3"), ("conv4_6_3x3", "layer3.5.conv2"),
                    ("conv5_1_1x1_proj_bn", "layer4.0.downsample.1"), ("conv5_3_1x1_reduce", "layer4.2.conv1")]:
        assert names[dag] == tv
    assert "conv3_2_1x1_proj" not in names


def test_both_formats_load_strictly_and_give_the_same_embeddings(weights_files, crops):
    source, dag_path, pkl_path = weights_files
    x = preprocess(crops, MEAN_RGB)
    with torch.inference_mode():
        expected = source(x)
        for path, fmt in [(dag_path, "auto"), (dag_path, "dag"), (pkl_path, "auto"), (pkl_path, "vggface2_pytorch")]:
            net = build_network(str(path), fmt=fmt)
            assert net.fc.out_features == CLASSES
            for k, v in source.state_dict().items():
                if not k.endswith("num_batches_tracked"):  # conv1 too: the pickle's BGR filters are reordered
                    assert torch.equal(net.state_dict()[k], v), (path.name, k)
            torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="has the key names of the vggface2_pytorch format, not of dag"):
        build_network(str(pkl_path), fmt="dag")


def test_strict_key_check(weights_files, tmp_path):
    source, dag_path, _ = weights_files
    state = torch.load(dag_path, weights_only=True)
    extra = dict(state, **{"conv6_1_3x3.weight": torch.zeros(1)})
    torch.save({"state_dict": extra}, tmp_path / "extra.pth")
    with pytest.raises(ConfigError, match=r"missing keys: none; unexpected keys: \['conv6_1_3x3.weight'\]"):
        build_network(str(tmp_path / "extra.pth"))
    partial = {k: v for k, v in state.items() if not k.startswith("conv5_3_3x3_bn")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ConfigError) as e:
        build_network(str(tmp_path / "partial.pth"))
    assert "'layer4.2.bn2.running_var'" in str(e.value) and "resnet50_ft_dag.pth" in str(e.value)
    wrong = dict(state, **{"conv2_1_3x3.weight": torch.zeros(64, 64, 1, 1)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match=r"wrong tensor shapes.*layer1.0.conv2.weight \(64, 64, 1, 1\) != \(64, 64, 3, 3\)"):
        build_network(str(tmp_path / "wrong.pth"))


def test_bad_weights_files(tmp_path):
    missing = tmp_path / "models" / "resnet50_ft_dag.pth"
    with pytest.raises(ConfigError) as e:
        build_network(str(missing))
    msg = str(e.value)
    assert "resnet50.weights" in msg and str(missing) in msg and "not found" in msg
    assert "resnet50_ft_dag.pth" in msg and "resnet50_ft_weight.pkl" in msg and "resnet50.weights: random" in msg
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pkl is neither a PyTorch state dict nor a pickle of numpy arrays"):
        build_network(str(junk))
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="unknown layout"):
        build_network(str(tmp_path / "other.pth"))

    class Payload:  # a pickle that would run code when loaded
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"conv1.weight": Payload()}, protocol=2))
    with pytest.raises(ConfigError, match="refusing to load"):
        build_network(str(hostile))
    assert not (tmp_path / "pwned").exists()


def test_random_weights_are_seeded(net0, crops):
    state = torch.random.get_rng_state()
    same, other = build_network("random", seed=0), build_network("random", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must not be consumed"
    x = preprocess(crops[:1], MEAN_RGB)
    with torch.inference_mode():
        a, b, c = net0(x).numpy(), same(x).numpy(), other(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert _cos(a, c)[0] < 0.99
    assert net0.layer3[0].conv2.weight.std().item() == pytest.approx(np.sqrt(2 / (256 * 9)), rel=0.05)
    assert net0.fc.weight.std().item() == pytest.approx(0.01, rel=0.02)


def test_crema_d_clips_through_resnet50(tmp_path, clips, detections, net0):
    """MTCNN detections of the real clips → resnet50 (random weights): one 2,048-d row per step,
    present exactly where a face was detected, equal to the plain network on the same crops; each
    clip's crops go through the network in batches of that clip alone (issue 22)."""
    ex = ResNet50Extractor(ResNet50Params(bf16=False, batch_size=8), **_faces(detections), device="cpu")
    assert (ex.name, ex.modality, ex.dim, ex.rate_hz, ex.batch_clips) == ("resnet50", "video", 2048, 2.0, 16)
    calls = []
    forward = ex._forward
    ex._forward = lambda c: calls.append(len(c)) or forward(c)
    stats = RunStats()
    out = extract_corpus(ex, clips, out_dir=tmp_path / "features", errors_dir=tmp_path / "errors", stats=stats)
    meta, rows = read_features(out)
    _, det = read_detections(detections)
    n_faces = sum(int(det[c].present.sum()) for c in CLIPS)
    per_clip = [int(det[c].present.sum()) for c in CLIPS]
    assert calls == [n for f in per_clip for n in [8] * (f // 8) + ([f % 8] if f % 8 else [])]  # never across clips
    assert stats.extracted == 3
    for c in CLIPS:
        r, d = rows[c], det[c]
        np.testing.assert_array_equal(r.t, d.t)
        np.testing.assert_array_equal(r.present, d.present)
        assert r.values.shape == (len(d), 2048) and not r.values[~r.present].any()
        idx = np.flatnonzero(d.present)
        with torch.inference_mode():
            expected = net0(preprocess([d.crop(i) for i in idx], MEAN_RGB)).numpy()
        _close(r.values[idx], expected)  # BN folded, channels-last: the same function
    assert not rows[HOLE[0]].present[HOLE[1]]
    assert meta.pretrained is False and meta.backbone == "ResNet-50 (VGGFace2) pool5" and meta.dim == 2048
    assert "RANDOM" in meta.weights_statement and "RANDOM" in meta.notes
    assert meta.params["precision"] == "fp32" and meta.params["layer"].startswith("pool5")


def test_cache_keys_follow_the_crops_not_the_video(clips, detections, tmp_path):
    ex = ResNet50Extractor(ResNet50Params(bf16=False), **_faces(detections), device="cpu")
    meta, det = read_detections(detections)
    keys = [ex.input_fingerprint(c, Path(".")) for c in clips]
    assert len(set(keys)) == 3
    # the same rows under another faces provenance (e.g. re-detection with another batch size):
    # same input and config keys
    meta2 = dict(meta, params=dict(meta["params"], batch_size=3), version="other")
    same = ResNet50Extractor(ResNet50Params(bf16=False), detections=det, faces_meta=meta2, device="cpu")
    assert [same.input_fingerprint(c, Path(".")) for c in clips] == keys
    assert same.config_fingerprint() == ex.config_fingerprint()
    assert same.meta().params["faces"]["version"] == "other"  # still recorded as provenance
    # one crop changes: only that clip's key changes
    det = copy.deepcopy(det)
    det[CLIPS[2]].crops[0] = det[CLIPS[2]].crops[1]
    changed = ResNet50Extractor(ResNet50Params(bf16=False), detections=det, faces_meta=meta, device="cpu")
    assert [changed.input_fingerprint(c, Path(".")) for c in clips] == keys[:2] + [changed.input_fingerprint(clips[2], Path("."))]
    assert changed.input_fingerprint(clips[2], Path(".")) != keys[2]
    assert ResNet50Extractor(ResNet50Params(layer="conv5_3_3x3"), **_faces(detections)).config_fingerprint() != ex.config_fingerprint()


def test_a_bad_crop_fails_its_clip_only(clips, detections, tmp_path):
    meta, det = read_detections(detections)
    det[CLIPS[1]].crops[0] = b"\xff\xd8 truncated jpeg"
    meta["skipped"] = {"broken": "broken.flv: file not found"}
    # a callable works as well as a mapping: detections of one clip at a time
    ex = ResNet50Extractor(ResNet50Params(layer="conv5_3_3x3", bf16=False), detections=det.get, faces_meta=meta, device="cpu")
    assert ex.dim == 512
    group = [*clips, Clip(clip_id="broken", speaker="x", media_path="broken.flv", duration=1.0),
             Clip(clip_id="stranger", speaker="x", media_path="s.flv", duration=1.0)]
    results = dict((c.clip_id, r) for c, r in ex.process_clips(group, Path(".")))
    assert isinstance(results[CLIPS[1]], ExtractionError)
    assert f"clip {CLIPS[1]}: crop at t=" in str(results[CLIPS[1]]) and "does not decode" in str(results[CLIPS[1]])
    assert "no detections for clip stranger" in str(results["stranger"])
    assert results["broken"].values.shape == (0, 512)
    for c in (CLIPS[0], CLIPS[2]):
        assert results[c].values.shape == (len(det[c]), 512) and results[c].present.all()
        np.testing.assert_array_equal(results[c].values, ex.process_clip(next(x for x in clips if x.clip_id == c), Path(".")).values)


def test_forced_bf16_agrees_with_fp32(detections, crops):
    ex = ResNet50Extractor(ResNet50Params(bf16=True), **_faces(detections), device="cpu")
    assert ex.precision == "bf16" and next(ex.fast_net.parameters()).dtype == torch.bfloat16
    assert next(ex.net.parameters()).dtype == torch.float32  # the reference network stays fp32
    with torch.inference_mode():
        fp32 = ex.net(ex.preprocess(crops)).numpy()
    bf16 = ex.embed(crops)
    assert (_cos(fp32, bf16) >= MIN_COSINE).all(), _cos(fp32, bf16)
    assert not np.array_equal(fp32, bf16)  # it did run in bf16
    assert copy.deepcopy(ex.meta()).params["precision"] == "bf16"
    assert "forced by resnet50.bf16: true" in ex.meta().notes


def test_auto_precision_is_measured_once_and_left_out_of_the_cache_key(detections, crops, tmp_path, monkeypatch):
    """bf16: auto times both paths on the real network once per machine, keeps the faster one that
    agrees with fp32, records it in the table's metadata; the next extractor reads the decision; the
    per-clip cache key does not depend on which precision was chosen, the forced settings' keys do."""
    path = tmp_path / "precision.json"
    monkeypatch.setenv(PRECISION_CACHE_ENV, str(path))
    ex = ResNet50Extractor(ResNet50Params(), **_faces(detections), device="cpu")
    key = ex.config_fingerprint()
    assert not path.exists() and ex._precision is None  # the key alone measures nothing
    d = ex.precision_decision if ex.precision else None
    assert d.measured and d.fp32_s > 0 and d.bf16_s > 0
    assert d.min_cosine >= MIN_COSINE if d.min_cosine is not None else "pilot" in d.reason  # emulated bf16: decided by the pilot
    assert ex.precision == ("bf16" if d.bf16_s < d.fp32_s else "fp32")
    assert next(ex.fast_net.parameters()).dtype == (torch.bfloat16 if ex.precision == "bf16" else torch.float32)
    with torch.inference_mode():
        fp32 = ex.net(ex.preprocess(crops)).numpy()
    assert (_cos(fp32, ex.embed(crops)) >= MIN_COSINE).all()
    meta = ex.meta()
    assert meta.params["precision"] == ex.precision and meta.params["bf16"] == "auto"
    assert f"{ex.precision}, chosen by measurement" in meta.notes and "ms" not in meta.notes  # no timings: stable bytes
    [entry] = json.loads(path.read_text()).values()
    assert entry["precision"] == ex.precision and entry["identity"]["model"]["class"].endswith("ResNet50Face")
    assert entry["identity"]["machine"]["torch"] == torch.__version__

    monkeypatch.setattr(precision_chooser, "measure", lambda *a, **k: pytest.fail("measured twice"))
    again = ResNet50Extractor(ResNet50Params(), **_faces(detections), device="cpu")
    assert again.precision == ex.precision and not again.precision_decision.measured
    # the other precision chosen (another machine): the same clips in the cache stay valid
    other = {"fp32": "bf16", "bf16": "fp32"}[ex.precision]
    data = json.loads(path.read_text())
    for e in data.values():
        e["precision"] = other
    path.write_text(json.dumps(data))
    flipped = ResNet50Extractor(ResNet50Params(), **_faces(detections), device="cpu")
    assert flipped.precision == other and flipped.config_fingerprint() == key == again.config_fingerprint()
    forced = {b: ResNet50Extractor(ResNet50Params(bf16=b), **_faces(detections), device="cpu").config_fingerprint() for b in (True, False)}
    assert len({key, *forced.values()}) == 3
