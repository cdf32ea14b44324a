"""The RSNA-layout dataset: files, CSVs, and a round trip through the project's readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from cspine.io.nifti import load_mask_on_grid
from cspine.io.study import load_study
from cspine.labels import (
    BOX_COLUMNS,
    BOXES_CSV,
    SAMPLE_SUBMISSION_CSV,
    SEGMENTATIONS,
    STUDY_UID,
    TARGETS,
    TEST_BOXES_CSV,
    TEST_COLUMNS,
    TEST_CSV,
    TEST_IMAGES,
    TEST_LABELS_CSV,
    TRAIN_COLUMNS,
    TRAIN_CSV,
    TRAIN_IMAGES,
    VERTEBRAE,
)
from cspine.synth.ct import RECORDS, generate_ct_dataset, study_plan
from cspine.synth.phantom import make_phantom
from cspine.synth.preview import canonical_box

SEED, N_TRAIN, N_TEST, SIZE = 8, 6, 2, 48


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_ct_dataset(
        tmp_path_factory.mktemp("rsna"), N_TRAIN, N_TEST, seed=SEED, size=SIZE, progress=False
    )


def _read(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / name, dtype={STUDY_UID: str, "row_id": str})


def test_layout_and_csvs(root: Path) -> None:
    train, test_labels = _read(root, TRAIN_CSV), _read(root, TEST_LABELS_CSV)
    assert list(train.columns) == list(TRAIN_COLUMNS) and list(test_labels.columns) == list(TRAIN_COLUMNS)
    assert len(train) == N_TRAIN and len(test_labels) == N_TEST
    assert (train["patient_overall"] == train[list(VERTEBRAE)].max(axis=1)).all()
    assert all(u.startswith("1.2.826.0.1.3680043.") for u in train[STUDY_UID])
    for uid in train[STUDY_UID]:
        assert (root / TRAIN_IMAGES / uid).is_dir()
    for uid in test_labels[STUDY_UID]:
        assert (root / TEST_IMAGES / uid).is_dir()
    test = _read(root, TEST_CSV)
    assert list(test.columns) == list(TEST_COLUMNS) and len(test) == N_TEST * len(TARGETS)
    assert (test["row_id"] == test[STUDY_UID] + "_" + test["prediction_type"]).all()
    assert set(test["prediction_type"]) == set(TARGETS)
    sub = _read(root, SAMPLE_SUBMISSION_CSV)
    assert list(sub["row_id"]) == list(test["row_id"]) and list(sub.columns) == ["row_id", "fractured"]
    boxes = _read(root, BOXES_CSV)
    assert list(boxes.columns) == list(BOX_COLUMNS)
    assert set(boxes[STUDY_UID]) == set(train.loc[train["patient_overall"] == 1, STUDY_UID])
    test_boxes = _read(root, TEST_BOXES_CSV)  # the held-out split's boxes, kept apart from training's
    assert list(test_boxes.columns) == list(BOX_COLUMNS)
    assert set(test_boxes[STUDY_UID]) == set(test_labels.loc[test_labels["patient_overall"] == 1, STUDY_UID])
    segs = sorted(p.name for p in (root / SEGMENTATIONS).glob("*.nii"))
    assert segs and all(s[:-4] in set(train[STUDY_UID]) for s in segs)


def test_every_encoding_numbering_and_representation_occurs(root: Path) -> None:
    seen = set()
    for folder in [*(root / TRAIN_IMAGES).iterdir(), *(root / TEST_IMAGES).iterdir()]:
        ds = pydicom.dcmread(folder / "1.dcm")
        n = len(list(folder.glob("*.dcm")))
        last = pydicom.dcmread(folder / f"{n}.dcm", stop_before_pixels=True)
        cranio_caudal = float(ds.ImagePositionPatient[2]) > float(last.ImagePositionPatient[2])
        seen |= {
            str(ds.file_meta.TransferSyntaxUID),
            f"pr{ds.PixelRepresentation}",
            f"bits{ds.BitsStored}",
            f"cc{cranio_caudal}",
            ds.PatientPosition,
        }
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90"} <= seen
    assert {"pr0", "pr1", "bits12", "bits16", "ccTrue", "ccFalse", "HFS", "FFS"} <= seen


def test_round_trip_through_project_readers(root: Path) -> None:
    train = _read(root, TRAIN_CSV).set_index(STUDY_UID)
    boxes = _read(root, BOXES_CSV)
    plan = {e["uid"]: e for e in study_plan(N_TRAIN, N_TEST, SEED)}
    checked_mask = checked_boxes = 0
    for uid, row in train.iterrows():
        truth = make_phantom(plan[uid]["phantom_seed"], size=SIZE)
        v = load_study(root / TRAIN_IMAGES / uid, workers=1)
        assert np.array_equal(v.hu, truth.hu)  # exact HU in the canonical orientation
        assert np.allclose(v.spacing, truth.spacing, atol=1e-4)
        assert [int(row[c]) for c in VERTEBRAE] == [truth.fractured[c] for c in VERTEBRAE]
        seg = root / SEGMENTATIONS / f"{uid}.nii"
        if seg.exists():
            assert np.array_equal(load_mask_on_grid(seg, v), truth.labels)
            checked_mask += 1
        got = {
            canonical_box(v, b.slice_number, b.x, b.y, b.width, b.height)
            for b in boxes[boxes[STUDY_UID] == uid].itertuples()
        }
        assert got == {(k, float(x), float(y), float(w), float(h)) for k, x, y, w, h in truth.boxes}
        for k, x, y, w, h in got:
            ys, xs = np.nonzero(truth.fracture_mask[k])
            assert xs.size and x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
            checked_boxes += 1
    assert checked_mask >= 1 and checked_boxes >= 1


def test_rerun_skips_completed_studies_and_is_deterministic(root: Path, tmp_path: Path) -> None:
    first = next((root / TRAIN_IMAGES).iterdir()) / "1.dcm"
    mtime = first.stat().st_mtime_ns
    before = (root / TRAIN_CSV).read_text()
    generate_ct_dataset(root, N_TRAIN, N_TEST, seed=SEED, size=SIZE, progress=False)
    assert first.stat().st_mtime_ns == mtime and (root / TRAIN_CSV).read_text() == before
    assert len(list((root / RECORDS).glob("*.json"))) == N_TRAIN + N_TEST
    # A second copy from the same seed is the same data (first study only, to stay quick).
    again = generate_ct_dataset(tmp_path / "again", 1, 0, seed=SEED, size=SIZE, progress=False)
    uid = _read(again, TRAIN_CSV)[STUDY_UID][0]
    assert (again / TRAIN_IMAGES / uid / "1.dcm").read_bytes() == (
        root / TRAIN_IMAGES / uid / "1.dcm"
    ).read_bytes()
