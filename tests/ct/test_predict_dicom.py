"""``cspine ct predict --dicom-out --operating-point``: the SEG and SR written per study, read back against
predictions.csv, and the positive/negative calls at the operating point."""

from __future__ import annotations

import json

import highdicom as hd
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from _rsna_fixture import write_rsna_layout
from _tiny_ct_run import make_run
from cspine.cli.main import app
from cspine.labels import STUDY_UID

SHAPE = (16, 64, 64)
POINTS = {"patient": {"sens90": 0.2, "sens95": 0.1}, "vertebra": {"sens90": 0.3, "sens95": 0.2}}


def _sr_values(path) -> dict[str, tuple[float, str]]:
    """{tracking id: (probability, fracture finding code)} of each TID 1411 group."""
    ds = pydicom.dcmread(path)
    imaging = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    out = {}
    for group in imaging.ContentSequence:
        found: dict = {}
        for item in group.ContentSequence:
            name = item.ConceptNameCodeSequence[0]
            if name.CodeMeaning == "Tracking Identifier":
                found["id"] = item.TextValue
            elif item.ValueType == "NUM" and name.CodeValue == "122157":
                found["p"] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "CODE" and name.CodeValue == "125605004":
                found["finding"] = item.ConceptCodeSequence[0].CodeValue
        out[found["id"]] = (found.get("p"), found.get("finding"))
    return out


@pytest.mark.parametrize("spec, threshold", [(None, 0.3), ("0.5", 0.5)])
def test_predict_writes_seg_and_sr_that_read_back(tmp_path, spec, threshold) -> None:
    make_run(tmp_path / "run", operating_points=POINTS)
    info = write_rsna_layout(tmp_path / "rsna", n_train=1, n_test=1, shape=SHAPE, n_masks=0)
    uid = info.test_uids[0]
    args = ["ct", "predict", str(tmp_path / "rsna" / "test_images" / uid), "--model", str(tmp_path / "run"),
            "--out", str(tmp_path / "out"), "--dicom-out", str(tmp_path / "dicom"), "--device", "cpu"]
    if spec:
        args += ["--operating-point", spec]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={STUDY_UID: str}).set_index(STUDY_UID)
    doc = json.loads((tmp_path / "out" / f"{uid}.json").read_text())
    p_c3 = float(pred.loc[uid, "C3"])
    # the default is the model's sens90; a number overrides it
    assert bool(pred.loc[uid, "C3_positive"]) == (p_c3 >= threshold)
    seg = hd.seg.segread(tmp_path / "dicom" / f"{uid}_SEG.dcm")
    assert seg.number_of_segments == 1  # stage 1 found only C3
    assert seg.get_segment_description(1).segmented_property_type.value == "113205007"  # C3
    values = _sr_values(tmp_path / "dicom" / f"{uid}_SR.dcm")
    (p_sr, finding), = [v for k, v in values.items() if "C3" in k]
    assert p_sr == pytest.approx(p_c3, abs=1e-6)
    assert finding == ("52101004" if p_c3 >= threshold else "272519000")  # present / absent
    assert doc["dicom"]["seg"].endswith("_SEG.dcm") and doc["dicom"]["segments"] == {"C3": 1}
