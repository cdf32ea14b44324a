"""Whether a CT study can be, and was fully, read as a cervical spine CT: its status in the outputs.

Every study of ``cspine ct predict`` ends with one status:

* ``complete``: stage 1 found C1..C7 and stage 2 scored each;
* ``levels out of order``: stage 1 found C1..C7 out of their cranio-caudal order (it relabelled them by
  position), or two levels on the same slices; each vertebra still has its probability, but which
  vertebra is which is uncertain: check the study (:func:`level_order_problem`). It takes precedence over
  ``levels missing`` (the missing levels are still listed);
* ``levels missing``: some of C1..C7 were not found; those have no probability, and the patient score
  is computed from the vertebrae found plus the training prior of the missing ones (so it is partial);
* ``not a cervical spine CT``: the series says or shows it is something else: a BodyPartExamined tag
  naming another region, a body cross-section that is wider than any neck in every slice (an abdomen,
  a chest), or no vertebra found at all; no probability is given;
* ``failed``: the study could not be read or predicted (see failures.json).

Checks that refuse a study (it becomes ``failed`` with a message naming the input): slices more than
:data:`MAX_SLICE_SPACING_MM` apart, NaN voxels (``meta["nan_voxels"]`` of the NIfTI reader), or a
study whose slices are mostly constant. A few constant slices are only a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cspine.io.study import StudyInputError
from cspine.io.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["COMPLETE", "FAILED", "LEVELS_MISSING", "LEVELS_OUT_OF_ORDER", "MAX_SLICE_SPACING_MM",
           "NOT_CERVICAL", "STATUSES", "body_part_examined", "level_order_problem", "not_cervical_reason",
           "quality_warnings"]

COMPLETE = "complete"
LEVELS_OUT_OF_ORDER = "levels out of order"
LEVELS_MISSING = "levels missing"
NOT_CERVICAL = "not a cervical spine CT"
FAILED = "failed"
STATUSES = (COMPLETE, LEVELS_OUT_OF_ORDER, LEVELS_MISSING, NOT_CERVICAL, FAILED)
#: Two levels whose slice ranges share more than this fraction of the shorter one lie on the same slices:
#: adjacent vertebrae touch at one or two slices, not over half their height.
MAX_LEVEL_OVERLAP = 0.5

#: Coarsest slice step accepted: a 5 mm step already samples a 15 mm vertebral body only three times.
MAX_SLICE_SPACING_MM = 5.0
#: A slice whose largest soft-tissue region (> -300 HU) is larger than this (cm^2) cannot cross a neck or
#: a head (about 100-200 cm^2); an abdomen is about 400-900 cm^2. A study in which *every* slice is that
#: large shows no neck at all.
MAX_NECK_AREA_CM2 = 400.0
SOFT_TISSUE_HU = -300.0
#: BodyPartExamined values (upper case, without spaces, '-' or '_') that exclude the cervical spine.
OTHER_BODY_PARTS = frozenset({
    "ABDOMEN", "ABDOMENPELVIS", "PELVIS", "LSPINE", "LUMBARSPINE", "LUMBAR", "SACRUM", "COCCYX", "HIP",
    "KNEE", "LEG", "FOOT", "ANKLE", "TIBIA", "FEMUR", "HAND", "WRIST", "ARM", "ELBOW", "FOREARM", "BREAST",
    "HEART", "KIDNEY", "LIVER", "PANCREAS", "PROSTATE", "BLADDER", "COLON", "EXTREMITY", "LOWEREXTREMITY",
    "UPPEREXTREMITY", "TSPINE", "THORACICSPINE", "CHEST", "THORAX", "LUNG", "ABDOMENCHEST", "CHESTABDOMEN",
})


def body_part_examined(volume: Volume) -> str | None:
    """The BodyPartExamined tag of the series' first file (``None`` when untagged or not DICOM)."""
    first = next((s.path for s in volume.slices if s.path), None)
    if first is None:
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["BodyPartExamined"])
    except Exception:  # the series was read already; a tag lookup must not fail the study
        return None
    value = str(ds.get("BodyPartExamined", "") or "").strip()
    return value or None


def _largest_region_cm2(volume: Volume) -> float:
    """The smallest, over (up to 32) slices, of the largest soft-tissue region's area in cm^2."""
    from scipy import ndimage

    nz = volume.shape[0]
    step = 4
    zs = np.unique(np.linspace(0, nz - 1, min(nz, 32)).round().astype(int))
    pixel_cm2 = float(volume.spacing[1]) * float(volume.spacing[2]) * step * step / 100.0
    smallest = np.inf
    for z in zs:
        mask = np.asarray(volume.hu[int(z), ::step, ::step]) > SOFT_TISSUE_HU
        labels, n = ndimage.label(mask)
        area = float(np.bincount(labels.ravel())[1:].max()) * pixel_cm2 if n else 0.0
        smallest = min(smallest, area)
    return float(smallest)


def not_cervical_reason(volume: Volume) -> str | None:
    """Why the series is not a cervical spine CT, or ``None`` when it may be one (before stage 1)."""
    part = body_part_examined(volume)
    if part is not None:
        key = "".join(c for c in part.upper() if c.isalnum())
        if key in OTHER_BODY_PARTS:
            return f"BodyPartExamined is {part!r}"
    area = _largest_region_cm2(volume)
    if area > MAX_NECK_AREA_CM2:
        return (f"every slice's body cross-section is at least {area:.0f} cm^2, wider than a neck "
                f"(at most {MAX_NECK_AREA_CM2:.0f}): the field of view shows a trunk, not a neck")
    return None


def quality_warnings(volume: Volume, where: str | Path | None) -> list[str]:
    """Refuse a study too coarse or broken to predict; return the warnings of a usable one.

    Raises:
        StudyInputError: slice step above :data:`MAX_SLICE_SPACING_MM`, NaN voxels, or more than half
            of the slices constant (naming ``where``).
    """
    dz = float(volume.spacing[0])
    if dz > MAX_SLICE_SPACING_MM:
        raise StudyInputError(f"slices are {dz:.1f} mm apart, coarser than the {MAX_SLICE_SPACING_MM:g} mm "
                              "cspine accepts; use a thinner reconstruction of the series", where)
    n_nan = int(volume.meta.get("nan_voxels") or 0)
    if n_nan:
        raise StudyInputError(f"the CT holds {n_nan} NaN (not-a-number) or infinite voxel(s); a CT has a "
                              "number in every voxel (a broken conversion?)", where)
    hu = volume.hu
    constant = [z for z in range(volume.shape[0])
                if float(np.ptp(np.asarray(hu[z, ::2, ::2]))) == 0.0]
    if len(constant) * 2 > volume.shape[0]:
        raise StudyInputError(f"{len(constant)} of {volume.shape[0]} slices are constant (blank); "
                              "the CT holds no image in them", where)
    if constant:
        return [f"{len(constant)} constant (blank) slice(s), first at canonical index {constant[0]}"]
    return []


def level_order_problem(vertebrae: Mapping[str, Any], warnings: Sequence[str] = ()) -> str | None:
    """Why stage 1's levels cannot be trusted to be C1..C7 from top to bottom, or ``None``.

    Args:
        vertebrae: per level name: an object or dict with ``present``, ``z_range`` (start, stop) and
            ``centroid`` (z, y, x) on the canonical grid (axis 0 superior -> inferior), as
            :class:`cspine.ct.seg.postprocess.VertebraBox` or a prediction's JSON holds them.
        warnings: stage 1's warnings; its relabelling warning
            (:data:`cspine.ct.seg.postprocess.RELABELLED_WARNING`) means the network's levels were out of
            order and were renamed by position.

    Returns:
        A one-line reason: levels relabelled by stage 1, centroids not in cranio-caudal order, or two
        levels over the same slices.
    """
    from cspine.ct.seg.postprocess import RELABELLED_WARNING
    from cspine.labels import VERTEBRAE

    def get(box: Any, key: str) -> Any:
        return box.get(key) if isinstance(box, Mapping) else getattr(box, key, None)

    for w in warnings:
        if str(w).startswith(RELABELLED_WARNING):
            return f"stage 1: {w}"
    found = [(v, vertebrae[v]) for v in VERTEBRAE if v in vertebrae and get(vertebrae[v], "present")]
    for (a, box_a), (b, box_b) in zip(found, found[1:], strict=False):
        za, zb = float(get(box_a, "centroid")[0]), float(get(box_b, "centroid")[0])
        if not za < zb:
            return (f"{b} lies above {a} (centroid slices {zb:.1f} and {za:.1f}; axis 0 runs superior to "
                    "inferior): the levels are out of cranio-caudal order")
        (a0, a1), (b0, b1) = get(box_a, "z_range"), get(box_b, "z_range")
        shared = min(a1, b1) - max(a0, b0)
        shorter = max(1, min(a1 - a0, b1 - b0))
        if shared / shorter > MAX_LEVEL_OVERLAP:
            return (f"{a} and {b} share {shared} of their slices ({a} {a0}..{a1 - 1}, {b} {b0}..{b1 - 1}): "
                    "one vertebra labelled as two levels?")
    return None
