"""``cspine node``: bad options are one-line errors; the process answers C-ECHO and stops cleanly on
SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _node_fixtures import free_port, wait_for
from pynetdicom import AE
from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.errors import CspineError

CSPINE = str(Path(sys.executable).parent / "cspine")


@pytest.mark.parametrize("args, words", [
    (["--send-to", "127.0.0.1:4242"], "expected HOST:PORT:AET"),
    (["--ae-title", "A-TITLE-FAR-TOO-LONG"], "1 to 16"),
    (["--idle-seconds", "0"], "must be positive"),
])
def test_bad_options_are_clear_errors(tmp_path, node_run, args, words):
    res = CliRunner().invoke(app, ["node", "--model", str(node_run), "--spool", str(tmp_path), *args])
    assert isinstance(res.exception, CspineError) and words in str(res.exception)


def test_a_model_without_operating_points_needs_a_threshold(tmp_path):
    from _tiny_ct_run import make_run

    make_run(tmp_path / "run")  # no stored operating points
    res = CliRunner().invoke(app, ["node", "--model", str(tmp_path / "run"), "--spool", str(tmp_path / "s"),
                                   "--device", "cpu"])
    assert isinstance(res.exception, CspineError) and "--operating-point 0.NN" in str(res.exception)


def test_the_node_process_answers_echo_and_stops_on_sigterm(tmp_path, node_run):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([CSPINE, "node", "--model", str(node_run), "--port", str(port), "--spool",
                             str(tmp_path / "spool"), "--ae-title", "CSPINE", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        def echo() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"cspine node exited early: {proc.stdout.read() if proc.stdout else ''}")
            ae = AE(ae_title="PACS")
            ae.add_requested_context("1.2.840.10008.1.1")
            assoc = ae.associate("127.0.0.1", port, ae_title="CSPINE")
            if not assoc.is_established:
                return False
            status = assoc.send_c_echo()
            assoc.release()
            return int(status.Status) == 0

        wait_for(echo, 60, "cspine node to answer C-ECHO", poll=0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"on 127.0.0.1:{port}" in out and "cspine node stopped" in out
    assert (tmp_path / "spool" / ".key").is_file()
