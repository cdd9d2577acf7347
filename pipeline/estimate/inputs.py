"""The run an estimate is for: the corpus's size (its manifest, its published size, or `--clips`) and
params.yaml with a preset applied in memory."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.paths import MANIFEST


class EstimateError(PipelineError):
    """A corpus whose size cannot be known, or an unreadable rates table."""


# ---- the corpora's known sizes --------------------------------------------------------------------


@dataclass(frozen=True)
class KnownCorpus:
    clips: int
    mean_seconds: float
    speakers: int
    frame_pixels: int | None  # pixels of one video frame the face detector sees (None: varies/unknown)
    source: str
    sessions: int | None = None
    feature_only: bool = False  # no media (Ulm-TSST without media_dir): the media extractors get no clip


#: The corpora at their published sizes (clip count and mean duration; the speakers and sessions a
#: leave-one-group-out protocol folds over). Durations are approximate where the source gives only a total.
KNOWN_CORPORA: dict[str, KnownCorpus] = {
    # Cao et al. 2014, "CREMA-D", IEEE Trans. Affective Computing 5(4), §3: 7,442 clips of 91 actors,
    # 480×360 FLV video; clips last 1-5 s (mean ≈ 2.6 s, our reading of the released files' lengths)
    "crema_d": KnownCorpus(7442, 2.6, 91, 480 * 360, "Cao et al. 2014 (CREMA-D) §3: 7,442 clips, 91 actors; mean ≈ 2.6 s"),
    # Livingstone & Russo 2018, PLoS ONE 13(5): 24 actors × 60 audio-visual speech clips, 1280×720,
    # ≈ 3.7 s each
    "ravdess": KnownCorpus(1440, 3.7, 24, 1280 * 720, "Livingstone & Russo 2018 (RAVDESS): 1,440 AV speech clips, ≈ 3.7 s"),
    # Busso et al. 2008, "IEMOCAP", LRE 42(4): ≈ 12 h in 10,039 turns (mean ≈ 4.5 s), 5 sessions,
    # 720×480 video of both actors (our crop: the speaker's half, 360×480); 5,531 in the four-class set
    "iemocap": KnownCorpus(10039, 4.5, 10, 360 * 480, "Busso et al. 2008 (IEMOCAP): 10,039 turns, ≈ 12 h, 5 sessions", 5),
    # Busso et al. 2017, "MSP-IMPROV", IEEE TAC 8(1): 8,438 turns in ≈ 9 h (mean ≈ 3.9 s), 12 actors in 6 sessions
    "msp_improv": KnownCorpus(8438, 3.9, 12, None, "Busso et al. 2017 (MSP-IMPROV): 8,438 turns, ≈ 9 h, 12 actors", 6),
    # Stappen et al. 2021/2022 (MuSe-Stress, Ulm-TSST): 69 participants, ≈ 5 h 47 min in total
    "ulm_tsst": KnownCorpus(69, 302.0, 69, None, "Christ et al. 2022 (MuSe 2022, Ulm-TSST): 69 recordings, ≈ 5 h 47 min"),
    # Kollias & Zafeiriou 2019 (Aff-Wild2): ≈ 560 videos, ≈ 2.8 M frames at 30 fps ≈ 26 h (mean ≈ 167 s);
    # the adapter reads the 420 with public labels (002 §3.1: Train_Set 350 + Validation_Set 70; the 138
    # test videos' labels are not public), so 420 reach the manifest and the stages; resolutions vary
    # (YouTube), so no pixel scaling
    "aff_wild2": KnownCorpus(420, 167.0, 420, None, "Kollias & Zafeiriou 2019 (Aff-Wild2): ≈ 560 videos at 30 fps, 420 with "
                             "public labels (Train 350 + Validation 70), which the adapter reads"),
}


@dataclass
class CorpusSize:
    name: str
    clips: int
    media_s: float  # seconds of media in all
    max_clip_s: float  # the longest clip (bounds a stage's per-clip memory)
    speakers: int
    frame_pixels: int | None
    source: str
    sessions: int | None = None
    feature_only: bool = False  # no media (Ulm-TSST without media_dir): the media extractors get no clip

    @property
    def mean_s(self) -> float:
        return self.media_s / max(self.clips, 1)


def corpus_size(params: dict, manifest: str | Path | None = MANIFEST, clips: int | None = None,
                mean_seconds: float | None = None) -> CorpusSize:
    """The corpus's clip count and seconds of media: the manifest's (when it exists and is the corpus
    named in `params`), else the demo's parameters or the corpus's known size; `clips` and
    `mean_seconds` override the count and the mean duration."""
    corpus = params.get("corpus") or {}
    name = corpus.get("name", "demo")
    size: CorpusSize | None = None
    if manifest is not None and Path(manifest).exists():
        size = _manifest_size(Path(manifest), name)
    if size is None and name == "demo":
        n = int(corpus.get("speakers", 8)) * int(corpus.get("clips_per_speaker", 8))
        sec = float(corpus.get("seconds", 4.0))
        size = CorpusSize("demo", n, n * sec, sec, int(corpus.get("speakers", 8)),
                          int(corpus.get("width", 320)) * int(corpus.get("height", 240)), "the demo's params (corpus section)")
    if size is None and name in KNOWN_CORPORA:
        k = KNOWN_CORPORA[name]
        n = k.clips
        if name == "iemocap" and corpus.get("classes", "four") == "four":
            n = 5531  # the four-class set (neutral, happy+excited, angry, sad): issue 20, Busso et al. 2008
        # the longest clip: 3 × the mean (no source gives the maximum; it bounds the per-clip memory)
        size = CorpusSize(name, n, n * k.mean_seconds, k.mean_seconds * 3, k.speakers, k.frame_pixels,
                          f"known size: {k.source}", k.sessions)
    if size is None:
        if clips is None:
            raise EstimateError(f"corpus '{name}': no manifest ({manifest}) and no known size; pass --clips N "
                                "(and --mean-seconds S)")
        sec = mean_seconds or 4.0
        size = CorpusSize(name, clips, clips * sec, sec, max(3, clips // 10), None, "--clips (speakers: clips / 10)")
    if clips is not None or mean_seconds is not None:
        n = clips if clips is not None else size.clips
        sec = mean_seconds if mean_seconds is not None else size.mean_s
        size = CorpusSize(size.name, n, n * sec, max(size.max_clip_s, sec), size.speakers, size.frame_pixels,
                          f"{size.source}; overridden: {n} clips × {sec:g} s", size.sessions)
    if not size.feature_only and _without_media(name, corpus):
        size = replace(size, feature_only=True)
    return size


def _without_media(name: str, corpus: dict) -> bool:
    """Whether the corpus section reads no media: an adapter whose `media_dir` may stay unset (null:
    feature-only, as Ulm-TSST's) and is unset here."""
    if name == "demo":
        return False
    try:
        from pipeline.corpus.registry import params_class

        field = params_class(name).model_fields.get("media_dir")
    except Exception:  # an unknown corpus: corpus_size has said so already, or it has a manifest
        return False
    return field is not None and field.default is None and not corpus.get("media_dir")


def _manifest_size(path: Path, name: str) -> CorpusSize | None:
    """The manifest's size, reading only its columns `duration`, `speaker`, `session`; None when it
    belongs to another corpus than `name` (a manifest of an earlier run)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.core.store import META_KEY

    try:
        pf = pq.ParquetFile(path)
        meta = json.loads((pf.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
        cols = [c for c in ("duration", "speaker", "session") if c in pf.schema_arrow.names]
        table = pf.read(columns=cols)
    except Exception as e:  # pyarrow's errors name no file
        raise EstimateError(f"{path}: not a readable manifest: {e}") from None
    if meta.get("name") != name or "duration" not in cols:
        return None
    dur = table["duration"]
    speakers = len(pc.unique(table["speaker"])) if "speaker" in cols else 1
    sessions = None
    if "session" in cols and table["session"].null_count < len(table):
        sessions = len(pc.unique(table["session"].drop_null()))
    frame_pixels = KNOWN_CORPORA[name].frame_pixels if name in KNOWN_CORPORA else None
    return CorpusSize(name, len(table), float(pc.sum(dur).as_py() or 0.0), float(pc.max(dur).as_py() or 0.0),
                      speakers, frame_pixels, f"manifest {path}", sessions, bool((meta.get("params") or {}).get("feature_only")))


# ---- params: params.yaml with a preset applied in memory ------------------------------------------


def load_params(params_file: str | Path, preset: str | None = None, demo: bool = False) -> dict:
    """params.yaml as a dict, with `preset` applied as `mer preset apply` would (nothing is written)."""
    path = Path(params_file)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise EstimateError(f"{path}: not found") from None
    except yaml.YAMLError as e:
        raise EstimateError(f"{path}: not valid YAML: {e}") from None
    if preset:
        from pipeline.presets import load_preset, merge, preset_edits

        data = copy.deepcopy(data)
        for edits, replace in preset_edits(load_preset(preset), demo):
            merge(data, copy.deepcopy(edits), replace)
    return data
