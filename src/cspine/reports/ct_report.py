"""A short markdown report of a CT evaluation (the metrics.json of ``cspine ct evaluate``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cspine.fileio import write_text
from cspine.labels import VERTEBRAE

__all__ = ["render_report", "write_report"]


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_report(metrics: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The markdown text of the report.

    Args:
        metrics: the dictionary written to metrics.json (undefined values as ``None``).
        plots: ``{name: file name}`` of PNGs beside the report (roc, roc_levels, pr, calibration, ...).
    """
    m = metrics
    ci = m.get("patient_auc_ci95") or [None, None]
    lines = [
        "# CT fracture detection: evaluation",
        "",
        f"{m['n_studies']} studies ({_f(m.get('patient_prevalence'))} with a fracture); "
        f"{m.get('n_missing_predictions', 0)} labelled studies had no prediction.",
        "",
        "## Patient level",
        "",
        "| metric | value |",
        "|---|---|",
        f"| AUC (95% bootstrap CI) | {_f(m['patient_auc'])} ({_f(ci[0])}-{_f(ci[1])}) |",
        f"| RSNA weighted log loss | {_f(m['rsna_weighted_log_loss'], 4)} |",
        f"| prevalence baseline loss ({m.get('prevalence_source', '')}) | "
        f"{_f(m['prevalence_baseline_log_loss'], 4)} |",
        "",
        "| threshold | sensitivity | specificity | precision | F1 | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("at_0.5", "0.5"), ("at_youden", f"Youden ({_f(m.get('youden_threshold'))})*")):
        lines.append(f"| {label} | " + " | ".join(_f(m[k][key]) for k in
                                                  ("sensitivity", "specificity", "precision", "f1",
                                                   "accuracy")) + " |")
    if not m.get("beats_prevalence_baseline", True):
        lines += ["", "**Warning:** the model's RSNA loss is not better than predicting the training "
                      "prevalence for every study."]
    loc = m.get("localization_accuracy") or {}
    per_level = loc.get("per_level", {})
    vauc = m.get("vertebra_auc", {})
    lines += [
        "",
        "\\* chosen on these studies: optimistic.",
        "",
        "## Vertebra level",
        "",
        "| | " + " | ".join(VERTEBRAE) + " | mean |",
        "|---" * (len(VERTEBRAE) + 2) + "|",
        "| AUC | " + " | ".join(_f(vauc.get(v)) for v in VERTEBRAE)
        + f" | {_f(m.get('vertebra_auc_mean'))} |",
        "| found at 0.5 | " + " | ".join(_f(per_level.get(v)) for v in VERTEBRAE) + " | |",
        "",
        f"Pooled over all vertebrae: AUC {_f(m.get('vertebra_auc_pooled'))}; scoring each vertebra by its "
        f"level's training prevalence alone gives {_f(m.get('vertebra_auc_pooled_level_prior'))} (fractures "
        "cluster at some levels), the reference a model must beat to show it sees fractures.",
        "",
    ]
    if not m.get("beats_level_prior", True):
        lines += ["**Warning:** the pooled vertebra AUC is not above the level prior: these scores show no "
                  "more than which levels break most often.", ""]
    lines += [
        f"Localization accuracy (fractured patients whose fractured levels are all found at 0.5): "
        f"{_f(loc.get('overall'))} of {loc.get('n_fractured_patients', 0)}.",
    ]
    if m.get("attention_alignment") is not None:
        chance = _f(m.get("attention_alignment_chance"))
        lines += ["", f"Attention alignment: {_f(m['attention_alignment'])} of the stage-2 attention lies on "
                      f"slices with a fracture box (uniform attention: {chance}; "
                      f"{m.get('attention_alignment_n_vertebrae')} fractured vertebrae).", ]
    lines += _operating_point_lines(m) + _calibration_lines(m)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({fname})" for name, fname in plots.items()]
    return "\n".join(lines) + "\n"


def _ci(values: Any) -> str:
    low, high = values or (None, None)
    return f"({_f(low)}-{_f(high)})"


def _operating_point_lines(m: Mapping[str, Any]) -> list[str]:
    points = m.get("operating_points")
    if not points:
        note = m.get("operating_points_note")
        return ["", f"Operating points: {note}."] if note else []
    lines = ["", "## Operating points (stored with the model, chosen on its validation patients)", "",
             "| point | level | threshold | sensitivity (95% CI) | specificity (95% CI) |",
             "|---|---|---|---|---|"]
    for name, levels in points.items():
        for level in ("patient", "vertebra"):
            r = levels.get(level) or {}
            if r.get("threshold") is None:
                lines.append(f"| {name} | {level} | undefined | | |")
                continue
            sens = f"{_f(r['sensitivity'])} {_ci(r['sensitivity_ci95'])}"
            spec = f"{_f(r['specificity'])} {_ci(r['specificity_ci95'])}"
            lines.append(f"| {name} | {level} | {_f(r['threshold'])} | {sens} | {spec} |")
    lines += ["", "Vertebra level: C1..C7 pooled; its CIs resample patients with their seven vertebrae."]
    return lines


def _calibration_lines(m: Mapping[str, Any]) -> list[str]:
    cal = m.get("calibration")
    if not cal:
        return []
    after, before = cal.get("ece_after") or {}, cal.get("ece_before") or {}
    lines = ["", f"## Calibration (expected calibration error, {cal.get('n_bins', 10)} bins)", "",
             "| level | before calibration | after calibration |", "|---|---|---|"]
    for level in ("patient", "vertebra"):
        lines.append(f"| {level} | {_f(before.get(level))} | {_f(after.get(level))} |")
    if cal.get("note"):
        lines += ["", f"Before: {cal['note']}."]
    return lines


def write_report(metrics: Mapping[str, Any], path: str | Path,
                 plots: Mapping[str, str] | None = None) -> Path:
    """Write :func:`render_report` to ``path`` atomically and return the path."""
    write_text(path, render_report(metrics, plots))
    return Path(path)
