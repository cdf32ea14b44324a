"""The DICOM writer: every encoding, pixel representation, numbering and patient position round-trips
exactly through the project's reader."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cspine.io.study import load_study
from cspine.labels import HU_MAX, HU_MIN
from cspine.synth.ct_writer import ENCODINGS, SeriesOptions, write_ct_series, write_ct_series_reference
from cspine.synth.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(3, size=48, n_slices=20, fracture=True)


CASES = [
    SeriesOptions("explicit", False, -1024.0, 12),
    SeriesOptions("implicit", True, 0.0, 16, reverse_numbering=True),
    SeriesOptions("jpeg_lossless", True, -1024.0, 16, feet_first=True),
    SeriesOptions("jpeg_lossless", False, -1024.0, 12, reverse_numbering=True),
    SeriesOptions("jpeg2000", True, 0.0, 12, reverse_numbering=True, feet_first=True, slice_thickness=3.0),
    SeriesOptions("jpeg2000", False, -1024.0, 16),
    SeriesOptions("rle", True, 0.0, 16),
]


@pytest.mark.parametrize(
    "opts", CASES, ids=lambda o: f"{o.encoding}-{'s' if o.signed else 'u'}{o.bits_stored}"
)
def test_round_trip_exact(phantom, tmp_path: Path, opts: SeriesOptions) -> None:
    written = write_ct_series(phantom, tmp_path / "s", opts, uid_seed="t")
    files = sorted((tmp_path / "s").glob("*.dcm"))
    assert len(files) == phantom.hu.shape[0]
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == ENCODINGS[opts.encoding]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    assert ds.PixelRepresentation == int(opts.signed) and ds.BitsStored == opts.bits_stored
    assert float(ds.RescaleIntercept) == opts.intercept
    assert ds.PatientPosition == ("FFS" if opts.feet_first else "HFS")
    if opts.slice_thickness is not None:
        assert float(ds.SliceThickness) != pytest.approx(phantom.spacing[0])
    # InstanceNumber of the most cranial slice: 1, or N when numbered caudo-cranially.
    first = pydicom.dcmread(written.paths[0], stop_before_pixels=True)
    assert first.InstanceNumber == (len(files) if opts.reverse_numbering else 1)
    v = load_study(tmp_path / "s", workers=1)
    assert np.array_equal(v.hu, phantom.hu)
    assert np.allclose(v.spacing, phantom.spacing, atol=1e-4)
    assert [s.instance_number for s in v.slices] == list(written.instance_numbers)
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert len(uids) == len(files)


def test_uids_are_deterministic(phantom, tmp_path: Path) -> None:
    a = write_ct_series(phantom, tmp_path / "a", uid_seed=7)
    b = write_ct_series(phantom, tmp_path / "b", uid_seed=7)
    c = write_ct_series(phantom, tmp_path / "c", uid_seed=8)
    assert a.series_uid == b.series_uid != c.series_uid
    assert (tmp_path / "a" / "1.dcm").read_bytes() == (tmp_path / "b" / "1.dcm").read_bytes()


def test_values_that_do_not_fit_twelve_bits_get_sixteen(phantom, tmp_path: Path) -> None:
    hot = phantom.volume().with_array(np.full((2, 8, 8), 2500, np.int16))
    w = write_ct_series(hot, tmp_path / "h", SeriesOptions("explicit", True, 0.0, 12))
    assert pydicom.dcmread(w.paths[0]).BitsStored == 16


# --- The pre-encoded header writer against the reference (one pydicom save_as per slice) -------------

# HU range each pixel format can hold: (signed, bits) -> (intercept, lo, hi)
_RANGES = {
    (False, 12): (-1024.0, -1024, 3071),
    (False, 16): (-1024.0, -1024, 20000),
    (True, 12): (0.0, -2048, 2047),
    (True, 16): (-1024.0, -3000, 20000),
}
FACTORIAL = list(itertools.product(ENCODINGS, [False, True], [12, 16], [False, True], [False, True]))


def _small_volume(seed: int, signed: bool, bits: int):
    """3 slices of 32x40 noise over a wide range (both ends present), awkward spacing and origin (so
    that DS values GDCM re-spells, such as 0.5 -> .5, occur)."""
    from cspine.io.volume import volume_from_arrays

    _, lo, hi = _RANGES[(signed, bits)]
    rng = np.random.default_rng(seed)
    hu = rng.integers(lo, hi + 1, (3, 32, 40)).astype(np.int16)  # J2K needs >= 32 px
    hu[0, 0, :2] = lo, hi
    spacing = (0.7, 0.6665, 0.5) if seed % 2 else (2.5, 1.0226, 1.0226)
    v = volume_from_arrays(hu, spacing)
    affine = v.affine.copy()
    affine[:3, 3] = (-0.25, 12.5, -150.0625) if seed % 2 else rng.uniform(-150, 80, 3).round(4)
    return v.with_array(hu, affine)


def _elements(ds: pydicom.Dataset) -> list[tuple]:
    return [(e.tag, e.VR, str(e.value), e.value) for e in ds]


@pytest.mark.parametrize(
    ("encoding", "signed", "bits", "feet_first", "reverse"),
    FACTORIAL,
    ids=[f"{e}-{'s' if s else 'u'}{b}{'-ffs' * f}{'-rev' * r}" for e, s, b, f, r in FACTORIAL],
)
def test_header_writer_matches_reference(tmp_path: Path, encoding, signed, bits, feet_first, reverse) -> None:
    case = FACTORIAL.index((encoding, signed, bits, feet_first, reverse))
    volume = _small_volume(case, signed, bits)
    opts = SeriesOptions(
        encoding,
        signed,
        _RANGES[(signed, bits)][0],
        bits,
        reverse,
        feet_first,
        slice_thickness=3.0 if case % 3 == 0 else None,
    )
    kw = {"uid_seed": f"case{case}", "extra": {"PatientID": "P1", "SeriesNumber": 4}, "verify_every": 2}
    old = write_ct_series_reference(volume, tmp_path / "old", opts, **kw)
    new = write_ct_series(volume, tmp_path / "new", opts, **kw)
    assert (new.instance_numbers, new.flip_x, new.series_uid, new.transfer_syntax) == (
        old.instance_numbers,
        old.flip_x,
        old.series_uid,
        old.transfer_syntax,
    )
    assert [p.name for p in new.paths] == [p.name for p in old.paths]
    # Nothing else in the folder: no temporary file survived the atomic writes.
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(p.name for p in new.paths)
    bits_seen = set()
    for po, pn in zip(old.paths, new.paths, strict=True):
        a, b = pydicom.dcmread(po), pydicom.dcmread(pn)
        assert a.preamble == b.preamble
        assert _elements(a.file_meta) == _elements(b.file_meta)
        assert _elements(a) == _elements(b)
        assert b.file_meta.TransferSyntaxUID == ENCODINGS[encoding]
        assert b.PixelRepresentation == int(signed)
        bits_seen.add(int(b.BitsStored))
        pa, pb = a.pixel_array, b.pixel_array
        assert pa.dtype == pb.dtype and np.array_equal(pa, pb)
        assert pn.read_bytes() == po.read_bytes()
    assert bits_seen == {bits}  # the case really is 12 (or 16) bits, not bumped by fit_options
    if encoding == "implicit":  # implicit VR stays implicit: no VR letters after the tags
        raw = new.paths[0].read_bytes()
        assert b"\x08\x00\x08\x00CS" not in raw and b"\x08\x00\x08\x00" in raw
    v = load_study(tmp_path / "new", workers=1)
    assert np.array_equal(v.hu, np.clip(volume.hu, HU_MIN, HU_MAX))  # the reader clips HU
    assert np.allclose(v.affine, volume.affine, atol=1e-4)
    assert [s.instance_number for s in v.slices] == list(new.instance_numbers)


def test_gdcm_ds_spelling_matches_gdcm(tmp_path: Path) -> None:
    """The port of GDCM's DS formatting gives what GDCM's own writer writes (each of its branches)."""
    from cspine.synth.ct_writer import _base_dataset
    from cspine.synth.gdcm_codec import encode_jpeg_lossless_file, format_ds

    values = (
        "0.0000 -0.0000 0.5 -0.25 0.6665 12.5000 -150.0625 1e-5 0.000999 0.0001234 99999.99999 1.5e14 "
        "0.9999999999 123456789.12345 1.5e12 -7.25e-7 0.3333333333333 -2.000000 1024 65535.5 0.1 -2.5e13"
    ).split()
    values += [f"{v:.10g}" for v in np.random.default_rng(0).uniform(-1000, 1000, 10)]
    base = _base_dataset("1.2.3", "1.2.4", "1.2.5", SeriesOptions(), (2, 2), (1.0, 1.0, 1.0), {})
    for i in range(0, len(values), 3):
        triple = (values[i : i + 3] + ["7", "7"])[:3]
        ds = base.copy()
        ds.SOPInstanceUID, ds.InstanceNumber = "1.2.6", 1
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = triple
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.PixelData = np.zeros((2, 2), np.uint16).tobytes()
        ds.save_as(tmp_path / "raw.dcm", enforce_file_format=True)
        encode_jpeg_lossless_file(tmp_path / "raw.dcm", tmp_path / "gdcm.dcm")
        written = [str(x) for x in pydicom.dcmread(tmp_path / "gdcm.dcm").ImagePositionPatient]
        assert written == [format_ds(x) for x in triple], triple
    assert [format_ds(x) for x in ("0.5", "-0.0000", "1e-5", "2.3392")] == [".5", "-0", "1e-5", "2.3392"]


def test_failed_verification_leaves_no_file(phantom, tmp_path: Path, monkeypatch) -> None:
    """A slice that does not decode to its values raises, and neither it nor a temporary file is left."""
    from cspine.errors import CspineError
    from cspine.synth import gdcm_codec

    real = gdcm_codec.encode_jpeg_lossless
    monkeypatch.setattr(
        gdcm_codec,
        "encode_jpeg_lossless",
        lambda stored, bits, signed: real(stored[::-1].copy(), bits, signed),
    )
    with pytest.raises(CspineError, match="does not decode to the same values"):
        write_ct_series(phantom, tmp_path / "v", SeriesOptions("jpeg_lossless"))
    assert list((tmp_path / "v").iterdir()) == []
