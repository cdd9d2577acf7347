"""A synthetic stand-in for what the `corpus` and extraction stages write, at a corpus's real size
(scaled by a fraction): data/corpus/manifest.parquet and labels.parquet (the corpus contract,
pipeline/corpus/manifest.py, through its own writers) and data/features/<name>.parquet (the feature
table contract, pipeline/core/store.py: clip_id, t, present, value fixed_size_list<float32>[D], t_start/t_end
for words, the `mer` FeatureMeta metadata), streamed clip chunk by clip chunk through the store's
TableWriter, so memory stays flat in the corpus size. Used by benchmarks/scale.py; no media.

Values are seeded N(0, 1) plus a weak signal along fixed random directions: the clip's class
(classification) or the clip's valence/arousal at the row's time (regression), so training has
something to find. Every figure of a corpus comes from FIGURES below with its source; `assumed`
marks what no source we have states.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from pipeline.core.features import FeatureMeta, feature_schema
from pipeline.core.store import TableWriter
from pipeline.corpus.manifest import (
    Clip,
    CorpusInfo,
    labels_schema,
    write_labels,
    write_manifest,
)

# ------------------------------------------------------------------------------------------------
# The corpora's figures. Each entry: (value, source). Durations are drawn from a log-normal with the
# stated mean and standard deviation, cut to [lo, hi] and rescaled to the mean (the shape is assumed
# everywhere: no source gives the distribution, only its mean and range).
# ------------------------------------------------------------------------------------------------

FIGURES: dict[str, dict[str, tuple[Any, str]]] = {
    "crema_d": {
        "clips": (7442, "001 §4.1: 7,442 clips"),
        "speakers": (91, "001 §4.1: 91 actors (48 male, 43 female)"),
        "classes_intended": (
            {"angry": 1271, "disgust": 1271, "fearful": 1271, "happy": 1271, "neutral": 1087, "sad": 1271},
            "the file names' intended emotions (label_source: intended): 91 actors x (11 sentences + 3 levels "
            "of IEO) per emotion, 12 for neutral, less the 20 files missing from the release; commonly "
            "reported 1,271 x 5 + 1,087 (assumed: not in the seeds)"),
        "classes_vote": (
            {"angry": 1067, "disgust": 1222, "fearful": 1180, "happy": 1230, "neutral": 2071, "sad": 672},
            "001 §4.1: the audio-visual consensus labels, ties included (label_source: *_vote, on_error: fail)"),
        "classes_vote_no_ties": (
            {"angry": 1019, "disgust": 1139, "fearful": 1084, "happy": 1219, "neutral": 1972, "sad": 589},
            "label_source: multimodal_vote under on_error: skip (the 420 tied votes left out, 7,022 clips), as "
            "presets/001-crema-d.yaml states from the corpus's summaryTable.csv; used for any vote"),
        "duration_s": ({"mean": 2.54, "sd": 0.51, "lo": 1.27, "hi": 5.01},
                       "mean ~2.5 s, clips up to ~5 s (001 §5.3: 'up to 5 seconds'); sd, lower bound and the "
                       "log-normal shape assumed"),
    },
    "iemocap": {
        "classes_by_session": (
            {"neutral": [384, 362, 320, 258, 384], "happy": [278, 327, 286, 303, 442],
             "angry": [229, 137, 240, 327, 170], "sad": [194, 197, 305, 143, 245]},
            "003 Table 1: four classes (excited merged into happy) per session 1-5, 5,531 utterances"),
        "sessions": (5, "003 §5.1: 5 sessions, each one female and one male actor"),
        "speakers_per_session": (2, "003 §5.1 (the adapter's speaker = session + gender, Ses01F)"),
        "speaker_share": (0.5, "each speaker's share of a session's utterances (assumed: even)"),
        "duration_s": ({"mean": 4.5, "sd": 3.2, "lo": 0.6, "hi": 34.1},
                       "mean ~4.5 s (the four-class set, commonly reported); sd and range assumed"),
        "words_per_s": (2.5, "speaking rate for the BERT word rows (assumed: ~150 words a minute)"),
        "vad_range": ((1.0, 5.0), "IEMOCAP's consensus valence/activation/dominance, 1-5 (the adapter's SCALE)"),
    },
    "aff_wild2": {
        "videos": (558, "002 §3.1: 558 videos"),
        "split": ({"train": 350, "devel": 70, "test": 138},
                  "002 §3.1: 350 / 70 / 138 videos; the adapter reads Train_Set and Validation_Set only (the test "
                  "labels are not public), so 420 clips reach the manifest"),
        "frames": (2_800_000, "002 §3.1: 'around 2.8 million video frames', all at 30 fps"),
        "fps": (30.0, "002 §3.1: 30 fps"),
        "duration_s": ({"mean": 2_800_000 / 558 / 30.0, "sd": 150.0, "lo": 5.0, "hi": 1800.0},
                       "mean = 2.8 M frames / 558 videos / 30 fps = 167 s; sd, range and shape assumed"),
        "label_range": ((-1.0, 1.0), "002 §3.1: per-frame valence and arousal in [-1, 1]"),
    },
}
FACE_ABSENT = (0.05, "share of face rows without a detected face (present=False); assumed")
SIGNAL = (1.0, "norm of the class / label signal added to each N(0, 1) row (chosen: weak but learnable)")
CHUNK_VALUES = 4 << 20  # floats generated at once (16 MB): memory flat in the corpus size

ASSUMED = "assumed"


def figure(corpus: str, key: str) -> Any:
    return FIGURES[corpus][key][0]


def sources(corpus: str) -> dict[str, str]:
    return {k: v[1] for k, v in FIGURES[corpus].items()} | {"face_absent": FACE_ABSENT[1], "signal": SIGNAL[1]}


def scaled_counts(counts: list[int], fraction: float) -> list[int]:
    """counts x fraction, rounded so the total is round(sum x fraction) (largest remainders)."""
    exact = np.asarray(counts, float) * fraction
    out = np.floor(exact).astype(int)
    short = int(round(exact.sum())) - int(out.sum())
    out[np.argsort(-(exact - out), kind="stable")[:short]] += 1
    return out.tolist()


def durations(rng: np.random.Generator, n: int, spec: dict[str, float]) -> np.ndarray:
    """n log-normal durations with the spec's mean and sd, cut to [lo, hi], mean restored."""
    sigma2 = math.log(1 + (spec["sd"] / spec["mean"]) ** 2)
    d = rng.lognormal(math.log(spec["mean"]) - sigma2 / 2, math.sqrt(sigma2), n)
    d = np.clip(d, spec["lo"], spec["hi"])
    return np.round(np.clip(d * spec["mean"] / d.mean(), spec["lo"], spec["hi"]), 3)


# ------------------------------------------------------------------------------------------------
# The corpus plan: the manifest's clips, their labels, the per-clip signal
# ------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    info: CorpusInfo
    clips: list[Clip]  # sorted by clip_id (the tables' order)
    task: str  # classification | regression
    class_index: np.ndarray | None = None  # per clip (classification)
    label_columns: list[str] = field(default_factory=list)
    words_per_s: float = 0.0
    seed: int = 0

    def figures(self) -> dict[str, Any]:
        d = np.array([c.duration for c in self.clips])
        out = {
            "corpus": self.info.name, "clips": len(self.clips), "speakers": len({c.speaker for c in self.clips}),
            "hours": round(float(d.sum()) / 3600, 2),
            "duration_s": {"mean": round(float(d.mean()), 3), "min": float(d.min()), "max": float(d.max())},
        }
        sessions = {c.session for c in self.clips if c.session}
        if sessions:
            out["sessions"] = len(sessions)
        if self.class_index is not None:
            out["classes"] = {k: int((self.class_index == i).sum()) for i, k in enumerate(self.info.classes)}
        partitions = {c.partition for c in self.clips if c.partition}
        if partitions:
            out["partitions"] = {p: sum(c.partition == p for c in self.clips) for p in sorted(partitions)}
        return out


def plan_corpus(corpus: dict[str, Any], fraction: float, seed: int = 0) -> Plan:
    """The clips of the preset's corpus section (`corpus.name` and its options) at `fraction` of its size."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    name = corpus["name"]
    if name not in FIGURES:
        raise ValueError(f"no figures for corpus '{name}' (known: {', '.join(sorted(FIGURES))})")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    root = str(corpus.get("root", f"/data/{name}"))
    params = {**corpus, "synthetic": f"benchmarks/scale.py fraction {fraction:g} seed {seed}"}
    return {"crema_d": _crema_d, "iemocap": _iemocap, "aff_wild2": _aff_wild2}[name](corpus, fraction, rng, root, params, seed)


def _crema_d(corpus, fraction, rng, root, params, seed) -> Plan:
    vote = corpus.get("label_source", "intended") != "intended"
    skip = corpus.get("on_error", "fail") == "skip"  # the adapter leaves tied votes out
    classes_counts = figure("crema_d", ("classes_vote_no_ties" if skip else "classes_vote") if vote else "classes_intended")
    classes = list(classes_counts)  # the adapter's order: angry, disgust, fearful, happy, neutral, sad
    counts = scaled_counts(list(classes_counts.values()), fraction)
    labels = np.repeat(np.arange(len(classes)), counts)
    rng.shuffle(labels)
    n, actors = len(labels), figure("crema_d", "speakers")
    speaker = rng.permutation(np.arange(n) % actors)  # clips spread evenly over the 91 actors
    dur = durations(rng, n, figure("crema_d", "duration_s"))
    clips = []
    for i in range(n):
        actor = 1001 + int(speaker[i])
        stem = f"{actor}_S{i:05d}_{classes[labels[i]][:3].upper()}_XX"
        clips.append(Clip(clip_id=stem, speaker=str(actor), media_path=f"{root}/VideoFlash/{stem}.flv",
                          audio_path=f"{root}/AudioWAV/{stem}.wav", duration=float(dur[i]),
                          transcript="Don't forget a jacket", label=classes[labels[i]]))
    return _sorted(Plan(CorpusInfo("crema_d", classes, None, params), clips, "classification", labels, seed=seed))


def _iemocap(corpus, fraction, rng, root, params, seed) -> Plan:
    by_session = figure("iemocap", "classes_by_session")
    classes = list(by_session)  # the adapter's FOUR: neutral, happy, angry, sad
    if corpus.get("classes", "four") != "four":
        raise ValueError("iemocap: only `classes: four` has published per-session counts (003 Table 1)")
    cells = [(s, k) for s in range(figure("iemocap", "sessions")) for k in range(len(classes))]
    counts = scaled_counts([by_session[classes[k]][s] for s, k in cells], fraction)
    session = np.concatenate([np.full(c, s) for (s, _), c in zip(cells, counts)]).astype(int)
    labels = np.concatenate([np.full(c, k) for (_, k), c in zip(cells, counts)]).astype(int)
    n = len(labels)
    female = rng.random(n) < figure("iemocap", "speaker_share")
    dur = durations(rng, n, figure("iemocap", "duration_s"))
    words_per_s = figure("iemocap", "words_per_s")
    clips = []
    for i in range(n):
        ses, g = int(session[i]) + 1, "F" if female[i] else "M"
        utt = f"Ses{ses:02d}F_impro{i % 8 + 1:02d}_{g}{i:04d}"
        start = round(float(rng.uniform(0, 300)), 4)
        words = max(1, int(round(words_per_s * dur[i])))
        clips.append(Clip(clip_id=utt, speaker=f"Ses{ses:02d}{g}", session=f"Session{ses}",
                          media_path=f"{root}/Session{ses}/dialog/avi/DivX/{utt.rsplit('_', 1)[0]}.avi",
                          audio_path=f"{root}/Session{ses}/sentences/wav/{utt.rsplit('_', 1)[0]}/{utt}.wav",
                          duration=float(dur[i]), start=start, end=round(start + float(dur[i]), 4),
                          crop=[0.0, 0.0, 0.5, 1.0] if g == "F" else [0.5, 0.0, 1.0, 1.0],
                          transcript=" ".join(["word"] * words), label=classes[labels[i]]))
    info = CorpusInfo("iemocap", classes, None, {**params, "left_out": {}, "no_transcript": 0})
    return _sorted(Plan(info, clips, "classification", labels, ["arousal", "valence", "dominance"], words_per_s, seed))


def _aff_wild2(corpus, fraction, rng, root, params, seed) -> Plan:
    split = figure("aff_wild2", "split")
    counts = [max(1, c) for c in scaled_counts([split["train"], split["devel"]], fraction)]
    partition = ["train"] * counts[0] + ["devel"] * counts[1]
    dur = durations(rng, len(partition), figure("aff_wild2", "duration_s"))
    fps = figure("aff_wild2", "fps")
    clips = []
    for i, p in enumerate(partition):
        name = f"{i:03d}-30-1280x720"
        clips.append(Clip(clip_id=name, speaker=name, partition=p, media_path=f"{root}/videos/{name}.mp4",
                          duration=float(np.floor(dur[i] * fps) / fps)))
    info = CorpusInfo("aff_wild2", [], None, {**params, "videos_without_va_annotation": []})
    return _sorted(Plan(info, clips, "regression", None, ["arousal", "valence"], seed=seed))


def _sorted(plan: Plan) -> Plan:
    order = sorted(range(len(plan.clips)), key=lambda i: plan.clips[i].clip_id)
    plan.clips = [plan.clips[i] for i in order]
    if plan.class_index is not None:
        plan.class_index = np.asarray(plan.class_index)[order]
    return plan


# ------------------------------------------------------------------------------------------------
# Labels over time (regression corpora): a smooth valence/arousal per clip, deterministic in (seed, clip)
# ------------------------------------------------------------------------------------------------


def va_curve(seed: int, clip_index: int, t: np.ndarray) -> np.ndarray:
    """[len(t), 2] valence, arousal of one clip at times t: three slow sinusoids (periods 4-60 s) plus an
    offset, cut to [-1, 1] (Aff-Wild2's range)."""
    r = np.random.default_rng([seed, 7, clip_index])
    out = np.empty((len(t), 2), np.float32)
    for j in range(2):
        offset, amp = r.uniform(-0.5, 0.5), r.uniform(0.1, 0.3, 3)
        period, phase = r.uniform(4, 60, 3), r.uniform(0, 2 * np.pi, 3)
        v = offset + (amp[None] * np.sin(2 * np.pi * t[:, None] / period[None] + phase[None])).sum(axis=1)
        out[:, j] = np.clip(v, -1, 1)
    return out


def write_corpus(plan: Plan, manifest: Path, labels: Path) -> None:
    """The manifest and the labels table as the corpus stage writes them."""
    write_manifest(manifest, plan.info, plan.clips)
    if plan.task == "classification":
        if plan.info.name == "iemocap":  # one row per utterance at t = 0, A/V/D on 1-5 (the adapter's)
            rng = np.random.default_rng([plan.seed, 3])
            lo, hi = figure("iemocap", "vad_range")
            vad = np.clip(rng.normal(3.0, 0.7, (len(plan.clips), 3)), lo, hi).round(2)
            write_labels(labels, {"clip_id": [c.clip_id for c in plan.clips], "t": [0.0] * len(plan.clips),
                                  **{k: vad[:, j].tolist() for j, k in enumerate(plan.label_columns)}})
        else:  # no continuous labels: the stage writes an empty table (segment depends on it)
            write_labels(labels, {"clip_id": [], "t": [], "arousal": [], "valence": []})
        return
    fps = figure("aff_wild2", "fps")  # one row per video frame, t = (frame + 0.5) / fps (the adapter's)
    schema = labels_schema(["clip_id", "t", "arousal", "valence"])
    with TableWriter(labels, schema) as w:
        for i, c in enumerate(plan.clips):
            t = (np.arange(int(round(c.duration * fps))) + 0.5) / fps
            va = va_curve(plan.seed, i, t)
            w.write(pa.table({"clip_id": pa.array([c.clip_id] * len(t), pa.string()), "t": t,
                              "arousal": va[:, 1], "valence": va[:, 0]}))


# ------------------------------------------------------------------------------------------------
# Feature tables
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """What one extractor would write: its class's identity, its dimension and rate under the preset's
    params (None: words), the params section it records."""

    name: str
    extractor: str
    version: str
    modality: str
    learned: bool
    dim: int
    rate_hz: float | None
    params: dict[str, Any]
    source: str

    def meta(self) -> FeatureMeta:
        return FeatureMeta(name=self.name, extractor=self.extractor, version=self.version, dim=self.dim,
                           rate_hz=self.rate_hz, modality=self.modality,
                           backbone=f"synthetic stand-in for {self.extractor} (benchmarks/scale.py)",
                           pretrained=False, params=self.params, learned=self.learned,
                           notes=f"benchmarks/scale.py: seeded N(0, 1) values with a weak label signal; {self.source}")

    def rows(self, clip: Clip, words_per_s: float) -> int:
        if self.rate_hz is None:
            return max(1, int(round(words_per_s * clip.duration)))
        return max(1, int(clip.duration * self.rate_hz))


def feature_spec(feature: str, params_file: Path) -> FeatureSpec:
    """The spec of feature table `feature` under params.yaml `params_file` (its extractor's class gives
    name, version, modality; dimension and rate as the extractor computes them, sources in `source`)."""
    from pipeline.core.config import load_section
    from pipeline.extract.registry import EXTRACTORS

    if feature not in EXTRACTORS or feature == "import":
        raise ValueError(f"feature '{feature}': no synthetic stand-in (known: bert, compare, egemaps, resnet50, "
                         "vggface, wav2vec2)")
    section = load_section(EXTRACTORS[feature].section, params_file)
    p = section.model_dump(mode="json")
    if feature in ("vggface", "resnet50"):
        rate = float(load_section("faces", params_file).rate_hz)  # the faces stage's rate (faces.rate_hz)
        if feature == "vggface":
            from pipeline.extract.vggface import FC6_DIM
            from pipeline.extract.vggface import VggFaceExtractor as cls

            dim, src = FC6_DIM, "VGG-Face fc6, 4,096-d (001 §4.2.1, 002 §3.2.1)"
        else:
            from pipeline.extract.resnet50 import DIMS
            from pipeline.extract.resnet50 import ResNet50Extractor as cls

            dim, src = DIMS[section.layer], f"ResNet-50 (VGGFace2) {section.layer}, {DIMS[section.layer]}-d (003 §5.2.3)"
    elif feature in ("compare", "egemaps"):
        from pipeline.extract.opensmile_lld import HOP_S, CompareLld, EgemapsLld

        cls = CompareLld if feature == "compare" else EgemapsLld
        dim = (130 if section.deltas else 65) if feature == "compare" else 25
        rate, src = 1.0 / HOP_S, f"openSMILE LLDs, {dim}-d every 10 ms (001 §4.2.2, 002 §3.2.2; eGeMAPSv02: 25 LLDs)"
    elif feature == "wav2vec2":
        from pipeline.extract.wav2vec2 import Wav2Vec2Features as cls

        dim = 512 if section.output == "cnn" else 768  # wav2vec2-base: CNN encoder 512-d, transformer 768-d
        rate, src = 50.0, f"wav2vec 2.0 base {section.output} output, {dim}-d at 50 Hz (003 §5.2.2)"
    else:
        from pipeline.extract.bert import BertWords as cls

        dim, rate, src = 768, None, "BERT base, 768-d per word (003 §5.2.1)"
    return FeatureSpec(feature, cls.__name__, cls.version, cls.modality, cls.learned, dim, rate, p, src)


def _directions(feature: str, k: int, dim: int, seed: int) -> np.ndarray:
    """k fixed unit vectors in R^dim (one per class, or valence/arousal), the same for every clip."""
    r = np.random.default_rng([seed, zlib.crc32(feature.encode()), 1])
    u = r.standard_normal((k, dim)).astype(np.float32)
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _chunks(plan: Plan, spec: FeatureSpec) -> Iterator[list[int]]:
    """Clip indices in table order, in groups of about CHUNK_VALUES floats."""
    group, size = [], 0
    for i, c in enumerate(plan.clips):
        group.append(i)
        size += spec.rows(c, plan.words_per_s) * spec.dim
        if size >= CHUNK_VALUES:
            yield group
            group, size = [], 0
    if group:
        yield group


def write_features(plan: Plan, spec: FeatureSpec, path: Path) -> int:
    """Write data/features/<spec.name>.parquet for every clip of `plan`; returns its rows."""
    signal = SIGNAL[0]
    k = len(plan.info.classes) if plan.task == "classification" else 2
    u = _directions(spec.name, k, spec.dim, plan.seed)
    absent = FACE_ABSENT[0] if spec.modality == "video" else 0.0
    with TableWriter(path, feature_schema(spec.meta())) as w:
        for n, group in enumerate(_chunks(plan, spec)):
            rng = np.random.default_rng([plan.seed, zlib.crc32(spec.name.encode()), n])
            rows = [spec.rows(plan.clips[i], plan.words_per_s) for i in group]
            total = sum(rows)
            values = rng.standard_normal((total, spec.dim), dtype=np.float32)
            ts, spans, ids, at = [], [], [], 0
            for i, r in zip(group, rows):
                c = plan.clips[i]
                if spec.rate_hz is None:  # words: even spans over the clip, t their centre (as BertWords)
                    edges = np.linspace(0.0, c.duration, r + 1)
                    span = np.stack([edges[:-1], edges[1:]], axis=1)
                    spans.append(span)
                    t = span.mean(axis=1)
                else:
                    t = (np.arange(r) + 0.5) / spec.rate_hz
                if plan.task == "classification":
                    values[at : at + r] += signal * u[plan.class_index[i]]
                else:
                    values[at : at + r] += signal * (va_curve(plan.seed, i, t) @ u)
                ts.append(t)
                ids.append(pa.array([c.clip_id] * r, pa.string()))
                at += r
            present = rng.random(total) >= absent
            values[~present] = 0.0  # the contract: zeros where the modality is absent
            columns = {"clip_id": pa.chunked_array(ids), "t": np.concatenate(ts), "present": present,
                       "value": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), spec.dim)}
            if spec.rate_hz is None:
                span = np.concatenate(spans)
                columns |= {"t_start": span[:, 0], "t_end": span[:, 1]}
            w.write(pa.table(columns))
        return w.rows


def feature_rows(plan: Plan, spec: FeatureSpec) -> int:
    return sum(spec.rows(c, plan.words_per_s) for c in plan.clips)
