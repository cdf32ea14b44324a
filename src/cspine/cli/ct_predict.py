"""``cspine ct predict``: a thin wrapper over :func:`cspine.ct.pipeline.predict_many`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def predict(
    inputs: list[Path] = typer.Argument(..., help="DICOM study folders, NIfTI CTs (.nii/.nii.gz), folders "
                                                  "of study folders, or an RSNA root (its test_images/ and "
                                                  "test.csv)."),
    model: Path = typer.Option(..., "--model", help="Trained RUN folder (RUN/seg and RUN/cls)."),
    out: Path = typer.Option(..., "--out", help="Output folder (created; earlier results there are reused)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    explain: bool = typer.Option(False, "--explain", help="Attention plots and Grad-CAM overlays (PNG) for "
                                                         "each vertebra with p >= 0.5, under OUT/explain/."),
    test_csv: Path | None = typer.Option(None, "--test-csv", help="Order the submission as this test.csv "
                                                                  "(default: the RSNA root's)."),
) -> None:
    """Predict fracture probabilities for C1..C7 and the patient.

    Writes OUT/predictions.csv, OUT/submission.csv (Kaggle format) and OUT/<UID>.json per study. A study
    that fails is listed and skipped; the exit status is then 1 (rerun to retry: finished studies are
    not recomputed).
    """
    from cspine.ct.pipeline import CtModel, predict_many

    ct_model = CtModel.load(model, device=None if device == "auto" else device)
    summary = predict_many(inputs, ct_model, out, explain=explain, test_csv=test_csv)
    console = Console()
    table = Table(title=f"cspine ct predict -> {out}")
    for col in ("predicted now", "already done", "failed", "studies in predictions.csv"):
        table.add_column(col, justify="right")
    table.add_row(str(len(summary.predicted)), str(len(summary.resumed)),
                  f"[red]{len(summary.failed)}[/]" if summary.failed else "0", str(summary.n_studies))
    console.print(table)
    if summary.missing_in_submission:
        console.print(f"[yellow]{len(summary.missing_in_submission)} test.csv studies have no prediction; "
                      "submission.csv gives them the training prior[/]")
    console.print(f"predictions: {summary.predictions_csv}\nsubmission:  {summary.submission_csv}")
    if summary.failed:
        failed = Table(title="failed studies (also in failures.json)")
        failed.add_column("input")
        failed.add_column("reason")
        for path, reason in summary.failed:
            failed.add_row(path, reason)
        console.print(failed)
        raise typer.Exit(1)
