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
        return self.outputs[p]


IDENT = {"machine": {"cpu": "Test CPU", "amx": False, "avx512_bf16": True, "cores": 2, "threads": 1, "torch": "2.x"},
         "model": {"class": "Net", "shapes": "abc", "layer": "fc6", "weights": "random:0"}}


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(1.0, 0.25, "bf16"), (0.25, 1.0, "fp32"), (0.5, 0.5, "fp32")])
def test_never_picks_the_slower_path(tmp_path, fp32_s, bf16_s, expected):
    clock = Clock({"fp32": fp32_s, "bf16": bf16_s})
    d = P.choose_precision(clock.run, IDENT, path=tmp_path / "p.json", timer=clock.timer, repeats=3)
    assert d.precision == expected and d.measured
    assert (d.fp32_s, d.bf16_s) == (fp32_s, bf16_s)
    assert d.min_cosine == pytest.approx(1.0)
    assert clock.calls == ["fp32"] * 4 + ["bf16"] * 4  # warm-up + 3 timed each
    assert ("faster than fp32" if expected == "bf16" else "faster than bf16") in d.reason


def test_best_of_n_ignores_a_slow_outlier():
    # fp32: warm-up 9, timed 5, 1, 1; bf16: warm-up 9, timed 0.8, 3, 0.8 → best 1.0 vs 0.8
    costs = iter([9.0, 5.0, 1.0, 1.0, 9.0, 0.8, 3.0, 0.8])
    clock = Clock({})
    clock.run = lambda p: (setattr(clock, "now", clock.now + next(costs)), clock.outputs[p])[1]
    d = P.measure(clock.run, repeats=3, timer=clock.timer)
    assert (d.fp32_s, d.bf16_s, d.precision) == (pytest.approx(1.0), pytest.approx(0.8), "bf16")


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
    from pipeline import paths

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
