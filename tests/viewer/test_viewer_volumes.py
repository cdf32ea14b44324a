"""The viewer's NIfTI files: the right voxels at the right place in the world, and Grad-CAM put back
where the crop came from."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from cspine.io.nifti import RAS_TO_LPS, load_mask_on_grid, read_nifti_volume
from cspine.io.orient import to_canonical
from cspine.io.study import load_study
from cspine.viewer.volumes import (
    CT_FILE,
    HEAT_FILE,
    LABELS_FILE,
    VIEW_JSON,
    _chosen_slices,
    paint_crop_heat,
    read_view,
    write_view_volumes,
)


def test_files_read_back_onto_the_volume(viewer_data, tmp_path):
    volume = load_study(viewer_data.study)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, volume.shape).astype(np.uint8)
    heat = rng.random(volume.shape).astype(np.float32)
    files = write_view_volumes(volume, labels, tmp_path / "v", heat, {"note": "test"})
    ct = to_canonical(read_nifti_volume(files.ct))
    np.testing.assert_array_equal(ct.hu, volume.hu)
    np.testing.assert_allclose(ct.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(load_mask_on_grid(files.labels, volume), labels)
    h = np.asarray(nib.load(files.heat).dataobj).T
    np.testing.assert_array_equal(h, np.rint(heat * 255).astype(np.uint8))
    meta = read_view(tmp_path / "v")
    assert meta["files"] == {"ct": CT_FILE, "labels": LABELS_FILE, "heat": HEAT_FILE}
    assert meta["note"] == "test"
    assert nib.load(files.labels).header.get_intent()[0] == "label"
    header = nib.load(files.ct).header
    assert (float(header["cal_min"]), float(header["cal_max"])) == (-500.0, 1300.0)  # the bone window
    # affine_ras takes a canonical voxel (as i, j, k = x, y, z) to where the volume says it lies (RAS)
    zyx = np.array([5.0, 17.0, 40.0])
    ras = np.asarray(meta["affine_ras"]) @ np.array([zyx[2], zyx[1], zyx[0], 1.0])
    lps = volume.index_to_world(zyx)
    np.testing.assert_allclose(ras[:3], (RAS_TO_LPS[:3, :3] @ lps), atol=1e-3)


def test_incomplete_folder_is_not_ready(viewer_data, tmp_path):
    volume = load_study(viewer_data.study)
    write_view_volumes(volume, np.zeros(volume.shape, np.uint8), tmp_path / "v")
    assert read_view(tmp_path / "v") is not None
    with pytest.raises(ValueError, match="shape"):
        write_view_volumes(volume, np.zeros((2, 2, 2), np.uint8), tmp_path / "v")
    assert read_view(tmp_path / "v") is None  # a failed rewrite leaves no view.json behind
    assert not (tmp_path / "v" / VIEW_JSON).exists()


def test_real_ct_lands_on_its_real_segmentation(shared_data, tmp_path):
    """The real series with its TotalSegmentator mask (written by another tool): our ct.nii.gz, mapped
    through both files' affines with nibabel alone, puts bone HU inside the vertebrae."""
    series = shared_data / "real-ct-series"
    volume = load_study(series / "dicom")
    files = write_view_volumes(volume, np.zeros(volume.shape, np.uint8), tmp_path / "v")
    ct, seg = nib.load(files.ct), nib.load(series / "seg_on_dicom.nii.gz")
    hu = np.asarray(ct.dataobj)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    inv = np.linalg.inv(seg.affine)
    sijk = np.floor(world @ inv[:3, :3].T + inv[:3, 3] + 0.5).astype(int)
    inside = np.all((sijk >= 0) & (sijk < np.array(seg.shape)), axis=1)
    labels = np.zeros(len(ijk), np.int32)
    data = np.asarray(seg.dataobj)
    labels[inside] = data[tuple(sijk[inside].T)]
    flat = hu.reshape(-1)
    assert flat[labels == 32].mean() == pytest.approx(267, abs=25)  # T12
    assert flat[labels == 33].mean() == pytest.approx(292, abs=25)  # T11


def test_crop_heat_goes_back_to_its_box_and_slices():
    heat = np.zeros((20, 30, 30), np.float32)
    crop = SimpleNamespace(box=(-4, 12, 20, 36), slice_indices=np.array([4, 8, 12, 16]), z_range=(3, 18))
    paint_crop_heat(heat, crop, 1, np.ones((8, 8), np.float32))
    z, y, x = np.nonzero(heat)
    assert (z.min(), z.max()) == (6, 9)  # half-way to the neighbouring crop slices (4 and 12)
    assert (y.min(), y.max(), x.min(), x.max()) == (0, 11, 20, 29)  # the box, clipped to the volume
    assert heat[7, 5, 25] == pytest.approx(1.0)
    paint_crop_heat(heat, crop, 0, np.full((8, 8), 0.5, np.float32))
    assert heat[3:6].max() == pytest.approx(0.5) and heat[7, 5, 25] == pytest.approx(1.0)  # maximum, not sum
    paint_crop_heat(heat, crop, 3, np.ones((8, 8), np.float32))
    assert heat[14:18].max() == 1.0 and heat[18:].max() == 0.0  # the last slice reaches the crop's end


def test_most_attended_slices_are_explained():
    assert _chosen_slices([0.05, 0.4, 0.05, 0.3, 0.2], 5, 2) == [1, 3]
    assert _chosen_slices([0.2] * 5, 5, 8) == [0, 1, 2, 3, 4]
    assert _chosen_slices(None, 24, 8) == [0, 3, 7, 10, 13, 16, 20, 23]


def test_gradcam_heat_covers_the_flagged_vertebra_only(viewer_data, tiny_model):
    from cspine.ct.cls.crops import extract_crops
    from cspine.ct.seg.predict import segment
    from cspine.viewer.volumes import gradcam_heat

    volume = load_study(viewer_data.study)
    seg = segment(volume, tiny_model.seg)
    heat, used = gradcam_heat(volume, seg, tiny_model.cls, ["C3"], {"C3": [0.1, 0.1, 0.5, 0.1, 0.1, 0.1]})
    assert used == {"C3": [19]}  # the one slice above uniform attention (crop slice 2 = volume slice 19)
    z = np.nonzero(heat.max(axis=(1, 2)))[0]
    assert heat.max() == pytest.approx(1.0) and (z.min(), z.max()) == (14, 23)  # half-way to 9 and 28
    crops = extract_crops(volume, seg, tiny_model.cls.cfg)
    again, _ = gradcam_heat(volume, seg, tiny_model.cls, ["C3"], {"C3": [0.1, 0.1, 0.5, 0.1, 0.1, 0.1]},
                            crops=crops)
    np.testing.assert_allclose(again, heat)
    none, used = gradcam_heat(volume, seg, tiny_model.cls, ["C1"])  # stage 1 found no C1
    assert used == {} and none.max() == 0.0
