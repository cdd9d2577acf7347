"""Integration: real `dvc repro` over a temporary copy of the repository on a tiny demo corpus."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.corpus.manifest import read_manifest
from pipeline.segments import load_segments
from pipeline.store import read_features

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
COPY = [
    "dvc.yaml", "params.yaml", "pyproject.toml", "pipeline", "stages", ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore",
]
ALL_STAGES = [
    "corpus", "faces", "face_embed", "resnet50", "lld", "compare", "wav2vec2", "bert", "import", "segment",
    "train", "importance", "train_eliminate", "evaluate", "report",
]

TINY = {
    "corpus": {"speakers": 5, "clips_per_speaker": 2, "seconds": 2.0, "fps": 10, "width": 200, "height": 160},
    "faces": {"batch_size": 8},
    "face_embed": {"batch_size": 8},
    "resnet50": {"batch_size": 8},
    "train": {
        "models": ["crossmodal"], "strategies": ["standard", "eliminate"], "seeds": [0, 1], "epochs": 2,
        "batch_size": 4, "patience": 2, "model_train": {}, "strategy_params": {},
        "model_params": {"crossmodal": {"d_model": 32, "layers": 1, "heads": 2}},
    },
    "evaluate": {"conditions": ["all_present", "each_missing", "clip_zero_grid"]},
}


def _run(cmd, cwd, check=True):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in COPY:
        src = REPO / name
        dst = root / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], root)
    _run(["git", "add", "-A"], root)  # a project as users have it: a repository with a commit
    _run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "project"], root)
    first = _run([sys.executable, "-m", "dvc", "repro"], root)
    return root, first.stdout + first.stderr


def test_first_repro_runs_every_stage_in_order(project):
    _, output = project
    assert _ran(output) == ALL_STAGES


def test_outputs_follow_their_contracts(project):
    root, _ = project
    info, clips = read_manifest(root / "data/corpus/manifest.parquet")
    assert len(clips) == 10 and info.classes == ["neutral", "happy", "angry", "sad"]
    # every extractor of issue 3 through `dvc repro`: (dimension, rate); wav2vec2 is the demo's random
    # CNN (conv_dim 64; 512 for base), bert the shipped MiniLM (384; 768 for bert-base)
    expected = {
        "vggface": (4096, 5.0), "resnet50": (2048, 5.0), "egemaps": (25, 100.0), "compare": (130, 100.0),
        "wav2vec2": (64, 50.0), "bert": (384, None), "import": (3, 2.0),
    }
    for name, (dim, rate) in expected.items():
        meta, rows = read_features(root / f"data/features/{name}.parquet")
        assert (meta.dim, meta.rate_hz) == (dim, rate), name
        assert set(rows) <= {c.clip_id for c in clips}
        assert sum(len(r.t) for r in rows.values()) > 0, name
        # provenance names models by content, not by this machine's paths: a clone elsewhere (or
        # `dvc pull` on another machine) gets the same tables and does not rerun what follows
        assert str(REPO) not in meta.to_json() and str(root) not in meta.to_json(), name
    meta, _ = read_features(root / "data/features/vggface.parquet")
    assert meta.pretrained is False  # demo default: weights: random
    seg = load_segments(root / "data/segments")
    assert set(seg.modalities) == {"face", "acoustic", "speech", "text"}
    assert set(seg.partition) == {"train", "devel", "test"}


def test_report_shows_every_condition_and_random_backbones(project):
    root, _ = project
    html = (root / "data/report/index.html").read_text()
    assert "data:image/png;base64," in html
    for modality in ["face", "acoustic", "speech", "text"]:
        assert f"{modality} missing" in html
    assert "crossmodal/standard" in html and "crossmodal/eliminate" in html
    assert "RANDOM" in html and "VGG" in html
    assert (root / "data/report/report.md").exists()


def test_metrics_and_plots_commands_work(project):
    root, _ = project
    metrics = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], root).stdout
    data = json.loads(metrics)
    assert "data/metrics/evaluate.json" in json.dumps(data)
    plots = json.loads(_run([sys.executable, "-m", "dvc", "plots", "show", "--json"], root).stdout)["data"]
    assert "data/evaluate/conditions.csv" in plots
    # robustness curves: one plot per family and modality, one line (colour) per run
    curve = plots["data/evaluate/curves/clip_zero_face.csv"][0]["content"]
    assert curve["encoding"]["color"]["field"] == "run"
    assert {float(v["level"]) for v in curve["data"]["values"]} == {0.0, 0.3, 0.5, 0.7, 1.0}


def test_predict_on_a_real_crema_d_clip(project, crema_d_dir):
    root, _ = project
    clip = crema_d_dir / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    out = _run([sys.executable, "-m", "pipeline.cli", "predict", str(clip), "--csv", "prediction.csv"], root)
    assert "1001_DFA_ANG_XX.flv:" in out.stdout and "text missing" in out.stdout  # no transcript given
    rows = (root / "prediction.csv").read_text().splitlines()
    assert rows[0] == "clip,class,probability" and len(rows) == 5
    assert sum(float(r.split(",")[2]) for r in rows[1:]) == pytest.approx(1.0, abs=1e-4)


def test_forced_extraction_rerun_reads_every_clip_from_the_cache(project):
    root, _ = project
    before = (root / "data/features/egemaps.parquet").read_bytes()
    out = _run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "lld"], root)
    assert _ran(out.stdout + out.stderr) == ["lld"]
    assert "egemaps: 10 clips (0 extracted, 10 from the cache" in out.stdout + out.stderr
    assert (root / "data/features/egemaps.parquet").read_bytes() == before


def test_second_repro_runs_nothing(project):
    root, _ = project
    out = _run([sys.executable, "-m", "dvc", "repro"], root)
    assert _ran(out.stdout + out.stderr) == []
    status = _run([sys.executable, "-m", "dvc", "status"], root).stdout
    assert "up to date" in status


def test_editing_train_reruns_only_train_evaluate_report(project):
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout
    # the two stages that read `train`; downstream stages follow once their inputs change
    assert set(json.loads(status)) == {"train", "train_eliminate"}
    out = _run([sys.executable, "-m", "dvc", "repro"], root)
    assert _ran(out.stdout + out.stderr) == ["train", "importance", "train_eliminate", "evaluate", "report"]
