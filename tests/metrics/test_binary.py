"""Binary metrics against scikit-learn and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from cspine.metrics.binary import (
    auc,
    average_precision,
    bootstrap_ci,
    roc_curve,
    threshold_metrics,
    youden_threshold,
)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_auc_one_class_is_nan():
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_threshold_metrics_hand_checked():
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.5]
    m = threshold_metrics(y, s, 0.5)
    # called positive: 0.9, 0.6 (true), 0.7, 0.5 (false) -> tp 2, fp 2, fn 1, tn 2
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 2, 2, 1)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(2 / 4)
    assert m.precision == pytest.approx(2 / 4)
    assert m.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert m.accuracy == pytest.approx(4 / 7)


def test_precision_undefined_without_positive_calls():
    m = threshold_metrics([0, 1], [0.1, 0.2], 0.5)
    assert m.tp == 0 and math.isnan(m.precision) and m.sensitivity == 0.0


def test_youden_point_on_toy():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.65, 0.6, 0.7, 0.8]
    # thresholds: 0.8 J=1/3, 0.7 J=2/3, 0.65 J=2/3-1/3=1/3, 0.6 J=1-1/3=2/3, 0.2 J=1-2/3, 0.1 J=0
    # tie at J=2/3 between 0.7 and 0.6: the higher threshold (fewer positive calls) wins
    assert youden_threshold(y, s) == pytest.approx(0.7)
    y2 = [0, 0, 1, 1]
    s2 = [0.1, 0.3, 0.35, 0.9]
    assert youden_threshold(y2, s2) == pytest.approx(0.35)  # perfect separation, J = 1
    m = threshold_metrics(y2, s2, youden_threshold(y2, s2))
    assert m.sensitivity == 1.0 and m.specificity == 1.0


def test_bootstrap_ci_contains_point_and_is_seeded():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 80)
    s = rng.random(80) + 0.4 * y
    point = auc(y, s)
    low, high = bootstrap_ci(y, s, n_boot=500, seed=3)
    assert low < point < high
    assert 0.0 <= low and high <= 1.0
    assert bootstrap_ci(y, s, n_boot=500, seed=3) == (low, high)


def test_bootstrap_ci_handles_one_class_resamples():
    # 1 positive in 12: many resamples hold no positive and must be dropped, not crash
    y = [1] + [0] * 11
    s = [0.9] + list(np.linspace(0, 0.8, 11))
    low, high = bootstrap_ci(y, s, n_boot=300, seed=0)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([0, 0, 0], [0.1, 0.2, 0.3]))
