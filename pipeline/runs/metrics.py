"""Metrics. Classification via scikit-learn; CCC and RMSE for time-continuous targets.

Names used in every output, with the papers' aliases:
    accuracy           WA  (weighted accuracy = plain accuracy)
    balanced_accuracy  UA  (unweighted accuracy = mean per-class recall)
    macro_f1           UF1
    weighted_f1        WF1
    micro_f1           (= accuracy for single-label classification; AuxFormer reports it)
F1s use the classes found in y_true ∪ y_pred (scikit-learn's default) unless `labels` is given, and
score an undefined precision/recall as 0.

Regression (time-continuous targets, e.g. arousal/valence): `regression_metrics` gives ccc_<target>,
rmse_<target> per target and ccc_mean (their mean), each over ALL valid steps of the scored sequences
concatenated (one CCC per partition, not a mean of per-sequence CCCs — the MuSe/000 convention).

CCC: population statistics (ddof = 0, the audmetric convention: CCC([0,1,2],[0,1,1]) = 0.6667) by
default; `sample=True` uses ddof = 1 as the MuSe 2022 code does (0.6923 on the same vectors).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn import metrics as skm

ALIASES = {"accuracy": "WA", "balanced_accuracy": "UA", "macro_f1": "UF1", "weighted_f1": "WF1", "micro_f1": "micro-F1"}
CLASSIFICATION_METRICS = tuple(ALIASES)


def _pair(y_true: Sequence, y_pred: Sequence, dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true, dtype=dtype).reshape(-1), np.asarray(y_pred, dtype=dtype).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}")
    if t.size == 0:
        raise ValueError("no values to score")
    return t, p


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    return float(skm.accuracy_score(*_pair(y_true, y_pred)))


def balanced_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    return float(skm.balanced_accuracy_score(*_pair(y_true, y_pred)))


def _f1(y_true: Sequence, y_pred: Sequence, average: str, labels: Sequence | None) -> float:
    t, p = _pair(y_true, y_pred)
    return float(skm.f1_score(t, p, average=average, labels=labels, zero_division=0))


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    return _f1(y_true, y_pred, "macro", labels)


def weighted_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    return _f1(y_true, y_pred, "weighted", labels)


def micro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    return _f1(y_true, y_pred, "micro", labels)


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict[str, float]:
    """All of CLASSIFICATION_METRICS for one set of predictions."""
    with warnings.catch_warnings():
        # balanced_accuracy warns when y_pred holds a class absent from y_true; the score is still defined
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return {
            "accuracy": accuracy(y_true, y_pred),
            "balanced_accuracy": balanced_accuracy(y_true, y_pred),
            "macro_f1": macro_f1(y_true, y_pred, labels),
            "weighted_f1": weighted_f1(y_true, y_pred, labels),
            "micro_f1": micro_f1(y_true, y_pred, labels),
        }


def ccc(y_true: Sequence[float], y_pred: Sequence[float], sample: bool = False) -> float:
    """Concordance correlation coefficient 2·cov / (var_t + var_p + (mean_t − mean_p)²).

    Population statistics unless `sample`. NaN when the denominator is 0 (both constant and equal).
    """
    t, p = _pair(y_true, y_pred, float)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("CCC of non-finite values")
    ddof = 1 if sample else 0
    if sample and t.size < 2:
        raise ValueError("sample CCC needs at least 2 values")
    mt, mp = t.mean(), p.mean()
    cov = ((t - mt) * (p - mp)).sum() / (t.size - ddof)
    denom = t.var(ddof=ddof) + p.var(ddof=ddof) + (mt - mp) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def rmse(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    t, p = _pair(y_true, y_pred, float)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def regression_metric_names(targets: Sequence[str]) -> list[str]:
    """Metric names of `regression_metrics`, in output order."""
    return [f"ccc_{t}" for t in targets] + ["ccc_mean"] + [f"rmse_{t}" for t in targets]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str]) -> dict[str, float]:
    """CCC (population statistics) and RMSE per target and their mean CCC.

    `y_true`, `y_pred`: [n_steps, K] valid steps of the concatenated sequences, K = len(targets).
    """
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    if t.ndim != 2 or t.shape != p.shape or t.shape[1] != len(targets):
        raise ValueError(f"expected y_true and y_pred of shape [n, {len(targets)}], got {t.shape} and {p.shape}")
    out = {f"ccc_{name}": ccc(t[:, k], p[:, k]) for k, name in enumerate(targets)}
    out["ccc_mean"] = float(np.mean([out[f"ccc_{name}"] for name in targets]))
    out.update({f"rmse_{name}": rmse(t[:, k], p[:, k]) for k, name in enumerate(targets)})
    return {k: out[k] for k in regression_metric_names(targets)}
