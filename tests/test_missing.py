"""Missing-modality operations and evaluation conditions (pipeline.missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.missing import (
    AllPresent,
    ConditionError,
    MissingModality,
    condition_seed,
    drop_modalities,
    parse_conditions,
)


def _numpy():
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(3, 4, 2)).astype(np.float32), "b": rng.normal(size=(3, 4, 5)).astype(np.float32)}
    mask = {"a": rng.random((3, 4)) < 0.7, "b": np.ones((3, 4), bool)}
    return x, mask


def test_drop_numpy_whole_sequences_without_mutating_inputs():
    x, mask = _numpy()
    x0, m0 = {k: v.copy() for k, v in x.items()}, {k: v.copy() for k, v in mask.items()}
    x2, m2 = drop_modalities(x, mask, ["b"])
    assert not m2["b"].any() and np.all(x2["b"] == 0)
    assert x2["b"].dtype == np.float32 and x2["b"].shape == x["b"].shape
    assert x2["a"] is x["a"] and m2["a"] is mask["a"]  # untouched modalities shared
    for k in x:  # inputs unchanged
        assert np.array_equal(x[k], x0[k]) and np.array_equal(mask[k], m0[k])


def test_drop_without_zero_fill_keeps_values_and_rows_select_sequences():
    x, mask = _numpy()
    x2, m2 = drop_modalities(x, mask, ["b"], zero_fill=False)
    assert not m2["b"].any() and np.array_equal(x2["b"], x["b"])
    x3, m3 = drop_modalities(x, mask, ["a", "b"], rows=np.array([False, True, False]))
    for m in ("a", "b"):
        assert not m3[m][1].any() and np.all(x3[m][1] == 0)
        assert np.array_equal(m3[m][[0, 2]], mask[m][[0, 2]]) and np.array_equal(x3[m][[0, 2]], x[m][[0, 2]])
    x4, m4 = drop_modalities(x, mask, ["a"], rows=[2])  # indices work too
    assert not m4["a"][2].any() and np.array_equal(m4["a"][:2], mask["a"][:2])


def test_drop_torch_tensors():
    x, mask = _numpy()
    xt = {k: torch.from_numpy(v) for k, v in x.items()}
    mt = {k: torch.from_numpy(v) for k, v in mask.items()}
    x2, m2 = drop_modalities(xt, mt, ["a"], rows=torch.tensor([True, False, True]))
    assert isinstance(x2["a"], torch.Tensor) and x2["a"].dtype == torch.float32
    assert not m2["a"][[0, 2]].any() and torch.all(x2["a"][[0, 2]] == 0)
    assert torch.equal(m2["a"][1], mt["a"][1]) and torch.equal(x2["a"][1], xt["a"][1])
    assert torch.equal(mt["a"], torch.from_numpy(mask["a"]))  # input not modified
    x3, m3 = drop_modalities(xt, mt, ["b"])
    assert not m3["b"].any() and torch.all(x3["b"] == 0)


def test_drop_unknown_modality_is_an_error():
    x, mask = _numpy()
    with pytest.raises(ConditionError, match=r"\['z'\]"):
        drop_modalities(x, mask, ["z"])


def test_conditions_apply():
    x, mask = _numpy()
    rng = np.random.default_rng(0)
    xa, ma = AllPresent().apply(x, mask, rng)
    assert all(np.array_equal(ma[k], mask[k]) and np.array_equal(xa[k], x[k]) for k in x)
    cond = MissingModality("a")
    assert cond.name == "missing:a"
    xm, mm = cond.apply(x, mask, rng)
    assert not mm["a"].any() and np.all(xm["a"] == 0) and np.array_equal(mm["b"], mask["b"])


def test_parse_conditions():
    names = [c.name for c in parse_conditions(["all_present", "each_missing"], ["face", "acoustic", "text"])]
    assert names == ["all_present", "missing:face", "missing:acoustic", "missing:text"]
    names = [c.name for c in parse_conditions(["missing:text", "all_present", "each_missing"], ["face", "text"])]
    assert names == ["missing:text", "all_present", "missing:face"]  # duplicates dropped, order kept
    with pytest.raises(ConditionError, match="'speech'.*trained on"):
        parse_conditions(["missing:speech"], ["face", "text"])
    with pytest.raises(ConditionError, match="unknown condition 'half'"):
        parse_conditions(["half"], ["face"])
    with pytest.raises(ConditionError, match="empty"):
        parse_conditions([], ["face"])


def test_condition_seed_is_stable_and_distinct():
    # crc32 of the name: the same in every process and on every machine (unlike hash())
    assert condition_seed("missing:face") == 4244403497
    assert condition_seed("all_present") == 1736965721
    assert condition_seed("all_present", 1) == 1736965722
    assert condition_seed("missing:face") != condition_seed("missing:text")
