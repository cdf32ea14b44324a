"""cspine.ct: the CT pipeline.

``cspine.ct.predict(path_or_volume, model) -> StudyPrediction`` with ``model = cspine.ct.CtModel.load(RUN)``;
``predict_many`` for many studies (``cspine.ct.evaluate.evaluate`` scores them). Imported lazily, so
that ``import cspine.ct.seg`` stays cheap.

Where each step lives: the model (:mod:`cspine.ct.model`), one and many studies
(:mod:`cspine.ct.inference`), the output folder (:mod:`cspine.ct.outputs`); a study's input is
:mod:`cspine.io.study`.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "predict": "cspine.ct.inference",
    "predict_many": "cspine.ct.inference",
    "PredictSummary": "cspine.ct.inference",
    "CtModel": "cspine.ct.model",
    "StudyPrediction": "cspine.ct.outputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cspine.ct' has no attribute {name!r}")
