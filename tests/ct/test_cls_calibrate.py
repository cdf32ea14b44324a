"""Temperature scaling and the patient probability."""

from __future__ import annotations

import numpy as np
import pytest

from cspine.ct.cls.calibrate import (
    Calibration,
    fit_calibration,
    noisy_or,
    patient_probability,
    pool_vertebrae,
    weighted_nll,
)


def test_temperature_scaling_lowers_nll_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    true_logit = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.2, 400)
    overconfident = 6.0 * true_logit  # same ranking, far too sharp
    before = weighted_nll(Calibration().probs(overconfident), y)
    cal = fit_calibration(overconfident, y)
    after = weighted_nll(cal.probs(overconfident), y)
    assert cal.temperature > 2.0
    assert after < 0.7 * before
    # ranking untouched: a monotone map
    order = np.argsort(overconfident)
    assert np.all(np.diff(cal.probs(overconfident)[order]) >= 0)


def test_bias_fixes_a_shifted_prior() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(600) < 0.1).astype(int)
    logits = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.0, 600) + 2.0  # trained on balanced data
    cal = fit_calibration(logits, y)
    assert cal.bias < -1.0
    assert weighted_nll(cal.probs(logits), y) < weighted_nll(Calibration().probs(logits), y)


def test_one_class_returns_identity() -> None:
    assert fit_calibration(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.zeros(5)) == Calibration()


def test_noisy_or_and_patient_probability() -> None:
    assert noisy_or({"C1": 0.5, "C2": 0.5}) == pytest.approx(0.75)
    assert noisy_or(np.array([[0.0, 0.0], [1.0, 0.2]])).tolist() == pytest.approx([0.0, 1.0])
    assert patient_probability({"C1": 0.5, "C2": 0.5}) == pytest.approx(0.75, abs=1e-6)  # noisy-OR default
    # The alternative pool is the most suspicious vertebra: quiet levels add nothing to it.
    assert patient_probability({"C1": 0.3, "C2": 0.1, "C3": 0.1}, pool="max") == pytest.approx(0.3, abs=1e-6)
    assert pool_vertebrae(np.array([[0.1, 0.4], [0.2, 0.2]]), "max").tolist() == pytest.approx([0.4, 0.2])
    with pytest.raises(ValueError, match="unknown patient pool"):
        pool_vertebrae({"C1": 0.5}, "mean")


def test_weighted_nll_matches_hand_computation() -> None:
    # one positive (weight 2) at p=0.8, one negative (weight 1) at p=0.4
    expected = -(2 * np.log(0.8) + 1 * np.log(0.6)) / 3
    assert weighted_nll(np.array([0.8, 0.4]), np.array([1, 0])) == pytest.approx(expected)
