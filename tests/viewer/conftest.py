"""The viewer tests' fixtures live in _viewer_fixtures.py (importable by name from the test modules)."""

from __future__ import annotations

from _viewer_fixtures import results_dir, tiny_model, viewer_data  # noqa: F401
