"""``cspine ct predict --dicom-out DIR``: a study's result as a DICOM SEG and a TID 1500 SR.

Written per study into ``DIR``: ``<UID>_SEG.dcm`` (C1..C7, :mod:`cspine.outputs.dicom_seg`) and
``<UID>_SR.dcm`` (probabilities and present/absent at the operating point, each vertebra's group
referencing its segment, :mod:`cspine.outputs.dicom_sr`), both in the source study (same Study
Instance UID, patient module copied from the source), atomically. Their UIDs are derived from the
source identifiers, the model and the content, so a rerun on the same input writes the same objects.
Source files are never changed; identifiers anonymisation emptied are filled in memory and listed in
:attr:`DicomResults.filled` for the study's JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cspine.ct.cls.operating_points import ResolvedOperatingPoint
from cspine.fileio import atomic_path
from cspine.io.volume import Volume
from cspine.labels import VERTEBRAE
from cspine.outputs.dicom_uids import derived_uid
from cspine.outputs.source_grid import to_source_grid
from cspine.outputs.source_series import SourceSeries, read_source_series, source_files_of
from cspine.registry.stages import CT_STAGES

__all__ = ["DicomResults", "model_name_version", "write_dicom_results", "write_dicom_results_for_volume"]


class ResultLike(Protocol):
    """What is needed of a study's prediction (:class:`cspine.ct.outputs.StudyPrediction`)."""

    study_uid: str
    probs: dict[str, float]
    patient_overall: float


@dataclass
class DicomResults:
    """What :func:`write_dicom_results` wrote (``to_dict`` is JSON-ready for ``<UID>.json``)."""

    sr_path: Path
    seg_path: Path | None
    study_instance_uid: str
    sr_sop_instance_uid: str
    seg_sop_instance_uid: str | None
    segments: dict[str, int]
    operating_point: dict[str, Any]
    filled: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"sr": str(self.sr_path), "seg": None if self.seg_path is None else str(self.seg_path),
                "study_instance_uid": self.study_instance_uid,
                "sr_sop_instance_uid": self.sr_sop_instance_uid,
                "seg_sop_instance_uid": self.seg_sop_instance_uid, "segments": dict(self.segments),
                "operating_point": dict(self.operating_point), "source_fields_filled": dict(self.filled)}


def model_name_version(versions: Mapping[str, Any]) -> tuple[str, str]:
    """A model's name and version for the DICOM objects, from ``StudyPrediction.versions``: the RUN folder's
    name, and the cspine version with both stages' weight digests (``0.4.0+seg1a2b3c4d.cls5e6f7a8b``)."""
    model = versions.get("model") or {}
    run = str(model.get("run_dir") or "model")
    name = f"cspine {Path(run).name}"
    digests = [f"{s}{str((model.get(s) or {}).get('weights_sha256_16') or '')[:8]}" for s in CT_STAGES]
    cspine = str((versions.get("packages") or {}).get("cspine") or "")
    return name, f"{cspine}+{'.'.join(digests)}"


def _save(ds: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _content_digest(labels: np.ndarray, result: ResultLike, op: ResolvedOperatingPoint) -> str:
    h = hashlib.sha256(np.ascontiguousarray(labels).tobytes())
    h.update(json.dumps([sorted(result.probs.items()), result.patient_overall, op.to_dict()]).encode())
    return h.hexdigest()[:32]


def _write(source: SourceSeries, labels: np.ndarray, result: ResultLike,
           operating_point: ResolvedOperatingPoint, out_dir: Path, model_name: str, model_version: str
           ) -> DicomResults:
    from cspine.outputs.dicom_seg import build_segmentation
    from cspine.outputs.dicom_sr import build_report

    out_dir.mkdir(parents=True, exist_ok=True)
    first = source.datasets[0]
    key = (first.StudyInstanceUID, first.SeriesInstanceUID, model_name, model_version,
           _content_digest(labels, result, operating_point))
    tracking = {v: derived_uid("tracking", *key, v) for v in VERTEBRAE}
    seg, segments = build_segmentation(
        source, labels, model_name=model_name, model_version=model_version,
        series_uid=derived_uid("seg-series", *key), sop_uid=derived_uid("seg", *key), tracking_uids=tracking)
    seg_path = None
    if seg is not None:
        seg_path = out_dir / f"{result.study_uid}_SEG.dcm"
        _save(seg, seg_path)
    sr = build_report(seg, source.datasets, segments, probs=result.probs,
                      patient_probability=result.patient_overall, operating_point=operating_point,
                      model_name=model_name, model_version=model_version,
                      series_uid=derived_uid("sr-series", *key), sop_uid=derived_uid("sr", *key),
                      tracking_uids=tracking)
    sr_path = out_dir / f"{result.study_uid}_SR.dcm"
    _save(sr, sr_path)
    return DicomResults(sr_path=sr_path, seg_path=seg_path, study_instance_uid=str(first.StudyInstanceUID),
                        sr_sop_instance_uid=str(sr.SOPInstanceUID),
                        seg_sop_instance_uid=None if seg is None else str(seg.SOPInstanceUID),
                        segments=segments, operating_point=operating_point.to_dict(),
                        filled=dict(source.filled))


def write_dicom_results(source_files: Sequence[str | Path], label_map_on_source_grid: np.ndarray,
                        result: ResultLike, operating_point: ResolvedOperatingPoint, out_dir: str | Path,
                        model_name: str, model_version: str) -> DicomResults:
    """Write the SEG and SR of one study (see the module docstring).

    Args:
        source_files: the source series' single-frame DICOM files, in the frame order of the label map.
        label_map_on_source_grid: ``(len(source_files), Rows, Columns)`` labels (1..7 = C1..C7) on the
            source images (:func:`cspine.outputs.source_grid.to_source_grid`).
        result: the study's ``StudyPrediction`` (``study_uid``, ``probs``, ``patient_overall``).
        operating_point: from :func:`cspine.ct.cls.operating_points.resolve_operating_point`.
        out_dir: folder for ``<UID>_SEG.dcm`` and ``<UID>_SR.dcm``.
        model_name, model_version: the algorithm identification (:func:`model_name_version`).

    Returns:
        :class:`DicomResults`; ``seg_path`` is ``None`` when no vertebra was found (the SR then holds
        the patient group only).

    Raises:
        DicomError: unreadable or multi-frame source files, or images of different sizes.
    """
    source = read_source_series(source_files)
    return _write(source, np.asarray(label_map_on_source_grid), result, operating_point, Path(out_dir),
                  model_name, model_version)


def write_dicom_results_for_volume(volume: Volume, labels: np.ndarray, result: ResultLike,
                                   operating_point: ResolvedOperatingPoint, out_dir: str | Path,
                                   model_name: str, model_version: str) -> DicomResults:
    """:func:`write_dicom_results` from the canonical volume the pipeline used and its stage-1 label map
    (``Segmentation.labels``): the source files come from ``volume.slices`` and the labels are mapped
    onto them.

    Raises:
        DicomError: the volume was not read from single-frame DICOM files.
    """
    source = read_source_series(source_files_of(volume))
    on_source = to_source_grid(labels, volume, source.datasets)
    return _write(source, on_source, result, operating_point, Path(out_dir), model_name, model_version)
