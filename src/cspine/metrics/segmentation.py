"""Stage-1 metrics: Dice per vertebra level and level identification accuracy.

Conventions:

* Dice of a level absent from both prediction and truth is undefined (``nan``) and left out of the
  mean; a level present in only one of them scores 0.
* Level identification: a true level counts as identified when the centroid of the predicted
  level lies in the true level: inside its bounding box and nearer to its centroid than to any
  other true level's (a centroid is often not a voxel of its vertebra: it lies in the spinal canal).
  Accuracy is over the levels present in the truth; a level predicted absent counts as missed.
"""

from __future__ import annotations

import math

import numpy as np

from cspine.labels import CERVICAL_LABELS, NAME_OF


def dice_per_level(pred: np.ndarray, true: np.ndarray, levels: tuple[int, ...] = CERVICAL_LABELS,
                   ) -> dict[str, float]:
    """Dice ``2|P∩T| / (|P|+|T|)`` per level (by name), ``nan`` when the level is in neither.

    Example:
        >>> p = np.array([[[1, 1, 0, 2]]]); t = np.array([[[1, 0, 0, 2]]])
        >>> {k: round(v, 3) for k, v in dice_per_level(p, t, (1, 2)).items()}
        {'C1': 0.667, 'C2': 1.0}
    """
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {true.shape}")
    n = max(int(pred.max(initial=0)), int(true.max(initial=0)), max(levels)) + 1
    # One joint histogram gives every intersection and size in a single pass.
    joint = np.bincount(pred.astype(np.int64).ravel() * n + true.astype(np.int64).ravel(),
                        minlength=n * n).reshape(n, n)
    out: dict[str, float] = {}
    for lab in levels:
        size_p, size_t, inter = joint[lab].sum(), joint[:, lab].sum(), joint[lab, lab]
        out[NAME_OF[lab]] = float("nan") if size_p + size_t == 0 else float(2 * inter / (size_p + size_t))
    return out


def mean_dice(per_level: dict[str, float]) -> float:
    """Mean over the defined (non-nan) levels; ``nan`` when none is defined."""
    vals = [v for v in per_level.values() if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def level_identification(pred: np.ndarray, true: np.ndarray, levels: tuple[int, ...] = CERVICAL_LABELS,
                         spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, bool]:
    """Per level present in ``true``: does the predicted level's centroid lie in the true level?

    A vertebra's centroid is often not a voxel of it (it falls in the spinal canal; C1's falls in the
    ring's hole, where C2's dens is), so "lies in the true C-k" means: inside the true C-k's bounding
    box, and nearer to the true C-k's centroid than to any other true level's (in mm with ``spacing``).
    """
    pred, true = np.asarray(pred), np.asarray(true)
    scale = np.asarray(spacing, np.float64)
    boxes, cents = {}, {}
    for lab in levels:
        coords = np.nonzero(true == lab)
        if len(coords[0]):
            cents[lab] = np.array([c.mean() for c in coords])
            boxes[lab] = (np.array([c.min() for c in coords]) - 0.5,
                          np.array([c.max() for c in coords]) + 0.5)
    out: dict[str, bool] = {}
    for lab in cents:
        coords = np.nonzero(pred == lab)
        if not len(coords[0]):
            out[NAME_OF[lab]] = False
            continue
        c = np.array([x.mean() for x in coords])
        lo, hi = boxes[lab]
        nearest = min(cents, key=lambda k: float((((cents[k] - c) * scale) ** 2).sum()))
        out[NAME_OF[lab]] = bool(np.all(c >= lo) and np.all(c <= hi) and nearest == lab)
    return out


def level_identification_accuracy(pred: np.ndarray, true: np.ndarray,
                                  levels: tuple[int, ...] = CERVICAL_LABELS) -> float:
    """Share of the true levels identified (see :func:`level_identification`); ``nan`` if none is true."""
    hits = level_identification(pred, true, levels)
    return float(np.mean(list(hits.values()))) if hits else float("nan")


def segmentation_metrics(pred: np.ndarray, true: np.ndarray, levels: tuple[int, ...] = CERVICAL_LABELS,
                         ) -> dict[str, object]:
    """All stage-1 metrics of one study as a JSON-friendly dict (``nan`` written as ``None``)."""
    dice = dice_per_level(pred, true, levels)
    ident = level_identification(pred, true, levels)
    return {
        "dice": {k: _clean(v) for k, v in dice.items()},
        "mean_dice": _clean(mean_dice(dice)),
        "level_identified": ident,
        "level_identification_accuracy": _clean(float(np.mean(list(ident.values()))) if ident else math.nan),
    }


def aggregate(per_study: list[dict[str, object]]) -> dict[str, object]:
    """Average :func:`segmentation_metrics` results over studies (per level and overall)."""
    names = [NAME_OF[lab] for lab in CERVICAL_LABELS]
    dice: dict[str, float | None] = {}
    for n in names:
        vals = [m["dice"].get(n) for m in per_study]  # type: ignore[union-attr]
        vals = [v for v in vals if v is not None]
        dice[n] = float(np.mean(vals)) if vals else None
    hits = [h for m in per_study for h in m["level_identified"].values()]  # type: ignore[union-attr]
    defined = [v for v in dice.values() if v is not None]
    return {"n_studies": len(per_study), "dice": dice,
            "mean_dice": float(np.mean(defined)) if defined else None,
            "level_identification_accuracy": float(np.mean(hits)) if hits else None}


def _clean(v: float) -> float | None:
    return None if math.isnan(v) else v
