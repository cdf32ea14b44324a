"""``evaluate --model``: stored operating points with bootstrap CIs, ECE before/after calibration, the
reliability diagram and the report, on a hand-checked set."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cspine.ct.cls.calibrate import noisy_or, sigmoid
from cspine.ct.evaluate import calibration_errors, evaluate, uncalibrated_probabilities
from cspine.labels import TARGETS
from cspine.reports.curves import calibration_bins

COLS = list(TARGETS)
LABELS = {
    "S1": [1, 0, 0, 0, 0, 0, 0, 1],
    "S2": [0, 1, 0, 0, 0, 0, 0, 1],
    "S3": [0, 0, 0, 0, 0, 0, 0, 0],
    "S4": [0, 0, 0, 0, 0, 0, 1, 1],
    "S5": [0, 0, 0, 0, 0, 0, 0, 0],
}
PREDS = {
    "S1": [0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9],
    "S2": [0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.6],
    "S3": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0.55],
    "S4": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.4],
    "S5": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2],
}
T, B = 2.0, 0.5


def _setup(tmp_path, points=True, logits=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([[u, *v] for u, v in LABELS.items()], columns=["StudyInstanceUID", *COLS]).to_csv(
        tmp_path / "labels.csv", index=False)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    pd.DataFrame([[u, *v] for u, v in PREDS.items()], columns=["StudyInstanceUID", *COLS]).to_csv(
        pred_dir / "predictions.csv", index=False)
    for uid in PREDS:
        verts = {v: {"present": not (uid == "S5" and v == "C1")} for v in COLS[:7]}
        if logits is not None:
            for v in verts:
                verts[v]["logit"] = logits
        (pred_dir / f"{uid}.json").write_text(json.dumps({"study_uid": uid, "vertebrae": verts}))
    cls = tmp_path / "run" / "cls"
    cls.mkdir(parents=True)
    extra = {"calibration": {"temperature": T, "bias": B}, "patient_pool": "noisy_or"}
    if points:
        extra["operating_points"] = {"patient": {"sens90": 0.4, "sens95": 0.4},
                                     "vertebra": {"sens90": 0.3, "sens95": None}, "targets": [0.9, 0.95]}
    (cls / "config.json").write_text(json.dumps({"kind": "vertebra_classifier", "extra": extra}))
    return pred_dir / "predictions.csv", tmp_path / "labels.csv", tmp_path / "run"


def test_operating_points_hand_checked(tmp_path):
    pred, labels, run = _setup(tmp_path)
    m = evaluate(pred, labels, tmp_path / "eval", model_dir=run)
    pat = m["operating_points"]["sens90"]["patient"]
    # patient >= 0.4: S1 0.9 (+), S2 0.6 (+), S3 0.55 (-), S4 0.4 (+), S5 0.2 (-): tp 3, fp 1, tn 1, fn 0
    assert (pat["tp"], pat["fp"], pat["tn"], pat["fn"]) == (3, 1, 1, 0)
    assert pat["sensitivity"] == 1.0 and pat["specificity"] == 0.5
    assert pat["sensitivity_ci95"] == [1.0, 1.0]
    low, high = pat["specificity_ci95"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0 and low < high
    ver = m["operating_points"]["sens90"]["vertebra"]
    # vertebrae >= 0.3: positives S1-C1 0.8, S2-C2 0.5, S4-C7 0.3 all found; negatives S3-C7 0.4 called
    assert (ver["tp"], ver["fp"], ver["fn"], ver["tn"]) == (3, 1, 0, 31)
    assert ver["specificity"] == pytest.approx(31 / 32)
    lo, hi = ver["specificity_ci95"]
    assert lo <= 31 / 32 <= hi
    assert m["operating_points"]["sens95"]["vertebra"] == {"threshold": None}
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Operating points" in report and "| sens90 | patient | 0.400 | 1.000 (1.000-1.000) |" in report
    assert "| sens95 | vertebra | undefined |" in report
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["operating_points"]["sens90"]["patient"]["threshold"] == 0.4


def test_ece_hand_worked():
    # Four patients: two at 0.1 (one positive), two at 0.9 (both positive).
    # Bin [0.1, 0.2): |0.1 - 0.5| x 2; bin [0.9, 1]: |0.9 - 1.0| x 2 -> (0.8 + 0.2) / 4 = 0.25.
    assert float(calibration_bins([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9])["ece"]) == pytest.approx(0.25)
    y = np.zeros((4, 8), np.int8)
    y[:, 7] = [0, 1, 1, 1]
    p = np.full((4, 8), 0.05)
    p[:, 7] = [0.1, 0.1, 0.9, 0.9]
    out = calibration_errors(y, p, None, "none")
    assert out["ece_after"]["patient"] == pytest.approx(0.25)
    assert out["ece_after"]["vertebra"] == pytest.approx(0.05)  # all 28 at 0.05, none positive
    assert out["ece_before"] is None


def test_before_calibration_inverts_the_stored_calibration(tmp_path):
    pred, labels, run = _setup(tmp_path)
    p = np.array([PREDS[u] for u in PREDS])
    uids = pd.Index(list(PREDS))
    raw, note = uncalibrated_probabilities(p, uids, pred.parent, run)
    assert "T=2.000" in note
    # p = 0.5 -> logit 0 -> z = T * (0 - b) = -1 -> sigmoid(-1)
    assert raw[1, 1] == pytest.approx(1 / (1 + math.e), abs=1e-9)
    # p = 0.8 -> z = 2 * (log 4 - 0.5)
    assert raw[0, 0] == pytest.approx(sigmoid(2 * (math.log(4) - 0.5)), abs=1e-9)
    assert raw[4, 0] == 0.1  # S5's C1 was not classified: it keeps the prior
    assert raw[2, 7] == pytest.approx(noisy_or(raw[2, :7]))  # uncalibrated patient = pool of raw vertebrae
    m = evaluate(pred, labels, tmp_path / "eval", model_dir=run)
    y = np.array([LABELS[u] for u in PREDS])
    assert m["calibration"]["ece_before"]["patient"] == pytest.approx(
        float(calibration_bins(y[:, 7], raw[:, 7])["ece"]))
    assert m["calibration"]["ece_after"]["patient"] == pytest.approx(
        float(calibration_bins(y[:, 7], p[:, 7])["ece"]))
    assert "## Calibration" in (tmp_path / "eval" / "report.md").read_text()


def test_logits_in_json_win_and_without_either_before_is_absent(tmp_path):
    pred, labels, run = _setup(tmp_path / "a", logits=0.0)
    p = np.array([PREDS[u] for u in PREDS])
    raw, note = uncalibrated_probabilities(p, pd.Index(list(PREDS)), pred.parent, run)
    assert note == "raw logits from <UID>.json" and raw[0, 0] == 0.5 and raw[4, 0] == 0.1
    pred, labels, _ = _setup(tmp_path / "b")
    m = evaluate(pred, labels, tmp_path / "b" / "eval")
    assert m["calibration"]["ece_before"] is None and "raw logits unavailable" in m["calibration"]["note"]
    assert m["operating_points"] is None
    assert "raw logits unavailable" in (tmp_path / "b" / "eval" / "report.md").read_text()


def test_model_without_points_and_wrong_model(tmp_path):
    from cspine.errors import DatasetError

    pred, labels, run = _setup(tmp_path, points=False)
    m = evaluate(pred, labels, tmp_path / "eval", model_dir=run)
    assert m["operating_points"] is None and "no operating points" in m["operating_points_note"]
    with pytest.raises(DatasetError, match="RUN/cls/config.json"):
        evaluate(pred, labels, tmp_path / "eval2", model_dir=tmp_path / "nope")
