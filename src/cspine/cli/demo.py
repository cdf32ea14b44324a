"""Generate a small phantom, train both CT stages, predict held-out studies and evaluate."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("cspine-demo"), "--out", help="Working folder (reruns reuse steps)."),
    quick: bool = typer.Option(False, "--quick", help="A tiny smoke run (seconds; numbers meaningless)."),
    workers: int | None = typer.Option(None, "--workers", help="Processes for generation and decoding."),
) -> None:
    """Generate a small phantom, train both CT stages, predict held-out studies and evaluate."""
    from rich.console import Console

    from cspine.ct.demo import results_table, run_demo
    from cspine.output_folder import check_output_path

    check_output_path(out, "cspine demo")
    console = Console()
    console.print(f"[bold]cspine demo[/] into {out} (synthetic phantom data, CPU)")
    # progress bars only on a terminal: a log file or CI gets the table, not thousands of bar updates
    result = run_demo(out, quick=quick, workers=workers, progress=sys.stderr.isatty())
    console.print(results_table(result))
    console.print(f"report: {result.report}")
    console.print(f"predictions: {result.predictions_csv}")
