"""Stage-2 scores on numpy: the crops of one study through a vertebra network, then calibrated.

A vertebra stage 1 did not find gets the training prevalence of that level (stored in the model's
``config.json`` as ``absent_vertebra_prior``): the model has no evidence either way, and the prior is
the probability that minimises the expected log loss then.

Only the network runs in a runtime, behind :class:`VertebraNet`: PyTorch
(:class:`cspine.ct.cls.predict.ClsModel`) or ONNX Runtime (:mod:`cspine.onnx.runtime`); the crops,
batching, calibration and the patient pool are this one implementation for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cspine.ct.cls.calibrate import Calibration, patient_probability
from cspine.ct.cls.crops import VertebraCrop, extract_crops
from cspine.ct.seg.postprocess import Segmentation
from cspine.io.volume import Volume
from cspine.labels import VERTEBRAE

if TYPE_CHECKING:
    from cspine.models.vertebra_classifier import ClsConfig

__all__ = ["VertebraNet", "VertebraScores", "classify"]


class VertebraNet(Protocol):
    """A loaded stage-2 model, whatever runs it: its config, calibration, prior, and the network pass."""

    cfg: ClsConfig
    calibration: Calibration
    patient_calibration: Calibration
    prior: dict[str, float]
    patient_pool: str

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertebra logits ``(B,)`` and attention ``(B, N)`` of crops ``(B, N, C, H, W)`` float32."""
        ...


@dataclass
class VertebraScores:
    """Stage-2 result for one study.

    Attributes:
        probs: calibrated fracture probability per C1..C7 (absent vertebra: the training prior).
        patient: calibrated patient probability (noisy-OR, then patient calibration).
        logits: raw model logits of the vertebrae that were classified.
        attention: ``{name: (weights (N,), volume slice indices (N,))}``.
        crops: the crops the model saw (for Grad-CAM and overlays).
        present: vertebrae that stage 1 found and stage 2 classified.
    """

    probs: dict[str, float]
    patient: float
    logits: dict[str, float]
    attention: dict[str, tuple[np.ndarray, np.ndarray]]
    crops: dict[str, VertebraCrop]
    present: tuple[str, ...]


def classify(volume: Volume, seg: Segmentation, model: VertebraNet, batch_size: int = 7, *,
             crops: Mapping[str, VertebraCrop] | None = None) -> VertebraScores:
    """Fracture probabilities for every vertebra of one study.

    Args:
        volume: the study in canonical orientation.
        seg: its stage-1 segmentation (on the volume's grid).
        model: a loaded stage-2 model (:class:`~cspine.ct.cls.predict.ClsModel` or its ONNX Runtime twin).
        batch_size: vertebrae per forward pass.
        crops: the study's crops when the caller has cut them already
            (``extract_crops(volume, seg, model.cfg)``, e.g. to time them apart); cut here otherwise.
    """
    crops = dict(crops) if crops is not None else extract_crops(volume, seg, model.cfg)
    names = list(crops)
    logits: dict[str, float] = {}
    attention: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i in range(0, len(names), batch_size):
        chunk = names[i:i + batch_size]
        out_logits, out_attention = model.infer(np.stack([crops[n].array for n in chunk]))
        for j, n in enumerate(chunk):
            logits[n] = float(out_logits[j])
            attention[n] = (np.asarray(out_attention[j], np.float32), crops[n].slice_indices)
    probs = {v: float(model.calibration.probs(np.array(logits[v]))) if v in logits else model.prior[v]
             for v in VERTEBRAE}
    return VertebraScores(probs=probs, patient=patient_probability(probs, model.patient_calibration,
                                                                      model.patient_pool),
                          logits=logits, attention=attention, crops=crops, present=tuple(names))
