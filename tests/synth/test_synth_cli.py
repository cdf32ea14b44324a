"""`cspine synth ct|xray|preview` through the real CLI."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.labels import TRAIN_CSV


def test_cli_ct_xray_preview(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app, ["synth", "ct", "--out", str(tmp_path / "ct"), "--studies", "1", "--size", "128", "--seed", "3"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ct" / TRAIN_CSV).exists()
    res = runner.invoke(app, ["synth", "xray", "--out", str(tmp_path / "ct"), "--images", "3"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["synth", "preview", str(tmp_path / "ct"), "--out", str(tmp_path / "png")])
    assert res.exit_code == 0, res.output
    names = {p.name for p in (tmp_path / "png").glob("*.png")}
    assert {"ct_axial_C2.png", "ct_axial_C5.png", "ct_sagittal.png"} <= names
    assert any(n.startswith("xray_") for n in names)
    res = runner.invoke(
        app, ["synth", "ct", "--out", str(tmp_path / "bad"), "--studies", "1", "--size", "100"]
    )
    assert res.exit_code != 0 and "--size" in res.output
