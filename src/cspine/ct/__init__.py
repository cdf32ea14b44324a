"""cspine.ct: the CT pipeline.

``cspine.ct.predict(path_or_volume, model) -> StudyResult`` with ``model = cspine.ct.CtModel.load(RUN)``;
``predict_many`` for many studies (``cspine.ct.evaluate.evaluate`` scores them). Imported lazily, so
that ``import cspine.ct.seg`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "predict": "cspine.ct.pipeline",
    "predict_many": "cspine.ct.pipeline",
    "CtModel": "cspine.ct.pipeline",
    "StudyResult": "cspine.ct.pipeline",
    "PredictSummary": "cspine.ct.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cspine.ct' has no attribute {name!r}")
