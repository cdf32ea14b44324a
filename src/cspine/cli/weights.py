"""``cspine weights``: the pretrained weights cspine can use offline, and where they are."""

from __future__ import annotations

import typer


def weights(
    materialise: list[str] = typer.Option(
        [], "--materialise", "-m",
        help="Convert these registry entries into the weight cache now ('all' for every installed one)."),
) -> None:
    """List the registry's pretrained weights: the package each comes from, whether it is installed and
    materialised (converted to safetensors in the cache), and the cache path ($CSPINE_HOME moves it)."""
    from rich.console import Console
    from rich.table import Table

    from cspine.models.pretrained import materialise as convert
    from cspine.models.pretrained import status
    from cspine.registry.weights import WEIGHTS

    names = [r["name"] for r in status() if r["installed"] == "yes"] if "all" in materialise else materialise
    for name in names:
        if name not in WEIGHTS:
            raise typer.BadParameter(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}")
        convert(name)
    table = Table(title="cspine pretrained weights (offline registry)")
    rows = status()
    cols = ("name", "package", "installed", "materialised", "mean/std", "license", "path")
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(row[c] for c in cols))
    Console(width=200).print(table)
