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


# ------------------------------------------------------------------------------------------------
# shared helpers for the statistical tests

from pipeline.missing import (  # noqa: E402
    AVAILABILITY_SHARES,
    CLIP_ZERO_LEVELS,
    FRAME_LEVELS,
    RANDOM_MISSING_RATES,
    STRATEGIES,
    Availability,
    ClipZero,
    FrameRepeat,
    FrameZero,
    RandomMissing,
    StrategyError,
    make_strategy,
    strategy_names,
    validate_strategy_params,
)

MODS = ["face", "acoustic", "text"]


def _batch(b=400, t=20, dims=(3, 2, 4), present=1.0, seed=1, kind="torch"):
    """Batch with distinct non-zero values per (sample, step) so repeats and zeros are visible."""
    rng = np.random.default_rng(seed)
    x, mask = {}, {}
    for m, d in zip(MODS, dims):
        v = rng.uniform(1.0, 2.0, size=(b, t, d)).astype(np.float32)
        mk = rng.random((b, t)) < present
        x[m], mask[m] = np.where(mk[..., None], v, 0).astype(np.float32), mk  # 0 where absent (Segments)
    if kind == "torch":
        return {k: torch.from_numpy(v) for k, v in x.items()}, {k: torch.from_numpy(v) for k, v in mask.items()}
    return x, mask


def _np(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _within(k, n, p, sigmas=3.0):
    """k successes of n Bernoulli(p) draws are within `sigmas` standard deviations of n·p."""
    sd = np.sqrt(n * p * (1 - p))
    return abs(k - n * p) <= sigmas * sd + 1e-9


def _snapshot(x, mask):
    return {k: v.clone() for k, v in x.items()}, {k: v.clone() for k, v in mask.items()}


def _unchanged(x, mask, snap):
    return all(torch.equal(x[k], snap[0][k]) and torch.equal(mask[k], snap[1][k]) for k in x)


def _rows_dropped(x2, m2, m):
    """Sequences whose modality m is wholly absent and zero (input fully present)."""
    full = ~_np(m2[m]).any(axis=1)
    assert np.all(_np(x2[m])[full] == 0)
    return full


# ------------------------------------------------------------------------------------------------
# training strategies


def test_make_strategy_names_params_and_errors():
    assert set(STRATEGIES) == {"standard", "auxformer", "clip_zero", "frame_zero", "frame_repeat", "dynamic", "eliminate", "one_to_one"}
    s = make_strategy("clip_zero", MODS)
    assert s.params.p_clip == 0.5 and s.targets == ("face",) and s.params.zero_fill  # 002 §3.3 default, first modality
    assert make_strategy("frame_zero", MODS).params.p_frame == 0.5
    assert make_strategy("frame_repeat", MODS, {"modalities": ["text"]}).targets == ("text",)
    d = make_strategy("dynamic", MODS)
    assert (d.params.p_miss, d.params.ramp_epochs, d.targets) == (0.2, 5, tuple(MODS))
    a = make_strategy("auxformer", MODS)
    assert (a.audio, a.video, a.params.p_audio, a.params.p_video) == (("face",), ("acoustic",), 0.2, 0.2)
    a = make_strategy("auxformer", MODS, {"audio": ["acoustic", "text"], "video": "face"})
    assert (a.audio, a.video) == (("acoustic", "text"), ("face",))
    with pytest.raises(StrategyError, match="unknown training strategy 'dropout'.*auxformer"):
        make_strategy("dropout", MODS)
    with pytest.raises(StrategyError, match="p_clipp.*Extra inputs"):
        make_strategy("clip_zero", MODS, {"p_clipp": 0.3})
    with pytest.raises(StrategyError, match="p_frame"):
        make_strategy("frame_zero", MODS, {"p_frame": 1.5})
    with pytest.raises(StrategyError, match="subset"):
        make_strategy("clip_zero", MODS, {"modalities": ["speech"]})
    with pytest.raises(StrategyError, match="overlap"):
        make_strategy("auxformer", MODS, {"audio": "face", "video": "face"})
    with pytest.raises(StrategyError, match="two modalities"):
        make_strategy("auxformer", ["face"])
    with pytest.raises(StrategyError, match="importance search"):
        make_strategy("eliminate", MODS)
    with pytest.raises(StrategyError, match="> 1"):
        make_strategy("eliminate", MODS, importance={"rho": {"face": 0.6, "text": 0.5}})
    with pytest.raises(StrategyError, match="must map"):
        make_strategy("eliminate", MODS, importance={"rho": {"speech": 0.2}})
    e = make_strategy("eliminate", MODS, {"rho": {"text": 0.2}}, importance={"important": ["face"], "rho": {"face": 0.5}})
    assert e.rho == {"text": 0.2}  # an explicit setting overrides the importance search
    e = make_strategy("eliminate", MODS, importance={"important": ["text", "face"], "rho": {"text": 0.3, "face": 0.3}, "rho_none": 0.4})
    assert list(e.rho) == ["face", "text"]  # importance.json entry; the model's modality order
    with pytest.raises(StrategyError, match="importance must be"):
        make_strategy("eliminate", MODS, importance={"face": 0.2})


def test_strategy_names_and_params_validated_without_modalities():
    assert strategy_names() == ("standard", "auxformer", "clip_zero", "frame_zero", "frame_repeat", "dynamic", "eliminate", "one_to_one")
    assert strategy_names() == tuple(STRATEGIES)
    p = validate_strategy_params("frame_repeat", {"p_frame": 0.3, "modalities": ["text"]})
    assert (p.p_frame, p.modalities, p.zero_fill) == (0.3, ["text"], True)
    assert validate_strategy_params("clip_zero", None) == STRATEGIES["clip_zero"].Params()  # paper defaults
    assert validate_strategy_params("eliminate", {"rho": {"face": 0.2}}).rho == {"face": 0.2}
    with pytest.raises(StrategyError, match="unknown training strategy 'dropout'; known: standard, auxformer"):
        validate_strategy_params("dropout", {})
    with pytest.raises(StrategyError, match=r"strategy 'dynamic': .*p_mis: Extra inputs"):
        validate_strategy_params("dynamic", {"p_mis": 0.1})
    with pytest.raises(StrategyError, match=r"strategy 'auxformer': .*p_audio: .*less than or equal to 1"):
        validate_strategy_params("auxformer", {"p_audio": 2})
    with pytest.raises(StrategyError, match="strategy 'standard': parameters must be a mapping"):
        validate_strategy_params("standard", ["zero_fill"])


def test_targeted_strategies_share_one_base():
    from pipeline.missing.strategies import _Targeted

    for name, level in [("clip_zero", "p_clip"), ("frame_zero", "p_frame"), ("frame_repeat", "p_frame")]:
        s = make_strategy(name, MODS, {"modalities": ["acoustic", "text"], level: 0.25})
        assert isinstance(s, _Targeted) and s.targets == ("acoustic", "text") and getattr(s.params, level) == 0.25


def test_standard_is_identity():
    x, mask = _batch(b=5)
    x2, m2 = make_strategy("standard", MODS).apply(x, mask, np.random.default_rng(0), 1)
    assert all(x2[k] is x[k] and m2[k] is mask[k] for k in x) and x2 is not x


@pytest.mark.parametrize(
    "name,params,importance",
    [
        ("auxformer", None, None),
        ("clip_zero", {"modalities": ["face", "text"]}, None),
        ("frame_zero", None, None),
        ("frame_repeat", None, None),
        ("dynamic", None, None),
        ("eliminate", None, {"rho": {"face": 0.3, "acoustic": 0.3}}),
    ],
)
def test_strategies_do_not_modify_inputs_and_are_reproducible(name, params, importance):
    x, mask = _batch(b=64, present=0.8)
    snap = _snapshot(x, mask)
    s = make_strategy(name, MODS, params, importance)
    out1 = s.apply(x, mask, np.random.default_rng(7), 5)
    out2 = s.apply(x, mask, np.random.default_rng(7), 5)
    out3 = s.apply(x, mask, np.random.default_rng(8), 5)
    assert _unchanged(x, mask, snap)
    assert all(torch.equal(out1[1][k], out2[1][k]) and torch.equal(out1[0][k], out2[0][k]) for k in x)
    assert any(not torch.equal(out1[1][k], out3[1][k]) for k in x)  # the generator matters
    assert all(out1[0][k].dtype == torch.float32 and out1[1][k].dtype == torch.bool for k in x)
    # zero where absent (Segments contract) for whatever became absent
    for k in x:
        newly = snap[1][k] & ~out1[1][k]
        assert torch.all(out1[0][k][newly] == 0)


def test_auxformer_splits_20_20_60():
    x, mask = _batch(b=50, t=4)
    s = make_strategy("auxformer", MODS, {"audio": "acoustic", "video": "face"})
    rng = np.random.default_rng(0)
    counts = np.zeros(3)
    for _ in range(200):
        x2, m2 = s.apply(x, mask, rng, 1)
        a, v = _rows_dropped(x2, m2, "acoustic"), _rows_dropped(x2, m2, "face")
        assert not (a & v).any()  # disjoint groups
        assert a.sum() == 10 and v.sum() == 10  # exactly 20 % each of 50
        assert torch.equal(m2["text"], mask["text"])  # other modality untouched
        counts += [a.sum(), v.sum(), (~a & ~v).sum()]
    assert np.allclose(counts / counts.sum(), [0.2, 0.2, 0.6])
    # a batch of 7: sizes ⌊1.4⌋ or ⌈1.4⌉, 1.4 in expectation
    xs, ms = _batch(b=7, t=3)
    sizes = []
    for _ in range(2000):
        x2, m2 = s.apply(xs, ms, rng, 1)
        sizes.append(_rows_dropped(x2, m2, "acoustic").sum())
    assert set(sizes) == {1, 2} and abs(np.mean(sizes) - 1.4) < 0.05


def test_auxformer_batch_unit_zeroes_whole_batches():
    x, mask = _batch(b=8, t=3)
    s = make_strategy("auxformer", MODS, {"unit": "batch"})
    rng = np.random.default_rng(1)
    kinds = []
    for _ in range(2000):
        x2, m2 = s.apply(x, mask, rng, 1)
        a, v = _rows_dropped(x2, m2, "face").sum(), _rows_dropped(x2, m2, "acoustic").sum()
        assert (a, v) in {(8, 0), (0, 8), (0, 0)}
        kinds.append(0 if a else 1 if v else 2)
    share = np.bincount(kinds, minlength=3) / len(kinds)
    assert _within(share[0] * 2000, 2000, 0.2) and _within(share[1] * 2000, 2000, 0.2)


def test_clip_zero_rate_and_zero_fill_option():
    x, mask = _batch(b=2000, t=5)
    x2, m2 = make_strategy("clip_zero", MODS).apply(x, mask, np.random.default_rng(0), 1)
    rows = _rows_dropped(x2, m2, "face")
    assert _within(rows.sum(), 2000, 0.5)
    kept = ~rows
    assert torch.equal(x2["face"][kept], x["face"][kept]) and torch.equal(m2["face"][kept], mask["face"][kept])
    assert torch.equal(m2["acoustic"], mask["acoustic"]) and x2["acoustic"] is x["acoustic"]
    x3, m3 = make_strategy("clip_zero", MODS, {"p_clip": 0.2, "zero_fill": False}).apply(x, mask, np.random.default_rng(0), 1)
    rows = ~_np(m3["face"]).any(axis=1)
    assert _within(rows.sum(), 2000, 0.2) and torch.equal(x3["face"], x["face"])  # mask only


def test_frame_zero_rate():
    x, mask = _batch(b=500, t=40)
    x2, m2 = make_strategy("frame_zero", MODS, {"p_frame": 0.5}).apply(x, mask, np.random.default_rng(3), 1)
    gone = ~_np(m2["face"])
    assert _within(gone.sum(), gone.size, 0.5)
    assert np.all(_np(x2["face"])[gone] == 0) and np.array_equal(_np(x2["face"])[~gone], _np(x["face"])[~gone])
    assert 0.45 < gone.mean(axis=1).mean() < 0.55 and gone.any(axis=1).all()  # per frame, not per clip


def test_frame_repeat_repeats_the_last_kept_frame_exactly():
    x, mask = _batch(b=300, t=30, present=0.9)
    s = make_strategy("frame_repeat", MODS)
    x2, m2 = s.apply(x, mask, np.random.default_rng(5), 1)
    xv, xo, mv, mo = _np(x2["face"]), _np(x["face"]), _np(m2["face"]), _np(mask["face"])
    changed = np.zeros(mo.shape, bool)
    orphans = 0
    for b in range(xo.shape[0]):
        last = None  # last step whose values survive unchanged (a kept frame)
        for t in range(xo.shape[1]):
            if not mo[b, t]:  # absent frames stay as they are
                assert not mv[b, t] and np.array_equal(xv[b, t], xo[b, t])
                continue
            if np.array_equal(xv[b, t], xo[b, t]) and mv[b, t]:
                last = t
                continue
            changed[b, t] = True
            if last is None:  # nothing to repeat: absent and zero
                assert not mv[b, t] and np.all(xv[b, t] == 0)
                orphans += 1
            else:
                assert mv[b, t] and np.array_equal(xv[b, t], xo[b, last])
    n_present = mo.sum()
    assert _within(changed.sum(), n_present, 0.5) and orphans > 0
    assert torch.equal(m2["acoustic"], mask["acoustic"])
    # p = 1: nothing is kept, so the modality is absent everywhere
    x3, m3 = make_strategy("frame_repeat", MODS, {"p_frame": 1.0}).apply(x, mask, np.random.default_rng(0), 1)
    assert not m3["face"].any() and torch.all(x3["face"] == 0)


def test_frame_repeat_small_case_by_hand():
    x = {"v": np.arange(1, 6, dtype=np.float32).reshape(1, 5, 1)}
    mask = {"v": np.array([[True, True, False, True, True]])}
    from pipeline.missing.ops import _repeat_steps

    steps = np.array([[True, False, False, True, True]])
    xv, mv = _repeat_steps(x["v"], mask["v"], steps, zero_fill=True)
    # step 0: nothing before → absent/0; step 1 kept; step 2 absent stays; steps 3, 4 repeat step 1
    assert xv[0, :, 0].tolist() == [0.0, 2.0, 3.0, 2.0, 2.0]
    assert mv[0].tolist() == [False, True, False, True, True]


def test_dynamic_share_ramps_with_epoch_and_masks_p_miss_of_steps():
    s = make_strategy("dynamic", MODS)
    assert [s.share(e) for e in range(1, 8)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert make_strategy("dynamic", MODS, {"ramp_epochs": 1}).share(1) == 1.0
    x, mask = _batch(b=400, t=50)
    rng = np.random.default_rng(2)
    for epoch, share in [(1, 0.0), (2, 0.25), (3, 0.5), (5, 1.0), (9, 1.0)]:
        x2, m2 = s.apply(x, mask, rng, epoch)
        hit = np.zeros(400, bool)
        for m in MODS:
            gone = ~_np(m2[m])
            hit |= gone.any(axis=1)
            assert np.all(_np(x2[m])[gone] == 0)
        assert hit.sum() == round(400 * share)  # with T=50, p=0.2 every affected sample loses some step
        if share:
            steps = sum((~_np(m2[m]))[hit].sum() for m in MODS)
            assert _within(steps, hit.sum() * 50 * len(MODS), 0.2)
        else:
            assert _unchanged(x2, m2, _snapshot(x, mask))


def test_eliminate_drop_rates_follow_rho():
    x, mask = _batch(b=6, t=3)
    rho = {"face": 0.25, "text": 0.5}
    s = make_strategy("eliminate", MODS, importance={"rho": rho})
    rng = np.random.default_rng(4)
    n, drops = 4000, {m: 0 for m in MODS}
    for _ in range(n):
        x2, m2 = s.apply(x, mask, rng, 1)
        per = {m: _rows_dropped(x2, m2, m) for m in MODS}
        k = [m for m in MODS if per[m].any()]
        assert len(k) <= 1 and all(per[m].all() for m in k)  # per batch, one modality at most
        for m in k:
            drops[m] += 1
    assert drops["acoustic"] == 0
    assert _within(drops["face"], n, 0.25) and _within(drops["text"], n, 0.5)
    # ρ from params (000 §6.2 arousal: video 0.25), drawn per sample
    s = make_strategy("eliminate", MODS, {"rho": {"face": 0.25}, "unit": "sample"})
    xb, mb = _batch(b=4000, t=2)
    x2, m2 = s.apply(xb, mb, rng, 1)
    assert _within(_rows_dropped(x2, m2, "face").sum(), 4000, 0.25)


def test_one_to_one_draws_once_per_sample_at_its_rate():
    """003 §6 one-to-one: the incomplete training data are static: a sample loses the same steps in every
    batch and epoch (whatever its neighbours), each step with probability p_miss, on every modality."""
    s = make_strategy("one_to_one", MODS, {"p_miss": 0.3})
    assert s.static and s.targets == tuple(MODS)
    x, mask = _batch(b=400, t=50, kind="numpy")
    samples = np.arange(1000, 1400)
    x1, m1 = s.apply_static(x, mask, samples, seed=7)
    # the same samples in another order and another batch: the same steps lost
    order = np.random.default_rng(0).permutation(400)
    x2, m2 = s.apply_static({k: v[order] for k, v in x.items()}, {k: v[order] for k, v in mask.items()}, samples[order], seed=7)
    for m in MODS:
        assert np.array_equal(m2[m], m1[m][order]) and np.array_equal(x2[m], x1[m][order])
        lost = mask[m] & ~m1[m]
        assert _within(lost.sum(), mask[m].sum(), 0.3)  # the rate, of every modality
        assert np.all(x1[m][lost] == 0)
    # another seed (run): another draw; torch batches: the same draw as numpy
    assert not np.array_equal(s.apply_static(x, mask, samples, seed=8)[1]["face"], m1["face"])
    xt, mt = s.apply_static({k: torch.from_numpy(v) for k, v in x.items()}, {k: torch.from_numpy(v) for k, v in mask.items()}, samples, 7)
    assert all(np.array_equal(mt[m].numpy(), m1[m]) for m in MODS)
    with pytest.raises(StrategyError, match="apply_static"):
        s.apply(x, mask, np.random.default_rng(0), 1)
    assert not make_strategy("dynamic", MODS).static


def test_strategies_work_on_numpy_too():
    x, mask = _batch(b=10, kind="numpy")
    for name in ("auxformer", "clip_zero", "frame_zero", "frame_repeat", "dynamic"):
        x2, m2 = make_strategy(name, MODS).apply(x, mask, np.random.default_rng(0), 3)
        assert all(isinstance(x2[k], np.ndarray) and x2[k].shape == x[k].shape for k in x)


# ------------------------------------------------------------------------------------------------
# evaluation conditions


def test_condition_families_levels_and_round_trip():
    entries = [
        "all_present", "missing:face", "missing:face+text", "clip_zero:face@0.70", "frame_zero:text@0.95",
        "frame_repeat:acoustic@1", "random_missing@0.30", "random_missing:face@0.1", "availability:text@0.7",
    ]
    conds = parse_conditions(entries, MODS)
    got = [(c.name, c.family, c.modality, c.level) for c in conds]
    assert got == [
        ("all_present", "all_present", None, None),
        ("missing:face", "missing", "face", None),
        ("missing:face+text", "missing", ("face", "text"), None),
        ("clip_zero:face@0.7", "clip_zero", "face", 0.7),
        ("frame_zero:text@0.95", "frame_zero", "text", 0.95),
        ("frame_repeat:acoustic@1.0", "frame_repeat", "acoustic", 1.0),
        ("random_missing@0.3", "random_missing", None, 0.3),
        ("random_missing:face@0.1", "random_missing", "face", 0.1),
        ("availability:text@0.7", "availability", "text", 0.7),
    ]
    again = parse_conditions([c.name for c in conds], MODS)  # canonical names parse to themselves
    assert [c.name for c in again] == [c.name for c in conds]
    # writing a level differently gives the same condition (and so the same seed)
    assert [c.name for c in parse_conditions(["frame_zero:face@0.90", "frame_zero:face@.9"], MODS)] == ["frame_zero:face@0.9"]


def test_parse_errors_list_accepted_forms():
    with pytest.raises(ConditionError, match="accepted forms: all_present.*clip_zero:<modality>@<p>.*availability_grid"):
        parse_conditions(["clipzero:face@0.5"], MODS)
    with pytest.raises(ConditionError, match="not in \\[0, 1\\]"):
        parse_conditions(["frame_zero:face@1.5"], MODS)
    with pytest.raises(ConditionError, match="not a number"):
        parse_conditions(["clip_zero:face@half"], MODS)
    with pytest.raises(ConditionError, match="needs a modality"):
        parse_conditions(["clip_zero@0.5"], MODS)
    with pytest.raises(ConditionError, match="'speech'.*trained on"):
        parse_conditions(["availability:speech@0.5"], MODS)
    with pytest.raises(ConditionError, match="'speech'.*trained on"):
        parse_conditions(["missing:face+speech"], MODS)
    with pytest.raises(ConditionError, match="leaves no modality"):
        parse_conditions(["missing:face+text"], ["face", "text"])
    with pytest.raises(ConditionError, match="twice"):
        parse_conditions(["missing:face+face"], MODS)


def test_grid_expansion_counts():
    four = ["face", "acoustic", "speech", "text"]
    count = lambda e, mods=four: len(parse_conditions([e], mods))  # noqa: E731
    assert count("each_missing") == 4 and count("each_pair_missing") == 6
    assert [c.name for c in parse_conditions(["each_pair_missing"], MODS)] == [
        "missing:face+acoustic", "missing:face+text", "missing:acoustic+text"
    ]
    with pytest.raises(ConditionError, match="expands to nothing"):
        parse_conditions(["each_pair_missing"], ["face", "text"])  # a pair of two is everything
    assert count("clip_zero_grid") == 4 * 5 and count("frame_zero_grid") == 4 * 5 and count("frame_repeat_grid") == 4 * 5
    assert count("random_missing_grid") == 10 * 5 and count("availability_grid") == 9 * 4
    levels = sorted({c.level for c in parse_conditions(["clip_zero_grid"], four)})
    assert levels == sorted(CLIP_ZERO_LEVELS) and sorted({c.level for c in parse_conditions(["frame_zero_grid"], four)}) == sorted(FRAME_LEVELS)
    rm = parse_conditions(["random_missing_grid"], four)
    assert [c.level for c in rm if c.modality is None] == list(RANDOM_MISSING_RATES)
    assert np.allclose(RANDOM_MISSING_RATES, np.arange(10) / 10)
    assert {c.modality for c in rm} == {None, *four}
    assert np.allclose([c.level for c in parse_conditions(["availability_grid"], ["face"])], AVAILABILITY_SHARES)
    assert np.allclose(AVAILABILITY_SHARES, np.arange(1, 10) / 10)
    # grids and singles de-duplicate on canonical names
    assert count("frame_zero_grid") == len(parse_conditions(["frame_zero_grid", "frame_zero:face@0.90"], four))


def _apply(cond, x, mask):
    return cond.apply(x, mask, np.random.default_rng(condition_seed(cond.name)))


def test_condition_statistics():
    x, mask = _batch(b=1000, t=40, kind="numpy", present=0.9)
    n_present = mask["face"].sum()
    # clip_zero: a share p of sequences wholly absent
    for p in CLIP_ZERO_LEVELS:
        x2, m2 = _apply(ClipZero("face", p), x, mask)
        rows = ~m2["face"].any(axis=1)
        assert _within(rows.sum(), 1000, p) and np.all(x2["face"][rows] == 0)
        assert np.array_equal(m2["face"][~rows], mask["face"][~rows]) and m2["text"] is mask["text"]
    # frame_zero / random_missing: a share p of present frames absent
    for cond in (FrameZero("face", 0.85), RandomMissing("face", 0.3)):
        x2, m2 = _apply(cond, x, mask)
        assert _within((mask["face"] & ~m2["face"]).sum(), n_present, cond.level)
        assert m2["acoustic"] is mask["acoustic"]
    x2, m2 = _apply(RandomMissing(None, 0.4), x, mask)  # every modality, independently
    for m in MODS:
        assert _within((mask[m] & ~m2[m]).sum(), mask[m].sum(), 0.4) and np.all(x2[m][~m2[m]] == 0)
    assert not np.array_equal(m2["face"], m2["acoustic"])
    # frame_repeat at 0.9: a share 0.9 of present frames replaced (repeated or, with nothing kept
    # before them, absent)
    x2, m2 = _apply(FrameRepeat("face", 0.9), x, mask)
    changed = (mask["face"] & ~m2["face"]) | (np.any(x2["face"] != x["face"], axis=-1) & mask["face"])
    assert _within(changed.sum(), n_present, 0.9)
    # availability: exactly round(share · n_present) frames kept per sequence, at random positions
    for share in (0.1, 0.5, 0.9):
        x2, m2 = _apply(Availability("face", share), x, mask)
        kept = m2["face"].sum(axis=1)
        assert np.array_equal(kept, mask["face"].sum(axis=1) - np.floor((1 - share) * mask["face"].sum(axis=1) + 0.5 + 1e-9))
        assert np.all(m2["face"] <= mask["face"]) and np.all(x2["face"][~m2["face"]] == 0)
        # random, not contiguous: kept frames are spread over the whole sequence
        pos = np.nonzero(m2["face"])[1]
        assert abs(pos.mean() - 19.5) < 1.0
    # level 0 changes nothing, level 1 removes everything (except availability, which keeps a share)
    for cls in (ClipZero, FrameZero, FrameRepeat, RandomMissing):
        x0, m0 = _apply(cls("face", 0.0), x, mask)
        assert np.array_equal(m0["face"], mask["face"]) and np.array_equal(x0["face"], x["face"])
        x1, m1 = _apply(cls("face", 1.0), x, mask)
        assert not m1["face"].any() and np.all(x1["face"] == 0)


def test_conditions_are_reproducible_and_independent_of_other_modalities():
    x, mask = _batch(b=50, t=10, kind="numpy")
    snap = ({k: v.copy() for k, v in x.items()}, {k: v.copy() for k, v in mask.items()})
    for e in ["clip_zero_grid", "frame_zero_grid", "frame_repeat_grid", "random_missing_grid", "availability_grid"]:
        for c in parse_conditions([e], MODS):
            a, b = _apply(c, x, mask), _apply(c, x, mask)
            assert all(np.array_equal(a[1][k], b[1][k]) and np.array_equal(a[0][k], b[0][k]) for k in x)
    assert all(np.array_equal(x[k], snap[0][k]) and np.array_equal(mask[k], snap[1][k]) for k in x)
    # a modality's missing frames do not depend on which other modalities the data holds
    c = RandomMissing(None, 0.5)
    full = _apply(c, x, mask)[1]
    sub = _apply(c, {k: x[k] for k in ("face", "text")}, {k: mask[k] for k in ("face", "text")})[1]
    assert np.array_equal(full["face"], sub["face"]) and np.array_equal(full["text"], sub["text"])
    # torch tensors and numpy arrays give the same missing frames
    xt, mt = {k: torch.from_numpy(v) for k, v in x.items()}, {k: torch.from_numpy(v) for k, v in mask.items()}
    for c in (FrameRepeat("face", 0.5), Availability("text", 0.3), ClipZero("acoustic", 0.5)):
        xn, mn = _apply(c, x, mask)
        xt2, mt2 = _apply(c, xt, mt)
        assert all(np.array_equal(mn[k], mt2[k].numpy()) and np.array_equal(xn[k], xt2[k].numpy()) for k in x)


# ---- mechanisms beyond MCAR (imbalanced, mnar, burst, one_present) ---------------------------------

from pipeline.missing import (  # noqa: E402
    IMBALANCE_FACTOR,
    MECHANISM_LEVELS,
    Burst,
    ConditionContext,
    Imbalanced,
    OnePresent,
    WeakestMissing,
)


def _padded(b=40, t=30, seed=1):
    """Three modalities with ragged true lengths (mask ⊆ valid, padding absent and zero) and a few
    absent steps inside the valid part."""
    rng = np.random.default_rng(seed)
    length = rng.integers(10, t + 1, size=b)
    valid = np.arange(t)[None, :] < length[:, None]
    x, mask = {}, {}
    for m, d in (("a", 3), ("b", 5), ("c", 2)):
        mask[m] = valid & (rng.random((b, t)) < 0.9)
        x[m] = np.where(mask[m][..., None], rng.normal(size=(b, t, d)), 0).astype(np.float32)
    return x, mask, {m: valid for m in x}


def _ctx(x, valid, mean=None, std=None):
    return ConditionContext(valid=valid, mean=mean or {m: np.zeros(v.shape[-1], np.float32) for m, v in x.items()},
                            std=std or {m: np.ones(v.shape[-1], np.float32) for m, v in x.items()})


def _run(cond, x, mask, ctx):
    return cond.apply_with(x, mask, np.random.default_rng(condition_seed(cond.name)), ctx)


def _expected_drop(mask, rate):
    n = mask.sum(axis=1)
    return np.floor(rate * n + 0.5 + 1e-9).astype(int)


def test_mechanism_grids_and_names():
    names = [c.name for c in parse_conditions(["imbalanced_grid", "mnar_grid", "burst_grid", "one_present_grid"], ["a", "b"])]
    assert names == ([f"imbalanced:{m}@{lv}" for m in "ab" for lv in MECHANISM_LEVELS] + [f"mnar@{lv}" for lv in MECHANISM_LEVELS]
                     + [f"burst@{lv}" for lv in MECHANISM_LEVELS] + [f"one_present:{m}@{lv}" for m in "ab" for lv in MECHANISM_LEVELS])
    c = parse_conditions(["burst:a@0.50", "mnar:b@.2"], ["a", "b"], burst_mean=3)
    assert [(x.name, x.family, x.modality, x.level) for x in c] == [("burst:a@0.5", "burst", "a", 0.5), ("mnar:b@0.2", "mnar", "b", 0.2)]
    assert c[0].mean_len == 3.0
    assert parse_conditions(["imbalanced_grid", "all_present"], ["a"])[0].name == "all_present"  # one modality: nothing to imbalance
    with pytest.raises(ConditionError, match="needs a modality"):
        parse_conditions(["one_present@0.5"], ["a", "b"])
    with pytest.raises(ConditionError, match="not in"):
        parse_conditions(["burst@1.5"], ["a", "b"])


def test_imbalanced_hits_its_rates_exactly_and_never_makes_padding_present():
    x, mask, valid = _padded()
    x2, m2 = _run(Imbalanced("a", 0.6), x, mask, _ctx(x, valid))
    for m, rate in (("a", 0.6), ("b", 0.6 * IMBALANCE_FACTOR), ("c", 0.6 * IMBALANCE_FACTOR)):
        assert np.array_equal((mask[m] & ~m2[m]).sum(axis=1), _expected_drop(mask[m], rate)), m
        assert np.all(m2[m] <= mask[m]) and not (m2[m] & ~valid[m]).any() and np.all(x2[m][~m2[m]] == 0)
    # 0.6 of 'a' but 0.15 of the others, on the whole batch
    assert (mask["a"] & ~m2["a"]).sum() / mask["a"].sum() == pytest.approx(0.6, abs=0.01)
    assert (mask["b"] & ~m2["b"]).sum() / mask["b"].sum() == pytest.approx(0.15, abs=0.01)


def test_one_present_never_touches_the_fixed_modality():
    x, mask, valid = _padded()
    for rate in (0.3, 0.9, 1.0):
        x2, m2 = _run(OnePresent("b", rate), x, mask, _ctx(x, valid))
        assert m2["b"] is mask["b"] and x2["b"] is x["b"]
        for m in "ac":
            assert np.array_equal((mask[m] & ~m2[m]).sum(axis=1), _expected_drop(mask[m], rate))
            assert np.all(m2[m] <= mask[m])


def test_mnar_drops_the_weakest_steps_of_the_raw_features():
    # one sequence, 4 steps, 2 dims; mean (100, 0), std (10, 1): training RMS (√10100, 1)
    mean, std = {"a": np.array([100.0, 0.0], np.float32)}, {"a": np.array([10.0, 1.0], np.float32)}
    raw = np.array([[[100, 0.5], [0, 0], [200, 0], [100, 3]]], np.float32)
    x, mask = {"a": (raw - mean["a"]) / std["a"]}, {"a": np.ones((1, 4), bool)}
    # strengths ‖raw / rms‖: 1.11, 0, 1.99, 3.16 — the weakest three are steps 1, 0, 2 (the raw norm
    # alone, 100, 0, 200, 100.04, would keep step 2 instead of step 3)
    rms = np.sqrt(mean["a"].astype(float) ** 2 + std["a"].astype(float) ** 2)
    assert np.argsort(np.linalg.norm(raw[0] / rms, axis=-1)).tolist() == [1, 0, 2, 3]
    ctx = ConditionContext(mean=mean, std=std)
    for share, kept in ((0.25, [0, 2, 3]), (0.5, [2, 3]), (0.75, [3]), (1.0, [])):
        x2, m2 = _run(WeakestMissing("a", share), x, mask, ctx)
        assert np.flatnonzero(m2["a"][0]).tolist() == kept and np.all(x2["a"][~m2["a"]] == 0)
    x, mask, valid = _padded(b=6, t=12)
    # every modality on its own signal, exact counts, deterministic; padding stays absent
    _, m3 = _run(WeakestMissing(None, 0.3), x, mask, _ctx(x, valid))
    for m in x:
        assert np.array_equal((mask[m] & ~m3[m]).sum(axis=1), _expected_drop(mask[m], 0.3))
        assert np.all(m3[m] <= mask[m])
        norm = np.linalg.norm(x[m], axis=-1)  # mean 0, std 1: the raw features are the z-scores
        dropped, kept = mask[m] & ~m3[m], m3[m]
        for i in range(6):
            if dropped[i].any() and kept[i].any():
                assert norm[i][dropped[i]].max() <= norm[i][kept[i]].min()
    assert all(np.array_equal(m3[m], _run(WeakestMissing(None, 0.3), x, mask, _ctx(x, valid))[1][m]) for m in x)
    with pytest.raises(ConditionError, match="normalisation statistics"):
        WeakestMissing("a", 0.3).apply(x, mask, np.random.default_rng(0))


def test_bursts_are_contiguous_and_cover_their_rate_of_the_valid_steps():
    x, mask, valid = _padded(b=200, t=60)
    x = {"a": x["a"]}
    mask = {"a": valid["a"].copy()}  # all valid steps present: covered = made absent
    for rate in (0.3, 0.6):
        x2, m2 = _run(Burst("a", rate, mean_len=5), x, mask, _ctx(x, valid))
        hit = mask["a"] & ~m2["a"]
        assert np.array_equal(hit.sum(axis=1), _expected_drop(valid["a"], rate))  # exact per sequence
        assert not (m2["a"] & ~valid["a"]).any() and not hit[~valid["a"]].any()
        # contiguous: runs of missing steps are long (Bernoulli missing at 0.3 has runs of ~1.4 steps)
        starts = hit & ~np.concatenate([np.zeros((hit.shape[0], 1), bool), hit[:, :-1]], axis=1)
        mean_run = hit.sum() / starts.sum()
        # tolerance: spans cut at the sequence end and the last one cut to hit the rate make the
        # realised runs somewhat shorter than the mean span length 5 (merging makes them longer)
        assert 3.0 <= mean_run <= 10.0, mean_run
    # same seed → same mask; another rng → another mask
    a = _run(Burst("a", 0.3), x, mask, _ctx(x, valid))[1]["a"]
    assert np.array_equal(a, _run(Burst("a", 0.3), x, mask, _ctx(x, valid))[1]["a"])
    assert not np.array_equal(a, Burst("a", 0.3).apply_with(x, mask, np.random.default_rng(99), _ctx(x, valid))[1]["a"])
    # without `valid`, a row's timeline ends at its last present step
    _, m4 = Burst("a", 0.5).apply(x, mask, np.random.default_rng(0))
    assert np.array_equal((mask["a"] & ~m4["a"]).sum(axis=1), _expected_drop(valid["a"], 0.5))


def test_mechanisms_are_reproducible_and_work_on_torch():
    x, mask, valid = _padded(b=20, t=15)
    ctx = _ctx(x, valid)
    xt, mt = {k: torch.from_numpy(v) for k, v in x.items()}, {k: torch.from_numpy(v) for k, v in mask.items()}
    for c in parse_conditions(["imbalanced_grid", "mnar_grid", "burst_grid", "one_present_grid"], list(x)):
        (xa, ma), (xb, mb) = _run(c, x, mask, ctx), _run(c, x, mask, ctx)
        xc, mc = _run(c, xt, mt, ctx)
        for k in x:
            assert np.array_equal(ma[k], mb[k]) and np.array_equal(xa[k], xb[k])
            assert np.array_equal(ma[k], mc[k].numpy()) and np.array_equal(xa[k], xc[k].numpy())
            assert np.all(ma[k] <= mask[k])  # only ever removes presence: padding stays absent
