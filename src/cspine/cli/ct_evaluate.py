"""``cspine ct evaluate``: a thin wrapper over :func:`cspine.ct.evaluate.evaluate`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _f(value: object, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="predictions.csv from `cspine ct predict`."),
    labels: Path = typer.Option(..., "--labels",
                                help="Labels with train.csv's columns (e.g. test_labels.csv)."),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, report.md, PNG plots."),
    data: Path | None = typer.Option(None, "--data",
                                     help="RSNA root: train.csv prevalences for the baseline, "
                                          "bounding boxes for attention alignment."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    model: Path | None = typer.Option(None, "--model",
                                      help="The model RUN folder that made the predictions: sensitivity and "
                                           "specificity (95% CI) at its stored operating points (sens90, "
                                           "sens95), and its calibration for the ECE before calibration."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files under cspine's output names "
                                                              "that cspine did not write."),
) -> None:
    """Score predictions: patient and vertebra AUCs (95% bootstrap CI), sensitivity, specificity,
    precision, F1, accuracy, localization, the RSNA competition loss against a prevalence baseline,
    attention alignment; ROC/PR/calibration plots and report.md. With --model RUN: the stored operating
    points and the expected calibration error before and after calibration (reliability.png)."""
    from cspine.ct.evaluate import evaluate as run

    m = run(pred, labels, out, data_root=data, seed=seed, model_dir=model, overwrite=overwrite)
    ci = m["patient_auc_ci95"] or [None, None]
    table = Table(title=f"cspine ct evaluate: {m['n_studies']} studies -> {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("patient AUC (95% CI)", f"{_f(m['patient_auc'])} ({_f(ci[0])}-{_f(ci[1])})")
    table.add_row("mean vertebra AUC", _f(m["vertebra_auc_mean"]))
    table.add_row("pooled vertebra AUC / level prior alone",
                  f"{_f(m['vertebra_auc_pooled'])} / {_f(m['vertebra_auc_pooled_level_prior'])}")
    for key in ("sensitivity", "specificity", "precision", "f1", "accuracy"):
        table.add_row(f"{key} @0.5 / @Youden", f"{_f(m[key]['at_0.5'])} / {_f(m[key]['at_youden'])}")
    table.add_row("localization accuracy", _f(m["localization_accuracy"]["overall"]))
    table.add_row("RSNA weighted log loss", _f(m["rsna_weighted_log_loss"], 4))
    table.add_row("prevalence baseline loss", _f(m["prevalence_baseline_log_loss"], 4))
    table.add_row("attention alignment", _f(m.get("attention_alignment")))
    for name, levels in (m.get("operating_points") or {}).items():
        for level, r in levels.items():
            if r.get("threshold") is not None:
                table.add_row(f"{name} {level}: threshold / sensitivity / specificity",
                              f"{_f(r['threshold'])} / {_f(r['sensitivity'])} / {_f(r['specificity'])}")
    cal = m.get("calibration") or {}
    before, after = cal.get("ece_before") or {}, cal.get("ece_after") or {}
    table.add_row("ECE patient before / after calibration", f"{_f(before.get('patient'))} / "
                  f"{_f(after.get('patient'))}")
    table.add_row("ECE vertebrae before / after calibration", f"{_f(before.get('vertebra'))} / "
                  f"{_f(after.get('vertebra'))}")
    console = Console()
    console.print(table)
    if not m["beats_prevalence_baseline"]:
        console.print("[yellow]the model does not beat predicting the training prevalence[/]")
    if not m["beats_level_prior"]:
        console.print("[yellow]the pooled vertebra AUC is not above the level prior (which levels break most "
                      "often)[/]")
    console.print(f"report: {Path(out) / 'report.md'}")
