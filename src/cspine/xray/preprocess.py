"""The radiograph preprocessing on numpy: square resize, grey to three channels, the model's normalisation.

One implementation for training (:mod:`cspine.xray.transforms` wraps it in tensors) and for inference
with PyTorch or ONNX Runtime. The image is resized to ``size x size`` without keeping the aspect ratio,
as the paper's pipeline did (MATLAB's augmented image datastore squashes), antialiased bilinear
(:func:`cspine.preprocess.resize.resize_bilinear`). The mean and standard deviation are the model's
(``XrayConfig.mean``/``std``, saved with the model), never fixed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cspine.preprocess.resize import resize_bilinear

__all__ = ["normalize_array", "preprocess_array", "unit_square"]


def unit_square(img: np.ndarray, size: int) -> np.ndarray:
    """A ``(H, W)`` [0, 1] image as ``(1, size, size)`` float32 in [0, 1] (antialiased bilinear)."""
    arr = np.asarray(img, dtype=np.float32)[None]
    if arr.shape[-2:] != (size, size):
        arr = resize_bilinear(arr, size)
    return np.clip(arr, 0.0, 1.0, out=arr)


def normalize_array(gray: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(1, S, S)`` [0, 1] -> ``(3, S, S)`` float32: the grey copied to R, G and B, then (x - mean) / std."""
    m = np.asarray(mean, np.float32).reshape(3, 1, 1)
    s = np.asarray(std, np.float32).reshape(3, 1, 1)
    return (np.asarray(gray, np.float32) - m) / s


def preprocess_array(img: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Inference preprocessing of one image: resize, three channels, normalise -> ``(3, size, size)``."""
    return normalize_array(unit_square(img, size), mean, std)
