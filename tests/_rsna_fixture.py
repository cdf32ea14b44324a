"""A tiny RSNA 2022 layout written with pydicom, for data-layer tests (not the phantom generator).

Each study is a small uncompressed CT series whose HU array in the canonical orientation is known,
so tests can compare what the readers return with the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cspine.io.volume import Volume
from cspine.labels import (
    BOX_COLUMNS,
    BOXES_CSV,
    SAMPLE_SUBMISSION_CSV,
    SEGMENTATIONS,
    STUDY_UID,
    TARGETS,
    TEST_COLUMNS,
    TEST_CSV,
    TEST_IMAGES,
    TEST_LABELS_CSV,
    TRAIN_COLUMNS,
    TRAIN_CSV,
    TRAIN_IMAGES,
    VERTEBRAE,
)

SPACING = (2.5, 0.8, 0.8)  # (z, y, x) mm; the SliceThickness tag says 3.0 on purpose


@dataclass
class FixtureInfo:
    root: Path
    train_uids: list[str]
    test_uids: list[str]
    mask_uids: list[str]
    #: Canonical (superior->inferior, anterior->posterior, right->left) HU per study.
    hu: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    affine: dict[str, np.ndarray] = field(default_factory=dict)


def canonical_affine(shape: tuple[int, int, int], top_z: float = 100.0) -> np.ndarray:
    dz, dy, dx = SPACING
    a = np.eye(4)
    a[:3, :3] = [[0, 0, dx], [0, dy, 0], [-dz, 0, 0]]
    a[:3, 3] = [-(shape[2] - 1) * dx / 2, -(shape[1] - 1) * dy / 2, top_z]
    return a


def write_dicom_study(folder: Path, hu: np.ndarray, study_uid: str, *, reverse_numbering: bool = False,
                      top_z: float = 100.0) -> np.ndarray:
    """Write ``hu`` (canonical, slice 0 most cranial) as ``<N>.dcm`` files; return its affine."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = hu.shape
    affine = canonical_affine(hu.shape, top_z)
    series_uid, frame_uid = generate_uid(), generate_uid()
    for k in range(nz):
        number = nz - k if reverse_numbering else k + 1
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.ImageType, ds.SeriesNumber = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], 1
        ds.PatientID = "anon"
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [float(v) for v in affine[:3, 3] + k * affine[:3, 0]]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [SPACING[1], SPACING[2]]
        ds.SliceThickness = 3.0
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype("<i2").tobytes()
        pydicom.dcmwrite(folder / f"{number}.dcm", ds, enforce_file_format=True)
    return affine


def train_table(n: int, seed: int = 0, uid_prefix: str = "1.2.826.0.1.3680043.9") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        frac = (rng.random(7) < 0.25).astype(int) if rng.random() < 0.5 else np.zeros(7, int)
        rows.append({STUDY_UID: f"{uid_prefix}.{1000 + i}", "patient_overall": int(frac.any()),
                     **dict(zip(VERTEBRAE, frac.tolist(), strict=True))})
    return pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))


def write_rsna_layout(root: Path, n_train: int = 3, n_test: int = 1, *,
                      shape: tuple[int, int, int] = (6, 12, 10), n_masks: int = 1, seed: int = 0,
                      images: bool = True,
                      table: pd.DataFrame | None = None) -> FixtureInfo:
    """Write a minimal, valid RSNA 2022 layout under ``root`` and return the truth."""
    from cspine.io.nifti import save_mask_nifti

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    train = table if table is not None else train_table(n_train, seed)
    train.to_csv(root / TRAIN_CSV, index=False)
    uids = train[STUDY_UID].tolist()
    test_uids = [f"1.2.826.0.1.3680043.8.{2000 + i}" for i in range(n_test)]
    info = FixtureInfo(root, uids, test_uids, uids[:n_masks])
    boxes = []
    for i, uid in enumerate(uids):
        if train.loc[i, "patient_overall"]:
            boxes.append({STUDY_UID: uid, "x": 1.5, "y": 2.0, "width": 4.0, "height": 3.0, "slice_number": 2})
    pd.DataFrame(boxes, columns=list(BOX_COLUMNS)).to_csv(root / BOXES_CSV, index=False)
    test_rows = [{"row_id": f"{u}_{t}", STUDY_UID: u, "prediction_type": t}
                 for u in test_uids for t in TARGETS]
    pd.DataFrame(test_rows, columns=list(TEST_COLUMNS)).to_csv(root / TEST_CSV, index=False)
    pd.DataFrame({"row_id": [r["row_id"] for r in test_rows], "fractured": 0.5}).to_csv(
        root / SAMPLE_SUBMISSION_CSV, index=False)
    train_table(n_test, seed + 1, "1.2.826.0.1.3680043.8").assign(
        **{STUDY_UID: test_uids}).to_csv(root / TEST_LABELS_CSV, index=False)
    (root / TRAIN_IMAGES).mkdir(exist_ok=True)
    (root / TEST_IMAGES).mkdir(exist_ok=True)
    (root / SEGMENTATIONS).mkdir(exist_ok=True)
    if not images:
        return info
    for split, split_uids in ((TRAIN_IMAGES, uids), (TEST_IMAGES, test_uids)):
        for j, uid in enumerate(split_uids):
            hu = rng.integers(-1000, 1500, size=shape).astype(np.int16)
            affine = write_dicom_study(root / split / uid, hu, uid, reverse_numbering=bool(j % 2))
            info.hu[uid], info.affine[uid] = hu, affine
    for uid in info.mask_uids:
        labels = rng.integers(0, 8, size=shape).astype(np.uint8)
        save_mask_nifti(root / SEGMENTATIONS / f"{uid}.nii", labels, Volume(info.hu[uid], info.affine[uid]))
        info.labels[uid] = labels
    return info
