"""Domain facts of cspine: vertebra names, label numbers, RSNA 2022 columns, HU windows.

This module is the single home of these facts and imports nothing heavy, so that any part of
the toolkit (and ``cspine --help``) can use it instantly.
"""

from __future__ import annotations

from typing import Final

#: Cervical vertebrae in cranio-caudal order.
VERTEBRAE: Final[tuple[str, ...]] = ("C1", "C2", "C3", "C4", "C5", "C6", "C7")
#: Thoracic vertebrae as far as the segmentation label scheme goes.
THORACIC: Final[tuple[str, ...]] = tuple(f"T{i}" for i in range(1, 13))

#: RSNA 2022 / VerSe label numbers: 1..7 = C1..C7, 8..19 = T1..T12 (0 = background).
LABEL_OF: Final[dict[str, int]] = {name: i + 1 for i, name in enumerate(VERTEBRAE + THORACIC)}
NAME_OF: Final[dict[int, str]] = {v: k for k, v in LABEL_OF.items()}
CERVICAL_LABELS: Final[tuple[int, ...]] = tuple(LABEL_OF[v] for v in VERTEBRAE)

# --- RSNA 2022 Cervical Spine Fracture Detection: file and column names ---------------------
STUDY_UID: Final = "StudyInstanceUID"
PATIENT_OVERALL: Final = "patient_overall"
#: Columns of train.csv (and of the project's test_labels.csv / predictions.csv).
TRAIN_COLUMNS: Final[tuple[str, ...]] = (STUDY_UID, PATIENT_OVERALL, *VERTEBRAE)
#: The eight prediction targets in the order the competition lists them.
TARGETS: Final[tuple[str, ...]] = (*VERTEBRAE, PATIENT_OVERALL)
BOX_COLUMNS: Final[tuple[str, ...]] = (STUDY_UID, "x", "y", "width", "height", "slice_number")
TEST_COLUMNS: Final[tuple[str, ...]] = ("row_id", STUDY_UID, "prediction_type")
SUBMISSION_COLUMNS: Final[tuple[str, ...]] = ("row_id", "fractured")

TRAIN_CSV: Final = "train.csv"
BOXES_CSV: Final = "train_bounding_boxes.csv"
TEST_CSV: Final = "test.csv"
SAMPLE_SUBMISSION_CSV: Final = "sample_submission.csv"
TEST_LABELS_CSV: Final = "test_labels.csv"
#: The phantom's held-out fracture boxes (RSNA publishes none for its test set): ``evaluate --data``
#: uses them for attention alignment.
TEST_BOXES_CSV: Final = "test_bounding_boxes.csv"
TRAIN_IMAGES: Final = "train_images"
TEST_IMAGES: Final = "test_images"
SEGMENTATIONS: Final = "segmentations"

#: Studies of the real training set whose images are broken; readers skip them with a warning.
RSNA_BROKEN_STUDIES: Final[frozenset[str]] = frozenset(
    {"1.2.826.0.1.3680043.20574", "1.2.826.0.1.3680043.29952"}
)

#: Fractured-vertebra counts in the 2,019 real training studies (961 patients with a fracture).
RSNA_FRACTURE_COUNTS: Final[dict[str, int]] = {
    "C1": 146, "C2": 285, "C3": 73, "C4": 108, "C5": 162, "C6": 277, "C7": 393,
}
RSNA_N_STUDIES: Final = 2019
RSNA_N_FRACTURED_PATIENTS: Final = 961

#: Competition weights of the weighted binary log loss: (weight if negative, weight if positive).
VERTEBRA_WEIGHTS: Final[tuple[float, float]] = (1.0, 2.0)
PATIENT_WEIGHTS: Final[tuple[float, float]] = (7.0, 14.0)

# --- CT intensity windows (center, width) in Hounsfield units ------------------------------
BONE_WINDOW: Final[tuple[float, float]] = (400.0, 1800.0)
SOFT_TISSUE_WINDOW: Final[tuple[float, float]] = (40.0, 400.0)
#: HU range a volume is clipped to before it is stored as int16.
HU_MIN: Final = -1024
HU_MAX: Final = 3071

# --- Radiographs -----------------------------------------------------------------------------
XRAY_CLASSES: Final[tuple[str, ...]] = ("normal", "fracture", "dislocation")


def window_bounds(window: tuple[float, float]) -> tuple[float, float]:
    """Return (low, high) HU of a (center, width) window.

    >>> window_bounds(BONE_WINDOW)
    (-500.0, 1300.0)
    """
    center, width = window
    return center - width / 2, center + width / 2
