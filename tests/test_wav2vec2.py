"""wav2vec 2.0 hidden-state extractor (`wav2vec2` stage): rows equal transformers' own computation."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Model

from pipeline.config import ConfigError, Wav2Vec2Params
from pipeline.corpus.manifest import Clip, CorpusInfo, write_manifest
from pipeline.extract.base import ExtractionError
from pipeline.extract.wav2vec2 import Wav2Vec2Hidden, conv_geometry
from pipeline.media import read_audio
from pipeline.store import read_features

REPO = Path(__file__).resolve().parents[1]
CREMA_D = Path(__file__).resolve().parents[2] / "shared/data/crema-d-sample"
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "conv_dim": [32] * 7}


def speechy(n: int, seed: int = 0) -> np.ndarray:
    """A deterministic test signal: a 150 Hz tone with harmonics plus noise, peak ~0.3."""
    t = np.arange(n) / 16000
    rng = np.random.default_rng(seed)
    x = 0.2 * np.sin(2 * np.pi * 150 * t) + 0.05 * np.sin(2 * np.pi * 450 * t) + 0.02 * rng.normal(size=n)
    return x.astype(np.float32)


def reference_hidden(model: Wav2Vec2Model, x: np.ndarray, layer: int) -> np.ndarray:
    with torch.inference_mode():
        out = model.eval()(torch.from_numpy(x)[None], output_hidden_states=True)
    return out.hidden_states[layer][0].numpy()


def zero_mean_unit_var(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny CTC checkpoint saved like a Hub download (model + preprocessor_config.json)."""
    d = tmp_path_factory.mktemp("w2v")
    torch.manual_seed(7)
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=12, **TINY)).save_pretrained(d)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False).save_pretrained(d)
    return d


def test_random_rows_equal_transformers_hidden_states():
    x = speechy(16000)
    for layer in (-1, 0, 1):
        ex = Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY, seed=3, layer=layer), device="cpu")
        rows = ex.process_signal(x, "sig")
        torch.manual_seed(3)
        ref = reference_hidden(Wav2Vec2Model(Wav2Vec2Config(**TINY)), zero_mean_unit_var(x), layer)
        assert rows.values.shape == ref.shape == (49, 32)
        np.testing.assert_allclose(rows.values, ref, rtol=1e-5, atol=1e-5)
        assert rows.present.all()


def test_random_is_seeded_and_leaves_global_rng_alone():
    x = speechy(8000)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY, seed=0), device="cpu").process_signal(x, "s")
    assert torch.equal(torch.rand(1), expected_next)
    b = Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY, seed=0), device="cpu").process_signal(x, "s")
    c = Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY, seed=1), device="cpu").process_signal(x, "s")
    np.testing.assert_array_equal(a.values, b.values)
    assert np.abs(a.values - c.values).mean() > 1e-3


def test_random_meta_says_random():
    ex = Wav2Vec2Hidden(Wav2Vec2Params(), device="cpu")
    meta = ex.meta()
    assert meta.pretrained is False and ex.backbone()[1] is False
    assert "RANDOM weights" in meta.weights_statement and "RANDOM" in meta.notes
    assert meta.dim == 96 and meta.rate_hz == 50.0 and meta.modality == "audio"


def test_frame_count_and_times_for_known_length():
    ex = Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY), device="cpu")
    assert (ex.stride, ex.field) == (320, 400) == conv_geometry(Wav2Vec2Config())
    for n in (400, 719, 720, 16000, 35200):
        rows = ex.process_signal(speechy(n), "sig")
        expected = int(ex.model._get_feat_extract_output_lengths(n))  # transformers' own count
        assert len(rows.t) == expected == (n - 400) // 320 + 1
        np.testing.assert_allclose(rows.t, (320 * np.arange(expected) + 200) / 16000)
    assert ex.frame_times(16000)[[0, 1, -1]].tolist() == pytest.approx([0.0125, 0.0325, 0.9725])


def test_geometry_follows_the_config():
    cfg = Wav2Vec2Config(conv_kernel=(10, 4, 2), conv_stride=(5, 4, 2), conv_dim=(8, 8, 8))
    assert conv_geometry(cfg) == (40, 10 + 3 * 5 + 1 * 20)


def test_too_short_is_an_error():
    ex = Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY), device="cpu")
    with pytest.raises(ExtractionError, match="blip.wav: audio too short for wav2vec2"):
        ex.process_signal(np.zeros(399, np.float32), "blip.wav")


def test_local_directory_loads_and_reproduces(tiny_dir):
    x = speechy(12000, seed=1)
    ex = Wav2Vec2Hidden(Wav2Vec2Params(model=str(tiny_dir), layer=-1), device="cpu")
    assert ex.backbone()[1] is True and ex.meta().weights_statement.endswith("pretrained weights")
    assert "preprocessor_config.json" in ex.meta().notes and ex.feature_extractor.do_normalize is False
    ref_model = Wav2Vec2ForCTC.from_pretrained(tiny_dir).wav2vec2
    # the saved preprocessor says do_normalize=False: the raw signal goes in
    np.testing.assert_allclose(ex.process_signal(x, "s").values, reference_hidden(ref_model, x, -1), rtol=1e-5, atol=1e-5)


def test_directory_without_preprocessor_normalises(tiny_dir, tmp_path):
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).write_bytes((tiny_dir / f).read_bytes())
    x = 3.0 * speechy(12000, seed=2) + 0.1
    ex = Wav2Vec2Hidden(Wav2Vec2Params(model=str(tmp_path), layer=1), device="cpu")
    assert ex.feature_extractor.do_normalize is True
    ref_model = Wav2Vec2ForCTC.from_pretrained(tiny_dir).wav2vec2
    ref = reference_hidden(ref_model, zero_mean_unit_var(x), 1)
    np.testing.assert_allclose(ex.process_signal(x, "s").values, ref, rtol=1e-5, atol=1e-5)


def test_missing_or_incomplete_directory_says_what_to_provide(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere/w2v is not a directory; provide a Hugging Face Wav2Vec2 directory"):
        Wav2Vec2Hidden(Wav2Vec2Params(model=str(tmp_path / "nowhere/w2v")))
    (tmp_path / "config.json").write_bytes((tiny_dir / "config.json").read_bytes())
    with pytest.raises(ConfigError, match="holds no model weights"):
        Wav2Vec2Hidden(Wav2Vec2Params(model=str(tmp_path)))
    # weights that lack a tensor would be replaced by random values: refused
    state = load_file(tiny_dir / "model.safetensors")
    del state["wav2vec2.encoder.layers.0.attention.k_proj.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="does not hold all weights"):
        Wav2Vec2Hidden(Wav2Vec2Params(model=str(tmp_path)))


def test_layer_out_of_range():
    with pytest.raises(ConfigError, match="wav2vec2.layer: 3 is out of range"):
        Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY, layer=3))
    Wav2Vec2Hidden(Wav2Vec2Params(random_config=TINY, layer=-3), device="cpu")  # = layer 0


def test_crema_d_clip_through_the_stage(tmp_path):
    flvs = sorted((CREMA_D / "VideoFlash").glob("*.flv"))
    if not flvs:
        pytest.skip(f"CREMA-D sample not found at {CREMA_D}")
    (tmp_path / "params.yaml").write_text("wav2vec2:\n  seed: 0\n")
    clip = Clip(clip_id="c0", speaker="1001", media_path=str(flvs[0]), duration=2.2)
    write_manifest(tmp_path / "data/corpus/manifest.parquet", CorpusInfo(name="demo", classes=["angry"]), [clip])
    run = subprocess.run([sys.executable, str(REPO / "stages/wav2vec2.py")], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    meta, clips = read_features(tmp_path / "data/features/wav2vec2.parquet")
    assert meta.pretrained is False and meta.dim == 96 and meta.rate_hz == 50.0
    n = len(read_audio(flvs[0], 16000))
    rows = clips["c0"]
    assert len(rows.t) == (n - 400) // 320 + 1 and rows.present.all()
    # the table holds what the extractor computes in-process (same seed, same default config)
    direct = Wav2Vec2Hidden(Wav2Vec2Params(), device="cpu").process_clip(clip, Path("."))
    np.testing.assert_allclose(rows.values, direct.values, rtol=1e-5, atol=1e-5)
