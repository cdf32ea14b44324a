"""Deterministic UIDs, and filling the identifiers anonymisation emptied, in memory only.

Real series are often anonymised down to empty UIDs (StudyInstanceUID, SeriesInstanceUID,
SOPClassUID, SOPInstanceUID empty in the data set; only the file meta keeps the SOP class and
instance). A SEG or SR must reference its source by UID, so :func:`complete_source_datasets` fills
what is missing on the datasets read into memory -- never in the files -- and reports what it filled:

* SOPClassUID / SOPInstanceUID: from the file meta (MediaStorageSOPClassUID / ...InstanceUID); a
  SOPInstanceUID missing there too is derived from the series UID, InstanceNumber and position;
* StudyInstanceUID: derived from the FrameOfReferenceUID (stable for every series of a study), else
  from the SOP instance UIDs of the given images;
* SeriesInstanceUID: derived from the FrameOfReferenceUID and the SOP instance UIDs of the images;
* SeriesNumber (Type 2): left empty; PatientID / PatientName (Type 2): left empty -- inventing a
  patient identifier could match another patient in a PACS;
* Type 2 patient and study attributes a writer left out (:data:`TYPE2_PATIENT_STUDY`): added empty.

Derived UIDs are ``2.25.<integer>`` from a name-based (SHA-1) UUID of the sources (ISO/IEC 9834-8),
so the same files always give the same UIDs. (pydicom's ``generate_uid(prefix=None, entropy_srcs=...)``
ignores the entropy and returns a random UUID, so it is not used.)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["complete_source_datasets", "derived_uid"]

#: Namespace of cspine's name-based UUIDs (itself a name-based UUID of the project's name).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/cspine/cspine/dicom-uid")


#: Type 2 attributes of the Patient and General Study modules that a SEG/SR copies from its source: some
#: writers leave them out, and a derived object must carry them (empty is allowed).
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")


def derived_uid(*parts: object) -> str:
    """A DICOM UID determined by ``parts`` (``2.25.`` + the integer of a UUID v5 of them).

    Example:
        >>> derived_uid("a", 1) == derived_uid("a", 1) != derived_uid("a", 2)
        True
    """
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def _empty(ds: Any, keyword: str) -> bool:
    return not str(getattr(ds, keyword, "") or "").strip()


def _meta(ds: Any, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, keyword, "") or "").strip() if meta is not None else ""


def complete_source_datasets(datasets: Sequence[Any], default_sop_class: str = "1.2.840.10008.5.1.4.1.1.2"
                             ) -> dict[str, str]:
    """Fill empty identifying UIDs of one series' datasets in place (in memory; see the module doc).

    Args:
        datasets: the pydicom datasets of one series (headers are enough).
        default_sop_class: SOPClassUID when neither the data set nor the file meta has one (CT Image).

    Returns:
        ``{attribute: how it was filled}`` for every attribute filled in at least one dataset, and
        ``{attribute: "left empty (Type 2)"}`` for empty PatientID / SeriesNumber; empty when nothing
        was missing.
    """
    filled: dict[str, str] = {}
    for ds in datasets:
        if _empty(ds, "SOPClassUID"):
            ds.SOPClassUID = _meta(ds, "MediaStorageSOPClassUID") or default_sop_class
            filled["SOPClassUID"] = "from the file meta (MediaStorageSOPClassUID)"
        if _empty(ds, "SOPInstanceUID") and _meta(ds, "MediaStorageSOPInstanceUID"):
            ds.SOPInstanceUID = _meta(ds, "MediaStorageSOPInstanceUID")
            filled["SOPInstanceUID"] = "from the file meta (MediaStorageSOPInstanceUID)"
    frame_uids = sorted({str(getattr(ds, "FrameOfReferenceUID", "") or "") for ds in datasets} - {""})
    instances = sorted(str(getattr(ds, "SOPInstanceUID", "") or "") for ds in datasets)
    anchor = frame_uids[0] if frame_uids else ""
    if any(_empty(ds, "StudyInstanceUID") for ds in datasets):
        study = derived_uid("study", anchor) if anchor else derived_uid("study", *instances)
        for ds in datasets:
            if _empty(ds, "StudyInstanceUID"):
                ds.StudyInstanceUID = study
        filled["StudyInstanceUID"] = ("derived from the FrameOfReferenceUID" if anchor
                                      else "derived from the SOP instance UIDs")
    if any(_empty(ds, "SeriesInstanceUID") for ds in datasets):
        series = derived_uid("series", anchor, *instances)
        for ds in datasets:
            if _empty(ds, "SeriesInstanceUID"):
                ds.SeriesInstanceUID = series
        filled["SeriesInstanceUID"] = "derived from the FrameOfReferenceUID and the SOP instance UIDs"
    for ds in datasets:
        if _empty(ds, "SOPInstanceUID"):
            position = list(getattr(ds, "ImagePositionPatient", []) or [])
            ds.SOPInstanceUID = derived_uid("instance", ds.SeriesInstanceUID,
                                            getattr(ds, "InstanceNumber", ""), position)
            filled["SOPInstanceUID"] = "derived from the series UID, InstanceNumber and position"
    for keyword in ("PatientID", "SeriesNumber"):
        if any(getattr(ds, keyword, None) in (None, "") for ds in datasets):
            filled[keyword] = "left empty (Type 2)"
    for keyword in TYPE2_PATIENT_STUDY:
        if any(keyword not in ds for ds in datasets):
            for ds in datasets:
                if keyword not in ds:
                    setattr(ds, keyword, "")
            filled.setdefault(keyword, "absent: added empty (Type 2)")
    return filled
