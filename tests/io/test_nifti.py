"""NIfTI masks through the affines: real TotalSegmentator/VerSe files first, then round trips."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cspine.io.dicom import read_series
from cspine.io.nifti import (
    NiftiError,
    load_mask_on_grid,
    lps_affine_from_nifti,
    read_nifti_volume,
    save_mask_nifti,
)
from cspine.io.volume import Volume, volume_from_arrays


@pytest.fixture(scope="module")
def real_series(shared_data: Path) -> tuple[Volume, np.ndarray]:
    folder = shared_data / "real-ct-series"
    volume = read_series(folder / "dicom")
    return volume, load_mask_on_grid(folder / "seg_on_dicom.nii.gz", volume)


def _means(hu: np.ndarray, mask: np.ndarray) -> dict[int, float]:
    return {lab: float(hu[mask == lab].mean()) for lab in (32, 33)}


def test_real_mask_aligns_with_dicom_through_affines(real_series: tuple[Volume, np.ndarray]) -> None:
    volume, mask = real_series
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    means = _means(volume.hu, mask)
    # README: T12 (32) about 267 HU, T11 (33) about 292 HU: bone inside the vertebra labels.
    assert means[32] > 150 and means[33] > 150
    assert abs(means[32] - 267) < 30 and abs(means[33] - 292) < 30
    assert float(volume.hu[mask == 0].mean()) < -500  # background is mostly air


def test_flipped_mapping_would_fail_the_check(real_series: tuple[Volume, np.ndarray]) -> None:
    volume, mask = real_series
    flipped = mask[:, ::-1, :]  # a row flip, as a header-ignoring reader would produce
    means = _means(volume.hu, flipped)
    assert means[32] < 0 and means[33] < 0


def test_general_resampler_equals_axis_aligned_fast_path(shared_data: Path,
                                                         real_series: tuple[Volume, np.ndarray]) -> None:
    volume, mask = real_series
    general = load_mask_on_grid(shared_data / "real-ct-series" / "seg_on_dicom.nii.gz", volume,
                                _force_general=True)
    np.testing.assert_array_equal(general, mask)


def test_oblique_float_verse_mask_loads_on_its_own_grid(shared_data: Path) -> None:
    path = shared_data / "vertebra-masks" / "verse004_vertebrae_oblique.nii.gz"
    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj)
    assert raw.dtype == np.float64
    # The mask's own grid as a Volume: (k, j, i) order, LPS affine.
    grid = Volume(np.zeros(raw.shape[::-1], np.int16), lps_affine_from_nifti(img.affine))
    mask = load_mask_on_grid(path, grid)
    assert np.issubdtype(mask.dtype, np.integer)
    assert set(np.unique(mask)) - {0} == set(range(16, 25))
    np.testing.assert_array_equal(mask, np.rint(raw).astype(np.uint8).transpose(2, 1, 0))


def test_oblique_mask_resampled_onto_axial_grid_keeps_vertebra_volumes(shared_data: Path) -> None:
    path = shared_data / "vertebra-masks" / "verse004_vertebrae_oblique.nii.gz"
    img = nib.load(str(path))
    raw = np.rint(np.asanyarray(img.dataobj)).astype(np.uint8)
    # An axis-aligned 2 mm LPS grid covering the mask's bounding box in world space.
    corners = np.array([[i, j, k, 1] for i in (0, raw.shape[0]) for j in (0, raw.shape[1])
                        for k in (0, raw.shape[2])], float) @ img.affine.T
    lps = corners[:, :3] * [-1, -1, 1]
    lo, hi = lps.min(0), lps.max(0)
    shape = tuple(int(v) for v in np.ceil((hi - lo)[::-1] / 2.0))  # (z, y, x)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0, 0, 2.0], [0, 2.0, 0], [2.0, 0, 0]])
    affine[:3, 3] = lo
    mask = load_mask_on_grid(path, Volume(np.zeros(shape, np.int16), affine))
    voxel_mm3 = abs(np.linalg.det(img.affine[:3, :3]))
    for lab in range(16, 25):
        truth = (raw == lab).sum() * voxel_mm3
        got = (mask == lab).sum() * 8.0
        assert abs(got - truth) / truth < 0.1, lab


def test_abdomen_vertebrae_align_with_ct(shared_data: Path) -> None:
    folder = shared_data / "vertebra-masks"
    volume = read_nifti_volume(folder / "abdomen_ct.nii.gz")
    assert volume.hu.dtype == np.int16 and volume.shape == (112, 101, 122)
    assert np.allclose(volume.spacing, 3.0)
    assert "PatientName" not in volume.meta
    mask = load_mask_on_grid(folder / "abdomen_vertebrae.nii.gz", volume)
    assert set(np.unique(mask)) - {0} == set(range(26, 34))
    assert float(volume.hu[mask > 0].mean()) > 100
    for lab in range(26, 34):
        assert float(volume.hu[mask == lab].mean()) > 100, lab
    assert float(np.percentile(volume.hu[mask == 0], 10)) < -900  # air outside the body
    # LPS affine: the NIfTI RAS x/y columns negated and the axes reversed.
    ras = nib.load(str(folder / "abdomen_ct.nii.gz")).affine
    np.testing.assert_allclose(volume.index_to_world([0, 0, 0]), ras[:3, 3] * [-1, -1, 1])
    np.testing.assert_allclose(volume.index_to_world([1, 0, 0]) - volume.index_to_world([0, 0, 0]),
                               ras[:3, 2] * [-1, -1, 1])


def _labels(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 8, size=shape).astype(np.uint8)


def _oblique_volume(shape: tuple[int, int, int]) -> Volume:
    """A volume whose affine is rotated, anisotropic, with reversed slice order and an offset."""
    th = np.deg2rad(17.0)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    lin = rot @ np.array([[0, 0, 0.7], [0, -0.8, 0], [2.5, 0, 0]])  # z goes up, y flipped
    affine = np.eye(4)
    affine[:3, :3] = lin
    affine[:3, 3] = [-101.3, 55.2, -733.0]
    return Volume(np.zeros(shape, np.int16), affine)


@pytest.mark.parametrize("order", ["sagittal", "axial"])
@pytest.mark.parametrize("kind", ["canonical", "oblique"])
def test_save_load_round_trip_is_exact(tmp_path: Path, order: str, kind: str) -> None:
    shape = (9, 14, 11)
    volume = (volume_from_arrays(np.zeros(shape, np.int16), (2.0, 0.6, 0.6)) if kind == "canonical"
              else _oblique_volume(shape))
    labels = _labels(shape)
    out = tmp_path / f"m_{order}.nii.gz"
    save_mask_nifti(out, labels, volume, order=order)
    back = load_mask_on_grid(out, volume)
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_array_equal(load_mask_on_grid(out, volume, _force_general=True), labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind


def test_sagittal_file_is_sagittal_and_flipped_when_header_ignored(tmp_path: Path) -> None:
    shape = (6, 8, 10)
    volume = volume_from_arrays(np.zeros(shape, np.int16), (2.0, 0.5, 0.5))
    labels = _labels(shape, seed=3)
    save_mask_nifti(tmp_path / "s.nii", labels, volume)
    img = nib.load(str(tmp_path / "s.nii"))
    assert img.shape == (8, 6, 10)  # (y, z, x): sagittal slices along the third axis
    assert nib.aff2axcodes(img.affine)[2] in ("L", "R")
    naive = np.asanyarray(img.dataobj).transpose(1, 0, 2)
    np.testing.assert_array_equal(naive, labels[::-1, :, ::-1])


def test_mask_smaller_than_volume_pads_with_zero(tmp_path: Path) -> None:
    small = volume_from_arrays(np.zeros((4, 5, 6), np.int16), (1.0, 1.0, 1.0))
    labels = np.full((4, 5, 6), 7, np.uint8)
    save_mask_nifti(tmp_path / "s.nii.gz", labels, small)
    big = Volume(np.zeros((6, 7, 8), np.int16), small.affine.copy())
    big.affine[:3, 3] = small.index_to_world([-1, -1, -1])
    out = load_mask_on_grid(tmp_path / "s.nii.gz", big)
    assert out[1:5, 1:6, 1:7].min() == 7 and out.sum() == 7 * labels.size


def test_float_labels_are_rounded_and_large_labels_kept(tmp_path: Path) -> None:
    data = np.zeros((4, 3, 2), np.float32)
    data[0, 0, 0], data[1, 1, 1] = 2.9999, 300.0001
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "f.nii"))
    grid = Volume(np.zeros((2, 3, 4), np.int16), lps_affine_from_nifti(np.eye(4)))
    out = load_mask_on_grid(tmp_path / "f.nii", grid)
    assert out.dtype == np.uint16
    assert out[0, 0, 0] == 3 and out[1, 1, 1] == 300


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    volume = volume_from_arrays(np.zeros((2, 3, 4), np.int16))
    with pytest.raises(NiftiError, match="not found"):
        load_mask_on_grid(tmp_path / "missing.nii.gz", volume)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(NiftiError, match="junk.nii.gz"):
        load_mask_on_grid(tmp_path / "junk.nii.gz", volume)
    nib.save(nib.Nifti1Image(-np.ones((4, 3, 2), np.int16), np.eye(4)), str(tmp_path / "neg.nii"))
    with pytest.raises(NiftiError, match="0..65535"):
        load_mask_on_grid(tmp_path / "neg.nii", volume)
    with pytest.raises(ValueError, match="shape"):
        save_mask_nifti(tmp_path / "x.nii.gz", np.zeros((1, 1, 1), np.uint8), volume)
    with pytest.raises(ValueError, match=".nii"):
        save_mask_nifti(tmp_path / "x.npy", np.zeros((2, 3, 4), np.uint8), volume)
