"""``cspine demo --quick``: every step of the demo end to end on a tiny phantom set."""

from __future__ import annotations

import json

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
    # 4: predictions for every held-out study, probabilities in [0, 1]
    pred = pd.read_csv(out / "predictions" / "predictions.csv", dtype={"StudyInstanceUID": str})
    assert set(pred["StudyInstanceUID"]) == set(labels["StudyInstanceUID"])
    assert pred[list(TARGETS)].to_numpy().min() >= 0 and pred[list(TARGETS)].to_numpy().max() <= 1
    # 5: evaluation and the demo's own record
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["n_studies"] == 3
    assert (out / "evaluation" / "report.md").is_file()
    record = json.loads((out / "demo.json").read_text())
    assert record["total_seconds"] > 0 and "synthetic" in record["note"]
