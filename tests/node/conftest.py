"""Fixtures of the DICOM node tests (helpers in _node_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _node_fixtures import POINTS, write_study


@pytest.fixture(scope="session")
def node_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny two-stage RUN folder (stage 1 finds C3 only) with stored operating points."""
    from _tiny_ct_run import make_run

    run = tmp_path_factory.mktemp("node_run") / "run"
    make_run(run, operating_points=POINTS)
    return run


@pytest.fixture(scope="session")
def node_model(node_run: Path):
    from cspine.ct.model import CtModel

    return CtModel.load(node_run, device="cpu")


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A 48-slice phantom neck CT (64x64) as DICOM files carrying a patient name and ID."""
    return write_study(tmp_path_factory.mktemp("node_study") / "study")
