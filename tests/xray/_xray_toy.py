"""Tiny synthetic radiographs for the radiograph tests: three visually distinct classes.

normal = an intact bright vertical column; fracture = the column with a dark transverse gap;
dislocation = the column's lower half shifted sideways. Random position, width and noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("normal", "fracture", "dislocation")


def toy_image(label: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    img = rng.normal(0.15, 0.03, (size, size))
    x0 = int(rng.integers(size // 3, size // 2))
    w = int(rng.integers(size // 8, size // 5))
    mid = size // 2 + int(rng.integers(-4, 5))
    img[4:-4, x0:x0 + w] = 0.8
    if label == "fracture":
        img[mid - 3:mid + 3, x0 - 2:x0 + w + 2] = 0.1
    elif label == "dislocation":
        img[mid:-4, x0:x0 + w] = 0.15
        shift = w + 3
        img[mid:-4, x0 + shift:x0 + shift + w] = 0.8
    return np.clip(img, 0, 1)


def write_toy_dataset(root: Path, per_class: int = 10, seed: int = 0, size: int = 64,
                      classes: tuple[str, ...] = CLASSES) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = (toy_image(c, rng, size) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{c}_{i:03d}.png")
    return root
