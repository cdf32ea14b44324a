"""Stage-1 training data: studies and label maps on the model's grid (:mod:`cspine.ct.seg.grid`, which
inference shares), 2.5D training samples and level-safe augmentation.
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

from .grid import ReducedGrid, reduced_grid, resample_image


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
    # Reduced pixels in the padding outside the image (index -1) are background.
    padded = np.pad(np.asarray(labels)[zi], ((0, 0), (0, 1), (0, 1)))
    return class_map(padded[np.ix_(np.arange(len(zi)), yi, xi)], cfg)


@dataclass
class ReducedStudy:
    """One training study on the reduced grid (uint8 image to keep 87 real studies in RAM)."""

    uid: str
    group: str  # patient key for the split
    image: np.ndarray  # uint8 (n, S, S), window scaled to 0..255
    mask: np.ndarray  # uint8 (n, S, S) model classes

    @property
    def foreground_slices(self) -> np.ndarray:
        return np.flatnonzero(self.mask.reshape(len(self.mask), -1).max(axis=1) > 0)


def reduce_study(uid: str, hu: np.ndarray, spacing: tuple[float, float, float], labels: np.ndarray,
                 cfg: SegConfig, group: str | None = None) -> ReducedStudy:
    """Resample one (volume, mask) pair with voxel ``spacing`` (z, y, x mm) onto the model grid."""
    if hu.shape != labels.shape:
        raise ValueError(f"study {uid}: mask shape {labels.shape} != volume shape {hu.shape}")
    grid = reduced_grid(hu.shape, spacing, cfg)
    image = np.rint(resample_image(hu, grid, cfg) * 255).astype(np.uint8)
    return ReducedStudy(uid, group or uid, image, resample_mask(labels, grid, cfg))


class SliceDataset(torch.utils.data.Dataset):
    """2.5D training samples ``(x float32 (k, S, S), y int64 (S, S))`` indexed by (study, slice) pairs."""

    def __init__(self, studies: Sequence[ReducedStudy], index: np.ndarray, k: int) -> None:
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


def sample_slices(studies: Sequence[ReducedStudy], n: int, rng: np.random.Generator,
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

    Geometric: small rotation, scale (patient size: the field in mm is fixed) and shift in-plane (the
    same for every slice of a stack) and a left-right mirror, which leaves cranio-caudal order intact;
    never a flip along z (channels) or anterior-posterior. Scanner: contrast, brightness (HU
    calibration), gamma and Gaussian noise. (A Gaussian blur on 30% of the stacks, tried for softer
    kernels, removed whole levels (C1, C6) from the demo's stage 1: left out.)

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

