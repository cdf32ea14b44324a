"""A canonical label map mapped back onto the source DICOM images' pixel grids: the real CT series with
its real mask, the phantom in both patient positions, and an in-plane rotated / oblique image."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from cspine.io.study import load_study
from cspine.io.volume import volume_from_arrays
from cspine.outputs.source_grid import to_source_grid
from cspine.outputs.source_series import read_source_series, source_files_of


def _mask_on_raw_grid(nifti_path, datasets) -> np.ndarray:
    """The NIfTI mask sampled at each DICOM pixel centre, straight through nibabel's affine (no cspine)."""
    import nibabel as nib

    img = nib.load(str(nifti_path))
    data = np.asarray(img.dataobj)
    inv = np.linalg.inv(img.affine)
    frames = []
    for ds in datasets:
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        r, c = np.mgrid[0:ds.Rows, 0:ds.Columns]
        lps = ipp + c[..., None] * dc * iop[:3] + r[..., None] * dr * iop[3:]
        ras = lps * np.array([-1.0, -1.0, 1.0])
        ijk = np.rint(ras @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        frames.append(data[ijk[..., 0], ijk[..., 1], ijk[..., 2]])
    return np.stack(frames)


def test_real_series_and_mask_back_on_the_dicom_grid(shared_data):
    from cspine.io.nifti import load_mask_on_grid

    root = shared_data / "real-ct-series"
    volume = load_study(root / "dicom", workers=1)
    assert volume.meta["reorientation"]["flip"][0]  # stacking order reversed: a real mapping to undo
    canonical_mask = load_mask_on_grid(root / "seg_on_dicom.nii.gz", volume)
    source = read_source_series(source_files_of(volume))
    on_source = to_source_grid(canonical_mask, volume, source.datasets)
    expected = _mask_on_raw_grid(root / "seg_on_dicom.nii.gz", source.datasets)
    assert on_source.shape == (20, 512, 512)
    np.testing.assert_array_equal(on_source, expected)
    general = to_source_grid(canonical_mask, volume, source.datasets, _force_general=True)
    np.testing.assert_array_equal(general, on_source)
    # Independent of any geometry code: the raw stored pixels of each file under the mapped labels.
    hu = np.stack([pydicom.dcmread(p).pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
                   for p, d in zip(source.paths, source.datasets, strict=True)])
    assert hu[on_source == 32].mean() == pytest.approx(267, abs=25)  # T12
    assert hu[on_source == 33].mean() == pytest.approx(292, abs=25)  # T11
    assert hu[on_source == 0].mean() < -600


def test_phantom_back_on_its_stored_grid(phantom_study):
    volume = load_study(phantom_study.folder, workers=1)
    np.testing.assert_array_equal(volume.shape, phantom_study.labels.shape)
    files = source_files_of(volume)
    assert [f.resolve() for f in files] == [p.resolve() for p in phantom_study.paths]
    source = read_source_series(files)
    on_source = to_source_grid(phantom_study.labels, volume, source.datasets)
    for k in range(len(files)):
        np.testing.assert_array_equal(on_source[k], phantom_study.expected_frame(k))


def _image(iop, ipp, rows=2, cols=3, spacing=(1.0, 1.0)) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.PixelSpacing = rows, cols, list(spacing)
    ds.ImageOrientationPatient, ds.ImagePositionPatient = list(iop), list(ipp)
    return ds


def test_rotated_and_oblique_images():
    vol = volume_from_arrays(np.zeros((2, 3, 3), np.int16))  # canonical, 1 mm: index (z, y, x) -> (x, y, -z)
    lab = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    # Rows run along +y, columns along +x: the stored image is the canonical slice transposed.
    rotated = _image([0, 1, 0, 1, 0, 0], [0, 0, 0], rows=3, cols=3)
    np.testing.assert_array_equal(to_source_grid(lab, vol, [rotated])[0], lab[0].T)
    # A pixel outside the volume gets 0 (column 3 is x = 3 mm, beyond the last voxel).
    wide = _image([1, 0, 0, 0, 1, 0], [0, 0, -1], rows=3, cols=4)
    np.testing.assert_array_equal(to_source_grid(lab, vol, [wide])[0], np.c_[lab[1], np.zeros(3, np.uint8)])
    # Oblique: tilted 30 degrees about x; pixel (r, 0) at y = r cos30, z = -r sin30 -> slice round(r / 2).
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    oblique = _image([1, 0, 0, 0, c, -s], [0, 0, 0], rows=3, cols=3)
    got = to_source_grid(lab, vol, [oblique])[0]
    for r in range(3):
        z, y = int(np.floor(r * s + 0.5)), int(np.floor(r * c + 0.5))
        np.testing.assert_array_equal(got[r], lab[z, y] if z < 2 else np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        to_source_grid(lab[:1], vol, [rotated])
