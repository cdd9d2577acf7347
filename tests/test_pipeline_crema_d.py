"""Integration: `dvc repro` to the report on a CREMA-D tree in the corpus's published layout, built from
the three real clips (renamed to four actors, so speaker-independent splits exist), first with
speaker_random repeats, then, after an edit of the protocol alone, with leave-one-speaker-out folds —
which reruns `segment` and what follows, never the corpus or the extraction."""

import json
import shutil
import stat
import sys

import pytest
import yaml
from test_pipeline_dvc import GIT, _dvc, _ran, _run, copy_project

pytestmark = pytest.mark.integration

ACTORS = ["1001", "1002", "1003", "1004"]
EMOTIONS = {"ANG": "A", "HAP": "H", "SAD": "S"}
EXTRACTION = {"corpus", "faces", "face_embed", "resnet50", "lld", "compare", "wav2vec2", "bert", "import"}


def crema_d_tree(sample, root):
    """CREMA-D as its distribution lays it out: VideoFlash/, VideoDemographics.csv,
    processedResults/summaryTable.csv (every real clip under every actor id)."""
    (root / "VideoFlash").mkdir(parents=True)
    (root / "processedResults").mkdir()
    demo = ['"ActorID","Age","Sex","Race","Ethnicity"']
    summary = ['"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"']
    for i, actor in enumerate(ACTORS):
        demo.append(f'{actor},{30 + i},"{"Male" if i % 2 else "Female"}","Caucasian","Not Hispanic"')
        for j, (emo, vote) in enumerate(EMOTIONS.items()):
            shutil.copy(sample / "VideoFlash" / f"1001_DFA_{emo}_XX.flv", root / "VideoFlash" / f"{actor}_DFA_{emo}_XX.flv")
            summary.append(f'"{3 * i + j}","{actor}_DFA_{emo}_XX","{vote}","50","{vote}","50","{vote}","50"')
    (root / "VideoDemographics.csv").write_text("\n".join(demo) + "\n")
    (root / "processedResults" / "summaryTable.csv").write_text("\n".join(summary) + "\n")
    return root


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def crema_project(tmp_path_factory, crema_d_dir):
    base = tmp_path_factory.mktemp("crema")
    corpus = crema_d_tree(crema_d_dir, base / "CREMA-D")
    root = copy_project(base / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["corpus"] = {"name": "crema_d", "root": str(corpus)}
    params["faces"]["batch_size"] = 8
    params["segment"]["partition"] = {"protocol": "speaker_random", "repeats": 2, "devel": 0.25, "test": 0.25, "seed": 0}
    params["grid"] = {"models": ["crossmodal"], "strategies": ["standard"], "eliminate": [], "rates": {"standard": []}}
    params["train"].update({"seeds": [0], "epochs": 2, "batch_size": 4, "patience": 2})
    params["model"]["crossmodal"] = {"params": {"d_model": 32, "layers": 1, "heads": 2}}
    params["evaluate"]["conditions"] = ["all_present", "each_missing", "random_missing_grid"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))  # the style does not matter here
    _run(["git", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run([*GIT, "commit", "-qm", "project"], root)
    before = _listing(corpus)
    for p in [corpus, *corpus.rglob("*")]:  # the corpus as a licensee keeps it: read-only
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    first = _dvc(["repro"], root)
    return root, corpus, before, first


def test_crema_d_runs_to_the_report_with_speaker_random_repeats(crema_project):
    root, corpus, before, first = crema_project
    assert "report" in _ran(first)
    # CREMA-D ships no per-timestamp CSV features: the import stage writes an empty table and says so
    assert "holds no file matching" in first.stdout + first.stderr
    info = json.loads((root / "data/segments/segments.json").read_text())
    assert info["extra"]["protocol"] == "speaker_random" and info["extra"]["folds"] == 2
    results = (root / "data/evaluate/crossmodal/standard/results.csv").read_text().splitlines()
    assert results[0].startswith("model,fold,seed,") and {r.split(",")[1] for r in results[1:]} == {"0", "1"}
    assert (root / "data/models/crossmodal/standard/fold_1/seed_0/model.pt").is_file()
    html = (root / "data/report/index.html").read_text()
    assert "crema_d" in html and "crossmodal/standard" in html
    assert _listing(corpus) == before  # nothing written into or deleted from the corpus


def test_changing_only_the_protocol_reruns_from_segment(crema_project):
    root, _, _, _ = crema_project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["segment"]["partition"] = {"protocol": "leave_one_group_out", "group": "speaker", "devel": 0.34, "seed": 0}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(_dvc(["status", "--json"], root).stdout)) == {"segment"}
    ran = _ran(_dvc(["repro"], root))
    assert ran[0] == "segment" and not set(ran) & EXTRACTION and "report" in ran
    info = json.loads((root / "data/segments/segments.json").read_text())
    assert info["extra"]["protocol"] == "leave_one_group_out" and info["extra"]["folds"] == 4
    assert (root / "data/models/crossmodal/standard/fold_3/seed_0/model.pt").is_file()
    assert "Report:" in _run([sys.executable, "stages/report.py"], root).stdout
