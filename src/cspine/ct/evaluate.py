"""``cspine ct evaluate``: score predictions.csv against labels with the paper's and the
competition's metrics, and write metrics.json, plots and a markdown report.

Definitions (all on the studies present in both files):

* ``patient_auc`` (+ ``patient_auc_ci95``: seeded percentile bootstrap over studies, 2,000
  resamples) of ``patient_overall``; ``vertebra_auc`` per level C1..C7 and their mean (levels with
  a single class in the labels are ``null`` and left out of the mean), and ``vertebra_auc_pooled``
  over all 7 x n vertebrae, with ``vertebra_auc_pooled_level_prior`` beside it: the pooled AUC of
  scoring every vertebra by its level's training prevalence alone. Fractures are not spread evenly
  over C1..C7 (C2 and C7 break most often), so a pooled AUC well above 0.5 can come from knowing the
  level without seeing any fracture; a model shows what it sees only above that reference (the per-level
  AUCs carry no level information). ``beats_level_prior`` says whether it is above it.
* ``sensitivity``, ``specificity``, ``precision``, ``f1``, ``accuracy`` of the patient decision
  ``p >= threshold`` as ``{"at_0.5": ..., "at_youden": ...}``; the Youden threshold is chosen on the
  evaluated studies themselves, so its numbers are optimistic (an upper bound) and labelled so.
  ``threshold_metrics`` holds the full counts for patients and for pooled vertebrae.
* ``localization_accuracy``: among patients with a fracture, the share whose fractured levels all
  have ``p >= 0.5`` (``overall``), and per level the share of fractured vertebrae found.
* ``rsna_weighted_log_loss``: the competition metric (:mod:`cspine.metrics.rsna`), with
  ``prevalence_baseline_log_loss``: the same score for predicting the training prevalences
  (``ROOT/train.csv`` when ``--data`` is given, else the evaluated labels' own: in-sample).
* ``attention_alignment``: over fractured vertebrae whose stage-2 crop covers at least one slice
  carrying a fracture box, the mean share of the vertebra's attention on such slices; beside it
  ``attention_alignment_chance``, the share uniform attention would put there. Needs the boxes
  (``ROOT/train_bounding_boxes.csv``; for its test studies the phantom writes
  ``test_bounding_boxes.csv``) and the ``<UID>.json`` files that ``predict`` writes beside
  predictions.csv; ``null`` where there are none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cspine.errors import DatasetError
from cspine.fileio import read_json, write_json
from cspine.labels import BOXES_CSV, PATIENT_OVERALL, STUDY_UID, TARGETS, TEST_BOXES_CSV, TRAIN_CSV, VERTEBRAE
from cspine.metrics.binary import auc, bootstrap_ci, threshold_metrics, youden_threshold
from cspine.metrics.rsna import prevalence_baseline_loss, prevalences, rsna_weighted_log_loss

log = logging.getLogger(__name__)

__all__ = ["attention_alignment", "compute_metrics", "evaluate", "read_predictions", "read_labels"]

#: Box files looked for in ``--data ROOT`` (train boxes, and test boxes where a phantom wrote them).
BOX_FILES = (BOXES_CSV, TEST_BOXES_CSV)
N_BOOT = 2000


def _read_csv(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{what} file not found", path)
    try:
        df = pd.read_csv(path, dtype={STUDY_UID: str})
    except Exception as exc:  # pandas raises several types for a bad CSV
        raise DatasetError(f"cannot be read as CSV ({exc})", path) from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetError(f"{what} lacks the columns {missing} (has {list(df.columns)})", path)
    if df[STUDY_UID].duplicated().any():
        dup = df.loc[df[STUDY_UID].duplicated(), STUDY_UID].iloc[0]
        raise DatasetError(f"{what} lists study {dup} more than once", path)
    return df.set_index(STUDY_UID)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """predictions.csv (StudyInstanceUID, C1..C7, patient_overall probabilities), indexed by UID."""
    path = Path(path)
    df = _read_csv(path, (STUDY_UID, *TARGETS), "predictions")
    values = df[list(TARGETS)].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64)) | (values < 0).to_numpy() | (values > 1).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DatasetError(f"study {values.index[row]} has a probability that is missing or outside [0, 1]",
                           path)
    return values


def read_labels(path: str | Path) -> pd.DataFrame:
    """A train.csv-like label file (StudyInstanceUID, patient_overall, C1..C7), indexed by UID."""
    path = Path(path)
    df = _read_csv(path, (STUDY_UID, *TARGETS), "labels")
    values = df[list(TARGETS)]
    if not values.isin([0, 1]).all().all():
        raise DatasetError("labels must be 0 or 1 in C1..C7 and patient_overall", path)
    return values.astype(np.int8)


def _nan_to_none(obj: Any) -> Any:
    """JSON has no NaN: undefined metrics become null."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(float(obj)):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _localization(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    vy, vp = y[:, : len(VERTEBRAE)], p[:, : len(VERTEBRAE)] >= threshold
    fractured = vy.sum(axis=1) > 0
    found_all = np.all(~(vy == 1) | vp, axis=1)
    per_level = {}
    for j, name in enumerate(VERTEBRAE):
        pos = vy[:, j] == 1
        per_level[name] = float(vp[pos, j].mean()) if pos.any() else math.nan
    return {"overall": float(found_all[fractured].mean()) if fractured.any() else math.nan,
            "n_fractured_patients": int(fractured.sum()), "per_level": per_level, "threshold": threshold}


def _threshold_block(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    at_half = threshold_metrics(y, s, 0.5).to_dict()
    if 0 < y.sum() < y.size:
        thr = youden_threshold(y, s)
        at_youden = threshold_metrics(y, s, thr).to_dict()
    else:
        at_youden = {"threshold": math.nan}
    return {"at_0.5": at_half, "at_youden": at_youden}


def compute_metrics(pred: pd.DataFrame, labels: pd.DataFrame,
                    train_prevalence: Mapping[str, float] | None = None, seed: int = 0) -> dict[str, Any]:
    """Metrics of aligned predictions and labels (both indexed by UID with the 8 target columns).

    Args:
        pred: probabilities; rows are matched to ``labels`` by study UID.
        labels: 0/1 labels.
        train_prevalence: target prevalences of the training data for the baseline loss.
        seed: bootstrap seed.

    Returns:
        The metrics dictionary (NaN for undefined values; see the module docstring).
    """
    uids = labels.index.intersection(pred.index)
    if len(uids) == 0:
        raise DatasetError("no study of the labels has a prediction (compare the StudyInstanceUID columns)")
    y = labels.loc[uids, list(TARGETS)].to_numpy(np.int8)
    p = pred.loc[uids, list(TARGETS)].to_numpy(np.float64)
    yp, pp = y[:, -1], p[:, -1]
    vert_auc = {name: auc(y[:, j], p[:, j]) for j, name in enumerate(VERTEBRAE)}
    defined = [v for v in vert_auc.values() if not math.isnan(v)]
    patient_block = _threshold_block(yp, pp)
    prior = dict(train_prevalence) if train_prevalence is not None else prevalences(y)
    level_prior = np.array([prior[v] for v in VERTEBRAE], np.float64)
    keys = ("sensitivity", "specificity", "precision", "f1", "accuracy")
    metrics: dict[str, Any] = {
        "n_studies": len(uids),
        "n_missing_predictions": int(len(labels.index.difference(pred.index))),
        "n_unlabelled_predictions": int(len(pred.index.difference(labels.index))),
        "patient_prevalence": float(yp.mean()),
        "patient_auc": auc(yp, pp),
        "patient_auc_ci95": list(bootstrap_ci(yp, pp, n_boot=N_BOOT, seed=seed)),
        "vertebra_auc": vert_auc,
        "vertebra_auc_mean": float(np.mean(defined)) if defined else math.nan,
        "vertebra_auc_pooled": auc(y[:, :7].ravel(), p[:, :7].ravel()),
        "vertebra_auc_pooled_level_prior": auc(y[:, :7].ravel(), np.tile(level_prior, len(uids))),
        **{k: {"at_0.5": patient_block["at_0.5"][k], "at_youden": patient_block["at_youden"].get(k, math.nan)}
           for k in keys},
        "youden_threshold": patient_block["at_youden"]["threshold"],
        "youden_note": "chosen on the evaluated studies: an optimistic (upper-bound) operating point",
        "threshold_metrics": {"patient": patient_block,
                              "vertebra_pooled": _threshold_block(y[:, :7].ravel(), p[:, :7].ravel())},
        "localization_accuracy": _localization(y, p),
        "rsna_weighted_log_loss": rsna_weighted_log_loss(y, p),
        "prevalence_baseline_log_loss": prevalence_baseline_loss(y, train_prevalence),
        "prevalence_source": "train.csv" if train_prevalence is not None else "evaluated labels (in-sample)",
    }
    metrics["beats_prevalence_baseline"] = bool(
        metrics["rsna_weighted_log_loss"] < metrics["prevalence_baseline_log_loss"])
    metrics["beats_level_prior"] = bool(
        metrics["vertebra_auc_pooled"] > metrics["vertebra_auc_pooled_level_prior"])
    return metrics


def _read_boxes(data_root: Path) -> pd.DataFrame | None:
    frames = []
    for name in BOX_FILES:
        path = data_root / name
        if path.is_file():
            df = pd.read_csv(path, dtype={STUDY_UID: str})
            if STUDY_UID not in df.columns or "slice_number" not in df.columns:
                raise DatasetError(f"lacks the {STUDY_UID} or slice_number column", path)
            frames.append(df[[STUDY_UID, "slice_number"]])
    return pd.concat(frames, ignore_index=True) if frames else None


def attention_alignment(pred_dir: Path, labels: pd.DataFrame, boxes: pd.DataFrame) -> dict[str, Any]:
    """Share of stage-2 attention on slices carrying a fracture box (see the module docstring).

    Attention is read from ``pred_dir/<UID>.json`` (``vertebrae[name].attention`` with ``weights``
    and ``instance_numbers``: RSNA's ``slice_number`` is the InstanceNumber). Studies without a
    JSON, without boxes or without instance numbers (NIfTI input) are skipped.
    """
    boxed = boxes.groupby(STUDY_UID)["slice_number"].apply(lambda s: set(int(v) for v in s))
    shares, chance = [], []
    studies = 0
    for uid, slices in boxed.items():
        if uid not in labels.index:
            continue
        path = pred_dir / f"{uid}.json"
        if not path.is_file():
            continue
        doc = read_json(path)
        used = False
        for name in VERTEBRAE:
            if int(labels.loc[uid, name]) != 1:
                continue
            att = (doc.get("vertebrae", {}).get(name) or {}).get("attention")
            if not att or not att.get("instance_numbers") or None in att["instance_numbers"]:
                continue
            w = np.asarray(att["weights"], dtype=np.float64)
            on = np.array([int(n) in slices for n in att["instance_numbers"]])
            if not on.any() or w.sum() <= 0:
                continue  # this vertebra's crop holds no boxed slice (the box is another level's)
            shares.append(float(w[on].sum() / w.sum()))
            chance.append(float(on.mean()))
            used = True
        studies += used
    return {
        "attention_alignment": float(np.mean(shares)) if shares else math.nan,
        "attention_alignment_chance": float(np.mean(chance)) if chance else math.nan,
        "attention_alignment_n_vertebrae": len(shares),
        "attention_alignment_n_studies": studies,
    }


def evaluate(pred_csv: str | Path, labels_csv: str | Path, out: str | Path, *,
             data_root: Path | None = None, pred_dir: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Score predictions against labels; write metrics.json, ROC/PR/calibration PNGs and report.md.

    Args:
        pred_csv: predictions.csv from ``cspine ct predict``.
        labels_csv: train.csv-like labels (the phantom's test_labels.csv, or train.csv).
        out: output folder (created).
        data_root: an RSNA root whose train.csv gives the baseline prevalences and whose
            bounding-box CSVs give ``attention_alignment``.
        pred_dir: where the ``<UID>.json`` files are (default: beside ``pred_csv``).
        seed: bootstrap seed.

    Returns:
        The metrics written to ``out/metrics.json`` (undefined values as ``None``).

    Raises:
        DatasetError: unreadable or malformed CSVs, or no study in common.
    """
    from cspine.reports.ct_report import write_report
    from cspine.reports.curves import plot_calibration, plot_pr, plot_roc

    pred_csv, labels_csv, out = Path(pred_csv), Path(labels_csv), Path(out)
    pred = read_predictions(pred_csv)
    labels = read_labels(labels_csv)
    train_prev = None
    if data_root is not None:
        data_root = Path(data_root)
        if not data_root.is_dir():
            raise DatasetError("the --data folder does not exist", data_root)
        train_csv = data_root / TRAIN_CSV
        if train_csv.is_file() and train_csv.resolve() != labels_csv.resolve():
            train_prev = prevalences(read_labels(train_csv)[list(TARGETS)].to_numpy())
    metrics = compute_metrics(pred, labels, train_prev, seed=seed)
    alignment: dict[str, Any] = {"attention_alignment": None}
    if data_root is not None:
        boxes = _read_boxes(data_root)
        if boxes is not None:
            alignment = attention_alignment(Path(pred_dir) if pred_dir else pred_csv.parent, labels, boxes)
    metrics.update(alignment)
    metrics["inputs"] = {"predictions": str(pred_csv), "labels": str(labels_csv),
                         "data_root": None if data_root is None else str(data_root)}
    metrics = _nan_to_none(metrics)

    out.mkdir(parents=True, exist_ok=True)
    uids = labels.index.intersection(pred.index)
    y = labels.loc[uids, list(TARGETS)].to_numpy(np.int8)
    p = pred.loc[uids, list(TARGETS)].to_numpy(np.float64)
    plots = {
        "roc": plot_roc({"patient": (y[:, -1], p[:, -1]), "vertebrae (pooled)": (y[:, :7].ravel(),
                                                                                 p[:, :7].ravel())},
                        out / "roc.png", "ROC (patient and pooled vertebrae)"),
        "roc_levels": plot_roc({name: (y[:, j], p[:, j]) for j, name in enumerate(VERTEBRAE)},
                               out / "roc_levels.png", "ROC per vertebra"),
        "pr": plot_pr({"patient": (y[:, -1], p[:, -1]), "vertebrae (pooled)": (y[:, :7].ravel(),
                                                                               p[:, :7].ravel())},
                      out / "pr.png", "Precision-recall"),
        "calibration": plot_calibration(y[:, -1], p[:, -1], out / "calibration.png",
                                        f"Calibration: {PATIENT_OVERALL}"),
        "calibration_vertebrae": plot_calibration(y[:, :7].ravel(), p[:, :7].ravel(),
                                                  out / "calibration_vertebrae.png",
                                                  "Calibration: vertebrae (pooled)"),
    }
    write_json(out / "metrics.json", metrics)
    write_report(metrics, out / "report.md", {k: v.name for k, v in plots.items()})
    log.info("evaluated %d studies: patient AUC %s, RSNA loss %.4f", metrics["n_studies"],
             metrics["patient_auc"], metrics["rsna_weighted_log_loss"])
    return metrics
