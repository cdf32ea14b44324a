"""One-stage baseline: the stage-2 CNN + BiGRU + attention over the whole study, no segmentation.

The comparison the CT paper and issue 5 ask for: does localising each vertebra first (stage 1) help,
against the same per-slice CNN and GRU run over the whole axial field of view of the whole scan?

Public API (imported lazily so that ``import cspine.ct.baseline`` stays cheap):

* :func:`baseline_train_config`, :func:`train_baseline` (:mod:`.train`)
* :class:`BaselineModel`, :func:`predict_volume`, :func:`predict_studies` (:mod:`.predict`)
* :class:`StudyClassifier`, :func:`build_study_classifier` (:mod:`.model`)
* :func:`study_stack` (:mod:`.inputs`), :class:`BaselineStudy` (:mod:`.data`)
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "baseline_train_config": "train", "train_baseline": "train",
    "BaselineModel": "predict", "predict_volume": "predict", "predict_studies": "predict",
    "StudyClassifier": "model", "build_study_classifier": "model",
    "study_stack": "inputs", "BaselineStudy": "data",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
