"""CT stage 1: find and label C1..C7 with a 2.5D U-Net (training, inference, post-processing, pseudo-labels).

Heavy modules load lazily: ``from cspine.ct.seg import segment`` imports torch only then.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "SegModel": "predict", "segment": "predict", "SegmentationInputError": "predict",
    "Segmentation": "postprocess", "VertebraBox": "postprocess", "postprocess": "postprocess",
    "SegTrainConfig": "train", "train_segmentation": "train",
    "pseudo_label_cache": "pseudo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
