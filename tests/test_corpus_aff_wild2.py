"""The Aff-Wild2 adapter on a tree in the ABAW layout: real videos (the CREMA-D sample clips re-muxed to
MP4, one also as .avi), annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt with
the header "valence,arousal", one line per frame and -5 for frames that are not annotated, and a
two-person video annotated as <video>_left.txt / <video>_right.txt."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.corpus.adapter import LayoutError
from pipeline.corpus.aff_wild2 import Params, read
from pipeline.corpus.manifest import read_labels, write_labels, write_manifest
from pipeline.media import iter_video_frames, probe, read_audio, write_mp4

FPS = 30
SR = 16000
# CREMA-D clip -> Aff-Wild2-like video name (a '-'-joined id as the ABAW videos have)
NAMES = {"1001_DFA_ANG_XX": "1-30-480x360", "1001_DFA_HAP_XX": "2-30-480x360", "1001_DFA_SAD_XX": "3-30-480x360"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory, crema_d_dir) -> dict[str, Path]:
    """The three CREMA-D clips re-muxed to MP4 at 30 fps (written once per module)."""
    out = tmp_path_factory.mktemp("affwild2_videos")
    made = {}
    for src, name in NAMES.items():
        flv = crema_d_dir / "VideoFlash" / f"{src}.flv"
        frames = [f for _, f in iter_video_frames(flv, FPS)]
        write_mp4(out / f"{name}.mp4", frames, read_audio(flv, SR), FPS, SR)
        made[name] = out / f"{name}.mp4"
    return made


def _frames(video: Path) -> int:
    info = probe(video)
    return round(info.duration * info.fps)


def _annotation(n: int, unannotated: set[int] = frozenset(), seed: int = 0) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    va = np.round(rng.uniform(-1, 1, size=(n, 2)), 3)
    for i in unannotated:
        va[i] = -5
    return "valence,arousal\n" + "".join(f"{v:g},{a:g}\n" for v, a in va), va


@pytest.fixture
def tree(tmp_path, videos):
    """videos/batch1/1.mp4 (train), videos/batch2/2.avi (devel, -5 frames), videos/batch1/3.mp4 annotated
    _left (train) and _right (devel), plus an unannotated video 4.mp4."""
    root = tmp_path / "Aff-Wild2"
    b1, b2 = root / "videos" / "batch1", root / "videos" / "batch2"
    b1.mkdir(parents=True), b2.mkdir(parents=True)
    shutil.copy(videos["1-30-480x360"], b1 / "1-30-480x360.mp4")
    shutil.copy(videos["2-30-480x360"], b2 / "2-30-480x360.avi")  # the name says avi; FFmpeg reads the content
    shutil.copy(videos["3-30-480x360"], b1 / "3-30-480x360.mp4")
    shutil.copy(videos["1-30-480x360"], b1 / "4-30-480x360.mp4")
    va = root / "annotations" / "VA_Estimation_Challenge"
    (va / "Train_Set").mkdir(parents=True), (va / "Validation_Set").mkdir(parents=True)
    truth = {}
    for clip, folder, video, gaps, seed in [
        ("1-30-480x360", "Train_Set", "1-30-480x360", set(), 1),
        ("2-30-480x360", "Validation_Set", "2-30-480x360", {0, 1, 2, 10, 11}, 2),
        ("3-30-480x360_left", "Train_Set", "3-30-480x360", {5}, 3),
        ("3-30-480x360_right", "Validation_Set", "3-30-480x360", set(), 4),
    ]:
        text, values = _annotation(_frames(videos[video]), gaps, seed)
        (va / folder / f"{clip}.txt").write_text(text)
        truth[clip] = values
    return root, truth


def _read(root: Path, **kw):
    return read(Params(name="aff_wild2", root=str(root), **kw))


def _labels_of(r, clip_id):
    return [(t, a, v) for c, t, a, v in zip(r.labels["clip_id"], r.labels["t"], r.labels["arousal"], r.labels["valence"])
            if c == clip_id]


# ----------------------------------------------------------------------------------------------


def test_reads_clips_partitions_and_crops(tree):
    root, _ = tree
    r = _read(root)
    assert r.problems == []
    assert r.info.name == "aff_wild2" and r.info.classes == []
    assert r.label_ranges == {"arousal": (-1.0, 1.0), "valence": (-1.0, 1.0)}
    by_id = {c.clip_id: c for c in r.clips}
    assert sorted(by_id) == ["1-30-480x360", "2-30-480x360", "3-30-480x360_left", "3-30-480x360_right"]
    assert {k: c.partition for k, c in by_id.items()} == {
        "1-30-480x360": "train", "2-30-480x360": "devel", "3-30-480x360_left": "train", "3-30-480x360_right": "devel"}
    assert by_id["3-30-480x360_left"].speaker == by_id["3-30-480x360_right"].speaker == "3-30-480x360"
    assert by_id["3-30-480x360_left"].crop == [0.0, 0.0, 0.5, 1.0]
    assert by_id["3-30-480x360_right"].crop == [0.5, 0.0, 1.0, 1.0]
    assert by_id["1-30-480x360"].crop is None
    assert by_id["2-30-480x360"].media_path == str(root / "videos" / "batch2" / "2-30-480x360.avi")
    assert by_id["3-30-480x360_left"].media_path == by_id["3-30-480x360_right"].media_path
    for c in r.clips:
        assert c.duration == pytest.approx(probe(c.media_path).duration)
        assert c.audio_path is None and c.start is None
    # the unannotated video is no clip, but named in the manifest's params
    assert r.info.params["videos_without_va_annotation"] == ["4-30-480x360"]
    assert r.origin["2-30-480x360"][0].endswith("Validation_Set/2-30-480x360.txt")


def test_labels_per_frame_at_the_video_rate(tree):
    root, truth = tree
    r = _read(root)
    rows = _labels_of(r, "1-30-480x360")
    fps = probe(root / "videos" / "batch1" / "1-30-480x360.mp4").fps
    assert len(rows) == len(truth["1-30-480x360"])
    for i, (t, a, v) in enumerate(rows):
        assert t == pytest.approx((i + 0.5) / fps)
        assert v == pytest.approx(truth["1-30-480x360"][i, 0]) and a == pytest.approx(truth["1-30-480x360"][i, 1])
    assert max(t for t, _, _ in rows) <= {c.clip_id: c.duration for c in r.clips}["1-30-480x360"]


def test_unannotated_frames_are_null_never_a_value(tree):
    root, truth = tree
    r = _read(root)
    rows = _labels_of(r, "2-30-480x360")
    assert len(rows) == len(truth["2-30-480x360"])  # one row per frame: gaps are explicit
    gaps = [i for i, (_, a, v) in enumerate(rows) if a is None and v is None]
    assert gaps == [0, 1, 2, 10, 11]
    assert all(a is not None and v is not None for i, (_, a, v) in enumerate(rows) if i not in gaps)
    assert -5 not in [x for _, a, v in _labels_of(r, "3-30-480x360_left") for x in (a, v)]


def test_one_value_unannotated(tree):
    root, _ = tree
    path = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set" / "1-30-480x360.txt"
    lines = path.read_text().splitlines()
    lines[1] = "0.25,-5"
    path.write_text("\n".join(lines) + "\n")
    r = _read(root)
    assert r.problems == []
    t, a, v = _labels_of(r, "1-30-480x360")[0]
    assert v == pytest.approx(0.25) and a is None


def test_tables_accept_the_read(tree, tmp_path):
    root, _ = tree
    r = _read(root)
    write_manifest(tmp_path / "m.parquet", r.info, r.clips)
    write_labels(tmp_path / "l.parquet", r.labels)
    table = read_labels(tmp_path / "l.parquet")
    assert table.column("valence").null_count == 6  # 5 gaps in video 2 + frame 5 of _left


def test_annotations_folder_named_by_the_abaw_edition(tree):
    root, _ = tree
    (root / "annotations").rename(root / "6th ABAW Annotations")
    r = _read(root)
    assert len(r.clips) == 4 and r.info.params["annotations_dir"].endswith("6th ABAW Annotations/VA_Estimation_Challenge")
    r = _read(root, annotations="6th ABAW Annotations/VA_Estimation_Challenge")
    assert len(r.clips) == 4


def test_video_folders_option(tree):
    root, _ = tree
    (root / "videos" / "batch1").rename(root / "batch1")
    (root / "videos" / "batch2").rename(root / "batch2")
    r = _read(root, videos=["batch1", "batch2"])
    assert r.problems == [] and len(r.clips) == 4


# ----------------------------------------------------------------------------------------------
# hostile trees: each a Problem naming the file (and row)


def _ann(root: Path, folder: str, clip: str) -> Path:
    return root / "annotations" / "VA_Estimation_Challenge" / folder / f"{clip}.txt"


def test_annotation_with_a_bad_line(tree):
    root, _ = tree
    path = _ann(root, "Train_Set", "1-30-480x360")
    lines = path.read_text().splitlines()
    lines[4] = "0.1;0.2"
    path.write_text("\n".join(lines) + "\n")
    r = _read(root)
    [p] = r.problems
    assert (p.file, p.row, p.clip_id) == (str(path), 5, "1-30-480x360") and "'0.1;0.2'" in p.message
    assert _labels_of(r, "1-30-480x360") == []  # nothing of a file that does not parse is taken
    assert "1-30-480x360" in {c.clip_id for c in r.clips}  # the problem marks the clip


def test_annotation_with_a_wrong_header(tree):
    root, _ = tree
    path = _ann(root, "Validation_Set", "2-30-480x360")
    path.write_text("arousal,valence\n0.1,0.2\n")
    [p] = _read(root).problems
    assert (p.file, p.row, p.clip_id) == (str(path), 1, "2-30-480x360") and "valence,arousal" in p.message


def test_value_out_of_range(tree):
    root, _ = tree
    path = _ann(root, "Train_Set", "1-30-480x360")
    lines = path.read_text().splitlines()
    lines[3] = "1.5,0.2"
    path.write_text("\n".join(lines) + "\n")
    r = _read(root)
    [p] = r.problems
    assert (p.file, p.row, p.clip_id) == (str(path), 4, "1-30-480x360") and "valence 1.5 outside" in p.message
    _, a, v = _labels_of(r, "1-30-480x360")[2]
    assert v is None and a == pytest.approx(0.2)


def test_annotation_without_its_video(tree):
    root, _ = tree
    path = _ann(root, "Train_Set", "9-25-640x480_right")
    path.write_text("valence,arousal\n0.1,0.2\n")
    r = _read(root)
    [p] = r.problems
    assert (p.file, p.clip_id) == (str(path), "9-25-640x480_right") and "no video '9-25-640x480'" in p.message
    assert "9-25-640x480_right" not in {c.clip_id for c in r.clips}


def test_video_without_annotation_as_a_problem(tree):
    root, _ = tree
    r = _read(root, unlabelled_videos="problem")
    [p] = r.problems
    assert (p.file, p.clip_id) == (str(root / "videos" / "batch1" / "4-30-480x360.mp4"), "4-30-480x360")
    assert "no VA annotation file" in p.message


def test_more_lines_than_frames(tree):
    root, truth = tree
    path = _ann(root, "Train_Set", "1-30-480x360")
    n = len(truth["1-30-480x360"])
    path.write_text(path.read_text() + "0.1,0.1\n" * 40)
    r = _read(root)
    [p] = r.problems
    assert p.file == str(path) and p.row is not None and p.row > n + 1 and "past its end" in p.message
    duration = {c.clip_id: c.duration for c in r.clips}["1-30-480x360"]
    assert max(t for t, _, _ in _labels_of(r, "1-30-480x360")) <= duration + 1 / FPS


def test_unreadable_video(tree):
    root, _ = tree
    (root / "videos" / "batch1" / "1-30-480x360.mp4").write_bytes(b"not a video")
    [p] = _read(root).problems
    assert p.file.endswith("1-30-480x360.mp4") and p.clip_id == "1-30-480x360" and "cannot probe" in p.message


def test_same_clip_in_both_sets(tree):
    root, _ = tree
    shutil.copy(_ann(root, "Train_Set", "1-30-480x360"), _ann(root, "Validation_Set", "1-30-480x360"))
    r = _read(root)
    [p] = r.problems
    assert p.file == str(_ann(root, "Validation_Set", "1-30-480x360")) and "annotated again" in p.message
    assert {c.clip_id: c.partition for c in r.clips}["1-30-480x360"] == "train"


# ----------------------------------------------------------------------------------------------
# LayoutError


@pytest.mark.parametrize("part", ["annotations", "annotations/VA_Estimation_Challenge/Validation_Set",
                                  "annotations/VA_Estimation_Challenge/Train_Set", "videos"])
def test_missing_required_part(tree, part):
    root, _ = tree
    shutil.rmtree(root / part)
    with pytest.raises(LayoutError) as e:
        _read(root)
    assert str(root / part.replace("annotations", "annotations/VA_Estimation_Challenge", 1)
               if part == "annotations" else root / part) in str(e.value)
