"""Bilinear resizing of image stacks on numpy, for every runtime (PyTorch and ONNX Runtime alike).

:func:`resize_bilinear` gives what ``torch.nn.functional.interpolate(x, size, mode="bilinear",
align_corners=False, antialias=True)`` gives (within float32 rounding; PyTorch computes the taps in
float32, so a near-zero tap at a window's edge may differ, up to ~4e-5 of the value range): when an
axis shrinks, each output pixel averages the input under a triangle filter stretched by the scale (no
aliasing); when it grows, the filter is the plain bilinear tent, so the result equals interpolation
without antialiasing. The filter is separable and its taps are computed once per axis, so the work is a
few gathers and multiply-adds per output pixel, with no torch import: the CT crops, the stage-1 grid and
the radiograph preprocessing share this one implementation whichever runtime runs the networks.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["resize_bilinear", "resize_taps"]


@lru_cache(maxsize=64)
def resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and weights ``(n_out, taps)`` of the antialiased bilinear filter along one axis.

    Pixel centres are aligned (``align_corners=False``); a tap past the edge gets weight 0 and the weights
    of each output pixel are renormalised to sum to 1 (the edge pixel then stands for what lies beyond).

    Example:
        >>> idx, w = resize_taps(2, 4)
        >>> idx.tolist(), w.tolist()
        ([[0, 1], [0, 1], [0, 1], [1, 1]], [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [1.0, 0.0]])
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    scale = n_in / n_out
    support, inv = (scale, 1.0 / scale) if scale >= 1.0 else (1.0, 1.0)
    centre = scale * (np.arange(n_out) + 0.5)
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    taps = max(1, int((hi - lo).max()))
    idx = lo[:, None] + np.arange(taps)[None]
    w = np.clip(1.0 - np.abs((idx - centre[:, None] + 0.5) * inv), 0.0, None)
    w[idx >= hi[:, None]] = 0.0
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    idx = np.minimum(idx, n_in - 1)
    idx.setflags(write=False)
    w.setflags(write=False)
    return idx, w


def _along(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Resize ``x`` (float32, ``(N, H, W)``) along ``axis`` (1 or 2) to ``n_out``."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    idx, w = resize_taps(n_in, n_out)
    w32 = w.astype(np.float32)
    shape = (1, n_out, 1) if axis == 1 else (1, 1, n_out)
    out = np.take(x, idx[:, 0], axis=axis)
    out *= w32[:, 0].reshape(shape)
    for t in range(1, idx.shape[1]):
        out += np.take(x, idx[:, t], axis=axis) * w32[:, t].reshape(shape)
    return out


def resize_bilinear(stack: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize ``(N, H, W)`` slices to ``(N, h, w)`` float32 (antialiased when shrinking).

    Args:
        stack: slices, any real dtype.
        size: ``h`` (square output) or ``(h, w)``.

    Example:
        >>> resize_bilinear(np.array([[[0, 4], [8, 12]]]), (2, 4)).tolist()
        [[[0.0, 1.0, 3.0, 4.0], [8.0, 9.0, 11.0, 12.0]]]
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    x = np.asarray(stack, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected (N, H, W) slices, got shape {x.shape}")
    # Rows first: contiguous row gathers, and the column pass then runs on the smaller array.
    out = _along(_along(x, 1, h), 2, w)
    return np.ascontiguousarray(out, dtype=np.float32) if out is not x else x.copy()
