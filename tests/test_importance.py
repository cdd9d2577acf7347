"""The importance search's decision rule and ρ_eliminate (000 §4, §6.2), on hand-made seed scores."""

from __future__ import annotations

import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from pipeline.importance import ImportanceError, ImportanceParams, decide, derive_rho

ALL = {0: 0.36, 1: 0.35, 2: 0.37, 3: 0.36, 4: 0.34}


def test_decide_uses_one_sided_paired_tests_with_holm():
    missing = {
        "audio": {0: 0.35, 1: 0.355, 2: 0.36, 3: 0.365, 4: 0.335},  # no clear drop
        "video": {0: 0.27, 1: 0.26, 2: 0.29, 3: 0.27, 4: 0.25},  # large drop
        "physio": {0: 0.352, 1: 0.343, 2: 0.358, 3: 0.355, 4: 0.331},  # small consistent drop
    }
    important, tests = decide(ALL, missing, 0.05)
    seeds = sorted(ALL)
    p = [sps.ttest_rel([ALL[s] for s in seeds], [missing[m][s] for s in seeds], alternative="greater").pvalue for m in missing]
    reject, adjusted, _, _ = multipletests(p, alpha=0.05, method="holm")
    assert [tests[m]["p"] for m in missing] == pytest.approx(p)
    assert [tests[m]["p_holm"] for m in missing] == pytest.approx(adjusted)
    assert important == [m for m, r in zip(missing, reject) if r]
    assert "video" in important and "audio" not in important
    assert tests["video"]["mean_drop"] == pytest.approx(0.356 - 0.268)
    # a minimum effect size keeps a small consistent drop out
    assert decide(ALL, missing, 0.05, min_drop=0.05)[0] == ["video"]
    # a better score without the modality is never "important" (one-sided)
    assert decide(ALL, {"x": {s: v + 0.05 for s, v in ALL.items()}}, 0.05)[0] == []


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
    assert ImportanceParams().alpha == 0.05 and ImportanceParams().rho == "equal"
    with pytest.raises(ValueError):
        ImportanceParams(alpha=0.05, typo=1)
