"""CT stage 2: per-vertebra fracture classification (crops, training, calibration, inference).

Public API (imported lazily so that ``import cspine.ct.cls`` stays cheap):

* :func:`extract_crops`, :class:`VertebraCrop` (:mod:`.crops`)
* :func:`train_classifier`, :class:`ClsTrainConfig` (:mod:`.train`)
* :class:`ClsModel` (:mod:`.predict`, PyTorch), :func:`classify`, :class:`VertebraScores` (:mod:`.scores`)
* :class:`Calibration`, :func:`patient_probability` (:mod:`.calibrate`)
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "extract_crops": "crops", "VertebraCrop": "crops",
    "train_classifier": "train", "ClsTrainConfig": "train",
    "ClsModel": "predict", "classify": "scores", "VertebraScores": "scores",
    "Calibration": "calibrate", "patient_probability": "calibrate",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
