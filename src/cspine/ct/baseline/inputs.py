"""What the one-stage model sees of a study: the whole scan as ``N`` 2.5D slices of the whole field of view.

Along z the canonical volume is sampled at ``cfg.n_slices`` evenly spaced source slices from the first
to the last (nearest slice, so each input slice is a real CT slice whose index is kept); each input
slice stacks ``cfg.k`` source slices ``step`` apart, ``step`` being the spacing of the samples, so the
stack spans the z-interval that input slice stands for (stage 2 does the same within one vertebra).
In-plane the whole axial slice (padded with air to a square when it is not one) is resized to
``cfg.image_size`` with the bone window of stage 2. There is no mask channel: nothing is segmented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cspine.ct.cls.crops import resize_slices, take_box
from cspine.io.volume import Volume
from cspine.labels import BONE_WINDOW, HU_MIN
from cspine.models.vertebra_classifier import ClsConfig
from cspine.preprocess.window import window_to_unit


@dataclass(frozen=True, eq=False)
class StudyStack:
    """A study as model input.

    Attributes:
        array: float32 ``(N, k, S, S)`` bone-windowed [0, 1].
        slice_indices: int64 ``(N,)`` volume slice at the centre of each input slice.
        step: source slices between adjacent input slices (at least 1).
    """

    array: np.ndarray
    slice_indices: np.ndarray
    step: int


def sample_geometry(nz: int, n_slices: int) -> tuple[np.ndarray, int]:
    """Centre slice indices covering ``0 .. nz - 1`` and the 2.5D step."""
    centres = np.rint(np.linspace(0, max(nz - 1, 0), n_slices)).astype(np.int64)
    return centres, max(1, int(round(nz / n_slices)))


def square_box(shape_yx: tuple[int, int]) -> tuple[int, int, int, int]:
    """The smallest square box centred on the slice that holds it whole (air outside)."""
    ny, nx = shape_yx
    side = max(ny, nx)
    y0, x0 = (ny - side) // 2, (nx - side) // 2
    return y0, y0 + side, x0, x0 + side


def study_stack(volume: Volume, cfg: ClsConfig) -> StudyStack:
    """The model input of a canonical volume (see the module docstring)."""
    if cfg.use_mask_channel:
        raise ValueError("the one-stage baseline has no mask channel; build its config with "
                         "baseline_model_config (use_mask_channel=False)")
    nz = volume.hu.shape[0]
    centres, step = sample_geometry(nz, cfg.n_slices)
    half = cfg.k // 2
    idx = np.clip(centres[:, None] + np.arange(-half, half + 1)[None, :] * step, 0, nz - 1)
    hu = take_box(volume.hu, idx.reshape(-1), square_box(volume.hu.shape[1:]), HU_MIN)
    img = resize_slices(window_to_unit(hu, BONE_WINDOW), cfg.image_size)
    img = img.reshape(cfg.n_slices, cfg.k, cfg.image_size, cfg.image_size)
    return StudyStack(np.ascontiguousarray(img, dtype=np.float32), centres, step)


def stack_slice_targets(stack: StudyStack, box_slices: frozenset[int] | None, fractured: bool) -> np.ndarray:
    """Auxiliary per-slice targets: 1 where the z-interval an input slice stands for (the source slices
    nearer its centre than any other's) holds a slice with a fracture box, else 0; all 0 for an intact
    study; NaN (no target) for a fractured study without boxes (there is no mask to place its
    fracture, unlike stage 2's pseudo-labels)."""
    n = len(stack.slice_indices)
    if not fractured:
        return np.zeros(n, np.float32)
    if box_slices is None:
        return np.full(n, np.nan, np.float32)
    # Each source slice belongs to the input slice whose centre is nearest (ties: the cranial one).
    out = np.zeros(n, np.float32)
    mids = (stack.slice_indices[:-1] + stack.slice_indices[1:]) / 2.0
    for z in box_slices:
        out[int(np.searchsorted(mids, z, side="left"))] = 1.0
    return out
