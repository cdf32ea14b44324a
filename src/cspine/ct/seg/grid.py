"""The stage-1 grid, shared by training and inference: a volume resampled for the U-Net, and back.

Slices are resampled to ``cfg.z_spacing`` mm along axis 0 (linear for HU, nearest for labels) and each
slice resized to ``image_size`` x ``image_size`` (antialiased bilinear for HU, nearest for labels). A
2.5D input for reduced slice ``i`` stacks slices ``i - k//2 .. i + k//2`` (clamped at the ends) as
channels. Labels predicted on the reduced grid go back to every voxel of the original grid by nearest
neighbour (:func:`to_full_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cspine.models.unet2p5d import SegConfig
from cspine.preprocess.window import window_to_unit

__all__ = ["ReducedGrid", "reduced_grid", "resample_image", "stack_indices", "to_full_grid"]

#: Output slices resampled per step: bounds the float32 working memory to ~100 MB for 512x512.
_CHUNK = 48


@dataclass(frozen=True)
class ReducedGrid:
    """How a volume's grid maps onto the model's reduced grid (and back)."""

    shape: tuple[int, int, int]  # original (Z, Y, X)
    size: int  # in-plane S
    z_positions: np.ndarray  # (n,) fractional original slice index of each reduced slice

    @property
    def n_slices(self) -> int:
        return len(self.z_positions)

    def z_nearest(self) -> np.ndarray:
        """Original slice index nearest to each reduced slice."""
        return np.clip(np.floor(self.z_positions + 0.5).astype(np.int64), 0, self.shape[0] - 1)

    def plane_nearest(self, axis: int) -> np.ndarray:
        """Original row (axis 1) or column (axis 2) nearest to each reduced pixel centre."""
        n = self.shape[axis]
        return np.clip(np.floor((np.arange(self.size) + 0.5) * n / self.size).astype(np.int64), 0, n - 1)

    def back_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each original (z, y, x) index, the reduced index nearest to it (for mapping labels back)."""
        nz, ny, nx = self.shape
        zi = np.searchsorted(self.z_positions, np.arange(nz), side="left")
        zi = np.clip(zi, 0, self.n_slices - 1)
        below = np.clip(zi - 1, 0, self.n_slices - 1)
        orig = np.arange(nz)
        closer_below = np.abs(self.z_positions[below] - orig) < np.abs(self.z_positions[zi] - orig)
        zi = np.where(closer_below, below, zi)
        yi = np.clip(np.floor((np.arange(ny) + 0.5) * self.size / ny).astype(np.int64), 0, self.size - 1)
        xi = np.clip(np.floor((np.arange(nx) + 0.5) * self.size / nx).astype(np.int64), 0, self.size - 1)
        return zi, yi, xi


def reduced_grid(shape: tuple[int, int, int], z_mm: float, cfg: SegConfig) -> ReducedGrid:
    """The reduced grid of a volume of ``shape`` with slice spacing ``z_mm`` under ``cfg``."""
    nz = shape[0]
    extent = (nz - 1) * z_mm
    n = max(1, int(round(extent / cfg.z_spacing)) + 1)
    positions = np.minimum(np.arange(n) * cfg.z_spacing / z_mm, nz - 1)
    return ReducedGrid(tuple(int(s) for s in shape), cfg.image_size, positions)  # type: ignore[arg-type]


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
        w = torch.from_numpy((pos - lo).astype(np.float32))[:, None, None]
        need = np.unique(np.concatenate([lo, hi]))
        block = torch.from_numpy(np.asarray(hu[need])).float()
        where = np.searchsorted(need, lo), np.searchsorted(need, hi)
        t = torch.lerp(block[torch.from_numpy(where[0])], block[torch.from_numpy(where[1])], w)[:, None]
        if t.shape[-2:] != (grid.size, grid.size):
            t = F.interpolate(t, size=(grid.size, grid.size), mode="bilinear", antialias=True,
                              align_corners=False)
        out[c0:c0 + len(pos)] = window_to_unit(t[:, 0].numpy(), cfg.window)
    return out



def stack_indices(n: int, k: int) -> np.ndarray:
    """(n, k) slice indices of each 2.5D stack: ``i - k//2 .. i + k//2``, clamped to [0, n)."""
    offsets = np.arange(k) - k // 2
    return np.clip(np.arange(n)[:, None] + offsets[None], 0, n - 1)


def to_full_grid(small: np.ndarray, grid: ReducedGrid) -> np.ndarray:
    """Map reduced-grid labels back onto the original grid by nearest neighbour."""
    zi, yi, xi = (torch.from_numpy(i) for i in grid.back_indices())
    # Plane first (n x Y x X at most), then z; torch's gathers run ~3x faster than numpy fancy indexing.
    t = torch.from_numpy(np.ascontiguousarray(small))
    return t.index_select(1, yi).index_select(2, xi).index_select(0, zi).numpy()
