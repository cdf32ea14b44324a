"""Shared fixtures: the real test data beside the checkout, and single-threaded torch under xdist."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CSPINE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _torch_threads() -> None:
    # Two xdist workers on two cores: one thread each, or they fight over the cores.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass


_torch_threads()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real DICOM/NIfTI files); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data folder {SHARED_DATA} is absent (it sits beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test on one torch thread: tiny convolutions gain nothing from a second one, and on a shared
    2-core CPU two threads can be several times slower (as under xdist in CI)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session", autouse=True)
def cspine_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ``CSPINE_HOME`` for the session: converted weights never land in the user's cache, and
    every worker proves the conversion from the package's file."""
    old = os.environ.get("CSPINE_HOME")
    home = tmp_path_factory.mktemp("cspine_home")
    os.environ["CSPINE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("CSPINE_HOME", None)
    else:
        os.environ["CSPINE_HOME"] = old
