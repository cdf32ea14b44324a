"""The paper's preprocessing: grayscale -> 3 channels, square resize, the model's normalisation.

The mean and standard deviation are the model's (``XrayConfig.mean``/``std``, decided per arch by
``cspine.models.radiograph.default_normalisation`` and saved with the model), never fixed here.

The image is resized to ``size x size`` without keeping the aspect ratio, as the paper's
pipeline did (MATLAB's augmented image datastore squashes). Augmentation (off by default): a
left-right mirror with probability ``p_flip`` (a lateral view of a patient facing the other way
is just as real), a random rotation of up to
+-``max_rotation`` degrees and a contrast change by a factor in [1 - ``max_contrast``,
1 + ``max_contrast``] around the image mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cspine.xray.preprocess import normalize_array, unit_square

#: Per-channel (R, G, B) values, as in ``XrayConfig.mean`` / ``XrayConfig.std``.
Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Augment:
    """Random training augmentation; ``enabled=False`` (the default) leaves images unchanged."""

    enabled: bool = False
    max_rotation: float = 5.0
    max_contrast: float = 0.1
    p_flip: float = 0.5


def resize_unit(img: np.ndarray, size: int) -> torch.Tensor:
    """A ``(H, W)`` [0, 1] image as a ``(1, size, size)`` float32 tensor (antialiased bilinear)."""
    return torch.from_numpy(unit_square(img, size))


def augment(gray: torch.Tensor, aug: Augment, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror, rotate and change the contrast of a ``(1, S, S)`` [0, 1] tensor."""
    if not aug.enabled:
        return gray
    r = torch.rand(3, generator=generator)
    if float(r[2]) < aug.p_flip:
        gray = gray.flip(-1)
    angle = math.radians((2 * float(r[0]) - 1) * aug.max_rotation)
    c, s = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], dtype=gray.dtype)
    grid = F.affine_grid(theta, [1, *gray.shape], align_corners=False)
    out = F.grid_sample(gray[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    factor = 1 + (2 * float(r[1]) - 1) * aug.max_contrast
    mean = out.mean()
    return ((out - mean) * factor + mean).clamp_(0, 1)


def normalize(gray: torch.Tensor, mean: Triple, std: Triple) -> torch.Tensor:
    """``(1, S, S)`` [0, 1] -> ``(3, S, S)``: the gray copied to R, G and B, then ``(x - mean) / std``."""
    return torch.from_numpy(normalize_array(gray.detach().cpu().numpy(), mean, std))


def preprocess(img: np.ndarray, size: int, mean: Triple, std: Triple) -> torch.Tensor:
    """Inference preprocessing of one image: resize, 3 channels, normalise -> ``(3, size, size)``."""
    return normalize(resize_unit(img, size), mean, std)
