"""Binary classification metrics: ROC AUC (equal to scikit-learn's), bootstrap confidence
intervals, threshold metrics and the Youden point.

Everything here takes plain 1-D arrays (``y_true`` in {0, 1}, ``y_score`` any real score) and
returns plain floats, so that JSON reports and tests can use the results directly. Undefined
values (an AUC with one class, a precision with no positive call) are ``nan``, never an exception:
a small evaluation set must still produce a report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "ThresholdMetrics", "auc", "bootstrap_ci", "pr_curve", "roc_curve", "threshold_metrics",
    "youden_threshold", "average_precision",
]


def _as_arrays(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.size} values but y_score has {s.size}")
    if t.size and not np.isin(t, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("y_score holds NaN or infinite values")
    return t.astype(np.int8), s


def auc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties, as sklearn's
    ``roc_auc_score``); ``nan`` when only one class is present.

    Example:
        >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    t, s = _as_arrays(y_true, y_score)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks: a tie counts one half, as in the trapezoidal ROC area
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with one point per distinct score, starting at (0, 0).

    A sample is called positive when ``score >= threshold``; the first threshold is ``inf``.
    Raises ValueError when one class is absent (the curve is undefined).
    """
    t, s = _as_arrays(y_true, y_score)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both classes in y_true")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    # The last index of each run of equal scores: the curve moves once per distinct threshold.
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(t_sorted)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def pr_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) for decreasing thresholds, starting at recall 0 with
    precision 1 (the sklearn convention, reversed)."""
    t, s = _as_arrays(y_true, y_score)
    n_pos = int(t.sum())
    if n_pos == 0:
        raise ValueError("a precision-recall curve needs at least one positive in y_true")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(t_sorted)[last].astype(np.float64)
    called = (last + 1).astype(np.float64)
    precision = np.r_[1.0, tps / called]
    recall = np.r_[0.0, tps / n_pos]
    return precision, recall, np.r_[np.inf, s_sorted[last]]


def average_precision(y_true: Any, y_score: Any) -> float:
    """Step-wise area under the precision-recall curve (sklearn's ``average_precision_score``)."""
    t, _ = _as_arrays(y_true, y_score)
    if t.sum() == 0:
        return math.nan
    precision, recall, _ = pr_curve(y_true, y_score)
    return float(np.sum(np.diff(recall) * precision[1:]))


@dataclass(frozen=True)
class ThresholdMetrics:
    """Counts and rates of a binary decision ``score >= threshold``."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    specificity: float
    precision: float
    f1: float
    accuracy: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def threshold_metrics(y_true: Any, y_score: Any, threshold: float = 0.5) -> ThresholdMetrics:
    """Sensitivity, specificity, precision, F1 and accuracy of calling ``score >= threshold``.

    Example:
        >>> m = threshold_metrics([0, 0, 1, 1], [0.2, 0.6, 0.7, 0.4], 0.5)
        >>> (m.tp, m.fp, m.tn, m.fn, m.sensitivity, m.precision)
        (1, 1, 1, 1, 0.5, 0.5)
    """
    t, s = _as_arrays(y_true, y_score)
    pred = s >= threshold
    tp = int(np.sum(pred & (t == 1)))
    fp = int(np.sum(pred & (t == 0)))
    tn = int(np.sum(~pred & (t == 0)))
    fn = int(np.sum(~pred & (t == 1)))
    sens = _ratio(tp, tp + fn)
    prec = _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return ThresholdMetrics(float(threshold), tp, fp, tn, fn, sens, _ratio(tn, tn + fp), prec, f1,
                            _ratio(tp + tn, t.size))


def youden_threshold(y_true: Any, y_score: Any) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1.

    Among the ROC points of equal J, the highest threshold wins (fewest positive calls). The
    returned value is an observed score, so ``score >= threshold`` reproduces the point.
    Raises ValueError when one class is absent.
    """
    fpr, tpr, thresholds = roc_curve(y_true, y_score)
    j = tpr - fpr
    # Skip the (0, 0) point whose threshold is +inf: J = 0 there, and it is never better than
    # the best finite one (J >= 0 at the lowest threshold, tpr = fpr = 1).
    # A tolerance keeps float noise (1 - 1/3 vs 2/3) from breaking ties toward lower thresholds.
    best = 1 + int(np.flatnonzero(j[1:] >= j[1:].max() - 1e-12)[0])
    return float(thresholds[best])


def bootstrap_ci(y_true: Any, y_score: Any, metric: Any = auc, *, n_boot: int = 2000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` confidence interval of ``metric(y_true, y_score)``.

    Cases are resampled with replacement ``n_boot`` times from a seeded generator. Resamples on
    which the metric is undefined (``nan``, e.g. an AUC of a resample holding one class only) are
    dropped, as in the common sklearn recipe; when fewer than 10 valid resamples remain, or the
    point estimate itself is undefined, ``(nan, nan)`` is returned.

    Args:
        y_true: 0/1 labels.
        y_score: scores.
        metric: ``f(y_true, y_score) -> float``; AUC by default.
        n_boot: number of resamples.
        alpha: 1 - confidence level (0.05 for a 95% interval).
        seed: seed of the resampling generator (results are reproducible).
    """
    t, s = _as_arrays(y_true, y_score)
    if t.size == 0 or math.isnan(metric(t, s)):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, t.size, size=(n_boot, t.size))
    values = []
    for row in idx:
        tb = t[row]
        if metric is auc and (tb.min() == tb.max()):
            continue  # one-class resample: AUC undefined (checked here to skip the call)
        v = metric(tb, s[row])
        if not math.isnan(v):
            values.append(v)
    if len(values) < 10:
        return math.nan, math.nan
    low, high = np.quantile(np.asarray(values), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
