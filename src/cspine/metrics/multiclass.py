"""Multi-class metrics of the radiograph paper: accuracy and one-vs-rest per-class figures.

For class k, with TP/FN/FP/TN counted one-vs-rest from the confusion matrix (rows = truth,
columns = prediction, as scikit-learn):

    sensitivity = TP / (TP + FN)        specificity = TN / (TN + FP)
    precision   = TP / (TP + FP)        F1 = 2 * precision * sensitivity / (precision + sensitivity)
    AUC         = area under the ROC curve of P(class k) against "is class k" (ties count 1/2)

A ratio whose denominator is zero is NaN (undefined), never silently 0. Macro averages are the
unweighted means over the classes, ignoring NaN (``numpy.nanmean``). Every figure equals
scikit-learn's (``precision_recall_fscore_support(zero_division=nan)``, ``roc_auc_score``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

PER_CLASS_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "precision", "f1", "auc")


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts; row = true class, column = predicted class."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape}, y_pred {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties = 1/2); NaN when one class is absent."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_class_metrics(y_true: Sequence[int] | np.ndarray, proba: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest sensitivity, specificity, precision, F1, AUC and support, one value per class.

    Args:
        y_true: true class indices, shape (N,).
        proba: class probabilities (or any scores), shape (N, C); the prediction is the argmax.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    n_classes = proba.shape[1]
    cm = confusion_matrix(y, proba.argmax(axis=1), n_classes)
    total = cm.sum()
    out: dict[str, list[float]] = {k: [] for k in (*PER_CLASS_METRICS, "support")}
    for k in range(n_classes):
        tp = cm[k, k]
        fn = cm[k].sum() - tp
        fp = cm[:, k].sum() - tp
        tn = total - tp - fn - fp
        sens, spec, prec = _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)  # = 2PR/(P+R), and defined when P or R is 0
        out["sensitivity"].append(sens)
        out["specificity"].append(spec)
        out["precision"].append(prec)
        out["f1"].append(f1)
        out["auc"].append(binary_auc(y == k, proba[:, k]))
        out["support"].append(float(cm[k].sum()))
    return {k: np.asarray(v) for k, v in out.items()}


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else math.nan


def multiclass_metrics(y_true: Sequence[int] | np.ndarray, proba: np.ndarray,
                       class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class one-vs-rest metrics, macro averages and the confusion matrix.

    Returns:
        ``{"n", "accuracy", "class_names", "per_class": {name: {metric: value}}, "macro": {metric:
        value}, "confusion_matrix": [[...]]}``; undefined values are NaN (``json_safe`` makes them
        ``null``).
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if proba.ndim != 2 or proba.shape[0] != y.shape[0] or proba.shape[1] != len(class_names):
        raise ValueError(f"proba has shape {proba.shape}; expected ({y.shape[0]}, {len(class_names)})")
    pc = per_class_metrics(y, proba)
    pred = proba.argmax(axis=1)
    return {
        "n": int(y.size),
        "accuracy": float((pred == y).mean()) if y.size else math.nan,
        "class_names": list(class_names),
        "per_class": {name: {m: float(pc[m][k]) for m in (*PER_CLASS_METRICS, "support")}
                      for k, name in enumerate(class_names)},
        "macro": {m: _nanmean(pc[m]) for m in PER_CLASS_METRICS},
        "confusion_matrix": confusion_matrix(y, pred, len(class_names)).tolist(),
    }


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by ``None`` recursively so the result is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
