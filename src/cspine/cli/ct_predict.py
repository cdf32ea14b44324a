"""``cspine ct predict``: a thin wrapper over :func:`cspine.ct.inference.predict_many`."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
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
    operating_point: str | None = typer.Option(
        None, "--operating-point", help="sens90, sens95 (stored with the model) or a threshold 0.NN: marks "
                                        "each vertebra and the patient positive/negative. Default: sens90 "
                                        "when the model stores operating points, none otherwise."),
    dicom_out: Path | None = typer.Option(None, "--dicom-out", help="Write each study's DICOM SEG and SR "
                                                                    "(TID 1500) into this folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files under cspine's output names "
                                                              "that cspine did not write."),
    part: int | None = typer.Option(None, "--part", help="Predict only part K (0-based) of --parts N of the "
                                                         "sorted studies into the shared OUT; default under "
                                                         "torchrun: RANK. Then run --merge."),
    parts: int | None = typer.Option(None, "--parts", help="Number of parts; default under torchrun: "
                                                           "WORLD_SIZE."),
    runtime: str = typer.Option(
        "torch", "--runtime", help="torch (MODEL is a RUN folder) or onnx (MODEL is an export of `cspine "
                                   "export onnx`: ONNX Runtime on the CPU, PyTorch is not imported; no "
                                   "--explain)."),
    merge: bool = typer.Option(False, "--merge", help="Predict nothing: write predictions.csv and "
                                                      "submission.csv of the parts in OUT (same inputs and "
                                                      "options); refuses while any input has no result."),
) -> None:
    """Predict fracture probabilities for C1..C7 and the patient.

    Writes OUT/predictions.csv (with a status per study), OUT/submission.csv (Kaggle format) and
    OUT/<UID>.json per study. A study that fails is listed and skipped; the exit status is then 1 (rerun
    to retry: finished studies of the same model, input and options are not recomputed). cspine
    replaces only files it wrote itself (--overwrite to force).

    Many workers (a Slurm array, torchrun ranks): each runs with --part K --parts N into one OUT, claiming
    each study there first (none is predicted twice; a killed worker's study is redone on a rerun); then
    --merge writes the CSVs, the submission ordered as test.csv.
    """
    from cspine.ct.cls.operating_points import resolve_operating_point
    from cspine.ct.inference import predict_many
    from cspine.ct.model import CtModel
    from cspine.ct.study_status import COMPLETE
    from cspine.shard import resolve_shard

    shard = None if merge else resolve_shard(part, parts)
    if merge and part is not None:
        raise typer.BadParameter("--merge combines all parts: give --parts N (optional), not --part",
                                 param_hint="--part")
    if runtime == "onnx":
        from cspine.onnx.runtime import EXPLAIN_REFUSED, ExplainUnavailable, load_ct

        if explain:
            raise ExplainUnavailable(EXPLAIN_REFUSED)
        ct_model: CtModel = load_ct(model)
    elif runtime == "torch":
        from cspine.runtime import resolve_device

        if device == "auto" and shard is not None and "LOCAL_RANK" in os.environ:
            from cspine.distributed import local_device

            device = local_device()  # one GPU per torchrun rank on a machine
        dev = resolve_device(device)  # a device this machine lacks fails before anything is read
        ct_model = CtModel.load(model, device=str(dev))
    else:
        raise typer.BadParameter(f"{runtime!r}: use torch or onnx", param_hint="--runtime")
    stored = ct_model.operating_points()
    spec = operating_point if operating_point is not None else ("sens90" if stored is not None else None)
    op = None if spec is None else resolve_operating_point(spec, stored)
    if merge:
        from cspine.ct.merge import merge_parts

        summary = merge_parts(inputs, ct_model, out, parts=parts, test_csv=test_csv, explain=explain,
                              operating_point=op, dicom_out=dicom_out, overwrite=overwrite)
    else:
        summary = predict_many(inputs, ct_model, out, explain=explain, test_csv=test_csv, operating_point=op,
                               dicom_out=dicom_out, overwrite=overwrite, shard=shard)
    console = Console()
    table = Table(title=f"cspine ct predict -> {out}")
    for col in ("predicted now", "already done", "failed", "studies in predictions.csv"):
        table.add_column(col, justify="right")
    table.add_row(str(len(summary.predicted)), str(len(summary.resumed)),
                  f"[red]{len(summary.failed)}[/]" if summary.failed else "0", str(summary.n_studies))
    console.print(table)
    counts: dict[str, int] = {}
    for status in summary.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    if summary.failed:
        counts["failed"] = len(summary.failed)
    console.print("status: " + ", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)
    for uid, status in sorted(summary.statuses.items()):
        if status != COMPLETE:
            why = escape(summary.reasons.get(uid, ""))
            console.print(f"[yellow]{escape(status)}[/] {escape(uid)}: {why}",
                          highlight=False, soft_wrap=True)
    if op is not None:
        console.print(f"operating point {op.name} ({op.source}): vertebra >= {op.vertebra:.4g}, "
                      f"patient >= {op.patient:.4g}", highlight=False)
    if summary.left_out:
        console.print(f"[yellow]{len(summary.left_out)} earlier result(s) in {escape(str(out))} come from "
                      "another model or other options: left out of predictions.csv[/]", highlight=False,
                      soft_wrap=True)
    if summary.missing_in_submission:
        console.print(f"[yellow]{len(summary.missing_in_submission)} test.csv studies have no prediction; "
                      "submission.csv gives them the training prior[/]")
    if shard is not None:
        console.print(f"{shard.label} finished ({len(summary.busy)} studies left to another live worker); "
                      "when every part has finished: the same command with --merge instead of --part",
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"predictions: {summary.predictions_csv}\nsubmission:  {summary.submission_csv}")
    if summary.failed:
        failed = Table(title="failed studies (also in failures.json)")
        failed.add_column("input")
        failed.add_column("reason")
        for path, reason in summary.failed:
            failed.add_row(path, reason)
        console.print(failed)
        raise typer.Exit(1)
