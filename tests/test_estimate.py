"""`mer estimate` (pipeline/estimate/): the corpus's size from a manifest or its known size, the CPU
kind, figures from a fake rates table, the rehearsal's lines, the does-not-fit lines, the CLI's JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import pipeline.estimate as est
from pipeline import cli
from pipeline.corpus.manifest import Clip, CorpusInfo, write_manifest
from pipeline.estimate import after_extraction as est_after
from pipeline.estimate import shapes as est_shapes

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

KIND = "x86_64-avx512_bf16"
RATES = {"kinds": {KIND: {
    "extract": {
        "faces": {"rtf": 0.4, "startup_s": 3.0, "faces_rate_hz": 5.0, "frame_pixels": 320 * 240, "bytes_per_step": 10_000,
                  "peak_rss_mb": 1400.0},
        "vggface": {"rtf": 0.5, "startup_s": 5.0, "faces_rate_hz": 5.0, "config": ""},
        "egemaps": {"rtf": 0.1, "startup_s": 2.0},
    },
    "train_step_s": {"crossmodal": {"s": 0.05, "batch": 16, "steps": 20}},
}}}
MB = 2**20


def machine(ram_gb: float = 24, disk_gb: float = 100, kind: str = KIND) -> est.Machine:
    return est.Machine(kind, int(ram_gb * 2**30), int(disk_gb * 2**30), "/tmp")


def demo_params() -> dict:
    """params.yaml with the settings these tests count on pinned (others edit the file's defaults)."""
    params = est.load_params(REPO / "params.yaml")
    params["corpus"] = {"name": "demo", "speakers": 12, "clips_per_speaker": 8, "seconds": 4.0, "width": 320, "height": 240}
    params["faces"].update(rate_hz=5.0, crop_size=224, downscale=None)
    params["segment"].update(layout="aligned", rate_hz=5.0, max_steps=64,
                             modalities={"face": "vggface", "acoustic": "egemaps", "speech": "wav2vec2", "text": "bert"},
                             partition={"protocol": "corpus", "devel": 0.2, "test": 0.2})
    params["grid"] = {"models": ["crossmodal", "auxformer"], "strategies": ["standard", "clip_zero"], "eliminate": [],
                      "rates": {"standard": [], "clip_zero": [0.2, 0.8]}}
    params["train"].update(epochs=40, batch_size=16, seeds=[0, 1, 2], lr_grid=None,
                           modalities=["face", "acoustic", "speech", "text"], task="classification")
    params["model"] = {"crossmodal": {"params": {"d_model": 128}}, "auxformer": {"train": {"batch_size": 32, "epochs": 25}}}
    return params


def only(stages, name):
    return next(s for s in stages if s.stage == name)


def test_cpu_kind_reads_the_flags_that_change_the_kernels():
    flags = "flags\t\t: fpu sse2 avx avx2 fma"
    assert est.cpu_kind(flags, "x86_64") == "x86_64-avx2"
    assert est.cpu_kind(flags + " avx512f avx512bw", "x86_64") == "x86_64-avx512f"
    assert est.cpu_kind(flags + " avx512f avx512_bf16", "x86_64") == "x86_64-avx512_bf16"
    assert est.cpu_kind(flags + " avx512f avx512_bf16 amx_bf16 amx_tile", "x86_64") == "x86_64-amx"
    assert est.cpu_kind("", "aarch64") == "aarch64-baseline"
    kinds = ["x86_64-avx2", "x86_64-amx"]
    assert est.nearest_kind("x86_64-amx", kinds) == "x86_64-amx"
    assert est.nearest_kind("x86_64-avx512_bf16", kinds) == "x86_64-amx"  # one level away vs two
    assert est.nearest_kind("x86_64-avx512f", kinds) == "x86_64-avx2"  # a tie goes to the slower kind
    assert est.nearest_kind("aarch64-baseline", kinds) in kinds
    assert est.nearest_kind("x86_64-amx", []) is None


def test_corpus_size_from_the_manifest_reads_its_durations(tmp_path):
    clips = [Clip(f"c{i}", f"s{i % 3}", f"m{i}.mp4", duration=d) for i, d in enumerate([2.0, 3.0, 7.0, 4.0])]
    manifest = tmp_path / "manifest.parquet"
    write_manifest(manifest, CorpusInfo("crema_d", []), clips)
    size = est.corpus_size({"corpus": {"name": "crema_d"}}, manifest)
    assert (size.clips, size.media_s, size.max_clip_s, size.speakers, size.sessions) == (4, 16.0, 7.0, 3, None)
    assert "manifest" in size.source
    # a manifest of another corpus (an earlier run) is not this corpus's size: the known size is
    size = est.corpus_size({"corpus": {"name": "iemocap", "classes": "four"}}, manifest)
    assert size.clips == 5531 and size.media_s == pytest.approx(5531 * 4.5) and size.sessions == 5
    # --clips overrides the count, keeping the mean duration
    size = est.corpus_size({"corpus": {"name": "crema_d"}}, tmp_path / "none.parquet", clips=100)
    assert size.clips == 100 and size.media_s == pytest.approx(100 * 2.6)


def test_a_corpus_of_unknown_size_needs_clips():
    with pytest.raises(est.EstimateError, match="pass --clips"):
        est.corpus_size({"corpus": {"name": "manifest"}}, None)
    size = est.corpus_size({"corpus": {"name": "manifest"}}, None, clips=50, mean_seconds=3.0)
    assert size.media_s == 150.0


def test_demo_figures_from_the_rates_table():
    params = demo_params()
    size = est.corpus_size(params, None)
    assert (size.clips, size.media_s) == (96, 384.0)
    e = est.estimate(params, size, RATES, machine(), stage_names=["faces", "face_embed", "lld", "compare", "segment", "train"])
    faces = only(e.stages, "faces")
    assert faces.cpu_s == pytest.approx(0.4 * 384 + 3.0)
    assert faces.disk_bytes == pytest.approx(384 * 5 * 10_000)
    crops_mb = 4.0 * 5 * 224 * 224 * 3 / MB  # the longest clip's crops held at once
    assert faces.peak_mb == pytest.approx(1400 + crops_mb)
    vgg = only(e.stages, "face_embed")
    assert vgg.cpu_s == pytest.approx(0.5 * 384 + 5.0)
    assert vgg.disk_bytes == pytest.approx(384 * 5 * (4096 + 3) * 4)
    assert only(e.stages, "lld").cpu_s == pytest.approx(0.1 * 384 + 2.0)
    assert only(e.stages, "compare").cpu_s is None and "not measured" in only(e.stages, "compare").how_time
    assert "not in segment.modalities" in " ".join(only(e.stages, "compare").notes)
    # train: folds × seeds × (1 + extra rates) × epochs × batches per epoch, × s/step scaled by tokens
    assert only(e.stages, "train").cpu_s is None  # auxformer's s/step is not in the table: no half-sum
    rates = json.loads(json.dumps(RATES))
    rates["kinds"][KIND]["train_step_s"]["auxformer"] = {"s": 0.1, "batch": 32, "steps": 80}
    train = only(est.estimate(params, size, rates, machine(), stage_names=["train"]).stages, "train")
    n_train = 96 * 0.8 * 0.8  # protocol corpus: test 0.2, devel 0.2 of the rest
    cross_steps = 3 * 40 * math.ceil(n_train / 16) * (1 + 3)  # seeds × epochs × batches × (standard, clip_zero + 2 rates)
    cross_s = 0.05 * (16 * 4 * 20) / (16 * 20)  # batch × Σ steps (4 modalities × 20) vs the calibrated 16 × 20
    aux_steps = 3 * 25 * math.ceil(n_train / 32) * (1 + 3)  # auxformer's recipe: 25 epochs, batch 32
    aux_s = 0.1 * (32 * 80) / (32 * 80)
    assert train.cpu_s == pytest.approx(cross_steps * cross_s + aux_steps * aux_s)
    assert e.totals()["cpu_s"] == pytest.approx(sum(s.cpu_s for s in e.stages if s.cpu_s is not None))


def test_workers_share_the_time_and_each_holds_its_own_memory():
    """The rates are one process's; with the default workers (one per core) a stage that shares its work
    takes its start-up once (the workers start side by side) and the rest ÷ workers, holds its peak ×
    workers, and says so."""
    params = demo_params()
    size = est.corpus_size(params, None)
    one = {s.stage: s for s in est.estimate(params, size, RATES, machine(), stage_names=["faces", "segment"], workers=1).stages}
    e = est.estimate(params, size, RATES, machine(), stage_names=["faces", "segment"], workers=4)
    four = {s.stage: s for s in e.stages}
    startup = RATES["kinds"][KIND]["extract"]["faces"]["startup_s"]
    assert startup > 0 and one["faces"].fixed_s == startup
    assert four["faces"].cpu_s == pytest.approx(startup + (one["faces"].cpu_s - startup) / 4)
    assert four["faces"].peak_mb == pytest.approx(one["faces"].peak_mb * 4)
    assert (four["segment"].cpu_s, four["segment"].peak_mb) == (one["segment"].cpu_s, one["segment"].peak_mb)  # one process
    assert any(n.startswith("4 workers (MER_WORKERS") for n in e.notes) and "÷ 4 workers (the start-up once)" in four["faces"].how_time


def test_faces_scale_with_the_detection_rate_and_frame_size():
    params = demo_params()
    params["faces"]["rate_hz"] = 30.0
    size = est.CorpusSize("crema_d", 10, 30.0, 5.0, 3, 480 * 360, "test")
    faces = only(est.estimate(params, size, RATES, machine(), stage_names=["faces"]).stages, "faces")
    assert faces.cpu_s == pytest.approx(0.4 * 6 * (480 * 360) / (320 * 240) * 30 + 3.0)


def test_the_nearest_kind_is_used_and_said():
    size = est.corpus_size(demo_params(), None)
    e = est.estimate(demo_params(), size, RATES, machine(kind="x86_64-amx"), stage_names=["faces"])
    assert e.rates_kind == KIND and any("nearest" in n and KIND in n for n in e.notes)
    e = est.estimate(demo_params(), size, {"kinds": {}}, machine(), stage_names=["faces"])
    assert only(e.stages, "faces").cpu_s is None and any("--calibrate" in n for n in e.notes)


def test_a_stage_that_cannot_fit_gets_a_line_with_the_numbers():
    size = est.corpus_size(demo_params(), None)
    e = est.estimate(demo_params(), size, RATES, machine(ram_gb=1.0, disk_gb=0.01), stage_names=["faces", "face_embed"])
    ram = [w for w in e.warnings if w.startswith("faces:")]
    assert ram and "1.0 GB" in ram[0] and "cannot run here" in ram[0]
    assert any(w.startswith("disk:") and "0.0 GB free" in w for w in e.warnings)
    assert est.estimate(demo_params(), size, RATES, machine(), stage_names=["faces"]).warnings == []


def test_rehearsal_lines_are_read_defensively(tmp_path):
    good = {"preset": "p", "fraction": 0.25, "stages": {
        "segment": {"wall_s": 10.0, "peak_rss_mb": 900.0, "bytes_written": 1000},
        "train@m-standard": {"wall_s": 4.0, "peak_rss_mb": 800.0, "bytes_written": 10, "extrapolated_full_s": 400.0},
        "train@m-clip_zero": {"wall_s": 6.0, "peak_rss_mb": 1200.0, "bytes_written": 10, "extrapolated_full_s": 600.0}}}
    (tmp_path / "scale_p_0.25.json").write_text("log line\n" + json.dumps(good) + "\n")
    (tmp_path / "scale_p_1.json").write_text("{not json")
    (tmp_path / "scale_p_0.1.json").write_text(json.dumps({"fraction": 0.1, "stages": {
        "segment": {"wall_s": 1.0}, "report": {"wall_s": 2.0, "peak_rss_mb": 300.0}}}))
    # a larger rehearsal whose report figure measured code since fixed: the smaller one's stands
    (tmp_path / "scale_p_0.5.json").write_text(json.dumps({"fraction": 0.5, "stages": {
        "importance@m": {"wall_s": 1.0}, "report": {"wall_s": 9.0, "peak_rss_mb": 7000.0, "ok": True, "superseded": "fixed since"}}}))
    record, notes = est.read_rehearsals("p", tmp_path)
    assert len(notes) == 1 and "scale_p_1.json" in notes[0]
    assert record["stages"]["report"]["fraction"] == 0.1 and record["stages"]["report"]["peak_rss_mb"] == 300.0
    assert record["stages"]["segment"]["fraction"] == 0.25  # each stage from the largest fraction that ran it
    assert record["stages"]["importance"]["fraction"] == 0.5
    train = record["stages"]["train"]
    assert {k: train[k] for k in ("wall_s", "peak_rss_mb", "bytes_written", "full_s")} == {
        "wall_s": 10.0, "peak_rss_mb": 1200.0, "bytes_written": 20.0, "full_s": 1000.0}
    params = demo_params()
    size = est.corpus_size(params, None)
    e = est.estimate(params, size, RATES, machine(), record, stage_names=["segment", "train"])
    seg = only(e.stages, "segment")
    assert seg.cpu_s == pytest.approx(40.0) and seg.disk_bytes == pytest.approx(4000)
    linear = est.PROCESS_BASE_MB + (900 - est.PROCESS_BASE_MB) * 4
    analytic = only(est.estimate(params, size, RATES, machine(), None, stage_names=["segment"]).stages, "segment").peak_mb
    assert seg.peak_mb == pytest.approx(max(900, min(linear, analytic)))
    assert only(e.stages, "train").cpu_s == pytest.approx(1000.0)


def test_the_scale_rehearsals_cuts_are_undone(tmp_path):
    """benchmarks/scale.py's lines: runs cut (seeds, repeats, families), failed stages, the training it extrapolates."""
    line = {"benchmark": "scale", "preset": "p", "fraction": 0.05,
            "cuts": {"seeds": {"run": 1, "preset": 5}, "repeats": {"run": 1, "preset": 4},
                     "families": {"run": ["m-standard"], "preset": ["m-standard", "m-dynamic"]}},
            "corpus": {"clips": 5},
            "stages": {"segment": {"wall_s": 10.0, "peak_rss_mb": 500.0, "bytes_written": 100, "ok": True},
                       "train@m-standard": {"wall_s": 30.0, "peak_rss_mb": 700.0, "bytes_written": 10, "ok": True},
                       "evaluate@m-standard": {"wall_s": 2.0, "peak_rss_mb": 600.0, "bytes_written": 8, "ok": True},
                       "report": {"ok": False, "error": "not run"}},
            "train_extrapolated": {"full_s": 50.0, "full_size_h": 2.0}}
    (tmp_path / "scale_p_0.05.json").write_text(json.dumps(line))
    record, notes = est.read_rehearsals("p", tmp_path)
    assert notes == [] and record["failed"] == ["report"]
    assert (record["stages"]["evaluate"]["runs"], record["stages"]["evaluate"]["families"]) == (20.0, 2.0)
    assert record["stages"]["train"]["full_s"] == pytest.approx(2.0 * 3600 * 2)  # both families
    params = demo_params()
    size = est.CorpusSize("demo", 100, 400.0, 4.0, 12, None, "test")  # the rehearsal's 5 clips are 1/20 of it
    e = est.estimate(params, size, RATES, machine(), record, stage_names=["segment", "train", "evaluate", "report"])
    train = only(e.stages, "train")
    assert train.cpu_s == pytest.approx(2.0 * 3600 * 2)
    assert train.disk_bytes == pytest.approx(10 * 40)  # models: × the runs cut, not × the corpus
    assert only(e.stages, "segment").cpu_s == pytest.approx(10.0 * 20)
    assert only(e.stages, "evaluate").cpu_s == pytest.approx(2.0 * 20 * 40)  # × 20 runs × 2 families cut
    assert only(e.stages, "evaluate").disk_bytes == pytest.approx(8 * 20 * 40)
    assert only(e.stages, "report").cpu_s is None  # it did not finish: not a figure
    assert any("did not finish" in n and "report" in n for n in e.notes)


def test_a_rehearsal_on_two_workers_counts_as_twice_the_process_time_and_a_later_run_wins(tmp_path):
    """A stage whose work the workers share ran its rehearsal on `workers` processes: its wall time is turned
    back into one process's before the estimate divides by this machine's workers; of two rehearsals of the
    same fraction, the later one's figures stand."""
    def line(date: str, workers: int | None, evaluate_s: float) -> dict:
        out = {"fraction": 1.0, "date": date, "corpus": {"clips": 100},
               "stages": {"segment": {"wall_s": 5.0, "ok": True},
                          "evaluate@m-standard": {"wall_s": evaluate_s, "peak_rss_mb": 600.0, "ok": True}}}
        return out | ({"workers": workers} if workers else {})
    (tmp_path / "scale_p_1.json").write_text(json.dumps(line("2026-12-07 16:08 UTC", 2, 30.0)))
    (tmp_path / "scale_p_1_to-evaluate.json").write_text(json.dumps(line("2026-12-07 07:08 UTC", None, 90.0)))
    record, _ = est.read_rehearsals("p", tmp_path)
    ev = record["stages"]["evaluate"]
    assert (ev["file"], ev["wall_s"], ev["workers"]) == ("scale_p_1.json", 30.0, 2)
    size = est.CorpusSize("demo", 100, 400.0, 4.0, 12, None, "test")
    params = demo_params()
    for workers, expected in ((1, 60.0), (2, 30.0), (4, 15.0)):
        e = est.estimate(params, size, RATES, machine(), record, stage_names=["segment", "evaluate"], workers=workers)
        assert only(e.stages, "evaluate").cpu_s == pytest.approx(expected), workers
        assert only(e.stages, "segment").cpu_s == pytest.approx(5.0)  # one process whatever the workers
    assert "× the 2 workers it ran on" in only(e.stages, "evaluate").how_time


def test_cli_json_and_table(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo_params()))
    (tmp_path / "rates.json").write_text(json.dumps(RATES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("pipeline.estimate.rates.cpu_kind", lambda *a, **k: KIND)
    res = runner.invoke(cli.app, ["estimate", "--json", "--rates", "rates.json", "--clips", "10"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["corpus"]["clips"] == 10 and out["corpus"]["media_s"] == 40.0
    faces = next(s for s in out["stages"] if s["stage"] == "faces")
    assert faces["cpu_s"] == pytest.approx(0.4 * 40 + 3.0) and "real-time factor" in faces["how_time"]
    assert out["totals"]["disk_bytes"] > 0 and out["rates_kind"] == KIND
    res = runner.invoke(cli.app, ["estimate", "--rates", "rates.json", "--preset", "001-crema-d"])
    assert res.exit_code == 0, res.output
    assert "crema_d: 7,442 clips" in res.output and "face_embed" in res.output and "how each figure" in res.output
    res = runner.invoke(cli.app, ["estimate", "--rates", "rates.json", "--preset", "no-such"])
    assert res.exit_code == 1 and "error: no preset 'no-such'" in res.output


def test_folds_follow_the_protocol():
    iemocap = est.load_params(REPO / "params.yaml", "003-iemocap")
    size = est.corpus_size(iemocap, None)
    assert est_after._folds(iemocap, size)[0] == 5  # leave one session out (003 §5.3)
    crema = est.load_params(REPO / "params.yaml", "001-crema-d")
    folds, train, test = est_after._folds(crema, est.corpus_size(crema, None))
    assert (folds, train, test) == (20, pytest.approx(0.7), 0.15)  # 001 §4.3: 20 speaker splits, 70/15/15


def test_calibration_needs_a_warm_up_clip_and_one_to_time(tmp_path):
    with pytest.raises(est.EstimateError, match="at least 2 clips"):
        est.calibrate(1, REPO / "params.yaml", tmp_path / "rates.json")
    assert not (tmp_path / "rates.json").exists()


def test_calibration_times_each_extractor_in_one_process_on_its_stages_threads(tmp_path, monkeypatch):
    """The rates are one process's on its stage's threads (the estimate divides by the workers): with every
    core the default, the calibration still asks for one worker (a helper could not even receive a built
    wav2vec2 or BERT), and it does not time torch on its default threads."""
    import torch

    import pipeline.extract.runner as runner_module
    from pipeline.core.errors import PipelineError

    monkeypatch.setenv("MER_WORKERS", "2")
    monkeypatch.delenv("MER_THREADS", raising=False)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))  # pin_threads sets them: restored after the test
    asked, threads = [], []

    def record(extractor, clips, **kw):
        asked.append(kw.get("settings"))
        threads.append(torch.get_num_threads())
        raise PipelineError("stop here")  # the feature is then skipped with one line

    monkeypatch.setattr(runner_module, "extract_corpus", record)
    monkeypatch.setattr("pipeline.estimate.calibration.measure_train_steps", lambda *a, **k: {})
    lines = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # torch's default on a 2-core machine: the stages run on 1 (STAGE_THREADS)
    try:
        est.calibrate(2, REPO / "params.yaml", tmp_path / "rates.json", log=lines.append)
    finally:
        torch.set_num_threads(before)
    assert asked and all(s is not None and s.workers == 1 for s in asked), asked
    assert threads == [1] * len(asked)
    assert sum("skipped (stop here)" in line for line in lines) == len(asked)


def test_training_step_scales_from_the_nearest_calibrated_record():
    params = demo_params()
    _, shapes, _ = est_shapes._sequences(params, est.corpus_size(params, None))  # 4 modalities × 20 steps
    n = est_after._param_count(params, "crossmodal", shapes)
    assert n and n > 10_000
    records = {"crossmodal": [
        {"s": 0.2, "batch": 16, "steps": 80, "params": n, "label": "params.yaml"},  # this very shape
        {"s": 9.0, "batch": 32, "steps": 400, "params": 20 * n, "label": "big"},
    ]}
    rec = {"batch_size": 16}
    assert est_after._step_seconds(records, "crossmodal", rec, shapes, params) == pytest.approx(0.2)
    # twice the batch: the same record, twice the tokens
    assert est_after._step_seconds(records, "crossmodal", {"batch_size": 32}, shapes, params) == pytest.approx(0.4)
    assert est_after._step_seconds(records, "auxformer", rec, shapes, params) is None


def test_a_training_calibration_keeps_the_other_figures(tmp_path, monkeypatch):
    rates = json.loads(json.dumps(RATES))
    rates["kinds"][KIND]["train_step_s"] = {"mult": [{"s": 1.0, "batch": 8, "steps": 10, "label": "003-iemocap"},
                                                     {"s": 2.0, "batch": 8, "steps": 10, "label": "params.yaml"}]}
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    monkeypatch.setattr("pipeline.estimate.calibration.cpu_kind", lambda *a, **k: KIND)
    monkeypatch.setattr("pipeline.estimate.calibration.measure_train_steps", lambda params, log, label: {
        "mult": {"s": 5.0, "batch": 32, "steps": 490, "label": label}, "mct_hfr": {"s": 3.0, "batch": 32, "steps": 490, "label": label}})
    est.calibrate(0, REPO / "params.yaml", tmp_path / "rates.json", log=lambda m: None, preset="003-iemocap", extractors=False)
    entry = json.loads((tmp_path / "rates.json").read_text())["kinds"][KIND]
    assert entry["extract"] == RATES["kinds"][KIND]["extract"]  # untouched
    assert [r["s"] for r in entry["train_step_s"]["mult"]] == [2.0, 5.0]  # the preset's record replaced, the other kept
    assert entry["train_step_s"]["mct_hfr"][0]["label"] == "003-iemocap"


def test_a_feature_only_corpus_costs_the_media_extractors_their_start_only(tmp_path):
    """Ulm-TSST without media_dir (the 000 presets: the package's features only): the media extractors get
    no clip, so they cost their start-up and write nothing; the import stage reads its folders."""
    params = demo_params()
    params["corpus"] = {"name": "ulm_tsst", "root": "/data/MuSe2022/c3_muse_stress_2022"}
    size = est.corpus_size(params, manifest=None)
    assert size.feature_only and size.clips == 69
    stages = est.estimate(params, size, RATES, machine(), stage_names=["faces", "face_embed", "import"]).stages
    face_embed = only(stages, "face_embed")
    assert face_embed.cpu_s == 5.0 and face_embed.disk_bytes == 0 and "feature-only" in " ".join(face_embed.notes)
    faces = only(stages, "faces")  # the measured start-up and peak, no figure made up
    assert (faces.cpu_s, faces.peak_mb) == (3.0, 1400.0) and face_embed.how_memory.startswith("analytic: process base")
    params["corpus"]["media_dir"] = "raw_data/video"  # with the videos: the full extraction
    with_media = est.corpus_size(params, manifest=None)
    assert not with_media.feature_only
    assert only(est.estimate(params, with_media, RATES, machine(), stage_names=["face_embed"]).stages, "face_embed").cpu_s > 1000
    # a manifest says it itself
    write_manifest(tmp_path / "m.parquet", CorpusInfo("ulm_tsst", [], params={"feature_only": True}),
                   [Clip("a", "s1", "a.csv", 300.0)])
    assert est.corpus_size({"corpus": {"name": "ulm_tsst", "media_dir": "x"}}, manifest=tmp_path / "m.parquet").feature_only
