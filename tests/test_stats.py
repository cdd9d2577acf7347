"""Significance tests and AUILC against scipy/statsmodels and hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from pipeline.evaluate.stats import (
    AUILC_RATES,
    StatsError,
    auilc,
    better_than_baselines,
    holm,
    not_different_from_all_present,
    paired_ttest,
    significantly_better,
)

RNG = np.random.default_rng(0)
A = RNG.normal(0.36, 0.03, 30)  # 30 seeds as in 000 §6
B = A - 0.01 + RNG.normal(0, 0.01, 30)


def test_paired_ttest_matches_scipy():
    for alt in ("greater", "less", "two-sided"):
        r = paired_ttest(A, B, alt)
        ref = sps.ttest_rel(A, B, alternative=alt)
        assert r.p == pytest.approx(ref.pvalue) and r.statistic == pytest.approx(ref.statistic)
        assert r.n == 30 and r.mean_diff == pytest.approx(np.mean(A - B))
    # by hand: t = mean(d) / (sd(d) / sqrt(n)), one-sided p from the t distribution with n-1 df
    d = A - B
    t = d.mean() / (d.std(ddof=1) / np.sqrt(d.size))
    assert paired_ttest(A, B, "greater").p == pytest.approx(sps.t.sf(t, d.size - 1))
    assert paired_ttest(A, B, "greater").p + paired_ttest(A, B, "less").p == pytest.approx(1.0)


def test_pairing_by_seed_and_degenerate_cases():
    a, b = {0: 0.5, 1: 0.6, 2: 0.7}, {2: 0.6, 0: 0.45, 1: 0.58}
    assert paired_ttest(a, b).p == pytest.approx(sps.ttest_rel([0.5, 0.6, 0.7], [0.45, 0.58, 0.6]).pvalue)
    with pytest.raises(StatsError, match=r"seeds \[3\]"):
        paired_ttest(a, {**b, 3: 0.1})
    with pytest.raises(StatsError, match="at least 2"):
        paired_ttest([0.5], [0.4])
    with pytest.raises(StatsError, match="one length"):
        paired_ttest([0.5, 0.6], [0.4])
    same = paired_ttest([0.5, 0.6], [0.5, 0.6])
    assert same.p == 1.0 and same.statistic == 0.0  # scipy gives NaN here
    shifted = [0.4, 0.5]
    assert paired_ttest([0.5, 0.6], shifted, "greater").p == 0.0 and paired_ttest([0.5, 0.6], shifted, "less").p == 1.0


def test_holm_matches_statsmodels():
    p = [0.01, 0.04, 0.03, 0.2]
    reject, adjusted = holm(p, 0.05)
    ref = multipletests(p, alpha=0.05, method="holm")
    assert reject.tolist() == ref[0].tolist() and adjusted == pytest.approx(ref[1])
    # by hand: sorted 0.01·4 = 0.04, 0.03·3 = 0.09, then max-accumulated; only the first rejects
    assert adjusted.tolist() == pytest.approx([0.04, 0.09, 0.09, 0.2]) and reject.tolist() == [True, False, False, False]
    r, adj = holm({"x": 0.01, "y": 0.04})
    assert r == {"x": True, "y": True} and adj == pytest.approx({"x": 0.02, "y": 0.04})


def test_markers():
    worse = A - 0.05 + RNG.normal(0, 0.005, 30)
    out = better_than_baselines(A, {"worse": worse, "same": A + RNG.normal(0, 0.01, 30)})
    assert out["worse"]["significant"] and not out["same"]["significant"]
    ps = [sps.ttest_rel(A, worse, alternative="greater").pvalue, out["same"]["p"]]
    assert [out["worse"]["p_holm"], out["same"]["p_holm"]] == pytest.approx(multipletests(ps, method="holm")[1])
    assert significantly_better(A, worse) and not significantly_better(worse, A)
    assert significantly_better(worse, A, higher_is_better=False)  # e.g. RMSE
    assert not_different_from_all_present(A + RNG.normal(0, 0.01, 30), A)
    assert not not_different_from_all_present(worse, A)


def test_auilc_is_the_trapezoid_sum_over_the_papers_grid():
    assert AUILC_RATES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    s = [0.8, 0.78, 0.75, 0.7, 0.66, 0.6, 0.55, 0.5, 0.45, 0.4]
    by_hand = sum((s[i + 1] + s[i]) / 2 * 0.1 for i in range(9))
    assert auilc(np.arange(10) / 10, s) == pytest.approx(by_hand)
    assert auilc(AUILC_RATES, [1.0] * 10) == pytest.approx(0.9)
    with pytest.raises(StatsError, match="not the grid"):
        auilc([0.0, 0.5, 0.9], [0.8, 0.6, 0.4])
    assert auilc([0.0, 0.5, 0.9], [0.8, 0.6, 0.4], expected=None) == pytest.approx(0.35 + 0.2)
    with pytest.raises(StatsError, match="increase"):
        auilc([0.0, 0.2, 0.1], [1, 1, 1], expected=None)
