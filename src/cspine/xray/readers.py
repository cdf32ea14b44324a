"""Model against radiologists: the paper's Table 2 and the statistics to go with it.

Inputs (CSV):

* ``predictions.csv`` of ``cspine xray predict``: ``path, prediction, <class probabilities>``.
* ``truth.csv``: ``path, label``.
* ``reads.csv``: either long (``path, reader, label``) or wide (``path, <reader 1>, <reader 2>, ...``).

Rows are matched by ``path`` exactly, else by file name when file names are unique. Only images
present in all three files are compared (the counts are reported).

Output: correct/wrong counts and accuracy for the model and each reader (Table 2), per-class
accuracy of each rater and per-class agreement between the model and each reader, Cohen's kappa
(scikit-learn) of the model against each reader and of each rater against the truth, and McNemar's
test of model-correct against reader-correct: the exact two-sided binomial test on the discordant
pairs when there are fewer than 25 of them, else the chi-square test with continuity correction.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cspine.errors import DatasetError

MODEL = "model"
EXACT_BELOW = 25


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise DatasetError("CSV file not found", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            r = csv.DictReader(f)
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in r]
            fields = [c.strip() for c in r.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot be read as CSV ({exc})", path) from exc
    if "path" not in fields:
        raise DatasetError(f"has no 'path' column (columns: {fields})", path)
    return fields, rows


def _column(path: Path, col: str) -> dict[str, str]:
    fields, rows = _read_csv(path)
    if col not in fields:
        raise DatasetError(f"has no {col!r} column (columns: {fields})", path)
    return {r["path"]: r[col] for r in rows if r[col]}


def _reads(path: Path) -> dict[str, dict[str, str]]:
    fields, rows = _read_csv(path)
    out: dict[str, dict[str, str]] = {}
    if "reader" in fields and "label" in fields:
        for r in rows:
            if r["label"]:
                out.setdefault(r["reader"], {})[r["path"]] = r["label"]
    else:
        readers = [c for c in fields if c != "path"]
        if not readers:
            raise DatasetError("needs columns path,reader,label or path,<reader 1>,<reader 2>,...", path)
        for c in readers:
            out[c] = {r["path"]: r[c] for r in rows if r[c]}
    if not out:
        raise DatasetError("holds no reads", path)
    return out


def _by_name(d: Mapping[str, str]) -> dict[str, str] | None:
    names = [Path(k).name for k in d]
    return {Path(k).name: v for k, v in d.items()} if len(set(names)) == len(names) else None


def _align(truth: dict[str, str], *others: dict[str, str]) -> tuple[list[str], list[dict[str, str]]]:
    keys = set(truth)
    if all(keys & set(o) for o in others):
        return sorted(keys.intersection(*map(set, others))), [truth, *others]
    # fall back to file names (predictions often carry absolute paths, reads only the name)
    mapped = [_by_name(d) for d in (truth, *others)]
    if any(m is None for m in mapped):
        raise DatasetError("paths do not match between the CSVs and file names are not unique")
    common = set(mapped[0]).intersection(*map(set, mapped[1:]))  # type: ignore[arg-type]
    return sorted(common), mapped  # type: ignore[return-value]


def mcnemar(model_correct: np.ndarray, reader_correct: np.ndarray) -> dict[str, Any]:
    """McNemar's test on paired correctness.

    Returns:
        ``{"b": model right & reader wrong, "c": model wrong & reader right, "test", "statistic",
        "p_value"}``; exact binomial (two-sided) for ``b + c < 25``, else chi-square with continuity
        correction; ``p_value`` 1.0 when there is no discordant pair.
    """
    m, r = np.asarray(model_correct, bool), np.asarray(reader_correct, bool)
    b, c = int(np.sum(m & ~r)), int(np.sum(~m & r))
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "test": "none (no discordant pairs)", "statistic": None, "p_value": 1.0}
    if n < EXACT_BELOW:
        p = float(stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue)
        return {"b": b, "c": c, "test": "exact binomial", "statistic": float(min(b, c)),
                "p_value": min(1.0, p)}
    chi2 = (abs(b - c) - 1) ** 2 / n
    return {"b": b, "c": c, "test": "chi-square (continuity corrected)", "statistic": float(chi2),
            "p_value": float(stats.chi2.sf(chi2, 1))}


def _kappa(a: list[str], b: list[str]) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    k = float(cohen_kappa_score(a, b))
    return k if math.isfinite(k) else None


def compare_readers(pred_csv: str | Path, reads_csv: str | Path, truth_csv: str | Path) -> dict[str, Any]:
    """Compare the model's predictions with each reader's reads against the truth.

    Returns:
        ``{"n", "classes", "table": {rater: {"correct", "wrong", "accuracy"}}, "per_class": {rater:
        {class: accuracy}}, "agreement_with_model": {reader: {"overall", "per_class": {class: share
        of the class's images where reader and model give the same label}}}, "kappa_vs_model",
        "kappa_vs_truth", "mcnemar": {reader: {...}}}``.
    """
    truth = _column(Path(truth_csv), "label")
    pred = _column(Path(pred_csv), "prediction")
    reads = _reads(Path(reads_csv))
    reader_names = list(reads)
    keys, aligned = _align(truth, pred, *[reads[r] for r in reader_names])
    if not keys:
        raise DatasetError("no image is present in all of predictions, reads and truth", truth_csv)
    t = [aligned[0][k] for k in keys]
    raters = {MODEL: [aligned[1][k] for k in keys]}
    for j, r in enumerate(reader_names):
        raters[r] = [aligned[2 + j][k] for k in keys]
    classes = sorted(set(t).union(*map(set, raters.values())))
    truth_arr = np.array(t)
    correct = {name: np.array(v) == truth_arr for name, v in raters.items()}
    out: dict[str, Any] = {
        "n": len(keys), "n_truth": len(truth), "n_predictions": len(pred),
        "classes": classes,
        "table": {name: {"correct": int(c.sum()), "wrong": int((~c).sum()), "accuracy": float(c.mean())}
                  for name, c in correct.items()},
        "per_class": {name: {cl: (float(c[truth_arr == cl].mean()) if (truth_arr == cl).any() else None)
                             for cl in classes} for name, c in correct.items()},
        "kappa_vs_truth": {name: _kappa(v, t) for name, v in raters.items()},
        "kappa_vs_model": {}, "agreement_with_model": {}, "mcnemar": {},
    }
    model_arr = np.array(raters[MODEL])
    for r in reader_names:
        same = np.array(raters[r]) == model_arr
        out["kappa_vs_model"][r] = _kappa(raters[r], raters[MODEL])
        out["agreement_with_model"][r] = {
            "overall": float(same.mean()),
            "per_class": {cl: (float(same[truth_arr == cl].mean()) if (truth_arr == cl).any() else None)
                          for cl in classes}}
        out["mcnemar"][r] = mcnemar(correct[MODEL], correct[r])
    return out


def render_readers_table(result: Mapping[str, Any]) -> str:
    """The comparison as markdown tables."""
    lines = [f"{result['n']} images compared.", "", "| rater | correct | wrong | accuracy | kappa vs truth "
             "| kappa vs model | McNemar p (test) |", "|---|---|---|---|---|---|---|"]
    for name, row in result["table"].items():
        kt, km = result["kappa_vs_truth"].get(name), result["kappa_vs_model"].get(name)
        mc = result["mcnemar"].get(name)
        test = "" if mc is None else f"{mc['p_value']:.4g} ({mc['test']})"
        lines.append(f"| {name} | {row['correct']} | {row['wrong']} | {row['accuracy']:.3f} | "
                     f"{_num(kt, 'n/a')} | {_num(km, '')} | {test} |")
    lines += ["", "| rater | " + " | ".join(result["classes"]) + " |",
              "|---|" + "---|" * len(result["classes"])]
    for name, pc in result["per_class"].items():
        lines.append(f"| {name} | " + " | ".join(_num(v, "n/a") for v in pc.values()) + " |")
    return "\n".join(lines) + "\n"


def _num(v: float | None, missing: str) -> str:
    return missing if v is None else f"{v:.3f}"
