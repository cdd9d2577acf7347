"""Presets (presets/*.yaml, pipeline/presets.py): each paper's experiment as params.yaml edits.

Unit tests of the merge and of every preset file against the schemas; the scaled-down runs of every
preset on the demo corpus are in tests/test_pipeline_dvc.py (they reuse its extracted demo features)."""

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.missing import parse_conditions
from pipeline.presets import PresetError, apply_preset, load_preset, merge, preset_names

REPO = Path(__file__).resolve().parents[1]
PAPERS = {"000", "001", "002", "003", "004"}


def test_merge_merges_mappings_and_replaces_lists_and_named_keys():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"p": 1, "q": 2}}, "b": 3}
    changed = merge(base, {"a": {"y": [3], "z": {"p": 5}}, "b": 3}, replace=[])
    assert base == {"a": {"x": 1, "y": [3], "z": {"p": 5, "q": 2}}, "b": 3}
    assert changed == ["a.y", "a.z.p"]
    changed = merge(base, {"a": {"z": {"p": 6}}}, replace=["a.z"])
    assert base["a"]["z"] == {"p": 6}  # q removed: replaced whole
    assert changed == ["a.z.q", "a.z.p"]


def test_every_paper_has_a_preset_and_each_is_consistent():
    names = preset_names()
    assert {load_preset(n).paper for n in names} == PAPERS
    for name in names:
        preset = load_preset(name)
        params = preset.params
        grid = params["grid"]
        mods = params["train"]["modalities"]
        runs = {(m, s) for m in grid["models"] for s in grid["strategies"]}
        runs |= {(m, "eliminate") for m in grid.get("eliminate", [])}
        conditions = {c.name for c in parse_conditions(params["evaluate"]["conditions"], mods)}
        assert preset.published, name
        for p in preset.published:
            assert (p.model, p.strategy) in runs, f"{name}: published {p.model}/{p.strategy} is not a run of its grid"
            if p.condition == "auilc":
                assert "random_missing_grid" in params["evaluate"]["conditions"], name
            else:
                assert p.condition in conditions, f"{name}: {p.condition} is not evaluated"
        assert set(mods) <= set(params["segment"]["modalities"]), name
        # a paper's experiment never runs on random backbone weights
        for section in ("face_embed", "resnet50"):
            if section in params and "weights" in params[section]:
                assert params[section]["weights"].startswith("weights/"), name
        for section in ("wav2vec2", "bert"):
            if section in params and "model" in params[section]:
                assert params[section]["model"].startswith("weights/"), name


@pytest.mark.parametrize("demo", [False, True])
def test_every_preset_applies_to_params_yaml_and_validates(tmp_path, demo):
    for name in preset_names():
        target = tmp_path / f"{name}-{demo}.yaml"
        shutil.copy(REPO / "params.yaml", target)
        changed = apply_preset(name, target, demo=demo)
        data = yaml.safe_load(target.read_text())
        preset = load_preset(name)
        assert "report.published" in changed
        assert len(data["report"]["published"]) == len(preset.published)
        assert data["grid"]["models"] == preset.params["grid"]["models"]
        if demo:  # the scaled-down run reads the generated demo corpus, on random backbone weights
            assert data["corpus"]["name"] == "demo"
        else:
            assert data["corpus"]["name"] == preset.corpus
            assert set(data["segment"]["modalities"]) == set(preset.params["segment"]["modalities"])
        # `dvc exp run -S` on the applied file changes exactly the line it sets (no list is rewritten)
        from dvc.utils.hydra import apply_overrides

        probe = tmp_path / "probe.yaml"
        shutil.copy(target, probe)
        apply_overrides(str(probe), ["train.batch_size=7"])
        before, after = target.read_text().splitlines(), probe.read_text().splitlines()
        assert len(before) == len(after), name
        assert sum(a != b for a, b in zip(before, after)) == 1, name


def test_apply_keeps_comments_and_refuses_what_would_not_validate(tmp_path):
    target = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", target)
    before = target.read_text()
    apply_preset("003-iemocap", target)
    after = target.read_text()
    assert "# Every stage reads only its own section" in after
    assert after.count("\n#") == before.count("\n#")  # the section comments survive
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "bad.yaml").write_text(
        "paper: '001'\ntitle: t\ncorpus: demo\nreproduces: r\nparams:\n  train:\n    epochs: 0\n"
    )
    shutil.copy(REPO / "params.yaml", target)
    with pytest.raises(PresetError, match="train.epochs"):
        apply_preset("bad", target, directory=presets)
    assert target.read_text() == before  # nothing written
    with pytest.raises(PresetError, match="no preset 'nope'"):
        apply_preset("nope", target, directory=presets)


@pytest.mark.parametrize("name, sibling, differing", [
    ("001-msp-improv", "001-crema-d", set()),
    ("003-msp-improv", "003-iemocap", set()),
    ("000-ulm-tsst-valence", "000-ulm-tsst-arousal", {"train.targets"}),
])
def test_sibling_presets_run_the_same_demo(tmp_path, name, sibling, differing):
    """On the demo corpus a preset and its sibling (same paper, other corpus or target) differ only in
    the published numbers (and 000's target), so the scaled-down run of one
    (tests/test_pipeline_dvc.py::test_preset_runs_scaled_down_on_the_demo) covers the other."""
    from pipeline.presets import _flat

    flat = {}
    for n in (name, sibling):
        target = tmp_path / f"{n}.yaml"
        shutil.copy(REPO / "params.yaml", target)
        apply_preset(n, target, demo=True)
        flat[n] = {k: v for k, v in _flat(yaml.safe_load(target.read_text())).items() if k != "report.published"}
    assert {k for k in flat[name] if flat[name][k] != flat[sibling].get(k)} == differing


@pytest.mark.parametrize("name", ["001-crema-d", "001-msp-improv"])
def test_001_presets_decay_the_learning_rate_as_the_authors_code(name):
    """001 §4.3 "learning decay set to five epochs", read through the authors' (MulT's) code: lr × 0.1 once
    5 epochs in a row bring no better devel loss — for every model of the grid."""
    import torch

    from pipeline.runs.params import TrainParams
    from pipeline.train.recipes import make_scheduler

    params = load_preset(name).params
    for model in params["grid"]["models"]:
        recipe = TrainParams(**params["model"][model]["train"])
        assert (recipe.lr_schedule, recipe.lr_factor, recipe.lr_patience, recipe.early_stop) == (
            "plateau", 0.1, 5, "loss"), model
        optim = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
        scheduler = make_scheduler(optim, recipe)
        lrs = []
        for devel_loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:  # best at epoch 2, then 5 worse
            scheduler.step(-devel_loss)  # stepped with the early-stopping score (−loss)
            lrs.append(optim.param_groups[0]["lr"])
        assert lrs[:6] == [recipe.lr] * 6 and lrs[6] == pytest.approx(recipe.lr * 0.1), model


def test_presets_set_the_papers_labels_seeds_and_rho():
    crema = load_preset("001-crema-d").params["corpus"]
    assert crema["label_source"] == "multimodal_vote" and crema["on_error"] == "skip"  # ties left out, listed
    assert load_preset("001-msp-improv").params["corpus"]["selection"] == "non_read"  # 001 §4.1: 7,818 turns
    for name in ("003-iemocap", "003-msp-improv"):
        assert load_preset(name).params["train"]["seeds"] == [0, 1, 2, 3, 4]  # 003 §5.3
    for name in ("000-ulm-tsst-arousal", "000-ulm-tsst-valence"):
        assert load_preset(name).params["importance"]["rho"] == "paper"  # 000 §6.2
