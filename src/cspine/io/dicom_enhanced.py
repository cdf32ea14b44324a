"""Multi-frame images with functional groups (Enhanced CT, Legacy Converted Enhanced CT, ...) as one
:class:`~cspine.io.dicom_series.Header` per frame.

Modern scanners write a whole series as one (or a few) multi-frame files: Enhanced CT Image Storage
(1.2.840.10008.5.1.4.1.1.2.1) and, from a classic series, Legacy Converted Enhanced CT
(1.2.840.10008.5.1.4.1.1.2.2). Each frame's geometry and rescale live in functional groups:

* PlanePositionSequence > ImagePositionPatient,
* PlaneOrientationSequence > ImageOrientationPatient,
* PixelMeasuresSequence > PixelSpacing, SliceThickness,
* PixelValueTransformationSequence > RescaleSlope, RescaleIntercept,
* CTImageFrameTypeSequence (or another ``*FrameTypeSequence``) > FrameType.

A group is looked up in the frame's item of PerFrameFunctionalGroupsSequence first, then in
SharedFunctionalGroupsSequence, then as a top-level attribute (some writers put it there). From here on
a frame is a slice like any other: it goes through the same series split, sorting, duplicate, gap and
tilt checks (:mod:`cspine.io.dicom_geometry`) as a single-frame series. Frames typed LOCALIZER are left
out; a frame without position or orientation makes the file unusable (skipped with that reason).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cspine.io.dicom_series import Header

ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"


def _first_item(groups: Any, sequence: str) -> Any:
    if groups is None:
        return None
    seq = groups.get(sequence)
    return seq[0] if seq else None


def _lookup(ds: Any, per_frame: Any, shared: Any, sequence: str, keyword: str) -> Any:
    """A functional-group value: the frame's own item, then the shared one, then the top level."""
    for groups in (per_frame, shared):
        item = _first_item(groups, sequence)
        if item is not None:
            value = item.get(keyword)
            if value not in (None, ""):
                return value
    value = ds.get(keyword)
    return None if value in (None, "") else value


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _float(value: Any, default: float | None) -> float | None:
    if value in (None, ""):
        return default
    return float(value)


def _frame_type(per_frame: Any, shared: Any) -> tuple[str, ...]:
    for groups in (per_frame, shared):
        if groups is None:
            continue
        for elem in groups:
            if elem.keyword.endswith("FrameTypeSequence") and elem.value:
                value = elem.value[0].get("FrameType")
                if value:
                    values = [value] if isinstance(value, str) else list(value)
                    return tuple(str(v).strip().upper() for v in values)
    return ()


def frame_headers(ds: Any, base: Header, n_frames: int) -> list[Header] | tuple[str, str]:
    """One :class:`Header` per frame of the multi-frame dataset ``ds``, or ``(skip reason, path)``.

    Args:
        ds: the file's dataset (pixel data may be deferred).
        base: the header read from the file's top-level attributes (study, series, size, syntax, ...).
        n_frames: NumberOfFrames.
    """
    path = base.path
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None and shared is None:
        return ("multi-frame image without functional groups (not an enhanced image, e.g. a cine or "
                "an old multi-frame format)"), path
    if per_frame is not None and len(per_frame) != n_frames:
        return (f"enhanced image with NumberOfFrames {n_frames} but {len(per_frame)} items in "
                "PerFrameFunctionalGroupsSequence"), path
    headers: list[Header] = []
    for i in range(n_frames):
        pf = per_frame[i] if per_frame is not None else None
        frame_type = _frame_type(pf, shared)
        if "LOCALIZER" in frame_type:
            continue
        ipp = _floats(_lookup(ds, pf, shared, "PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = _floats(_lookup(ds, pf, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        if ipp is None or iop is None:
            return (f"enhanced image: frame {i + 1} has no valid ImagePositionPatient/"
                    "ImageOrientationPatient in its functional groups (PlanePositionSequence/"
                    "PlaneOrientationSequence)"), path
        try:
            rescale = "PixelValueTransformationSequence"
            slope = _float(_lookup(ds, pf, shared, rescale, "RescaleSlope"), 1.0)
            intercept = _float(_lookup(ds, pf, shared, rescale, "RescaleIntercept"), 0.0)
            thickness = _float(_lookup(ds, pf, shared, "PixelMeasuresSequence", "SliceThickness"), None)
        except (TypeError, ValueError):
            return f"enhanced image: frame {i + 1} has a non-numeric rescale or slice thickness", path
        spacing = _floats(_lookup(ds, pf, shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
        headers.append(dataclasses.replace(
            base, ipp=ipp, iop=iop, pixel_spacing=spacing or base.pixel_spacing, slope=slope,
            intercept=intercept, slice_thickness=thickness, frame=i, instance_number=None,
            image_type=frame_type or base.image_type))
    if not headers:
        return "localizer (every frame's FrameType is LOCALIZER)", path
    return headers
