"""Training masks are checked, not trusted: what `cspine ct prepare` verifies before caching a mask.

A mask is refused (:class:`~cspine.errors.NiftiError` naming the file and the problem) when it

* holds NaN or infinite voxels, or non-integer values (:func:`cspine.io.nifti.read_label_file`);
* holds labels outside 0..19 (0 background, 1..7 = C1..C7, 8..19 = T1..T12; ``cspine.labels``);
* holds no vertebra at all, in the file or once mapped onto the CT;
* lies on a grid that is not the CT's (:func:`cspine.io.nifti.grid_mismatch`: rotated axes, or a field of
  view that differs by more than half a voxel: another study's mask, a cropped one, a lost header).

A mask that passes gets a report (:func:`mask_report`): the levels present, voxels and mean HU under each.
Vertebral bone is well above 150 HU when the mask is aligned; a level whose mean is below
:data:`MISALIGNED_HU` is flagged as likely misaligned (a warning, not an error: a mask can be right on a
very osteoporotic spine, and a person should look).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cspine.errors import NiftiError
from cspine.io.nifti import grid_mismatch, map_labels_on_grid, read_label_file
from cspine.io.volume import Volume
from cspine.labels import NAME_OF, VERTEBRAE

#: Highest label a training mask may hold (T12).
MAX_LABEL = max(NAME_OF)
#: Mean HU under a vertebra level below which the level is flagged as likely misaligned.
MISALIGNED_HU = 150.0
#: Voxels processed per step when summing HU under the labels (bounds the float temporaries).
_CHUNK = 1 << 22


def _tilt_slack(volume: Volume) -> tuple[float, float, float]:
    """Voxels of ``volume`` per axis that tilt correction added (a mask of the stored rows may miss them)."""
    pad = volume.meta.get("tilt_padding_pixels") or [[0, 0], [0, 0]]
    source = (0.0, float(max(pad[0])), float(max(pad[1])))  # slices, rows, columns as read
    perm = (volume.meta.get("reorientation") or {}).get("perm", [0, 1, 2])
    return tuple(source[int(perm[c])] for c in range(3))  # type: ignore[return-value]


def _label_counts(labels: np.ndarray) -> np.ndarray:
    counts = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int64)
    flat = labels.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        part = np.bincount(flat[i:i + _CHUNK], minlength=counts.size)
        counts[:part.size] += part
    return counts


def check_training_mask(path: str | Path, volume: Volume) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a training mask, check it against ``volume`` and map it onto the volume's grid.

    Args:
        path: the mask (``.nii`` / ``.nii.gz``, labels 1..7 = C1..C7, 8..19 = T1..T12).
        volume: the study's CT (canonical, as cached).

    Returns:
        The labels on ``volume``'s grid (uint8) and :func:`mask_report` of them.

    Raises:
        NiftiError: unreadable file, NaN/non-integer values, labels outside 0..19, no vertebra, or a
            grid that does not match the CT (the message names the file and the problem).
    """
    path = Path(path)
    labels, affine = read_label_file(path)
    counts = _label_counts(labels)
    if counts.size > MAX_LABEL + 1 and counts[MAX_LABEL + 1:].any():
        found = (np.flatnonzero(counts[MAX_LABEL + 1:]) + MAX_LABEL + 1).tolist()
        shown = ", ".join(map(str, found[:8])) + (" ..." if len(found) > 8 else "")
        n = int(counts[MAX_LABEL + 1:].sum())
        raise NiftiError(f"labels outside 0..{MAX_LABEL} (1..7 = C1..C7, 8..19 = T1..T12): {n} voxel(s) "
                         f"with label {shown}; relabel the mask (e.g. a VerSe or TotalSegmentator scheme) "
                         "first", path)
    if counts.size < 2 or not counts[1:].any():
        raise NiftiError("no vertebra: every voxel is 0 (background)", path)
    problem = grid_mismatch(affine, labels.shape, volume, _tilt_slack(volume))
    if problem is not None:
        raise NiftiError(f"the mask's grid does not match the CT's: {problem}; a mask must be drawn on this "
                         "study's series", path)
    on_grid = map_labels_on_grid(labels, affine, volume).astype(np.uint8, copy=False)
    report = mask_report(on_grid, volume.hu)
    if not report["levels"]:
        raise NiftiError("no vertebra once mapped onto the CT's grid", path)
    report["file"] = path.name
    return on_grid, report


def mask_report(mask: np.ndarray, hu: np.ndarray) -> dict[str, Any]:
    """Levels present, voxels and mean HU under each, and the levels flagged as likely misaligned.

    Args:
        mask: labels on the CT's grid (0..19).
        hu: the CT in HU, same shape.

    Returns:
        ``{"levels": [...], "voxels": {level: n}, "mean_hu": {level: hu}, "misaligned": [...],
        "missing_cervical": [...]}`` with levels named C1..T12, in label order.
    """
    if mask.shape != hu.shape:
        raise ValueError(f"mask shape {mask.shape} != CT shape {hu.shape}")
    n = MAX_LABEL + 1
    counts = np.zeros(n, np.int64)
    sums = np.zeros(n, np.float64)
    flat_m, flat_h = mask.reshape(-1), hu.reshape(-1)
    for i in range(0, flat_m.size, _CHUNK):
        m = flat_m[i:i + _CHUNK]
        counts += np.bincount(m, minlength=n)[:n]
        sums += np.bincount(m, weights=flat_h[i:i + _CHUNK].astype(np.float64), minlength=n)[:n]
    present = [lab for lab in range(1, n) if counts[lab]]
    voxels = {NAME_OF[lab]: int(counts[lab]) for lab in present}
    mean_hu = {NAME_OF[lab]: round(float(sums[lab] / counts[lab]), 1) for lab in present}
    return {
        "levels": [NAME_OF[lab] for lab in present],
        "voxels": voxels,
        "mean_hu": mean_hu,
        "misaligned": [name for name, v in mean_hu.items() if v < MISALIGNED_HU],
        "missing_cervical": [v for v in VERTEBRAE if v not in voxels],
    }


def report_warning(uid: str, report: dict[str, Any]) -> str | None:
    """One line for a study whose mask has levels flagged as likely misaligned (None: nothing flagged)."""
    flagged = report.get("misaligned") or []
    if not flagged:
        return None
    means = ", ".join(f"{name} {report['mean_hu'][name]:.0f} HU" for name in flagged)
    return (f"study {uid}: mask {report.get('file', '')}: mean HU under {means} is below "
            f"{MISALIGNED_HU:.0f} (bone is well above it): likely misaligned or mislabelled; check it before "
            "training")
