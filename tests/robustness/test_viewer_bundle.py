"""``cspine serve`` without the NiiVue bundle says in one line how to get it, instead of a blank page."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cspine.cli.main import app

pytest.importorskip("uvicorn", reason="the viewer needs fastapi and uvicorn")


def test_serve_without_the_niivue_bundle_says_how_to_make_it(monkeypatch, tmp_path: Path, snapshot) -> None:
    import uvicorn

    from cspine.viewer import app as viewer_app

    static = tmp_path / "static"
    shutil.copytree(viewer_app.STATIC_DIR, static, ignore=shutil.ignore_patterns(viewer_app.NIIVUE_BUNDLE))
    monkeypatch.setattr(viewer_app, "STATIC_DIR", static)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(a))
    results = tmp_path / "results"
    results.mkdir()
    snap = snapshot(tmp_path)
    res = CliRunner().invoke(app, ["serve", "--results", str(results)])
    assert isinstance(res.exception, viewer_app.ViewerAssetsError), res.output
    message = str(res.exception)
    assert "\n" not in message
    assert str(static / "niivue.umd.js") in message and "make install" in message and "npm" in message
    assert not started
    snap.assert_unchanged(allow_new=False)

