"""Outputs never lose or mix results: model fingerprints gate reuse, foreign files stop the run, and an
unusable output path is refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _rsna_fixture import write_dicom_study
from _tiny_ct_run import make_run
from cspine.cli.main import app
from cspine.ct.inference import predict_many
from cspine.ct.model import CtModel
from cspine.output_folder import MANIFEST, OutputFolderError

SHAPE = (16, 64, 64)


def _cli(runs, args):
    base = ["ct", "predict", str(runs / "studies" / "s1"), "--model", str(runs / "run_a")]
    return CliRunner().invoke(app, base + args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("outs")
    make_run(base / "run_a", seed=0)
    make_run(base / "run_b", seed=1)
    hu = np.random.default_rng(0).integers(-1000, 1500, SHAPE).astype(np.int16)
    write_dicom_study(base / "studies" / "s1", hu, "1.2.3.1")
    return base


def test_another_model_redoes_the_study(runs, tmp_path):
    a = CtModel.load(runs / "run_a", device="cpu")
    b = CtModel.load(runs / "run_b", device="cpu")
    assert a.fingerprint != b.fingerprint
    study = runs / "studies" / "s1"
    s1 = predict_many([study], a, tmp_path, progress=False)
    first = json.loads((tmp_path / "1.2.3.1.json").read_text())
    s_again = predict_many([study], a, tmp_path, progress=False)
    assert s1.predicted == ["1.2.3.1"] and s_again.resumed == ["1.2.3.1"]  # same model: reused
    s2 = predict_many([study], b, tmp_path, progress=False)
    assert s2.predicted == ["1.2.3.1"] and not s2.resumed  # another model: predicted again
    second = json.loads((tmp_path / "1.2.3.1.json").read_text())
    assert second["run_key"]["model"] == b.fingerprint != first["run_key"]["model"]
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert pred.loc[0, "C3"] == pytest.approx(second["probabilities"]["C3"], abs=1e-6)
    # other options (an operating point) also redo it
    from cspine.ct.cls.operating_points import resolve_operating_point

    op = resolve_operating_point("0.3", None)
    s3 = predict_many([study], b, tmp_path, progress=False, operating_point=op)
    assert s3.predicted == ["1.2.3.1"]


def test_stale_study_is_left_out_of_the_new_csv(runs, tmp_path):
    a = CtModel.load(runs / "run_a", device="cpu")
    b = CtModel.load(runs / "run_b", device="cpu")
    other = tmp_path / "studies" / "s2"
    hu = np.random.default_rng(1).integers(-1000, 1500, SHAPE).astype(np.int16)
    write_dicom_study(other, hu, "1.2.3.2")
    predict_many([runs / "studies" / "s1", other], a, tmp_path / "out", progress=False)
    s = predict_many([runs / "studies" / "s1"], b, tmp_path / "out", progress=False)
    assert s.left_out == ["1.2.3.2"]
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert pred["StudyInstanceUID"].tolist() == ["1.2.3.1"]
    assert (tmp_path / "out" / "1.2.3.2.json").is_file()  # kept on disk, only unlisted


def test_foreign_file_stops_ct_predict(runs, tmp_path, snapshot):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("my own notes\n")
    snap = snapshot(out)
    res = _cli(runs, ["--out", str(out), "--device", "cpu"])
    assert isinstance(res.exception, OutputFolderError), res.output
    assert "predictions.csv" in str(res.exception) and "not written by" in str(res.exception)
    snap.assert_unchanged(allow_new=False)
    res = _cli(runs, ["--out", str(out), "--device", "cpu", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "my own notes" not in (out / "predictions.csv").read_text()
    assert "predictions.csv" in json.loads((out / MANIFEST).read_text())["files"]


def test_foreign_study_json_stops_the_run(runs, tmp_path, snapshot):
    out = tmp_path / "out"
    out.mkdir()
    (out / "1.2.3.1.json").write_text('{"mine": true}\n')
    snap = snapshot(out)
    a = CtModel.load(runs / "run_a", device="cpu")
    with pytest.raises(OutputFolderError, match="1.2.3.1.json"):
        predict_many([runs / "studies" / "s1"], a, out, progress=False)
    snap.assert_unchanged()


def test_edited_output_counts_as_foreign(runs, tmp_path):
    a = CtModel.load(runs / "run_a", device="cpu")
    predict_many([runs / "studies" / "s1"], a, tmp_path, progress=False)
    with open(tmp_path / "submission.csv", "a") as f:
        f.write("# reviewed by Dr X\n")
    with pytest.raises(OutputFolderError, match="submission.csv"):
        predict_many([runs / "studies" / "s1"], a, tmp_path, progress=False)


def test_output_path_that_is_a_file(runs, tmp_path, snapshot):
    target = tmp_path / "out.txt"
    target.write_text("x")
    snap = snapshot(tmp_path)
    res = _cli(runs, ["--out", str(target), "--device", "cpu"])
    assert isinstance(res.exception, OutputFolderError) and "is a file" in str(res.exception)
    assert str(target) in str(res.exception)
    snap.assert_unchanged(allow_new=False)


def test_output_folder_cannot_be_created(runs, tmp_path, snapshot):
    (tmp_path / "afile").write_text("x")
    snap = snapshot(tmp_path)
    with pytest.raises(OutputFolderError, match="cannot create the output folder"):
        predict_many([runs / "studies" / "s1"], CtModel.load(runs / "run_a", device="cpu"),
                     tmp_path / "afile" / "out", progress=False)
    snap.assert_unchanged(allow_new=False)
