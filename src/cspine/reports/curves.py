"""Evaluation plots as PNG files: ROC, precision-recall, calibration (reliability) and confusion
matrices. Shared by the CT and radiograph evaluations.

matplotlib runs on the Agg backend (no display needed); every figure is written atomically and
closed, so a long evaluation does not accumulate figures.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cspine.fileio import atomic_path  # noqa: E402
from cspine.metrics.binary import auc, average_precision, pr_curve, roc_curve  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["plot_calibration", "plot_confusion", "plot_pr", "plot_reliability", "plot_roc",
           "calibration_bins"]

_DPI = 110


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _two_classes(y_true: Any) -> bool:
    t = np.asarray(y_true).ravel()
    return t.size > 0 and 0 < int(np.sum(t)) < t.size


def plot_roc(curves: Mapping[str, tuple[Any, Any]], path: str | Path, title: str = "ROC") -> Path:
    """ROC curves of several score sets on one figure, each labelled with its AUC.

    Args:
        curves: ``{label: (y_true, y_score)}``; a set with a single class is listed in the legend
            as undefined and not drawn.
        path: the PNG to write.
        title: the figure title.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, (y_true, y_score) in curves.items():
        if not _two_classes(y_true):
            ax.plot([], [], label=f"{name} (one class: AUC undefined)")
            continue
        fpr, tpr, _ = roc_curve(y_true, y_score)
        ax.plot(fpr, tpr, lw=1.6, drawstyle="default", label=f"{name} (AUC {auc(y_true, y_score):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_pr(curves: Mapping[str, tuple[Any, Any]], path: str | Path,
            title: str = "Precision-recall") -> Path:
    """Precision-recall curves, each labelled with its average precision and prevalence.

    Args:
        curves: ``{label: (y_true, y_score)}``; a set without positives is listed, not drawn.
        path: the PNG to write.
        title: the figure title.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, (y_true, y_score) in curves.items():
        t = np.asarray(y_true).ravel()
        if t.size == 0 or t.sum() == 0:
            ax.plot([], [], label=f"{name} (no positives)")
            continue
        precision, recall, _ = pr_curve(y_true, y_score)
        ap = average_precision(y_true, y_score)
        ax.step(recall, precision, where="post", lw=1.6,
                label=f"{name} (AP {ap:.3f}, prevalence {t.mean():.2f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    return _save(fig, path)


def calibration_bins(y_true: Any, y_prob: Any, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width probability bins: mean predicted probability, observed frequency and count
    per non-empty bin, plus the expected calibration error (``ece``, count-weighted)."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    keep = count > 0
    mean_p = np.bincount(which, weights=p, minlength=n_bins)[keep] / count[keep]
    freq = np.bincount(which, weights=t, minlength=n_bins)[keep] / count[keep]
    ece = float(np.sum(count[keep] * np.abs(mean_p - freq)) / max(1, t.size))
    return {"mean_predicted": mean_p, "observed": freq, "count": count[keep], "ece": np.float64(ece)}


def plot_calibration(y_true: Any, y_prob: Any, path: str | Path, title: str = "Calibration",
                     n_bins: int = 10) -> Path:
    """Reliability diagram (observed frequency against mean predicted probability per bin) with a
    histogram of the predictions beneath.

    Args:
        y_true: 0/1 labels.
        y_prob: predicted probabilities in [0, 1].
        path: the PNG to write.
        title: the figure title.
        n_bins: number of equal-width bins.
    """
    bins = calibration_bins(y_true, y_prob, n_bins)
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    ax.plot(bins["mean_predicted"], bins["observed"], marker="o", lw=1.6,
            label=f"model (ECE {float(bins['ece']):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="observed fraction positive", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    axh.hist(np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), 0, 1), bins=n_bins, range=(0, 1),
             color="0.5")
    axh.set(xlabel="predicted probability", ylabel="count")
    return _save(fig, path)


def plot_reliability(panels: Mapping[str, Mapping[str, tuple[Any, Any]]], path: str | Path,
                     title: str = "Reliability", n_bins: int = 10) -> Path:
    """Reliability diagrams side by side, several probability sets per panel (e.g. before and after
    calibration), each labelled with its expected calibration error.

    Args:
        panels: ``{panel title: {curve label: (y_true, y_prob)}}``; an empty panel says so.
        path: the PNG to write.
        title: the figure title.
        n_bins: number of equal-width bins (as :func:`calibration_bins`).
    """
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.6 * max(1, len(panels)), 4.6), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items(), strict=False):
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
        for label, (y_true, y_prob) in curves.items():
            bins = calibration_bins(y_true, y_prob, n_bins)
            ax.plot(bins["mean_predicted"], bins["observed"], marker="o", lw=1.6,
                    label=f"{label} (ECE {float(bins['ece']):.3f})")
        if not curves:
            ax.text(0.5, 0.5, "no probabilities", ha="center", va="center")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="mean predicted probability",
               ylabel="observed fraction positive", title=name)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(matrix: Any, class_names: Sequence[str], path: str | Path,
                   title: str = "Confusion matrix") -> Path:
    """A confusion matrix (rows = true class, columns = predicted) with counts and row shares.

    Args:
        matrix: ``(K, K)`` counts.
        class_names: ``K`` names.
        path: the PNG to write.
        title: the figure title.
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if m.shape != (k, k):
        raise ValueError(f"confusion matrix shape {m.shape} does not match {k} class names")
    row = m.sum(axis=1, keepdims=True)
    share = np.divide(m, row, out=np.zeros_like(m), where=row > 0)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.2, 1.1 * k + 1.8))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(m[i, j])}\n{share[i, j]:.0%}" if not math.isnan(share[i, j]) else "",
                    ha="center", va="center", fontsize=9, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)
