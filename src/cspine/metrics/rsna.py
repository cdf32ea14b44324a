"""The RSNA 2022 Cervical Spine Fracture Detection metric, exactly as the competition scored it.

For each study, the binary log loss of each of the eight targets (C1..C7, patient_overall) is
weighted -- a vertebra weighs 1 when it is intact and 2 when fractured, patient_overall 7 when the
patient has no fracture and 14 when they have one (``labels.VERTEBRA_WEIGHTS``,
``labels.PATIENT_WEIGHTS``) -- and the weighted sum is divided by that study's total weight. The
score is the mean of these per-study losses over studies (lower is better).

Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` before the logarithm, so a confident wrong
answer costs about 16.1 rather than infinity (the scikit-learn ``log_loss`` clipping the
competition's reference code relied on used 1e-15; 1e-7 is float32-safe and is the one used here,
a difference only for probabilities closer than 1e-7 to 0 or 1).

A model must beat :func:`prevalence_baseline_loss` -- predicting the training prevalence of each
target for every study -- to have learnt anything; ``evaluate`` reports both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cspine.labels import PATIENT_WEIGHTS, TARGETS, VERTEBRA_WEIGHTS, VERTEBRAE

__all__ = ["EPS", "prevalence_baseline_loss", "rsna_per_study_loss", "rsna_weighted_log_loss",
           "target_weights", "prevalences"]

#: Probability clipping bound (see the module docstring).
EPS = 1e-7


def _check(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_prob, dtype=np.float64)
    if t.ndim == 1:
        t = t[None]
    if p.ndim == 1:
        p = p[None]
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(TARGETS):
        raise ValueError(f"expected (n_studies, {len(TARGETS)}) arrays in the order {TARGETS}, "
                         f"got {t.shape} and {p.shape}")
    if not np.isin(t, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("probabilities hold NaN or infinite values")
    return t, p


def target_weights(y_true: Any) -> np.ndarray:
    """Competition weight of each label: ``(n, 8)`` in the order of ``labels.TARGETS``."""
    t = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    neg = np.array([VERTEBRA_WEIGHTS[0]] * len(VERTEBRAE) + [PATIENT_WEIGHTS[0]])
    pos = np.array([VERTEBRA_WEIGHTS[1]] * len(VERTEBRAE) + [PATIENT_WEIGHTS[1]])
    return np.where(t == 1, pos, neg)


def rsna_per_study_loss(y_true: Any, y_prob: Any, eps: float = EPS) -> np.ndarray:
    """The weighted log loss of each study, ``(n,)``.

    Args:
        y_true: ``(n, 8)`` 0/1 labels, columns ordered as ``labels.TARGETS`` (C1..C7, patient_overall).
        y_prob: ``(n, 8)`` probabilities in the same order.
        eps: clipping bound.
    """
    t, p = _check(y_true, y_prob)
    p = np.clip(p, eps, 1 - eps)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    w = target_weights(t)
    return (w * bce).sum(axis=1) / w.sum(axis=1)


def rsna_weighted_log_loss(y_true: Any, y_prob: Any, eps: float = EPS) -> float:
    """The competition score: the mean over studies of :func:`rsna_per_study_loss`.

    Example:
        >>> y = [[0, 0, 0, 0, 0, 0, 0, 0]]
        >>> round(rsna_weighted_log_loss(y, [[0.5] * 8]), 4)  # log 2 whatever the weights
        0.6931
    """
    losses = rsna_per_study_loss(y_true, y_prob, eps)
    if losses.size == 0:
        raise ValueError("no studies to score")
    return float(losses.mean())


def prevalences(y_true: Any) -> dict[str, float]:
    """Share of positives of each target in ``(n, 8)`` labels, ``{target: share}``."""
    t = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    return {name: float(t[:, j].mean()) for j, name in enumerate(TARGETS)}


def prevalence_baseline_loss(y_true: Any, prevalence: Mapping[str, float] | None = None,
                             eps: float = EPS) -> float:
    """The score of predicting a constant per target: its prevalence in the training data.

    Args:
        y_true: ``(n, 8)`` labels of the evaluated studies.
        prevalence: ``{target: share}`` from the training set; when ``None``, the evaluated
            labels' own prevalences are used (an in-sample baseline, slightly optimistic).
        eps: clipping bound.
    """
    t = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    prev = prevalences(t) if prevalence is None else dict(prevalence)
    missing = [k for k in TARGETS if k not in prev]
    if missing:
        raise ValueError(f"prevalence lacks {missing}")
    const = np.array([prev[k] for k in TARGETS], dtype=np.float64)
    return rsna_weighted_log_loss(t, np.broadcast_to(const, t.shape), eps)
