"""``cspine serve``: arguments to the app and to uvicorn, loopback by default, clear errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.errors import CspineError

pytest.importorskip("uvicorn", reason="the viewer needs fastapi and uvicorn")


@pytest.fixture
def served(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: calls.append((app_, kw)))
    return calls


def test_serve_binds_loopback_and_lists_the_results(served, results_dir):
    from fastapi.testclient import TestClient

    result = CliRunner().invoke(app, ["serve", "--results", str(results_dir), "--max-upload-mb", "5"])
    assert result.exit_code == 0, result.output
    (viewer, kw), = served
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000
    assert "http://127.0.0.1:8000/" in result.output and "warning" not in result.output
    state = viewer.state.viewer
    assert state.jobs is None and state.limits.max_upload_bytes == 5 * 1024**2
    with TestClient(viewer) as client:
        assert len(client.get("/api/studies").json()) == 1


def test_serve_warns_when_bound_beyond_this_machine(served, results_dir, tmp_path):
    result = CliRunner().invoke(app, ["serve", "--results", str(results_dir), "--host", "0.0.0.0",
                                      "--work", str(tmp_path)])
    assert result.exit_code == 0 and "no login" in result.output
    assert served[0][1]["host"] == "0.0.0.0"


@pytest.mark.parametrize(("args", "message"), [
    ([], "nothing to show"),
    (["--results", "/no/such/folder"], "results folder not found"),
    (["--model", "/no/such/run"], "model RUN folder not found"),
])
def test_serve_refuses_bad_arguments(served, args, message):
    result = CliRunner().invoke(app, ["serve", *args])
    assert isinstance(result.exception, CspineError) and message in str(result.exception)
    assert not served
