"""``cspine demo --quick``: every step of the demo end to end on a tiny phantom set."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.labels import TARGETS


def test_quick_demo_runs_every_step(tmp_path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "patient AUC" in result.output and "report:" in result.output
    # 1-2: phantom data and the cache
    labels = pd.read_csv(out / "data" / "test_labels.csv", dtype={"StudyInstanceUID": str})
    assert len(labels) == 3
    assert any((out / "cache").iterdir())
    # 3: both stages
    for stage in ("seg", "cls"):
        assert (out / "run" / stage / "model.safetensors").is_file()
    # 4: a row for every held-out study, probabilities in [0, 1] where given (a level the 1-epoch stage 1
    # did not find is an empty cell, never a made-up value, and the status says so)
    pred = pd.read_csv(out / "predictions" / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert set(pred["StudyInstanceUID"]) == set(labels["StudyInstanceUID"])
    values = pred[list(TARGETS)].to_numpy(dtype=float)
    assert np.nanmin(values, initial=0.0) >= 0 and np.nanmax(values, initial=1.0) <= 1
    assert (pred["status"].eq("complete") == ~np.isnan(values).any(axis=1)).all()
    # the table says which weights each stage used
    assert "weights: stage 1" in result.output and "resnet18 (random init)" in result.output
    assert "test_efficientnet (random init)" in result.output
    # 5: evaluation and the demo's own record
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["n_studies"] == 3
    assert (out / "evaluation" / "report.md").is_file()
    record = json.loads((out / "demo.json").read_text())
    assert record["total_seconds"] > 0 and "synthetic" in record["note"]
    # a rerun reuses the trained models (it does not train again)
    stamp = (out / "run" / "cls" / "model.safetensors").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert (out / "run" / "cls" / "model.safetensors").stat().st_mtime_ns == stamp
