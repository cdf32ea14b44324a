"""``--device cuda`` on a machine without a CUDA GPU: a one-line error and a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cspine.errors import CspineError, DeviceError
from cspine.runtime import resolve_device


def run_cspine(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script's entry point in a fresh process that sees no GPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", "from cspine.cli.main import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_ct_predict_with_cuda_on_a_cpu_machine_is_a_clear_error(tmp_path) -> None:
    res = run_cspine("ct", "predict", str(tmp_path / "study"), "--model", str(tmp_path / "run"),
                     "--out", str(tmp_path / "out"), "--device", "cuda")
    assert res.returncode != 0
    assert "--device cuda was asked for, but this machine has no CUDA GPU" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "out").exists()  # nothing was started


def test_unknown_device_names_are_device_errors() -> None:
    with pytest.raises(DeviceError, match="'gpu0' is not a device"):
        resolve_device("gpu0")
    assert issubclass(DeviceError, CspineError)
    assert resolve_device("cpu").type == "cpu"


def test_each_torchrun_rank_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 2-GPU machine under torchrun: `cuda` and `auto` mean this rank's GPU; an explicit index is kept.
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert str(resolve_device("cuda")) == "cuda:1" and str(resolve_device("auto")) == "cuda:1"
    assert str(resolve_device("cuda:0")) == "cuda:0"
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: the default GPU
    assert str(resolve_device("cuda")) == "cuda"
