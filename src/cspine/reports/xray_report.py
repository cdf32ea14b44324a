"""Report of a radiograph evaluation: ``metrics.json``, ROC and confusion PNGs, ``report.md``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cspine.fileio import write_json, write_text
from cspine.metrics.multiclass import PER_CLASS_METRICS, json_safe, multiclass_metrics
from cspine.reports.curves import plot_confusion, plot_roc

__all__ = ["render_xray_report", "write_xray_report"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def render_xray_report(metrics: Mapping[str, Any], notes: Sequence[str] = ()) -> str:
    """Markdown: per model accuracy, macro averages, per-class table, and the plots beside it."""
    lines = ["# Radiograph classification: evaluation", ""]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    lines += ["| model | n | accuracy | macro sensitivity | macro specificity | macro precision | macro F1 "
              "| macro AUC |", "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics["models"].items():
        mac = m["macro"]
        lines.append(f"| {name} | {m['n']} | {_f(m['accuracy'])} | " + " | ".join(
            _f(mac[k]) for k in PER_CLASS_METRICS) + " |")
    for name, m in metrics["models"].items():
        lines += ["", f"## {name}", "", "| class | support | " + " | ".join(PER_CLASS_METRICS) + " |",
                  "|---|---|" + "---|" * len(PER_CLASS_METRICS)]
        for cls, pc in m["per_class"].items():
            lines.append(f"| {cls} | {int(pc['support'] or 0)} | " + " | ".join(
                _f(pc[k]) for k in PER_CLASS_METRICS) + " |")
        plots = m.get("plots", {})
        lines += [""] + [f"![{k}]({v})" for k, v in plots.items()]
    return "\n".join(lines) + "\n"


def write_xray_report(out: str | Path, y_true: np.ndarray, probas: Mapping[str, np.ndarray],
                      class_names: Sequence[str], extra: Mapping[str, Any] | None = None,
                      notes: Sequence[str] = ()) -> dict[str, Any]:
    """Compute and write the metrics of each model (and ensemble) on the same images.

    Args:
        out: the output folder.
        y_true: true class indices ``(N,)``.
        probas: ``{model name: probabilities (N, C)}``.
        class_names: the ``C`` class names.
        extra: more keys for ``metrics.json`` (data, split, model folders ...).
        notes: lines for the top of ``report.md`` (e.g. a leakage warning).

    Returns:
        The ``metrics.json`` content (undefined values as ``None``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true, dtype=np.int64)
    doc: dict[str, Any] = {**(extra or {}), "class_names": list(class_names), "models": {}}
    for name, proba in probas.items():
        m = json_safe(multiclass_metrics(y_true, proba, class_names))
        slug = _slug(name)
        roc = plot_roc({c: (y_true == k, proba[:, k]) for k, c in enumerate(class_names)},
                       out / f"roc_{slug}.png", title=f"ROC one-vs-rest: {name}")
        cm = plot_confusion(np.asarray(m["confusion_matrix"]), class_names, out / f"confusion_{slug}.png",
                            title=f"Confusion matrix: {name}")
        m["plots"] = {"roc": roc.name, "confusion": cm.name}
        doc["models"][name] = m
    write_json(out / "metrics.json", doc)
    write_text(out / "report.md", render_xray_report(doc, notes))
    return doc
