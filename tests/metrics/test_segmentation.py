"""Stage-1 metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cspine.metrics.segmentation import (
    aggregate,
    dice_per_level,
    level_identification,
    level_identification_accuracy,
    mean_dice,
    segmentation_metrics,
)


def _pair() -> tuple[np.ndarray, np.ndarray]:
    true = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros((4, 4, 4), np.uint8)
    true[0, :2, :2] = 1  # 4 voxels of C1
    pred[0, :2, :1] = 1  # 2 voxels, both inside: Dice = 2*2/(2+4) = 2/3
    true[2, :, :] = 2  # 16 voxels of C2
    pred[2, :2, :] = 2  # 8 inside
    pred[3, :2, :] = 2  # 8 outside: Dice = 2*8/(16+16) = 0.5
    pred[1, 0, 0] = 3  # C3 predicted, not true: Dice 0
    return pred, true


def test_dice_per_level_hand_computed() -> None:
    pred, true = _pair()
    d = dice_per_level(pred, true)
    assert d["C1"] == pytest.approx(2 / 3)
    assert d["C2"] == pytest.approx(0.5)
    assert d["C3"] == 0.0
    assert all(math.isnan(d[n]) for n in ("C4", "C5", "C6", "C7"))
    assert mean_dice(d) == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_dice_perfect_and_shape_mismatch() -> None:
    _, true = _pair()
    assert mean_dice(dice_per_level(true, true)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        dice_per_level(true, true[:-1])


def test_level_identification() -> None:
    pred, true = _pair()
    hits = level_identification(pred, true)
    # C1 centroid (0, 0.5, 0): in the true C1's box, nearest to its centroid (0, 0.5, 0.5).
    # C2 centroid (2.5, 0.5, 1.5): on the edge of the true C2's box (z 1.5..2.5), nearest to C2.
    assert hits == {"C1": True, "C2": True}
    assert level_identification_accuracy(pred, true) == 1.0
    shifted = np.zeros_like(pred)
    shifted[0, :2, :2] = 1
    shifted[3, :, :] = 2  # C2 predicted one slice too low: centroid z = 3 is outside the box
    assert level_identification(shifted, true) == {"C1": True, "C2": False}
    # a true level the prediction misses counts as not identified
    assert level_identification(np.zeros_like(true), true) == {"C1": False, "C2": False}


def test_segmentation_metrics_json_and_aggregate() -> None:
    pred, true = _pair()
    m = segmentation_metrics(pred, true)
    assert m["dice"]["C4"] is None and m["level_identification_accuracy"] == 1.0
    agg = aggregate([m, segmentation_metrics(true, true)])
    assert agg["n_studies"] == 2
    assert agg["dice"]["C1"] == pytest.approx((2 / 3 + 1) / 2)
    assert agg["dice"]["C3"] == 0.0  # only the first study defines C3
    assert agg["level_identification_accuracy"] == 1.0


def test_level_identification_with_centroid_in_a_hole() -> None:
    # A ring (like C1) has its centroid in the hole: it is still identified as itself.
    true = np.zeros((3, 9, 9), np.uint8)
    true[1, 1:8, 1:8] = 1
    true[1, 3:6, 3:6] = 0
    true[2, 1:8, 1:8] = 2
    assert level_identification(true, true) == {"C1": True, "C2": True}
    swapped = np.where(true == 1, 2, np.where(true == 2, 1, 0)).astype(np.uint8)
    assert level_identification(swapped, true) == {"C1": False, "C2": False}
