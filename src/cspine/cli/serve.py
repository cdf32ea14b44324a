"""``cspine serve``: the local viewer (a thin wrapper over :func:`cspine.viewer.app.create_app`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from cspine.errors import CspineError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: Path | None = typer.Option(None, "--model", help="Trained RUN folder: analyse uploaded "
                                                            "studies and make the CT views of results that "
                                                            "lack them."),
    results: list[Path] = typer.Option([], "--results", help="Results folder of `cspine ct predict` to list "
                                                             "(repeatable)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. The viewer has no login: keep it "
                                                         "on this machine unless a proxy guards it."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    work: Path | None = typer.Option(None, "--work", help="Keep uploads and their results here (default: a "
                                                          "temporary folder removed when the server stops)."),
    max_upload_mb: float = typer.Option(2048.0, "--max-upload-mb", help="Largest zip accepted, in MiB."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (with --model)."),
    operating_point: str | None = typer.Option(
        None, "--operating-point", help="sens90, sens95 (stored with --model) or a threshold 0.NN: uploads "
                                        "are predicted at it and every study is shown called at it. Default: "
                                        "each result's own point; uploads and results without one at the "
                                        "model's sens90 (when it stores points), else 0.5."),
) -> None:
    """Browse CT results in a web page: the CT with the C1-C7 labels and Grad-CAM, probabilities, attention.

    Lists the studies of --results folders; with --model, studies uploaded as a zip of DICOM files are
    analysed (one at a time) and shown too. Open the printed address in a browser.
    """
    import logging

    from rich.console import Console

    try:
        import uvicorn

        from cspine.viewer.app import check_static_files, create_app
    except ImportError as exc:
        raise CspineError(f"`cspine serve` needs fastapi and uvicorn ({exc}); "
                          "pip install fastapi uvicorn") from exc
    check_static_files()  # a page without its NiiVue bundle draws nothing: say so before loading a model
    from cspine.viewer.store import resolve_serve_point
    from cspine.viewer.uploads import UploadLimits

    for folder in results:
        if not folder.is_dir():
            raise CspineError("results folder not found (give the --out folder of `cspine ct predict`)",
                              folder)
    if model is None and not results:
        raise CspineError("nothing to show: give --results DIR (results of `cspine ct predict`), --model RUN "
                          "(to analyse uploads), or both")
    if work is not None:
        from cspine.output_folder import check_output_path

        check_output_path(work, "cspine serve --work")
    if max_upload_mb <= 0:
        raise CspineError(f"--max-upload-mb must be positive, got {max_upload_mb:g}")
    console = Console()
    ct_model = None
    if model is not None:
        from cspine.ct import CtModel

        ct_model = CtModel.load(model, device=None if device == "auto" else device)
    serve_point = resolve_serve_point(operating_point, ct_model)
    if not _is_loopback(host):
        console.print(f"[yellow]warning:[/] binding {host}: anyone who can reach this address sees the "
                      "studies and can upload; the viewer has no login")
    limits = UploadLimits(max_upload_bytes=int(max_upload_mb * 1024**2))
    app = create_app(results, ct_model, work_dir=work, limits=limits, operating_point=serve_point)
    shown = f"[{host}]" if ":" in host else host
    if serve_point is not None:
        p = serve_point.point
        scope = "" if serve_point.explicit else " (for uploads and results predicted without one)"
        console.print(f"operating point {p.name}: vertebra p >= {p.vertebra:.4g}, patient p >= "
                      f"{p.patient:.4g}{scope}", highlight=False)
    console.print(f"cspine viewer on http://{shown}:{port}/ (Ctrl-C stops it)")
    logging.getLogger("cspine").setLevel(logging.INFO)
    uvicorn.run(app, host=host, port=port, log_level="info")
