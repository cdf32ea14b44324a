"""The Comprehensive 3D SR (TID 1500 Measurement Report) of a cspine result.

Content, below the report's observation context (a device observer: the model, by name and version):

* per vertebra with a SEG segment, a TID 1411 volumetric ROI group: tracking identifier (the same UID
  as the segment's), the referenced SEG segment, finding type and finding site = the vertebra
  (SNOMED CT), a measurement "Probability" (DCM 122157, unit UCUM ``{probability}``) of fracture, and
  the qualitative evaluation "Fracture of bone" (SCT 125605004) = Present / Absent at the operating
  point's vertebra threshold (the algorithm identification's parameter names the point and both
  thresholds);
* one TID 1501 group for the patient: finding site "Cervical spine", the patient probability and
  "Fracture of bone" at the patient threshold.

A vertebra stage 1 did not find has no segment and no group (its probability in predictions.csv is the
training prior, not a measurement).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cspine.ct.cls.operating_points import ResolvedOperatingPoint
from cspine.outputs.dicom_codes import FRACTURE_OF_BONE, PROBABILITY_UNIT, code, vertebra_code
from cspine.outputs.dicom_uids import derived_uid

__all__ = ["SR_SERIES_NUMBER", "build_report"]

SR_SERIES_NUMBER = 902


def _evaluation(positive: bool) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.QualitativeEvaluation(name=code(*FRACTURE_OF_BONE),
                                       value=codes.SCT.Present if positive else codes.SCT.Absent)


def _probability(value: float, algorithm: Any) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.Measurement(name=codes.DCM.Probability, value=float(value), unit=code(*PROBABILITY_UNIT),
                             algorithm_id=algorithm)


def build_report(seg: Any, source_datasets: list[Any], segments: Mapping[str, int], *,
                 probs: Mapping[str, float], patient_probability: float,
                 operating_point: ResolvedOperatingPoint, model_name: str, model_version: str,
                 series_uid: str, sop_uid: str, tracking_uids: Mapping[str, str]) -> Any:
    """A highdicom ``Comprehensive3DSR`` (see the module docstring).

    Args:
        seg: the Segmentation the groups reference (``None`` when no vertebra was found).
        source_datasets: the source images' headers (evidence; patient and study are taken from them).
        segments: ``{vertebra: segment number}`` of ``seg``.
        probs: calibrated fracture probability per vertebra.
        patient_probability: the patient's calibrated probability.
        operating_point: thresholds of the present/absent evaluations.
        model_name, model_version: the device observer and algorithm identification.
        series_uid, sop_uid: UIDs of the new SR series and instance.
        tracking_uids: per vertebra, the tracking UID of its segment.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    op = operating_point
    algorithm = hd.sr.AlgorithmIdentification(
        name=model_name, version=model_version,
        parameters=[f"operating point {op.name} ({op.source}): vertebra >= {op.vertebra:.6g}, "
                    f"patient >= {op.patient:.6g}"])
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", model_name, model_version), name=model_name[:64],
            manufacturer_name="cspine", model_name=model_version[:64]))
    groups: list[Any] = []
    for name, number in segments.items():
        site = hd.sr.FindingSite(anatomic_location=vertebra_code(name))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uids[name],
                                                         identifier=f"{name} vertebra"),
            referenced_segment=_referenced_segment(seg, number),
            finding_type=vertebra_code(name), finding_category=codes.SCT.AnatomicalStructure,
            algorithm_id=algorithm, finding_sites=[site],
            measurements=[_probability(probs[name], algorithm)],
            qualitative_evaluations=[_evaluation(operating_point.positive(probs[name], "vertebra"))]))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid("patient", sop_uid),
                                                     identifier="patient"),
        finding_type=code(*FRACTURE_OF_BONE), algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.CervicalSpine)],
        measurements=[_probability(patient_probability, algorithm)],
        qualitative_evaluations=[_evaluation(operating_point.positive(patient_probability, "patient"))]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[*source_datasets, *([] if seg is None else [seg])], content=report[0],
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER, sop_instance_uid=sop_uid, instance_number=1, manufacturer="cspine",
        is_complete=True, series_description=f"cspine fracture report ({model_name})"[:64])


def _referenced_segment(seg: Any, number: int) -> Any:
    """The SR's reference to segment ``number`` of ``seg`` and the series it segments. Built directly:
    highdicom's ``from_segmentation`` reads the segment of each frame from the per-frame groups, which a
    one-segment SEG keeps in the shared groups instead."""
    import highdicom as hd

    series = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(series))
