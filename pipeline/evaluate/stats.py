"""Significance tests across seeds and the area under a missing-rate curve (the papers' protocols).

000 §6: every configuration is trained with many seeds (30 there); a result is *significantly better*
than another by a one-sided paired t-test (p < 0.05) and *significantly different* by a two-sided
one; comparisons against several baselines are corrected with Holm–Bonferroni (000 §6.1, Table 1).
Table 2's markers: ‡ = significantly better than the counterpart trained differently, ✓ = not
significantly different from the all-modalities-present result. Scores are paired by seed (the same
seed's model under two conditions, or two training modes sharing their seeds).

003 Eq. 19: AUILC = Σ_i (s_{i+1} + s_i)/2 · (r_{i+1} − r_i) over missing rates r = 0.0, 0.1, …, 0.9
(trapezoids over the seed means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from pipeline.core.errors import PipelineError

ALPHA = 0.05  # 000 §6
AUILC_RATES = tuple(round(0.1 * i, 1) for i in range(10))  # 003 §5: 0.0, 0.1, …, 0.9
Alternative = Literal["greater", "less", "two-sided"]


class StatsError(PipelineError, ValueError):
    """Scores that cannot be tested (unpaired, too few seeds, a wrong rate grid…)."""


@dataclass(frozen=True)
class TTest:
    statistic: float
    p: float
    mean_diff: float  # mean of a − b
    n: int
    alternative: str


def _paired(a: Sequence[float] | Mapping[int, float], b: Sequence[float] | Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Arrays paired by seed: mappings {seed: score} are matched on their common seeds (all must match)."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise StatsError("pair scores either both as {seed: score} or both as sequences")
        if set(a) != set(b):
            raise StatsError(f"scores are not paired: seeds {sorted(set(a) ^ set(b))} are on one side only")
        seeds = sorted(a)
        a, b = [a[s] for s in seeds], [b[s] for s in seeds]
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.ndim != 1:
        raise StatsError(f"paired scores must be two 1-D sequences of one length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise StatsError(f"a paired t-test needs at least 2 seeds, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise StatsError("non-finite scores")
    return x, y


def paired_ttest(a, b, alternative: Alternative = "two-sided") -> TTest:
    """scipy.stats.ttest_rel(a, b): 'greater' tests mean(a − b) > 0 ("a is better" for a higher-is-better
    metric), 'less' the opposite, 'two-sided' a difference. Identical pairs give p = 1 (no evidence)."""
    x, y = _paired(a, b)
    d = x - y
    if np.all(d == d[0]):
        # constant differences: scipy returns NaN (0/0) or ±inf; a zero difference is no evidence, and a
        # constant non-zero one is decisive
        p = 1.0 if d[0] == 0 or (alternative == "greater" and d[0] < 0) or (alternative == "less" and d[0] > 0) else 0.0
        stat = 0.0 if d[0] == 0 else float(np.sign(d[0]) * np.inf)
        return TTest(stat, p, float(d.mean()), x.size, alternative)
    r = sps.ttest_rel(x, y, alternative=alternative)
    return TTest(float(r.statistic), float(r.pvalue), float(d.mean()), x.size, alternative)


def holm(pvalues: Sequence[float] | Mapping[str, float], alpha: float = ALPHA):
    """Holm–Bonferroni (statsmodels multipletests, method 'holm'): (reject, adjusted p), as arrays, or
    as dicts keyed like `pvalues` when it is a mapping."""
    keys = list(pvalues) if isinstance(pvalues, Mapping) else None
    p = np.asarray([pvalues[k] for k in keys] if keys is not None else pvalues, float)
    if p.size == 0:
        return ({}, {}) if keys is not None else (np.zeros(0, bool), np.zeros(0))
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    if keys is not None:
        return dict(zip(keys, map(bool, reject))), dict(zip(keys, map(float, adjusted)))
    return reject, adjusted


def better_than_baselines(
    ours, baselines: Mapping[str, Sequence[float] | Mapping[int, float]], higher_is_better: bool = True, alpha: float = ALPHA
) -> dict[str, dict[str, float | bool]]:
    """000 Table 1: is `ours` significantly better than each baseline? One-sided paired t-tests,
    Holm-corrected across the baselines. {baseline: {p, p_holm, significant, mean_diff}}."""
    alt: Alternative = "greater" if higher_is_better else "less"
    tests = {name: paired_ttest(ours, b, alt) for name, b in baselines.items()}
    reject, adjusted = holm({k: t.p for k, t in tests.items()}, alpha)
    return {k: {"p": t.p, "p_holm": adjusted[k], "significant": reject[k], "mean_diff": t.mean_diff} for k, t in tests.items()}


def significantly_better(a, b, higher_is_better: bool = True, alpha: float = ALPHA) -> bool:
    """000 Table 2's ‡: `a` better than `b` by a one-sided paired t-test at `alpha`."""
    return paired_ttest(a, b, "greater" if higher_is_better else "less").p < alpha


def not_different_from_all_present(condition, all_present, alpha: float = ALPHA) -> bool:
    """000 Table 2's ✓: a missing-modality result NOT significantly different (two-sided) from the
    all-present one."""
    return paired_ttest(condition, all_present, "two-sided").p >= alpha


def auilc(rates: Sequence[float], scores: Sequence[float], expected: Sequence[float] | None = AUILC_RATES) -> float:
    """003 Eq. 19: trapezoidal area of `scores` (seed means) over increasing missing `rates`.

    `expected`: the rate grid the number claims to cover (default 0.0…0.9 step 0.1, 003 §5); the given
    rates must be exactly that grid (to 1e-9), so an AUILC over a partial grid is never reported as
    the paper's. Pass expected=None to accept any increasing grid."""
    r, s = np.asarray(rates, float), np.asarray(scores, float)
    if r.ndim != 1 or r.shape != s.shape or r.size < 2:
        raise StatsError(f"AUILC needs two 1-D sequences of one length >= 2, got {r.shape} and {s.shape}")
    if not np.all(np.diff(r) > 0):
        raise StatsError(f"AUILC: missing rates must increase, got {r.tolist()}")
    if expected is not None and (len(expected) != r.size or not np.allclose(r, expected, rtol=0, atol=1e-9)):
        raise StatsError(f"AUILC: rates {r.tolist()} are not the grid {list(expected)}")
    if not np.all(np.isfinite(s)):
        raise StatsError("AUILC of non-finite scores")
    return float(np.trapezoid(s, r))
