"""Stage 1 and stage 2 training under ``torchrun`` with two gloo processes: they run, train together and
only rank 0 writes the model folders (one log line per epoch, not one per rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("_ddp_ct_worker.py")


def test_two_processes_train_both_stages_and_rank_zero_writes(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
           str(tmp_path)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    seg_log = (tmp_path / "s" / "seg" / "log.jsonl").read_text().splitlines()
    cls_log = (tmp_path / "c" / "cls" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in seg_log] == [1]
    assert [json.loads(r)["epoch"] for r in cls_log] == [1, 2]
    for stage in ("s/seg", "c/cls"):
        assert (tmp_path / stage / "model.safetensors").is_file()
        assert json.loads((tmp_path / stage / "metrics.json").read_text())
    assert "calibration" in json.loads((tmp_path / "c" / "cls" / "config.json").read_text())["extra"]
