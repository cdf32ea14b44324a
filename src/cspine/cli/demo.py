"""Generate a small phantom, train both CT stages, predict held-out studies and evaluate."""

from __future__ import annotations


def demo() -> None:
    """Generate a small phantom, train both CT stages, predict held-out studies and evaluate."""
    raise NotImplementedError
