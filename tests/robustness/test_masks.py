"""Training masks are checked, not trusted: `cspine ct prepare` refuses (or, when asked, leaves out) a bad
mask, names the file and the problem, reports every mask it caches, and changes none of the user's files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from _rsna_fixture import FixtureInfo, write_dicom_study, write_rsna_layout
from cspine.cli.main import app
from cspine.io.nifti import save_mask_nifti
from cspine.io.volume import Volume

SHAPE = (6, 12, 10)


@pytest.fixture
def rsna(tmp_path: Path) -> FixtureInfo:
    return write_rsna_layout(tmp_path / "root", n_train=2, n_test=0, shape=SHAPE, n_masks=1)


def _mask_path(info: FixtureInfo) -> Path:
    return info.root / "segmentations" / f"{info.mask_uids[0]}.nii"


def _nan(info: FixtureInfo) -> None:
    data = info.labels[info.mask_uids[0]].transpose(2, 1, 0).astype(np.float32)
    data[3, 4, 2] = np.nan
    affine = nib.load(str(_mask_path(info))).affine
    nib.save(nib.Nifti1Image(data, affine), str(_mask_path(info)))


def _labels(value: int) -> Callable[[FixtureInfo], None]:
    def edit(info: FixtureInfo) -> None:
        labels = info.labels[info.mask_uids[0]].copy()
        labels[2, 5, 5] = value
        uid = info.mask_uids[0]
        save_mask_nifti(_mask_path(info), labels, Volume(info.hu[uid], info.affine[uid]))
    return edit


def _empty(info: FixtureInfo) -> None:
    uid = info.mask_uids[0]
    save_mask_nifti(_mask_path(info), np.zeros(SHAPE, np.uint8), Volume(info.hu[uid], info.affine[uid]))


def _other_grid(info: FixtureInfo) -> None:
    """A mask of another size (one slice fewer) with the CT's voxel size and origin: mapped anyway before."""
    uid = info.mask_uids[0]
    vol = Volume(info.hu[uid][:-1], info.affine[uid])
    save_mask_nifti(_mask_path(info), info.labels[uid][:-1], vol)


def _lost_header(info: FixtureInfo) -> None:
    data = np.asanyarray(nib.load(str(_mask_path(info))).dataobj)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), np.eye(4)), str(_mask_path(info)))


BAD_MASKS = [
    (_nan, "1 NaN (not-a-number) voxel value"),
    (_labels(25), "labels outside 0..19 (1..7 = C1..C7, 8..19 = T1..T12): 1 voxel(s) with label 25"),
    (_empty, "no vertebra: every voxel is 0"),
    (_other_grid, "the mask's grid does not match the CT's: along the CT's slice axis"),
    (_lost_header, "the mask's grid does not match the CT's"),
]


def _prepare(info: FixtureInfo, cache: Path, *extra: str):
    return CliRunner().invoke(app, ["ct", "prepare", "--data", str(info.root), "--cache", str(cache), *extra])


@pytest.mark.parametrize(("edit", "problem"), BAD_MASKS, ids=["nan", "label25", "empty", "shape", "affine"])
def test_bad_mask_fails_its_study_naming_file_and_problem(rsna: FixtureInfo, tmp_path: Path, snapshot,
                                                         edit, problem: str) -> None:
    edit(rsna)
    snap = snapshot(rsna.root)
    result = _prepare(rsna, tmp_path / "c")
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert f"{_mask_path(rsna)}: " in out and problem in out, out
    snap.assert_unchanged(allow_new=False)
    uid = rsna.mask_uids[0]
    assert not (tmp_path / "c" / uid / "done.json").exists()  # nothing half-cached
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert problem in summary["failed"][uid] and uid not in summary["mask_reports"]
    other = rsna.train_uids[1]
    assert (tmp_path / "c" / other / "done.json").exists()  # the run went on


@pytest.mark.parametrize(("edit", "problem"), BAD_MASKS[:3], ids=["nan", "label25", "empty"])
def test_bad_mask_left_out_when_asked_and_listed(rsna: FixtureInfo, tmp_path: Path, snapshot, edit,
                                                 problem: str) -> None:
    edit(rsna)
    snap = snapshot(rsna.root)
    result = _prepare(rsna, tmp_path / "c", "--bad-masks", "exclude")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    uid = rsna.mask_uids[0]
    assert f"mask left out study {uid}" in out and str(_mask_path(rsna)) in out and problem in out
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert problem in summary["masks_excluded"][uid]
    assert (tmp_path / "c" / uid / "done.json").exists() and not (tmp_path / "c" / uid / "mask.npy").exists()
    snap.assert_unchanged(allow_new=False)


def test_good_mask_report_holds_levels_voxels_and_mean_hu(rsna: FixtureInfo, tmp_path: Path) -> None:
    result = _prepare(rsna, tmp_path / "c")
    assert result.exit_code == 0, result.output
    uid = rsna.mask_uids[0]
    report = json.loads((tmp_path / "c" / "summary.json").read_text())["mask_reports"][uid]
    labels, hu = rsna.labels[uid], rsna.hu[uid]
    present = [lab for lab in range(1, 8) if (labels == lab).any()]
    assert report["levels"] == [f"C{lab}" for lab in present]
    for lab in present:
        assert report["voxels"][f"C{lab}"] == int((labels == lab).sum())
        assert report["mean_hu"][f"C{lab}"] == pytest.approx(float(hu[labels == lab].mean()), abs=0.05)
    again = _prepare(rsna, tmp_path / "c")  # a rerun skips the study but keeps its report
    assert again.exit_code == 0
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["mask_reports"][uid] == report


def test_misaligned_mask_is_flagged_with_a_warning_line(rsna: FixtureInfo, tmp_path: Path, snapshot) -> None:
    uid = rsna.mask_uids[0]
    hu = np.full(SHAPE, -900, np.int16)  # air ...
    hu[:, 2:6, 2:6] = 700  # ... and a column of bone
    folder = rsna.root / "train_images" / uid
    for f in folder.iterdir():
        f.unlink()
    affine = write_dicom_study(folder, hu, uid)
    labels = np.zeros(SHAPE, np.uint8)
    labels[:3, 2:6, 2:6] = 2  # C2 on the bone
    labels[3:, 7:11, 5:9] = 3  # C3 beside it, in the air: a shifted mask
    save_mask_nifti(_mask_path(rsna), labels, Volume(hu, affine))
    snap = snapshot(rsna.root)
    result = _prepare(rsna, tmp_path / "c")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert f"warning study {uid}: mask {_mask_path(rsna).name}: mean HU under C3 -900 HU is below 150" in out
    assert "likely misaligned" in out and "C2" not in out.split("mean HU under")[1].split("is below")[0]
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["mask_reports"][uid]["misaligned"] == ["C3"]
    assert summary["mask_reports"][uid]["mean_hu"] == {"C2": 700.0, "C3": -900.0}
    assert any(uid in w for w in summary["mask_warnings"])
    snap.assert_unchanged(allow_new=False)
