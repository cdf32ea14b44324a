"""Stage-1 data: volumes resampled to the model's grid, 2.5D slice stacks and level-safe augmentation.

Training and inference share one grid: slices resampled to ``cfg.z_spacing`` mm along axis 0
(linear for HU, nearest for labels) and each slice resized to ``image_size`` x ``image_size``
(antialiased bilinear for HU, nearest for labels). A 2.5D input for reduced slice ``i`` stacks
slices ``i - k//2 .. i + k//2`` (clamped at the ends) as channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cspine.labels import LABEL_OF
from cspine.models.unet2p5d import SegConfig
from cspine.preprocess.window import window_to_unit

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


def class_map(labels: np.ndarray, cfg: SegConfig) -> np.ndarray:
    """Map a label volume (1..7 = C1..C7, 8.. = T1..) to the model's classes (others -> 0)."""
    lut = np.zeros(max(256, int(labels.max()) + 1 if labels.size else 1), np.uint8)
    lut[1:8] = np.arange(1, 8)
    if cfg.include_t1:
        lut[LABEL_OF["T1"]] = 8
    return lut[labels]


def resample_mask(labels: np.ndarray, grid: ReducedGrid, cfg: SegConfig) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume onto ``grid``, in model classes: uint8 (n, S, S)."""
    zi = grid.z_nearest()
    yi, xi = grid.plane_nearest(1), grid.plane_nearest(2)
    return class_map(np.asarray(labels)[np.ix_(zi, yi, xi)], cfg)


def stack_indices(n: int, k: int) -> np.ndarray:
    """(n, k) slice indices of each 2.5D stack: ``i - k//2 .. i + k//2``, clamped to [0, n)."""
    offsets = np.arange(k) - k // 2
    return np.clip(np.arange(n)[:, None] + offsets[None], 0, n - 1)


@dataclass
class PreparedStudy:
    """One training study on the reduced grid (uint8 image to keep 87 real studies in RAM)."""

    uid: str
    group: str  # patient key for the split
    image: np.ndarray  # uint8 (n, S, S), window scaled to 0..255
    mask: np.ndarray  # uint8 (n, S, S) model classes

    @property
    def foreground_slices(self) -> np.ndarray:
        return np.flatnonzero(self.mask.reshape(len(self.mask), -1).max(axis=1) > 0)


def prepare_study(uid: str, hu: np.ndarray, spacing_z: float, labels: np.ndarray, cfg: SegConfig,
                  group: str | None = None) -> PreparedStudy:
    """Resample one (volume, mask) pair onto the model grid for training."""
    if hu.shape != labels.shape:
        raise ValueError(f"study {uid}: mask shape {labels.shape} != volume shape {hu.shape}")
    grid = reduced_grid(hu.shape, spacing_z, cfg)
    image = np.rint(resample_image(hu, grid, cfg) * 255).astype(np.uint8)
    return PreparedStudy(uid, group or uid, image, resample_mask(labels, grid, cfg))


class SliceDataset(torch.utils.data.Dataset):
    """2.5D training samples ``(x float32 (k, S, S), y int64 (S, S))`` indexed by (study, slice) pairs."""

    def __init__(self, studies: Sequence[PreparedStudy], index: np.ndarray, k: int) -> None:
        self.studies = list(studies)
        self.index = np.asarray(index, np.int64).reshape(-1, 2)
        self.offsets = np.arange(k) - k // 2

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, z = self.index[i]
        st = self.studies[s]
        zs = np.clip(z + self.offsets, 0, len(st.image) - 1)
        x = torch.from_numpy(st.image[zs].astype(np.float32) / 255.0)
        y = torch.from_numpy(st.mask[z].astype(np.int64))
        return x, y


def sample_slices(studies: Sequence[PreparedStudy], n: int, rng: np.random.Generator,
                  foreground_share: float = 0.8) -> np.ndarray:
    """Draw ``n`` (study, slice) pairs: ``foreground_share`` from slices with a vertebra, the rest anywhere
    (so the model also learns to say "no vertebra" above C1 and below C7)."""
    out = np.empty((n, 2), np.int64)
    fg = [st.foreground_slices for st in studies]
    for i in range(n):
        s = int(rng.integers(len(studies)))
        if len(fg[s]) and rng.random() < foreground_share:
            z = int(rng.choice(fg[s]))
        else:
            z = int(rng.integers(len(studies[s].image)))
        out[i] = s, z
    return out


def augment_batch(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                  max_rotation_deg: float = 10.0, scale_range: float = 0.1, shift: float = 0.05,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch without changing which level is which.

    Geometric: small rotation, scale and shift in-plane (the same for every slice of a stack) and a
    left-right mirror, which leaves cranio-caudal order intact; never a flip along z (channels) or
    anterior-posterior. Intensity: contrast, brightness, gamma and Gaussian noise.

    Args:
        x: (N, k, S, S) float in [0, 1]. y: (N, S, S) int64 classes.
        generator: a CPU generator, so runs are reproducible.
    """
    n = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(dev)

    angle = u(-max_rotation_deg, max_rotation_deg) * math.pi / 180
    scale = u(1 - scale_range, 1 + scale_range)
    mirror = torch.where(u(0, 1) < 0.5, -1.0, 1.0)
    tx, ty = u(-shift, shift) * 2, u(-shift, shift) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], 1),
                         torch.stack([sin * mirror, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                      align_corners=False)[:, 0].long()
    contrast = u(0.85, 1.15)[:, None, None, None]
    bright = u(-0.05, 0.05)[:, None, None, None]
    gamma = u(0.8, 1.25)[:, None, None, None]
    x = (x.clamp(0, 1) ** gamma) * contrast + bright
    noise = torch.randn(x.shape, generator=generator).to(dev) * u(0, 0.03)[:, None, None, None]
    return (x + noise).clamp_(0, 1), y
