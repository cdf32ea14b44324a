"""The :class:`Volume`: a CT study as an HU array with its geometry and slice map.

Conventions (every stage relies on them):

* ``hu`` is an ``int16`` array of shape ``(Z, Y, X)`` = (slice, row, column).
* ``affine`` is a 4x4 matrix mapping an array index ``(z, y, x, 1)`` -- in the array's own axis
  order -- to patient coordinates in millimetres in DICOM's LPS frame (x to the patient's left,
  y to posterior, z to superior). NIfTI files use RAS and the (i, j, k) order; convert with
  :func:`cspine.io.nifti` helpers, never by hand.
* ``slices[k]`` describes array slice ``k``: its source file, InstanceNumber and SOPInstanceUID
  (RSNA's ``slice_number`` is the InstanceNumber), the frame of a multi-frame file (whose frames have no
  InstanceNumber of their own), or ``None`` fields for volumes not read from DICOM.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SliceInfo:
    """Where one axial slice of a volume came from."""

    path: str | None = None
    instance_number: int | None = None
    sop_instance_uid: str | None = None
    #: Frame index (0-based) in a multi-frame file (Enhanced CT); None for a single-frame image.
    frame: int | None = None
    #: (rows, columns) added to a stored pixel position of this image to find it on the volume's rows and
    #: columns as read (before reorientation): gantry-tilt correction shifts each slice and enlarges the
    #: grid. None: no shift.
    pixel_offset: tuple[float, float] | None = None


@dataclass(frozen=True, eq=False)
class Volume:
    """A CT volume in HU with its geometry. See the module docstring for the conventions.

    Example:
        >>> v = Volume(np.zeros((2, 3, 4), np.int16), np.diag([2.0, 0.5, 0.5, 1.0]))
        >>> v.spacing
        (2.0, 0.5, 0.5)
    """

    hu: np.ndarray
    affine: np.ndarray
    slices: tuple[SliceInfo, ...] = ()
    #: Non-identifying study facts: StudyInstanceUID, SeriesInstanceUID, Modality, warnings, ...
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"Volume.hu must be 3-D (Z, Y, X), got shape {self.hu.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got {self.affine.shape}")
        if self.slices and len(self.slices) != self.hu.shape[0]:
            raise ValueError(f"{len(self.slices)} slice records for {self.hu.shape[0]} slices")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (z, y, x), from the affine (never from SliceThickness)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def study_uid(self) -> str | None:
        return self.meta.get("StudyInstanceUID")

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` array indices (z, y, x) to LPS millimetres."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, world: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` LPS millimetres to fractional array indices (z, y, x)."""
        inv = np.linalg.inv(self.affine)
        world = np.asarray(world, dtype=np.float64)
        return world @ inv[:3, :3].T + inv[:3, 3]

    def index_of_instance(self, instance_number: int) -> int:
        """Array slice index of the DICOM file with this InstanceNumber (RSNA's ``slice_number``)."""
        for k, info in enumerate(self.slices):
            if info.instance_number == instance_number:
                return k
        raise KeyError(f"no slice with InstanceNumber {instance_number}")

    def with_array(self, hu: np.ndarray, affine: np.ndarray | None = None,
                   slices: tuple[SliceInfo, ...] | None = None) -> Volume:
        """A copy with another array (and optionally geometry), keeping ``meta``."""
        return replace(self, hu=hu, affine=self.affine if affine is None else affine,
                       slices=self.slices if slices is None else slices)


def volume_from_arrays(hu: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                       meta: dict[str, Any] | None = None) -> Volume:
    """A volume in the canonical orientation (z from superior to inferior, y anterior to posterior,
    x from the patient's right to left) with the given spacing, for arrays made in memory."""
    sz, sy, sx = spacing
    affine = np.array([[0, 0, sx, 0], [0, sy, 0, 0], [-sz, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    return Volume(np.asarray(hu), affine, (), dict(meta or {}))

