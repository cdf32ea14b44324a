"""The stage-1 grid, shared by training and inference: a volume resampled for the U-Net, and back.

Slices are resampled to ``cfg.z_spacing`` mm along axis 0 (linear for HU, nearest for labels). In-plane,
the model sees a fixed physical field: ``cfg.field_mm`` x ``cfg.field_mm`` around the centre of the slice,
cropped or padded with air, then resized to ``image_size`` x ``image_size`` (antialiased bilinear for HU,
nearest for labels). So a neck looks the same size to the U-Net whatever the scanner's reconstruction
field of view and matrix (150 mm at 512 px or 350 mm at 768 px); models saved before ``field_mm`` existed
(``None``) resize the whole slice, as they were trained. A
2.5D input for reduced slice ``i`` stacks slices ``i - k//2 .. i + k//2`` (clamped at the ends) as
channels. Labels predicted on the reduced grid go back to every voxel of the original grid by nearest
neighbour (:func:`to_full_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cspine.preprocess.resize import resize_bilinear
from cspine.preprocess.window import window_to_unit

if TYPE_CHECKING:  # numpy only at run time: the ONNX Runtime path resamples without torch
    from cspine.models.unet2p5d import SegConfig

__all__ = ["ReducedGrid", "reduced_grid", "resample_image", "stack_indices", "to_full_grid"]

#: Output slices resampled per step: bounds the float32 working memory to ~100 MB for 512x512.
_CHUNK = 48


#: HU of the air that pads a slice whose field of view is smaller than the model's field.
AIR_HU = -1024.0


@dataclass(frozen=True)
class ReducedGrid:
    """How a volume's grid maps onto the model's reduced grid (and back).

    In-plane, original rows ``rows[0] .. rows[0] + rows[1] - 1`` (and likewise columns) fill the reduced
    ``size`` x ``size`` plane; a start below 0 or a window past the edge means padding with air.
    """

    shape: tuple[int, int, int]  # original (Z, Y, X)
    size: int  # in-plane S
    z_positions: np.ndarray  # (n,) fractional original slice index of each reduced slice
    rows: tuple[int, int] = (0, 0)  # (start, window) in original rows; window 0 = the whole axis
    cols: tuple[int, int] = (0, 0)  # the same for columns

    @property
    def n_slices(self) -> int:
        return len(self.z_positions)

    def window(self, axis: int) -> tuple[int, int]:
        """(start, length) of the original rows (axis 1) or columns (axis 2) the reduced plane covers."""
        start, win = self.rows if axis == 1 else self.cols
        return (start, win) if win > 0 else (0, self.shape[axis])

    def z_nearest(self) -> np.ndarray:
        """Original slice index nearest to each reduced slice."""
        return np.clip(np.floor(self.z_positions + 0.5).astype(np.int64), 0, self.shape[0] - 1)

    def plane_nearest(self, axis: int) -> np.ndarray:
        """Original row (axis 1) or column (axis 2) nearest to each reduced pixel centre; -1 where that
        pixel lies in the padding outside the image."""
        start, win = self.window(axis)
        idx = start + np.floor((np.arange(self.size) + 0.5) * win / self.size).astype(np.int64)
        return np.where((idx >= 0) & (idx < self.shape[axis]), idx, -1)

    def back_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each original (z, y, x) index, the reduced index nearest to it (for mapping labels back);
        ``size`` (one past the plane) for rows and columns outside the model's field."""
        nz, ny, nx = self.shape
        zi = np.searchsorted(self.z_positions, np.arange(nz), side="left")
        zi = np.clip(zi, 0, self.n_slices - 1)
        below = np.clip(zi - 1, 0, self.n_slices - 1)
        orig = np.arange(nz)
        closer_below = np.abs(self.z_positions[below] - orig) < np.abs(self.z_positions[zi] - orig)
        zi = np.where(closer_below, below, zi)
        return zi, self._plane_back(1), self._plane_back(2)

    def _plane_back(self, axis: int) -> np.ndarray:
        start, win = self.window(axis)
        i = np.floor((np.arange(self.shape[axis]) - start + 0.5) * self.size / win).astype(np.int64)
        return np.where((i >= 0) & (i < self.size), i, self.size)


def _plane_window(n: int, spacing_mm: float, cfg: SegConfig) -> tuple[int, int]:
    """(start, length) in original pixels of the model's field, centred on the slice."""
    if cfg.field_mm is None:
        return 0, n
    win = max(1, int(round(cfg.field_mm / spacing_mm)))
    return (n - win) // 2, win


def reduced_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 cfg: SegConfig) -> ReducedGrid:
    """The reduced grid of a volume of ``shape`` with voxel ``spacing`` (z, y, x mm) under ``cfg``."""
    nz = shape[0]
    z_mm = float(spacing[0])
    extent = (nz - 1) * z_mm
    n = max(1, int(round(extent / cfg.z_spacing)) + 1)
    positions = np.minimum(np.arange(n) * cfg.z_spacing / z_mm, nz - 1)
    return ReducedGrid(tuple(int(s) for s in shape), cfg.image_size, positions,  # type: ignore[arg-type]
                       _plane_window(int(shape[1]), float(spacing[1]), cfg),
                       _plane_window(int(shape[2]), float(spacing[2]), cfg))


def _crop_or_pad(t: np.ndarray, grid: ReducedGrid) -> np.ndarray:
    """(n, Y, X) HU -> the (n, win_y, win_x) field, padded with air where it leaves the image."""
    (r0, rw), (c0, cw) = grid.window(1), grid.window(2)
    ny, nx = t.shape[-2:]
    if (r0, rw, c0, cw) == (0, ny, 0, nx):
        return t
    inner = t[..., max(r0, 0):min(r0 + rw, ny), max(c0, 0):min(c0 + cw, nx)]
    pad = ((0, 0), (max(-r0, 0), max(r0 + rw - ny, 0)), (max(-c0, 0), max(c0 + cw - nx, 0)))
    return np.pad(inner, pad, constant_values=AIR_HU) if any(any(p) for p in pad) else inner


def resample_image(hu: np.ndarray, grid: ReducedGrid, cfg: SegConfig) -> np.ndarray:
    """Resample ``hu`` (Z, Y, X) onto ``grid`` and window it to [0, 1]: float32 (n, S, S).

    HU are interpolated first (linear in z, antialiased bilinear in-plane) and the window is applied to
    the reduced slices: the same image a scan acquired at the reduced resolution would give, and the
    clip runs on n x S x S values instead of on every full-resolution slice.
    """
    out = np.empty((grid.n_slices, grid.size, grid.size), np.float32)
    nz = hu.shape[0]
    for c0 in range(0, grid.n_slices, _CHUNK):
        pos = grid.z_positions[c0:c0 + _CHUNK]
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, nz - 1)
        w = (pos - lo).astype(np.float32)[:, None, None]
        need = np.unique(np.concatenate([lo, hi]))
        block = np.asarray(hu[need], dtype=np.float32)
        a, b = block[np.searchsorted(need, lo)], block[np.searchsorted(need, hi)]
        t = _crop_or_pad(a + w * (b - a), grid)
        if t.shape[-2:] != (grid.size, grid.size):
            t = resize_bilinear(t, grid.size)
        out[c0:c0 + len(pos)] = window_to_unit(t, cfg.window)
    return out



def stack_indices(n: int, k: int) -> np.ndarray:
    """(n, k) slice indices of each 2.5D stack: ``i - k//2 .. i + k//2``, clamped to [0, n)."""
    offsets = np.arange(k) - k // 2
    return np.clip(np.arange(n)[:, None] + offsets[None], 0, n - 1)


def to_full_grid(small: np.ndarray, grid: ReducedGrid) -> np.ndarray:
    """Map reduced-grid labels back onto the original grid by nearest neighbour (background outside the
    model's field)."""
    zi, yi, xi = grid.back_indices()
    # Plane first (n x Y x X at most), then z; np.take runs ~4x faster than chained fancy indexing.
    # One background row and column past the plane take the pixels outside the field.
    t = np.pad(np.asarray(small), ((0, 0), (0, 1), (0, 1)))
    return t.take(yi, axis=1).take(xi, axis=2).take(zi, axis=0)
