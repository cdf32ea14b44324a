"""The RSNA 2022 Cervical Spine Fracture Detection layout: schema-checked tables, study folders, masks,
and reproducible patient-level cross-validation folds.

Layout under ``root``::

    train.csv                  StudyInstanceUID, patient_overall, C1..C7 (0/1)
    train_bounding_boxes.csv   StudyInstanceUID, x, y, width, height (float), slice_number (int)
    train_images/<UID>/<N>.dcm
    segmentations/<UID>.nii    for a subset of training studies
    test_images/<UID>/<N>.dcm
    test.csv                   row_id = <UID>_<prediction_type>, StudyInstanceUID, prediction_type
    sample_submission.csv      row_id, fractured
    test_labels.csv            (cspine's phantom only) the test studies' labels, columns of train.csv
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cspine.errors import DatasetError
from cspine.fileio import write_text
from cspine.io.archives import UNPACK_HINT, is_archive
from cspine.labels import (
    BOX_COLUMNS,
    BOXES_CSV,
    PATIENT_OVERALL,
    RSNA_BROKEN_STUDIES,
    SAMPLE_SUBMISSION_CSV,
    SEGMENTATIONS,
    STUDY_UID,
    SUBMISSION_COLUMNS,
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
from cspine.registry.splits import RSNA_SPLITS, TRAIN

log = logging.getLogger(__name__)

FOLD: str = "fold"
#: The folds file every trainer writes into its run folder (and reuses from it).
FOLDS_CSV: str = "folds.csv"
SPLITS: tuple[str, ...] = RSNA_SPLITS


def _read_csv(path: Path, columns: Sequence[str], str_columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV and check that its columns are exactly ``columns`` (any order)."""
    if not path.is_file():
        raise DatasetError(f"missing file; an RSNA 2022 root needs {path.name} here", path)
    try:
        df = pd.read_csv(path, dtype={c: str for c in str_columns}, keep_default_na=False,
                         na_values={c: [""] for c in columns if c not in str_columns})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"not a readable CSV ({exc})", path) from exc
    missing = [c for c in columns if c not in df.columns]
    extra = [c for c in df.columns if c not in columns]
    if missing or extra:
        raise DatasetError(
            f"columns do not match the RSNA schema: missing {missing}, unexpected {extra}; "
            f"expected {list(columns)}", path)
    for c in str_columns:
        empty = df[c].str.strip() == ""
        if empty.any():
            raise DatasetError(f"{int(empty.sum())} empty value(s) in column {c!r} "
                               f"(first at data row {int(np.argmax(empty.to_numpy())) + 1})", path)
    return df[list(columns)]


def _check_binary(df: pd.DataFrame, columns: Sequence[str], path: Path) -> pd.DataFrame:
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DatasetError(f"column {c!r} must hold 0 or 1, found {str(df[c].iloc[row])!r} "
                               f"at data row {row + 1}", path)
        df[c] = values.astype(np.int64)
    return df


def _check_numeric(df: pd.DataFrame, columns: Sequence[str], path: Path, integer: bool) -> pd.DataFrame:
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna() | (integer and ~np.isclose(values, np.round(values)))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            kind = "an integer" if integer else "a number"
            raise DatasetError(f"column {c!r} must hold {kind}, found {str(df[c].iloc[row])!r} "
                               f"at data row {row + 1}", path)
        df[c] = values.round().astype(np.int64) if integer else values.astype(np.float64)
    return df


def _check_unique(df: pd.DataFrame, column: str, path: Path) -> None:
    dup = df[column].duplicated()
    if dup.any():
        raise DatasetError(f"{column} {df[column][dup].iloc[0]!r} appears more than once", path)


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Read and validate a table with the columns of ``train.csv`` (train.csv, test_labels.csv, ...)."""
    path = Path(path)
    df = _read_csv(path, TRAIN_COLUMNS, [STUDY_UID])
    df = _check_binary(df, [PATIENT_OVERALL, *VERTEBRAE], path)
    _check_unique(df, STUDY_UID, path)
    inconsistent = df[PATIENT_OVERALL] != df[list(VERTEBRAE)].max(axis=1)
    if inconsistent.any():
        log.warning("%s: %d studies have patient_overall != any(C1..C7) (first %s)", path,
                    int(inconsistent.sum()), df[STUDY_UID][inconsistent].iloc[0])
    return df.reset_index(drop=True)


def _drop_broken(df: pd.DataFrame, path: Path, reset_index: bool = True) -> pd.DataFrame:
    broken = df[STUDY_UID].isin(RSNA_BROKEN_STUDIES)
    if broken.any():
        uids = sorted(set(df[STUDY_UID][broken]))
        msg = f"{path.name}: skipping {len(uids)} known-broken RSNA studies: {', '.join(uids)}"
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)
    return df[~broken].reset_index(drop=True) if reset_index else df[~broken]


def box_problem(x: float, y: float, width: float, height: float) -> str | None:
    """What is wrong with a fracture box in stored-pixel units, whatever the image (None: nothing).

    >>> box_problem(10, 20, -4, 5)
    'width -4 is not positive'
    """
    values = {"x": x, "y": y, "width": width, "height": height}
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    if bad:
        return f"{', '.join(bad)} not finite"
    for name in ("width", "height"):
        if values[name] <= 0:
            return f"{name} {values[name]:g} is not positive"
    if x < 0 or y < 0:
        return f"corner x {x:g}, y {y:g} lies outside the image (negative)"
    return None


def box_outside(x: float, y: float, width: float, height: float, rows: int, cols: int) -> str | None:
    """Whether a box reaches beyond an image of ``rows`` x ``cols`` stored pixels (None: it fits).

    >>> box_outside(500, 10, 30, 10, 512, 512)
    "x 500..530 reaches beyond the image's 512 columns"
    """
    if x + width > cols + 0.5:
        return f"x {x:g}..{x + width:g} reaches beyond the image's {cols} columns"
    if y + height > rows + 0.5:
        return f"y {y:g}..{y + height:g} reaches beyond the image's {rows} rows"
    return None


class RsnaDataset:
    """An RSNA 2022 root, validated on construction.

    ``train.csv``, ``train_bounding_boxes.csv`` and ``train_images/`` are required; the test files,
    ``segmentations/`` and ``test_labels.csv`` are optional (accessors say when they are absent).
    The two known-broken studies (``labels.RSNA_BROKEN_STUDIES``) are dropped with a warning. Fracture
    boxes with a width or height that is not positive, a non-finite value or a negative corner are left
    out, each logged with its data row (``box_problems``); boxes beyond the image's rows/columns or on a
    slice the study lacks can only be seen with the images: ``cspine ct prepare`` reports them.

    Example:
        >>> ds = RsnaDataset("/data/rsna-2022")  # doctest: +SKIP
        >>> ds.train.head(); ds.study_dir(ds.train_uids()[0]); ds.mask_path(uid)  # doctest: +SKIP

    Raises:
        DatasetError: a missing file or folder, wrong columns, bad values, malformed row_id.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if is_archive(self.root):
            raise DatasetError(f"{UNPACK_HINT} (the RSNA 2022 root with train.csv and train_images/)",
                               self.root)
        if not self.root.is_dir():
            raise DatasetError("dataset root is not a folder", self.root)
        if not (self.root / TRAIN_IMAGES).is_dir():
            raise DatasetError(f"missing folder {TRAIN_IMAGES}/ (one sub-folder of <N>.dcm per study)",
                               self.root / TRAIN_IMAGES)
        train_csv = self.root / TRAIN_CSV
        self.train: pd.DataFrame = _drop_broken(read_label_table(train_csv), train_csv)
        #: One line per box left out of ``boxes`` (file, data row, study, what is wrong).
        self.box_problems: list[str] = []
        self.boxes: pd.DataFrame = self._read_boxes()
        self._test: pd.DataFrame | None = self._read_test() if (self.root / TEST_CSV).exists() else None
        if (self.root / SAMPLE_SUBMISSION_CSV).exists():
            sub = _read_csv(self.root / SAMPLE_SUBMISSION_CSV, SUBMISSION_COLUMNS, ["row_id"])
            _check_numeric(sub, ["fractured"], self.root / SAMPLE_SUBMISSION_CSV, integer=False)

    # --- tables -----------------------------------------------------------------------------
    def _read_boxes(self) -> pd.DataFrame:
        """``train_bounding_boxes.csv``; boxes with a non-positive or non-finite size or a negative corner
        are left out, each with a warning naming its data row (``self.box_problems``)."""
        path = self.root / BOXES_CSV
        df = _read_csv(path, BOX_COLUMNS, [STUDY_UID])
        df = _check_numeric(df, ["x", "y", "width", "height"], path, integer=False)
        df = _check_numeric(df, ["slice_number"], path, integer=True)
        df.index = pd.RangeIndex(1, len(df) + 1)  # data row numbers, kept for messages
        bad = []
        for r in df.itertuples():
            problem = box_problem(float(r.x), float(r.y), float(r.width), float(r.height))
            if problem is not None:
                bad.append(r.Index)
                self.box_problems.append(f"{path}: data row {r.Index} (study {getattr(r, STUDY_UID)}, "
                                         f"slice_number {r.slice_number}): {problem}; box left out")
        for msg in self.box_problems:
            log.warning("%s", msg)
        df = _drop_broken(df.drop(index=bad), path, reset_index=False)
        self.box_rows: np.ndarray = df.index.to_numpy()
        df = df.reset_index(drop=True)
        unknown = ~df[STUDY_UID].isin(self.train[STUDY_UID])
        if unknown.any():
            log.warning("%s: %d boxes belong to studies not in %s (first %s)", path, int(unknown.sum()),
                        TRAIN_CSV, df[STUDY_UID][unknown].iloc[0])
        return df

    def boxes_of(self, uid: str) -> list[tuple[int, float, float, float, float, int]]:
        """The fracture boxes of one study as ``(data row, x, y, width, height, slice_number)``."""
        sel = (self.boxes[STUDY_UID] == uid).to_numpy()
        rows = self.boxes[sel]
        return [(int(n), float(r.x), float(r.y), float(r.width), float(r.height), int(r.slice_number))
                for n, r in zip(self.box_rows[sel], rows.itertuples(index=False), strict=True)]

    def _read_test(self) -> pd.DataFrame:
        path = self.root / TEST_CSV
        df = _read_csv(path, TEST_COLUMNS, list(TEST_COLUMNS))
        bad_type = ~df["prediction_type"].isin(TARGETS)
        if bad_type.any():
            raise DatasetError(f"prediction_type must be one of {list(TARGETS)}, found "
                               f"{df['prediction_type'][bad_type].iloc[0]!r}", path)
        expected = df[STUDY_UID] + "_" + df["prediction_type"]
        bad_id = df["row_id"] != expected
        if bad_id.any():
            i = int(np.argmax(bad_id.to_numpy()))
            raise DatasetError(f"row_id must be <StudyInstanceUID>_<prediction_type>: data row {i + 1} has "
                               f"{df['row_id'].iloc[i]!r}, expected {expected.iloc[i]!r}", path)
        _check_unique(df, "row_id", path)
        return df.reset_index(drop=True)

    @property
    def test(self) -> pd.DataFrame:
        """``test.csv`` (row_id, StudyInstanceUID, prediction_type)."""
        if self._test is None:
            raise DatasetError(f"missing file; the test split needs {TEST_CSV}", self.root / TEST_CSV)
        return self._test

    def has_test_labels(self) -> bool:
        return (self.root / TEST_LABELS_CSV).is_file()

    def test_labels(self) -> pd.DataFrame:
        """``test_labels.csv`` (the phantom's answers for the test studies; columns of train.csv)."""
        return read_label_table(self.root / TEST_LABELS_CSV)

    # --- studies ----------------------------------------------------------------------------
    def train_uids(self) -> list[str]:
        return self.train[STUDY_UID].tolist()

    def test_uids(self) -> list[str]:
        """Test studies from ``test.csv``, else the folders of ``test_images/``."""
        if self._test is not None:
            return list(dict.fromkeys(self._test[STUDY_UID]))
        folder = self.root / TEST_IMAGES
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def uids(self, split: str = TRAIN) -> list[str]:
        _check_split(split)
        return self.train_uids() if split == TRAIN else self.test_uids()

    def study_dir(self, uid: str, split: str = TRAIN) -> Path:
        """The folder of one study's ``<N>.dcm`` files.

        Raises:
            DatasetError: the folder does not exist.
        """
        _check_split(split)
        folder = self.root / (TRAIN_IMAGES if split == TRAIN else TEST_IMAGES) / uid
        if not folder.is_dir():
            raise DatasetError(f"no image folder for study {uid}", folder)
        return folder

    def mask_path(self, uid: str) -> Path | None:
        """``segmentations/<UID>.nii`` (or ``.nii.gz``) when it exists, else None."""
        for suffix in (".nii", ".nii.gz"):
            path = self.root / SEGMENTATIONS / f"{uid}{suffix}"
            if path.is_file():
                return path
        return None

    def uids_with_masks(self) -> list[str]:
        """Training studies that have a segmentation, in train.csv order."""
        return [u for u in self.train_uids() if self.mask_path(u) is not None]

    def __repr__(self) -> str:
        return (f"RsnaDataset({str(self.root)!r}: {len(self.train)} train, {len(self.test_uids())} test, "
                f"{len(self.uids_with_masks())} masks)")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# --- cross-validation folds -----------------------------------------------------------------
def pattern_keys(table: pd.DataFrame, min_count: int) -> pd.Series:
    """A stratification key per row: the C1..C7 fracture pattern, merged into coarser keys
    (number of fractured levels, then fractured/normal, then the commonest key of the same kind)
    while a key has fewer than ``min_count`` rows."""
    frac = table[list(VERTEBRAE)].to_numpy().astype(int)
    levels = [
        pd.Series(["".join(map(str, r)) for r in frac], index=table.index),
        pd.Series([f"n{int(r.sum())}" for r in frac], index=table.index),
        pd.Series(["fractured" if r.any() else "normal" for r in frac], index=table.index),
    ]
    key = levels[0].copy()
    for coarser in levels[1:]:
        counts = key.map(key.value_counts())
        key = key.where(counts >= min_count, coarser)
    # Still-rare leftovers join the commonest key of their kind (fractured or normal).
    fractured = levels[2] == "fractured"
    counts = key.map(key.value_counts())
    for is_frac in (True, False):
        rare = (counts < min_count) & (fractured == is_frac)
        common = key[(counts >= min_count) & (fractured == is_frac)]
        if rare.any() and len(common):
            key = key.where(~rare, common.value_counts().index[0])
    return key


def make_folds(table: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Patient-level folds stratified on the fracture pattern.

    A patient is a ``patient_id`` column when the table has one (several studies of one patient stay
    in one fold), else a StudyInstanceUID (RSNA has one study per patient). The result does not
    depend on the table's row order.

    Args:
        table: rows with StudyInstanceUID and C1..C7 (e.g. ``RsnaDataset.train``).
        n_folds: number of folds (>= 2).
        seed: shuffling seed.

    Returns:
        DataFrame[StudyInstanceUID, fold] sorted by StudyInstanceUID, folds 0..n_folds-1.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    missing = [c for c in (STUDY_UID, *VERTEBRAE) if c not in table.columns]
    if missing:
        raise DatasetError(f"cannot make folds: the table lacks columns {missing}")
    df = table.drop_duplicates(STUDY_UID).sort_values(STUDY_UID).reset_index(drop=True)
    group_col = "patient_id" if "patient_id" in df.columns else STUDY_UID
    n_groups = df[group_col].nunique()
    if n_groups < n_folds:
        raise DatasetError(f"cannot make {n_folds} folds from {n_groups} patients")
    key = pattern_keys(df, n_folds)
    if key.value_counts().max() < n_folds:  # too few studies to stratify on anything: plain folds
        key = pd.Series("all", index=key.index)
    with warnings.catch_warnings():
        # "The least populated class has only k members": expected for the merged 'rare' key.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        if group_col == STUDY_UID:
            splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(df)), key)
        else:
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(df)), key, groups=df[group_col])
        fold = np.full(len(df), -1, dtype=np.int64)
        for f, (_, val) in enumerate(splits):
            fold[val] = f
    return pd.DataFrame({STUDY_UID: df[STUDY_UID], FOLD: fold})


def save_folds(folds: pd.DataFrame, path: str | Path) -> None:
    """Write folds as CSV (StudyInstanceUID, fold), atomically."""
    write_text(path, folds[[STUDY_UID, FOLD]].to_csv(index=False))


def load_folds(path: str | Path) -> pd.DataFrame:
    """Read a folds CSV written by :func:`save_folds`.

    Raises:
        DatasetError: missing file, wrong columns, non-integer or negative folds, duplicate studies.
    """
    path = Path(path)
    df = _read_csv(path, (STUDY_UID, FOLD), [STUDY_UID])
    df = _check_numeric(df, [FOLD], path, integer=True)
    if (df[FOLD] < 0).any():
        raise DatasetError("fold numbers must be >= 0", path)
    _check_unique(df, STUDY_UID, path)
    return df


def get_or_make_folds(table: pd.DataFrame, path: str | Path, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Load the folds at ``path`` when the file exists, else make them and save them there.

    A run that trains on ``table`` then always sees the same split, whoever made the file first.

    Raises:
        DatasetError: the saved folds do not cover every study of ``table``, or were made with
            another number of folds.
    """
    path = Path(path)
    if not path.exists():
        folds = make_folds(table, n_folds=n_folds, seed=seed)
        save_folds(folds, path)
        log.info("wrote %d-fold split of %d studies to %s", n_folds, len(folds), path)
        return folds
    folds = load_folds(path)
    missing = sorted(set(table[STUDY_UID]) - set(folds[STUDY_UID]))
    if missing:
        raise DatasetError(f"the saved folds lack {len(missing)} studies of the table (first {missing[0]}); "
                           "delete the file to make new folds", path)
    found = int(folds[FOLD].max()) + 1
    if found != n_folds:
        raise DatasetError(f"the saved folds have {found} folds, {n_folds} were asked for", path)
    return folds


def folds_table(labels: dict[str, dict[str, int]], groups: dict[str, str] | None = None) -> pd.DataFrame:
    """A table :func:`make_folds` reads from in-memory labels ``{uid: {C1..C7: 0|1}}`` (missing levels: 0)
    and, optionally, each study's patient (``groups``: ``{uid: patient}``)."""
    rows = [{STUDY_UID: uid, **{v: int(lab.get(v, 0)) for v in VERTEBRAE}} for uid, lab in labels.items()]
    table = pd.DataFrame(rows, columns=[STUDY_UID, *VERTEBRAE])
    if groups is not None:
        table["patient_id"] = [groups.get(uid, uid) for uid in table[STUDY_UID]]
    return table


def fold_split(uids: Sequence[str], table: pd.DataFrame, path: str | Path | None, *, val_fraction: float,
               seed: int = 0, val_fold: int = 0) -> tuple[list[str], list[str]]:
    """The patient-level (train, validation) split of ``uids`` that every CT trainer uses.

    Validation is fold ``val_fold`` of ``round(1 / val_fraction)`` folds of ``table`` (:func:`make_folds`:
    stratified on the fracture pattern, a patient in one fold), saved at ``path`` and reused from it when it
    exists (:func:`get_or_make_folds`), so stage 1, stage 2 and the baseline of one run, a resumed training
    and a later benchmark all see the same split. Fewer patients than folds: as many folds as patients;
    ``val_fraction`` 0 or a single patient: no validation.

    Args:
        uids: the studies the trainer has (a subset of ``table``'s).
        table: every study of the dataset with C1..C7 (``RsnaDataset.train``, or :func:`folds_table`).
        path: where the folds are saved (``RUN/folds.csv``); ``None``: not saved.
        val_fraction: the share of patients to validate on.
        seed: the folds' shuffling seed.
        val_fold: which fold validates.

    Returns:
        The sorted training and validation StudyInstanceUIDs of ``uids``.

    Raises:
        DatasetError: saved folds that do not cover ``table`` or have another number of folds.
    """
    uids = sorted(set(uids))
    group_col = "patient_id" if "patient_id" in table.columns else STUDY_UID
    n_folds = min(max(2, int(round(1 / val_fraction))) if val_fraction > 0 else 0,
                  int(table[group_col].nunique()))
    if n_folds < 2:
        return uids, []
    folds = (get_or_make_folds(table, path, n_folds=n_folds, seed=seed) if path is not None
             else make_folds(table, n_folds=n_folds, seed=seed))
    held_out = set(folds.loc[folds[FOLD] == val_fold % n_folds, STUDY_UID])
    return [u for u in uids if u not in held_out], [u for u in uids if u in held_out]
