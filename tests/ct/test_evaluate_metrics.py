"""``evaluate`` on a small hand-checked CSV pair: numbers and every output file."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from cspine.ct.evaluate import evaluate
from cspine.errors import DatasetError

COLS = ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "patient_overall"]
LABELS = {
    "S1": [1, 1, 0, 0, 0, 0, 0, 1],
    "S2": [0, 0, 0, 0, 1, 0, 0, 1],
    "S3": [0, 0, 0, 0, 0, 0, 0, 0],
    "S4": [0, 0, 0, 0, 0, 0, 0, 0],
    "S5": [0, 0, 0, 0, 0, 0, 1, 1],
    "S6": [0, 0, 0, 0, 0, 0, 0, 0],
}
PREDS = {
    "S1": [0.9, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8],
    "S2": [0.2, 0.2, 0.2, 0.2, 0.3, 0.2, 0.2, 0.7],
    "S3": [0.1] * 7 + [0.4],
    "S4": [0.2, 0.2, 0.2, 0.2, 0.35, 0.2, 0.2, 0.6],
    "S5": [0.1] * 6 + [0.7, 0.3],
    "S6": [0.1] * 7 + [0.2],
}


def _write(tmp_path, with_missing=False):
    lab = pd.DataFrame([[u, *v] for u, v in LABELS.items()], columns=["StudyInstanceUID", *COLS])
    lab = lab[["StudyInstanceUID", "patient_overall", *COLS[:7]]]  # train.csv column order
    if with_missing:
        lab.loc[len(lab)] = ["S7", 0, 0, 0, 0, 0, 0, 0, 0]
    pred = pd.DataFrame([[u, *v] for u, v in PREDS.items()], columns=["StudyInstanceUID", *COLS])
    lab.to_csv(tmp_path / "labels.csv", index=False)
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    return tmp_path / "predictions.csv", tmp_path / "labels.csv"


def test_evaluate_hand_checked(tmp_path):
    pred_csv, labels_csv = _write(tmp_path, with_missing=True)
    root = tmp_path / "root"
    root.mkdir()
    # Boxes on S1's slices 10 and 11 (InstanceNumbers), one in each box file evaluate reads (RSNA's
    # training boxes and the phantom's held-out ones).
    for name, slice_number in (("train_bounding_boxes.csv", 10), ("test_bounding_boxes.csv", 11)):
        pd.DataFrame({"StudyInstanceUID": ["S1"], "x": [1], "y": [1], "width": [5], "height": [5],
                      "slice_number": [slice_number]}).to_csv(root / name, index=False)
    (tmp_path / "S1.json").write_text(json.dumps({"vertebrae": {
        "C1": {"attention": {"weights": [0.5, 0.3, 0.2], "instance_numbers": [9, 10, 11]}},
        "C2": {"attention": {"weights": [0.25, 0.25, 0.5], "instance_numbers": [20, 21, 22]}},
    }}))
    out = tmp_path / "eval"
    m = evaluate(pred_csv, labels_csv, out, data_root=root)

    assert m["n_studies"] == 6 and m["n_missing_predictions"] == 1
    # patient: positives .8 .7 .3 vs negatives .4 .6 .2 -> 3 + 3 + 1 of 9 pairs
    assert m["patient_auc"] == pytest.approx(7 / 9)
    lo, hi = m["patient_auc_ci95"]
    assert lo <= 7 / 9 <= hi
    # at 0.5: called .8 .7 .6 -> tp 2, fp 1, tn 2, fn 1
    assert m["sensitivity"]["at_0.5"] == pytest.approx(2 / 3)
    assert m["specificity"]["at_0.5"] == pytest.approx(2 / 3)
    assert m["precision"]["at_0.5"] == pytest.approx(2 / 3)
    assert m["accuracy"]["at_0.5"] == pytest.approx(4 / 6)
    # Youden: J(.8)=1/3, J(.7)=2/3, J(.6)=1/3, J(.4)=0, J(.3)=1/3 -> .7: tp 2, fp 0, fn 1, tn 3
    assert m["youden_threshold"] == pytest.approx(0.7)
    assert m["specificity"]["at_youden"] == 1.0 and m["precision"]["at_youden"] == 1.0
    assert m["f1"]["at_youden"] == pytest.approx(4 / 5)
    assert m["accuracy"]["at_youden"] == pytest.approx(5 / 6)
    # vertebrae: C1, C2, C7 perfectly separated; C5: .3 beats 4 of the negatives (.1 .1 .1 .1) but not .35
    va = m["vertebra_auc"]
    assert va["C1"] == va["C2"] == va["C7"] == 1.0 and va["C5"] == pytest.approx(0.8)
    assert va["C3"] is None  # no fractured C3: undefined, left out of the mean
    assert m["vertebra_auc_mean"] == pytest.approx((1 + 1 + 0.8 + 1) / 4)
    # localization: S1 (C1 .9, C2 .6) found, S2 (C5 .3) missed, S5 (C7 .7) found
    loc = m["localization_accuracy"]
    assert loc["overall"] == pytest.approx(2 / 3) and loc["n_fractured_patients"] == 3
    assert loc["per_level"]["C5"] == 0.0 and loc["per_level"]["C1"] == 1.0 and loc["per_level"]["C4"] is None
    # RSNA loss: recomputed term by term
    total = 0.0
    for uid, y in LABELS.items():
        num = den = 0.0
        for j, (t, p) in enumerate(zip(y, PREDS[uid], strict=True)):
            w = (14 if t else 7) if j == 7 else (2 if t else 1)
            num += w * -(math.log(p) if t else math.log(1 - p))
            den += w
        total += num / den
    assert m["rsna_weighted_log_loss"] == pytest.approx(total / 6)
    assert m["prevalence_source"].startswith("evaluated labels")
    assert m["beats_prevalence_baseline"] == (m["rsna_weighted_log_loss"] < m["prevalence_baseline_log_loss"])
    # attention: C1 puts .3 + .2 on boxed slices 10, 11 (2 of its 3 slices); C2's crop has no box
    assert m["attention_alignment"] == pytest.approx(0.5)
    assert m["attention_alignment_chance"] == pytest.approx(2 / 3)
    assert m["attention_alignment_n_vertebrae"] == 1

    for name in ("metrics.json", "report.md", "roc.png", "roc_levels.png", "pr.png", "calibration.png",
                 "calibration_vertebrae.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["patient_auc"] == pytest.approx(7 / 9)
    report = (out / "report.md").read_text()
    assert "0.778" in report and "![roc](roc.png)" in report
    assert f"alone gives {m['vertebra_auc_pooled_level_prior']:.3f}" in report


def test_evaluate_without_boxes_reports_null(tmp_path):
    pred_csv, labels_csv = _write(tmp_path)
    m = evaluate(pred_csv, labels_csv, tmp_path / "e")
    assert m["attention_alignment"] is None


def test_evaluate_bad_inputs(tmp_path):
    pred_csv, labels_csv = _write(tmp_path)
    with pytest.raises(DatasetError, match="lacks the columns"):
        bad = tmp_path / "bad.csv"
        pd.DataFrame({"StudyInstanceUID": ["S1"], "C1": [0.5]}).to_csv(bad, index=False)
        evaluate(bad, labels_csv, tmp_path / "e")
    other = tmp_path / "other.csv"
    df = pd.read_csv(pred_csv)
    df["StudyInstanceUID"] = "X" + df["StudyInstanceUID"]
    df.to_csv(other, index=False)
    with pytest.raises(DatasetError, match="no study of the labels"):
        evaluate(other, labels_csv, tmp_path / "e")
    df = pd.read_csv(pred_csv)
    df.loc[0, "C3"] = 1.5
    df.to_csv(other, index=False)
    with pytest.raises(DatasetError, match=r"outside \[0, 1\]"):
        evaluate(other, labels_csv, tmp_path / "e")
    assert not (tmp_path / "e" / "metrics.json").exists()  # nothing half-written after an error


def test_level_prior_reference():
    """The pooled vertebra AUC of knowing only each level's training prevalence, hand-worked."""
    from cspine.ct.evaluate import compute_metrics

    labels = pd.DataFrame([[0, 0, 0, 0, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0, 0, 1]], index=["A", "B"],
                          columns=COLS)
    pred = pd.DataFrame([[0.5] * 8, [0.5] * 8], index=["A", "B"], columns=COLS)
    prior = {**{c: 0.05 for c in COLS[:6]}, "C7": 0.2, "patient_overall": 0.5}
    m = compute_metrics(pred, labels, train_prevalence=prior)
    # scores: every C7 0.2, every other level 0.05. Positive A-C7 beats 11 negatives and ties B-C7;
    # positive B-C1 ties 11 negatives at 0.05 and loses to B-C7: (11.5 + 5.5) / 24.
    assert m["vertebra_auc_pooled_level_prior"] == pytest.approx(17 / 24)
    assert m["vertebra_auc_pooled"] == pytest.approx(0.5)
    assert m["beats_level_prior"] is False
    # without training prevalences the evaluated labels' own are used: C1 and C7 at 1/2, the rest 0;
    # each positive beats the 10 zeros and ties the other two at 1/2: (11 + 11) / 24
    m_in = compute_metrics(pred, labels)
    assert m_in["vertebra_auc_pooled_level_prior"] == pytest.approx(22 / 24)
    # scores that see the fracture: every fractured vertebra above every intact one
    seen = pd.DataFrame([[0.1] * 6 + [0.9, 0.9], [0.9] + [0.1] * 6 + [0.9]], index=["A", "B"], columns=COLS)
    m_seen = compute_metrics(seen, labels, train_prevalence=prior)
    assert m_seen["vertebra_auc_pooled"] == 1.0 and m_seen["beats_level_prior"] is True
    from cspine.reports.ct_report import render_report

    warning = "not above the level prior"
    assert warning in render_report(m) and warning not in render_report(m_seen)
