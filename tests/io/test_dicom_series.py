"""Series reading: real series and edge cases from ../shared/data, and synthetic studies written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from cspine.errors import DicomError, SeriesGeometryError
from cspine.io.dicom import read_series
from cspine.io.dicom_series import list_files, scan, split_series

# --- a synthetic study written with pydicom ----------------------------------------------------------


def make_slice(path: Path, k: int, *, z: float, instance: int, series_uid: str, study_uid: str,
               series_number: int = 2, rows: int = 8, cols: int = 6, signed: bool = True,
               bits_stored: int = 16,
               intercept: float = -1024.0, slope: float = 1.0, stored: np.ndarray | None = None,
               image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"), modality: str = "CT",
               iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0), ipp_xy: tuple[float, float] = (-10.0, -20.0),
               sop_class: str = CTImageStorage) -> np.ndarray:
    """Write one uncompressed slice; its stored values encode the slice index ``k`` (1000 + 10k + col)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study_uid, series_uid
    ds.SeriesNumber, ds.InstanceNumber, ds.ImageType = series_number, instance, list(image_type)
    ds.PatientName, ds.PatientID = "Doe^Jane", "SECRET-ID"
    ds.ImageOrientationPatient = list(iop)
    ds.ImagePositionPatient = [ipp_xy[0], ipp_xy[1], z]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.8], 5.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
    if stored is None:
        stored = (1000 + 10 * k + np.arange(cols)[None, :] + np.zeros((rows, 1))).astype(np.int32)
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return stored


def write_study(folder: Path, n: int = 5, step: float = 1.25, reverse_numbers: bool = True, **kw) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    series = kw.pop("series_uid", generate_uid())
    study = kw.pop("study_uid", "1.2.3.4")
    for k in range(n):
        # file names and InstanceNumbers run caudal -> cranial while z runs the other way
        instance = n - k if reverse_numbers else k + 1
        make_slice(folder / f"{instance}.dcm", k, z=100.0 + k * step, instance=instance, series_uid=series,
                   study_uid=study, **kw)
    return series


def test_synthetic_study_sorted_by_position_not_instance_number(tmp_path: Path) -> None:
    write_study(tmp_path / "s", n=5, step=1.25)
    vol = read_series(tmp_path / "s", workers=1)
    assert vol.shape == (5, 8, 6)
    # slice k was written at z = 100 + 1.25k with stored 1000 + 10k + col, intercept -1024
    np.testing.assert_array_equal(vol.hu[:, 0, 0], [-24 + 10 * k for k in range(5)])
    np.testing.assert_array_equal(vol.hu[2, 3], -24 + 20 + np.arange(6))
    assert [s.instance_number for s in vol.slices] == [5, 4, 3, 2, 1]
    assert vol.index_of_instance(5) == 0
    np.testing.assert_allclose(vol.spacing, (1.25, 0.7, 0.8))
    np.testing.assert_allclose(vol.affine[:3, 3], (-10, -20, 100))
    np.testing.assert_allclose(vol.index_to_world(np.array([4, 1, 2])), (-10 + 2 * 0.8, -20 + 0.7, 105))
    assert vol.meta["slice_thickness_tag"] == 5.0
    assert vol.meta["spacing_from_positions"] == pytest.approx(1.25)
    assert vol.meta["StudyInstanceUID"] == "1.2.3.4" and vol.meta["Modality"] == "CT"
    flat = repr(vol.meta)
    assert "Doe" not in flat and "SECRET" not in flat and "PatientName" not in flat


def test_unsigned_12_bit_with_garbage_high_bits_and_float_rescale(tmp_path: Path) -> None:
    stored = np.full((8, 6), 0xF000 | 1500, np.int64)  # overlay bits above BitsStored must be masked
    stored[0, 0] = 0xF000 | 4095
    series = generate_uid()
    for k in range(3):
        make_slice(tmp_path / f"{k}.dcm", k, z=float(k), instance=k + 1, series_uid=series, study_uid="1",
                   signed=False, bits_stored=12, stored=stored, slope=0.5, intercept=-100.0)
    vol = read_series(tmp_path, workers=1)
    assert vol.hu[0, 1, 1] == 650 and vol.hu[2, 0, 0] == round(4095 * 0.5 - 100)


def test_signed_12_bit_is_sign_extended(tmp_path: Path) -> None:
    stored = np.full((8, 6), 0x0FFF, np.int64)  # -1 in 12-bit two's complement, written as 4095
    series = generate_uid()
    for k in range(3):
        make_slice(tmp_path / f"{k}.dcm", k, z=float(k), instance=k + 1, series_uid=series, study_uid="1",
                   signed=True, bits_stored=12, stored=stored, intercept=0.0)
    vol = read_series(tmp_path, workers=1)
    assert (vol.hu == -1).all()


def test_junk_files_are_skipped_with_warnings(tmp_path: Path) -> None:
    write_study(tmp_path / "s", n=4)
    (tmp_path / "s" / "notes.txt").write_text("not dicom")
    good = tmp_path / "s" / "1.dcm"
    data = good.read_bytes()
    (tmp_path / "s" / "truncated.dcm").write_bytes(data[: len(data) - 20])
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(tmp_path / "s" / "nopixels.dcm")
    make_slice(tmp_path / "s" / "scout.dcm", 0, z=50.0, instance=99, series_uid=ds.SeriesInstanceUID,
               study_uid="1.2.3.4", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    make_slice(tmp_path / "s" / "sc.dcm", 0, z=60.0, instance=98, series_uid=ds.SeriesInstanceUID,
               study_uid="1.2.3.4", sop_class="1.2.840.10008.5.1.4.1.1.7")
    vol = read_series(tmp_path / "s", workers=1)
    assert vol.shape[0] == 4
    text = " ".join(vol.meta["warnings"])
    for reason, name in [("not a DICOM", "notes.txt"), ("truncated", "truncated.dcm"),
                         ("no PixelData", "nopixels.dcm"), ("localizer", "scout.dcm"),
                         ("secondary capture", "sc.dcm")]:
        assert reason in text and name in text
    assert vol.meta["n_files_skipped"] == 5


def test_nothing_readable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DicomError, match="no readable DICOM image"):
        read_series(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DicomError, match="no files"):
        read_series(empty)


def test_exact_duplicate_dropped_with_warning(tmp_path: Path) -> None:
    write_study(tmp_path, n=4)
    shutil.copy(tmp_path / "2.dcm", tmp_path / "2_copy.dcm")
    vol = read_series(tmp_path, workers=1)
    assert vol.shape[0] == 4
    assert any("duplicate" in w for w in vol.meta["warnings"])


def test_one_slice_is_an_error(tmp_path: Path) -> None:
    write_study(tmp_path, n=1)
    with pytest.raises(SeriesGeometryError, match="only 1 distinct slice position"):
        read_series(tmp_path)


def test_largest_axial_ct_series_is_chosen_and_explained(tmp_path: Path) -> None:
    big = write_study(tmp_path / "a", n=6, series_number=3)
    write_study(tmp_path / "b", n=4, series_number=2)
    write_study(tmp_path / "c", n=9, series_number=4, iop=(0, 1, 0, 0, 0, -1))  # sagittal, more images
    write_study(tmp_path / "d", n=12, series_number=5, modality="MR")
    vol = read_series(tmp_path, workers=1)
    assert vol.meta["SeriesInstanceUID"] == big and vol.shape[0] == 6
    assert "series 3" in vol.meta["series_choice"] and "ignored 3" in vol.meta["series_choice"]
    assert sum(s["chosen"] for s in vol.meta["series_found"]) == 1
    assert {s["orientation"] for s in vol.meta["series_found"]} == {"axial", "sagittal"}


def test_same_uid_split_by_series_number_and_orientation(tmp_path: Path) -> None:
    uid = generate_uid()
    write_study(tmp_path / "a", n=3, series_uid=uid, series_number=1)
    write_study(tmp_path / "b", n=5, series_uid=uid, series_number=1, iop=(1, 0, 0, 0, 0, -1))  # coronal
    write_study(tmp_path / "c", n=4, series_uid=uid, series_number=7)
    groups = split_series(scan(list_files(tmp_path)).headers)
    assert sorted(len(g.headers) for g in groups) == [3, 4, 5]
    vol = read_series(tmp_path, workers=1)
    assert vol.shape[0] == 4 and vol.meta["SeriesNumber"] == 7  # axial with most images


def test_non_ct_only_is_a_clear_error(tmp_path: Path) -> None:
    write_study(tmp_path, n=4, modality="MR")
    with pytest.raises(DicomError, match="no CT series found.*MR"):
        read_series(tmp_path)
    assert read_series(tmp_path, modality=None, workers=1).meta["Modality"] == "MR"


def test_empty_modality_read_as_ct_with_warning(tmp_path: Path) -> None:
    write_study(tmp_path, n=3, modality="")
    vol = read_series(tmp_path, workers=1)
    assert vol.shape[0] == 3 and any("empty Modality" in w for w in vol.meta["warnings"])


def test_parallel_decode_equals_serial(tmp_path: Path) -> None:
    write_study(tmp_path, n=20, rows=16, cols=16)
    one = read_series(tmp_path, workers=1)
    two = read_series(tmp_path, workers=2)
    np.testing.assert_array_equal(one.hu, two.hu)
    assert [s.path for s in one.slices] == [s.path for s in two.slices]
    assert two.hu.flags.writeable


# --- real files ----------------------------------------------------------------------------------------


def test_real_ct_series(shared_data: Path) -> None:
    folder = shared_data / "real-ct-series" / "dicom"
    vol = read_series(folder, workers=2)
    assert vol.shape == (20, 512, 512) and vol.hu.dtype == np.int16
    np.testing.assert_allclose(vol.spacing, (2.0, 0.9765625, 0.9765625))
    assert vol.meta["slice_thickness_tag"] == 3.0  # the tag says 3 mm; positions say 2 mm
    z = [float(pydicom.dcmread(s.path, stop_before_pixels=True).ImagePositionPatient[2]) for s in vol.slices]
    assert z == sorted(z) and np.allclose(np.diff(z), 2.0)
    assert vol.meta["StudyInstanceUID"] is None and vol.meta["SeriesInstanceUID"] is None  # anonymised
    assert all(s.sop_instance_uid for s in vol.slices)  # taken from the file meta
    np.testing.assert_array_equal(vol.hu, read_series(folder, workers=1, backend="pydicom").hu)


EDGE = "dicom-edge-cases"


@pytest.mark.parametrize("case, error, pattern", [
    ("sliceincrement/001", SeriesGeometryError, r"gap.*10\.00 mm.*1 missing slice"),
    ("sliceincrement/002", SeriesGeometryError, r"gantry tilt"),
    ("notavolume/001", SeriesGeometryError, r"4 different images at the same position.*not one volume"),
    ("gantrytilting/001", SeriesGeometryError, r"gantry tilt.*14\.0\d degrees"),
    ("sliceorientation/001", DicomError, r"no CT series.*MR, sagittal, 2 images.*MR, axial, 2 images"),
    ("slicecount/001", DicomError, r"no CT series.*MR"),
])
def test_edge_cases_give_clear_errors(shared_data: Path, case: str, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        read_series(shared_data / EDGE / case, workers=1)


def test_mr_edge_cases_read_as_any_modality_still_refused(shared_data: Path) -> None:
    with pytest.raises(SeriesGeometryError, match="only 2 distinct slice position"):
        read_series(shared_data / EDGE / "slicecount/001", modality=None, workers=1)
    groups = split_series(scan(list_files(shared_data / EDGE / "sliceorientation/001")).headers)
    assert len(groups) == 2 and {g.orientation for g in groups} == {"axial", "sagittal"}
    assert len({g.first.series_uid for g in groups}) == 1  # one UID, two orientations


def test_missing_slice_resampled_when_asked(shared_data: Path) -> None:
    folder = shared_data / EDGE / "sliceincrement/001"
    vol = read_series(folder, on_gap="resample", workers=1)
    assert vol.shape[0] == 5 and vol.spacing[0] == pytest.approx(5.0, abs=1e-3)
    assert vol.slices[3].path is None and vol.slices[4].path.endswith("0010-0001.dcm")
    raw = read_series(sorted(folder.iterdir())[:3], workers=1)  # the three uniform slices
    np.testing.assert_array_equal(vol.hu[:3], raw.hu)
    last = read_series(folder, on_gap="resample", workers=1).hu[4].astype(np.int32)
    np.testing.assert_allclose(vol.hu[3], (raw.hu[2].astype(np.int32) + last) / 2, atol=1)
    assert any("resampled the 4 acquired slices onto 5 slices every 5.000 mm" in w
               for w in vol.meta["warnings"])


def test_gantry_tilt_resampled_when_asked(shared_data: Path) -> None:
    folder = shared_data / EDGE / "gantrytilting/001"
    vol = read_series(folder, on_tilt="resample", workers=1)
    assert vol.meta["gantry_tilt_degrees"] == pytest.approx(14.0, abs=0.1)
    a = vol.affine[:3, :3]
    np.testing.assert_allclose(a.T @ a, np.diag(np.diag(a.T @ a)), atol=1e-9)  # orthogonal grid
    assert vol.spacing[0] == pytest.approx(5 * 0.970295726276, abs=1e-6)
    # each slice k moved in-plane by its origin's offset from the normal through slice 0, on a grid
    # enlarged by the rows the shear moves the slices over (none is cropped)
    from scipy import ndimage

    from cspine.io.dicom import read_slice_hu

    normal = vol.affine[:3, 0] / np.linalg.norm(vol.affine[:3, 0])
    dss = [pydicom.dcmread(s.path, stop_before_pixels=True) for s in vol.slices]
    ipp0 = np.array(dss[0].ImagePositionPatient, float)
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    ps = [float(v) for v in dss[0].PixelSpacing]
    rows, cols = int(dss[0].Rows), int(dss[0].Columns)
    pad = ((ipp0 - vol.affine[:3, 3]) @ col / ps[0], (ipp0 - vol.affine[:3, 3]) @ row / ps[1])
    (r0, r1), (c0, c1) = vol.meta["tilt_padding_pixels"]
    np.testing.assert_allclose(pad, (r0, c0), atol=1e-6)
    assert vol.shape[1:] == (rows + r0 + r1, cols + c0 + c1) and r0 + r1 >= 9  # 8.7 rows over the stack
    for k in (0, 3):
        delta = np.array(dss[k].ImagePositionPatient, float) - ipp0
        off = delta - (delta @ normal) * normal
        shift = (off @ col / ps[0] + pad[0], off @ row / ps[1] + pad[1])
        np.testing.assert_allclose(vol.slices[k].pixel_offset, shift, atol=1e-3)
        raw, _ = read_slice_hu(vol.slices[k].path)
        canvas = np.full(vol.shape[1:], -1024.0, np.float32)
        canvas[:rows, :cols] = raw
        shift = tuple(round(v) if abs(v - round(v)) < 1e-6 else v for v in shift)  # exact at slice 0
        expected = np.rint(ndimage.shift(canvas, shift, order=1, cval=-1024.0))
        np.testing.assert_allclose(vol.hu[k], expected, atol=1)
    assert any("enlarged from 512x512" in w for w in vol.meta["warnings"])


def test_truncated_compressed_file_skipped(shared_data: Path, tmp_path: Path) -> None:
    # Headers are checked with pydicom before any decoder sees a file: dicomsdl crashes the process
    # (segfault) on a truncated native file and raises on a truncated encapsulated one.
    src = sorted((shared_data / "real-ct-series" / "dicom").iterdir())[:4]
    for p in src:
        shutil.copy(p, tmp_path / p.name)
    # truncate the most cranial file, so the remaining three are still evenly spaced
    top = max(src, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    data = top.read_bytes()
    (tmp_path / top.name).write_bytes(data[: len(data) // 2])
    vol = read_series(tmp_path, workers=1, backend="dicomsdl")
    assert vol.shape[0] == 3
    assert any("truncated pixel data" in w and top.name in w for w in vol.meta["warnings"])


def test_fast_header_parsing_equals_pydicom(shared_data: Path) -> None:
    import dataclasses

    from pydicom.data import get_testdata_file

    from cspine.io.dicom_series import read_header

    files = [p for p in shared_data.rglob("*")
             if p.is_file() and not p.name.endswith((".nii.gz", ".md")) and "LICENSE" not in p.name]
    files.append(Path(get_testdata_file("bad_sequence.dcm", download=False)))
    assert len(files) > 50
    for path in files:  # implicit/explicit VR, big endian, deflated, encapsulated, broken values
        fast, slow = read_header(str(path)), read_header(str(path), fast=False)
        assert not isinstance(fast, list)  # no multi-frame file among them
        if isinstance(fast, tuple) or isinstance(slow, tuple):
            assert fast == slow
            continue
        assert dataclasses.replace(fast, warnings=()) == dataclasses.replace(slow, warnings=()), path
