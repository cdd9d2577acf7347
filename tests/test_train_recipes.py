"""The papers' training recipes in the loop (pipeline/train/recipes.py, applied by pipeline/train/loop.py):
optimiser, learning-rate schedule and the quantity early stopping and model selection follow.

Two kinds of tests: the real loop on a tiny synthetic task (tests/test_train_evaluate.py's
make_segments), and the same loop with scripted devel scores (`_devel_row` replaced) where the epoch
each rule must pick is known in advance.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from test_train_evaluate import DIMS, make_segments

import pipeline.train.loop as train_mod
from pipeline.runs.feed import TrainError, predict, task_split
from pipeline.runs.files import HISTORY_FILE, MODEL_FILE, load_trained, run_dir
from pipeline.runs.params import LOOP_FIELDS, LoopParams, TrainParams
from pipeline.train.loop import train_one
from pipeline.train.recipes import early_stop_column, make_optimizer, make_scheduler

TINY = TrainParams(
    modalities=list(DIMS), seeds=[0], epochs=6, batch_size=16, lr=3e-3, patience=50,
    model_params={"crossmodal": {"d_model": 8, "layers": 1, "heads": 2}},
)


@pytest.fixture(scope="module")
def segs():
    return make_segments(n=40)


def _run(segs, out, **loop):
    summary = train_one(segs, TINY.model_copy(update=loop), "crossmodal", "standard", 0, out, device="cpu", progress=False)
    return summary, pl.read_csv(run_dir(out, "crossmodal", "standard", 0) / HISTORY_FILE)


def _scripted(monkeypatch, loss, f1):
    """Epoch k's devel row is (loss[k-1], f1[k-1]) whatever the model does."""
    rows = iter(zip(loss, f1))

    def fake(task, split, out, targets):
        l, f = next(rows)
        return {"devel_loss": l, "devel_accuracy": f, "devel_macro_f1": f}

    monkeypatch.setattr(train_mod, "_devel_row", fake)


# ---- learning-rate schedules ----------------------------------------------------------------------


def test_step_schedule_decays_the_lr_every_lr_step_epochs(segs, tmp_path):
    summary, hist = _run(segs, tmp_path, epochs=7, lr_schedule="step", lr_step=2, lr_factor=0.5)
    assert summary["epochs_run"] == 7
    # halved at exactly epochs lr_step + 1 = 3, 2·lr_step + 1 = 5, 7 (torch StepLR)
    assert (hist["lr"] / 3e-3).to_list() == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25, 0.125])


def test_step_schedule_factor_and_defaults(tmp_path):
    lin = torch.nn.Linear(2, 1)
    p = TINY.model_copy(update={"lr_schedule": "step", "lr_step": 5, "lr_factor": 0.1})
    opt = make_optimizer(lin.parameters(), p)
    sched = make_scheduler(opt, p)
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and (sched.step_size, sched.gamma) == (5, 0.1)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([3e-3] * 5 + [3e-4] * 5 + [3e-5])
    assert make_scheduler(opt, TINY) is None  # default: no schedule
    assert TrainParams().lr_step == 5  # 001 §4.3: every five epochs


def test_plateau_schedule_follows_the_early_stopping_quantity(segs, tmp_path, monkeypatch):
    # the devel loss stalls at epochs 3 and 5-6 while macro-F1 rises every epoch
    loss = [1.0, 0.5, 0.6, 0.4, 0.45, 0.46, 0.3]
    f1 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    _scripted(monkeypatch, loss, f1)
    _, hist = _run(segs, tmp_path / "loss", epochs=7, early_stop="loss", lr_schedule="plateau", lr_patience=1)
    # lr_patience 1: × 0.5 after each epoch without a strictly lower loss (3, 5, 6)
    assert (hist["lr"] / 3e-3).to_list() == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25, 0.125])
    _scripted(monkeypatch, loss, f1)
    _, hist = _run(segs, tmp_path / "metric", epochs=7, early_stop="metric", lr_schedule="plateau", lr_patience=1)
    assert (hist["lr"] == 3e-3).all()  # the metric never stalls


# ---- optimisers -----------------------------------------------------------------------------------


def test_optimizers_are_torchs_with_momentum_and_weight_decay():
    params = list(torch.nn.Linear(3, 2).parameters())
    adam = make_optimizer(params, TINY)
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 3e-3 and adam.defaults["weight_decay"] == 0.0
    adamw = make_optimizer(params, TINY.model_copy(update={"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.01}))
    assert type(adamw) is torch.optim.AdamW and (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == (1e-4, 0.01)
    sgd = make_optimizer(params, TINY.model_copy(update={"optimizer": "sgd", "lr": 8e-4, "momentum": 0.8, "weight_decay": 1e-3}))
    assert type(sgd) is torch.optim.SGD
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (8e-4, 0.8, 1e-3)
    d = TrainParams()
    assert (d.optimizer, d.momentum, d.weight_decay, d.lr_schedule, d.early_stop) == ("adam", 0.9, 0.0, "none", "metric")


def test_sgd_run_records_its_recipe_and_a_model_override_applies(segs, tmp_path):
    p = TINY.model_copy(update={"model_train": {"crossmodal": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "epochs": 3}}})
    summary = train_one(segs, p, "crossmodal", "standard", 0, tmp_path, device="cpu", progress=False)
    hist = pl.read_csv(run_dir(tmp_path, "crossmodal", "standard", 0) / HISTORY_FILE)
    assert summary["epochs_run"] == 3 and (hist["lr"] == 0.05).all()
    _, info = load_trained(run_dir(tmp_path, "crossmodal", "standard", 0) / MODEL_FILE)
    assert (info["params"].optimizer, info["params"].momentum) == ("sgd", 0.9)
    assert all(f in LoopParams.model_fields for f in ("optimizer", "momentum", "early_stop", "lr_step"))
    assert set(LoopParams.model_fields) == set(LOOP_FIELDS)


def test_lr_grid_keeps_the_best_learning_rate_on_devel(segs, tmp_path):
    # 004 §4.2: one run per learning rate, the best on devel kept; 1e-9 cannot learn in 3 epochs
    p = TINY.model_copy(update={"epochs": 3, "model_train": {"crossmodal": {"lr_grid": [1e-9, 3e-2]}}})
    summary = train_one(segs, p, "crossmodal", "standard", 0, tmp_path, device="cpu", progress=False)
    target = run_dir(tmp_path, "crossmodal", "standard", 0)
    grid = pl.read_csv(target / "lr_grid.csv")
    assert grid["lr"].to_list() == [1e-9, 3e-2] and grid["selected"].to_list() == [False, True]
    assert grid["devel_macro_f1"][1] > grid["devel_macro_f1"][0]
    assert summary["lr"] == 3e-2 and summary["devel_macro_f1"] == grid["devel_macro_f1"][1]
    hist = pl.read_csv(target / HISTORY_FILE)
    assert (hist["lr"] == 3e-2).all() and len(hist) == summary["epochs_run"]
    model, info = load_trained(target / MODEL_FILE)
    assert info["params"].lr == 3e-2 and info["best_epoch"] == summary["best_epoch"]
    # the kept model is the chosen run's: a plain run at that lr gives the same weights
    plain = train_one(segs, TINY.model_copy(update={"epochs": 3, "lr": 3e-2}), "crossmodal", "standard", 0,
                      tmp_path / "plain", device="cpu", progress=False)
    ref, _ = load_trained(run_dir(tmp_path / "plain", "crossmodal", "standard", 0) / MODEL_FILE)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    assert plain["best_epoch"] == summary["best_epoch"]
    assert sorted(q.name for q in target.parent.iterdir()) == ["seed_0"]  # no candidate left behind
    assert sorted(q.name for q in target.iterdir()) == ["dvclive", "history.csv", "lr_grid.csv", "model.pt"]


# ---- early stopping and model selection -------------------------------------------------------------


def test_early_stop_on_loss_picks_the_lowest_devel_loss(segs, tmp_path, monkeypatch):
    # best macro-F1 at epoch 2, lowest loss at epoch 4; patience 2
    loss = [1.0, 0.8, 0.7, 0.4, 0.5, 0.45, 0.9, 0.9]
    f1 = [0.2, 0.9, 0.3, 0.5, 0.4, 0.6, 0.1, 0.1]
    _scripted(monkeypatch, loss, f1)
    s_loss, h_loss = _run(segs, tmp_path / "loss", epochs=8, patience=2, early_stop="loss")
    _scripted(monkeypatch, loss, f1)
    s_metric, h_metric = _run(segs, tmp_path / "metric", epochs=8, patience=2)
    assert s_loss == {"best_epoch": 4, "epochs_run": 6, "early_stop": "devel_loss", "devel_macro_f1": 0.5, "devel_loss": 0.4}
    assert s_metric == {"best_epoch": 2, "epochs_run": 4, "early_stop": "devel_macro_f1", "devel_macro_f1": 0.9}
    assert (h_loss["early_stop"] == "devel_loss").all() and (h_metric["early_stop"] == "devel_macro_f1").all()
    _, info = load_trained(run_dir(tmp_path / "loss", "crossmodal", "standard", 0) / MODEL_FILE)
    assert (info["early_stop"], info["best_epoch"]) == ("devel_loss", 4)


def test_ties_and_non_finite_losses_do_not_count_as_better(segs, tmp_path, monkeypatch):
    _scripted(monkeypatch, [0.5, 0.5, float("nan"), 0.5, 0.49], [0.1] * 5)
    s, _ = _run(segs, tmp_path, epochs=5, patience=3, early_stop="loss")
    assert (s["best_epoch"], s["epochs_run"]) == (1, 4)  # epochs 2-4 not strictly lower: stop


def test_the_kept_weights_are_those_of_the_lowest_loss_epoch(segs, tmp_path):
    summary, hist = _run(segs, tmp_path, epochs=6, early_stop="loss", lr=2e-2)
    losses = hist["devel_loss"].to_numpy()
    assert summary["best_epoch"] == int(np.argmin(losses)) + 1
    assert summary["devel_loss"] == pytest.approx(losses.min())
    model, info = load_trained(run_dir(tmp_path, "crossmodal", "standard", 0) / MODEL_FILE)
    dv = task_split(segs, "devel", list(DIMS), "classification", [])
    out = predict(model, dv.x, dv.mask, torch.device("cpu"), valid=dv.valid)
    devel_loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(out), torch.from_numpy(dv.y)))
    assert devel_loss == pytest.approx(losses.min(), rel=1e-5)


def test_invalid_recipe_values_are_one_line_errors_naming_the_key(tmp_path):
    from pipeline.params_checks import check_params

    (tmp_path / "params.yaml").write_text(
        "train:\n  optimizer: rmsprop\n  early_stop: los\n  lr_schedule: cosine\n  lr_step: 0\n  lr_grid:\n  - 0.1\n  - 0.1\n"
        "model:\n  auxformer:\n    train:\n      momentum: 1.5\n"
    )
    lines = check_params(tmp_path / "params.yaml")
    assert sorted(line.split(": ")[1] for line in lines) == [
        "model.auxformer.train.momentum", "train.early_stop", "train.lr_grid", "train.lr_schedule", "train.lr_step",
        "train.optimizer",
    ]
    assert all("\n" not in line for line in lines)
    assert any("'adam', 'adamw' or 'sgd'" in line for line in lines)
    with pytest.raises(TrainError, match="train.early_stop"):
        early_stop_column("los", "macro_f1")
