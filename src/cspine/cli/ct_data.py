"""``cspine ct prepare`` and ``cspine ct eda`` (placeholder until the data layer lands)."""

from __future__ import annotations

from pathlib import Path

import typer


def prepare(data: Path = typer.Option(..., help="RSNA-layout root."),
            cache: Path = typer.Option(..., help="Cache folder.")) -> None:
    """Decode each study once into a memory-mappable cache."""
    raise NotImplementedError


def eda(data: Path = typer.Option(..., help="RSNA-layout root."),
        out: Path = typer.Option(..., help="Output folder.")) -> None:
    """The CT paper's four EDA figures."""
    raise NotImplementedError
