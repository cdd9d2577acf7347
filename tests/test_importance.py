"""The importance search's decision rule and ρ_eliminate (000 §4, §6.2), on hand-made seed scores."""

from __future__ import annotations

import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from pipeline.evaluate.importance import (
    ImportanceError,
    ImportanceParams,
    decide,
    derive_rho,
)

ALL = {0: 0.36, 1: 0.35, 2: 0.37, 3: 0.36, 4: 0.34}


def test_decide_uses_one_sided_paired_tests_with_holm():
    missing = {
        "audio": {0: 0.35, 1: 0.355, 2: 0.36, 3: 0.365, 4: 0.335},  # no clear drop
        "video": {0: 0.27, 1: 0.26, 2: 0.29, 3: 0.27, 4: 0.25},  # large drop
        "physio": {0: 0.352, 1: 0.343, 2: 0.358, 3: 0.355, 4: 0.331},  # small consistent drop
    }
    important, tests = decide(ALL, missing, 0.05, holm_scope=True, alternative="greater")
    seeds = sorted(ALL)
    p = [sps.ttest_rel([ALL[s] for s in seeds], [missing[m][s] for s in seeds], alternative="greater").pvalue for m in missing]
    reject, adjusted, _, _ = multipletests(p, alpha=0.05, method="holm")
    assert [tests[m]["p"] for m in missing] == pytest.approx(p)
    assert [tests[m]["p_holm"] for m in missing] == pytest.approx(adjusted)
    assert important == [m for m, r in zip(missing, reject) if r]
    assert "video" in important and "audio" not in important
    assert tests["video"]["mean_drop"] == pytest.approx(0.356 - 0.268)
    # a minimum effect size keeps a small consistent drop out
    assert decide(ALL, missing, 0.05, min_drop=0.05, holm_scope=True, alternative="greater")[0] == ["video"]
    # a better score without the modality is never "important" (one-sided or two-sided)
    better = {"x": {s: v + 0.05 + 0.001 * s for s, v in ALL.items()}}
    assert decide(ALL, better, 0.05, holm_scope=True, alternative="greater")[0] == []
    important, tests = decide(ALL, better, 0.05)
    assert important == [] and tests["x"]["significant"] and tests["x"]["mean_drop"] < 0


def test_rho_eliminate():
    assert derive_rho(["video"], 0.25) == {"video": 0.25}  # 000 §6.2, arousal
    assert derive_rho(["audio", "video"], "equal") == pytest.approx({"audio": 1 / 3, "video": 1 / 3})  # valence
    assert derive_rho(["video"], "equal") == {"video": 0.5}
    assert derive_rho(["a", "b"], {"a": 0.2, "b": 0.3, "c": 0.9}) == {"a": 0.2, "b": 0.3}
    assert derive_rho([], 0.25) == {}
    with pytest.raises(ImportanceError, match="sum to at most 1"):
        derive_rho(["a", "b", "c"], 0.4)
    with pytest.raises(ImportanceError, match=r"\['b'\]"):
        derive_rho(["a", "b"], {"a": 0.2})
    assert ImportanceParams().alpha == 0.05 and ImportanceParams().rho == "paper"
    with pytest.raises(ValueError):
        ImportanceParams(alpha=0.05, typo=1)


# ---- 000's scope: two-sided tests, Holm only where 000 applies it; ρ as documented -------------------


def _fake_tests(monkeypatch, pvalues, drop=0.01):
    """decide() on hand-made p-values: paired_ttest returns them (every modality with a mean drop)."""
    import pipeline.evaluate.importance as imp
    from pipeline.evaluate.stats import TTest

    calls = []

    def fake(a, b, alternative):
        m = next(k for k, v in MISSING.items() if v is b)
        calls.append(alternative)
        return TTest(3.0, pvalues[m], drop, len(a), alternative)

    monkeypatch.setattr(imp, "paired_ttest", fake)
    return calls


MISSING = {m: dict(ALL) for m in ("audio", "video", "physio")}


def test_holm_scope_changes_which_modalities_are_important(monkeypatch):
    calls = _fake_tests(monkeypatch, {"audio": 0.01, "video": 0.03, "physio": 0.04})
    # 000 §6.2: plain t-tests at p < 0.05 -> all three
    assert decide(ALL, MISSING, 0.05)[0] == ["audio", "video", "physio"]
    assert set(calls) == {"two-sided"}  # 000's default: a two-sided test for a difference
    # Holm across the three: 0.01·3 = 0.03 ≤ 0.05 rejects, 0.03·2 = 0.06 stops -> audio only
    important, tests = decide(ALL, MISSING, 0.05, holm_scope=True)
    assert important == ["audio"]
    assert [tests[m]["p_holm"] for m in MISSING] == pytest.approx([0.03, 0.06, 0.06])
    assert [tests[m]["significant"] for m in MISSING] == [True, False, False]
    # without Holm p_holm is still recorded, and p = alpha is not significant (000: "p-value < 0.05")
    _fake_tests(monkeypatch, {"audio": 0.05, "video": 0.049, "physio": 0.2})
    important, tests = decide(ALL, MISSING, 0.05)
    assert important == ["video"] and tests["video"]["p_holm"] == pytest.approx(3 * 0.049)


def test_importance_params_scope_and_validation():
    p = ImportanceParams()
    assert (p.alternative, p.holm, p.min_drop, p.rho) == ("two-sided", False, 0.0, "paper")
    assert ImportanceParams(holm=True, alternative="greater").holm is True
    for bad in ({"rho": 0}, {"rho": 1.5}, {"rho": {"a": 0.6, "b": 0.6}}, {"rho": "equl"}, {"alternative": "less"}, {"holm": "maybe"}):
        with pytest.raises(ValueError):
            ImportanceParams(**bad)


def test_rho_gives_exactly_the_documented_values():
    from pipeline.evaluate.importance import rho_none

    # 'paper' (000 §6.2): one important modality 0.25 (ρ_none 0.75), two 0.333 each (ρ_none 0.334)
    assert derive_rho(["video"], "paper") == {"video": 0.25}
    two = derive_rho(["audio", "video"], "paper")
    assert two == {"audio": 0.333, "video": 0.333} and rho_none(two) == 0.334
    assert derive_rho(["a", "b", "c"], "paper") == {m: 0.25 for m in "abc"}  # n ≥ 3: as 'equal'
    # 'equal' is 1/(n+1): 0.5 for one modality (not 000's 0.25)
    assert derive_rho(["video"], "equal") == {"video": 0.5} and rho_none({"video": 0.5}) == 0.5
    # a number or a map is taken as given
    assert derive_rho(["video"], 0.25) == {"video": 0.25} and rho_none({"video": 0.25}) == 0.75
    m = derive_rho(["audio", "video"], {"audio": 0.333, "video": 0.333})
    assert m == {"audio": 0.333, "video": 0.333} and rho_none(m) == 0.334
    assert rho_none({}) == 1.0
