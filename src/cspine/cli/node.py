"""``cspine node``: a DICOM node (a thin wrapper over :class:`cspine.node.service.DicomNode`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import typer

from cspine.errors import CspineError


def node(
    model: Path = typer.Option(..., "--model", help="Trained RUN folder (RUN/seg and RUN/cls)."),
    ae_title: str = typer.Option("CSPINE", "--ae-title", help="This node's AE title (peers address it)."),
    port: int = typer.Option(11112, "--port", help="TCP port of the Storage SCP."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. Other machines (a PACS) reach the "
                                                         "node only on a non-loopback address; use "
                                                         "--allow-ae then."),
    send_to: str | None = typer.Option(None, "--send-to", help="HOST:PORT:AET of the Storage SCP that gets "
                                                               "the SEG and SR (e.g. the PACS). Without it "
                                                               "they stay in the spool."),
    spool: Path = typer.Option(Path("cspine-spool"), "--spool", help="Folder for received instances, their "
                                                                    "state and the results (the queue; "
                                                                    "survives restarts)."),
    idle_seconds: float = typer.Option(10.0, "--idle-seconds", help="A series is complete when no instance "
                                                                    "arrived for this many seconds."),
    allow_ae: list[str] = typer.Option([], "--allow-ae", help="Accept associations only from this calling "
                                                             "AE title (repeatable; default: any)."),
    operating_point: str | None = typer.Option(
        None, "--operating-point", help="sens90, sens95 (stored with the model) or a threshold 0.NN for the "
                                        "SR's present/absent calls. Default: sens90 when the model stores "
                                        "operating points."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Receive CT studies from a PACS by C-STORE, run the model, and send back a DICOM SEG and SR.

    Listens for C-STORE (CT, Enhanced CT, Legacy Converted Enhanced CT) and C-ECHO. A series counts as
    complete when no instance arrived for --idle-seconds; series are processed one at a time and their
    SEG (C1-C7) and TID 1500 SR are sent to --send-to. Everything is kept in --spool, so a restart loses
    nothing. Ctrl-C (or SIGTERM) stops listening and lets the series in progress finish; a second Ctrl-C
    stops at once (that series is redone on the next start).
    """
    import logging

    from rich.console import Console

    from cspine.ct.cls.operating_points import resolve_requested_point
    from cspine.ct.model import CtModel
    from cspine.node.config import NodeConfig, parse_destination
    from cspine.node.service import DicomNode
    from cspine.runtime import resolve_device

    try:
        import pynetdicom  # noqa: F401
    except ImportError as exc:
        raise CspineError(f"`cspine node` needs pynetdicom ({exc}); pip install pynetdicom") from exc
    config = NodeConfig(ae_title=ae_title, spool=spool, host=host, port=port,
                        send_to=None if send_to is None else parse_destination(send_to),
                        idle_seconds=idle_seconds, allow_ae=tuple(allow_ae))
    dev = resolve_device(device)
    ct_model = CtModel.load(model, device=str(dev))
    op = resolve_requested_point(operating_point, ct_model.operating_points())
    if op is None:
        raise CspineError("the model stores no operating points, and the SR needs one for its present/absent "
                          "calls: give --operating-point 0.NN", model)
    console = Console()
    logging.getLogger("cspine").setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    dicom_node = DicomNode(config, ct_model, op)
    try:
        dicom_node.start()
        console.print(f"cspine node {config.ae_title} on {config.host}:{dicom_node.port}, operating point "
                      f"{op.name}; results "
                      + (f"sent to {config.send_to}" if config.send_to else f"kept in {config.spool}")
                      + " (Ctrl-C stops it)", highlight=False, soft_wrap=True)
        while not stop.wait(0.5):
            pass
        busy = dicom_node.worker.busy_with
        if busy:
            console.print(f"stopping: finishing series {busy} (Ctrl-C again to stop now; it is redone on the "
                          "next start)", highlight=False)
        dicom_node.stop()
        console.print("cspine node stopped", highlight=False)
    except KeyboardInterrupt:
        console.print("cspine node stopped now; the series in progress is redone on the next start",
                      highlight=False)
        raise typer.Exit(130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
