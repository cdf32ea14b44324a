"""Training-mask checks on real files: an aligned mask reports bone HU, a flipped one is flagged."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cspine.errors import NiftiError
from cspine.io.nifti import grid_mismatch, read_label_file
from cspine.io.study import load_study
from cspine.preprocess.mask_check import check_training_mask, mask_report, report_warning


@pytest.fixture(scope="module")
def real(shared_data: Path):
    return load_study(shared_data / "real-ct-series" / "dicom", workers=1), shared_data / "real-ct-series"


def _relabelled(src: Path, out: Path, flip_rows: bool = False) -> Path:
    """TotalSegmentator's T12 (32) and T11 (33) as RSNA labels 19 and 18, everything else background."""
    img = nib.load(str(src))
    data = np.asanyarray(img.dataobj)
    labels = np.where(data == 32, 19, np.where(data == 33, 18, 0)).astype(np.uint8)
    if flip_rows:
        labels = labels[:, ::-1]
    nib.save(nib.Nifti1Image(labels, img.affine), str(out))
    return out


def test_real_aligned_mask_reports_bone_hu(real, tmp_path: Path) -> None:
    volume, folder = real
    path = _relabelled(folder / "seg_on_dicom.nii.gz", tmp_path / "m.nii.gz")
    on_grid, report = check_training_mask(path, volume)
    assert on_grid.shape == volume.shape and on_grid.dtype == np.uint8
    assert report["levels"] == ["T11", "T12"] and report["misaligned"] == []
    assert report["mean_hu"]["T12"] == pytest.approx(267, abs=15)  # data README: about 267 and 292
    assert report["mean_hu"]["T11"] == pytest.approx(292, abs=15)
    assert report["voxels"]["T12"] == int((on_grid == 19).sum()) > 1000
    assert report["missing_cervical"] == ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    assert report_warning("u", report) is None


def test_real_flipped_mask_is_flagged_as_misaligned(real, tmp_path: Path) -> None:
    volume, folder = real
    path = _relabelled(folder / "seg_on_dicom.nii.gz", tmp_path / "m.nii.gz", flip_rows=True)
    _, report = check_training_mask(path, volume)
    assert set(report["misaligned"]) == {"T11", "T12"}
    line = report_warning("1.2.3", report)
    assert line is not None and "study 1.2.3: mask m.nii.gz" in line and "likely misaligned" in line


def test_totalsegmentator_labels_are_refused(real) -> None:
    volume, folder = real
    with pytest.raises(NiftiError, match=r"seg_on_dicom.nii.gz: labels outside 0..19 .*label 20, 32, 33, "):
        check_training_mask(folder / "seg_on_dicom.nii.gz", volume)


def test_grid_mismatch_on_real_files(real, shared_data: Path) -> None:
    volume, folder = real
    labels, affine = read_label_file(folder / "seg_on_dicom.nii.gz")
    assert grid_mismatch(affine, labels.shape, volume) is None
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, 2] * 1.0  # one slice along k
    assert "slice axis" in grid_mismatch(shifted, labels.shape, volume)
    oblique, oaff = read_label_file(shared_data / "vertebra-masks" / "verse004_vertebrae_oblique.nii.gz")
    assert "rotated by" in grid_mismatch(oaff, oblique.shape, volume)


def test_nan_and_non_integer_masks_are_errors(tmp_path: Path) -> None:
    data = np.zeros((4, 3, 2), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "n.nii"))
    with pytest.raises(NiftiError, match=r"n.nii: 1 NaN"):
        read_label_file(tmp_path / "n.nii")
    data[1, 1, 1] = 2.5
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "f.nii"))
    with pytest.raises(NiftiError, match=r"f.nii: non-integer label value 2.5"):
        read_label_file(tmp_path / "f.nii")


def test_mask_report_sums_in_chunks_exactly() -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 20, size=(40, 50, 60)).astype(np.uint8)
    hu = rng.integers(-1000, 2000, size=mask.shape).astype(np.int16)
    report = mask_report(mask, hu)
    assert len(report["levels"]) == 19
    for lab, name in ((1, "C1"), (19, "T12")):
        assert report["voxels"][name] == int((mask == lab).sum())
        assert report["mean_hu"][name] == pytest.approx(float(hu[mask == lab].mean()), abs=0.05)
