"""``cspine serve --operating-point``: resolved as ``ct predict`` resolves it, applied to uploads, to results
without a point, and (when asked for) in place of each result's own calls."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from cspine.ct.cls.operating_points import OperatingPointError, OperatingPoints  # noqa: E402
from cspine.viewer.store import (  # noqa: E402
    StudyStore,
    flagged_vertebrae,
    operating_point,
    resolve_serve_point,
)

PROBS = {"C1": 0.2, "C2": 0.7, "C3": None, "C4": 0.1, "C5": 0.1, "C6": 0.35, "C7": 0.1,
         "patient_overall": 0.8}


class StoredModel:
    """What resolve_serve_point needs of a CtModel: its stored points."""

    def operating_points(self) -> OperatingPoints:
        return OperatingPoints({"sens90": 0.6, "sens95": 0.5}, {"sens90": 0.3, "sens95": 0.15})


def _doc(with_point: bool) -> dict:
    doc = {"study_uid": "1.2.3", "probabilities": dict(PROBS)}
    if with_point:
        doc["operating_point"] = {"name": "sens90", "patient_threshold": 0.4, "vertebra_threshold": 0.3,
                                  "source": "stored"}
        doc["vertebrae"] = {"C1": {"positive": False}, "C2": {"positive": True}, "C6": {"positive": True}}
        doc["patient_positive"] = True
    return doc


def test_the_serve_point_is_resolved_like_ct_predicts():
    assert resolve_serve_point(None, None) is None
    fixed = resolve_serve_point("0.65", None)
    assert fixed.explicit and (fixed.point.vertebra, fixed.point.patient) == (0.65, 0.65)
    with pytest.raises(OperatingPointError, match="needs --model"):
        resolve_serve_point("sens90", None)
    with pytest.raises(OperatingPointError, match="strictly between 0 and 1"):
        resolve_serve_point("1.5", None)
    default = resolve_serve_point(None, StoredModel())  # the model's sens90, for results without a point
    assert not default.explicit and (default.point.name, default.point.vertebra) == ("sens90", 0.3)
    asked = resolve_serve_point("sens95", StoredModel())
    assert asked.explicit and (asked.point.vertebra, asked.point.patient) == (0.15, 0.5)


def test_results_are_called_at_the_serve_point_when_asked_or_when_they_have_none():
    default = resolve_serve_point(None, StoredModel())
    own = _doc(with_point=True)
    assert operating_point(own, default)["name"] == "sens90"
    assert flagged_vertebrae(own, default) == ["C2", "C6"]
    bare = _doc(with_point=False)
    op = operating_point(bare, default)
    assert op["vertebra"] == 0.3 and "called here at sens90" in op["note"]
    assert flagged_vertebrae(bare, default) == ["C2", "C6"]  # not 0.5's ["C2"]
    strict = resolve_serve_point("0.65", None)  # replaces the result's own calls
    op = operating_point(own, strict)
    assert op["vertebra"] == 0.65 and "predicted at sens90" in op["note"]
    assert flagged_vertebrae(own, strict) == ["C2"]


def test_the_app_shows_studies_at_the_serve_point(tmp_path):
    from cspine.viewer.app import create_app

    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "1.2.3.json").write_text(json.dumps(_doc(with_point=True)))
    strict = resolve_serve_point("0.75", None)
    with TestClient(create_app([tmp_path / "res"], work_dir=tmp_path / "work", operating_point=strict)) as c:
        (row,) = c.get("/api/studies").json()
        assert row["flagged"] == []
        detail = c.get(f"/api/studies/{row['key']}").json()
    assert detail["operating_point"]["vertebra"] == 0.75
    assert detail["patient"]["positive"] is True  # 0.8 >= 0.75
    assert [v["positive"] for v in detail["vertebrae"]] == [False] * 7
    store = StudyStore([tmp_path / "res"])  # without a serve point: the result's own calls
    (entry,) = store.entries()
    assert [v["name"] for v in store.detail(entry)["vertebrae"] if v["positive"]] == ["C2", "C6"]
