"""Pixel decoding: every transfer syntax of ../shared/data/ct-codecs, backends bit-exact, HU rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from cspine.errors import UnsupportedTransferSyntaxError
from cspine.io.dicom import decode_hu, read_series, read_slice_hu
from cspine.io.dicom_decode import (
    DICOMSDL_EXACT,
    decode_file_into,
    dicomsdl_available,
    fix_stored_bits,
    stored_to_hu,
)
from cspine.labels import HU_MAX, HU_MIN

LOSSLESS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"]
#: Max |HU difference| to the uncompressed slice documented in ../shared/data/README.md.
LOSSY = {"1.2.840.10008.1.2.4.50": 64, "1.2.840.10008.1.2.4.51": 36, "1.2.840.10008.1.2.4.81": 1,
         "1.2.840.10008.1.2.4.91": 5}
UNDECODABLE = ["1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"]


def codec_file(shared_data: Path, uid: str) -> Path:
    files = (shared_data / "ct-codecs").glob("CTImage.dcm_*")
    (match,) = [p for p in files if p.name.endswith(f"_{uid}.dcm")]
    return match


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> np.ndarray:
    hu, warns = read_slice_hu(shared_data / "ct-codecs" / "CTImage.dcm")
    return hu


@pytest.mark.parametrize("uid", LOSSLESS)
def test_lossless_syntaxes_decode_to_identical_hu(shared_data: Path, reference: np.ndarray, uid: str) -> None:
    path = codec_file(shared_data, uid)
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == uid
    for backend in ("pydicom", "gdcm"):
        hu, _ = read_slice_hu(path, backend=backend)
        assert hu.dtype == np.int16
        np.testing.assert_array_equal(hu, reference)


@pytest.mark.parametrize("uid", sorted(LOSSY))
def test_lossy_syntaxes_within_documented_tolerance(shared_data: Path, reference: np.ndarray,
                                                    uid: str) -> None:
    hu, _ = read_slice_hu(codec_file(shared_data, uid))
    diff = np.abs(hu.astype(np.int32) - reference)
    assert 0 < diff.max() <= LOSSY[uid]
    assert diff.mean() <= LOSSY[uid] / 2 + 0.5  # close everywhere, not just bounded


def test_reference_slice_hu_is_rescaled_and_clipped(reference: np.ndarray) -> None:
    # GE slice: stored int16 with intercept -1024 and -2000 padding outside the FOV -> clipped to HU_MIN.
    assert reference.min() == HU_MIN and reference.max() <= HU_MAX
    assert 1000 < reference.max() < 2000


@pytest.mark.parametrize("uid", UNDECODABLE)
def test_undecodable_syntax_gives_clear_error(shared_data: Path, uid: str) -> None:
    path = codec_file(shared_data, uid)
    with pytest.raises(UnsupportedTransferSyntaxError) as err:
        read_slice_hu(path)
    msg = str(err.value)
    assert path.name in msg and uid in msg and "JPEG" in msg


def test_undecodable_syntax_in_a_series_names_file_and_syntax(shared_data: Path, tmp_path: Path) -> None:
    path = codec_file(shared_data, "1.2.840.10008.1.2.4.55")
    files = []
    for k in range(3):  # three positions, so geometry passes and decoding is what fails
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0, 0, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        files.append(tmp_path / f"{k}.dcm")
        ds.save_as(files[-1])
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"1\.2\.840\.10008\.1\.2\.4\.55.*Process 10"):
        read_series(files, workers=1)


@pytest.mark.skipif(not dicomsdl_available(), reason="dicomsdl is not installed")
@pytest.mark.parametrize("name", [*(f"CTImage.dcm_*_{u}.dcm" for u in LOSSLESS + sorted(LOSSY)),
                                  "CT1_J2KR", "CT2_J2KR"])
def test_dicomsdl_backend_bit_exact_against_pydicom(shared_data: Path, name: str) -> None:
    (path,) = (shared_data / "ct-codecs").glob(name)
    ds = pydicom.dcmread(path)
    expected = decode_hu(ds)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    got = np.empty_like(expected)
    decode_file_into(path, got, backend="dicomsdl", syntax=syntax, slope=float(ds.get("RescaleSlope", 1)),
                     intercept=float(ds.get("RescaleIntercept", 0)), bits_stored=int(ds.BitsStored),
                     signed=ds.PixelRepresentation == 1)
    if syntax in DICOMSDL_EXACT:  # "auto" only uses dicomsdl where this holds
        np.testing.assert_array_equal(got, expected)
    else:  # lossy: dicomsdl's JPEG decoders round differently by up to one stored level (not
        # bit-exact), which is why "auto" keeps pydicom for these syntaxes
        slope = float(ds.get("RescaleSlope", 1))
        assert np.abs(got.astype(np.int32) - expected).max() <= abs(slope) + 1


def test_backends_agree_on_real_series(shared_data: Path) -> None:
    folder = shared_data / "real-ct-series" / "dicom"
    vols = {b: read_series(folder, workers=1, backend=b) for b in ("pydicom", "gdcm", "auto")}
    for b in ("gdcm", "auto"):
        np.testing.assert_array_equal(vols[b].hu, vols["pydicom"].hu)
    assert vols["pydicom"].hu.min() == -1024 and vols["pydicom"].hu.max() == 1839


def test_bad_sequence_neck_ct_decodes_with_a_warning() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("bad_sequence.dcm", download=False)
    assert path is not None, "pydicom-data is a test dependency"
    hu, warns = read_slice_hu(path)
    assert warns and any("Invalid value" in w or "exceeds" in w for w in warns)
    assert hu.shape == (512, 512) and hu.dtype == np.int16
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(hu, ds.pixel_array.astype(np.int32) * 1 - 1024)  # slope 1, intercept -1024
    assert hu.max() > 700  # bone in a neck CT


def test_fix_stored_bits_unsigned_masks_and_signed_sign_extends() -> None:
    unsigned = np.array([0x0FFF, 0xF123, 0x0800], np.uint16)  # high bits hold overlay garbage
    assert fix_stored_bits(unsigned, 12, signed=False).tolist() == [4095, 0x123, 2048]
    raw12 = np.array([0x0FFF, 0x0800, 0x07FF, 0x0001], np.uint16).view(np.int16)  # 12-bit two's complement
    assert fix_stored_bits(raw12, 12, signed=True).tolist() == [-1, -2048, 2047, 1]
    full = np.array([-5, 7], np.int16)
    assert fix_stored_bits(full, 16, signed=True) is full


def test_stored_to_hu_integer_and_float_rescale() -> None:
    stored = np.array([[0, 1024, 5000]], np.uint16)
    assert stored_to_hu(stored, 1, -1024).tolist() == [[-1024, 0, 3071]]  # clipped to HU_MAX
    assert stored_to_hu(np.array([[10]], np.uint16), 2.5, -1000.25).tolist() == [[-975]]
    assert stored_to_hu(np.array([[-3000]], np.int16), 1, 0).tolist() == [[HU_MIN]]
