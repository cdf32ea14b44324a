"""Radiograph reading: real MONOCHROME1 DICOMs (JPEG 2000), PNG/JPEG/TIFF bit depths, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cspine.errors import ImageError
from cspine.io.images import is_image_file, read_image

pydicom_data = pytest.importorskip("pydicom.data")


def _grid(img: np.ndarray, n: int = 10) -> np.ndarray:
    h, w = (img.shape[0] // n) * n, (img.shape[1] // n) * n
    return img[:h, :w].reshape(n, h // n, n, w // n).mean(axis=(1, 3))


def test_rg3_monochrome1_jpeg2000_10bit_polarity_and_range() -> None:
    # RG3: a CR of the lower leg, MONOCHROME1, 10 bits stored, JPEG 2000 lossless. Raw values are low
    # for the collimated border and the bone and high for the air beside the leg: without the
    # MONOCHROME1 inversion the tibia would be darker than the air.
    img = read_image(pydicom_data.get_testdata_file("RG3_J2KR.dcm", download=False))
    assert img.dtype == np.float32 and img.shape == (1760, 1760)
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() - img.min() > 0.9
    g = _grid(img)
    air_beside_leg = g[3:7, 3].mean()  # the open field between the collimator and the calf
    tibia = g[0:4, 4:6].mean()
    assert air_beside_leg < 0.2
    assert tibia > 0.45
    assert g[:, 0:2].mean() > 0.9  # collimator shutters are white as on a film


def test_rg1_monochrome1_jpeg2000_lossy_chest_polarity() -> None:
    # RG1: a chest CR, MONOCHROME1, 15 bits stored, JPEG 2000 lossy: the spine/mediastinum must be
    # brighter than the lungs.
    img = read_image(pydicom_data.get_testdata_file("RG1_J2KI.dcm", download=False))
    assert img.shape == (1955, 1841) and 0.0 <= img.min() and img.max() <= 1.0
    g = _grid(img)
    mediastinum = g[1:5, 4:6].mean()
    lungs = np.mean([g[1:4, 3].mean(), g[1:4, 6].mean()])
    assert mediastinum > lungs + 0.1


def test_lossless_and_lossy_j2k_agree() -> None:
    a = read_image(pydicom_data.get_testdata_file("RG3_J2KR.dcm", download=False))
    b = read_image(pydicom_data.get_testdata_file("RG3_UNCR.dcm", download=False))
    np.testing.assert_array_equal(a, b)


def test_png_bit_depths_and_rgb(tmp_path: Path) -> None:
    ramp8 = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    Image.fromarray(ramp8).save(tmp_path / "g8.png")
    out = read_image(tmp_path / "g8.png")
    np.testing.assert_allclose(out, ramp8 / 255.0, atol=1e-6)

    ramp16 = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (4, 1))
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png"), ramp16 / 65535.0, atol=1e-6)

    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 255  # pure green -> luminance 0.587
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_allclose(read_image(tmp_path / "c.png"), 0.587, atol=1e-3)


def test_tiff_float_and_jpeg(tmp_path: Path) -> None:
    f = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(read_image(tmp_path / "f.tif"), f, atol=1e-6)
    Image.fromarray(f * 1000 + 5, mode="F").save(tmp_path / "big.tiff")
    big = read_image(tmp_path / "big.tiff")
    assert big.min() == 0.0 and big.max() == 1.0
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(tmp_path / "x.jpg", quality=95)
    assert abs(float(read_image(tmp_path / "x.jpg").mean()) - 200 / 255) < 0.01


def test_unreadable_and_missing_images_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageError, match="broken.png"):
        read_image(bad)
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "absent.png")
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"hello")
    with pytest.raises(ImageError, match="fake.dcm"):
        read_image(fake)
    assert is_image_file(bad) and not is_image_file(tmp_path / "absent.png")


def _write_dicom(path: Path, arr: np.ndarray, bits_stored: int, photometric: str = "MONOCHROME2",
                 **tags: object) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(arr.dtype.kind == "i")
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_window_rescale_and_monochrome1(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))  # 12-bit values 0..4032
    # Window in rescaled units: rescale x2 - 1000 -> -1000..7064; window 3000 +- 2000 (linear_exact)
    p = _write_dicom(tmp_path / "w.dcm", ramp, 12, RescaleSlope=2, RescaleIntercept=-1000,
                     WindowCenter=3000, WindowWidth=4000, VOILUTFunction="LINEAR_EXACT")
    expected = np.clip((ramp * 2.0 - 1000 - 3000) / 4000 + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(p), expected, atol=1e-6)
    # no window: the image's own range; MONOCHROME1: inverted
    p1 = _write_dicom(tmp_path / "m1.dcm", ramp, 12, "MONOCHROME1")
    out = read_image(p1)
    np.testing.assert_allclose(out, 1 - ramp / 4032.0, atol=1e-6)
    assert out[0, 0] == 1.0 and out[0, -1] == 0.0


def test_dicom_jpeg_lossless_reads() -> None:
    # a real JPEG-lossless neck CT slice (12 bits stored, soft-tissue window first)
    img = read_image(pydicom_data.get_testdata_file("bad_sequence.dcm", download=False))
    assert img.shape == (512, 512) and img.min() == 0.0 and img.max() == 1.0
    assert 0.2 < float(img.mean()) < 0.8
