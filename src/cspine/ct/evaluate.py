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
* ``operating_points`` (with ``--model RUN``): for each operating point stored with the model
  (:mod:`cspine.ct.cls.operating_points`, chosen on its validation patients), the patient decision
  ``patient_overall >= threshold`` and the pooled vertebra decision ``C_k >= threshold`` with
  sensitivity and specificity and their 95% bootstrap CIs (patients resampled; at vertebra level
  a patient's seven vertebrae are resampled together, as they are not independent).
* ``calibration``: expected calibration error (10 equal-width bins, count-weighted) of the patient and
  pooled vertebra probabilities as given (``after``: predictions.csv holds calibrated probabilities)
  and ``before`` calibration. ``before`` needs the raw logits: a ``logit`` per vertebra in
  ``<UID>.json`` when predict wrote one, else the calibration stored with ``--model RUN``
  (``p = sigmoid(z / T + b)`` inverted exactly: ``z = T (logit(p) - b)``) for the vertebrae stage 2
  classified (``present`` in ``<UID>.json``; a vertebra stage 1 missed carries the prior either way).
  The uncalibrated patient probability is the model's pool (noisy-OR) of the uncalibrated vertebra
  probabilities. Without either source ``before`` is ``null`` and ``calibration.note`` says why.
  ``reliability.png`` draws both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cspine.ct.cls.operating_points import OperatingPoints, load_operating_points
from cspine.errors import DatasetError
from cspine.fileio import read_json, write_json
from cspine.labels import BOXES_CSV, PATIENT_OVERALL, STUDY_UID, TARGETS, TEST_BOXES_CSV, TRAIN_CSV, VERTEBRAE
from cspine.metrics.binary import auc, bootstrap_ci, threshold_metrics, youden_threshold
from cspine.metrics.rsna import prevalence_baseline_loss, prevalences, rsna_weighted_log_loss

log = logging.getLogger(__name__)

__all__ = ["attention_alignment", "calibration_errors", "compute_metrics", "evaluate",
           "operating_point_metrics", "read_predictions", "read_labels", "uncalibrated_probabilities"]

#: Box files looked for in ``--data ROOT`` (train boxes, and test boxes where a phantom wrote them).
BOX_FILES = (BOXES_CSV, TEST_BOXES_CSV)
#: Every file :func:`evaluate` writes into its output folder.
EVALUATE_OUTPUTS = ("metrics.json", "report.md", "roc.png", "roc_levels.png", "pr.png", "calibration.png",
                    "calibration_vertebrae.png", "reliability.png")
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


def _with_status(values: pd.DataFrame, status: pd.Series, path: Path) -> pd.DataFrame:
    """Every study counts, as in the competition's metric: an empty cell (a vertebra stage 1 did not find,
    or a whole study that failed or is not a cervical spine CT) is scored with the value submission.csv
    beside predictions.csv holds for it (the training prior, :mod:`cspine.ct.outputs`). Only a study with
    no such value is left out, with a warning (leaving out the studies a model fails on would flatter it).
    """
    incomplete = status.ne("complete").to_numpy()
    if incomplete.any():
        log.warning("%s: %d of %d studies not complete (%s); their empty cells are scored at "
                    "submission.csv's prior", path, int(incomplete.sum()), len(status),
                    ", ".join(f"{k}: {v}" for k, v in status.value_counts().items() if k != "complete"))
    values = values.copy()
    if values.isna().to_numpy().any():
        sub_path = path.parent / "submission.csv"
        if sub_path.is_file():
            sub = pd.read_csv(sub_path, dtype={"row_id": str}).set_index("row_id")["fractured"]
            for uid in values.index[values.isna().any(axis=1)]:
                for t in TARGETS:
                    if pd.isna(values.at[uid, t]) and f"{uid}_{t}" in sub.index:
                        values.at[uid, t] = float(sub[f"{uid}_{t}"])
    missing = values.isna().any(axis=1).to_numpy()
    if missing.any():
        log.warning("%s: %d studies have empty cells and no submission.csv value; left out", path,
                    int(missing.sum()))
    return values[~missing]


def read_predictions(path: str | Path) -> pd.DataFrame:
    """predictions.csv (StudyInstanceUID, C1..C7, patient_overall probabilities), indexed by UID."""
    path = Path(path)
    df = _read_csv(path, (STUDY_UID, *TARGETS), "predictions")
    values = df[list(TARGETS)].apply(pd.to_numeric, errors="coerce")
    if "status" in df.columns:  # cspine ct predict's status (cspine.ct.outputs): see _with_status
        values = _with_status(values, df["status"], path)
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


def _sens_spec(threshold: float) -> tuple[Any, Any]:
    def sens(t: np.ndarray, s: np.ndarray) -> float:
        return threshold_metrics(t, s, threshold).sensitivity

    def spec(t: np.ndarray, s: np.ndarray) -> float:
        return threshold_metrics(t, s, threshold).specificity

    return sens, spec


def _cluster_ci(y: np.ndarray, p: np.ndarray, metric: Any, seed: int, n_boot: int = N_BOOT
                ) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric`` over ``(P, 7)`` vertebra arrays, resampling patients."""
    if math.isnan(metric(y.ravel(), p.ravel())):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for rows in rng.integers(0, y.shape[0], size=(n_boot, y.shape[0])):
        v = metric(y[rows].ravel(), p[rows].ravel())
        if not math.isnan(v):
            values.append(v)
    if len(values) < 10:
        return math.nan, math.nan
    low, high = np.quantile(np.asarray(values), [0.025, 0.975])
    return float(low), float(high)


def operating_point_metrics(y: np.ndarray, p: np.ndarray, points: OperatingPoints, seed: int = 0
                            ) -> dict[str, Any]:
    """Sensitivity and specificity (95% bootstrap CIs) at each stored operating point.

    Args:
        y: ``(n, 8)`` labels in TARGETS order; ``p``: probabilities in the same order.
        points: the model's operating points.
        seed: bootstrap seed.

    Returns:
        ``{name: {"patient": {...}, "vertebra": {...}}}``, each level with ``threshold``,
        ``sensitivity``, ``sensitivity_ci95``, ``specificity``, ``specificity_ci95`` and the counts
        (``None`` thresholds: the point is undefined and so are its numbers).
    """
    n_v = len(VERTEBRAE)
    out: dict[str, Any] = {}
    for name in points.names:
        entry: dict[str, Any] = {}
        for level, thr in (("patient", points.patient.get(name)), ("vertebra", points.vertebra.get(name))):
            if thr is None:
                entry[level] = {"threshold": None}
                continue
            sens, spec = _sens_spec(thr)
            if level == "patient":
                yt, pt = y[:, n_v], p[:, n_v]
                sens_ci = bootstrap_ci(yt, pt, sens, n_boot=N_BOOT, seed=seed)
                spec_ci = bootstrap_ci(yt, pt, spec, n_boot=N_BOOT, seed=seed)
            else:
                yt, pt = y[:, :n_v], p[:, :n_v]
                sens_ci = _cluster_ci(yt, pt, sens, seed)
                spec_ci = _cluster_ci(yt, pt, spec, seed)
            tm = threshold_metrics(yt.ravel(), pt.ravel(), thr)
            entry[level] = {"threshold": thr, "sensitivity": tm.sensitivity,
                            "sensitivity_ci95": list(sens_ci), "specificity": tm.specificity,
                            "specificity_ci95": list(spec_ci),
                            "tp": tm.tp, "fp": tm.fp, "tn": tm.tn, "fn": tm.fn}
        out[name] = entry
    return out


def _present_flags(uids: pd.Index, pred_dir: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Per study and vertebra: classified by stage 2 (``present``), and the raw ``logit`` when every
    classified vertebra of every study has one; plus how many studies had a ``<UID>.json``."""
    n_v = len(VERTEBRAE)
    present = np.ones((len(uids), n_v), bool)
    logits = np.full((len(uids), n_v), np.nan)
    found = 0
    for i, uid in enumerate(uids):
        path = pred_dir / f"{uid}.json"
        if not path.is_file():
            continue
        found += 1
        verts = read_json(path).get("vertebrae", {})
        for j, v in enumerate(VERTEBRAE):
            d = verts.get(v) or {}
            present[i, j] = bool(d.get("present", True))
            if d.get("logit") is not None:
                logits[i, j] = float(d["logit"])
    complete = found == len(uids) and not np.isnan(logits[present]).any()
    return present, logits if complete else None, found


def uncalibrated_probabilities(p: np.ndarray, uids: pd.Index, pred_dir: Path, model_dir: Path | None
                               ) -> tuple[np.ndarray | None, str]:
    """The ``(n, 8)`` probabilities before calibration, and where they came from (see the module
    docstring); ``(None, reason)`` when neither raw logits nor the model's calibration is available."""
    from cspine.ct.cls.calibrate import Calibration, logit, pool_vertebrae, sigmoid

    n_v = len(VERTEBRAE)
    present, logits, found = _present_flags(uids, pred_dir)
    pool, source = "noisy_or", ""
    if model_dir is not None:
        extra = _cls_config(model_dir).get("extra", {})
        pool = str(extra.get("patient_pool", pool))
    if logits is None and model_dir is not None:
        cal = Calibration(**_cls_config(model_dir).get("extra", {}).get("calibration", {}))
        logits = (logit(p[:, :n_v]) - cal.bias) * cal.temperature
        source = (f"raw logits recovered from the calibrated probabilities with the model's calibration "
                  f"(T={cal.temperature:.3f}, b={cal.bias:.3f})")
        if found < len(uids):
            source += (f"; {len(uids) - found} studies without <UID>.json: all their vertebrae taken "
                       "as classified")
    elif logits is not None:
        source = "raw logits from <UID>.json"
    if logits is None:
        return None, ("raw logits unavailable (no 'logit' in <UID>.json and no --model RUN): ECE before "
                      "calibration not computed; 'after' is the ECE of the probabilities as given")
    raw = p.copy()
    raw[:, :n_v] = np.where(present, sigmoid(np.nan_to_num(logits)), p[:, :n_v])
    raw[:, n_v] = pool_vertebrae(raw[:, :n_v], pool)
    return raw, source


def calibration_errors(y: np.ndarray, p: np.ndarray, raw: np.ndarray | None, note: str) -> dict[str, Any]:
    """ECE of patient and pooled vertebra probabilities after (as given) and before calibration."""
    from cspine.reports.curves import calibration_bins

    n_v = len(VERTEBRAE)

    def ece(probs: np.ndarray) -> dict[str, float]:
        return {"patient": float(calibration_bins(y[:, n_v], probs[:, n_v])["ece"]),
                "vertebra": float(calibration_bins(y[:, :n_v].ravel(), probs[:, :n_v].ravel())["ece"])}

    return {"ece_after": ece(p), "ece_before": None if raw is None else ece(raw), "n_bins": 10, "note": note}


def _reliability_panels(y: np.ndarray, p: np.ndarray, raw: np.ndarray | None
                        ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    n_v = len(VERTEBRAE)
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"patient": {}, "vertebrae (pooled)": {}}
    for label, probs in (("before calibration", raw), ("after calibration", p)):
        if probs is not None:
            panels["patient"][label] = (y[:, n_v], probs[:, n_v])
            panels["vertebrae (pooled)"][label] = (y[:, :n_v].ravel(), probs[:, :n_v].ravel())
    return panels


def _cls_config(model_dir: Path) -> dict[str, Any]:
    folder = Path(model_dir)
    path = folder / "config.json" if (folder / "config.json").is_file() else folder / "cls" / "config.json"
    if not path.is_file():
        raise DatasetError("--model: no stage-2 model here (expected RUN/cls/config.json)", model_dir)
    return read_json(path)


def evaluate(pred_csv: str | Path, labels_csv: str | Path, out: str | Path, *,
             data_root: Path | None = None, pred_dir: Path | None = None, seed: int = 0,
             model_dir: Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Score predictions against labels; write metrics.json, ROC/PR/calibration PNGs and report.md.

    Args:
        pred_csv: predictions.csv from ``cspine ct predict``.
        labels_csv: train.csv-like labels (the phantom's test_labels.csv, or train.csv).
        out: output folder (created).
        data_root: an RSNA root whose train.csv gives the baseline prevalences and whose
            bounding-box CSVs give ``attention_alignment``.
        pred_dir: where the ``<UID>.json`` files are (default: beside ``pred_csv``).
        seed: bootstrap seed.
        model_dir: the model RUN folder (or ``RUN/cls``) that made the predictions: its stored
            operating points are evaluated and its calibration gives the ECE before calibration.
        overwrite: replace files under the evaluation's output names that cspine did not write
            (:mod:`cspine.output_folder`).

    Returns:
        The metrics written to ``out/metrics.json`` (undefined values as ``None``).

    Raises:
        DatasetError: unreadable or malformed CSVs, no study in common, or ``model_dir`` without a
            stage-2 model.
        OutputFolderError: ``out`` is a file, not writable, or holds one of the output names that cspine
            did not write (before anything is read).
    """
    from cspine.output_folder import open_output_folder
    from cspine.reports.ct_report import write_report
    from cspine.reports.curves import plot_calibration, plot_pr, plot_reliability, plot_roc

    pred_csv, labels_csv = Path(pred_csv), Path(labels_csv)
    pred = read_predictions(pred_csv)
    labels = read_labels(labels_csv)  # bad inputs fail before an output folder is made
    folder = open_output_folder(out, overwrite=overwrite, names=EVALUATE_OUTPUTS,
                                command="cspine ct evaluate")
    out = folder.path
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
    uids = labels.index.intersection(pred.index)
    y = labels.loc[uids, list(TARGETS)].to_numpy(np.int8)
    p = pred.loc[uids, list(TARGETS)].to_numpy(np.float64)
    points = None
    if model_dir is not None:
        model_dir = Path(model_dir)
        _cls_config(model_dir)  # a clear error for a wrong --model before any work
        points = load_operating_points(model_dir)
    metrics["operating_points"] = None if points is None else operating_point_metrics(y, p, points, seed)
    if model_dir is not None and points is None:
        metrics["operating_points_note"] = "the model stores no operating points (trained before they were)"
    json_dir = Path(pred_dir) if pred_dir else pred_csv.parent
    raw, note = uncalibrated_probabilities(p, uids, json_dir, model_dir)
    metrics["calibration"] = calibration_errors(y, p, raw, note)
    metrics["inputs"] = {"predictions": str(pred_csv), "labels": str(labels_csv),
                         "data_root": None if data_root is None else str(data_root),
                         "model": None if model_dir is None else str(model_dir)}
    metrics = _nan_to_none(metrics)

    out.mkdir(parents=True, exist_ok=True)
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
        "reliability": plot_reliability(_reliability_panels(y, p, raw), out / "reliability.png",
                                        "Reliability before and after calibration"),
    }
    write_json(out / "metrics.json", metrics)
    write_report(metrics, out / "report.md", {k: v.name for k, v in plots.items()})
    folder.record("metrics.json", "report.md", *(v.name for v in plots.values()))
    log.info("evaluated %d studies: patient AUC %s, RSNA loss %.4f", metrics["n_studies"],
             metrics["patient_auc"], metrics["rsna_weighted_log_loss"])
    return metrics
