"""wav2vec 2.0 extractor (`wav2vec2` stage): CNN and hidden-state rows equal transformers' own
computation, and long signals chunked with overlap keep the unchunked frame grid."""

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
)

from pipeline.core.config import ConfigError
from pipeline.core.features import read_features
from pipeline.corpus.manifest import Clip, CorpusInfo, write_manifest
from pipeline.extract.base import ExtractionError
from pipeline.extract.chunking import Window, plan_windows
from pipeline.extract.params import Wav2Vec2Params
from pipeline.extract.wav2vec2 import Wav2Vec2Features, conv_geometry
from pipeline.media import read_audio

REPO = Path(__file__).resolve().parents[1]
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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hidden(**kw) -> Wav2Vec2Params:
    return Wav2Vec2Params(output="hidden", **kw)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny CTC checkpoint saved like a Hub download (model + preprocessor_config.json)."""
    d = tmp_path_factory.mktemp("w2v")
    torch.manual_seed(7)
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=12, **TINY)).save_pretrained(d)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False).save_pretrained(d)
    return d


def reference_cnn(model: Wav2Vec2Model, x: np.ndarray) -> np.ndarray:
    """transformers' own CNN features: Wav2Vec2Model(...).extract_features."""
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)[None]).extract_features[0].numpy()


def seeded_model(config: dict, seed: int) -> Wav2Vec2Model:
    torch.manual_seed(seed)
    return Wav2Vec2Model(Wav2Vec2Config(**config))


def test_random_rows_equal_transformers_hidden_states():
    x = speechy(16000)
    ref_model = seeded_model(TINY, 3)
    for layer in (-1, 0, 1, 2):
        ex = Wav2Vec2Features(hidden(random_config=TINY, seed=3, layer=layer), device="cpu")
        rows = ex.process_signal(x, "sig")
        ref = reference_hidden(ref_model, zero_mean_unit_var(x), layer)
        assert rows.values.shape == ref.shape == (49, 32)
        np.testing.assert_allclose(rows.values, ref, rtol=1e-5, atol=1e-5)
        assert rows.present.all()
        # only the layers up to the exported one are kept (hidden state 0 is recorded by layer 1)
        assert len(ex.model.encoder.layers) == max(1, layer % 3)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_cnn_rows_equal_transformers_extract_features(norm):
    """003 §5.2.2's 512-d features: the CNN feature encoder (conv_dim[-1]-d), as transformers returns it."""
    config = {**TINY, "conv_dim": [24] * 6 + [40], "feat_extract_norm": norm, "do_stable_layer_norm": norm == "layer"}
    x = speechy(16000, seed=4)
    ex = Wav2Vec2Features(Wav2Vec2Params(random_config=config, seed=5), device="cpu")
    assert ex.output == "cnn" and ex.dim == 40 and len(ex.model.encoder.layers) == 0
    rows = ex.process_signal(x, "sig")
    ref = reference_cnn(seeded_model(config, 5), zero_mean_unit_var(x))
    assert rows.values.shape == ref.shape == (49, 40)
    np.testing.assert_allclose(rows.values, ref, rtol=1e-5, atol=1e-5)
    # not the projected 32-d input of the transformer
    assert "CNN feature encoder output" in ex.meta().notes and ex.meta().dim == 40


def test_random_is_seeded_and_leaves_global_rng_alone():
    x = speechy(8000)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = Wav2Vec2Features(hidden(random_config=TINY, seed=0), device="cpu").process_signal(x, "s")
    assert torch.equal(torch.rand(1), expected_next)
    b = Wav2Vec2Features(hidden(random_config=TINY, seed=0), device="cpu").process_signal(x, "s")
    c = Wav2Vec2Features(hidden(random_config=TINY, seed=1), device="cpu").process_signal(x, "s")
    np.testing.assert_array_equal(a.values, b.values)
    assert np.abs(a.values - c.values).mean() > 1e-3


def test_random_meta_says_random():
    ex = Wav2Vec2Features(Wav2Vec2Params(), device="cpu")
    meta = ex.meta()
    assert meta.pretrained is False and ex.backbone()[1] is False
    assert "RANDOM weights" in meta.weights_statement and "RANDOM" in meta.notes
    # default output: the CNN encoder (random_config's conv_dim 64); hidden: hidden_size 96
    assert meta.dim == 64 and meta.rate_hz == 50.0 and meta.modality == "audio"
    assert Wav2Vec2Features(hidden(), device="cpu").meta().dim == 96


def test_every_option_is_in_the_cache_key():
    base = Wav2Vec2Params(random_config=TINY)
    key = Wav2Vec2Features(base, device="cpu").config_fingerprint()
    for change in ({"output": "hidden"}, {"chunk_seconds": 10.0}, {"overlap_seconds": 1.0}, {"seed": 1}):
        other = Wav2Vec2Features(base.model_copy(update=change), device="cpu")
        assert other.config_fingerprint() != key, change
        assert all(other.meta().params[k] == v for k, v in change.items())
    # the layer matters for hidden states only
    assert Wav2Vec2Features(base.model_copy(update={"layer": 1}), device="cpu").config_fingerprint() == key
    h = base.model_copy(update={"output": "hidden"})
    assert (
        Wav2Vec2Features(h, device="cpu").config_fingerprint()
        != Wav2Vec2Features(h.model_copy(update={"layer": 1}), device="cpu").config_fingerprint()
    )


def test_frame_count_and_times_for_known_length():
    ex = Wav2Vec2Features(Wav2Vec2Params(random_config=TINY), device="cpu")
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
    ex = Wav2Vec2Features(Wav2Vec2Params(random_config=TINY), device="cpu")
    with pytest.raises(ExtractionError, match="blip.wav: audio too short for wav2vec2"):
        ex.process_signal(np.zeros(399, np.float32), "blip.wav")


# ---------------------------------------------------------------------------------------------------
# Long media: windows with overlap


def check_plan(lengths: np.ndarray, window: int, context: int) -> list:
    """The chunking contract for items of the given lengths; returns the plan."""
    plan = plan_windows(lengths, window, context)
    n = len(lengths)
    kept = np.concatenate([np.arange(w.keep_start, w.keep_stop) for w in plan])
    np.testing.assert_array_equal(kept, np.arange(n))  # every item exactly once, in order
    ends = np.concatenate([[0], np.cumsum(lengths)])
    for w in plan:
        assert 0 <= w.start <= w.keep_start < w.keep_stop <= w.stop <= n
        units = ends[w.stop] - ends[w.start]
        if w.keep_stop - w.keep_start == 1 and lengths[w.keep_start] > window:
            assert units == lengths[w.keep_start]  # an item longer than the window: alone (the caller truncates)
            continue
        assert units <= window
        left, right = ends[w.keep_start] - ends[w.start], ends[w.stop] - ends[w.keep_stop]
        enough = left >= min(context, ends[w.keep_start]) and right >= min(context, ends[-1] - ends[w.keep_stop])
        # kept items have `context` units on each side where the sequence has them; only an item too
        # long for that is kept alone, in a window centred on it
        assert enough or (w.keep_stop - w.keep_start == 1 and lengths[w.keep_start] + 2 * context > window - 2 * lengths.max())
    return plan


@pytest.mark.parametrize(("n", "window", "context"), [(1, 5, 2), (5, 5, 2), (6, 5, 2), (100, 10, 3), (101, 10, 0), (997, 50, 12), (60, 7, 3)])
def test_plan_windows_of_frames(n, window, context):
    plan = check_plan(np.ones(n, np.int64), window, context)
    for w in plan:  # frames: every window exactly `window` long, consecutive ones overlapping by 2·context
        assert w.stop - w.start == min(window, n)
    assert [b.start - a.start for a, b in zip(plan, plan[1:-1])] == [window - 2 * context] * (len(plan) - 2)
    with pytest.raises(ValueError, match="window > 2·context"):
        plan_windows(np.ones(n), 10, 5)


def test_plan_windows_of_words():
    rng = np.random.default_rng(0)
    for trial in range(200):
        window = int(rng.integers(3, 40))
        context = int(rng.integers(0, (window - 1) // 2 + 1))
        lengths = rng.choice([0, 1, 1, 1, 2, 3, 5], size=int(rng.integers(1, 80)))
        if trial % 10 == 0:
            lengths[rng.integers(len(lengths))] = window + 3  # a word longer than the window
        check_plan(lengths, window, context)
    assert plan_windows([2, 3], 5, 2) == [Window(0, 2, 0, 2)]  # fits: one window


def frame_slices(ex: Wav2Vec2Features, n_samples: int):
    """(sample slice, kept frames relative to the window, kept frames) of each planned window."""
    for w in plan_windows(np.ones(ex.n_frames(n_samples), np.int64), ex.window, ex.context):
        samples = slice(ex.stride * w.start, ex.stride * (w.stop - 1) + ex.field)
        yield samples, slice(w.keep_start - w.start, w.keep_stop - w.start), slice(w.keep_start, w.keep_stop)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_chunked_cnn_equals_the_unchunked_run(norm):
    """The CNN is local, so windows with enough context give the unchunked output; for the GroupNorm of
    wav2vec2-base's first conv layer that needs the whole clip's statistics."""
    config = {**TINY, "feat_extract_norm": norm, "do_stable_layer_norm": norm == "layer"}
    x = speechy(16000 * 5, seed=6) * np.linspace(0.2, 3.0, 16000 * 5, dtype=np.float32)  # loudness varies
    ex = Wav2Vec2Features(Wav2Vec2Params(random_config=config, chunk_seconds=1.0, overlap_seconds=0.2), device="cpu")
    assert (ex.window, ex.context) == (50, 10) and len(list(frame_slices(ex, x.size))) == 8
    seen = []
    hook = ex.model.feature_extractor.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    rows = ex.process_signal(x, "long.wav")
    hook.remove()
    assert max(seen) == 320 * 49 + 400  # the model never sees more than one window of audio
    ref = reference_cnn(ex.model, zero_mean_unit_var(x))
    assert len(rows.t) == len(ref) == 249
    np.testing.assert_allclose(rows.t, ex.frame_times(x.size))
    np.testing.assert_allclose(rows.values, ref, rtol=1e-4, atol=1e-4)
    if norm == "group":  # windows normalised on their own statistics would not be the unchunked output
        ex.clip_statistics = lambda _: contextlib.nullcontext()
        assert np.abs(ex.process_signal(x, "long.wav").values - ref).max() > 1e-2


def test_chunked_hidden_states_take_each_frame_from_the_middle_of_its_window():
    config = {**TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True}
    x = speechy(16000 * 4, seed=8)
    ex = Wav2Vec2Features(hidden(random_config=config, layer=1, chunk_seconds=1.2, overlap_seconds=0.3), device="cpu")
    rows = ex.process_signal(x, "long.wav")
    whole = Wav2Vec2Features(hidden(random_config=config, layer=1, chunk_seconds=10.0), device="cpu")
    unchunked = whole.process_signal(x, "long.wav")
    # the same 50 Hz grid and frame count as the unchunked run
    np.testing.assert_array_equal(rows.t, unchunked.t)
    assert rows.values.shape == unchunked.values.shape == (199, 32)
    # every frame is the hidden state of the window where it is most central, computed by transformers
    xn = zero_mean_unit_var(x)
    for samples, inner, kept in frame_slices(ex, x.size):
        ref = reference_hidden(whole.model, xn[samples], 1)
        np.testing.assert_allclose(rows.values[kept], ref[inner], rtol=1e-4, atol=1e-4)
    # attention is global, so the values differ from the unchunked run, but not by much
    diff = np.abs(rows.values - unchunked.values).mean() / np.abs(unchunked.values).mean()
    assert 1e-4 < diff < 0.3


def test_chunk_must_exceed_twice_the_overlap():
    with pytest.raises(ConfigError, match=r"chunk_seconds \(1.0\) must exceed 2 × overlap_seconds \(0.5\)"):
        Wav2Vec2Features(Wav2Vec2Params(random_config=TINY, chunk_seconds=1.0, overlap_seconds=0.5))


# ---------------------------------------------------------------------------------------------------
# Weights from a local directory


def test_local_directory_loads_and_reproduces(tiny_dir):
    x = speechy(12000, seed=1)
    ex = Wav2Vec2Features(hidden(model=str(tiny_dir), layer=-1), device="cpu")
    assert ex.backbone()[1] is True and ex.meta().weights_statement.endswith("pretrained weights")
    assert "preprocessor_config.json" in ex.meta().notes and ex.feature_extractor.do_normalize is False
    ref_model = Wav2Vec2ForCTC.from_pretrained(tiny_dir).wav2vec2
    # the saved preprocessor says do_normalize=False: the raw signal goes in
    np.testing.assert_allclose(ex.process_signal(x, "s").values, reference_hidden(ref_model, x, -1), rtol=1e-5, atol=1e-5)
    cnn = Wav2Vec2Features(Wav2Vec2Params(model=str(tiny_dir)), device="cpu")
    np.testing.assert_allclose(cnn.process_signal(x, "s").values, reference_cnn(ref_model, x), rtol=1e-5, atol=1e-5)


def test_directory_without_preprocessor_normalises(tiny_dir, tmp_path):
    for f in ("config.json", "model.safetensors"):
        (tmp_path / f).write_bytes((tiny_dir / f).read_bytes())
    x = 3.0 * speechy(12000, seed=2) + 0.1
    ex = Wav2Vec2Features(hidden(model=str(tmp_path), layer=1), device="cpu")
    assert ex.feature_extractor.do_normalize is True
    ref_model = Wav2Vec2ForCTC.from_pretrained(tiny_dir).wav2vec2
    ref = reference_hidden(ref_model, zero_mean_unit_var(x), 1)
    np.testing.assert_allclose(ex.process_signal(x, "s").values, ref, rtol=1e-5, atol=1e-5)


def test_new_weights_under_the_same_path_change_the_cache_key(tiny_dir, tmp_path):
    for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (tmp_path / f).write_bytes((tiny_dir / f).read_bytes())
    before = Wav2Vec2Features(Wav2Vec2Params(model=str(tmp_path)), device="cpu")
    torch.manual_seed(8)
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=12, **TINY)).save_pretrained(tmp_path)
    after = Wav2Vec2Features(Wav2Vec2Params(model=str(tmp_path)), device="cpu")
    assert before.meta().params["model_sha256"] != after.meta().params["model_sha256"]
    assert before.config_fingerprint() != after.config_fingerprint()


def test_missing_or_incomplete_directory_says_what_to_provide(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere/w2v is not a directory, nor a Hub id cached in .*provide a Hugging Face Wav2Vec2 directory"):
        Wav2Vec2Features(Wav2Vec2Params(model=str(tmp_path / "nowhere/w2v")))
    (tmp_path / "config.json").write_bytes((tiny_dir / "config.json").read_bytes())
    with pytest.raises(ConfigError, match="holds no model weights"):
        Wav2Vec2Features(Wav2Vec2Params(model=str(tmp_path)))
    # weights that lack a tensor would be replaced by random values: refused
    state = load_file(tiny_dir / "model.safetensors")
    del state["wav2vec2.encoder.layers.0.attention.k_proj.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="does not hold all weights"):
        Wav2Vec2Features(Wav2Vec2Params(model=str(tmp_path)))


def test_hub_id_resolves_in_the_local_hugging_face_cache_only(tiny_dir, tmp_path, monkeypatch):
    """`model: owner/name` uses the snapshot cached under HF_HOME / HF_HUB_CACHE; nothing is fetched."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match=r"acme/tiny-w2v is not a directory, nor a Hub id cached in .*hub"):
        Wav2Vec2Features(Wav2Vec2Params(model="acme/tiny-w2v"))
    repo = tmp_path / "hub/models--acme--tiny-w2v"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("0" * 40)
    for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (snapshot / f).write_bytes((tiny_dir / f).read_bytes())
    ex = Wav2Vec2Features(Wav2Vec2Params(model="acme/tiny-w2v"), device="cpu")
    assert ex.directory == snapshot.resolve() and "model_dir" not in ex.meta().params
    assert str(tmp_path) not in ex.meta().to_json()  # provenance does not depend on where files live
    assert ex.backbone()[0].startswith("wav2vec2 acme/tiny-w2v (")
    x = speechy(8000, seed=3)
    np.testing.assert_allclose(
        ex.process_signal(x, "s").values, reference_cnn(Wav2Vec2ForCTC.from_pretrained(tiny_dir).wav2vec2, x), rtol=1e-5, atol=1e-5
    )


def test_layer_out_of_range():
    with pytest.raises(ConfigError, match="wav2vec2.layer: 3 is out of range"):
        Wav2Vec2Features(hidden(random_config=TINY, layer=3))
    assert Wav2Vec2Features(hidden(random_config=TINY, layer=-3), device="cpu").layer == 0


# ---------------------------------------------------------------------------------------------------
# Real CREMA-D clips


def test_crema_d_clips_both_outputs_equal_transformers(crema_d_dir):
    """Each real clip through both outputs (the default random model), against transformers on the
    same decoded signal; and chunked CNN rows equal unchunked ones on real speech."""
    cnn = Wav2Vec2Features(Wav2Vec2Params(), device="cpu")
    hid = Wav2Vec2Features(hidden(), device="cpu")
    chunked = Wav2Vec2Features(Wav2Vec2Params(chunk_seconds=0.8, overlap_seconds=0.2), device="cpu")
    ref_model = seeded_model(Wav2Vec2Params().random_config, 0)
    for flv in sorted((crema_d_dir / "VideoFlash").glob("*.flv")):
        clip = Clip(clip_id=flv.stem, speaker="1001", media_path=str(flv), duration=2.0)
        signal = read_audio(flv, 16000)
        xn = zero_mean_unit_var(signal)
        n = (len(signal) - 400) // 320 + 1
        a, b = cnn.process_clip(clip, Path(".")), hid.process_clip(clip, Path("."))
        assert a.values.shape == (n, 64) and b.values.shape == (n, 96) and a.present.all() and b.present.all()
        np.testing.assert_allclose(a.values, reference_cnn(ref_model, xn), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.values, reference_hidden(ref_model, xn, -1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(chunked.process_clip(clip, Path(".")).values, a.values, rtol=1e-4, atol=1e-4)


def test_crema_d_clip_through_the_stage(crema_d_dir, tmp_path):
    flv = sorted((crema_d_dir / "VideoFlash").glob("*.flv"))[0]
    (tmp_path / "params.yaml").write_text("wav2vec2:\n  seed: 0\n  output: hidden\n")
    clip = Clip(clip_id="c0", speaker="1001", media_path=str(flv), duration=2.2)
    write_manifest(tmp_path / "data/corpus/manifest.parquet", CorpusInfo(name="demo", classes=["angry"]), [clip])
    run = subprocess.run([sys.executable, str(REPO / "stages/wav2vec2.py")], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    meta, clips = read_features(tmp_path / "data/features/wav2vec2.parquet")
    assert meta.pretrained is False and meta.dim == 96 and meta.rate_hz == 50.0 and meta.params["output"] == "hidden"
    n = len(read_audio(flv, 16000))
    rows = clips["c0"]
    assert len(rows.t) == (n - 400) // 320 + 1 and rows.present.all()
    # the table holds what the extractor computes in-process (same seed, same default config)
    direct = Wav2Vec2Features(hidden(), device="cpu").process_clip(clip, Path("."))
    np.testing.assert_allclose(rows.values, direct.values, rtol=1e-5, atol=1e-5)
