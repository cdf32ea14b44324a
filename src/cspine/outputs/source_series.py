"""The source series a DICOM result refers to: its files, their headers, identifiers filled in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cspine.errors import DicomError
from cspine.io.volume import Volume
from cspine.outputs.dicom_uids import complete_source_datasets

__all__ = ["SourceSeries", "read_source_series", "source_files_of"]


@dataclass
class SourceSeries:
    """Headers of the source images in the given order (pixel data not read).

    Attributes:
        paths: the files, in frame order.
        datasets: their headers, with identifiers filled where anonymisation emptied them.
        filled: what was filled and how (:func:`~cspine.outputs.dicom_uids.complete_source_datasets`).
    """

    paths: list[Path]
    datasets: list[Any]
    filled: dict[str, str] = field(default_factory=dict)

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)


def source_files_of(volume: Volume) -> list[Path]:
    """The DICOM files a volume was read from, in canonical slice order (each once).

    Slices that resampling made (a gap) have no file and are left out; the label map is mapped onto
    the files that exist (:func:`cspine.outputs.source_grid.to_source_grid`).

    Raises:
        DicomError: the volume was not read from single-frame DICOM files (NIfTI, in-memory arrays,
            a sagittal series reoriented without slice records).
    """
    paths = list(dict.fromkeys(Path(s.path) for s in volume.slices if s.path))
    if not paths:
        raise DicomError("DICOM results need a study read from DICOM files; this volume has no source "
                         "files (NIfTI input or an in-memory volume)")
    return paths


def read_source_series(paths: Sequence[str | Path]) -> SourceSeries:
    """Read the headers of one series' files and fill missing identifiers in memory.

    Raises:
        DicomError: a file that cannot be read, a multi-frame file (not supported here yet), files of
            different image sizes, or no file at all.
    """
    import pydicom

    if not paths:
        raise DicomError("no source DICOM files given")
    datasets = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for a broken file
            raise DicomError(f"cannot be read as DICOM ({exc})", path) from exc
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise DicomError("multi-frame source images are not supported for DICOM SEG/SR output yet", path)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if getattr(ds, keyword, None) in (None, ""):
                raise DicomError(f"lacks {keyword}, needed to place the segmentation", path)
        datasets.append(ds)
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise DicomError(f"the source images differ in size {sorted(sizes)}; give one series", paths[0])
    filled = complete_source_datasets(datasets)
    return SourceSeries([Path(p) for p in paths], datasets, filled)
