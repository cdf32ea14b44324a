"""What a hospital's exports do to a reader: a CT without PixelSpacing, two files of one SOP instance with
different pixels, a slice of another pixel size or frame of reference in the series, RescaleSlope 0, a zip
where a folder belongs, non-ASCII paths and symlinks. Each is read correctly or refused with a one-line
message naming the file and the problem; the inputs are never changed."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from _robust_dicom import write_series
from typer.testing import CliRunner

from _rsna_fixture import write_rsna_layout
from _tiny_ct_run import make_run
from cspine.cli.main import app
from cspine.errors import DatasetError, ImageError, SeriesGeometryError
from cspine.io.dicom import read_series
from cspine.io.images import read_image
from cspine.io.study import StudyInputError, load_study

N = 12


def _series(folder: Path) -> list[Path]:
    hu = np.full((N, 32, 32), -50, np.int16)
    hu[:, 10:20, 10:20] = 700
    return write_series(folder, hu, [(0.0, 0.0, 2.0 * k) for k in range(N)])


def _edit(path: Path, **tags: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hosp")
    make_run(base / "run")
    return base / "run"


def _predict(run: Path, inputs: list[Path], out: Path):
    return CliRunner().invoke(app, ["ct", "predict", *map(str, inputs), "--model", str(run), "--out",
                                    str(out), "--device", "cpu"])


def _failure(out: Path) -> str:
    (entry,) = json.loads((out / "failures.json").read_text())
    assert "\n" not in entry["error"]
    return entry["error"]


def test_ct_without_pixel_spacing_is_refused_not_assumed_1mm(run: Path, tmp_path: Path, snapshot) -> None:
    study = tmp_path / "nospacing"
    for f in _series(study):
        _edit(f, PixelSpacing=None)
    snap = snapshot(study)
    res = _predict(run, [study], tmp_path / "out")
    assert res.exit_code == 1, res.output
    error = _failure(tmp_path / "out")
    assert str(study) in error and "no PixelSpacing" in error and "in mm would be wrong" in error
    snap.assert_unchanged(allow_new=False)


def test_one_sop_instance_with_two_different_images_is_refused(tmp_path: Path, snapshot) -> None:
    study = tmp_path / "s"
    files = _series(study)
    stale = study / "stale_copy.dcm"
    shutil.copy(files[4], stale)
    ds = pydicom.dcmread(stale)
    ds.PixelData = (np.frombuffer(ds.PixelData, "<i2") + 7).astype("<i2").tobytes()  # an edited re-send
    ds.save_as(stale)
    snap = snapshot(study)
    with pytest.raises(SeriesGeometryError) as err:
        load_study(study, workers=1)
    msg = str(err.value)
    assert "stale_copy.dcm" in msg and files[4].name in msg and "same SOPInstanceUID" in msg
    snap.assert_unchanged(allow_new=False)
    shutil.copy(files[4], stale)  # an exact copy is only a duplicate: dropped with a warning
    vol = load_study(study, workers=1)
    assert vol.shape[0] == N and any("duplicate" in w for w in vol.meta["warnings"])


@pytest.mark.parametrize("tag, value", [("PixelSpacing", [0.7, 0.7]), ("FrameOfReferenceUID", "1.2.3.4.5")])
def test_a_slice_of_another_pixel_size_or_frame_is_not_stacked_into_the_series(tmp_path: Path, tag: str,
                                                                                value: object) -> None:
    study = tmp_path / "s"
    files = _series(study)
    _edit(files[5], **{tag: value})
    with pytest.raises(SeriesGeometryError, match="gap"):
        read_series(study, workers=1)  # by default a missing slice is refused: the odd one is not in it
    vol = load_study(study, workers=1)
    assert vol.spacing[1:] == pytest.approx((0.5, 0.5))
    assert [g["chosen"] for g in vol.meta["series_found"]].count(False) == 1  # the odd slice, left apart
    assert vol.slices[N - 1 - 5].path is None  # interpolated (canonical: top first), never the odd one
    assert str(files[5]) not in {s.path for s in vol.slices}


def test_rescale_slope_zero_is_a_skipped_file_not_a_blank_slice(tmp_path: Path) -> None:
    study = tmp_path / "s"
    files = _series(study)
    _edit(files[3], RescaleSlope="0")
    vol = load_study(study, workers=1)
    assert any("RescaleSlope 0" in w and str(files[3]) in w for w in vol.meta["warnings"])
    assert vol.slices[N - 1 - 3].path is None


def test_a_zip_where_a_folder_belongs_says_to_unpack_it(run: Path, tmp_path: Path, snapshot) -> None:
    study = tmp_path / "study"
    _series(study)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in study.iterdir():
            z.write(f, f.name)
    disguised = tmp_path / "export.dat"  # a zip whatever its name
    shutil.copy(archive, disguised)
    snap = snapshot(tmp_path)
    with pytest.raises(StudyInputError, match="is an archive, not a folder of files; unpack it"):
        load_study(disguised)
    res = _predict(run, [archive], tmp_path / "out")
    assert res.exit_code == 1
    error = _failure(tmp_path / "out")
    assert str(archive) in error and "unpack it" in error
    res = CliRunner().invoke(app, ["ct", "prepare", "--data", str(archive), "--cache", str(tmp_path / "c")])
    assert isinstance(res.exception, DatasetError) and str(archive) in str(res.exception)
    assert "unpack it" in str(res.exception) and not (tmp_path / "c").exists()
    with pytest.raises(ImageError, match="unpack it"):
        read_image(archive)
    snap.assert_unchanged()  # only the output folder is new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.dat", "out", "study", "study.zip"]


def test_non_ascii_paths_and_a_symlinked_study_are_read(run: Path, tmp_path: Path, snapshot) -> None:
    home = tmp_path / "Études Ü 研究"
    study = home / "patient ß"
    _series(study)
    os.symlink(study, tmp_path / "link")
    os.symlink(tmp_path / "nowhere.dcm", study / "ghost.dcm")  # a dangling link among the files
    snap = snapshot(home)
    out = home / "résultats"
    res = _predict(run, [study, tmp_path / "link"], out)
    assert res.exit_code == 0, res.output
    pred = pd.read_csv(out / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert len(pred) == 1  # one study, found twice (through the link): predicted once, not mixed
    doc = next(json.loads(p.read_text()) for p in out.glob("*.json") if not p.name.startswith("."))
    assert any("ghost.dcm" in w for w in doc["warnings"])
    snap.assert_unchanged()


def test_non_ascii_dataset_root_is_prepared(tmp_path: Path) -> None:
    info = write_rsna_layout(tmp_path / "données RSNA", n_train=2, n_test=0, n_masks=0)
    cache = tmp_path / "câche"
    res = CliRunner().invoke(app, ["ct", "prepare", "--data", str(info.root), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert all((cache / uid / "done.json").is_file() for uid in info.train_uids)
