"""CT stage 1: find and label C1..C7 with a 2.5D U-Net (training, inference, post-processing, pseudo-labels).

Heavy modules load lazily: ``from cspine.ct.seg import segment`` stays numpy (the network is the caller's
model: PyTorch's ``SegModel`` or ONNX Runtime's); ``SegModel`` imports torch.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "SegModel": "predict", "segment": "segment", "SegmentationInputError": "segment",
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
