"""benchmarks/scale.py and its synthetic corpus (benchmarks/scale_corpus.py): the generator's counts,
durations, class balance and tables against the contracts the real stages read; the disk refusal; and
a scaled-down rehearsal that runs segment → train → evaluate → report for real."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    """benchmarks/<name>.py as module `name`, without putting benchmarks/ on sys.path (its ray.py
    would shadow the ray package for every later test of this worker)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sc = _load("scale_corpus")
scale = _load("scale")

from pipeline.core.features import feature_schema, read_features  # noqa: E402
from pipeline.corpus.manifest import read_labels, read_manifest  # noqa: E402


def test_iemocap_plan_follows_003_table_1_scaled():
    plan = sc.plan_corpus({"name": "iemocap", "classes": "four"}, 0.1)
    assert len(plan.clips) == 553  # round(5,531 x 0.1)
    table = sc.figure("iemocap", "classes_by_session")
    for s in range(5):  # every session x class cell scaled: off by at most one (largest remainders)
        in_session = np.array([c.session == f"Session{s + 1}" for c in plan.clips])
        for k, name in enumerate(plan.info.classes):
            n = int((plan.class_index[in_session] == k).sum())
            assert abs(n - table[name][s] * 0.1) < 1
    assert plan.info.classes == ["neutral", "happy", "angry", "sad"]
    assert len({c.speaker for c in plan.clips}) == 10 and len({c.session for c in plan.clips}) == 5
    assert all(c.speaker[:5] == f"Ses0{c.session[-1]}" for c in plan.clips)
    d = np.array([c.duration for c in plan.clips])
    assert abs(d.mean() - 4.5) < 0.05 and d.min() >= 0.6 and d.max() <= 34.1
    assert [c.clip_id for c in plan.clips] == sorted(c.clip_id for c in plan.clips)
    assert all(c.label == plan.info.classes[k] for c, k in zip(plan.clips, plan.class_index))


def test_crema_d_plan_keeps_the_actors_and_the_class_balance():
    plan = sc.plan_corpus({"name": "crema_d", "label_source": "intended"}, 0.25)
    assert len(plan.clips) == round(7442 * 0.25)
    assert len({c.speaker for c in plan.clips}) == 91
    intended = {"angry": 1271, "disgust": 1271, "fearful": 1271, "happy": 1271, "neutral": 1087, "sad": 1271}
    for name, n in plan.figures()["classes"].items():
        assert abs(n - intended[name] * 0.25) < 1, name
    voted = sc.plan_corpus({"name": "crema_d", "label_source": "multimodal_vote"}, 0.25).figures()["classes"]
    assert voted["sad"] == 168 and abs(voted["neutral"] - 2071 * 0.25) < 1  # 001 §4.1's consensus labels
    untied = sc.plan_corpus({"name": "crema_d", "label_source": "multimodal_vote", "on_error": "skip"}, 1.0)
    assert len(untied.clips) == 7022 and untied.figures()["classes"]["sad"] == 589  # the tied votes left out
    d = np.array([c.duration for c in plan.clips])
    assert abs(d.mean() - 2.54) < 0.03 and d.min() >= 1.27 and d.max() <= 5.01


def test_aff_wild2_plan_and_its_per_frame_labels(tmp_path):
    plan = sc.plan_corpus({"name": "aff_wild2"}, 0.02)
    assert plan.figures()["partitions"] == {"devel": 1, "train": 7}  # 350 / 70 videos x 0.02
    assert plan.task == "regression" and plan.info.classes == []
    sc.write_corpus(plan, tmp_path / "manifest.parquet", tmp_path / "labels.parquet")
    info, clips = read_manifest(tmp_path / "manifest.parquet")
    assert info.name == "aff_wild2" and [c.clip_id for c in clips] == [c.clip_id for c in plan.clips]
    labels = read_labels(tmp_path / "labels.parquet")
    assert labels.num_rows == sum(int(round(c.duration * 30)) for c in plan.clips)  # one row per frame
    va = np.stack([labels.column(k).to_numpy() for k in ("valence", "arousal")])
    assert va.min() >= -1 and va.max() <= 1 and va.std() > 0.05


def _tiny_plan():
    return sc.plan_corpus({"name": "iemocap", "classes": "four"}, 0.01)


@pytest.fixture(scope="module")
def params_003(tmp_path_factory) -> Path:
    """This repository's params.yaml with the 003-iemocap preset applied."""
    import shutil

    from pipeline.presets import apply_preset

    params = tmp_path_factory.mktemp("params") / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    apply_preset("003-iemocap", params)
    return params


@pytest.mark.parametrize("feature", ["resnet50", "bert"])
def test_feature_tables_follow_the_contract_and_carry_the_class(tmp_path, params_003, feature):
    spec = sc.feature_spec(feature, params_003)
    assert (spec.dim, spec.rate_hz) == ((512, 5.0) if feature == "resnet50" else (768, None))  # 003 §5.2
    plan = _tiny_plan()
    path = tmp_path / f"{feature}.parquet"
    rows = sc.write_features(plan, spec, path)
    written, contract = pq.read_schema(path), feature_schema(spec.meta())
    assert written.names == contract.names and written.metadata == contract.metadata
    for f in contract:  # Parquet names a list's child 'element' on reading back; the types are the contract's
        got = written.field(f.name)
        assert got.nullable == f.nullable and (got.type == f.type or got.type.list_size == f.type.list_size
                                               and got.type.value_type == f.type.value_type), f.name
    meta, clips = read_features(path)
    assert meta.name == feature and meta.dim == spec.dim and not meta.pretrained
    assert list(clips) == [c.clip_id for c in plan.clips] and rows == sc.feature_rows(plan, spec)
    for c in plan.clips[:5]:
        got = clips[c.clip_id]
        assert len(got.t) == spec.rows(c, plan.words_per_s)
        assert np.all(np.diff(got.t) > 0) and got.t.max() < c.duration
        assert not got.values[~got.present].any()
        if feature == "bert":
            assert got.span[0, 0] == 0 and abs(got.span[-1, 1] - c.duration) < 1e-9
    # the weak class signal: rows of class k lie further along direction k than the other classes' rows
    u = sc._directions(feature, 4, spec.dim, plan.seed)
    proj = {k: np.concatenate([clips[c.clip_id].values[clips[c.clip_id].present] @ u[k]
                               for c, j in zip(plan.clips, plan.class_index) if j == k]) for k in range(4)}
    other = {k: np.concatenate([clips[c.clip_id].values[clips[c.clip_id].present] @ u[k]
                                for c, j in zip(plan.clips, plan.class_index) if j != k]) for k in range(4)}
    for k in range(4):
        assert proj[k].mean() - other[k].mean() == pytest.approx(sc.SIGNAL[0], abs=0.25)


def test_tables_are_written_in_bounded_chunks(tmp_path, params_003, monkeypatch):
    """Memory flat in the corpus size: no write hands the Parquet writer more than a chunk of clips."""
    spec = sc.feature_spec("wav2vec2", params_003)
    monkeypatch.setattr(sc, "CHUNK_VALUES", 200_000)
    sizes = []
    real = sc.TableWriter.write
    monkeypatch.setattr(sc.TableWriter, "write", lambda self, t: (sizes.append(len(t)), real(self, t))[1])
    plan = _tiny_plan()
    sc.write_features(plan, spec, tmp_path / "w.parquet")
    longest = max(spec.rows(c, 0) for c in plan.clips)
    assert len(sizes) > 3 and max(sizes) * spec.dim <= 200_000 + longest * spec.dim


def test_disk_check_refuses_with_the_numbers(tmp_path):
    need = {"features": 46e9, "segments_min": 47e9, "segments_padded": 90e9}
    free = __import__("shutil").disk_usage(tmp_path).free
    if free > 95e9:
        pytest.skip("more free disk than the example needs")
    with pytest.raises(scale.Refused) as e:
        scale.check_disk("002-aff-wild2", 1.0, tmp_path, need)
    line = str(e.value)
    assert "\n" not in line and "cannot fit" in line and "46.0 GB" in line and "47.0 GB" in line
    assert scale.check_disk("x", 0.01, tmp_path, {"features": 1e6, "segments_min": 1e6, "segments_padded": 2e6})


def test_rehearsal_runs_every_stage_and_reports_them(tmp_path):
    """The cheapest rehearsal through segment → train → evaluate → report: CREMA-D at 1 % (70 clips),
    one speaker split, one family, one optimiser step per run."""
    results = tmp_path / "results"
    env = {**os.environ, "MER_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--preset", "001-crema-d", "--fraction", "0.01",
           "--steps", "1", "--seeds", "1", "--repeats", "1", "--family", "crossmodal-standard",
           "--workdir", str(tmp_path / "w"), "--results", str(results)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["ok"] and result["preset"] == "001-crema-d" and result["fraction"] == 0.01
    assert list(result["stages"]) == ["segment", "train@crossmodal-standard", "evaluate@crossmodal-standard", "report"]
    for name, s in result["stages"].items():
        assert s["ok"] and s["wall_s"] > 0 and 50 < s["peak_rss_mb"] < 20_000, (name, s)
        assert 50 < s["peak_tree_pss_mb"] < 20_000, (name, s)  # the stage's processes together, sampled
        assert s["bytes_written"] > 0, name
    assert result["corpus"]["clips"] in (70, 74)  # 7,022 (ties left out) or 7,442 clips, by the preset's labels
    assert result["corpus"]["features"]["vggface"]["dim"] == 4096
    assert result["cuts"]["repeats"] == {"run": 1, "preset": 20}
    x = result["train_extrapolated"]
    assert x["runs_measured"] == 1 and x["runs_full"] == 20 and x["epochs"] == [25]
    assert x["full_s"] > x["outside_loop_s"] > 0
    assert (results / "scale_001-crema-d_0.01.json").read_text() == lines[0] + "\n"
    assert not (tmp_path / "w").exists()  # the throwaway project is gone without --keep


def test_training_time_is_extrapolated_from_the_capped_runs(monkeypatch):
    runs = [{"epochs": 10, "steps_per_epoch": 100, "steps": 2, "steps_s": 4.0, "devel_s": 5.0}]
    stages = {"segment": {"wall_s": 50.0}, "train@m-s": {"wall_s": 20.0}}
    x = scale.extrapolate(runs, stages, factor=3, fraction=0.25)
    # 10 epochs x (100 steps x 2 s + 5 s devel) x 3 cut away, plus the 20 - 9 s outside the loop once
    assert x["full_s"] == 10 * (100 * 2 + 5) * 3 + 11 and x["runs_full"] == 3 and x["s_per_step_mean"] == 2
    assert x["full_size_h"] == round((10 * (100 * 2 + 5) * 3 * 4 + 11) / 3600, 2)  # 4x the clips at full size
    from pipeline.train.logs import benchmark_max_steps

    monkeypatch.delenv("MER_MAX_STEPS", raising=False)
    assert benchmark_max_steps() is None  # the pipeline's own runs: the hook is off
    monkeypatch.setenv("MER_MAX_STEPS", "3")
    assert benchmark_max_steps() == 3
