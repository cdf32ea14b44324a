"""The DICOM writer: every encoding, pixel representation, numbering and patient position round-trips
exactly through the project's reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from cspine.io.study import load_study
from cspine.synth.ct_writer import ENCODINGS, SeriesOptions, write_ct_series
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
