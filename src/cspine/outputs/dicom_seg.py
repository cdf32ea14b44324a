"""The DICOM Segmentation of C1..C7: BINARY, one segment per vertebra found, on the source series.

Each segment is coded with the vertebra's SNOMED CT concept (category "Anatomical Structure"), marked
AUTOMATIC and identified by the model's name and version (Algorithm Identification, family
"Artificial Intelligence"). Frames that hold no segment are omitted, as the standard allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cspine import __version__
from cspine.labels import LABEL_OF, VERTEBRAE
from cspine.outputs.dicom_codes import vertebra_code
from cspine.outputs.source_series import SourceSeries

__all__ = ["SEG_SERIES_NUMBER", "build_segmentation", "segment_map"]

SEG_SERIES_NUMBER = 901
MANUFACTURER = "cspine"


def segment_map(labels_on_source: np.ndarray) -> dict[str, int]:
    """Segment number (1, 2, ...) of each vertebra with at least one voxel, in C1..C7 order.

    Example:
        >>> segment_map(np.array([[[0, 3, 7]]]))
        {'C3': 1, 'C7': 2}
    """
    present = set(np.unique(labels_on_source).tolist())
    found = [v for v in VERTEBRAE if LABEL_OF[v] in present]
    return {v: i + 1 for i, v in enumerate(found)}


def algorithm_identification(model_name: str, model_version: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(name=model_name, family=codes.cid7162.ArtificialIntelligence,
                                              version=model_version)


def build_segmentation(source: SourceSeries, labels_on_source: np.ndarray, *, model_name: str,
                       model_version: str, series_uid: str, sop_uid: str,
                       tracking_uids: Mapping[str, str]) -> tuple[Any, dict[str, int]]:
    """A highdicom ``Segmentation`` of the vertebrae in ``labels_on_source``.

    Args:
        source: the source series (headers with identifiers filled).
        labels_on_source: ``(frames, rows, cols)`` label map on the source images (1..7 = C1..C7;
            other labels are ignored), frames in ``source.datasets`` order.
        model_name, model_version: the algorithm identification.
        series_uid, sop_uid: UIDs of the new SEG series and instance.
        tracking_uids: per vertebra, the UID that ties its segment to its SR measurement group.

    Returns:
        ``(segmentation, {vertebra: segment number})``; ``(None, {})`` when no vertebra was found.
    """
    import highdicom as hd

    labels = np.asarray(labels_on_source)
    expected = (len(source.datasets), int(source.datasets[0].Rows), int(source.datasets[0].Columns))
    if labels.shape != expected:
        raise ValueError(f"label map shape {labels.shape} does not match the source images {expected}")
    numbers = segment_map(labels)
    if not numbers:
        return None, {}
    lut = np.zeros(max(int(labels.max()), max(LABEL_OF[v] for v in VERTEBRAE)) + 1, np.uint8)
    for name, number in numbers.items():
        lut[LABEL_OF[name]] = number
    pixels = lut[labels]
    algorithm = algorithm_identification(model_name, model_version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=f"{name} vertebra",
            segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
            segmented_property_type=vertebra_code(name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=tracking_uids[name],
            tracking_id=f"{name} vertebra")
        for name, number in numbers.items()
    ]
    seg = hd.seg.Segmentation(
        source_images=source.datasets, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=series_uid, series_number=SEG_SERIES_NUMBER, sop_instance_uid=sop_uid,
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=model_name[:64],
        software_versions=f"cspine {__version__}", device_serial_number=model_version[:64],
        content_description="C1-C7 vertebrae (automatic)", content_label="VERTEBRAE",
        series_description=f"cspine C1-C7 segmentation ({model_name})"[:64])
    return seg, numbers
