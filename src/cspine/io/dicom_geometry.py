"""Geometry of a stack of DICOM slices: order, spacing, duplicates, gaps and gantry tilt.

Defined behaviours (tests/io/test_dicom_geometry.py and the dicom-edge-cases tests):

* order: ascending position along the slice normal ``n = row x col`` of ImageOrientationPatient
  (never file name or InstanceNumber);
* spacing along ``n``: the mean step of the positions (never SliceThickness); small deviations from a
  uniform grid (up to 20 % of a step, e.g. positions rounded to 0.1 mm) are reported as a warning;
* images at one position (within 0.01 mm): identical pixels (or the same SOPInstanceUID) -> the copies are
  dropped with a warning; different pixels -> :class:`SeriesGeometryError` ("not a volume");
* fewer than :data:`MIN_SLICES` positions -> :class:`SeriesGeometryError`;
* a gap (a step over 1.5x the median, i.e. missing slices) or otherwise non-uniform steps:
  ``on_gap="error"`` (default) raises; ``on_gap="resample"`` interpolates linearly onto a uniform grid
  at the finest step the series acquired (:func:`finest_step`; a 1 mm run inside a 5 mm series keeps its
  1 mm slices, and the 5 mm part is interpolated), capped at :data:`MAX_RESAMPLED_SLICES` slices; slices
  not read from one file get empty :class:`SliceInfo` records and the warning says what was done;
* gantry tilt (slice origins sheared relative to the image plane by more than a quarter pixel over the
  stack): ``on_tilt="error"`` (default) raises with the tilt angle; ``on_tilt="resample"`` shifts each
  slice in-plane (linear interpolation) onto an orthogonal grid that is enlarged (rows and columns added
  on the sides the shear moves towards) so that no acquired pixel falls off it; never silently treated
  as orthogonal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cspine.errors import SeriesGeometryError
from cspine.io.dicom_series import Header

MIN_SLICES = 3
SAME_POSITION_MM = 0.01
UNIFORM_TOL = 0.2  # of a step
GAP_FACTOR = 1.5
TILT_PIXELS = 0.25  # accumulated in-plane shear over the stack that counts as gantry tilt
LINE_TOL_MM = 0.5  # slice origins further than this from a straight line: not a stack

GAP_MODES = ("error", "resample")
#: A recurring step within this fraction of the smallest counts as the same step (see finest_step).
STEP_TOL = 0.02
#: Resampling an uneven series never makes more slices than this (about 1 GB at 512 x 512).
MAX_RESAMPLED_SLICES = 2048


@dataclass
class StackPlan:
    """How to turn the sorted, de-duplicated input slices into the output volume."""

    headers: list[Header]  # input slices in output order (ascending along the normal)
    affine: np.ndarray
    step: float
    positions: np.ndarray  # of the inputs along the normal, mm
    warnings: list[str] = field(default_factory=list)
    #: For each output slice: ((input index, weight), ...); None = output k is input k unchanged.
    blend: list[tuple[tuple[int, float], ...]] | None = None
    #: In-plane shift (rows, cols) in pixels per input slice to undo gantry tilt, including the rows and
    #: columns added before the first stored ones; None = no shift.
    shifts: np.ndarray | None = None
    tilt_degrees: float = 0.0
    #: In-plane size (rows, cols) of the output when tilt correction enlarged it; None = as stored.
    plane: tuple[int, int] | None = None
    #: Rows and columns added by tilt correction: ((before, after), (before, after)).
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))


def finest_step(steps: np.ndarray) -> float:
    """The finest slice step a series acquired: the smallest step that occurs at least twice (within
    :data:`STEP_TOL`), averaged over its occurrences; the median step when no step recurs.

    A step must recur so that one stray position (e.g. a re-acquired slice 0.1 mm from its neighbour)
    does not multiply the size of the volume.

    >>> finest_step(np.array([5.0, 5.0, 1.0, 1.0, 1.0, 5.0]))
    1.0
    >>> finest_step(np.array([5.0, 5.0, 0.2, 5.0]))
    5.0
    """
    ordered = np.sort(np.asarray(steps, dtype=np.float64))
    for s in ordered:
        close = ordered[(ordered >= s) & (ordered <= s * (1 + STEP_TOL) + 1e-6)]
        if close.size >= 2:
            return float(close.mean())
    return float(np.median(ordered))


def _names(headers: Sequence[Header], limit: int = 4) -> str:
    names = [h.path for h in headers[:limit]]
    return ", ".join(names) + (f" (+{len(headers) - limit} more)" if len(headers) > limit else "")


def plan_stack(headers: Sequence[Header], *, on_gap: str = "error", on_tilt: str = "error",
               same_pixels: Callable[[Header, Header], bool] | None = None) -> StackPlan:
    """Sort one series' slices and work out its geometry, or raise :class:`SeriesGeometryError`.

    Args:
        headers: the images of one series in one orientation.
        on_gap: ``"error"`` or ``"resample"`` for missing slices / non-uniform spacing.
        on_tilt: ``"error"`` or ``"resample"`` for a sheared (gantry-tilted) stack.
        same_pixels: decides whether two images at one position hold identical pixels; when omitted,
            only images sharing a SOPInstanceUID (and frame) count as duplicates.
    """
    if on_gap not in GAP_MODES or on_tilt not in GAP_MODES:
        raise ValueError(f"on_gap/on_tilt must be one of {GAP_MODES}")
    where = headers[0].path if headers else None
    warns: list[str] = []
    first = headers[0]
    row, col = np.asarray(first.iop[:3]), np.asarray(first.iop[3:])
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 0.5 or abs(float(row @ col)) > 0.01:
        raise SeriesGeometryError(f"ImageOrientationPatient {list(first.iop)} is not two orthogonal unit "
                                  "vectors", where)
    row, col, normal = row / np.linalg.norm(row), col / np.linalg.norm(col), normal / norm
    ipp = np.array([h.ipp for h in headers], dtype=np.float64)
    d = ipp @ normal
    order = sorted(range(len(headers)), key=lambda i: (d[i], headers[i].instance_number or 0))
    hs = [headers[i] for i in order]
    d, ipp = d[order], ipp[order]

    # Images at one position: exact copies are dropped, different images mean "not a volume".
    keep: list[int] = []
    i = 0
    dropped = 0
    while i < len(hs):
        j = i + 1
        while j < len(hs) and d[j] - d[i] < SAME_POSITION_MM:
            j += 1
        cluster = list(range(i, j))
        if len(cluster) > 1:
            # The same image twice: identical pixels (when they can be compared), else the same
            # SOPInstanceUID and frame. One SOPInstanceUID with other pixels is a stale or edited copy.
            if same_pixels is not None:
                same = all(same_pixels(hs[i], hs[k]) for k in cluster[1:])
                shared = [k for k in cluster[1:]
                          if hs[k].sop_instance_uid and hs[k].image_key == hs[i].image_key]
                if not same and shared:
                    raise SeriesGeometryError(
                        f"{_names([hs[i], *(hs[k] for k in shared)])} carry the same SOPInstanceUID at the "
                        "same position but hold different pixels: one is a stale or edited copy of the "
                        "other; keep one of them", where)
            else:
                same = all(hs[k].sop_instance_uid and hs[k].image_key == hs[i].image_key for k in cluster[1:])
            if not same:
                raise SeriesGeometryError(
                    f"{len(cluster)} different images at the same position ({d[i]:.2f} mm along the slice "
                    f"normal): {_names([hs[k] for k in cluster])}. This series is not one volume (several "
                    "phases, echoes or reconstructions share it); pass the files of one volume", where)
            dropped += len(cluster) - 1
        keep.append(i)
        i = j
    if dropped:
        warns.append(f"dropped {dropped} duplicate image(s) at positions already present (identical pixels)")
    hs, d, ipp = [hs[k] for k in keep], d[keep], ipp[keep]
    n = len(hs)
    if n < MIN_SLICES:
        raise SeriesGeometryError(
            f"only {n} distinct slice position(s) in {headers[0].modality or 'this'} series "
            f"{headers[0].series_number}: a volume needs at least {MIN_SLICES} (files: {_names(hs)})", where)

    ps = hs[0].pixel_spacing
    if ps is None:
        raise SeriesGeometryError(
            f"the images have no PixelSpacing (e.g. {hs[0].path}): their in-plane pixel size is unknown, so "
            "every size and position in mm would be wrong; export the series with its PixelSpacing", where)
    dd = d - d[0]

    # Gantry tilt: origins move off the normal through the first slice, proportionally to position.
    off = (ipp - ipp[0]) - dd[:, None] * normal[None, :]
    shear = (off * dd[:, None]).sum(0) / max(float((dd ** 2).sum()), 1e-12)
    resid = off - dd[:, None] * shear[None, :]
    if float(np.abs(resid).max()) > LINE_TOL_MM:
        raise SeriesGeometryError(
            f"slice origins do not lie on a line (off by up to {np.abs(resid).max():.2f} mm): not one "
            f"stack (files: {_names(hs)})", where)
    shift_px = np.array([shear @ col / ps[0], shear @ row / ps[1]]) * dd[-1]  # rows, cols over the stack
    tilt = math.degrees(math.atan(float(np.linalg.norm(shear))))
    shifts = None
    plane = None
    padding = ((0, 0), (0, 0))
    origin = ipp[0].copy()
    if float(np.abs(shift_px).max()) > TILT_PIXELS:
        msg = (f"gantry tilt: the slices are sheared by {tilt:.2f} degrees relative to the image plane "
               f"({np.abs(shift_px).max():.1f} pixels over the stack)")
        if on_tilt == "error":
            raise SeriesGeometryError(msg + "; a tilted stack is not an orthogonal volume. Pass "
                                      "on_tilt='resample' to shift each slice onto an orthogonal grid", where)
        shifts = np.stack([dd * (shear @ col) / ps[0], dd * (shear @ row) / ps[1]], axis=1)
        # Enlarge the grid so that every stored pixel keeps a place on it after its shift.
        lo = np.ceil(np.maximum(0.0, -shifts.min(0)) - 1e-6).astype(int)
        hi = np.ceil(np.maximum(0.0, shifts.max(0)) - 1e-6).astype(int)
        shifts = shifts + lo[None, :]
        padding = ((int(lo[0]), int(hi[0])), (int(lo[1]), int(hi[1])))
        plane = (first.rows + int(lo[0] + hi[0]), first.cols + int(lo[1] + hi[1]))
        origin = origin - lo[0] * ps[0] * col - lo[1] * ps[1] * row
        warns.append(msg + f"; resampled each slice in-plane onto an orthogonal grid (linear interpolation), "
                     f"enlarged from {first.rows}x{first.cols} to {plane[0]}x{plane[1]} pixels so that no "
                     "acquired row or column is cropped")

    steps = np.diff(d)
    median = float(np.median(steps))
    step = float(dd[-1] / (n - 1))
    resid_z = dd - step * np.arange(n)
    uniform = (float(np.abs(resid_z).max()) <= UNIFORM_TOL * step
               and float(steps.max()) <= GAP_FACTOR * median and float(steps.min()) >= median / GAP_FACTOR)
    blend = None
    if uniform:
        if float(np.abs(resid_z).max()) > 1e-3 * step + 1e-4:
            warns.append("slice positions deviate from a uniform grid by up to "
                         f"{np.abs(resid_z).max():.3f} mm "
                         f"(steps {steps.min():.3f}..{steps.max():.3f} mm); used the mean step {step:.4f} mm")
    else:
        big = np.flatnonzero(steps > GAP_FACTOR * median)
        if big.size:
            parts = [f"{steps[k]:.2f} mm between {d[k]:.2f} and {d[k + 1]:.2f} mm (about "
                     f"{round(steps[k] / median) - 1} missing slice(s), after {hs[k].path})" for k in big[:3]]
            msg = f"gap(s) in slice positions (usual step {median:.3f} mm): " + "; ".join(parts)
        else:
            msg = f"non-uniform slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm"
        fine = finest_step(steps)
        if on_gap == "error":
            raise SeriesGeometryError(msg + f". Pass on_gap='resample' to interpolate onto a uniform "
                                      f"{fine:.3f} mm grid (the finest step acquired)", where)
        step = fine
        m = int(round(dd[-1] / step)) + 1
        capped = m > max(n, MAX_RESAMPLED_SLICES)
        if capped:
            m = max(n, MAX_RESAMPLED_SLICES)
            step = float(dd[-1] / (m - 1))
        blend = []
        for t in step * np.arange(m):
            k = int(np.clip(np.searchsorted(dd, t, side="right") - 1, 0, n - 2))
            w = float(np.clip((t - dd[k]) / (dd[k + 1] - dd[k]), 0.0, 1.0))
            if w < 1e-6:
                blend.append(((k, 1.0),))
            elif w > 1 - 1e-6:
                blend.append(((k + 1, 1.0),))
            else:
                blend.append(((k, 1.0 - w), (k + 1, w)))
        how = (f"{step:.3f} mm, the finest step the series acquired" if not capped else
               f"{step:.3f} mm (the finest step acquired, {fine:.3f} mm, would need more than "
               f"{MAX_RESAMPLED_SLICES} slices)")
        warns.append(msg + f"; resampled the {n} acquired slices onto {m} slices every {how} "
                     "(linear interpolation)")

    affine = np.eye(4)
    affine[:3, 0] = normal * step
    affine[:3, 1] = col * ps[0]
    affine[:3, 2] = row * ps[1]
    affine[:3, 3] = origin
    return StackPlan(hs, affine, step, d, warns, blend, shifts, tilt, plane, padding)


def apply_plan(stack: np.ndarray, plan: StackPlan, fill: int) -> np.ndarray:
    """Apply the tilt shifts (onto the enlarged plane) and gap interpolation of ``plan`` to the decoded
    ``stack`` (int16)."""
    from scipy import ndimage

    plane = plan.plane or tuple(stack.shape[1:])

    def source(k: int) -> np.ndarray:
        sl = stack[k].astype(np.float32)
        if plan.shifts is None:
            return sl
        if sl.shape != plane:
            canvas = np.full(plane, float(fill), np.float32)
            canvas[:sl.shape[0], :sl.shape[1]] = sl
            sl = canvas
        if np.any(plan.shifts[k] != 0):
            sl = ndimage.shift(sl, plan.shifts[k], order=1, mode="constant", cval=float(fill))
        return sl

    if plan.blend is None:
        if plan.shifts is None:
            return stack
        if tuple(stack.shape[1:]) == plane:
            for k in range(stack.shape[0]):  # in place: each slice depends only on itself
                stack[k] = np.rint(source(k))
            return stack
        out = np.empty((stack.shape[0], *plane), np.int16)
        for k in range(stack.shape[0]):
            out[k] = np.rint(source(k))
        return out
    out = np.empty((len(plan.blend), *plane), np.int16)
    for j, parts in enumerate(plan.blend):
        acc = sum(w * source(k) for k, w in parts)
        out[j] = np.rint(acc)
    return out
