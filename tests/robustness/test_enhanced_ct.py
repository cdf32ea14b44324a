"""Enhanced (multi-frame) CT: a Legacy Converted Enhanced CT made by highdicom from the real classic series
reads exactly like the classic series; per-frame groups win over shared ones; geometry checks still apply."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from _rsna_fixture import write_rsna_layout
from cspine.cli.main import app
from cspine.errors import CspineError, DicomError, SeriesGeometryError
from cspine.io.dicom import read_series
from cspine.io.study import load_study

highdicom = pytest.importorskip("highdicom", reason="highdicom converts the classic series (test dependency)")

LEGACY_CONVERTED = "1.2.840.10008.5.1.4.1.1.2.2"


def _classic_datasets(folder: Path) -> list[pydicom.Dataset]:
    """The real series' slices, decompressed, with the UIDs its anonymisation emptied filled in (copies)."""
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    out = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.decompress()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series, 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        out.append(ds)
    return out


def _convert(datasets: list[pydicom.Dataset], path: Path, series_uid: str, number: int) -> Path:
    from highdicom.legacy import LegacyConvertedEnhancedCTImage
    from pydicom.uid import generate_uid

    enhanced = LegacyConvertedEnhancedCTImage(datasets, series_uid, 2, generate_uid(), number)
    path.parent.mkdir(parents=True, exist_ok=True)
    enhanced.save_as(path)
    return path


@pytest.fixture(scope="module")
def classic(shared_data: Path):
    folder = shared_data / "real-ct-series" / "dicom"
    return folder, read_series(folder, workers=1), _classic_datasets(folder)


@pytest.fixture(scope="module")
def enhanced(classic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydicom.uid import generate_uid

    _, _, datasets = classic
    out = tmp_path_factory.mktemp("lce") / "enhanced.dcm"
    return _convert(copy.deepcopy(datasets), out, generate_uid(), 1)


def _assert_same_volume(got, want) -> None:
    np.testing.assert_array_equal(got.hu, want.hu)
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-6)
    np.testing.assert_allclose(got.spacing, want.spacing, atol=1e-9)


def test_legacy_converted_enhanced_ct_equals_the_classic_series(classic, enhanced: Path) -> None:
    _, want, _ = classic
    assert str(pydicom.dcmread(enhanced, stop_before_pixels=True).SOPClassUID) == LEGACY_CONVERTED
    got = read_series(enhanced, workers=1)
    _assert_same_volume(got, want)
    assert [s.frame for s in got.slices] == list(range(19, -1, -1))  # frames stacked by position
    assert all(s.path == str(enhanced) and s.instance_number is None for s in got.slices)
    assert got.meta["spacing_from_positions"] == pytest.approx(2.0)  # positions, not SliceThickness 3
    _assert_same_volume(load_study(enhanced, workers=2), load_study(classic[0], workers=1))


def test_enhanced_split_over_two_files_is_one_series(classic, tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    _, want, datasets = classic
    series = generate_uid()
    _convert(copy.deepcopy(datasets[:9]), tmp_path / "a.dcm", series, 1)
    _convert(copy.deepcopy(datasets[9:]), tmp_path / "b.dcm", series, 2)
    got = read_series(tmp_path, workers=2)
    _assert_same_volume(got, want)
    assert {Path(s.path).name for s in got.slices} == {"a.dcm", "b.dcm"}


def test_mixed_folder_of_enhanced_and_classic_files(classic, enhanced: Path, tmp_path: Path) -> None:
    folder, want, _ = classic
    for p in folder.iterdir():
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(enhanced, tmp_path / "enhanced.dcm")
    got = read_series(tmp_path, workers=1)
    _assert_same_volume(got, want)
    assert len(got.meta["series_found"]) == 2  # the classic and the enhanced series, one chosen


def test_enhanced_frames_decode_in_parallel_workers(classic, enhanced: Path, tmp_path: Path) -> None:
    shutil.copy(enhanced, tmp_path / "enhanced.dcm")
    for i in range(16):  # enough files for the process pool; skipped as non-DICOM
        (tmp_path / f"notes{i}.txt").write_text("not dicom")
    got = read_series(tmp_path, workers=2)
    _assert_same_volume(got, classic[1])
    assert got.meta["n_files_skipped"] == 16


def test_per_frame_rescale_wins_over_the_shared_one(classic, enhanced: Path, tmp_path: Path) -> None:
    _, want, _ = classic
    ds = pydicom.dcmread(enhanced)
    shared = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    assert float(shared.RescaleIntercept) == -1024
    item = copy.deepcopy(shared)
    item.RescaleIntercept = -1000  # frame 4 only: 24 HU brighter
    ds.PerFrameFunctionalGroupsSequence[3].PixelValueTransformationSequence = pydicom.Sequence([item])
    ds.save_as(tmp_path / "e.dcm")
    got = read_series(tmp_path / "e.dcm", workers=1)
    k = next(i for i, s in enumerate(got.slices) if s.frame == 3)
    expected = np.clip(want.hu[k].astype(np.int32) + 24, None, 3071)
    np.testing.assert_array_equal(got.hu[k], expected)
    others = [i for i in range(got.shape[0]) if i != k]
    np.testing.assert_array_equal(got.hu[others], want.hu[others])


def test_enhanced_frames_get_the_same_geometry_checks(enhanced: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(enhanced)
    pos = ds.PerFrameFunctionalGroupsSequence[10].PlanePositionSequence[0]
    pos.ImagePositionPatient = [float(v) for v in pos.ImagePositionPatient[:2]] + [
        float(pos.ImagePositionPatient[2]) + 1.0]  # one frame 1 mm off its place: uneven steps
    ds.save_as(tmp_path / "uneven.dcm")
    with pytest.raises(SeriesGeometryError, match="non-uniform slice spacing") as err:
        read_series(tmp_path / "uneven.dcm", workers=1)
    assert "uneven.dcm" in str(err.value)
    ds = pydicom.dcmread(enhanced)
    dup = ds.PerFrameFunctionalGroupsSequence
    dup[5].PlanePositionSequence = copy.deepcopy(dup[6].PlanePositionSequence)  # two frames, one place
    ds.save_as(tmp_path / "dup.dcm")
    with pytest.raises(SeriesGeometryError, match="2 different images at the same position"):
        read_series(tmp_path / "dup.dcm", workers=1)


def _break_frame(enhanced: Path, out: Path) -> Path:
    ds = pydicom.dcmread(enhanced)
    del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
    return out


def test_frame_without_position_is_an_error_naming_file_and_frame(enhanced: Path, tmp_path: Path) -> None:
    bad = _break_frame(enhanced, tmp_path / "s" / "bad.dcm")
    with pytest.raises(DicomError, match=r"frame 3 has no valid ImagePositionPatient") as err:
        read_series(tmp_path / "s", workers=1)
    assert str(bad) in str(err.value) and isinstance(err.value, CspineError)


def test_cli_prepare_reads_enhanced_and_names_a_broken_one(enhanced: Path, classic, tmp_path: Path,
                                                           snapshot) -> None:
    info = write_rsna_layout(tmp_path / "root", n_train=2, n_test=0, n_masks=0)
    good, broken = info.train_uids
    for uid in (good, broken):
        for f in (info.root / "train_images" / uid).iterdir():
            f.unlink()
    shutil.copy(enhanced, info.root / "train_images" / good / "1.dcm")
    bad = _break_frame(enhanced, info.root / "train_images" / broken / "1.dcm")
    snap = snapshot(info.root)
    cache = tmp_path / "c"
    result = CliRunner().invoke(app, ["ct", "prepare", "--data", str(info.root), "--cache", str(cache)])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert broken in out and str(bad) in out and "frame 3 has no valid ImagePositionPatient" in out
    snap.assert_unchanged(allow_new=False)
    cached = np.load(cache / good / "volume.npy")
    np.testing.assert_array_equal(cached, load_study(classic[0], workers=1).hu)
    assert not (cache / broken / "done.json").exists()
