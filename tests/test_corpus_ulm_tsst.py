"""The Ulm-TSST (MuSe-Stress) adapter on small packages written in the challenge's layout:
metadata/partition.csv, label_segments/{physio-arousal|arousal,valence}/<id>.csv (timestamp ms, value,
subject_id or segment_id), feature_segments/<feature>/<id>.csv (timestamp ms, segment_id, features)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.corpus.adapter import LayoutError
from pipeline.corpus.manifest import (
    read_labels,
    read_manifest,
    write_labels,
    write_manifest,
)
from pipeline.corpus.ulm_tsst import Params, read

STEPS = 6  # 2 Hz rows per sample: 0 … 2500 ms


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _label_csv(sample: str, values: list[float | None], extra: str = "subject_id") -> str:
    rows = [f"timestamp,value,{extra}"]
    for i, v in enumerate(values):
        rows.append(f"{i * 500},{'' if v is None else v},{sample if extra == 'subject_id' else 1}")
    return "\n".join(rows) + "\n"


def _feature_csv(columns: list[str], n: int = STEPS) -> str:
    rows = ["timestamp,segment_id," + ",".join(columns)]
    for i in range(n):
        rows.append(f"{i * 500},1," + ",".join(f"{0.1 * (i + j):.3f}" for j in range(len(columns))))
    return "\n".join(rows) + "\n"


def _value(sample: str, dim: str, i: int) -> float:
    return round((int(sample) % 7) / 10 + (0.05 if dim == "valence" else -0.05) * i / STEPS, 4)


def make_package(root: Path, partitions: dict[str, str], arousal: str = "physio-arousal",
                 extra: str = "subject_id") -> Path:
    """A MuSe-Stress package: the test samples' label files hold empty values (hidden labels)."""
    _write(root / "metadata" / "partition.csv",
           "Id,Partition\n" + "".join(f"{s},{p}\n" for s, p in partitions.items()))
    for sample, partition in partitions.items():
        for dim, folder in (("arousal", arousal), ("valence", "valence")):
            values = [None if partition == "test" else _value(sample, dim, i) for i in range(STEPS)]
            _write(root / "label_segments" / folder / f"{sample}.csv", _label_csv(sample, values, extra))
        _write(root / "feature_segments" / "biosignals" / f"{sample}.csv", _feature_csv(["ECG", "RESP", "BPM"]))
        _write(root / "feature_segments" / "egemaps" / f"{sample}.csv", _feature_csv(["F0", "loudness"]))
    return root


SMALL = {"1": "train", "2": "train", "3": "devel", "4": "test"}


@pytest.fixture
def package(tmp_path):
    return make_package(tmp_path / "c3_muse_stress_2022", SMALL)


def _read(root: Path, **kw):
    return read(Params(name="ulm_tsst", root=str(root), **kw))


def _labels_of(r, clip_id):
    return [(t, a, v) for c, t, a, v in zip(r.labels["clip_id"], r.labels["t"], r.labels["arousal"], r.labels["valence"])
            if c == clip_id]


# ----------------------------------------------------------------------------------------------


def test_reads_the_package_as_given(package):
    r = _read(package, repartition="none")
    assert r.problems == []
    assert r.info.name == "ulm_tsst" and r.info.label_rate_hz == 2.0 and r.info.classes == []
    assert r.label_ranges == {"arousal": (-1.0, 1.0), "valence": (-1.0, 1.0)}
    by_id = {c.clip_id: c for c in r.clips}
    assert sorted(by_id) == ["1", "2", "3", "4"]
    assert {k: c.partition for k, c in by_id.items()} == SMALL
    for c in r.clips:
        assert c.speaker == c.clip_id  # one speaker per recording
        # feature-only: media_path is the sample's CSV of the first feature folder (name order)
        assert c.media_path == str(package / "feature_segments" / "biosignals" / f"{c.clip_id}.csv")
        assert c.audio_path is None and c.crop is None
        assert c.duration == pytest.approx((STEPS - 1) * 0.5 + 0.5)
    assert r.origin["3"] == (str(package / "metadata" / "partition.csv"), 4)
    assert r.info.params["arousal_folder"] == "label_segments/physio-arousal"
    assert r.info.params["feature_only"] is True


def test_labels_are_the_2hz_curves_in_seconds(package):
    r = _read(package, repartition="none")
    rows = _labels_of(r, "2")
    assert [t for t, _, _ in rows] == [i * 0.5 for i in range(STEPS)]
    for i, (_, a, v) in enumerate(rows):
        assert a == pytest.approx(_value("2", "arousal", i)) and v == pytest.approx(_value("2", "valence", i))
    # the test partition's hidden labels are null, never a value
    assert all(a is None and v is None for _, a, v in _labels_of(r, "4"))
    assert len(_labels_of(r, "4")) == STEPS


def test_manifest_and_labels_tables_accept_the_read(package, tmp_path):
    r = _read(package, repartition="none")
    write_manifest(tmp_path / "manifest.parquet", r.info, r.clips)
    write_labels(tmp_path / "labels.parquet", r.labels)
    info, clips = read_manifest(tmp_path / "manifest.parquet")
    assert info.name == "ulm_tsst" and len(clips) == 4
    table = read_labels(tmp_path / "labels.parquet")
    assert table.num_rows == 4 * STEPS
    assert table.column("arousal").null_count == STEPS  # sample 4 (test)


def test_the_import_stage_reads_the_feature_only_corpus(package):
    """import.dir = <root>/feature_segments/<feature>: the clip ids name the files it reads."""
    from pipeline.extract.csv_import import CsvImport, ImportParams

    r = _read(package, repartition="none")
    extractor = CsvImport(ImportParams(dir=str(package / "feature_segments" / "biosignals")))
    feats = extractor.process_clip(r.clips[0], Path("."))
    assert feats.values.shape == (STEPS, 3)
    assert list(feats.t) == [i * 0.5 for i in range(STEPS)]


def test_2021_layout_reads_arousal_and_segment_id(tmp_path):
    root = make_package(tmp_path / "c3_muse_stress", SMALL, arousal="arousal", extra="segment_id")
    r = _read(root, repartition="none")
    assert r.problems == [] and r.info.params["arousal_folder"] == "label_segments/arousal"
    assert _labels_of(r, "1")[2][1] == pytest.approx(_value("1", "arousal", 2))


def test_auto_prefers_physio_arousal(package):
    # a 2022 package with both folders: 000 §5.1's arousal (fused with EDA) is physio-arousal
    for sample in SMALL:
        _write(package / "label_segments" / "arousal" / f"{sample}.csv", _label_csv(sample, [0.9] * STEPS))
    r = _read(package, repartition="none")
    assert r.info.params["arousal_folder"] == "label_segments/physio-arousal"
    assert _labels_of(r, "1")[0][1] != 0.9
    r = _read(package, repartition="none", arousal="arousal")
    assert _labels_of(r, "1")[0][1] == pytest.approx(0.9)


def test_media_and_audio_dirs(package):
    (package / "raw_data" / "video").mkdir(parents=True)
    (package / "raw_data" / "audio").mkdir(parents=True)
    for s in ("1", "2", "3"):
        (package / "raw_data" / "video" / f"{s}.mp4").write_bytes(b"x")
        (package / "raw_data" / "audio" / f"{s}.wav").write_bytes(b"x")
    r = _read(package, repartition="none", media_dir="raw_data/video", audio_dir="raw_data/audio")
    by_id = {c.clip_id: c for c in r.clips}
    assert by_id["1"].media_path == str(package / "raw_data" / "video" / "1.mp4")
    assert by_id["1"].audio_path == str(package / "raw_data" / "audio" / "1.wav")
    assert r.info.params["feature_only"] is False
    missing = {(p.clip_id, Path(p.file).name) for p in r.problems}
    assert missing == {("4", "4.mp4"), ("4", "4.wav")}


# ----------------------------------------------------------------------------------------------
# 000 §5.1's repartition


PAPER = {**{str(i): "train" for i in range(1, 9)}, **{str(i): "devel" for i in range(9, 14)},
         **{str(i): "test" for i in range(14, 17)}}


def test_paper_repartition(tmp_path):
    root = make_package(tmp_path / "pkg", PAPER)
    r = _read(root)  # repartition: paper is the default
    parts = {c.clip_id: c.partition for c in r.clips}
    assert sorted(parts, key=int) == [str(i) for i in range(1, 14)]  # the 3 original test samples left out
    moved = r.info.params["moved_to_test"]
    assert len(moved) == 10
    assert sum(PAPER[m] == "train" for m in moved) == 6 and sum(PAPER[m] == "devel" for m in moved) == 4
    assert [p for p in parts.values()].count("test") == 10
    assert [p for p in parts.values()].count("train") == 2 and [p for p in parts.values()].count("devel") == 1
    assert sorted(r.info.params["left_out"]) == ["14", "15", "16"]
    assert not {"14", "15", "16"} & set(r.labels["clip_id"])
    # deterministic: the same seed draws the same samples, another seed (here) others
    assert _read(root).info.params["moved_to_test"] == moved
    assert _read(root, seed=1).info.params["moved_to_test"] != moved
    # every new test sample has its labels (the point of the repartition)
    for m in moved:
        assert all(a is not None for _, a, _ in _labels_of(r, m))


def test_repartition_with_too_few_samples_is_a_problem(package):
    r = _read(package)
    assert any("only 2 are listed" in p.message for p in r.problems)
    assert all(c.partition == "test" for c in r.clips if c.clip_id in ("1", "2", "3"))


# ----------------------------------------------------------------------------------------------
# hostile packages: each a Problem naming the file and row


def test_label_file_that_does_not_parse(package):
    path = package / "label_segments" / "valence" / "2.csv"
    path.write_text("timestamp,value,subject_id\n0,0.1,2\n500,high,2\n1000,0.2,2\n")
    r = _read(package, repartition="none")
    [p] = r.problems
    assert (p.file, p.row, p.clip_id) == (str(path), 3, "2") and "'high'" in p.message
    assert "2" in {c.clip_id for c in r.clips}  # the clip stays, its problem marks it


@pytest.mark.parametrize("content, row, words", [
    ("time,val\n0,0.1\n", 1, "lacks 'timestamp'"),
    ("timestamp,value\n0,0.1\n0,0.2\n", 3, "duplicate timestamp"),
    ("timestamp,value\n500,0.1\n0,0.2\n", 3, "unsorted timestamp"),
    ("", 1, "empty label file"),
])
def test_label_file_layout_problems(package, content, row, words):
    path = package / "label_segments" / "physio-arousal" / "1.csv"
    path.write_text(content)
    [p] = _read(package, repartition="none").problems
    assert (p.file, p.row, p.clip_id) == (str(path), row, "1") and words in p.message


def test_sample_without_labels(package):
    (package / "label_segments" / "physio-arousal" / "3.csv").unlink()
    r = _read(package, repartition="none")
    [p] = r.problems
    assert p.file == str(package / "label_segments" / "physio-arousal" / "3.csv") and p.clip_id == "3"
    assert "no arousal label file" in p.message
    # the valence curve is still read; arousal is null there
    assert all(a is None and v is not None for _, a, v in _labels_of(r, "3"))


def test_test_sample_without_label_files_is_fine(package):
    for folder in ("physio-arousal", "valence"):
        (package / "label_segments" / folder / "4.csv").unlink()
    r = _read(package, repartition="none")
    assert r.problems == []
    assert _labels_of(r, "4") == []
    assert {c.clip_id: c.duration for c in r.clips}["4"] == pytest.approx(STEPS * 0.5)  # from the features


def test_label_value_out_of_range(package):
    path = package / "label_segments" / "valence" / "1.csv"
    path.write_text("timestamp,value,subject_id\n0,0.1,1\n500,1.7,1\n")
    r = _read(package, repartition="none")
    [p] = r.problems
    assert (p.file, p.row, p.clip_id) == (str(path), 3, "1") and "outside the declared range" in p.message
    assert _labels_of(r, "1")[1][2] is None  # not taken as a value


def test_id_in_partition_csv_without_files(package):
    with open(package / "metadata" / "partition.csv", "a") as f:
        f.write("99,train\n")
    r = _read(package, repartition="none")
    [p] = r.problems
    assert (p.file, p.row, p.clip_id) == (str(package / "metadata" / "partition.csv"), 6, "99")
    assert "no label, feature or media file" in p.message
    assert "99" not in {c.clip_id for c in r.clips}


def test_files_of_an_unlisted_sample(package):
    _write(package / "label_segments" / "valence" / "77.csv", _label_csv("77", [0.1] * STEPS))
    [p] = _read(package, repartition="none").problems
    assert p.file == str(package / "label_segments" / "valence" / "77.csv") and "not listed" in p.message


def test_bad_partition_rows(package):
    (package / "metadata" / "partition.csv").write_text("Id,Partition\n1,Train\n2,validation\n3,devel\n3,test\n4,test\n")
    r = _read(package, repartition="none")
    assert {c.clip_id: c.partition for c in r.clips}["1"] == "train"  # case is not a problem
    rows = sorted((p.row, p.clip_id) for p in r.problems if p.file.endswith("partition.csv"))
    assert rows == [(3, "2"), (5, "3")]
    # sample 2's files are on disk but it has no valid row: named too
    assert any(p.file.endswith("2.csv") and "not listed" in p.message for p in r.problems)


def test_missing_feature_file_of_a_feature_only_sample(package):
    path = package / "feature_segments" / "biosignals" / "2.csv"
    path.unlink()
    [p] = _read(package, repartition="none").problems
    assert (p.file, p.clip_id) == (str(path), "2") and "feature-only" in p.message


def test_nan_labels_are_null(package):
    path = package / "label_segments" / "valence" / "1.csv"
    path.write_text("timestamp,value,subject_id\n0,nan,1\n500,,1\n1000,0.3,1\n")
    r = _read(package, repartition="none")
    assert r.problems == []
    assert [v for _, _, v in _labels_of(r, "1")][:3] == [None, None, 0.3]


# ----------------------------------------------------------------------------------------------
# LayoutError: a missing required part


@pytest.mark.parametrize("part", ["metadata/partition.csv", "label_segments", "label_segments/valence",
                                  "label_segments/physio-arousal", "feature_segments"])
def test_missing_required_part(package, part):
    import shutil

    target = package / part
    if part == "label_segments/physio-arousal":
        shutil.rmtree(target)
    elif target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(LayoutError) as e:
        _read(package, repartition="none")
    assert str(package / part.split("/physio")[0]) in str(e.value) or "arousal" in str(e.value)


def test_feature_segments_not_needed_with_media(package):
    import shutil

    shutil.rmtree(package / "feature_segments")
    (package / "raw_data" / "video").mkdir(parents=True)
    for s in SMALL:
        (package / "raw_data" / "video" / f"{s}.mp4").write_bytes(b"x")
    r = _read(package, repartition="none", media_dir="raw_data/video")
    assert r.problems == [] and len(r.clips) == 4


def test_unreadable_partition_csv(package):
    (package / "metadata" / "partition.csv").write_text("Id\n")
    with pytest.raises(LayoutError, match="partition.csv"):
        _read(package)


def test_params_reject_unknown_keys_and_bad_values(package):
    with pytest.raises(ValidationError):
        Params(name="ulm_tsst", root=str(package), repartition="random")
    with pytest.raises(ValidationError):
        Params(name="ulm_tsst", root=str(package), medai_dir="x")
    assert Params(name="ulm_tsst", root=str(package)).repartition == "paper"
