"""The whole CT pipeline on tiny DICOM studies with tiny random-weight models saved as a RUN folder.

The stage-1 network's head is set to label every voxel C3 (zero weights, a large C3 bias), so which
vertebra stage 2 sees is known; stage 2 keeps its random weights (file formats are under test here,
not accuracy).
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from _rsna_fixture import write_dicom_study, write_rsna_layout
from _tiny_ct_run import PRIOR, make_run
from cspine.ct.evaluate import evaluate
from cspine.ct.inference import predict, predict_many
from cspine.ct.model import CtModel
from cspine.errors import CheckpointError, CspineError
from cspine.io.study import StudyInputError
from cspine.io.volume import volume_from_arrays
from cspine.labels import TARGETS, VERTEBRAE

SHAPE = (16, 64, 64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipe")
    make_run(base / "run")
    info = write_rsna_layout(base / "rsna", n_train=1, n_test=2, shape=SHAPE, n_masks=0)
    return base, CtModel.load(base / "run", device="cpu"), info


def test_one_study_writes_every_file(setup, tmp_path):
    base, model, info = setup
    uid = info.test_uids[1]  # numbered caudal -> cranial (reverse) by the fixture
    summary = predict_many([base / "rsna" / "test_images" / uid], model, tmp_path, progress=False)
    assert summary.predicted == [uid] and not summary.failed
    doc = json.loads((tmp_path / f"{uid}.json").read_text())
    assert doc["study_uid"] == uid
    assert set(doc["probabilities"]) == set(TARGETS)
    # only C3 was found: the others have no probability, the study says why, the patient score is partial
    assert doc["status"] == "levels missing" and doc["missing_levels"] == [v for v in VERTEBRAE if v != "C3"]
    assert 0.0 <= doc["probabilities"]["C3"] <= 1.0 and 0.0 <= doc["probabilities"]["patient_overall"] <= 1.0
    c3 = doc["vertebrae"]["C3"]
    assert c3["present"] and c3["z_range"] == [0, SHAPE[0]] and c3["box"] == [0, SHAPE[1], 0, SHAPE[2]]
    att = c3["attention"]
    assert len(att["weights"]) == 6 and sum(att["weights"]) == pytest.approx(1.0, abs=1e-4)
    # canonical slice k of a reverse-numbered study is file number nz - k
    assert att["instance_numbers"] == [SHAPE[0] - k for k in att["slice_indices"]]
    # vertebrae not found get no probability; the prior is kept apart (submission.csv needs a value)
    assert doc["vertebrae"]["C1"]["present"] is False and doc["vertebrae"]["C1"]["attention"] is None
    assert doc["probabilities"]["C1"] is None and doc["prior"]["C1"] == pytest.approx(0.1)
    assert set(doc["seconds"]) >= {"decode", "seg", "crops", "cls", "total"}
    assert doc["versions"]["packages"]["cspine"] and doc["versions"]["model"]["cls"]["weights_sha256_16"]
    assert doc["volume"]["shape"] == list(SHAPE)
    pred = pd.read_csv(tmp_path / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert pred.columns.tolist() == ["StudyInstanceUID", *TARGETS, "status", "missing_levels"]
    assert pred.loc[0, "C3"] == pytest.approx(doc["probabilities"]["C3"], abs=1e-6)
    assert pd.isna(pred.loc[0, "C1"]) and pred.loc[0, "status"] == "levels missing"
    assert pred.loc[0, "missing_levels"] == "C1;C2;C4;C5;C6;C7"
    sub = pd.read_csv(tmp_path / "submission.csv")
    assert sub["row_id"].tolist() == [f"{uid}_{t}" for t in TARGETS]
    assert sub["fractured"][0] == pytest.approx(0.1)  # C1: the documented prior fill


def count_calls(monkeypatch, func):
    """Replace ``func`` by a counting wrapper in every loaded module that holds it by name."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return func(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, func.__name__, None) is func:
            monkeypatch.setattr(module, func.__name__, counting)
    return calls


def test_crops_are_cut_once_per_study(setup, tmp_path, monkeypatch):
    from cspine.ct.cls import crops

    base, model, info = setup
    calls = count_calls(monkeypatch, crops.extract_crops)
    summary = predict_many([base / "rsna"], model, tmp_path, progress=False)
    assert sorted(summary.predicted) == sorted(info.test_uids)
    assert len(calls) == len(info.test_uids)  # once per study: timed as "crops", not again in "cls"
    for uid in info.test_uids:
        seconds = json.loads((tmp_path / f"{uid}.json").read_text())["seconds"]
        assert seconds["crops"] > 0 and seconds["cls"] > 0
        stages = seconds["decode"] + seconds["seg"] + seconds["crops"] + seconds["cls"]
        assert seconds["total"] >= stages - 1e-3


def test_rsna_root_submission_follows_test_csv_and_resumes(setup, tmp_path):
    base, model, info = setup
    root = base / "rsna"
    s1 = predict_many([root], model, tmp_path, progress=False)
    assert sorted(s1.predicted) == sorted(info.test_uids) and not s1.failed
    test = pd.read_csv(root / "test.csv", dtype=str)
    sub = pd.read_csv(tmp_path / "submission.csv")
    assert sub["row_id"].tolist() == test["row_id"].tolist()
    pred = pd.read_csv(tmp_path / "predictions.csv", dtype={"StudyInstanceUID": str}).set_index(
        "StudyInstanceUID")
    for row_id, value in zip(sub["row_id"], sub["fractured"], strict=True):
        uid, target = row_id.rsplit("_", 1) if not row_id.endswith("patient_overall") else \
            (row_id[: -len("_patient_overall")], "patient_overall")
        expected = pred.loc[uid, target]
        # a vertebra without probability (empty cell) gets the documented prior in the submission
        assert value == pytest.approx(PRIOR[target] if pd.isna(expected) else expected, abs=1e-6)
    before = (tmp_path / "submission.csv").read_text()
    (tmp_path / "predictions.csv").unlink()
    s2 = predict_many([root], model, tmp_path, progress=False)
    assert s2.predicted == [] and sorted(s2.resumed) == sorted(info.test_uids)
    assert (tmp_path / "submission.csv").read_text() == before and (tmp_path / "predictions.csv").is_file()
    # the outputs evaluate against the phantom's test labels
    m = evaluate(tmp_path / "predictions.csv", root / "test_labels.csv", tmp_path / "eval", data_root=root)
    assert m["n_studies"] == 2 and (tmp_path / "eval" / "report.md").is_file()


def test_failing_study_is_reported_and_skipped(setup, tmp_path):
    base, model, info = setup
    empty = tmp_path / "empty_study"
    empty.mkdir()
    good = base / "rsna" / "test_images" / info.test_uids[0]
    summary = predict_many([empty, good], model, tmp_path / "out", progress=False)
    assert summary.predicted == [info.test_uids[0]]
    assert len(summary.failed) == 1 and summary.failed[0][0] == str(empty)
    assert "no files" in summary.failed[0][1]
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert failures[0]["input"] == str(empty)
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv").set_index("StudyInstanceUID")
    assert pred.loc["empty_study", "status"] == "failed"
    assert pred.loc["empty_study", list(TARGETS)].isna().all()
    assert pred.loc[info.test_uids[0], "status"] == "levels missing"


def test_explain_writes_pngs(setup, tmp_path):
    base, model, info = setup
    study = base / "rsna" / "test_images" / info.test_uids[0]
    result = predict(study, model, explain_dir=tmp_path / "x", explain_threshold=0.0)
    names = sorted(p.split("/")[-1] for p in result.explain_files)
    uid = info.test_uids[0]
    assert names == [f"{uid}_C3_attention.png", f"{uid}_C3_gradcam.png"]
    assert all((tmp_path / "x" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
    assert "explain" in result.seconds


def test_in_memory_volume(setup):
    _, model, _ = setup
    hu = np.random.default_rng(1).integers(-1000, 1500, SHAPE).astype(np.int16)
    vol = volume_from_arrays(hu, (2.5, 0.8, 0.8), meta={"StudyInstanceUID": "1.2.3"})
    r = predict(vol, model)
    assert r.study_uid == "1.2.3" and r.attention["C3"]["instance_numbers"] is None
    with pytest.raises(StudyInputError, match="StudyInstanceUID"):
        predict(volume_from_arrays(hu), model)


def test_bad_inputs_are_clear_errors(setup, tmp_path):
    base, model, _ = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudyInputError, match="no files"):
        predict(empty, model)
    short = tmp_path / "short"
    write_dicom_study(short, np.zeros((5, 16, 16), np.int16), "1.2.5")
    with pytest.raises(StudyInputError, match="5 axial slices"):
        predict(short, model)
    mr = tmp_path / "mr"
    write_dicom_study(mr, np.zeros((12, 16, 16), np.int16), "1.2.6")
    import pydicom

    for f in mr.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    with pytest.raises(CspineError, match="CT"):
        predict(mr, model)
    with pytest.raises(StudyInputError, match="not found"):
        predict(tmp_path / "nowhere", model)
    half = tmp_path / "half_run"
    shutil.copytree(base / "run" / "seg", half / "seg")
    with pytest.raises(CheckpointError, match="stage 2"):
        CtModel.load(half)
    with pytest.raises(CheckpointError, match="not found"):
        CtModel.load(tmp_path / "no_run")


def test_cli_predict_and_evaluate(setup, tmp_path):
    from typer.testing import CliRunner

    from cspine.cli.main import app

    base, _, info = setup
    root = base / "rsna"
    runner = CliRunner()
    res = runner.invoke(app, ["ct", "predict", str(root), "--model", str(base / "run"), "--out",
                              str(tmp_path / "p"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "p" / "submission.csv")) == 8 * len(info.test_uids)
    res = runner.invoke(app, ["ct", "evaluate", "--pred", str(tmp_path / "p" / "predictions.csv"),
                              "--labels", str(root / "test_labels.csv"), "--out", str(tmp_path / "e"),
                              "--data", str(root)])
    assert res.exit_code == 0, res.output
    assert "RSNA weighted log loss" in res.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["n_studies"] == len(info.test_uids)
    # a RUN folder missing a stage: a clear error, exit status 2 through the console script's handler
    (tmp_path / "half").mkdir()
    res = runner.invoke(app, ["ct", "predict", str(root), "--model", str(tmp_path / "half"), "--out",
                              str(tmp_path / "q")])
    assert isinstance(res.exception, CheckpointError) and "stage 1" in str(res.exception)


def test_nifti_input_named_by_file(setup, tmp_path):
    import nibabel as nib

    _, model, _ = setup
    hu = np.random.default_rng(2).integers(-1000, 1500, (SHAPE[2], SHAPE[1], SHAPE[0])).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.5, 1.0])), tmp_path / "case_7.nii.gz")
    summary = predict_many([tmp_path / "case_7.nii.gz"], model, tmp_path / "out", progress=False)
    assert summary.predicted == ["case_7"] and not summary.failed
    doc = json.loads((tmp_path / "out" / "case_7.json").read_text())
    assert doc["volume"]["shape"] == list(SHAPE)
    assert doc["vertebrae"]["C3"]["attention"]["instance_numbers"] is None  # no DICOM slice map
