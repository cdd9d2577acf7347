"""The `mer` command line: params errors surface at `mer params` and before any stage runs, `mer run`
reads its stages from dvc.yaml, `mer models` counts what training builds, `mer predict`'s inputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import CREMA_D as SAMPLE_ROOT
from typer.testing import CliRunner

from pipeline import cli
from pipeline.core.config import SECTIONS, ConfigError, load_section
from pipeline.params_checks import check_params
from pipeline.predict import (
    NO_TRANSCRIPT,
    PredictError,
    check_transcript,
    random_weights,
    read_transcript_file,
)
from pipeline.runs.params import LOOP_FIELDS

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SECTION_LIST = ", ".join(SECTIONS)


# params.yaml is moving the grid out of `train` (sections grid / model / strategy); these two helpers are
# the one place that knows where the grid and the per-name settings live
GRID = "grid" in SECTIONS


def _train(models=None, strategies=None, modalities=None, model_params=None, model_train=None, strategy_params=None) -> dict:
    """A params.yaml dict with this grid and these per-name settings."""
    named = dict(models=models, strategies=strategies, model_params=model_params, model_train=model_train,
                 strategy_params=strategy_params)
    train = {"modalities": modalities} if modalities else {}
    if not GRID:
        return {"train": {**train, **{k: v for k, v in named.items() if v is not None}}}
    out: dict = {"train": train} if train else {}
    grid = {k: v for k, v in dict(models=models, strategies=strategies).items() if v is not None}
    model: dict = {}
    for part, given in (("params", model_params), ("train", model_train)):
        for name, v in (given or {}).items():
            model.setdefault(name, {})[part] = v
    out |= {"grid": grid} if grid else {}
    out |= {"model": model} if model else {}
    out |= {"strategy": strategy_params} if strategy_params else {}
    return out


def _at(kind: str, name: str | int = "", key: str = "") -> str:
    """Where a problem of `train.<kind>[.name[.key]]` is reported."""
    if not GRID:
        return ".".join(str(p) for p in ("train", kind, name, key) if p != "")
    if kind in ("models", "strategies"):
        return f"grid.{kind}.{name}"
    if kind == "strategy_params":
        return ".".join(p for p in ("strategy", name, key) if p)
    part = "params" if kind == "model_params" else "train"
    return f"model.{name}" + (f".{part}.{key}" if key else "")


def _known(kind: str) -> str:
    from pipeline.missing import STRATEGIES
    from pipeline.models.registry import available_models

    return ", ".join(available_models() if kind == "models" else STRATEGIES)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A directory with a params.yaml (written by the returned function) and a small dvc.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  hello:\n"
        "    cmd: python -c \"open('ran.txt', 'w').write('ran')\"\n"
        "  grid:\n"
        "    matrix:\n"
        "      model: [crossmodal, auxformer]\n"
        "    cmd: python -c \"open('${item.model}.txt', 'w').write('ran')\"\n"
    )

    def write(params: dict | str) -> Path:
        text = params if isinstance(params, str) else yaml.safe_dump(params)
        (tmp_path / "params.yaml").write_text(text)
        return tmp_path

    write({})
    return write


def _lines(result) -> list[str]:
    return result.output.strip().splitlines()


# ---- params.yaml -----------------------------------------------------------------------------------


def test_misspelled_section_is_an_error_everywhere(project):
    project({"trian": {"epochs": 3}, "corpus": {"seed": 1}})
    line = f"params.yaml: unknown section 'trian' (did you mean 'train'?); known sections: {SECTION_LIST}"
    result = runner.invoke(cli.app, ["params"])
    assert result.exit_code == 1 and _lines(result) == [f"error: {line}"]
    with pytest.raises(ConfigError) as e:  # every stage reads its section through load_section
        load_section("corpus")
    assert str(e.value) == line
    # and `mer run` and `mer repro` refuse before running the stage
    for command in (["run", "hello"], ["repro"]):
        result = runner.invoke(cli.app, command)
        assert result.exit_code == 1 and _lines(result) == [f"error: {line}"]
    assert not Path("ran.txt").exists()


def test_repro_outside_a_dvc_repository_says_so(project):
    result = runner.invoke(cli.app, ["repro", "--jobs", "2"])
    assert result.exit_code == 1
    assert _lines(result)[0].startswith(f"error: {Path('dvc.yaml').resolve()}: DVC: you are not inside of a DVC repository")


def test_valid_params_print_and_pass(project):
    project({"corpus": {"seed": 5}})
    assert check_params() == []
    result = runner.invoke(cli.app, ["params", "corpus"])
    assert result.exit_code == 0 and yaml.safe_load(result.output)["corpus"]["seed"] == 5


def test_unknown_model_strategy_and_condition_names(project):
    project({**_train(models=["crossmodl", "auxformer"], strategies=["standard", "clipzero"]),
             "evaluate": {"conditions": ["all_present", "each_mising", "clip_zero:face@2", "frame_zero:face@0.5"]}})
    result = runner.invoke(cli.app, ["params"])
    assert result.exit_code == 1
    lines = _lines(result)
    assert len(lines) == 4, lines  # one line per problem
    assert lines[:2] == [
        f"error: params.yaml: {_at('models', 0)}: unknown model 'crossmodl' (did you mean 'crossmodal'?); "
        f"known models: {_known('models')}",
        f"error: params.yaml: {_at('strategies', 1)}: unknown strategy 'clipzero' (did you mean 'clip_zero'?); "
        f"known strategies: {_known('strategies')}",
    ]
    assert lines[2].startswith("error: params.yaml: evaluate.conditions.1: unknown condition 'each_mising'; accepted forms: all_present,")
    assert lines[3] == "error: params.yaml: evaluate.conditions.2: condition 'clip_zero:face@2': level 2 is not in [0, 1]"


def test_condition_modality_checked_against_the_grid(project):
    # auxformer takes the first two of train.modalities: a condition on `text` cannot be evaluated
    project({**_train(models=["auxformer"], modalities=["face", "acoustic", "text"]),
             "evaluate": {"conditions": ["all_present", "missing:text", "missing:face"]}})
    assert check_params() == [
        "params.yaml: evaluate.conditions.1: condition 'missing:text': modality 'text' is not one the models "
        "were trained on ['face', 'acoustic']"
    ]
    assert load_section("evaluate").conditions[1] == "missing:text"  # the section alone is valid


def test_misspelled_per_name_keys(project):
    from pipeline.missing import STRATEGIES

    project(_train(
        model_params={"crossmdal": {"d_model": 64}, "crossmodal": {"d_modl": 64}},
        model_train={"auxformer": {"lrr": 0.1}},
        strategy_params={"clip_zero": {"p_clipp": 0.5}, "frame_zro": {}},
    ))
    result = runner.invoke(cli.app, ["params"])
    assert result.exit_code == 1
    clip_zero_keys = ", ".join(STRATEGIES["clip_zero"].Params.model_fields)
    assert sorted(_lines(result)) == sorted(f"error: params.yaml: {line}" for line in [
        f"{_at('model_params', 'crossmdal')}: unknown model 'crossmdal' (did you mean 'crossmodal'?); known models: {_known('models')}",
        f"{_at('model_params', 'crossmodal', 'd_modl')}: unknown parameter (did you mean 'd_model'?); "
        "crossmodal's parameters: missing_input, d_model, layers, heads, dropout",
        f"{_at('model_train', 'auxformer', 'lrr')}: unknown parameter (did you mean 'lr'?); loop settings: "
        + ", ".join(LOOP_FIELDS),
        f"{_at('strategy_params', 'clip_zero', 'p_clipp')}: unknown parameter (did you mean 'p_clip'?); "
        f"clip_zero's parameters: {clip_zero_keys}",
        f"{_at('strategy_params', 'frame_zro')}: unknown strategy 'frame_zro' (did you mean 'frame_zero'?); "
        f"known strategies: {_known('strategies')}",
    ])


def test_per_name_values_are_validated(project):
    project(_train(model_params={"crossmodal": {"heads": 0}}, model_train={"auxformer": {"lr_schedule": "cosine"}}))
    lines = check_params()
    assert len(lines) == 2, lines
    assert lines[0] == f"params.yaml: {_at('model_params', 'crossmodal', 'heads')}: Input should be greater than or equal to 1"
    assert lines[1] == f"params.yaml: {_at('model_train', 'auxformer', 'lr_schedule')}: Input should be 'none', 'step' or 'plateau'"


def test_section_loading_stays_light(project):
    """Validating `corpus` must not import torch (the registries are imported inside validators)."""
    import subprocess
    import sys

    code = "import sys; from pipeline.core.config import load_section; load_section('corpus'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path.cwd(),
                         env={"PYTHONPATH": str(REPO), "PATH": ""}, check=True)
    assert out.stdout.strip() == "False"


# ---- mer run ---------------------------------------------------------------------------------------


def test_run_lists_the_stages_of_dvc_yaml(project):
    result = runner.invoke(cli.app, ["run", "importance"])
    assert result.exit_code == 1
    assert _lines(result) == ["error: unknown stage 'importance'; stages in dvc.yaml: hello, grid@crossmodal, grid@auxformer"]
    result = runner.invoke(cli.app, ["run", "grid"])
    assert _lines(result) == ["error: 'grid' runs once per item in dvc.yaml; run one of: grid@crossmodal, grid@auxformer"]


def test_run_runs_the_stage_command(project):
    result = runner.invoke(cli.app, ["run", "hello"])
    assert result.exit_code == 0, result.output
    assert Path("ran.txt").read_text() == "ran"
    result = runner.invoke(cli.app, ["run", "grid@auxformer"])
    assert result.exit_code == 0 and Path("auxformer.txt").exists() and not Path("crossmodal.txt").exists()


def test_run_checks_every_section_first(project):
    project(_train(models=["nope"]))
    result = runner.invoke(cli.app, ["run", "hello"])
    assert result.exit_code == 1 and _lines(result) == [
        f"error: params.yaml: {_at('models', 0)}: unknown model 'nope'; known models: {_known('models')}"]
    assert not Path("ran.txt").exists()


def test_repository_stages_come_from_dvc_yaml():
    names = cli.dvc_stage_names(REPO)
    declared = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    # every declared stage is there, a foreach/matrix stage as its expanded name@key stages
    assert list(dict.fromkeys(n.split("@")[0] for n in names)) == declared
    assert all(cmd for cmd in cli.dvc_stages(REPO).values())


# ---- mer models ------------------------------------------------------------------------------------


def test_models_use_model_params_and_train_modalities(project):
    from pipeline.models.registry import build_model, count_parameters

    project(_train(modalities=["acoustic", "face"], model_params={"crossmodal": {"d_model": 32}}))
    result = runner.invoke(cli.app, ["models", "crossmodal", "unimodal", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    dims = cli.DEMO_DIMS
    assert counts == {
        "crossmodal": count_parameters(build_model("crossmodal", {"acoustic": dims["acoustic"], "face": dims["face"]}, 4,
                                                   "classification", {"d_model": 32})),
        # unimodal takes the first of train.modalities, as training does
        "unimodal": count_parameters(build_model("unimodal", {"acoustic": dims["acoustic"]}, 4, "classification")),
    }
    defaults = json.loads(runner.invoke(cli.app, ["models", "crossmodal", "--json", "--defaults"]).output)
    assert defaults["crossmodal"] == count_parameters(
        build_model("crossmodal", {"acoustic": dims["acoustic"], "face": dims["face"]}, 4, "classification"))
    assert defaults["crossmodal"] > counts["crossmodal"]


# ---- mer predict -----------------------------------------------------------------------------------


def test_transcript_argument_that_is_not_utf8():
    assert check_transcript("café") == "café" and check_transcript(None) is None
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such an argv entry
    with pytest.raises(PredictError) as e:
        check_transcript(bad)
    assert str(e.value) == (
        "--transcript is not valid UTF-8 text (byte 0xe9 at character 3); give it as UTF-8, "
        "or put it in a UTF-8 text file and pass --transcript-file"
    )


def test_transcript_file(tmp_path, monkeypatch):
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffhello world\n".encode("utf-8"))
    assert read_transcript_file(good) == "hello world"
    bad = tmp_path / "latin.txt"
    bad.write_bytes("je suis allé".encode("latin-1"))
    with pytest.raises(PredictError) as e:
        read_transcript_file(bad)
    assert str(e.value) == (f"--transcript-file {bad}: not UTF-8 text (byte 0xe9 at offset 11); "
                            "convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`")
    # through the CLI: one line, before anything is loaded
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"")
    result = runner.invoke(cli.app, ["predict", "clip.mp4", "--transcript-file", str(bad)])
    assert result.exit_code == 1 and len(_lines(result)) == 1 and _lines(result)[0].startswith(f"error: --transcript-file {bad}")
    result = runner.invoke(cli.app, ["predict", "clip.mp4", "--transcript", "x", "--transcript-file", str(good)])
    assert result.exit_code == 1 and _lines(result) == ["error: give --transcript or --transcript-file, not both"]


def test_random_weights_of_the_runs():
    random_statement = "vggface: RANDOM weights (not pretrained) — features carry no learned knowledge"
    segments = SimpleNamespace(modalities={
        "face": SimpleNamespace(weights_statement=random_statement),
        "acoustic": SimpleNamespace(weights_statement="egemaps: fixed feature set (no learned weights)"),
        "text": SimpleNamespace(weights_statement="bert: pretrained weights"),
    })
    runs = [{"modalities": ["acoustic", "text"], "weights": {"acoustic": "egemaps: fixed feature set", "text": "bert: pretrained weights"}}]
    assert random_weights(runs, segments) == {}
    runs.append({"modalities": ["face", "acoustic"]})  # an older model file without `weights`: the segments say
    assert random_weights(runs, segments) == {"face": random_statement}


def test_missing_reasons(monkeypatch, tmp_path):
    from pipeline.predict import _features

    class Fake:
        def __init__(self, modality):
            self.modality = modality

        def process_clip(self, clip, root):
            return SimpleNamespace(present=np.zeros(3, bool))

    extractors = {"face": Fake("video"), "text": Fake("text"), "acoustic": Fake("audio")}
    _, missing = _features(SimpleNamespace(transcript=None), extractors)
    assert missing == {"face": "no face found", "text": NO_TRANSCRIPT, "acoustic": "no usable audio"}
    assert NO_TRANSCRIPT == "no transcript given (--transcript or --transcript-file)"
    _, missing = _features(SimpleNamespace(transcript=""), {"text": Fake("text")})
    assert missing == {"text": "no words in the transcript"}


# many files in one call: real CREMA-D clips, a real extractor (eGeMAPS), a small model trained on nothing


CREMA_D = SAMPLE_ROOT / "VideoFlash"  # tests/conftest.py finds the sample
CLIPS = ["1001_DFA_ANG_XX.flv", "1001_DFA_HAP_XX.flv", "1001_DFA_SAD_XX.flv"]


@pytest.fixture(scope="module")
def predict_project(tmp_path_factory):
    """A project folder with params.yaml, data/segments (one modality, eGeMAPS) and one model.pt."""
    import torch

    from pipeline.extract.registry import build_extractor
    from pipeline.models.registry import build_model
    from pipeline.runs.files import save_trained
    from pipeline.runs.params import TrainParams
    from pipeline.segment.contract import ModalityInfo, Segments

    if not all((CREMA_D / c).exists() for c in CLIPS):
        pytest.skip(f"the CREMA-D sample clips are not in {CREMA_D}")
    root = tmp_path_factory.mktemp("predict")
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    dim = build_extractor("egemaps", REPO / "params.yaml").dim
    n, steps, classes = 4, 20, ["neutral", "happy", "angry", "sad"]
    rng = np.random.default_rng(0)
    Segments(
        clip_id=np.array([f"c{i}" for i in range(n)]), partition=np.array(["train", "train", "devel", "test"]),
        label=np.arange(n), length=np.full(n, steps), t=np.tile((np.arange(steps) + 0.5) / 5.0, (n, 1)),
        x={"acoustic": rng.normal(size=(n, steps, dim)).astype(np.float32)}, mask={"acoustic": np.ones((n, steps), bool)},
        mean={"acoustic": rng.normal(size=dim).astype(np.float32)}, std={"acoustic": rng.uniform(1, 2, size=dim).astype(np.float32)},
        classes=classes, rate_hz=5.0,
        modalities={"acoustic": ModalityInfo("egemaps", dim, "openSMILE", False, "egemaps: fixed feature set (no learned weights)")},
    ).save(root / "data" / "segments")
    torch.manual_seed(0)
    net = build_model("unimodal", {"acoustic": dim}, len(classes), "classification")
    params = TrainParams(modalities=["acoustic"])
    save_trained(root / "data" / "models" / "unimodal" / "standard" / "seed_0" / "model.pt", {
        "state_dict": net.state_dict(), "model": "unimodal", "strategy": "standard", "task": "classification",
        "targets": [], "n_outputs": len(classes), "params": params.model_dump(mode="json"), "dims": {"acoustic": dim},
        "classes": classes, "modalities": ["acoustic"], "seed": 0,
    })
    return root


def test_predict_many_files_loads_once(predict_project, monkeypatch):
    """Three files (one of them through its folder) and a bad one in one call: the models and extractors
    are built once, every good file gets the row a one-file call gives, the bad one an error row naming it,
    and the exit status says that one failed."""
    import pipeline.extract.registry as registry
    import pipeline.runs.files as runs

    monkeypatch.chdir(predict_project)
    folder = predict_project / "folder"
    folder.mkdir()
    (folder / CLIPS[2]).symlink_to(CREMA_D / CLIPS[2])
    (folder / "notes.txt").write_text("not media")  # not a media suffix: not taken
    bad = predict_project / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    loads, builds = [], []
    load_trained, build_extractor = runs.load_trained, registry.build_extractor
    monkeypatch.setattr(runs, "load_trained", lambda *a, **k: loads.append(a) or load_trained(*a, **k))
    monkeypatch.setattr(registry, "build_extractor", lambda *a, **k: builds.append(a) or build_extractor(*a, **k))

    args = [str(CREMA_D / CLIPS[0]), str(bad), str(CREMA_D / CLIPS[1]), str(folder)]
    result = runner.invoke(cli.app, ["predict", *args, "--csv", "all.csv", "--json"])
    assert result.exit_code == 1
    assert len(loads) == 1 and len(builds) == 1  # one run, one modality: each built once for the four files
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [args[0], str(bad), args[2], str(folder / CLIPS[2])]
    assert rows[1] == {"file": str(bad), "error": rows[1]["error"]} and rows[1]["error"].startswith(str(bad))
    assert "\n" not in rows[1]["error"]
    good = [rows[0], rows[2], rows[3]]
    assert [r["clip"] for r in good] == CLIPS and all(r["seconds"] > 0 for r in good)
    assert "loaded in" in result.stderr and "4 files in" in result.stderr and "1 failed" in result.stderr
    csv_rows = Path("all.csv").read_text().splitlines()
    assert csv_rows[0] == "clip,class,probability" and len(csv_rows) == 1 + 3 * 4

    # each file alone: the same probabilities
    for r, path in zip(good, [args[0], args[2], str(folder / CLIPS[2])]):
        one = runner.invoke(cli.app, ["predict", path, "--json"])
        assert one.exit_code == 0, one.output
        (alone,) = json.loads(one.stdout)
        assert alone["probabilities"] == r["probabilities"] and alone["label"] == r["label"]
    # the files differ, so do their predictions (the rows are not one file's repeated)
    assert len({json.dumps(r["probabilities"]) for r in good}) == 3

    # the text output: one line per file, the bad file's naming it and the cause; then the summary
    text = runner.invoke(cli.app, ["predict", args[0], str(bad)])
    assert text.exit_code == 1
    lines = _lines(text)
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{args[0]}: {good[0]['label']} {max(good[0]['probabilities'].values()):.3f}")
    assert lines[1] == f"error: {rows[1]['error']}" and "cannot open" in lines[1]
    assert lines[2].startswith("loaded in ") and "2 files in" in lines[2] and lines[2].endswith("; 1 failed")


def test_predict_inputs(predict_project, tmp_path, monkeypatch):
    from pipeline.predict import expand_inputs

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PredictError, match="a folder without media files"):
        expand_inputs([empty])
    (empty / "b.WAV").write_bytes(b"")
    (empty / "a.mp4").write_bytes(b"")
    assert expand_inputs([tmp_path / "x.flv", empty]) == [tmp_path / "x.flv", empty / "a.mp4", empty / "b.WAV"]
    monkeypatch.chdir(predict_project)
    result = runner.invoke(cli.app, ["predict", str(empty), "--transcript", "hello"])
    assert result.exit_code == 1 and _lines(result) == [
        "error: a transcript belongs to one file, but 2 files were given; predict the file with a transcript on its own"]
