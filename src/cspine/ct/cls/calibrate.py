"""Calibration of stage-2 probabilities on the validation split, and the patient probability.

Vertebra probabilities: ``p = sigmoid(logit / T + b)``. ``T`` is classic temperature scaling; the bias
``b`` undoes the prior shift that balanced sampling and the positive weight of the competition loss
put into the logits (temperature alone cannot move a probability across 0.5). Both are fitted by
minimising the competition-weighted log loss on the validation vertebrae, with a weak pull towards
``T = 1, b = 0`` so that a tiny validation split cannot produce extreme values.

Patient probability (documented choice): a pool of the calibrated vertebra probabilities followed
by a second temperature/bias fitted on the validation patients with the patient weights (7 / 14).
Two pools (:data:`PATIENT_POOLS`), stored with each model as ``patient_pool``:

* ``noisy_or`` (the default): ``1 - prod_v (1 - p_v)``, exact for independent, calibrated levels.
* ``max``: the most suspicious vertebra. With one calibration shared by all levels the maximum mostly
  picks the levels with the highest base rate (C2, C7) and ranks patients by their noise: on 60
  held-out phantom studies the same demo model ranked patients at AUC 0.38 with it and 0.52 with the
  noisy-OR (0.60 against 0.68 on 60 phantoms read without DICOM), so it is not the default.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from cspine.labels import PATIENT_WEIGHTS, VERTEBRA_WEIGHTS

log = logging.getLogger(__name__)
_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(logit / temperature + bias)``."""

    temperature: float = 1.0
    bias: float = 0.0

    def logits(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, np.float64) / self.temperature + self.bias

    def probs(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(logits))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -40, 40)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def weighted_nll(probs: np.ndarray, labels: np.ndarray,
                 weights: tuple[float, float] = VERTEBRA_WEIGHTS) -> float:
    """Weighted binary log loss normalised by the weights (the competition's form)."""
    p = np.clip(np.asarray(probs, np.float64), _EPS, 1 - _EPS)
    y = np.asarray(labels, np.float64)
    w = np.where(y > 0.5, weights[1], weights[0])
    return float(-(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / w.sum())


def fit_calibration(logits: np.ndarray, labels: np.ndarray,
                    weights: tuple[float, float] = VERTEBRA_WEIGHTS, fit_bias: bool = True,
                    min_samples: int = 4) -> Calibration:
    """Fit temperature (and bias) minimising the weighted log loss of ``labels`` given ``logits``.

    Returns the identity calibration when there are fewer than ``min_samples`` samples or only
    one class (nothing to calibrate against), with a log message.
    """
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    if z.size < min_samples or y.min() == y.max():
        log.warning("calibration skipped: %d samples with %d positives", z.size, int(y.sum()))
        return Calibration()
    w = np.where(y > 0.5, weights[1], weights[0])

    def loss(params: np.ndarray) -> float:
        log_t, b = params[0], params[1] if fit_bias else 0.0
        s = z * math.exp(-log_t) + b
        # log-sigmoid written stably
        nll = w * (np.logaddexp(0, -s) * y + np.logaddexp(0, s) * (1 - y))
        return float(nll.sum() / w.sum() + 1e-3 * (log_t ** 2 + b ** 2))

    res = minimize(loss, np.zeros(2), method="L-BFGS-B", bounds=[(-3.0, 3.0), (-5.0, 5.0)])
    log_t, b = float(res.x[0]), float(res.x[1]) if fit_bias else 0.0
    return Calibration(temperature=math.exp(log_t), bias=b)


def noisy_or(probs: Mapping[str, float] | np.ndarray) -> float | np.ndarray:
    """``1 - prod(1 - p)`` over the last axis (or over a dict's values)."""
    if isinstance(probs, Mapping):
        return float(1.0 - np.prod([1.0 - float(p) for p in probs.values()]))
    arr = np.asarray(probs, np.float64)
    return 1.0 - np.prod(1.0 - arr, axis=-1)


#: Ways to pool seven vertebra probabilities into the patient's (see the module docstring).
PATIENT_POOLS: tuple[str, ...] = ("max", "noisy_or")
DEFAULT_PATIENT_POOL = "noisy_or"


def pool_vertebrae(probs: Mapping[str, float] | np.ndarray, pool: str = DEFAULT_PATIENT_POOL
                   ) -> float | np.ndarray:
    """Pool vertebra probabilities (a dict, or an array over its last axis) into a patient score."""
    if pool not in PATIENT_POOLS:
        raise ValueError(f"unknown patient pool {pool!r}; choose one of {', '.join(PATIENT_POOLS)}")
    if pool == "noisy_or":
        return noisy_or(probs)
    if isinstance(probs, Mapping):
        return float(max(float(p) for p in probs.values()))
    return np.asarray(probs, np.float64).max(axis=-1)


def fit_patient_calibration(vertebra_probs: np.ndarray, patient_labels: np.ndarray,
                            min_patients: int = 8, pool: str = DEFAULT_PATIENT_POOL) -> Calibration:
    """Calibrate the pooled patient probability on validation patients (``(P, 7)`` probs)."""
    if len(patient_labels) < min_patients:
        return Calibration()
    return fit_calibration(logit(pool_vertebrae(vertebra_probs, pool)), patient_labels, PATIENT_WEIGHTS)


def patient_probability(vertebra_probs: Mapping[str, float], cal: Calibration = Calibration(),
                        pool: str = DEFAULT_PATIENT_POOL) -> float:
    """The patient probability from calibrated vertebra probabilities (see the module docstring)."""
    return float(cal.probs(logit(np.array(pool_vertebrae(vertebra_probs, pool))))[()])
