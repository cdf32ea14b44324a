"""Stage 1 finding C1..C7 out of their cranio-caudal order is said to be so: the study's status is
``levels out of order`` (in predictions.csv and on the console), with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _rsna_fixture import write_dicom_study
from _tiny_ct_run import make_run
from cspine.cli.main import app
from cspine.ct.seg.postprocess import Segmentation, enforce_level_order
from cspine.ct.study_status import LEVELS_OUT_OF_ORDER, level_order_problem
from cspine.labels import LABEL_OF, VERTEBRAE

SHAPE = (28, 64, 64)


def _labels(order: list[str], overlap: bool = False) -> np.ndarray:
    """Levels in ``order`` from the top, 4 slices each (``overlap``: C2 drawn over C3's slices too)."""
    lab = np.zeros(SHAPE, np.uint8)
    for k, name in enumerate(order):
        lab[4 * k:4 * k + 4, 20:40, 20:40] = LABEL_OF[name]
    if overlap:
        lab[8:12, 42:50, 20:40] = LABEL_OF["C2"]
    return lab


def test_level_order_problem_reads_the_geometry_and_stage_1s_relabelling() -> None:
    ok = Segmentation.from_labels(_labels(list(VERTEBRAE)))
    assert level_order_problem(ok.vertebrae, ok.warnings) is None
    swapped = Segmentation.from_labels(_labels(["C1", "C2", "C4", "C3", "C5", "C6", "C7"]))
    reason = level_order_problem(swapped.vertebrae)
    assert reason is not None and "C4 lies above C3" in reason
    relabelled, warnings = enforce_level_order(_labels(["C1", "C2", "C4", "C3", "C5", "C6", "C7"]))
    fixed = Segmentation.from_labels(relabelled, warnings)  # in order now, but renamed by position
    assert "relabelled by position" in (level_order_problem(fixed.vertebrae, fixed.warnings) or "")
    twice = Segmentation.from_labels(_labels(list(VERTEBRAE), overlap=True))
    assert "C2 and C3 share" in (level_order_problem(twice.vertebrae) or "")
    doc = {v: {"present": b.present, "z_range": list(b.z_range), "centroid": list(b.centroid)}
           for v, b in swapped.vertebrae.items()}  # a prediction JSON's geometry works too
    assert "C4 lies above C3" in (level_order_problem(doc) or "")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("order")
    make_run(base / "run")
    hu = np.full(SHAPE, -50, np.int16)
    hu[:, 20:40, 20:40] = 700  # bone in a small neck-sized body
    write_dicom_study(base / "study", hu, "1.2.3.77")
    return base


def test_predict_flags_levels_out_of_order(setup: Path, tmp_path: Path, monkeypatch, snapshot) -> None:
    import cspine.ct.seg.segment as seg_module

    def fake_segment(volume, model, **kw):  # a stage 1 whose network put C4 above C3
        labels, warnings = enforce_level_order(_labels(["C1", "C2", "C4", "C3", "C5", "C6", "C7"]))
        return Segmentation.from_labels(labels, warnings)

    monkeypatch.setattr(seg_module, "segment", fake_segment)
    snap = snapshot(setup / "study")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["ct", "predict", str(setup / "study"), "--model", str(setup / "run"),
                                   "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"{LEVELS_OUT_OF_ORDER} 1.2.3.77" in text and "relabelled by position" in text
    pred = pd.read_csv(out / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert pred.loc[0, "status"] == LEVELS_OUT_OF_ORDER
    doc = json.loads((out / "1.2.3.77.json").read_text())
    assert doc["status"] == LEVELS_OUT_OF_ORDER and "C4->C3" in doc["status_reason"]
    snap.assert_unchanged(allow_new=False)
