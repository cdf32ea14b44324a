"""HU windowing and normalisation: the one place model inputs get their intensity scale."""

from __future__ import annotations

import numpy as np

from cspine.labels import BONE_WINDOW, window_bounds


def window_to_unit(hu: np.ndarray, window: tuple[float, float] = BONE_WINDOW) -> np.ndarray:
    """Clip HU to a (center, width) window and scale it to float32 in [0, 1].

    Example:
        >>> window_to_unit(np.array([-1000, 400, 2000]), (400.0, 1800.0)).round(2).tolist()
        [0.0, 0.5, 1.0]
    """
    low, high = window_bounds(window)
    out = (np.asarray(hu, dtype=np.float32) - low) / (high - low)
    return np.clip(out, 0.0, 1.0, out=out)
