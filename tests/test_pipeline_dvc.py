"""Integration: real `dvc repro` over a temporary copy of the repository on a tiny demo corpus, and the
DVC contract of a lab: clone A runs and pushes to a local directory remote; clone B pulls and runs
nothing; clone C pulls only the corpus and features and runs `segment` and what follows; edits rerun
exactly the stages they touch; `dvc exp run -S` on one strategy reruns only its run family."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.features import read_features
from pipeline.corpus.manifest import read_manifest
from pipeline.segment.contract import load_segments

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
COPY = [
    "dvc.yaml", "params.yaml", "pyproject.toml", "pipeline", "stages", "weights", "metrics", ".dvc/config", ".dvcignore",
    ".gitignore",
]
EXTRACTION = ["corpus", "faces", "face_embed", "resnet50", "lld", "compare", "wav2vec2", "bert", "import"]
FAMILIES = ["crossmodal-standard", "crossmodal-clip_zero"]
ALL_STAGES = EXTRACTION + [
    "segment", *(f"train@{f}" for f in FAMILIES), "importance@crossmodal", "train_eliminate@crossmodal",
    *(f"evaluate@{f}" for f in FAMILIES), "evaluate_eliminate@crossmodal", "report",
]

TINY = {
    "corpus": {"speakers": 5, "clips_per_speaker": 2, "seconds": 2.0, "fps": 10, "width": 200, "height": 160},
    "faces": {"batch_size": 8},
    "face_embed": {"batch_size": 8},
    "resnet50": {"batch_size": 8},
    "grid": {"models": ["crossmodal"], "strategies": ["standard", "clip_zero"], "eliminate": ["crossmodal"],
             "rates": {"standard": [], "clip_zero": [0.8]}},  # one more training rate: grid.rates through DVC
    "train": {"seeds": [0, 1], "epochs": 2, "batch_size": 4, "patience": 2},
    "model": {"crossmodal": {"params": {"d_model": 32, "layers": 1, "heads": 2}}},
    "evaluate": {"conditions": ["all_present", "each_missing", "clip_zero_grid", "random_missing_grid"]},
}
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]


def _run(cmd, cwd, check=True):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["HF_HUB_OFFLINE"] = "1"
    env["MER_CACHE_DIR"] = str(Path(cwd) / "data" / "cache")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _dvc(args, cwd, check=True):
    return _run([sys.executable, "-m", "dvc", *args], cwd, check)


def _ran(proc) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)


def _git_dirty(root) -> str:
    return _run(["git", "status", "--porcelain"], root).stdout


def set_params(path: Path, sections: dict) -> None:
    """Update params.yaml through DVC's own YAML round trip, so the file keeps the project's style (as
    `dvc exp run -S` would leave it)."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(path) as data:
        for section, values in sections.items():
            data[section].update(values)


def _clone(src: Path, dst: Path, remote: Path) -> Path:
    _run(["git", "clone", "-q", str(src), str(dst)], dst.parent)
    _dvc(["remote", "modify", "--local", "storage", "url", str(remote)], dst)
    return dst


def copy_project(root: Path) -> Path:
    """The project's files a user's clone holds (no data/, no .venv) copied to `root`."""
    root.mkdir(parents=True)
    for name in COPY:
        src, dst = REPO / name, root / name
        if not src.exists():  # metrics/ holds only committed results: absent before the first run
            dst.mkdir(parents=True, exist_ok=True)
            continue
        if src.is_dir():
            ignore = ("__pycache__", "*.json") if name == "metrics" else ("__pycache__",)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*ignore))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return root


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Clone A: the project as a user has it (a git repository), run once, committed, pushed."""
    base = tmp_path_factory.mktemp("lab")
    root, remote = base / "a", base / "remote"
    copy_project(root)
    set_params(root / "params.yaml", TINY)
    _run(["git", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run([*GIT, "commit", "-qm", "project"], root)
    _dvc(["remote", "modify", "--local", "storage", "url", str(remote)], root)
    first = _dvc(["repro"], root)
    _run(["git", "add", "-A"], root)  # dvc.lock and the headline metrics, as a user commits a run
    _run([*GIT, "commit", "-qm", "run"], root)
    _dvc(["push"], root)
    return root, remote, first


def test_first_repro_runs_every_stage_once_in_dag_order(lab):
    _, _, first = lab
    ran = _ran(first)
    assert sorted(ran) == sorted(ALL_STAGES)
    order = {s: i for i, s in enumerate(ran)}
    assert all(order[s] < order["segment"] for s in EXTRACTION)
    for f in FAMILIES:
        assert order["segment"] < order[f"train@{f}"] < order[f"evaluate@{f}"] < order["report"]
    assert order["train@crossmodal-standard"] < order["importance@crossmodal"] < order["train_eliminate@crossmodal"]


def test_outputs_follow_their_contracts(lab):
    root, _, _ = lab
    info, clips = read_manifest(root / "data/corpus/manifest.parquet")
    assert len(clips) == 10 and info.classes == ["neutral", "happy", "angry", "sad"]
    # every extractor through `dvc repro`: (dimension, rate); wav2vec2 is the demo's random CNN
    # (conv_dim 64; 512 for base), bert the shipped MiniLM (384; 768 for bert-base)
    expected = {
        "vggface": (4096, 5.0), "resnet50": (2048, 5.0), "egemaps": (25, 100.0), "compare": (130, 100.0),
        "wav2vec2": (64, 50.0), "bert": (384, None), "import": (3, 2.0),
    }
    for name, (dim, rate) in expected.items():
        meta, rows = read_features(root / f"data/features/{name}.parquet")
        assert (meta.dim, meta.rate_hz) == (dim, rate), name
        assert set(rows) <= {c.clip_id for c in clips}
        assert sum(len(r.t) for r in rows.values()) > 0, name
        assert str(REPO) not in meta.to_json() and str(root) not in meta.to_json(), name
    meta, _ = read_features(root / "data/features/vggface.parquet")
    assert meta.pretrained is False  # demo default: weights: random
    seg = load_segments(root / "data/segments")
    assert set(seg.modalities) == {"face", "acoustic", "speech", "text"}
    assert set(seg.partition) == {"train", "devel", "test"}
    for family in ("crossmodal/standard", "crossmodal/clip_zero", "crossmodal/eliminate"):
        assert (root / "data/models" / family / "seed_1/model.pt").is_file(), family
        assert (root / "data/evaluate" / family / "results.csv").is_file(), family
    # grid.rates: clip_zero also trained at 0.8 in its own stage; the matrix has both training rates
    assert (root / "data/models/crossmodal/clip_zero/rate_0.8/seed_1/model.pt").is_file()
    import polars as pl

    matrix = pl.read_csv(root / "data/evaluate/crossmodal/clip_zero/train_test.csv")
    assert sorted(matrix["train_rate"].unique().to_list()) == [0.5, 0.8]


def test_report_shows_every_condition_and_random_backbones(lab):
    root, _, _ = lab
    html = (root / "data/report/index.html").read_text()
    assert "data:image/png;base64," in html
    for modality in ["face", "acoustic", "speech", "text"]:
        assert f"{modality} missing" in html
    assert "crossmodal/standard" in html and "crossmodal/eliminate" in html and "crossmodal/clip_zero" in html
    assert "RANDOM" in html and "VGG" in html
    assert (root / "data/report/report.md").exists()


def test_headline_metrics_are_small_and_compare_across_commits(lab):
    root, _, _ = lab
    shown = json.loads(_dvc(["metrics", "show", "--json"], root).stdout)
    files = json.dumps(shown)
    for family in FAMILIES + ["crossmodal-eliminate"]:
        assert f"metrics/{family}.json" in files
    head = json.loads((root / "metrics/crossmodal-standard.json").read_text())
    assert set(head) == {"macro_f1"}
    # docs/robustness.md: relative robustness over the random-missing curve; the mechanisms' auc_<family>
    # only where their grids ran (not in TINY's conditions)
    assert set(head["macro_f1"]) == {"all_present", "no_face", "no_acoustic", "no_speech", "no_text", "auilc", "relative_robustness"}
    # the metrics are committed: `dvc metrics diff` against the commit has nothing to report
    assert json.loads(_dvc(["metrics", "diff", "HEAD", "--json"], root).stdout) == {}


def test_plots_are_images_that_render_offline(lab):
    root, _, _ = lab
    out = root / "plots_page"
    _dvc(["plots", "show", "-o", str(out)], root)
    page = (out / "index.html").read_text()
    assert "<img" in page and "http" not in page.replace("http-equiv", "")  # nothing fetched from a CDN


def test_predict_on_a_real_crema_d_clip(lab, crema_d_dir):
    root, _, _ = lab
    clip = crema_d_dir / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    out = _run([sys.executable, "-m", "pipeline.cli", "predict", str(clip), "--csv", "prediction.csv"], root)
    assert "1001_DFA_ANG_XX.flv:" in out.stdout and "text missing" in out.stdout  # no transcript given
    rows = (root / "prediction.csv").read_text().splitlines()
    assert rows[0] == "clip,class,probability" and len(rows) == 5
    assert sum(float(r.split(",")[2]) for r in rows[1:]) == pytest.approx(1.0, abs=1e-4)
    (root / "prediction.csv").unlink()


def test_clone_that_pulls_runs_nothing_and_stays_clean(lab, tmp_path):
    root, remote, _ = lab
    b = _clone(root, tmp_path / "b", remote)
    _dvc(["pull"], b)
    assert _ran(_dvc(["repro"], b)) == []
    assert _git_dirty(b) == ""


def test_clone_with_only_the_features_runs_segment_and_after(lab, tmp_path, monkeypatch):
    """...through `mer repro`, two stages at once, each on up to two workers (this process, and a helper
    while its jobserver has a core free; the lab ran one stage at a time on one): the same bytes."""
    root, remote, _ = lab
    c = _clone(root, tmp_path / "c", remote)
    _dvc(["pull", *EXTRACTION], c)
    monkeypatch.setenv("MER_WORKERS", "2")
    out = _run([sys.executable, "-m", "pipeline.cli", "repro"], c)
    assert "2 at a time (MER_JOBS), each on up to 2 workers" in out.stdout
    ran = _ran(out)  # each stage's DVC output, printed as it ends
    assert ran[0] == "segment" and not set(ran) & set(EXTRACTION)
    assert sorted(ran) == sorted(set(ALL_STAGES) - set(EXTRACTION))
    started = re.findall(r"start (\S+)", out.stdout)
    assert started.index("train@crossmodal-standard") < started.index("train@crossmodal-clip_zero")  # longer chain first
    assert "workers: this process and up to 1 helper process while a core is free" in out.stdout  # jobserver
    assert (c / "logs/repro/segment.log").read_text().count("Running stage 'segment'") == 1
    # the same code and data give the same bytes: dvc.lock and the committed metrics are unchanged
    assert _git_dirty(c) == ""


def test_clone_extracting_on_two_workers_gives_the_same_features(lab, tmp_path, monkeypatch):
    """Every extraction stage on two workers (the lab ran on one) from the pulled corpus: dvc.lock's
    entries, so every table's bytes, unchanged. The face embedder's measured precision is the lab's
    (its per-machine decision file), so the two runs compare the workers, not two timings."""
    root, remote, _ = lab
    d = _clone(root, tmp_path / "d", remote)
    _dvc(["pull", "corpus"], d)
    monkeypatch.setenv("MER_WORKERS", "2")
    monkeypatch.setenv("MER_PRECISION_CACHE", str(root / "data" / "cache" / "precision.json"))
    ran = _ran(_dvc(["repro", *EXTRACTION], d))
    assert set(ran) == set(EXTRACTION) - {"corpus"}
    assert _git_dirty(d) == ""


def test_forced_extraction_rerun_reads_every_clip_from_the_cache(lab):
    root, _, _ = lab
    before = (root / "data/features/egemaps.parquet").read_bytes()
    out = _dvc(["repro", "-f", "-s", "lld"], root)
    assert _ran(out) == ["lld"]
    assert "egemaps: 10 clips (0 extracted, 10 from the cache" in out.stdout + out.stderr
    assert (root / "data/features/egemaps.parquet").read_bytes() == before


def _changed_stages(root) -> set[str]:
    return set(json.loads(_dvc(["status", "--json"], root).stdout))


def test_status_names_the_stages_an_edit_touches(lab):
    root, _, _ = lab
    assert _changed_stages(root) == set()
    params_text = (root / "params.yaml").read_text()
    params = yaml.safe_load(params_text)
    try:
        # segment's modalities: only segment (what follows reruns once its output changes)
        params["segment"]["modalities"]["face"] = "resnet50"
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert _changed_stages(root) == {"segment"}
        (root / "params.yaml").write_text(params_text)
        # new weights for VGG-Face: face_embed, not resnet50
        (root / "weights/vggface/vgg_face_dag.pth").write_bytes(b"new weights")
        assert _changed_stages(root) == {"face_embed"}
        (root / "weights/vggface/vgg_face_dag.pth").unlink()
        # one strategy's parameters: that strategy's run family only
        params["segment"]["modalities"]["face"] = "vggface"
        params["strategy"]["clip_zero"]["p_clip"] = 0.3
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert _changed_stages(root) == {"train@crossmodal-clip_zero"}
    finally:
        (root / "params.yaml").write_text(params_text)
    assert _changed_stages(root) == set()


def test_experiment_on_one_strategy_reruns_its_family_and_compares(lab):
    root, _, _ = lab
    before = (root / "params.yaml").read_text()
    out = _dvc(["exp", "run", "-S", "strategy.clip_zero.p_clip=0.3"], root)
    assert sorted(_ran(out)) == ["evaluate@crossmodal-clip_zero", "report", "train@crossmodal-clip_zero"]
    # DVC's YAML round trip rewrote exactly the one line
    after = (root / "params.yaml").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 1
    assert "p_clip: 0.3" in changed[0][1]
    # `dvc exp show` lists the experiment beside the commit, with both runs' params and headline metrics
    shown = json.loads(_dvc(["exp", "show", "--json"], root).stdout)
    p_clips, headlines = set(), []

    def walk(node):
        if isinstance(node, dict):
            params = node.get("params", {}).get("params.yaml", {}).get("data", {})
            if "strategy" in params:
                p_clips.add(params["strategy"]["clip_zero"]["p_clip"])
            metric = node.get("metrics", {}).get("metrics/crossmodal-clip_zero.json", {}).get("data")
            if metric:
                headlines.append(metric["macro_f1"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(shown)
    assert {0.5, 0.3} <= p_clips
    assert len(headlines) >= 2 and all({"all_present", "no_face", "auilc"} <= set(h) for h in headlines)


def _stage_main(name: str):
    """A stage script's main(), imported from stages/ (the code DVC runs, without DVC around it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run_preset_stages(root: Path, preset) -> None:
    """segment → train / importance / evaluate of every run family of the preset's grid → report, in
    dvc.yaml's order, each stage's own main() in `root` (its params.yaml, the lab's extracted features)."""
    grid = yaml.safe_load((root / "params.yaml").read_text())["grid"]
    _stage_main("segment")()
    train, evaluate = _stage_main("train"), _stage_main("evaluate")
    for model in grid["models"]:
        for strategy in grid["strategies"]:
            train(["--model", model, "--strategy", strategy])
            evaluate(["--model", model, "--strategy", strategy])
    for model in grid.get("eliminate") or []:
        _stage_main("importance")(["--model", model])
        train(["--model", model, "--strategy", "eliminate"])
        evaluate(["--model", model, "--strategy", "eliminate"])
    assert _stage_main("report")() == 0


@pytest.mark.parametrize("name", ["000-ulm-tsst-arousal", "001-crema-d", "002-aff-wild2", "003-iemocap", "004-aff-wild2"])
def test_preset_runs_scaled_down_on_the_demo(lab, tmp_path, monkeypatch, name):
    """Every paper's preset, with its demo overlay (`mer preset apply <name> --demo`), runs every stage
    after extraction on the lab's demo features, and the report prints the paper's numbers beside ours."""
    from pipeline.presets import apply_preset, load_preset

    root = copy_project(tmp_path / "p")
    (root / "data").mkdir()
    for part in ("corpus", "features"):
        os.symlink(lab[0] / "data" / part, root / "data" / part)
    apply_preset(name, root / "params.yaml", demo=True)
    preset = load_preset(name)
    monkeypatch.chdir(root)
    _run_preset_stages(root, preset)
    segments = load_segments(root / "data" / "segments")
    assert segments.layout == yaml.safe_load((root / "params.yaml").read_text())["segment"]["layout"]
    for p in preset.published:
        if p.strategy != "eliminate" or p.model in (preset.params["grid"].get("eliminate") or []):
            assert (root / "metrics" / f"{p.model}-{p.strategy}.json").exists(), p
    page = (root / "data" / "report" / "index.html").read_text()
    assert preset.published[0].source in page
