"""Helpers of the DICOM node tests: peer programs, a phantom study, waiting for the spool (and
``free_port``, from _orthanc.py)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _orthanc import free_port  # noqa: F401  (re-exported for the tests)

STUDY_UID = "1.2.826.0.1.3680043.8.498.5151"
PATIENT_ID = "PID-778899"
PATIENT_NAME = "Doe^Jane"
#: Thresholds stored with the tiny model (its stage 1 finds C3 only).
POINTS = {"patient": {"sens90": 0.2, "sens95": 0.1}, "vertebra": {"sens90": 0.3, "sens95": 0.2}}
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"

APT = {"storescu": "dcmtk", "storescp": "dcmtk", "echoscu": "dcmtk", "Orthanc": "orthanc"}


def require_program(name: str, path: str | None = None) -> str:
    """The program's path; without it a local run skips and a CI run (CI set) fails, naming it."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if found:
        return found
    why = (f"the peer program {name!r} is missing (apt-get install -y --no-install-recommends "
           f"{APT.get(name, name)})")
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(f"{why}; a local run skips, CI fails")
    raise AssertionError  # unreachable


def write_study(folder: Path, *, n_slices: int = 48, size: int = 64, seed: int = 3) -> list[Path]:
    """A phantom neck CT (classic CT Image Storage, explicit little endian) with patient data in it."""
    from cspine.synth.ct_writer import write_ct_series
    from cspine.synth.phantom import make_phantom

    p = make_phantom(seed, size=size, n_slices=n_slices, fracture=True)
    write_ct_series(p.volume(), folder, study_uid=STUDY_UID, uid_seed=seed,
                    extra={"PatientID": PATIENT_ID}, verify=False)
    import pydicom

    files = sorted(folder.glob("*.dcm"))
    for f in files:  # a name as well, so that the tests can look for it in the logs
        ds = pydicom.dcmread(f)
        ds.PatientName = PATIENT_NAME
        ds.save_as(f)
    return files


def wait_for(check: Callable[[], object], timeout: float, what: str, poll: float = 0.1) -> object:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
    raise AssertionError  # unreachable
