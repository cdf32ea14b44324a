"""The RSNA 2022 competition metric on hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cspine.metrics.rsna import (
    prevalence_baseline_loss,
    rsna_per_study_loss,
    rsna_weighted_log_loss,
    target_weights,
)

# Columns: C1..C7, patient_overall (labels.TARGETS)
Y = np.array([
    [1, 0, 0, 0, 0, 0, 0, 1],   # study A: C1 fractured
    [0, 0, 0, 0, 0, 0, 0, 0],   # study B: intact
])
P = np.array([
    [0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9],
    [0.5] * 8,
])


def test_hand_worked_example():
    # Study A: weights C1 = 2 (positive), C2..C7 = 1 each (6), patient = 14 (positive): total 22.
    #   loss = [2*(-ln .8) + 6*(-ln .9) + 14*(-ln .9)] / 22
    #        = [2*0.223144 + 20*0.105361] / 22 = (0.446287 + 2.107210) / 22 = 0.116068
    # Study B: every label has p = .5 -> -ln .5 = 0.693147 whatever the weights (1*7 + 7 = 14).
    # Score = mean over the two studies = (0.116068 + 0.693147) / 2 = 0.404608
    a = (2 * -math.log(0.8) + 6 * -math.log(0.9) + 14 * -math.log(0.9)) / 22
    b = math.log(2)
    per_study = rsna_per_study_loss(Y, P)
    assert per_study == pytest.approx([a, b])
    assert per_study[0] == pytest.approx(0.116068, abs=1e-6)
    assert rsna_weighted_log_loss(Y, P) == pytest.approx(0.404608, abs=1e-6)


def test_weights_follow_competition():
    w = target_weights(Y)
    assert w[0].tolist() == [2, 1, 1, 1, 1, 1, 1, 14]
    assert w[1].tolist() == [1, 1, 1, 1, 1, 1, 1, 7]


def test_clipping_bounds_a_confident_mistake():
    y = np.zeros((1, 8))
    y[0, 7] = 1
    p = np.zeros((1, 8))  # p = 0 for the positive patient label: -ln(1e-7) = 16.118
    # the 7 negatives score -ln(1 - 1e-7) ~ 1e-7 each
    expected = (14 * -math.log(1e-7) + 7 * -math.log(1 - 1e-7)) / 21
    assert rsna_weighted_log_loss(y, p) == pytest.approx(expected)
    assert math.isfinite(rsna_weighted_log_loss(y, p))


def test_prevalence_baseline():
    # in-sample prevalences: C1 .5, C2..C7 0, patient .5
    # study A: [2*-ln .5 + 6*-ln(1-1e-7) + 14*-ln .5] / 22;  study B: [1*-ln .5 + 6*~0 + 7*-ln .5] / 14
    a = (16 * math.log(2) + 6 * -math.log(1 - 1e-7)) / 22
    b = (8 * math.log(2) + 6 * -math.log(1 - 1e-7)) / 14
    assert prevalence_baseline_loss(Y) == pytest.approx((a + b) / 2)
    prev = {k: 0.5 for k in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "patient_overall")}
    assert prevalence_baseline_loss(Y, prev) == pytest.approx(math.log(2))


def test_shape_errors():
    with pytest.raises(ValueError, match="n_studies, 8"):
        rsna_weighted_log_loss(np.zeros((2, 7)), np.zeros((2, 7)))
    with pytest.raises(ValueError, match="0 or 1"):
        rsna_weighted_log_loss(np.full((1, 8), 0.3), np.zeros((1, 8)))
