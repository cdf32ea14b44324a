"""Multi-class metrics equal scikit-learn's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from cspine.metrics.multiclass import confusion_matrix, json_safe, multiclass_metrics


def _data(seed: int, n: int = 200, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    logits = np.round(logits, 1)  # ties in the scores exercise the tie handling of the AUC
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_sklearn(seed: int) -> None:
    y, p = _data(seed)
    names = ("normal", "fracture", "dislocation")
    m = multiclass_metrics(y, p, names)
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred, labels=[0, 1, 2]))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=np.nan)
    for k, name in enumerate(names):
        pc = m["per_class"][name]
        assert pc["sensitivity"] == pytest.approx(rec[k])
        assert pc["precision"] == pytest.approx(prec[k])
        assert pc["f1"] == pytest.approx(f1[k])
        assert pc["support"] == sup[k]
        # specificity = recall of the negative class in the one-vs-rest problem
        assert pc["specificity"] == pytest.approx(skm.recall_score(y != k, pred != k))
        assert pc["auc"] == pytest.approx(skm.roc_auc_score(y == k, p[:, k]))
    assert m["macro"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["macro"]["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["macro"]["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))


def test_undefined_values_are_nan_and_json_null() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0]])
    m = multiclass_metrics(y, p, ("a", "b", "c"))
    assert math.isnan(m["per_class"]["c"]["sensitivity"])  # no true "c"
    assert math.isnan(m["per_class"]["c"]["precision"])  # never predicted
    assert m["per_class"]["c"]["specificity"] == 1.0
    assert m["macro"]["sensitivity"] == pytest.approx((1.0 + 0.5) / 2)  # NaN left out of the mean
    assert json_safe(m)["per_class"]["c"]["auc"] is None


def test_confusion_matrix_rejects_bad_labels() -> None:
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
