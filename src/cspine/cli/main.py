"""``cspine``: the top-level command. Sub-apps live in one file each."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

from cspine import __version__
from cspine.cli import ct, demo, export, node, serve, synth, weights, xray
from cspine.errors import CspineError

app = typer.Typer(
    name="cspine",
    help="Cervical spine fracture detection on CT (C1-C7) and radiographs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(ct.app, name="ct", help="CT: prepare data, train, predict, evaluate.")
app.add_typer(xray.app, name="xray", help="Radiographs: normal / fracture / dislocation.")
app.add_typer(synth.app, name="synth", help="Synthetic phantom data: CT studies and radiographs.")
app.add_typer(export.app, name="export", help="Export trained models (ONNX) for a CPU without PyTorch.")
app.command("demo", help=demo.__doc__)(demo.demo)
app.command("serve")(serve.serve)
app.command("node")(node.node)
app.command("weights", help=weights.weights.__doc__)(weights.weights)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cspine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    # Our own messages at INFO; third-party libraries (openjpeg logs every tile) only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cspine").setLevel(logging.DEBUG if verbose else logging.INFO)


def main() -> None:
    """Console-script entry point: user errors are printed without a traceback."""
    try:
        app()
    except CspineError as exc:
        # emoji off and the message escaped: "HOST:x:AET" or "[::1]" in a message stay as written
        Console(stderr=True, soft_wrap=True, emoji=False).print(f"[bold red]error:[/] {escape(str(exc))}",
                                                                highlight=False)
        sys.exit(2)
