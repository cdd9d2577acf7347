"""Ulm-TSST as the MuSe-Stress challenge package ships it (MuSe 2021 `c3_muse_stress/`, MuSe 2022
`c3_muse_stress_2022/`): 69 five-minute recordings of the Trier Social Stress Test (000 §5.1).

`root` is the unpacked package folder; read here (docs/corpora/ulm_tsst.md has the sources):

    metadata/partition.csv                 one row per sample: its id (first column), its partition
                                           (last column: train | devel | test)
    label_segments/physio-arousal/<id>.csv 2 Hz arousal fused with EDA (2022; 000 §5.1's arousal)
      or label_segments/arousal/<id>.csv   (2021), chosen by the `arousal` option
    label_segments/valence/<id>.csv        2 Hz valence; columns `timestamp` (ms), `value`, and
                                           `segment_id` / `subject_id` (ignored)
    feature_segments/<feature>/<id>.csv    the precomputed features (`timestamp` ms, `segment_id`,
                                           then the feature columns): what the `import` stage reads

A clip is a sample (its id as clip_id and as speaker: one speaker per recording). Labels: one row per
label timestamp, t = timestamp / 1000 s, arousal and valence joined on the timestamp; an empty or NaN
value (the test partition's hidden labels, gaps) is null, never a value. Duration = last label time
+ 0.5 s (the 2 Hz step), else the last row of the stand-in feature file + 0.5 s.

Without the raw videos (`media_dir` unset) the corpus is feature-only: media_path is the sample's CSV
of `feature` (the manifest wants a path) and only the `import` extractor can run on it.

`repartition: paper` is 000 §5.1's split: the original test samples (no public labels) are left out,
and `test_from_train` (6) train and `test_from_devel` (4) devel samples, drawn with `seed` from the
ids in sorted order, form the new test set: 35 / 10 / 10 of the 41 / 14 / 14.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.corpus.adapter import (
    CorpusOptions,
    CorpusRead,
    LayoutError,
    Problem,
    require_path,
)
from pipeline.corpus.manifest import PARTITIONS, Clip, CorpusInfo

NAME = "ulm_tsst"
LABEL_RATE_HZ = 2.0
STEP_S = 1.0 / LABEL_RATE_HZ
LABEL_RANGE = (-1.0, 1.0)  # 000 §5.1: annotations in [-1, 1]; the baseline's output is a tanh


class Params(CorpusOptions):
    """Ulm-TSST / MuSe-Stress: the challenge package (feature_segments, label_segments, metadata)."""

    name: Literal["ulm_tsst"]
    arousal: Literal["auto", "physio-arousal", "arousal"] = Field(
        "auto",
        description="label_segments folder of the arousal curve; auto: physio-arousal (2022, arousal fused "
        "with EDA as 000 §5.1 describes) where present, else arousal (2021)",
    )
    feature: str | None = Field(
        None, min_length=1,
        description="feature_segments folder whose CSV stands in as media_path when media_dir is unset "
        "(null: the first folder in name order)",
    )
    media_dir: str | None = Field(
        None, min_length=1, description="folder of the raw videos (relative: to root); null: feature-only"
    )
    media_pattern: str = Field("{clip_id}.mp4", description="file name of a sample's video in media_dir")
    audio_dir: str | None = Field(
        None, min_length=1, description="folder of separate audio files (relative: to root), e.g. raw_data/audio"
    )
    audio_pattern: str = Field("{clip_id}.wav", description="file name of a sample's audio in audio_dir")
    repartition: Literal["none", "paper"] = Field(
        "paper",
        description="none: metadata/partition.csv as given; paper: 000 §5.1 (original test left out, "
        "6 train + 4 devel samples drawn as the new test set)",
    )
    test_from_train: int = Field(6, ge=0, description="repartition paper: train samples moved to test")
    test_from_devel: int = Field(4, ge=0, description="repartition paper: devel samples moved to test")
    seed: int = Field(0, description="repartition paper: seed of the draw")


# ----------------------------------------------------------------------------------------------


def read(params: Params) -> CorpusRead:
    root = params.root_path()
    require_path(root, "the unpacked MuSe-Stress package (c3_muse_stress_2022/ or c3_muse_stress/)")
    partition_file = require_path(root / "metadata" / "partition.csv", "the sample ids and partitions (Id, Partition)")
    labels_dir = require_path(root / "label_segments", "the 2 Hz label folders (valence, physio-arousal or arousal)")
    arousal_dir = _arousal_dir(labels_dir, params.arousal)
    valence_dir = require_path(labels_dir / "valence", "one valence CSV per sample")
    features_dir = root / "feature_segments"
    feature_dir = _feature_dir(features_dir, params)
    media_dir = _folder(root, params.media_dir, "the raw videos (media_dir)")
    audio_dir = _folder(root, params.audio_dir, "the audio files (audio_dir)")

    problems: list[Problem] = []
    partitions, origin = _read_partitions(partition_file, problems)

    # files on disk that partition.csv does not list
    listed = set(partitions)
    for folder in (arousal_dir, valence_dir, feature_dir):
        if folder is None:
            continue
        for path in sorted(folder.glob("*.csv")):
            if path.stem not in listed:
                problems.append(Problem(str(path), f"sample '{path.stem}' is not listed in {partition_file}"))

    clips: list[Clip] = []
    labels: dict[str, list[Any]] = {"clip_id": [], "t": [], "arousal": [], "valence": []}
    for sample, partition in partitions.items():
        files = {
            "arousal": arousal_dir / f"{sample}.csv",
            "valence": valence_dir / f"{sample}.csv",
        }
        stand_in = feature_dir / f"{sample}.csv" if feature_dir is not None else None
        media = media_dir / params.media_pattern.format(clip_id=sample) if media_dir is not None else None
        audio = audio_dir / params.audio_pattern.format(clip_id=sample) if audio_dir is not None else None
        present = [p for p in (*files.values(), stand_in, media, audio) if p is not None and p.is_file()]
        if not present:
            problems.append(Problem(str(partition_file), f"listed as {partition} but no label, feature or media "
                                    f"file of it exists (looked for {files['arousal']}, {files['valence']}"
                                    f"{', ' + str(stand_in) if stand_in else ''}{', ' + str(media) if media else ''})",
                                    origin[sample][1], sample))
            continue

        curves: dict[str, dict[float, float | None]] = {}
        for dim, path in files.items():
            if not path.is_file():
                if partition != "test":  # the test labels are not public: their absence is no problem
                    problems.append(Problem(str(path), f"no {dim} label file for this {partition} sample", None, sample))
                continue
            curve = _read_label_file(path, sample, problems)
            if curve is not None:
                curves[dim] = curve

        times = sorted(set().union(*(c.keys() for c in curves.values()))) if curves else []
        for ms in times:
            labels["clip_id"].append(sample)
            labels["t"].append(ms / 1000.0)
            labels["arousal"].append(curves.get("arousal", {}).get(ms))
            labels["valence"].append(curves.get("valence", {}).get(ms))

        if media is not None:
            media_path = media
            if not media.is_file():
                problems.append(Problem(str(media), "video not found (media_dir / media_pattern)", None, sample))
        elif stand_in is not None:
            media_path = stand_in
            if not stand_in.is_file():
                problems.append(Problem(str(stand_in), f"no '{stand_in.parent.name}' feature file (the feature-only "
                                        f"corpus points media_path at it)", None, sample))
        else:  # unreachable: _feature_dir raises without feature_segments when media_dir is unset
            raise LayoutError(f"{features_dir}: not found; expected the feature folders")
        if audio is not None and not audio.is_file():
            problems.append(Problem(str(audio), "audio file not found (audio_dir / audio_pattern)", None, sample))

        if times:
            duration = times[-1] / 1000.0 + STEP_S
        else:
            duration = _duration_from_features(stand_in, sample, problems)
        clips.append(
            Clip(clip_id=sample, speaker=sample, media_path=str(media_path), duration=duration, partition=partition,
                 audio_path=str(audio) if audio is not None else None)
        )

    extra: dict[str, Any] = {}
    if params.repartition == "paper":
        extra = _repartition(params, clips, labels, partition_file, problems)

    info = CorpusInfo(
        name=NAME,
        classes=[],
        label_rate_hz=LABEL_RATE_HZ,
        params={
            **params.model_dump(mode="json"),
            "arousal_folder": str(arousal_dir.relative_to(root)),
            "feature_only": media_dir is None,
            "import_dir": str(feature_dir) if feature_dir is not None else None,
            **extra,
        },
    )
    return CorpusRead(
        info=info,
        clips=clips,
        labels=labels,
        problems=problems,
        label_ranges={"arousal": LABEL_RANGE, "valence": LABEL_RANGE},
        origin={c.clip_id: origin[c.clip_id] for c in clips},
    )


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------


def _arousal_dir(labels_dir: Path, choice: str) -> Path:
    if choice == "auto":
        for name in ("physio-arousal", "arousal"):
            if (labels_dir / name).is_dir():
                return labels_dir / name
        raise LayoutError(f"{labels_dir}: no 'physio-arousal' (MuSe 2022) or 'arousal' (MuSe 2021) folder; "
                          f"expected one arousal CSV per sample there")
    return require_path(labels_dir / choice, "one arousal CSV per sample (ulm_tsst.arousal)")


def _feature_dir(features_dir: Path, params: Params) -> Path | None:
    """The feature folder standing in as media (required without media_dir), else None."""
    if not features_dir.is_dir():
        if params.media_dir is None:
            raise LayoutError(f"{features_dir}: not found; expected the feature folders (feature_segments/<feature>/"
                              f"<id>.csv): without media_dir the corpus is feature-only")
        return None
    if params.feature is not None:
        if params.media_dir is None:
            return require_path(features_dir / params.feature, "one CSV per sample (ulm_tsst.feature)")
        return features_dir / params.feature if (features_dir / params.feature).is_dir() else None
    folders = sorted(p for p in features_dir.iterdir() if p.is_dir())
    if not folders:
        if params.media_dir is None:
            raise LayoutError(f"{features_dir}: no feature folder in it; expected feature_segments/<feature>/<id>.csv")
        return None
    return folders[0]


def _folder(root: Path, rel: str | None, what: str) -> Path | None:
    if rel is None:
        return None
    path = Path(rel).expanduser()
    return require_path(path if path.is_absolute() else root / path, what)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _read_partitions(path: Path, problems: list[Problem]) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    """sample id -> partition (first and last column, as the MuSe baselines read it), and its row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LayoutError(f"{path}: unreadable ({e}); expected a CSV with the columns Id, Partition") from None
    if not rows or len(rows[0]) < 2:
        raise LayoutError(f"{path}: no header with at least two columns; expected Id, Partition")
    partitions: dict[str, str] = {}
    origin: dict[str, tuple[str, int]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            problems.append(Problem(str(path), f"expected an id and a partition, got {row!r}", line))
            continue
        sample, partition = row[0].strip(), row[-1].strip().lower()
        if not sample:
            problems.append(Problem(str(path), "empty sample id", line))
            continue
        if partition not in PARTITIONS:
            problems.append(Problem(str(path), f"partition {row[-1]!r} is none of {', '.join(PARTITIONS)}", line, sample))
            continue
        if sample in partitions:
            problems.append(Problem(str(path), f"sample listed again (first at line {origin[sample][1]})", line, sample))
            continue
        partitions[sample] = partition
        origin[sample] = (str(path), line)
    return partitions, origin


def _number(text: str) -> float | None:
    """The cell as a float; None for an empty cell or NaN; ValueError for anything else."""
    text = text.strip()
    if not text:
        return None
    value = float(text)
    return None if math.isnan(value) else value


def _read_label_file(path: Path, sample: str, problems: list[Problem]) -> dict[float, float | None] | None:
    """timestamp (ms) -> value (None: not annotated). A file that does not parse is one Problem (and
    None); a value out of range is a Problem per row (the value is then left null)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        problems.append(Problem(str(path), f"unreadable label file ({e})", None, sample))
        return None
    if not rows:
        problems.append(Problem(str(path), "empty label file (expected a header: timestamp, value, ...)", 1, sample))
        return None
    header = [c.strip().lower() for c in rows[0]]
    if "timestamp" not in header or "value" not in header:
        problems.append(Problem(str(path), f"header {rows[0]!r} lacks 'timestamp' or 'value'", 1, sample))
        return None
    it, iv = header.index("timestamp"), header.index("value")
    curve: dict[float, float | None] = {}
    last = -math.inf
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(it, iv):
            problems.append(Problem(str(path), f"expected {len(header)} columns, got {len(row)}", line, sample))
            return None
        try:
            ms = _number(row[it])
        except ValueError:
            problems.append(Problem(str(path), f"timestamp {row[it]!r} is not a number", line, sample))
            return None
        if ms is None or not math.isfinite(ms):
            problems.append(Problem(str(path), f"timestamp {row[it]!r} is empty or not finite", line, sample))
            return None
        if ms <= last:
            what = "duplicate" if ms == last else "unsorted"
            problems.append(Problem(str(path), f"{what} timestamp {row[it].strip()} (rows must be in increasing time)",
                                    line, sample))
            return None
        last = ms
        try:
            value = _number(row[iv])
        except ValueError:
            problems.append(Problem(str(path), f"value {row[iv]!r} is not a number", line, sample))
            return None
        if value is not None and not (LABEL_RANGE[0] <= value <= LABEL_RANGE[1]):
            problems.append(Problem(str(path), f"value {row[iv].strip()} outside the declared range "
                                    f"[{LABEL_RANGE[0]:g}, {LABEL_RANGE[1]:g}]", line, sample))
            value = None
        curve[ms] = value
    if not curve:
        problems.append(Problem(str(path), "no label rows", None, sample))
        return None
    return curve


def _duration_from_features(path: Path | None, sample: str, problems: list[Problem]) -> float:
    """Last timestamp (ms) of the feature file + one 2 Hz step; 0.0 (with a Problem) if it cannot be read."""
    if path is None or not path.is_file():
        problems.append(Problem(str(path) if path else sample, "no labels and no feature file: the duration is "
                                "unknown", None, sample))
        return 0.0
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        header = [c.strip().lower() for c in rows[0]]
        i = header.index("timestamp")
        stamps = [float(r[i]) for r in rows[1:] if r and r[i].strip()]
        return max(stamps) / 1000.0 + STEP_S
    except (OSError, UnicodeDecodeError, csv.Error, IndexError, ValueError) as e:
        problems.append(Problem(str(path), f"no labels, and the duration cannot be read from the timestamps here "
                                f"({type(e).__name__}: {e})", None, sample))
        return 0.0


# ----------------------------------------------------------------------------------------------
# 000 §5.1's repartition
# ----------------------------------------------------------------------------------------------


def _sort_key(sample: str) -> tuple[int, int | str]:
    return (0, int(sample)) if sample.isdigit() else (1, sample)


def _repartition(params: Params, clips: list[Clip], labels: dict[str, list[Any]], partition_file: Path,
                 problems: list[Problem]) -> dict[str, Any]:
    """In place: the original test clips (and their label rows) out, the drawn ones to test."""
    left_out = sorted((c.clip_id for c in clips if c.partition == "test"), key=_sort_key)
    rng = random.Random(params.seed)
    moved: list[str] = []
    for source, n in (("train", params.test_from_train), ("devel", params.test_from_devel)):
        pool = sorted((c.clip_id for c in clips if c.partition == source), key=_sort_key)
        if len(pool) < n:
            problems.append(Problem(str(partition_file), f"repartition paper draws {n} {source} samples for the new "
                                    f"test set, only {len(pool)} are listed"))
            n = len(pool)
        moved += sorted(rng.sample(pool, n), key=_sort_key)
    gone = set(left_out)
    to_test = set(moved)
    kept = [c for c in clips if c.clip_id not in gone]
    for c in kept:
        if c.clip_id in to_test:
            c.partition = "test"
    clips[:] = kept
    # what is wrong with a left-out clip no longer matters to the corpus read
    problems[:] = [p for p in problems if p.clip_id not in gone]
    keep_rows = [i for i, cid in enumerate(labels["clip_id"]) if cid not in gone]
    for k in labels:
        labels[k] = [labels[k][i] for i in keep_rows]
    return {
        "left_out": {cid: "original test partition: no public labels (000 §5.1 repartition)" for cid in left_out},
        "moved_to_test": moved,
    }
