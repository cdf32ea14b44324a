"""The shared evaluation plots write real PNG files and compute honest calibration bins."""

from __future__ import annotations

import numpy as np
import pytest

from cspine.reports.curves import calibration_bins, plot_calibration, plot_confusion, plot_pr, plot_roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = y * 0.5 + rng.random(60) * 0.6
    curves = {"patient": (y, s), "empty class": (np.zeros(5, int), np.linspace(0, 1, 5))}
    outs = [
        plot_roc(curves, tmp_path / "roc.png", "ROC"),
        plot_pr(curves, tmp_path / "pr.png", "PR"),
        plot_calibration(y, np.clip(s, 0, 1), tmp_path / "cal.png"),
        plot_confusion([[5, 1, 0], [2, 7, 1], [0, 0, 3]], ["normal", "fracture", "dislocation"],
                       tmp_path / "cm.png", "CM"),
    ]
    assert all(_is_png(p) for p in outs)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_calibration_bins_hand_checked():
    y = [0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.95, 0.91, 0.99]
    bins = calibration_bins(y, p, n_bins=10)
    # bin 0: {0.05}->obs 0; bin 1: {0.15}->obs 1; bin 9: {0.95, 0.91, 0.99}->mean .95, obs 2/3
    np.testing.assert_allclose(bins["mean_predicted"], [0.05, 0.15, 0.95])
    np.testing.assert_allclose(bins["observed"], [0.0, 1.0, 2 / 3])
    np.testing.assert_array_equal(bins["count"], [1, 1, 3])
    ece = (1 * 0.05 + 1 * 0.85 + 3 * abs(0.95 - 2 / 3)) / 5
    assert float(bins["ece"]) == pytest.approx(ece)


def test_confusion_shape_checked(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        plot_confusion(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")
