"""Helpers of the sharding tests: claims of dead workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from cspine.shard import CLAIMS_DIR


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(folder: Path, key: str, *, pid: int, host: str | None = None, age_s: float = 0.0) -> Path:
    """A claim file as a worker (``pid`` on ``host``) leaves it, its heartbeat ``age_s`` seconds old."""
    path = folder / CLAIMS_DIR / f"{key}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "token": "old",
                                "time": time.time() - age_s}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path
