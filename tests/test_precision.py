"""The precision chooser (pipeline.extract.precision): pure logic, with a stubbed clock and stubbed
forward passes (the real networks are exercised in tests/test_resnet50.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.extract import precision as P

REF = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])


class Clock:
    """A fake timer: each forward pass advances it by its path's cost."""

    def __init__(self, cost: dict[str, float], outputs: dict[str, np.ndarray] | None = None, fail: set[str] = frozenset()):
        self.now, self.cost, self.fail = 0.0, cost, fail
        self.outputs = outputs or {"fp32": REF, "bf16": REF * 1.001}
        self.calls: list[str] = []

    def timer(self) -> float:
        return self.now

    def run(self, p: str) -> np.ndarray:
        self.calls.append(p)
        if p in self.fail:
            raise RuntimeError(f"{p} kernel not available")
        self.now += self.cost[p]
        return self.outputs.get(p, 0.0)  # the pilot's output is not used


IDENT = {"machine": {"cpu": "Test CPU", "amx": False, "avx512_bf16": True, "cores": 2, "threads": 1, "torch": "2.x"},
         "model": {"class": "Net", "shapes": "abc", "layer": "fc6", "weights": "random:0"}}


@pytest.mark.parametrize("fp32_s, bf16_s, expected, calls", [
    (1.0, 0.25, "bf16", ["fp32", "fp32", "bf16"]),  # even bf16's first pass is clearly faster: decided
    (0.25, 1.0, "fp32", ["fp32", "fp32", "bf16", "bf16"]),  # one timed bf16 pass shows it clearly slower
    (0.5, 0.5, "fp32", ["fp32", "fp32", "bf16", "bf16"] + ["bf16", "fp32"] * 2),  # close: all 3 rounds
])
def test_never_picks_the_slower_path(tmp_path, fp32_s, bf16_s, expected, calls):
    clock = Clock({"fp32": fp32_s, "bf16": bf16_s})
    d = P.choose_precision(clock.run, IDENT, path=tmp_path / "p.json", timer=clock.timer, repeats=3)
    assert d.precision == expected and d.measured
    assert (d.fp32_s, d.bf16_s) == (fp32_s, bf16_s)
    assert d.min_cosine == pytest.approx(1.0)
    assert clock.calls == calls  # fp32 warm-up + timed, bf16's first pass (agreement), then only what is unclear
    assert ("faster than fp32" if expected == "bf16" else "faster than bf16") in d.reason


def test_best_of_n_ignores_a_slow_outlier():
    # fp32: warm-up 9, timed 1.2; bf16: first pass 9 (set-up), timed 1.0 (close: another round),
    # then bf16 0.8 and fp32 3.0 (an outlier) → best 1.2 vs 0.8
    costs = iter([9.0, 1.2, 9.0, 1.0, 0.8, 3.0])
    clock = Clock({})
    clock.run = lambda p: (setattr(clock, "now", clock.now + next(costs)), clock.outputs[p])[1]
    d = P.measure(clock.run, repeats=2, timer=clock.timer, budget_s=100)
    assert (d.fp32_s, d.bf16_s, d.precision) == (pytest.approx(1.2), pytest.approx(0.8), "bf16")
    with pytest.raises(StopIteration):
        next(costs)  # every planned pass ran, and no other


def test_emulated_bf16_stops_after_its_first_pass_within_the_budget():
    """Issue 21: on a CPU without native bf16 (AMD EPYC, bf16 emulated at ~7x fp32's time) the
    measurement costs the fp32 warm-up and timed pass and one bf16 pass, not best-of-n of each."""
    clock = Clock({"fp32": 1.0, "bf16": 7.25})
    d = P.measure(clock.run, repeats=5, timer=clock.timer)
    assert d.precision == "fp32" and clock.calls == ["fp32", "fp32", "bf16"]
    assert clock.now == 9.25 <= 15  # a second bf16 pass would end past the budget
    assert (d.fp32_s, d.bf16_s) == (1.0, 7.25) and "bf16's first pass" in d.reason and "budget" in d.reason
    assert d.reason.startswith("measured")  # the table's notes leave out timings of such reasons
    # the same machine with cheap passes: one timed bf16 pass confirms it, no repeats
    cheap = Clock({"fp32": 0.1, "bf16": 0.725})
    d = P.measure(cheap.run, repeats=5, timer=cheap.timer)
    assert d.precision == "fp32" and cheap.calls == ["fp32", "fp32", "bf16", "bf16"]
    assert "budget" not in d.reason and "first pass" not in d.reason


def test_a_pilot_showing_bf16_emulated_decides_before_any_bf16_pass_of_the_network(tmp_path):
    """The pilot convolution 5x slower in bf16: fp32 at once, the network run in neither precision
    (on a CPU where one bf16 forward pass of the network takes minutes, the choice costs milliseconds)."""
    clock = Clock({"fp32": 1.0, "bf16": 60.0, "pilot fp32": 0.015, "pilot bf16": 0.083})
    pilot = lambda p: clock.run(f"pilot {p}")  # noqa: E731
    d = P.choose_precision(clock.run, IDENT, path=tmp_path / "p.json", timer=clock.timer, pilot=pilot)
    assert d.precision == "fp32" and "pilot" in d.reason and d.reason.startswith("measured") and d.min_cosine is None
    assert clock.calls == ["pilot fp32", "pilot bf16"] + ["pilot fp32", "pilot bf16"] * 2  # warm-up, best of 2
    assert (d.fp32_s, d.bf16_s) == (0.015, 0.083) and clock.now < 0.5
    assert P.cached_decision(IDENT, tmp_path / "p.json").precision == "fp32"  # kept like any decision
    # a pilot where bf16 is not clearly slower leaves the choice to the network's own passes
    close = Clock({"fp32": 1.0, "bf16": 0.25, "pilot fp32": 0.010, "pilot bf16": 0.012})
    d = P.measure(close.run, timer=close.timer, pilot=lambda p: close.run(f"pilot {p}"))
    assert d.precision == "bf16" and close.calls[6:] == ["fp32", "fp32", "bf16"] and d.bf16_s == 0.25
    # a pilot that raises is ignored: the network's bf16 pass tells (here: it fails too)
    broken = Clock({"fp32": 1.0, "bf16": 0.1, "pilot fp32": 0.01}, fail={"pilot bf16", "bf16"})
    d = P.measure(broken.run, timer=broken.timer, pilot=lambda p: broken.run(f"pilot {p}"))
    assert d.precision == "fp32" and d.reason.startswith("bf16 failed")


def test_the_conv_pilot_runs_in_both_precisions():
    pilot = P.conv_pilot("cpu")
    a, b = pilot("fp32"), pilot("bf16")
    assert np.isfinite([a, b]).all() and a != 0 and abs(a - b) < 0.05 * abs(a) + 1.0


def test_close_paths_repeat_only_within_the_budget():
    clock = Clock({"fp32": 1.0, "bf16": 0.9})
    d = P.measure(clock.run, repeats=10, timer=clock.timer, budget_s=5.0)
    # 1 + 1 + 0.9 spent; a bf16 round (0.9) fits, the next (0.9 + 1.0) would end at 5.7 s
    assert clock.calls == ["fp32", "fp32", "bf16", "bf16"] and clock.now == pytest.approx(3.8)
    assert d.precision == "bf16" and "stopped at the 5 s budget" in d.reason
    # a budget spent by the passes every measurement needs: decided on bf16's first pass
    slow = Clock({"fp32": 4.0, "bf16": 3.9})
    d = P.measure(slow.run, repeats=3, timer=slow.timer, budget_s=10.0)
    assert slow.calls == ["fp32", "fp32", "bf16"] and d.precision == "bf16" and d.bf16_s == pytest.approx(3.9)
    # with budget left, close paths get all their rounds (best of `repeats`)
    roomy = Clock({"fp32": 1.0, "bf16": 0.9})
    P.measure(roomy.run, repeats=3, timer=roomy.timer, budget_s=100)
    assert roomy.calls == ["fp32", "fp32", "bf16", "bf16"] + ["bf16", "fp32"] * 2


def test_bf16_outside_tolerance_gives_fp32(tmp_path):
    far = REF.copy()
    far[1] = [2.0, 1.0, 0.0]  # row 1 rotated: cosine well below 0.999
    clock = Clock({"fp32": 1.0, "bf16": 0.1}, outputs={"fp32": REF, "bf16": far})
    d = P.choose_precision(clock.run, IDENT, path=tmp_path / "p.json", timer=clock.timer)
    assert d.precision == "fp32" and "disagrees" in d.reason and d.min_cosine < P.MIN_COSINE
    # just inside / just outside the tolerance
    assert P.min_cosine(REF, REF * 3) == pytest.approx(1.0)
    assert P.min_cosine(REF, np.full_like(REF, np.nan)) == -1.0
    near = Clock({"fp32": 1.0, "bf16": 0.1}, outputs={"fp32": REF, "bf16": REF + [[0, 0, 0], [0.05, 0, 0]]})
    cos = P.min_cosine(REF, near.outputs["bf16"])
    assert 0.999 < cos < 1.0
    assert P.measure(near.run, timer=near.timer).precision == "bf16"
    assert P.measure(Clock(near.cost, near.outputs).run, tolerance=cos + 1e-6, timer=Clock(near.cost).timer).precision == "fp32"


def test_bf16_that_raises_gives_fp32(tmp_path):
    clock = Clock({"fp32": 1.0, "bf16": 0.1}, fail={"bf16"})
    d = P.choose_precision(clock.run, IDENT, path=tmp_path / "p.json", timer=clock.timer)
    assert d.precision == "fp32" and d.reason.startswith("bf16 failed: RuntimeError: bf16 kernel not available")
    assert d.bf16_s is None and d.fp32_s == 1.0
    assert json.loads((tmp_path / "p.json").read_text())[P.decision_key(IDENT)]["precision"] == "fp32"


def test_decision_is_cached_and_keyed(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "precision.json"
    monkeypatch.setenv(P.PRECISION_CACHE_ENV, str(path))
    assert P.decision_file() == path
    clock = Clock({"fp32": 1.0, "bf16": 0.25})
    first = P.choose_precision(clock.run, IDENT, timer=clock.timer)
    assert first.precision == "bf16" and first.measured and path.is_file()
    n = len(clock.calls)

    again = P.choose_precision(clock.run, IDENT, timer=clock.timer)  # same key: no timing at all
    assert len(clock.calls) == n
    assert (again.precision, again.fp32_s, again.bf16_s, again.measured) == ("bf16", 1.0, 0.25, False)

    newer = {**IDENT, "machine": {**IDENT["machine"], "torch": "2.y"}}  # another torch: measured again
    slow_bf16 = Clock({"fp32": 0.25, "bf16": 1.0})
    d = P.choose_precision(slow_bf16.run, newer, timer=slow_bf16.timer)
    assert d.precision == "fp32" and d.measured and slow_bf16.calls
    stored = json.loads(path.read_text())
    assert len(stored) == 2 and {e["identity"]["machine"]["torch"] for e in stored.values()} == {"2.x", "2.y"}
    assert P.choose_precision(clock.run, IDENT, timer=clock.timer).precision == "bf16"  # the first entry survived

    path.write_text("{not json")  # a damaged file is measured again and rewritten
    assert P.choose_precision(clock.run, IDENT, timer=clock.timer).measured
    assert P.decision_key(IDENT) in json.loads(path.read_text())


def test_default_location_follows_the_cache_root(monkeypatch, tmp_path):
    from pipeline.core import paths

    monkeypatch.delenv(P.PRECISION_CACHE_ENV, raising=False)
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "c")
    assert P.decision_file() == tmp_path / "c" / "precision.json"


def test_identities():
    import torch

    m = P.machine_identity("cpu")
    assert m["torch"] == torch.__version__ and m["cores"] >= 1 and m["threads"] == torch.get_num_threads()
    assert m["amx"] in (True, False, None) and m["avx512_bf16"] in (True, False, None) and m["cpu"]
    a = P.model_identity(torch.nn.Linear(4, 3), layer="x")
    assert a == P.model_identity(torch.nn.Linear(4, 3), layer="x")  # weights' values do not matter, shapes do
    assert a["shapes"] != P.model_identity(torch.nn.Linear(4, 2), layer="x")["shapes"]
    assert a["class"] == "torch.nn.modules.linear.Linear" and a["layer"] == "x"
