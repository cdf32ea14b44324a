"""A small CT series writer for robustness tests: any slice positions, orientation and pixels (pydicom)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_series(folder: Path, hu: np.ndarray, positions: Sequence[Sequence[float]], *,
                 iop: Sequence[float] = (1, 0, 0, 0, 1, 0), pixel_spacing: tuple[float, float] = (0.5, 0.5),
                 study_uid: str | None = None, series_uid: str | None = None) -> list[Path]:
    """Write ``hu[k]`` (int16 HU) at ImagePositionPatient ``positions[k]`` as ``folder/<k+1>.dcm``."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = study_uid or generate_uid(), series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for k, (img, ipp) in enumerate(zip(hu, positions, strict=True)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", study_uid, series_uid
        ds.FrameOfReferenceUID, ds.SeriesNumber, ds.InstanceNumber = frame_uid, 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in ipp]
        ds.PixelSpacing, ds.SliceThickness = list(pixel_spacing), 1.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = img.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (np.asarray(img, np.int32) + 1024).astype("<i2").tobytes()
        path = folder / f"{k + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def stored_pixel_world(path: Path, row: float, col: float) -> np.ndarray:
    """LPS millimetres of stored pixel (row, col) of one DICOM image (from its own header)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return ipp + row * dr * iop[3:] + col * dc * iop[:3]
