"""A study that is not a cervical spine CT is said to be so, and broken studies are refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _tiny_ct_run import make_run
from cspine.cli.main import app

REAL_CT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-ct-series" / "dicom"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("nc")
    make_run(base / "run")
    return base / "run"


def test_real_abdominal_ct_is_not_a_cervical_spine_ct(run, tmp_path, snapshot):
    study = tmp_path / "abdomen"
    shutil.copytree(REAL_CT, study)
    snap = snapshot(study)
    res = CliRunner().invoke(app, ["ct", "predict", str(study), "--model", str(run), "--out",
                                   str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "not a cervical spine CT" in res.output
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert pred.loc[0, "status"] == "not a cervical spine CT"
    assert pred.loc[0, ["C1", "C3", "patient_overall"]].isna().all()  # no made-up probability
    docs = [p for p in (tmp_path / "out").glob("*.json") if not p.name.startswith(".")]
    doc = json.loads(docs[0].read_text())
    assert doc["probabilities"]["patient_overall"] is None and "neck" in doc["status_reason"]
    snap.assert_unchanged(allow_new=False)  # the source series is untouched


def _nifti(path: Path, hu: np.ndarray, spacing=(0.8, 0.8, 2.5)) -> Path:
    nib.save(nib.Nifti1Image(hu.astype(np.float32), np.diag([*spacing, 1.0])), path)
    return path


@pytest.mark.parametrize("case, message", [
    ("nan", "NaN"), ("inf", "infinite voxel"), ("coarse", "coarser than the 5 mm"), ("blank", "constant"),
])
def test_broken_ct_fails_with_a_named_reason(run, tmp_path, snapshot, case, message):
    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 1500, (64, 64, 16)).astype(np.float32)  # (x, y, z)
    spacing = (0.8, 0.8, 2.5)
    if case == "nan":
        hu[:, :, 4:6] = np.nan
    elif case == "inf":  # a broken float conversion: +-inf, not NaN
        hu[:, :, 7] = np.inf
        hu[:, :, 8] = -np.inf
    elif case == "coarse":
        spacing = (0.8, 0.8, 6.0)
    else:
        hu[:, :, 3:] = -1000.0
    src = tmp_path / "in"
    src.mkdir()
    path = _nifti(src / f"{case}_ct.nii.gz", hu, spacing)
    snap = snapshot(src)
    res = CliRunner().invoke(app, ["ct", "predict", str(path), "--model", str(run), "--out",
                                   str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 1, res.output
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert failures[0]["input"] == str(path) and message in failures[0]["error"]
    assert str(path) in failures[0]["error"]
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert pred.loc[0, "StudyInstanceUID"] == f"{case}_ct" and pred.loc[0, "status"] == "failed"
    snap.assert_unchanged(allow_new=False)


def test_body_part_tag_names_another_region(run, tmp_path):
    import pydicom

    from _rsna_fixture import write_dicom_study

    study = tmp_path / "knee"
    write_dicom_study(study, np.random.default_rng(4).integers(-1000, 1500, (16, 64, 64)).astype(np.int16),
                      "1.2.9")
    for f in study.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.BodyPartExamined = "KNEE"
        ds.save_as(f)
    from cspine.ct.inference import predict
    from cspine.ct.model import CtModel

    r = predict(study, CtModel.load(run, device="cpu"))
    assert r.status == "not a cervical spine CT" and "KNEE" in r.status_reason and r.patient_overall is None
