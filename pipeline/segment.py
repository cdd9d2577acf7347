"""Alignment, partitions and normalisation: feature tables → `Segments` (see pipeline/segments.py).

- Alignment: every modality is put on one grid of `rate_hz` steps per clip; step k covers
  [k/r, (k+1)/r). A regular feature's step value is the mean of its present rows whose time falls in
  the step; a word (irregular feature with a span) counts for every step its span overlaps. A step
  with no present row is absent (mask False, value 0).
- Sequences: one per clip (the categorical task), cut to `max_steps` and padded to the longest.
- Partitions: by `partition.protocol` (pipeline/protocols.py): the corpus's own split (or one seeded
  speaker split), repeated speaker splits, or leave-one-group-out folds; no speaker is in two
  partitions of a fold. Several folds are stored once, with each fold's statistics (`Segments.for_fold`).
- Normalisation: z-scores with mean and standard deviation over the present steps of the training
  partition only; dimensions that are constant there keep a scale of 1.

Layouts (`layout`):

- `aligned` (default, built here): the above, one sequence per clip cut to `max_steps`.
- `windows` (000 §5.3), `frames` (002 §3.3) and `native` (003 §5.3): built in pipeline/layout_builders.py
  (which describes them) from the pure pieces in pipeline/layouts.py; `segment_corpus` dispatches there.
"""

from __future__ import annotations

from pipeline.errors import PipelineError
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import Problems, Section
from pipeline.corpus.manifest import Clip, CorpusInfo, read_labels
from pipeline.layouts import MIN_STD, context_frames, statistics
from pipeline.paths import FEATURES_DIR
from pipeline.protocols import ProtocolError, assign_folds
from pipeline.segments import ModalityInfo, Segments
from pipeline.store import ClipFeatures, FeatureMeta, StoreError, read_features

__all__ = ["MIN_STD", "PartitionParams", "SegmentParams", "SegmentError", "align_clip", "grid_steps", "normalise", "segment_corpus"]


class PartitionParams(Section):
    """Which clips train, select and test (pipeline/protocols.py)."""

    protocol: Literal["corpus", "speaker_random", "leave_one_group_out"] = Field(
        "corpus", description="corpus: the corpus's split (else one seeded speaker split); speaker_random: "
        "`repeats` speaker splits (001 §4.3); leave_one_group_out: a fold per `group` (003)",
    )
    devel: float = Field(0.2, ge=0, lt=1, description="share of speakers for devel (of the training groups' under leave_one_group_out)")
    test: float = Field(0.2, gt=0, lt=1, description="share of speakers for test (speaker splits)")
    repeats: int = Field(1, ge=1, description="speaker_random: number of fresh splits (001 §4.3: 20)")
    group: Literal["speaker", "session"] = Field("speaker", description="leave_one_group_out: what a fold holds out")
    seed: int = 0


class SegmentParams(Section):
    """The `segment` section of params.yaml."""

    # modality name -> feature table name under data/features (faces come from face_embed)
    modalities: dict[str, str] = Field(
        default_factory=lambda: {"face": "vggface", "acoustic": "egemaps", "speech": "wav2vec2", "text": "bert"}
    )
    layout: Literal["aligned", "windows", "frames", "native"] = Field(
        "aligned", description="aligned: one grid, one sequence per clip; windows: overlapping windows of long "
        "clips (000); frames: samples of `frames` frames, faster modalities stacked (002); native: each modality "
        "at its own rate and length (003)",
    )
    rate_hz: float = Field(5.0, gt=0, description="aligned/windows: the common grid; frames: the frame rate")
    max_steps: int = Field(64, ge=1, description="aligned: sequences are cut/padded to this many steps; "
                           "native: the maximum of a modality not in native_max_steps")
    win: int = Field(250, ge=1, description="windows: steps per window (000 §5.3: 250 steps = 125 s at 2 Hz)")
    hop: int = Field(50, ge=1, description="windows: steps between window starts (000 §5.3: 50 steps = 25 s)")
    frames: int = Field(100, ge=1, description="frames: frames per sample (002 §3.3: 100)")
    stack: list[str] = Field(
        default_factory=list, description="frames: modalities whose rows within one frame are stacked (k·D dims), "
        "not averaged (002 §3.2.2: the ComParE LLDs)",
    )
    stack_seconds: float | None = Field(
        None, ge=0, description="frames: instead, each frame of a `stack` modality gets that modality averaged "
        "onto the frames over a window of this many seconds centred on it, n = round(stack_seconds × rate_hz) "
        "frames side by side (n·D dims; 002 §3.2.2: 2 s at 30 fps, 60 × 65 = 3,900-d); empty or 0: off",
    )
    native_max_steps: dict[str, int] = Field(
        default_factory=dict, description="native: {modality: maximum length}; others take max_steps "
        "(003 §5.3: audio 400, vision 40, language 50)",
    )
    partition: PartitionParams = PartitionParams()

    @model_validator(mode="after")
    def _named_modalities(self) -> "SegmentParams":
        known = ", ".join(self.modalities)
        problems = [(f"stack.{i}", f"'{m}' is not in segment.modalities ({known})")
                    for i, m in enumerate(self.stack) if m not in self.modalities]
        problems += [(f"stack.{i}", f"'{m}' is listed twice") for i, m in enumerate(self.stack) if m in self.stack[:i]]
        if self.stack_seconds and context_frames(self.stack_seconds, self.rate_hz) < 1:
            problems.append(("stack_seconds", f"{self.stack_seconds:g} s at segment.rate_hz {self.rate_hz:g} Hz is "
                             f"round({self.stack_seconds * self.rate_hz:g}) = 0 frames; use at least one frame period "
                             f"({1 / self.rate_hz:g} s), or 0 for no context"))
        problems += [(f"native_max_steps.{m}", f"'{m}' is not in segment.modalities ({known})")
                     for m in self.native_max_steps if m not in self.modalities]
        problems += [(f"native_max_steps.{m}", f"must be at least 1, got {v}")
                     for m, v in self.native_max_steps.items() if v < 1]
        if problems:
            raise Problems(problems)
        return self


class SegmentError(PipelineError):
    """Segmentation cannot proceed; the message names the table or clip and the cause."""


def grid_steps(duration: float, rate_hz: float, max_steps: int) -> int:
    return int(min(max_steps, max(1, np.ceil(duration * rate_hz - 1e-9))))


def align_clip(
    rows: ClipFeatures | None, n_steps: int, rate_hz: float, dim: int, source_rate_hz: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(values [n_steps, dim], present [n_steps]) of one clip's rows on the grid.

    Rows are averaged per grid step. A regular feature slower than the grid (`source_rate_hz` <
    `rate_hz`, e.g. 2 Hz MuSe biosignals on a 5 Hz grid) holds each sample over its own period
    [t − ½/rate, t + ½/rate), so its steps are not marked missing between samples."""
    if rows is not None and rows.span is None and source_rate_hz and source_rate_hz < rate_hz and len(rows.t):
        half = 0.5 / source_rate_hz
        rows = ClipFeatures(rows.t, rows.present, rows.values, np.stack([rows.t - half, rows.t + half], axis=1))
    sums = np.zeros((n_steps, dim), np.float64)
    counts = np.zeros(n_steps, np.int64)
    if rows is not None and len(rows.t):
        keep = rows.present
        if rows.span is None:
            step = np.floor(rows.t[keep] * rate_hz).astype(np.int64)
            vals = rows.values[keep]
        else:  # a row counts for every step its span overlaps (at least the step of its centre)
            first = np.floor(rows.span[keep, 0] * rate_hz).astype(np.int64)
            last = np.maximum(first, np.ceil(rows.span[keep, 1] * rate_hz - 1e-9).astype(np.int64) - 1)
            reps = last - first + 1
            step = np.repeat(first, reps) + _ranges(reps)
            vals = np.repeat(rows.values[keep], reps, axis=0)
        inside = (step >= 0) & (step < n_steps)
        np.add.at(sums, step[inside], vals[inside])
        np.add.at(counts, step[inside], 1)
    present = counts > 0
    values = np.zeros((n_steps, dim), np.float32)
    values[present] = (sums[present] / counts[present, None]).astype(np.float32)
    return values, present


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """[0..l0-1, 0..l1-1, ...] for an array of lengths."""
    if len(lengths) == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    return np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)


def normalise(x: np.ndarray, mask: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-score x [N,T,D] with statistics over present steps of the training sequences."""
    stats = statistics(x[train][mask[train]])
    if stats is None:
        raise SegmentError("no present step in the training partition to compute normalisation statistics from")
    return _apply(x, mask, *stats)


def _apply(x: np.ndarray, mask: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """(z-scores [N,T,D] with 0 where absent, mean, std as float32)."""
    out = ((x - mean) / std).astype(np.float32)
    out[~mask] = 0.0
    return out, mean.astype(np.float32), std.astype(np.float32)


def segment_corpus(
    info: CorpusInfo,
    clips: list[Clip],
    params: SegmentParams,
    features_dir: Path = FEATURES_DIR,
    labels_path: Path | None = None,
) -> Segments:
    if not clips:
        raise SegmentError("the manifest holds no clips")
    split = params.partition
    try:
        folds = assign_folds(clips, split.protocol, split.devel, split.test, split.repeats, split.group, split.seed)
    except ProtocolError as e:
        raise SegmentError(f"segment.partition: {e}") from None
    for k, fold in enumerate(folds):
        if not (fold == "train").any():
            raise SegmentError(f"fold {k}: the training partition is empty")
    from pipeline.layout_builders import build_native, build_pieces  # not at the top: it imports this module

    tables = _Tables(params.modalities, Path(features_dir))
    build = {"aligned": _aligned, "windows": build_pieces, "frames": build_pieces, "native": build_native}[params.layout]
    seg = build(clips, params, folds, tables, labels_path)  # its `label` holds each sequence's clip index
    seg.label = np.array([info.classes.index(c.label) if c.label is not None else -1 for c in clips], np.int64)[seg.label]
    seg.classes = list(info.classes)
    seg.extra = {"corpus": info.name, "max_steps": params.max_steps, "protocol": split.protocol, "folds": len(folds), **seg.extra}
    return seg


class _Tables:
    """{modality: (path, meta, rows)} read one table at a time as it is iterated (one in memory at once)."""

    def __init__(self, modalities: dict[str, str], features_dir: Path) -> None:
        self.modalities, self.features_dir = modalities, features_dir

    def __iter__(self):
        return iter(self.modalities)

    def items(self):
        for modality, feature in self.modalities.items():
            path = self.features_dir / f"{feature}.parquet"
            try:
                meta, rows = read_features(path)
            except StoreError as e:
                raise SegmentError(f"modality '{modality}': {e}") from None
            yield modality, (path, meta, rows)


def _check_present(modality: str, path: Path, has: np.ndarray, folds: np.ndarray) -> None:
    """Every fold's training partition must have the modality somewhere; `has` [N] per sequence."""
    for k, fold in enumerate(folds):
        if not has[fold == "train"].any():
            where = "the corpus" if not has.any() else "the training partition" + (f" of fold {k}" if len(folds) > 1 else "")
            raise SegmentError(
                f"modality '{modality}' ({path}): no step of {where} has it (a corpus without transcripts, "
                f"faces or audio?); remove '{modality}' from segment.modalities and train.modalities"
            )


def _info(feature: str, meta: FeatureMeta, dim: int | None = None) -> ModalityInfo:
    return ModalityInfo(feature=feature, dim=meta.dim if dim is None else dim, backbone=meta.backbone,
                        pretrained=meta.pretrained, weights_statement=meta.weights_statement, rate_hz=meta.rate_hz)


def _normalised(xm: np.ndarray, mm: np.ndarray, folds: np.ndarray):
    """(x, mean, std, fold_mean | None, fold_std | None) of one modality: fold 0's z-scores, each fold's statistics."""
    fold_mean = fold_std = None
    if len(folds) > 1:  # each fold's statistics from its own training partition (Segments.for_fold)
        stats = [normalise(xm, mm, fold == "train")[1:] for fold in folds]
        fold_mean, fold_std = np.stack([m_ for m_, _ in stats]), np.stack([s_ for _, s_ in stats])
    return (*normalise(xm, mm, folds[0] == "train"), fold_mean, fold_std)


def _aligned(clips, params: SegmentParams, folds, tables, labels_path) -> Segments:
    """Every modality on one grid, one sequence per clip cut to max_steps."""
    r = params.rate_hz
    lengths = np.array([grid_steps(c.duration, r, params.max_steps) for c in clips])
    T = int(lengths.max())
    x, mask, mean, std, mods, fold_mean, fold_std = {}, {}, {}, {}, {}, {}, {}
    for modality, (path, meta, rows) in tables.items():
        xm = np.zeros((len(clips), T, meta.dim), np.float32)
        mm = np.zeros((len(clips), T), bool)
        for i, clip in enumerate(clips):
            v, p = align_clip(rows.get(clip.clip_id), int(lengths[i]), r, meta.dim, meta.rate_hz)
            xm[i, : lengths[i]], mm[i, : lengths[i]] = v, p
        _check_present(modality, path, mm.any(axis=1), folds)
        x[modality], mean[modality], std[modality], fm, fs = _normalised(xm, mm, folds)
        if fm is not None:
            fold_mean[modality], fold_std[modality] = fm, fs
        mask[modality] = mm
        mods[modality] = _info(params.modalities[modality], meta)

    t = (np.arange(T)[None, :] + 0.5) / r * np.ones((len(clips), 1))
    arousal = valence = label_mask = None
    if labels_path is not None and Path(labels_path).exists():
        arousal, valence, label_mask = _continuous_labels(labels_path, clips, t, lengths)
    return Segments(
        clip_id=np.array([c.clip_id for c in clips]), partition=folds[0], label=np.arange(len(clips)),
        length=lengths, t=t, x=x, mask=mask, mean=mean, std=std, classes=[], rate_hz=r, modalities=mods,
        arousal=arousal, valence=valence, label_mask=label_mask,
        folds=folds if len(folds) > 1 else None, fold_mean=fold_mean, fold_std=fold_std,
    )


def _continuous_labels(path: Path, clips: list[Clip], t: np.ndarray, lengths: np.ndarray):
    """Arousal/valence at the step centres, interpolated linearly between ANNOTATED samples only.

    A null label is "not annotated" (Aff-Wild2's -5 frames, MuSe's unlabelled test samples): a step
    counts (label_mask) only where both targets have annotated samples on either side that are at most
    1.5 label periods apart (the median spacing of the clip's samples), so no value is invented across
    a gap. A clip with a single label row (utterance-level A/V/D, e.g. IEMOCAP) holds it over the clip.
    (None, None, None) when the table has no annotated arousal/valence at all."""
    table = read_labels(path).sort_by([("clip_id", "ascending"), ("t", "ascending")])
    if table.num_rows == 0 or all(table.column(c).null_count == table.num_rows for c in ("arousal", "valence")):
        return None, None, None
    n, T = t.shape
    out = {"arousal": np.zeros((n, T), np.float32), "valence": np.zeros((n, T), np.float32)}
    label_mask = np.zeros((n, T), bool)
    index = {c.clip_id: i for i, c in enumerate(clips)}
    for clip_id in pc.unique(table.column("clip_id")).to_pylist():
        i = index.get(clip_id)
        if i is None:
            continue
        rows = table.filter(pc.equal(table.column("clip_id"), clip_id))
        lt = rows.column("t").to_numpy()
        steps = t[i, : lengths[i]]
        valid = np.ones(len(steps), bool)
        for name, arr in out.items():
            v = rows.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            ok = np.isfinite(v)
            if not ok.any():
                valid[:] = False
                continue
            lt_ok, v_ok = lt[ok], v[ok]
            if len(lt) == 1:
                arr[i, : lengths[i]] = v_ok[0]
                continue
            arr[i, : lengths[i]] = np.interp(steps, lt_ok, v_ok)
            gap = 1.5 * float(np.median(np.diff(lt))) if len(lt) > 1 else 0.0
            after = np.searchsorted(lt_ok, steps, side="left")  # first annotated sample at or after the step
            before = np.clip(after - 1, 0, len(lt_ok) - 1)
            after_c = np.clip(after, 0, len(lt_ok) - 1)
            exact = np.isclose(lt_ok[after_c], steps)
            bracketed = (after > 0) & (after < len(lt_ok)) & (lt_ok[after_c] - lt_ok[before] <= gap + 1e-9)
            valid &= (exact | bracketed) & (steps >= lt_ok.min()) & (steps <= lt_ok.max())
        label_mask[i, : lengths[i]] = valid
    return out["arousal"], out["valence"], label_mask
