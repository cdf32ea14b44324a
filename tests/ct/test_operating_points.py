"""Operating points: hand-worked thresholds, JSON round trip, storage in a model folder, the resolver."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cspine.ct.cls.operating_points import (
    OperatingPointError,
    OperatingPoints,
    choose_operating_points,
    load_operating_points,
    point_name,
    resolve_operating_point,
    threshold_for_sensitivity,
)
from cspine.errors import CheckpointError
from cspine.metrics.binary import threshold_metrics


def test_threshold_hand_worked_ten_positives():
    pos = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    neg = [0.95, 0.65, 0.15, 0.01]
    s, y = pos + neg, [1] * 10 + [0] * 4
    # 90 % of 10 positives = 9 found: the 9th highest positive score; 95 % needs all 10.
    assert threshold_for_sensitivity(s, y, 0.90) == 0.1
    assert threshold_for_sensitivity(s, y, 0.95) == 0.05
    assert threshold_for_sensitivity(s, y, 0.10) == 0.9
    # It is the highest such threshold: the target is met there and missed just above it.
    for target in (0.9, 0.95):
        t = threshold_for_sensitivity(s, y, target)
        assert threshold_metrics(y, s, t).sensitivity >= target
        assert threshold_metrics(y, s, np.nextafter(t, 1.0)).sensitivity < target


def test_threshold_float_products_and_ties():
    # 0.95 * 20 = 19.000000000000004 in floats: 19 positives suffice, not 20.
    pos = np.linspace(0.99, 0.04, 20)
    assert threshold_for_sensitivity(pos, np.ones(20), 0.95) == pytest.approx(pos[18])
    # Tied scores are all called positive at their value.
    assert threshold_for_sensitivity([0.5, 0.5, 0.5, 0.2], [1, 1, 1, 1], 0.5) == 0.5
    assert threshold_for_sensitivity([0.3, 0.2], [0, 0], 0.9) is None
    with pytest.raises(ValueError):
        threshold_for_sensitivity([0.3], [1], 0.0)


def test_point_names():
    assert [point_name(t) for t in (0.9, 0.95, 0.975)] == ["sens90", "sens95", "sens97.5"]


def _probs_labels():
    # 4 patients, columns C1..C7, patient_overall
    p = np.array([
        [0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.8],
        [0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.3, 0.6],
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3],
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.5],
    ])
    y = np.array([
        [1, 0, 0, 0, 0, 0, 0, 1],
        [0, 1, 0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 1],
    ])
    return p, y


def test_choose_operating_points_both_levels_and_json_round_trip():
    p, y = _probs_labels()
    ops = choose_operating_points(p, y)
    # patients: positives 0.8, 0.6, 0.5 -> ceil(0.9 * 3) = 3rd = 0.5 for both targets
    assert ops.patient == {"sens90": 0.5, "sens95": 0.5}
    # vertebrae: positives 0.9, 0.6, 0.3, 0.4 -> sorted 0.9, 0.6, 0.4, 0.3; ceil(0.9 * 4) = 4th = 0.3
    assert ops.vertebra == {"sens90": 0.3, "sens95": 0.3}
    assert ops.counts == {"n_patients": 4, "n_positive_patients": 3, "n_vertebrae": 28,
                          "n_positive_vertebrae": 4}
    doc = json.loads(json.dumps(ops.to_dict()))
    assert OperatingPoints.from_dict(doc) == ops
    ops2 = choose_operating_points(p, y, targets=(0.5,))
    assert ops2.patient == {"sens50": 0.6} and ops2.vertebra == {"sens50": 0.6}
    with pytest.raises(ValueError, match="patient_overall"):
        choose_operating_points(p[:, :7], y[:, :7])


def test_choose_accepts_a_dataframe():
    import pandas as pd

    from cspine.labels import TARGETS

    p, y = _probs_labels()
    cols = list(TARGETS)
    ops = choose_operating_points(pd.DataFrame(p, columns=cols), pd.DataFrame(y, columns=cols))
    assert ops.patient["sens90"] == 0.5


def _model(tmp_path, block):
    cls = tmp_path / "run" / "cls"
    cls.mkdir(parents=True)
    extra = {"calibration": {"temperature": 1.0, "bias": 0.0}}
    if block is not None:
        extra["operating_points"] = block
    (cls / "config.json").write_text(json.dumps({"kind": "vertebra_classifier", "config": {},
                                                 "extra": extra}))
    return tmp_path / "run"


def test_load_from_model_folder(tmp_path):
    p, y = _probs_labels()
    run = _model(tmp_path, choose_operating_points(p, y).to_dict())
    for folder in (run, run / "cls"):
        ops = load_operating_points(folder)
        assert ops is not None and ops.patient["sens95"] == 0.5
    old = _model(tmp_path / "old", None)
    assert load_operating_points(old) is None
    with pytest.raises(CheckpointError, match="config.json"):
        load_operating_points(tmp_path / "nothing")


def test_resolve():
    p, y = _probs_labels()
    ops = choose_operating_points(p, y)
    r = resolve_operating_point("sens90", ops)
    assert (r.patient, r.vertebra, r.source) == (0.5, 0.3, "stored")
    assert r.positive(0.5, "patient") and not r.positive(0.49, "patient") and r.positive(0.3)
    assert resolve_operating_point("SENS95", ops).name == "sens95"
    fixed = resolve_operating_point("0.35", None)
    assert (fixed.patient, fixed.vertebra, fixed.source) == (0.35, 0.35, "fixed")
    for bad, msg in (("0", "between 0 and 1"), ("1.0", "between 0 and 1"), ("-0.2", "between 0 and 1"),
                     ("nan", "between 0 and 1"), ("sens80", "stores sens90, sens95"),
                     ("youden", "neither")):
        with pytest.raises(OperatingPointError, match=msg):
            resolve_operating_point(bad, ops)
    with pytest.raises(OperatingPointError, match="stores no operating points"):
        resolve_operating_point("sens90", None)
    undefined = choose_operating_points(p, np.zeros_like(y))
    assert undefined.patient["sens90"] is None
    with pytest.raises(OperatingPointError, match="undefined at patient level"):
        resolve_operating_point("sens90", undefined)
