"""Per-vertebra 2.5D crops: what stage 2 sees of one vertebra.

A crop covers the vertebra's z-range plus a margin and a square in-plane box around its mask plus a
margin. Along z it is resampled to ``cfg.n_slices`` source slices (nearest slice, so each crop slice
is a real CT slice whose index is kept in ``slice_indices``); each crop slice is a stack of ``cfg.k``
adjacent source slices (bone window, [0, 1]) and, when ``cfg.use_mask_channel``, the vertebra's mask
on the centre slice, blurred (``cfg.mask_blur``) so that it marks the vertebra without tracing its
outline. In-plane the box is resized to ``cfg.image_size`` squared.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from cspine.ct.seg.postprocess import Segmentation, VertebraBox
from cspine.io.volume import Volume
from cspine.labels import BONE_WINDOW, HU_MIN, LABEL_OF, VERTEBRAE
from cspine.preprocess.resize import resize_bilinear
from cspine.preprocess.window import window_to_unit

if TYPE_CHECKING:  # numpy only at run time: the ONNX Runtime path cuts crops without torch
    from cspine.models.vertebra_classifier import ClsConfig

__all__ = ["VertebraCrop", "crop_geometry", "extract_crops", "jitter_geometry", "resize_slices", "take_box"]


@dataclass(frozen=True, eq=False)
class VertebraCrop:
    """One vertebra's model input and where it came from.

    Attributes:
        name: vertebra name (``C1`` .. ``C7``).
        array: float32 ``(N, C, H, W)``: ``k`` bone-windowed slices (+ mask) per crop slice.
        slice_indices: int64 ``(N,)``: the volume slice index at the centre of each crop slice.
        box: ``(y0, y1, x0, x1)`` in-plane box in volume pixels (may reach outside the volume,
            which is padded with air).
        z_range: ``(start, stop)`` volume slices the crop spans, margin included.
    """

    name: str
    array: np.ndarray
    slice_indices: np.ndarray
    box: tuple[int, int, int, int]
    z_range: tuple[int, int]


def crop_geometry(vb: VertebraBox, shape: tuple[int, int, int], cfg: ClsConfig
                  ) -> tuple[tuple[int, int], tuple[int, int, int, int], np.ndarray, int]:
    """Crop z-range, square in-plane box, centre slice indices and 2.5D step for one vertebra."""
    nz = shape[0]
    start, stop = int(vb.z_range[0]), int(vb.z_range[1])
    mz = int(math.ceil(cfg.z_margin * max(stop - start, 1)))
    z0, z1 = max(0, start - mz), min(nz, stop + mz)
    y0, y1, x0, x1 = (int(v) for v in vb.box)
    side = max(y1 - y0, x1 - x0, 4) * (1.0 + 2.0 * cfg.xy_margin)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    half = int(math.ceil(side / 2.0))
    box = (int(round(cy)) - half, int(round(cy)) + half, int(round(cx)) - half, int(round(cx)) + half)
    centres = np.rint(np.linspace(z0, max(z1 - 1, z0), cfg.n_slices)).astype(np.int64)
    step = max(1, int(round((z1 - z0) / cfg.n_slices)))
    return (z0, z1), box, centres, step


def jitter_geometry(seg: Segmentation, rng: np.random.Generator, amount: float) -> Segmentation:
    """``seg`` with every vertebra's z-range and in-plane box edges moved at random (training only).

    Each edge moves by up to ``amount`` x the vertebra's extent along that axis (uniform), the way a
    stage-1 mask's extent errs (measured on the phantom: z ends off by ~15% of the height, the
    posterior edge of the box by up to ~20% of its depth). Training on such crops teaches stage 2 to
    find the fracture when the crop is not centred on the vertebra as a true mask would centre it.
    The label map is shared, not copied.
    """
    if amount <= 0:
        return seg
    moved: dict[str, VertebraBox] = {}
    for name, vb in seg.vertebrae.items():
        if not vb.present:
            moved[name] = vb
            continue
        (z0, z1), (y0, y1, x0, x1) = vb.z_range, vb.box

        def edges(a: int, b: int) -> tuple[int, int]:
            ext = max(b - a, 1)
            da, db = rng.uniform(-amount, amount, size=2) * ext
            na, nb = int(round(a + da)), int(round(b + db))
            return (na, nb) if nb - na >= max(1, ext // 2) else (a, b)

        moved[name] = dataclasses.replace(vb, z_range=edges(z0, z1), box=(*edges(y0, y1), *edges(x0, x1)))
    return Segmentation(seg.labels, moved, seg.warnings)


def take_box(arr: np.ndarray, idx: np.ndarray, box: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """``arr[idx, y0:y1, x0:x1]`` with out-of-volume pixels set to ``fill``."""
    y0, y1, x0, x1 = box
    _, ny, nx = arr.shape
    out = np.full((len(idx), y1 - y0, x1 - x0), fill, dtype=arr.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = arr[idx, sy0:sy1, sx0:sx1]
    return out


def resize_slices(stack: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(N, H, W)`` slices to ``(N, size, size)`` (antialiased when shrinking)."""
    return resize_bilinear(stack, size)


def extract_crops(volume: Volume, seg: Segmentation, cfg: ClsConfig,
                  names: tuple[str, ...] | None = None) -> dict[str, VertebraCrop]:
    """Crop every present vertebra (or those in ``names``) of a canonical volume.

    Args:
        volume: the study in canonical orientation (``seg.labels`` on its grid).
        seg: stage-1 (or ground-truth) segmentation of the study.
        cfg: the stage-2 config (sizes, ``k``, margins, mask channel).
        names: vertebrae to crop; default all of C1..C7 that ``seg`` marks present.

    Returns:
        ``{name: VertebraCrop}`` for present vertebrae, in C1..C7 order.
    """
    if seg.labels.shape != volume.hu.shape:
        raise ValueError(f"segmentation shape {seg.labels.shape} != volume shape {volume.hu.shape}")
    nz = volume.hu.shape[0]
    half = cfg.k // 2
    out: dict[str, VertebraCrop] = {}
    for name in names or VERTEBRAE:
        vb = seg.vertebrae.get(name)
        if vb is None or not vb.present:
            continue
        z_range, box, centres, step = crop_geometry(vb, volume.hu.shape, cfg)
        offsets = np.arange(-half, half + 1) * step
        idx = np.clip(centres[:, None] + offsets[None, :], 0, nz - 1)  # (N, k)
        hu = take_box(volume.hu, idx.reshape(-1), box, HU_MIN)
        img = resize_slices(window_to_unit(hu, BONE_WINDOW), cfg.image_size)
        img = img.reshape(cfg.n_slices, cfg.k, cfg.image_size, cfg.image_size)
        if cfg.use_mask_channel:
            mask = take_box(seg.labels, centres, box, 0) == LABEL_OF[name]
            m = resize_slices(mask.astype(np.float32), cfg.image_size)
            if cfg.mask_blur > 0:
                sigma = cfg.mask_blur * cfg.image_size
                m = ndimage.gaussian_filter(m, (0.0, sigma, sigma), mode="constant")
            m = m[:, None]
            img = np.concatenate([img, m], axis=1)
        out[name] = VertebraCrop(name=name, array=np.ascontiguousarray(img, dtype=np.float32),
                                 slice_indices=centres, box=box, z_range=z_range)
    return out
