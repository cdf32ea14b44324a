"""An Orthanc server as a plain process (Debian's ``orthanc``): a temporary configuration, free ports, its
own storage folder. Used by the node's Orthanc test and by bench/node.py."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ORTHANC = "/usr/sbin/Orthanc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def orthanc_server(work: Path, dicom_port: int, modalities: dict[str, list], *, program: str = ORTHANC,
                   aet: str = "ORTHANC", timeout: float = 30.0) -> Iterator[httpx.Client]:
    """Run Orthanc with DICOM on ``dicom_port`` and the given peers; yield a client of its REST API.

    Raises:
        RuntimeError: Orthanc exited or did not answer within ``timeout`` (with the end of its log).
    """
    work.mkdir(parents=True, exist_ok=True)
    storage = work / "storage"
    config = {"Name": "cspine-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
              "HttpPort": free_port(), "DicomPort": dicom_port, "DicomAet": aet,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
              "DicomServerEnabled": True, "Plugins": [], "DicomModalities": modalities,
              "DicomAlwaysAllowStore": True, "StorageCompression": False}
    cfg_path, log_path = work / "orthanc.json", work / "orthanc.log"
    cfg_path.write_text(json.dumps(config))
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([program, str(cfg_path)], stdout=log_file, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{config['HttpPort']}", timeout=120)
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/system").status_code == 200:
                    break
            if time.monotonic() > end:
                raise RuntimeError(f"Orthanc did not answer in {timeout:g} s: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
