"""A synthetic RSNA 2022 dataset on disk: :func:`generate_ct_dataset`.

Layout (names from :mod:`cspine.labels`)::

    OUT/train.csv                  StudyInstanceUID, patient_overall, C1..C7
    OUT/train_bounding_boxes.csv   StudyInstanceUID, x, y, width, height, slice_number (= InstanceNumber)
    OUT/train_images/<UID>/<N>.dcm N = InstanceNumber
    OUT/segmentations/<UID>.nii    ~40% of training studies, sagittal voxel order, correct affine
    OUT/test_images/<UID>/<N>.dcm
    OUT/test.csv                   row_id (<UID>_<C1..C7|patient_overall>), StudyInstanceUID, prediction_type
    OUT/sample_submission.csv      row_id, fractured
    OUT/test_labels.csv            the test studies' labels (train.csv columns)
    OUT/test_bounding_boxes.csv    the test studies' fracture boxes (train_bounding_boxes.csv columns)
    OUT/.synth/<UID>.json          per-study record: written last, so a study with one is complete

Boxes are in the stored DICOM pixel grid (columns mirrored for feet-first series), as RSNA's are.
Deterministic for a seed; an interrupted run resumes and skips completed studies.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cspine.fileio import atomic_path, read_json, write_json
from cspine.labels import (
    BOX_COLUMNS,
    BOXES_CSV,
    PATIENT_OVERALL,
    SAMPLE_SUBMISSION_CSV,
    SEGMENTATIONS,
    STUDY_UID,
    TARGETS,
    TEST_BOXES_CSV,
    TEST_CSV,
    TEST_IMAGES,
    TEST_LABELS_CSV,
    TRAIN_COLUMNS,
    TRAIN_CSV,
    TRAIN_IMAGES,
    VERTEBRAE,
)

log = logging.getLogger(__name__)

#: Share of training studies that get a segmentation (RSNA: 87 of 2,019; more here to train stage 1).
SEGMENTATION_SHARE = 0.4
RECORDS = ".synth"
#: Root of the study UIDs, as in the RSNA 2022 data.
STUDY_UID_ROOT = "1.2.826.0.1.3680043."


def study_plan(n_studies: int, n_test: int, seed: int) -> list[dict[str, Any]]:
    """Which studies a dataset has: UID, split, phantom seed and whether it gets a mask.

    Study ``i`` depends only on ``(seed, i)``, so a larger dataset extends a smaller one.
    """
    plan, used = [], set()
    for i in range(n_studies + n_test):
        rng = np.random.default_rng([seed, 7919, i])
        num = int(rng.integers(10000, 100000))
        while num in used:  # keep UIDs unique within the dataset (deterministically)
            num = int(rng.integers(10000, 100000))
        used.add(num)
        split = "train" if i < n_studies else "test"
        plan.append(
            {
                "uid": f"{STUDY_UID_ROOT}{num}",
                "split": split,
                "index": i,
                "phantom_seed": int(seed) * 1_000_003 + i,
                "segmentation": bool(split == "train" and rng.random() < SEGMENTATION_SHARE),
            }
        )
    return plan


def _write_study(out: Path, entry: dict[str, Any], size: int) -> dict[str, Any]:
    from dataclasses import asdict

    from cspine.io.nifti import save_mask_nifti
    from cspine.synth.ct_writer import random_options, write_ct_series
    from cspine.synth.phantom import make_phantom

    uid = entry["uid"]
    record_path = out / RECORDS / f"{uid}.json"
    if record_path.exists():
        return read_json(record_path)
    p = make_phantom(entry["phantom_seed"], size=size)
    rng = np.random.default_rng([entry["phantom_seed"], 11])
    opts = random_options(rng, p.spacing[0])
    volume = p.volume()
    # Scanner coordinates: the table position and reconstruction centre put the origin elsewhere.
    affine = volume.affine.copy()
    affine[:3, 3] = [
        -p.hu.shape[2] * p.spacing[2] / 2 + rng.uniform(-20, 20),
        -p.hu.shape[1] * p.spacing[1] / 2 + rng.uniform(-40, 10),
        rng.uniform(-150, 80),
    ]
    volume = volume.with_array(p.hu, affine)
    folder = out / (TRAIN_IMAGES if entry["split"] == "train" else TEST_IMAGES) / uid
    if folder.exists():  # a half-written study from an interrupted run
        shutil.rmtree(folder)
    written = write_ct_series(
        volume,
        folder,
        opts,
        study_uid=uid,
        uid_seed=uid,
        extra={"PatientID": uid, "SeriesNumber": int(rng.integers(2, 9))},
        verify_every=8,  # spot checks: the encoders are tested bit-exact on whole series
    )
    if entry["segmentation"]:
        save_mask_nifti(out / SEGMENTATIONS / f"{uid}.nii", p.labels, volume, order="sagittal")
    width = p.hu.shape[2]
    boxes = []
    for k, x, y, w, h in p.boxes:
        x_stored = width - (x + w) if written.flip_x else x
        boxes.append(
            {
                STUDY_UID: uid,
                "x": round(x_stored, 1),
                "y": round(y, 1),
                "width": round(w, 1),
                "height": round(h, 1),
                "slice_number": int(written.instance_numbers[k]),
            }
        )
    record = {
        "uid": uid,
        "split": entry["split"],
        "labels": {**p.fractured, PATIENT_OVERALL: p.patient_overall},
        "boxes": boxes,
        "segmentation": entry["segmentation"],
        "options": asdict(opts),
        "transfer_syntax": written.transfer_syntax,
        "n_slices": int(p.hu.shape[0]),
        "spacing": list(p.spacing),
        "fractures": [asdict(f) for f in p.fractures],
    }
    write_json(record_path, record)
    return record


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def generate_ct_dataset(
    out: str | Path,
    n_studies: int,
    n_test: int = 0,
    seed: int = 0,
    size: int = 256,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write a synthetic RSNA 2022 dataset (see the module docstring) and return its root.

    Args:
        out: Root folder (created; completed studies already there are kept and skipped).
        n_studies: Training studies.
        n_test: Test studies (labels in ``test_labels.csv``).
        seed: Everything follows from it.
        size: In-plane matrix (slices: :func:`cspine.synth.layout.default_slices`).
        workers: Processes generating studies in parallel.
        progress: Show a progress bar.
    """
    if n_studies < 0 or n_test < 0 or n_studies + n_test == 0:
        raise ValueError("need at least one study (n_studies + n_test > 0)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = study_plan(n_studies, n_test, seed)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan), desc="synthetic CT studies", unit="study", disable=None if progress else True)
    records: list[dict[str, Any]] = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for rec in pool.map(_write_study, [out] * len(plan), plan, [size] * len(plan)):
                records.append(rec)
                bar.update()
    else:
        for entry in plan:
            records.append(_write_study(out, entry, size))
            bar.update()
    bar.close()

    def labels_table(split: str) -> pd.DataFrame:
        rows = [
            {STUDY_UID: r["uid"], **{c: int(r["labels"][c]) for c in TRAIN_COLUMNS[1:]}}
            for r in records
            if r["split"] == split
        ]
        return pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))

    _write_csv(out / TRAIN_CSV, labels_table("train"))
    for split, name in (("train", BOXES_CSV), ("test", TEST_BOXES_CSV)):
        boxes = [b for r in records if r["split"] == split for b in r["boxes"]]
        _write_csv(out / name, pd.DataFrame(boxes, columns=list(BOX_COLUMNS)))
    test_uids = [r["uid"] for r in records if r["split"] == "test"]
    test_rows = [
        {"row_id": f"{u}_{t}", STUDY_UID: u, "prediction_type": t} for u in test_uids for t in TARGETS
    ]
    test_df = pd.DataFrame(test_rows, columns=["row_id", STUDY_UID, "prediction_type"])
    _write_csv(out / TEST_CSV, test_df)
    _write_csv(out / SAMPLE_SUBMISSION_CSV, pd.DataFrame({"row_id": test_df["row_id"], "fractured": 0.5}))
    _write_csv(out / TEST_LABELS_CSV, labels_table("test"))
    n_frac = sum(r["labels"][PATIENT_OVERALL] for r in records)
    log.info("wrote %d studies (%d fractured) to %s", len(records), n_frac, out)
    return out


__all__ = ["generate_ct_dataset", "study_plan", "VERTEBRAE"]
