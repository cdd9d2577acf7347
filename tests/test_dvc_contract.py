"""The DVC contract without running DVC stages: code deps that cannot drift, weights as dependencies,
and a params.yaml that DVC's YAML round trip (`dvc exp run -S`) rewrites one line at a time."""

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.core import dvc_deps

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_lists_the_import_closure_of_its_script():
    problems = dvc_deps.drift()
    assert problems == {}, f"dvc.yaml code deps drifted (run `python -m pipeline.core.dvc_deps --write`): {problems}"


def test_the_closure_follows_lazy_and_registry_imports():
    deps = dvc_deps.closure("stages/train.py")
    assert deps[0] == "stages/train.py"
    # the model registry imports its models by name (importlib): every model module is a dependency
    assert "pipeline/models/jmt.py" in deps and "pipeline/models/mct_hfr.py" in deps
    assert "pipeline/missing/strategies.py" in deps and "pipeline/runs/files.py" in deps
    # packages on the way are imported too; extraction code is not what training runs
    assert "pipeline/__init__.py" in deps and not any(d.startswith("pipeline/extract/") and "device" not in d and "__init__" not in d for d in deps)
    report = dvc_deps.closure("stages/report.py")
    assert "pipeline/segment/contract.py" in report and "pipeline/models/jmt.py" not in report


def test_each_stage_reaches_the_schemas_of_its_params_sections():
    """A section's schema holds its defaults (they change results): the module defining it must be a
    code dep of every stage that lists the section, even though `load_section` imports it lazily."""
    from pipeline.core.config import schema_module

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    expected = dvc_deps.expected_code_deps()
    for name, stage in stages.items():
        for key in stage.get("do", stage).get("params", []):
            path = dvc_deps.module_file(schema_module(str(key).split(".")[0])).relative_to(REPO).as_posix()
            assert path in expected[name], f"stage {name}: section '{key}' is defined in {path}, not in its code deps"
    # a stage reaches only its own section's schema: corpus does not depend on training or extraction code
    assert not any(d.startswith(("pipeline/models/", "pipeline/extract/", "pipeline/grid")) for d in expected["corpus"])


def test_rewrite_replaces_only_code_lines_and_is_idempotent(tmp_path):
    text = (REPO / "dvc.yaml").read_text()
    broken = text.replace("      - pipeline/runs/files.py\n", "", 1).replace("      - stages/train.py\n", "      - stages/train.py\n      - pipeline/gone.py\n", 1)
    fixed = dvc_deps.rewrite(broken, dvc_deps.expected_code_deps())
    assert fixed == text
    assert dvc_deps.rewrite(text, dvc_deps.expected_code_deps()) == text


def test_weights_folders_are_dependencies_of_the_stages_that_load_them():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage, folder in {"face_embed": "weights/vggface", "resnet50": "weights/resnet50",
                          "wav2vec2": "weights/wav2vec2", "bert": "weights/bert"}.items():
        assert folder in stages[stage]["deps"], stage
        assert (REPO / folder).is_dir(), folder  # committed (.gitkeep), so the dependency always exists
        assert all(folder not in s.get("deps", []) for name, s in stages.items() if name != stage)


@pytest.mark.parametrize("override", [
    "strategy.clip_zero.p_clip=0.3",
    "train.epochs=5",
    "model.crossmodal.params.d_model=64",
    "faces.downscale=240",
    "segment.partition.protocol=leave_one_group_out",
    "corpus.seed=3",
])
def test_dvc_exp_run_set_param_changes_one_line(tmp_path, override):
    """`dvc exp run -S` writes params.yaml through dvc.utils.hydra.apply_overrides: flow lists and
    blank lines after a section's last list would be rewritten, so params.yaml has neither."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    apply_overrides(str(path), [override])
    before, after = (REPO / "params.yaml").read_text().splitlines(), path.read_text().splitlines()
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(changed) == 1, [(before[i], after[i]) for i in changed]
    assert override.rsplit("=", 1)[1] in after[changed[0]].split("#")[0]


def test_a_stage_pins_its_threads(monkeypatch):
    import torch

    from pipeline.core.errors import PipelineError
    from pipeline.core.stage import pin_threads, stage_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("MER_THREADS", raising=False)
        assert stage_threads() == 1
        monkeypatch.setenv("MER_THREADS", "2")
        assert pin_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("MER_THREADS", "zero")
        with pytest.raises(PipelineError, match="MER_THREADS='zero'"):
            stage_threads()
    finally:
        torch.set_num_threads(before)
