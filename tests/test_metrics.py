"""Metrics: reference values and agreement with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from pipeline.runs.metrics import (
    CLASSIFICATION_METRICS,
    accuracy,
    balanced_accuracy,
    ccc,
    classification_metrics,
    macro_f1,
    rmse,
    weighted_f1,
)


def test_ccc_conventions_on_the_reference_vectors():
    # audmetric.concordance_cc([0,1,2],[0,1,1]) = 0.6667 (population); MuSe 2022 code = 0.6923 (sample)
    assert ccc([0, 1, 2], [0, 1, 1]) == pytest.approx(2 / 3, abs=1e-12)
    assert ccc([0, 1, 2], [0, 1, 1], sample=True) == pytest.approx(9 / 13, abs=1e-12)
    assert round(ccc([0, 1, 2], [0, 1, 1]), 4) == 0.6667
    assert round(ccc([0, 1, 2], [0, 1, 1], sample=True), 4) == 0.6923


def test_ccc_properties():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    t -= t.mean()
    assert ccc(t, t) == pytest.approx(1.0)
    assert ccc(t, -t) == pytest.approx(-1.0)
    assert ccc(t, t + 1.0) < ccc(t, t)  # bias is penalised (unlike Pearson)
    p = rng.normal(size=200)
    cov = np.cov(t, p, ddof=0)[0, 1]
    assert ccc(t, p) == pytest.approx(2 * cov / (t.var() + p.var() + (t.mean() - p.mean()) ** 2))
    assert math.isnan(ccc([1, 1, 1], [1, 1, 1]))
    with pytest.raises(ValueError, match="3 values, y_pred 2"):
        ccc([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="non-finite"):
        ccc([0, np.nan, 2], [0, 1, 1])


def test_rmse():
    assert rmse([0, 1, 2], [0, 1, 1]) == pytest.approx(math.sqrt(1 / 3))
    assert rmse([1.5], [1.5]) == 0.0


def test_classification_reference_values():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    # per-class recall 1/2, 1, 1/2; precision 1/2, 2/3, 1; F1 1/2, 4/5, 2/3
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(2 / 3)
    assert macro_f1(y_true, y_pred) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # weighted by support 1, 2, 3
    y_true_w = [0, 1, 1, 2, 2, 2]
    y_pred_w = [0, 1, 0, 2, 2, 1]
    f1 = [2 / 3, 1 / 2, 4 / 5]
    assert weighted_f1(y_true_w, y_pred_w) == pytest.approx((1 * f1[0] + 2 * f1[1] + 3 * f1[2]) / 6)


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, size=50)
    y_pred = np.where(rng.random(50) < 0.5, y_true, rng.integers(0, 4, size=50))
    got = classification_metrics(y_true, y_pred)
    assert tuple(got) == CLASSIFICATION_METRICS
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert got["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert got["micro_f1"] == pytest.approx(got["accuracy"])
    assert got["macro_f1"] != pytest.approx(got["weighted_f1"])  # the vectors are unbalanced enough to tell


def test_classification_edge_cases():
    # a class never predicted: its F1 is 0, without warnings (class 1: precision 1/3, recall 1)
    got = classification_metrics([0, 1, 2, 2], [0, 1, 1, 1])
    assert got["macro_f1"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    # a predicted class absent from y_true (balanced accuracy is still defined)
    got = classification_metrics([0, 0, 1], [0, 2, 1])
    assert got["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    # labels= fixes the class set (a class absent from both scores 0)
    assert macro_f1([0, 1], [0, 1], labels=[0, 1, 2]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no values"):
        accuracy([], [])


def test_regression_metrics_per_target_and_mean():
    from pipeline.runs.metrics import regression_metric_names, regression_metrics

    rng = np.random.default_rng(1)
    t = rng.normal(size=(50, 2))
    p = t + rng.normal(0, 0.5, size=(50, 2))
    out = regression_metrics(t, p, ["arousal", "valence"])
    assert list(out) == regression_metric_names(["arousal", "valence"]) == [
        "ccc_arousal", "ccc_valence", "ccc_mean", "rmse_arousal", "rmse_valence",
    ]
    assert out["ccc_arousal"] == pytest.approx(ccc(t[:, 0], p[:, 0])) and out["rmse_valence"] == pytest.approx(rmse(t[:, 1], p[:, 1]))
    assert out["ccc_mean"] == pytest.approx((out["ccc_arousal"] + out["ccc_valence"]) / 2)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        regression_metrics(t[:, :1], p[:, :1], ["arousal", "valence"])
