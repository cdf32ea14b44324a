"""Robustness-suite helpers: a snapshot of folders' files, to prove bad input changes nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest


def folder_state(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> SHA-256 of its bytes)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Snapshot:
    """Records folders' files and later asserts that none was changed, removed or (optionally) added."""

    def __init__(self) -> None:
        self._states: dict[Path, dict[str, str]] = {}

    def take(self, *folders: Path) -> Snapshot:
        for folder in folders:
            self._states[Path(folder)] = folder_state(Path(folder))
        return self

    def assert_unchanged(self, *, allow_new: bool = True) -> None:
        """Every recorded file still exists with the same bytes (new files are allowed unless told)."""
        for folder, before in self._states.items():
            after = folder_state(folder)
            changed = [f for f, h in before.items() if after.get(f) != h]
            assert not changed, f"files changed or removed under {folder}: {changed[:5]}"
            if not allow_new:
                added = sorted(set(after) - set(before))
                assert not added, f"files added under {folder}: {added[:5]}"


@pytest.fixture
def snapshot() -> Callable[..., Snapshot]:
    """``snap = snapshot(folder, ...)`` records the folders; ``snap.assert_unchanged()`` checks them."""
    return lambda *folders: Snapshot().take(*folders)
