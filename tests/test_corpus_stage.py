"""The corpus stage on real-corpus layouts: `corpus.name` reaches its adapter, every problem is reported
at once before anything is extracted (fail: one error, one line each; skip: those clips left out and
listed in data/errors/corpus.csv), the corpus root is never written to, and the section's options are
validated per corpus."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import yaml

from pipeline.core.config import ConfigError, load_section
from pipeline.core.errors import PipelineError
from pipeline.corpus.adapter import CorpusRead, LayoutError, Problem
from pipeline.corpus.demo.params import CorpusParams
from pipeline.corpus.manifest import (
    Clip,
    CorpusInfo,
    read_labels,
    read_manifest,
    write_labels,
)
from pipeline.corpus.registry import ADAPTERS, NAMES, CorpusSection, adapter
from pipeline.corpus.validate import check, empty_classes

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stage_corpus", REPO / "stages" / "corpus.py")
stage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage)


def wav(path: Path, seconds: float = 1.0, sr: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.zeros(int(seconds * sr), np.int16), sr, subtype="PCM_16", format="WAV")
    return path


def write_csv(path: Path, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (the stage's working directory); `project(corpus_section)` writes params.yaml."""
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)

    def make(corpus: dict) -> Path:
        (work / "params.yaml").write_text(yaml.safe_dump({"corpus": corpus}))
        return work

    return make


def errors_rows() -> list[dict[str, str]]:
    with open("data/errors/corpus.csv", newline="") as f:
        return list(csv.DictReader(f))


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content hash (folders: 'dir') and mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[str(p.relative_to(root))] = f"dir {oct(p.stat().st_mode)}"
        for name in filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + f" {oct(p.stat().st_mode)}"
    return out


@pytest.fixture
def read_only():
    """`read_only(root)` makes a tree read-only; writable again afterwards (so tmp_path can be removed)."""
    made = []

    def lock(root: Path) -> Path:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                os.chmod(Path(dirpath) / name, 0o444)
        for dirpath, _, _ in sorted(os.walk(root), reverse=True):
            os.chmod(dirpath, 0o555)
        made.append(root)
        return root

    yield lock
    for root in made:
        for dirpath, _, _ in os.walk(root):
            os.chmod(dirpath, 0o755)


# ---- the hostile manifest -------------------------------------------------------------------------

CLASSES = ["happy", "neutral", "sad"]


def hostile(root: Path) -> Path:
    """A manifest corpus with every kind of problem once: a duplicate id, a label outside the classes,
    a listed media file that is absent, an empty path, a NaN arousal, arousal 5.0 on [-1, 1], a label
    time outside its (1 s) clip; c2 and c9 are clean."""
    for name in ("a", "b", "c", "d", "f", "g", "h", "i"):
        wav(root / "media" / f"{name}.wav")
    write_csv(root / "manifest.csv", [
        ["clip_id", "speaker", "media_path", "label", "partition"],
        ["c1", "s1", "media/a.wav", "happy", "train"],      # line 2
        ["c2", "s2", "media/b.wav", "sad", "train"],        # line 3
        ["c1", "s3", "media/c.wav", "happy", "devel"],      # line 4: the duplicate
        ["c3", "s1", "media/d.wav", "bored", "train"],      # line 5: not a class
        ["c4", "s2", "media/missing.wav", "sad", "test"],   # line 6: absent
        ["c5", "s3", "", "sad", "test"],                    # line 7: empty path
        ["c6", "s1", "media/f.wav", "happy", "train"],      # line 8: NaN arousal
        ["c7", "s2", "media/g.wav", "sad", "train"],        # line 9: arousal 5.0
        ["c8", "s3", "media/h.wav", "happy", "devel"],      # line 10: label time outside the clip
        ["c9", "s1", "media/i.wav", "happy", "test"],       # line 11
    ])
    write_csv(root / "labels.csv", [
        ["clip_id", "t", "arousal", "valence", "dominance"],
        ["c2", "0", "0.1", "0.2", "0.5"],
        ["c6", "0", "nan", "0.2", ""],      # line 3
        ["c7", "0.5", "5.0", "0.2", ""],    # line 4
        ["c8", "10", "0.1", "0.2", ""],     # line 5
        ["c9", "0", "", "-0.3", "0.1"],     # an empty arousal: not annotated, fine
        ["c9", "1.0", "0.4", "-0.3", "0.1"],
    ])
    return root


def hostile_params(root: Path, on_error: str = "fail") -> dict:
    return {"name": "manifest", "root": str(root), "labels_csv": "labels.csv", "classes": CLASSES,
            "label_ranges": {"arousal": [-1, 1], "valence": [-1, 1]}, "on_error": on_error}


def expected_lines(root: Path) -> list[str]:
    m, lab, media = root / "manifest.csv", root / "labels.csv", root / "media"
    return [
        f"{m}:2: clip c1: duplicate clip id (also at {m}:4); expected each clip id once",
        f"{m}:4: clip c1: duplicate clip id (also at {m}:2); expected each clip id once",
        f"{m}:5: clip c3: label 'bored' is not one of the classes (happy, neutral, sad)",
        f"{m}:6: clip c4: media_path {media / 'missing.wav'}: file not found",
        f"{m}:7: clip c5: empty media_path; expected the path of the clip's media file",
        f"{lab}:3: clip c6: arousal nan at t=0: expected a finite number or empty (not annotated)",
        f"{lab}:4: clip c7: arousal 5 at t=0.5: expected a value in [-1, 1]",
        f"{lab}:5: clip c8: label at t=10 s is outside the clip (0 to 1 s)",
    ]


def test_hostile_manifest_fails_with_every_problem_at_once(project, tmp_path):
    root = hostile(tmp_path / "corpus")
    project(hostile_params(root))
    with pytest.raises(PipelineError) as e:
        stage.main()
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"corpus 'manifest' ({root}): 8 problems (listed in data/errors/corpus.csv")
    assert [line.strip() for line in lines[1:]] == expected_lines(root)
    assert not Path("data/corpus/manifest.parquet").exists()  # nothing written but the errors
    assert len(errors_rows()) == 8


def test_hostile_manifest_skip_leaves_exactly_those_clips_out(project, tmp_path, capsys):
    root = hostile(tmp_path / "corpus")
    project(hostile_params(root, "skip"))
    stage.main()
    info, clips = read_manifest("data/corpus/manifest.parquet")
    assert sorted(c.clip_id for c in clips) == ["c2", "c9"]
    assert info.classes == CLASSES  # neutral has no clip: warned about, still a class
    out = capsys.readouterr().out
    assert "warning: corpus: class 'neutral' has no clip left (kept in the classes)" in out
    assert "corpus: manifest: 2 clips from 2 speakers, 3 classes, 3 label rows; 8 of 10 left out with problems" in out
    rows = errors_rows()
    assert list(rows[0]) == ["file", "row", "clip_id", "problem"]
    assert [f"{r['file']}:{r['row']}: clip {r['clip_id']}: {r['problem']}" for r in rows] == expected_lines(root)
    labels = read_labels("data/corpus/labels.parquet")
    assert labels.column_names == ["clip_id", "t", "arousal", "valence", "dominance"]
    assert labels.column("clip_id").to_pylist() == ["c2", "c9", "c9"]
    assert labels.column("arousal").to_pylist()[1] is None  # not annotated stays null
    assert labels.column("dominance").to_pylist() == pytest.approx([0.5, 0.1, 0.1])
    c2 = next(c for c in clips if c.clip_id == "c2")
    assert c2.media_path == str(root / "media" / "b.wav") and c2.duration == pytest.approx(1.0)


def test_clean_corpus_writes_a_header_only_errors_file(project, tmp_path):
    root = tmp_path / "corpus"
    wav(root / "a.wav")
    write_csv(root / "manifest.csv", [["clip_id", "speaker", "media_path", "label"], ["x", "s", "a.wav", "calm"]])
    project({"name": "manifest", "root": str(root)})
    stage.main()
    assert Path("data/errors/corpus.csv").read_text() == "file,row,clip_id,problem\n"
    assert read_labels("data/corpus/labels.parquet").num_rows == 0  # always a table (segment depends on it)
    assert read_manifest("data/corpus/manifest.parquet")[0].classes == ["calm"]


def test_no_traceback_from_the_stage_script(project, tmp_path):
    root = hostile(tmp_path / "corpus")
    work = project(hostile_params(root))
    out = subprocess.run([sys.executable, str(REPO / "stages" / "corpus.py")], cwd=work, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), "MER_THREADS": "1"})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[0].startswith("error: corpus 'manifest'")
    assert [line.strip() for line in out.stderr.splitlines()[1:]] == expected_lines(root)


# ---- the root stays untouched ---------------------------------------------------------------------


def test_root_is_never_written(project, tmp_path, read_only):
    root = hostile(tmp_path / "corpus")
    before = snapshot(read_only(root))
    project(hostile_params(root, "skip"))
    stage.main()
    assert snapshot(root) == before


def test_a_root_holding_the_outputs_is_refused(project, tmp_path):
    work = project({"name": "manifest", "root": "."})
    with pytest.raises(LayoutError, match="holds the pipeline's data/ folder"):
        stage.main()
    project({"name": "manifest", "root": "data/corpus/mine"})
    with pytest.raises(LayoutError, match="an output of this stage"):
        stage.main()
    assert not (work / "data" / "errors").exists()


# ---- every name reaches its adapter ---------------------------------------------------------------


@pytest.mark.parametrize("name", ADAPTERS)
def test_every_name_reaches_its_adapter(project, tmp_path, name):
    """An empty root: each adapter's own LayoutError, one line naming a path of its layout."""
    root = tmp_path / "empty"
    root.mkdir()
    project({"name": name, "root": str(root)})
    assert type(load_section("corpus")) is adapter(name).Params
    with pytest.raises(LayoutError) as e:
        stage.main()
    msg = str(e.value)
    assert "\n" not in msg and str(root) in msg and "expected" in msg


def test_crema_d_through_the_stage(project, tmp_path, crema_d_dir, read_only):
    from test_corpus_crema_d import STEMS, build

    root = read_only(build(tmp_path / "CREMA-D", crema_d_dir, None, wav=False))
    before = snapshot(root)
    project({"name": "crema_d", "root": str(root)})
    stage.main()
    info, clips = read_manifest("data/corpus/manifest.parquet")
    assert info.name == "crema_d" and sorted(c.clip_id for c in clips) == STEMS
    assert read_labels("data/corpus/labels.parquet").num_rows == 0 and errors_rows() == []
    assert snapshot(root) == before


def test_ulm_tsst_through_the_stage(project, tmp_path, read_only):
    from test_corpus_ulm_tsst import SMALL, make_package

    root = read_only(make_package(tmp_path / "c3_muse_stress_2022", SMALL))
    project({"name": "ulm_tsst", "root": str(root), "repartition": "none"})
    stage.main()
    _, clips = read_manifest("data/corpus/manifest.parquet")
    assert sorted(c.clip_id for c in clips) == sorted(SMALL)
    labels = read_labels("data/corpus/labels.parquet")
    assert labels.num_rows > 0 and labels.column_names[:4] == ["clip_id", "t", "arousal", "valence"]


def test_a_demo_run_leaves_nothing_behind_for_a_real_corpus(project, tmp_path):
    root = tmp_path / "corpus"
    wav(root / "a.wav")
    write_csv(root / "manifest.csv", [["clip_id", "speaker", "media_path"], ["x", "s", "a.wav"]])
    work = project({"name": "manifest", "root": str(root)})
    for stale in ("data/corpus/media/old.mp4", "data/corpus/biosignals/old.csv", "data/corpus/labels.parquet"):
        (work / stale).parent.mkdir(parents=True, exist_ok=True)
        (work / stale).write_text("demo")
    stage.main()
    assert sorted(p.name for p in (work / "data" / "corpus").rglob("*") if p.is_file()) == ["labels.parquet", "manifest.parquet"]
    assert read_labels(work / "data/corpus/labels.parquet").num_rows == 0  # the demo's labels are gone
    assert (root / "a.wav").exists()


# ---- MMSA-FET's layout -------------------------------------------------------------------------------


def mmsa(root: Path, sims: bool = False) -> Path:
    unimodal = ["label_T", "label_A", "label_V"] if sims else []
    rows = [["video_id", "clip_id", "text", "label", *unimodal, "annotation", "mode"]]
    for i, (video, clip, label, annotation, mode) in enumerate([
        ("vid_a", "1", 2.4, "Positive", "train"), ("vid_a", "2", -1.0, "Negative", "valid"),
        ("vid_b", "1", 0.0, "Neutral", "test"),
    ]):
        wav(root / "Raw" / video / f"{clip}.mp4", 0.5 + i * 0.25)  # a WAV by content: the header says so
        rows.append([video, clip, f"text {i}", label, *([label / 3] * len(unimodal)), annotation, mode])
    write_csv(root / "label.csv", rows)
    return root


def test_mmsa_layout(project, tmp_path):
    root = mmsa(tmp_path / "MOSI")
    project({"name": "manifest", "format": "mmsa", "root": str(root)})
    stage.main()
    info, clips = read_manifest("data/corpus/manifest.parquet")
    assert info.classes == ["Negative", "Neutral", "Positive"]
    by_id = {c.clip_id: c for c in clips}
    assert sorted(by_id) == ["vid_a_1", "vid_a_2", "vid_b_1"]
    a2 = by_id["vid_a_2"]
    assert (a2.speaker, a2.partition, a2.label, a2.transcript) == ("vid_a", "devel", "Negative", "text 1")
    assert a2.media_path == str(root / "Raw" / "vid_a" / "2.mp4") and a2.duration == pytest.approx(0.75)
    labels = read_labels("data/corpus/labels.parquet").to_pydict()
    assert labels["t"] == [0.0, 0.0, 0.0] and labels["sentiment"] == pytest.approx([2.4, -1.0, 0.0])
    assert labels["arousal"] == [None] * 3


def test_mmsa_sims_range(project, tmp_path):
    root = mmsa(tmp_path / "SIMS", sims=True)
    project({"name": "manifest", "format": "mmsa", "root": str(root), "label_ranges": {"sentiment": [-1, 1]}})
    with pytest.raises(PipelineError) as e:
        stage.main()
    assert f"{root / 'label.csv'}:2: clip vid_a_1: sentiment 2.4 at t=0: expected a value in [-1, 1]" in str(e.value)
    labels_header = read_labels  # noqa: F841 - the unimodal columns are read too:
    r = adapter("manifest").read(load_section("corpus"))
    assert list(r.labels) == ["clip_id", "t", "sentiment", "sentiment_text", "sentiment_audio", "sentiment_video"]


def test_mmsa_missing_raw_folder(project, tmp_path):
    root = tmp_path / "MOSEI"
    write_csv(root / "label.csv", [["video_id", "clip_id", "text", "label", "annotation", "mode"]])
    project({"name": "manifest", "format": "mmsa", "root": str(root)})
    with pytest.raises(LayoutError, match=r"Raw: not found; expected MMSA's Raw/<video_id>/<clip_id>.mp4"):
        stage.main()


def test_manifest_csv_missing_column(project, tmp_path):
    root = tmp_path / "corpus"
    write_csv(root / "manifest.csv", [["clip_id", "media_path"], ["x", "a.wav"]])
    project({"name": "manifest", "root": str(root)})
    with pytest.raises(LayoutError, match=r"manifest.csv: no column speaker in the header \(clip_id, media_path\)"):
        stage.main()


# ---- the checks ------------------------------------------------------------------------------------


def test_check_windows_crops_partitions(tmp_path):
    media = str(wav(tmp_path / "a.wav"))
    clips = [
        Clip("ok", "s", media, 1.0, start=0.5, end=1.5, crop=[0, 0, 0.5, 1]),
        Clip("neg", "s", media, 1.0, start=-1.0, end=0.5),
        Clip("backwards", "s", media, 1.0, start=2.0, end=2.0),
        Clip("crop", "s", media, 1.0, crop=[0.5, 0, 1.2, 1]),
        Clip("part", "s", media, 1.0, partition="validation"),
        Clip("nodur", "s", media, math.nan),
        Clip("noaudio", "s", media, 1.0, audio_path=str(tmp_path / "none.wav")),
    ]
    origin = {c.clip_id: ("list.csv", i + 2) for i, c in enumerate(clips)}
    read = CorpusRead(CorpusInfo("x", []), clips, problems=[Problem("list.csv", "from the adapter", 9, "other")], origin=origin)
    lines = [p.line() for p in check(read)]
    assert lines == [
        "list.csv:9: clip other: from the adapter",
        "list.csv:3: clip neg: start -1: expected a time ≥ 0 s",
        "list.csv:4: clip backwards: end 2 ≤ start 2: expected end > start",
        "list.csv:5: clip crop: crop 0.5 0 1.2 1: expected x0 y0 x1 y1 as fractions of the frame in [0, 1] with x0 < x1 and y0 < y1",
        "list.csv:6: clip part: partition 'validation': expected one of train, devel, test or empty",
        "list.csv:7: clip nodur: duration nan: expected a number of seconds > 0",
        f"list.csv:8: clip noaudio: audio_path {tmp_path / 'none.wav'}: file not found",
    ]


def test_label_times_allow_half_a_period_and_labels_of_unknown_clips(tmp_path):
    media = str(wav(tmp_path / "a.wav"))
    read = CorpusRead(
        CorpusInfo("x", [], label_rate_hz=2.0), [Clip("a", "s", media, 1.0)],
        labels={"clip_id": ["a", "a", "a", "zz"], "t": [-0.1, 1.25, 1.26, 0.0], "arousal": [0.0, None, 0.1, 0.0]},
        origin={"a": ("m.csv", 2)},
    )
    lines = [p.line() for p in check(read)]
    assert lines == [
        "m.csv:2: clip a: label at t=-0.1 s is outside the clip (0 to 1 s + half a label period, 0.25 s)",
        "m.csv:2: clip a: label at t=1.26 s is outside the clip (0 to 1 s + half a label period, 0.25 s)",
        "manifest: clip zz: labels for a clip the manifest does not list",
    ]
    assert empty_classes(["a", "b"], [Clip("x", "s", media, 1.0, label="b")]) == ["a"]


# ---- params ----------------------------------------------------------------------------------------


def test_unknown_option_and_wrong_type_name_the_key(project):
    project({"name": "crema_d", "root": "/somewhere", "vidoe": "flv", "label_source": 3})
    with pytest.raises(ConfigError) as e:
        load_section("corpus")
    lines = str(e.value).splitlines()[1:]
    assert "  corpus.vidoe: unknown option of corpus 'crema_d' (did you mean 'video'?); its options: " \
           "root, on_error, name, video, label_source" in lines
    assert any(line.startswith("  corpus.label_source: Input should be 'intended'") for line in lines)
    project({"name": "manifest", "root": "/x", "label_ranges": {"arousal": "wide"}})
    with pytest.raises(ConfigError, match=r"corpus\.label_ranges\.arousal: "):
        load_section("corpus")
    project({"name": "imdb"})
    with pytest.raises(ConfigError, match=r"corpus\.name: Input should be 'demo', 'crema_d'"):
        load_section("corpus")
    project({"name": "ravdess"})
    with pytest.raises(ConfigError, match=r"corpus\.root: Field required"):
        load_section("corpus")


def test_demo_params_keep_their_dump_and_gain_root(project):
    project({"seed": 3})
    params = load_section("corpus")
    assert type(params) is CorpusParams and params.root == "pipeline/corpus/demo"
    assert "root" not in params.model_dump()  # the demo manifest's metadata: the same bytes as before
    assert yaml.safe_load((REPO / "params.yaml").read_text())["corpus"]["root"] == "pipeline/corpus/demo"


def test_the_union_agrees_with_the_lazy_section():
    union = CorpusSection.union()
    for name in NAMES:
        raw = {"name": name} if name == "demo" else {"name": name, "root": "/r"}
        assert type(union.validate_python(raw)) is type(CorpusSection.model_validate(raw))


def test_labels_table_takes_further_targets(tmp_path):
    write_labels(tmp_path / "l.parquet", {"clip_id": ["a"], "t": [0.0], "dominance": [0.5]})
    table = read_labels(tmp_path / "l.parquet")
    assert table.column_names == ["clip_id", "t", "arousal", "valence", "dominance"]
    assert table.column("arousal").to_pylist() == [None]
    assert str(pq.read_schema(tmp_path / "l.parquet").field("dominance").type) == "float"
