"""load_study: DICOM folders and NIfTI files into the canonical orientation, clear errors otherwise."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from cspine.errors import DicomError
from cspine.io.dicom import read_series
from cspine.io.study import MIN_SLICES, StudyInputError, check_ct_study, load_study, nifti_stem, study_uid
from cspine.io.volume import Volume, volume_from_arrays


def test_real_series_loads_canonical(shared_data: Path) -> None:
    folder = shared_data / "real-ct-series" / "dicom"
    raw = read_series(folder, workers=1)
    vol = load_study(folder, workers=2)
    assert vol.shape == raw.shape and vol.affine[2, 0] == pytest.approx(-2.0)  # slice 0 most cranial
    np.testing.assert_array_equal(vol.hu, raw.hu[::-1])
    assert [s.instance_number for s in vol.slices] == [s.instance_number for s in raw.slices[::-1]]
    np.testing.assert_allclose(vol.index_to_world([0, 0, 0]), raw.index_to_world([19, 0, 0]))
    meta = json.loads(json.dumps(vol.meta))  # the cache stores it as JSON
    assert meta["reorientation"] == {"perm": [0, 1, 2], "flip": [True, False, False]}


def test_empty_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(StudyInputError, match="not found"):
        load_study(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyInputError, match="empty"):
        load_study(tmp_path / "empty")
    (tmp_path / "empty" / "sub").mkdir()  # folders without a file are as empty
    with pytest.raises(StudyInputError, match="holds no files"):
        load_study(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.bin").write_bytes(b"\x00" * 300)
    with pytest.raises(DicomError, match="no readable DICOM image"):
        load_study(tmp_path / "junk")


def test_nifti_goes_through_the_nifti_reader_and_is_canonicalised(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(b"")
    hu = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])[:, [2, 1, 0, 3]]  # axis 0 along +z (inferior -> superior)
    calls = []

    def fake_reader(p):  # engineer B's cspine.io.nifti.read_nifti_volume, stubbed
        calls.append(Path(p))
        return Volume(hu.copy(), affine)

    monkeypatch.setitem(sys.modules, "cspine.io.nifti", types.SimpleNamespace(read_nifti_volume=fake_reader))
    vol = load_study(path)
    assert calls == [path]
    np.testing.assert_array_equal(vol.hu, hu[::-1])
    assert vol.affine[2, 0] == -1.0


def test_check_ct_study_names_the_input(tmp_path: Path) -> None:
    hu = np.zeros((MIN_SLICES, 4, 4), np.int16)
    check_ct_study(volume_from_arrays(hu))  # exactly the minimum passes
    with pytest.raises(StudyInputError, match=f"{tmp_path}: the study has {MIN_SLICES - 1} axial slices"):
        check_ct_study(volume_from_arrays(hu[1:]), tmp_path)
    with pytest.raises(StudyInputError, match="the series is MR, not CT"):
        check_ct_study(volume_from_arrays(hu, meta={"Modality": "MR"}))


def test_study_uid_tag_then_folder_then_nifti_stem(tmp_path: Path) -> None:
    hu = np.zeros((MIN_SLICES, 4, 4), np.int16)
    assert study_uid(volume_from_arrays(hu, meta={"StudyInstanceUID": " 1.2.3 "}), tmp_path / "x") == "1.2.3"
    assert study_uid(volume_from_arrays(hu), tmp_path / "1.2.9") == "1.2.9"
    nii = tmp_path / "Case_7.NII.GZ"
    nii.write_bytes(b"")
    assert study_uid(volume_from_arrays(hu), nii) == "Case_7" == nifti_stem(nii)
    with pytest.raises(StudyInputError, match="in-memory volume"):
        study_uid(volume_from_arrays(hu), None)
