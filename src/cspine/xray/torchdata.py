"""A torch ``Dataset`` of radiographs: read, resize (cached), augment, normalise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cspine.io.images import DEFAULT_MAX_PIXELS, read_image
from cspine.xray.transforms import Augment, Triple, augment, normalize, resize_unit


class ImageSet(Dataset):
    """Radiographs as ``(3, size, size)`` tensors normalised with ``mean``/``std``, and their labels.

    The resized grayscale of each image is cached in memory (float16, ``size**2 * 2`` bytes per
    image) so that epochs after the first do not decode large DICOMs again. An image whose header claims
    more than ``max_pixels`` pixels is refused (:func:`cspine.io.images.read_image`).
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, size: int, *,
                 mean: Triple, std: Triple, aug: Augment | None = None, cache: bool = True,
                 seed: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.mean, self.std = mean, std
        self.max_pixels = max_pixels
        self.paths = [Path(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.size = size
        self.aug = aug or Augment()
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def gray(self, i: int) -> torch.Tensor:
        """The resized [0, 1] grayscale ``(1, size, size)`` of image ``i``."""
        if self.cache is not None and i in self.cache:
            return self.cache[i].float()
        g = resize_unit(read_image(self.paths[i], self.max_pixels), self.size)
        if self.cache is not None:
            self.cache[i] = g.half()
        return g

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = self.gray(i)
        if self.aug.enabled:
            g = augment(g, self.aug, self.generator)
        return normalize(g, self.mean, self.std), int(self.labels[i])

