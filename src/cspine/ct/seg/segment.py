"""Stage-1 inference on numpy: a canonical CT volume in, C1..C7 labels and boxes on its own grid out.

For speed the network never sees the full grid. The volume is resampled to ``cfg.z_spacing`` mm
between slices (linear) and ``image_size`` pixels in-plane (antialiased), the 2.5D stacks of the
reduced volume run through the U-Net in batches, the argmax labels are post-processed on the reduced
grid (largest component per level, level order) and then mapped back to every voxel of the original
grid by nearest neighbour. Boundaries are therefore as fine as the reduced grid (e.g. 2 mm in z,
512/256 = 2 pixels in-plane), which is ample for the vertebra crops stage 2 takes; the boxes and
centroids are computed on the full grid.

Everything here runs on numpy; only the network runs in a runtime: PyTorch
(:class:`cspine.ct.seg.predict.SegModel`) or ONNX Runtime (:mod:`cspine.onnx.runtime`), both behind
:class:`StackModel`.

A study with no bone in view (no voxel above :data:`BONE_HU`) is not an error: ``segment`` returns
all vertebrae absent with a warning, so that a batch of studies goes on. A study with fewer than two
slices raises :class:`SegmentationInputError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cspine.errors import CspineError
from cspine.io.volume import Volume

from .grid import reduced_grid, resample_image, stack_indices, to_full_grid
from .postprocess import Segmentation, postprocess

if TYPE_CHECKING:
    from cspine.models.unet2p5d import SegConfig

log = logging.getLogger(__name__)

__all__ = ["BONE_HU", "MIN_BONE_VOXELS", "SegmentationInputError", "StackModel", "default_batch_size",
           "segment", "stack_batches"]

#: HU above which a voxel counts as bone when checking that a study shows any.
BONE_HU = 200
#: Fewest bone voxels a study must have before the model runs.
MIN_BONE_VOXELS = 50


#: Stacks per forward pass when the caller gives none: small batches keep a CPU's activations in
#: cache (at 256 px, 4 ran ~1.7x faster per slice than 16 on 2 cores); a GPU wants large ones.
CPU_BATCH, GPU_BATCH = 4, 32
#: On a CPU the batch grows as the image shrinks (same pixels per pass, up to 64 stacks): at 64 px a
#: batch of 4 is dominated by per-call overhead (EfficientNet-Lite0 U-Net: 16 stacks ~1.5x faster).
CPU_BATCH_PIXELS, CPU_BATCH_MAX = CPU_BATCH * 256 * 256, 64


def default_batch_size(device_type: str, image_size: int = 256) -> int:
    """Stacks per forward pass on a ``device_type`` (``"cpu"``, ``"cuda"``) for ``image_size`` px slices."""
    if device_type != "cpu":
        return GPU_BATCH
    return int(min(CPU_BATCH_MAX, max(CPU_BATCH, CPU_BATCH_PIXELS // max(image_size, 1) ** 2)))


class SegmentationInputError(CspineError):
    """A volume cannot be segmented (e.g. a single slice)."""


class StackModel(Protocol):
    """A loaded stage-1 network, whatever runs it: its config, its levels, and the reduced-volume pass."""

    cfg: SegConfig

    @property
    def levels(self) -> tuple[int, ...]: ...

    def predict_reduced(self, image: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Argmax classes (uint8 (n, S, S)) for a reduced volume (n, S, S) in [0, 1]."""
        ...


def stack_batches(image: np.ndarray, k: int, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first index, (b, k, S, S) stacks)`` of every 2.5D stack of ``image`` (n, S, S), ``batch_size`` at
    a time, in the dtype of ``image``."""
    idx = stack_indices(len(image), k)
    for b0 in range(0, len(image), batch_size):
        yield b0, image[idx[b0:b0 + batch_size]]


def _check_volume(volume: Volume) -> None:
    if volume.hu.ndim != 3:
        raise SegmentationInputError(f"expected a 3-D volume, got shape {volume.hu.shape}")
    if volume.shape[0] < 2:
        where = volume.slices[0].path if volume.slices and volume.slices[0].path else None
        raise SegmentationInputError(
            f"the study has {volume.shape[0]} axial slice(s); stage 1 needs a CT volume of at least 2 slices "
            "(is this a localizer or a single image rather than the axial series?)", where)


def segment(volume: Volume, model: StackModel, *, batch_size: int | None = None) -> Segmentation:
    """Label C1..C7 in a canonical volume (axis 0 superior -> inferior; see ``cspine.io.orient``).

    Args:
        volume: the study in canonical orientation.
        model: a loaded stage-1 model (:class:`~cspine.ct.seg.predict.SegModel` or its ONNX Runtime twin).
        batch_size: 2.5D stacks per forward pass (default: the model's).

    Returns:
        A :class:`Segmentation` on ``volume``'s grid, with warnings for levels not found, levels
        relabelled to keep their order, or a study without bone.

    Raises:
        SegmentationInputError: fewer than two slices.
    """
    _check_volume(volume)
    hu = volume.hu
    if _bone_voxels(hu) < MIN_BONE_VOXELS:
        msg = f"no bone in view (fewer than {MIN_BONE_VOXELS} voxels above {BONE_HU} HU): no vertebra found"
        log.warning("%s: %s", volume.study_uid or "study", msg)
        return Segmentation.from_labels(np.zeros(volume.shape, np.uint8), [msg])
    grid = reduced_grid(volume.shape, volume.spacing, model.cfg)
    image = resample_image(hu, grid, model.cfg)
    small = model.predict_reduced(image, batch_size=batch_size)
    small, warnings = postprocess(small, model.levels)
    labels = to_full_grid(small, grid)
    seg = Segmentation.from_labels(labels, warnings)
    missing = [n for n, b in seg.vertebrae.items() if not b.present]
    if missing:
        seg = Segmentation(seg.labels, seg.vertebrae, (*seg.warnings, f"not found: {', '.join(missing)}"))
    return seg


def _bone_voxels(hu: np.ndarray) -> int:
    # Every 4th slice and pixel: a cheap, memmap-friendly check.
    return int(np.count_nonzero(np.asarray(hu[::4, ::4, ::4]) > BONE_HU)) * 64
