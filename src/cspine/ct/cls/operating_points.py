"""Operating points: decision thresholds chosen for a target sensitivity, stored with a model.

A probability is not a decision. For each target sensitivity (0.90 and 0.95 by default) stage 2's
training picks, on the validation patients, the **highest** threshold at which ``p >= threshold`` still
finds that share of the positives, once for patients (``patient_overall``) and once for vertebrae
(C1..C7 pooled). With ``k = ceil(target * n_positives)`` that is the k-th highest positive score:
negatives do not move it, and any higher threshold would miss a further positive.

The points are stored in the stage-2 model's ``config.json`` as ``extra["operating_points"]``::

    {"patient": {"sens90": 0.31, "sens95": 0.22}, "vertebra": {"sens90": ..., "sens95": ...},
     "targets": [0.9, 0.95], "n_patients": 40, "n_positive_patients": 19, ...}

A level whose validation set had no positive has ``null`` thresholds (nothing to choose from).
:func:`resolve_operating_point` turns ``--operating-point sens90|sens95|0.NN`` into the thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cspine.errors import CheckpointError, CspineError
from cspine.labels import TARGETS, VERTEBRAE

__all__ = [
    "DEFAULT_TARGETS", "OperatingPoints", "ResolvedOperatingPoint", "choose_operating_points",
    "load_operating_points", "point_name", "resolve_operating_point", "resolve_requested_point",
    "threshold_for_sensitivity",
]

DEFAULT_TARGETS: tuple[float, ...] = (0.90, 0.95)
#: Key of the operating points in a stage-2 ``config.json``'s ``extra`` block.
CONFIG_KEY = "operating_points"
LEVELS = ("patient", "vertebra")


class OperatingPointError(CspineError):
    """``--operating-point`` names no stored point, is not a probability, or the model stores none."""


def point_name(target: float) -> str:
    """``0.9 -> "sens90"``, ``0.95 -> "sens95"``, ``0.975 -> "sens97.5"``."""
    return f"sens{round(float(target) * 100, 6):g}"


def threshold_for_sensitivity(scores: Any, labels: Any, target: float) -> float | None:
    """The highest threshold ``t`` with sensitivity of ``scores >= t`` at least ``target``.

    Args:
        scores: probabilities (any real scores), 1-D.
        labels: 0/1, same length.
        target: wanted sensitivity in (0, 1].

    Returns:
        The k-th highest positive score (``k = ceil(target * n_positives)``), or ``None`` when there
        is no positive.

    Example:
        >>> threshold_for_sensitivity([0.9, 0.8, 0.7, 0.2, 0.6], [1, 1, 1, 1, 0], 0.75)
        0.7
    """
    if not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores hold NaN or infinite values")
    pos = np.sort(s[y == 1])[::-1]
    if pos.size == 0:
        return None
    # The small tolerance keeps float products such as 0.95 * 20 = 19.000000000000004 from asking for 20.
    k = max(1, math.ceil(float(target) * pos.size - 1e-9))
    return float(pos[k - 1])


@dataclass(frozen=True)
class OperatingPoints:
    """Thresholds per level (``patient``, ``vertebra``) and point name (``sens90``...), with provenance.

    ``None`` marks a point that could not be chosen (no positive at that level).
    """

    patient: dict[str, float | None]
    vertebra: dict[str, float | None]
    targets: tuple[float, ...] = DEFAULT_TARGETS
    counts: dict[str, int] = field(default_factory=dict)
    chosen_on: str = "validation patients"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(point_name(t) for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"patient": {...}, "vertebra": {...}, "targets": [...], "chosen_on": ...}``
        plus the counts."""
        return {"patient": dict(self.patient), "vertebra": dict(self.vertebra), "targets": list(self.targets),
                "chosen_on": self.chosen_on, **self.counts}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> OperatingPoints:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        def level(name: str) -> dict[str, float | None]:
            block = doc.get(name) or {}
            return {str(k): None if v is None else float(v) for k, v in block.items()}

        targets = tuple(float(t) for t in doc.get("targets", DEFAULT_TARGETS))
        counts = {k: int(v) for k, v in doc.items() if k.startswith("n_") and isinstance(v, int | float)}
        return cls(level("patient"), level("vertebra"), targets, counts, str(doc.get("chosen_on", "")))


def choose_operating_points(probs: Any, labels: Any, targets: Sequence[float] = DEFAULT_TARGETS,
                            *, chosen_on: str = "validation patients") -> OperatingPoints:
    """Thresholds reaching each target sensitivity, for patients and for pooled vertebrae.

    Args:
        probs: ``(P, 8)`` calibrated probabilities in :data:`cspine.labels.TARGETS` order
            (C1..C7, patient_overall), one row per patient, as ``predict`` writes them (a vertebra
            stage 1 did not find carries the prior, as at prediction time). A DataFrame with those
            columns works too.
        labels: ``(P, 8)`` 0/1 labels in the same order.
        targets: target sensitivities; each gives a point named :func:`point_name` (``sens90``...).
        chosen_on: provenance recorded with the points.

    Returns:
        :class:`OperatingPoints`; ``None`` thresholds at a level without positives.

    Example:
        >>> p = np.array([[.1] * 7 + [.9], [.2] * 7 + [.4], [.3] * 7 + [.2]])
        >>> y = np.array([[0] * 7 + [1], [0] * 7 + [1], [0] * 7 + [0]])
        >>> choose_operating_points(p, y, (0.5, 1.0)).patient
        {'sens50': 0.9, 'sens100': 0.4}
    """
    p = _matrix(probs, "probs")
    y = _matrix(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"probs {p.shape} and labels {y.shape} differ in shape")
    n_v = len(VERTEBRAE)
    vp, vy = p[:, :n_v].ravel(), y[:, :n_v].ravel()
    pp, py = p[:, n_v], y[:, n_v]
    targets = tuple(float(t) for t in targets)
    return OperatingPoints(
        patient={point_name(t): threshold_for_sensitivity(pp, py, t) for t in targets},
        vertebra={point_name(t): threshold_for_sensitivity(vp, vy, t) for t in targets},
        targets=targets,
        counts={"n_patients": int(py.size), "n_positive_patients": int((py == 1).sum()),
                "n_vertebrae": int(vy.size), "n_positive_vertebrae": int((vy == 1).sum())},
        chosen_on=chosen_on)


def _matrix(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "columns"):  # a DataFrame: take the target columns in order
        missing = [c for c in TARGETS if c not in values.columns]
        if missing:
            raise ValueError(f"{what} lacks the columns {missing}")
        values = values[list(TARGETS)].to_numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(TARGETS):
        raise ValueError(f"{what} must be (patients, {len(TARGETS)}) in C1..C7, patient_overall order; "
                         f"got shape {arr.shape}")
    return arr


def load_operating_points(model_dir: str | Path) -> OperatingPoints | None:
    """The operating points stored with a model: ``RUN`` or ``RUN/cls`` (``config.json``'s
    ``extra["operating_points"]``); ``None`` for a model trained before they were stored.

    Raises:
        CheckpointError: no stage-2 ``config.json`` there, or a malformed block.
    """
    from cspine.fileio import read_json

    folder = Path(model_dir)
    if not (folder / "config.json").is_file() and (folder / "cls" / "config.json").is_file():
        folder = folder / "cls"
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError("no stage-2 model here (expected RUN/cls/config.json)", model_dir)
    doc = read_json(path)
    block = (doc.get("extra") or {}).get(CONFIG_KEY, doc.get(CONFIG_KEY))
    if block is None:
        return None
    try:
        return OperatingPoints.from_dict(block)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"holds a malformed {CONFIG_KEY!r} block ({exc})", path) from exc


@dataclass(frozen=True)
class ResolvedOperatingPoint:
    """The thresholds ``--operating-point`` stands for: ``p >= threshold`` is positive."""

    name: str  # "sens90", "sens95" or the number as given ("0.3")
    patient: float
    vertebra: float
    source: str  # "stored" (chosen on the validation patients) or "fixed"

    def positive(self, probability: float, level: str = "vertebra") -> bool:
        """Whether ``probability`` is a positive call at ``level`` (``patient`` or ``vertebra``)."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        return float(probability) >= (self.patient if level == "patient" else self.vertebra)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "patient_threshold": self.patient, "vertebra_threshold": self.vertebra,
                "source": self.source}


def resolve_operating_point(spec: str, stored: OperatingPoints | None) -> ResolvedOperatingPoint:
    """Turn ``--operating-point`` into thresholds.

    Args:
        spec: a stored point's name (``sens90``, ``sens95``) or a probability strictly between 0 and 1
            (``0.3``), used as the threshold at both levels.
        stored: the model's points (:func:`load_operating_points`), ``None`` if it has none.

    Raises:
        OperatingPointError: an unknown name, a number outside (0, 1), a named point on a model
            without stored points, or a stored point that could not be chosen (no positives).

    Example:
        >>> resolve_operating_point("0.3", None).patient
        0.3
    """
    text = str(spec).strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not (0.0 < value < 1.0) or not math.isfinite(value):
            raise OperatingPointError(f"--operating-point {text}: a fixed threshold must lie strictly "
                                      "between 0 and 1")
        return ResolvedOperatingPoint(text, value, value, "fixed")
    name = text.lower()
    if not name.startswith("sens"):
        raise OperatingPointError(f"--operating-point {text!r} is neither a stored point (sens90, sens95) "
                                  "nor a probability such as 0.3")
    if stored is None:
        raise OperatingPointError(f"--operating-point {text}: the model stores no operating points (trained "
                                  "before they existed); retrain stage 2 or give a threshold such as 0.3")
    if name not in stored.patient or name not in stored.vertebra:
        known = ", ".join(sorted(set(stored.patient) & set(stored.vertebra))) or "none"
        raise OperatingPointError(f"--operating-point {text}: the model stores {known}")
    patient, vertebra = stored.patient[name], stored.vertebra[name]
    if patient is None or vertebra is None:
        level = "patient" if patient is None else "vertebra"
        raise OperatingPointError(f"--operating-point {text}: undefined at {level} level (no positive "
                                  f"{level} among the {stored.chosen_on or 'validation cases'}); give a "
                                  "threshold such as 0.3")
    return ResolvedOperatingPoint(name, float(patient), float(vertebra), "stored")


#: The point a command uses when none is asked for and the model stores points.
DEFAULT_POINT = "sens90"


def resolve_requested_point(spec: str | None,
                            stored: OperatingPoints | None) -> ResolvedOperatingPoint | None:
    """``--operating-point`` as the commands read it: ``spec`` when given, else :data:`DEFAULT_POINT`
    when the model stores points, else ``None`` (no calls).

    Raises:
        OperatingPointError: as :func:`resolve_operating_point`.

    Example:
        >>> resolve_requested_point(None, None) is None
        True
    """
    chosen = spec if spec is not None else (DEFAULT_POINT if stored is not None else None)
    return None if chosen is None else resolve_operating_point(chosen, stored)
