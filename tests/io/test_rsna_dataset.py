"""RSNA 2022 layout reader: schema errors, broken studies, masks, folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _rsna_fixture import train_table, write_rsna_layout
from cspine.errors import DatasetError
from cspine.io.rsna import RsnaDataset, load_folds, make_folds, pattern_keys, save_folds
from cspine.labels import RSNA_BROKEN_STUDIES, STUDY_UID, TARGETS, VERTEBRAE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_rsna_layout(tmp_path / "rsna", n_train=4, n_test=2, n_masks=2, images=False)
    for uid in pd.read_csv(tmp_path / "rsna" / "train.csv", dtype=str)[STUDY_UID]:
        (tmp_path / "rsna" / "train_images" / uid).mkdir()
    return tmp_path / "rsna"


def _touch_mask(root: Path, uid: str, suffix: str = ".nii") -> None:
    (root / "segmentations" / f"{uid}{suffix}").write_bytes(b"")


def test_valid_layout_and_accessors(root: Path) -> None:
    train = pd.read_csv(root / "train.csv", dtype={STUDY_UID: str})
    uids = train[STUDY_UID].tolist()
    _touch_mask(root, uids[0])
    _touch_mask(root, uids[2], ".nii.gz")
    ds = RsnaDataset(root)
    assert ds.train_uids() == uids
    assert ds.train[list(VERTEBRAE)].dtypes.map(lambda d: d == np.int64).all()
    assert ds.study_dir(uids[1]) == root / "train_images" / uids[1]
    assert ds.mask_path(uids[1]) is None
    assert ds.mask_path(uids[2]) == root / "segmentations" / f"{uids[2]}.nii.gz"
    assert ds.uids_with_masks() == [uids[0], uids[2]]
    assert len(ds.test) == 2 * len(TARGETS) and len(ds.test_uids()) == 2
    assert ds.has_test_labels() and ds.test_labels()[STUDY_UID].tolist() == ds.test_uids()
    assert ds.boxes["slice_number"].dtype == np.int64 and ds.boxes["x"].dtype == np.float64
    with pytest.raises(DatasetError, match="no image folder"):
        ds.study_dir(ds.test_uids()[0], split="test")


def _edit_csv(path: Path, fn) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


@pytest.mark.parametrize(("csv", "edit", "message"), [
    ("train.csv", lambda d: d.drop(columns=["C3"]), r"missing \['C3'\]"),
    ("train.csv", lambda d: d.assign(age="40"), r"unexpected \['age'\]"),
    ("train.csv", lambda d: d.assign(C2="2"), "'C2' must hold 0 or 1, found '2'"),
    ("train.csv", lambda d: d.assign(patient_overall="yes"), "'patient_overall' must hold 0 or 1"),
    ("train.csv", lambda d: pd.concat([d, d.iloc[:1]]), "appears more than once"),
    ("train.csv", lambda d: d.assign(StudyInstanceUID=""), "empty value"),
    ("train_bounding_boxes.csv", lambda d: d.assign(x="left"), "'x' must hold a number"),
    ("train_bounding_boxes.csv", lambda d: d.assign(slice_number="3.5"),
     "'slice_number' must hold an integer"),
    ("test.csv", lambda d: d.assign(row_id=d["row_id"].str.replace("_", "-")), "row_id must be"),
    ("test.csv", lambda d: d.assign(prediction_type="C8"), "prediction_type must be one of"),
    ("sample_submission.csv", lambda d: d.rename(columns={"fractured": "p"}), "missing"),
])
def test_schema_errors_name_file_and_problem(root: Path, csv: str, edit, message: str) -> None:
    if csv == "train_bounding_boxes.csv":  # make sure there are rows to corrupt
        uid = pd.read_csv(root / "train.csv", dtype=str)[STUDY_UID][0]
        pd.DataFrame([{STUDY_UID: uid, "x": 1, "y": 2, "width": 3, "height": 4, "slice_number": 5}]).to_csv(
            root / csv, index=False)
    _edit_csv(root / csv, edit)
    with pytest.raises(DatasetError, match=message) as err:
        RsnaDataset(root)
    assert csv in str(err.value)


def test_missing_files_and_folders(root: Path, tmp_path: Path) -> None:
    (root / "train_bounding_boxes.csv").unlink()
    with pytest.raises(DatasetError, match="missing file.*train_bounding_boxes.csv"):
        RsnaDataset(root)
    (root / "train_images").rename(root / "images")
    with pytest.raises(DatasetError, match="train_images"):
        RsnaDataset(root)
    with pytest.raises(DatasetError, match="not a folder"):
        RsnaDataset(tmp_path / "nowhere")


def test_test_split_optional(root: Path) -> None:
    (root / "test.csv").unlink()
    (root / "test_labels.csv").unlink()
    (root / "test_images" / "1.2.3").mkdir()
    ds = RsnaDataset(root)
    assert ds.test_uids() == ["1.2.3"] and not ds.has_test_labels()
    with pytest.raises(DatasetError, match="test.csv"):
        _ = ds.test


def test_broken_studies_are_skipped_with_a_warning(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = sorted(RSNA_BROKEN_STUDIES)
    def add(d: pd.DataFrame) -> pd.DataFrame:
        extra = d.iloc[:2].copy()
        extra[STUDY_UID] = broken
        return pd.concat([d, extra])
    _edit_csv(root / "train.csv", add)
    with pytest.warns(UserWarning, match="known-broken"):
        ds = RsnaDataset(root)
    assert not set(ds.train_uids()) & RSNA_BROKEN_STUDIES
    assert len(ds.train) == 4
    assert any(b in caplog.text for b in broken)


def _big_table(n: int = 200, seed: int = 1) -> pd.DataFrame:
    return train_table(n, seed)


def test_folds_cover_every_study_once_and_are_deterministic() -> None:
    table = _big_table()
    folds = make_folds(table, n_folds=5, seed=0)
    assert sorted(folds[STUDY_UID]) == sorted(table[STUDY_UID]) and folds[STUDY_UID].is_unique
    assert set(folds["fold"]) == set(range(5))
    again = make_folds(table.sample(frac=1.0, random_state=3), n_folds=5, seed=0)  # row order irrelevant
    pd.testing.assert_frame_equal(folds, again)
    other = make_folds(table, n_folds=5, seed=1)
    assert not folds["fold"].equals(other["fold"])
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1


def test_folds_are_stratified_on_the_fracture_pattern() -> None:
    table = _big_table()
    folds = make_folds(table, n_folds=5, seed=0).merge(table, on=STUDY_UID)
    keys = pattern_keys(folds, 5)
    assert keys.value_counts().min() >= 5  # rare patterns were merged into coarser keys
    # Every pattern key is spread evenly: per key, fold counts differ by at most one.
    spread = pd.crosstab(keys, folds["fold"])
    assert (spread.max(axis=1) - spread.min(axis=1)).max() <= 1
    per_fold = folds.groupby("fold")["patient_overall"].sum()
    assert per_fold.max() - per_fold.min() <= 2


def test_folds_keep_a_patient_in_one_fold() -> None:
    table = _big_table(120)
    table["patient_id"] = [f"p{i // 3}" for i in range(len(table))]  # three studies per patient
    folds = make_folds(table, n_folds=4, seed=0).merge(table[[STUDY_UID, "patient_id"]], on=STUDY_UID)
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    assert set(folds["fold"]) == set(range(4))


def test_folds_save_load_round_trip(tmp_path: Path) -> None:
    folds = make_folds(_big_table(30), n_folds=3, seed=7)
    save_folds(folds, tmp_path / "folds.csv")
    pd.testing.assert_frame_equal(load_folds(tmp_path / "folds.csv"), folds)
    (tmp_path / "bad.csv").write_text("StudyInstanceUID,fold\n1.2,x\n")
    with pytest.raises(DatasetError, match="fold"):
        load_folds(tmp_path / "bad.csv")
    with pytest.raises(DatasetError, match="cannot make 5 folds from 3"):
        make_folds(_big_table(3), n_folds=5)


def test_get_or_make_folds_reuses_the_file(tmp_path: Path) -> None:
    from cspine.io.rsna import get_or_make_folds

    table = _big_table(40)
    first = get_or_make_folds(table, tmp_path / "folds.csv", n_folds=4, seed=0)
    again = get_or_make_folds(table, tmp_path / "folds.csv", n_folds=4, seed=99)  # seed ignored: file wins
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(DatasetError, match="4 folds, 5"):
        get_or_make_folds(table, tmp_path / "folds.csv", n_folds=5)
    with pytest.raises(DatasetError, match="lack 1 studies"):
        get_or_make_folds(_big_table(41), tmp_path / "folds.csv", n_folds=4)


def test_folds_of_a_tiny_table_and_the_trainers_split(tmp_path: Path) -> None:
    from cspine.io.rsna import fold_split

    # 2 fractured + 3 normal studies: too few of either kind to stratify 5 folds, so plain folds
    table = _big_table(5, seed=3)
    table.loc[:, list(VERTEBRAE)] = 0
    table.loc[:1, "C2"] = 1
    folds = make_folds(table, n_folds=5, seed=0)
    assert sorted(folds["fold"]) == [0, 1, 2, 3, 4]
    # the trainers' split: fold 0 validates, saved and reused; fewer patients than folds: one each
    uids = table[STUDY_UID].tolist()
    train, val = fold_split(uids, table, tmp_path / "folds.csv", val_fraction=0.1, seed=0)
    assert len(val) == 1 and sorted(train + val) == sorted(uids)
    assert load_folds(tmp_path / "folds.csv")["fold"].max() == 4
    assert fold_split(uids[:1], table.iloc[:1], None, val_fraction=0.5) == (uids[:1], [])
