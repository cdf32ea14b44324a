"""The output folder of ``cspine ct predict``: one study's result and the files built from all of them.

Every file is written atomically and noted in the folder's manifest (:mod:`cspine.output_folder`); a
rerun rebuilds the CSVs from the ``<UID>.json`` files that the same model with the same options wrote,
so an interrupted run resumes and a rerun with another model never mixes results:

* ``<UID>.json``: :meth:`StudyPrediction.to_dict`;
* ``predictions.csv``: StudyInstanceUID, C1..C7, patient_overall (probabilities), ``status``
  (:mod:`cspine.ct.study_status`: complete / levels out of order / levels missing / not a cervical spine
  CT / failed) and
  ``missing_levels``; one row per study, sorted by UID. A vertebra stage 1 did not find has an empty
  cell (no probability); a ``levels missing`` study's patient_overall is partial (the missing levels
  enter it with the training prior); a study that is not a cervical spine CT, or failed, has no
  probability at all. With an operating point: ``operating_point`` and ``C1_positive`` ..
  ``C7_positive``, ``patient_positive`` (1/0, empty where there is no probability);
* ``submission.csv``: Kaggle format (row_id = ``<UID>_<target>``, fractured), in test.csv's row
  order when there is one. It needs a value in every row: a missing vertebra, a study that is not a
  cervical spine CT, failed or has no result gets the model's training prior (vertebrae) and its
  noisy-OR (patient), with a warning; predictions.csv's status says which values those are;
* ``failures.json``: the studies that failed and why (absent when none failed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cspine.ct.study_status import COMPLETE, FAILED
from cspine.errors import DatasetError
from cspine.fileio import atomic_path, read_json, write_json
from cspine.io.study import is_nifti, nifti_stem
from cspine.labels import PATIENT_OVERALL, STUDY_UID, SUBMISSION_COLUMNS, TARGETS, TEST_COLUMNS, VERTEBRAE
from cspine.output_folder import MANIFEST, OutputFolder

log = logging.getLogger(__name__)

__all__ = ["FAILURES_JSON", "PREDICTIONS_CSV", "PREDICTION_COLUMNS", "SUBMISSION_CSV", "StudyPrediction",
           "done_predictions", "read_test_csv", "rebuild_outputs", "write_failures", "write_predictions_csv"]

#: Extra columns of ``cspine ct predict``'s predictions.csv (the baseline writes only the probabilities).
STATUS_COLUMNS = ("status", "missing_levels")
POSITIVE_COLUMNS = ("operating_point", *(f"{v}_positive" for v in VERTEBRAE), "patient_positive")

PREDICTIONS_CSV = "predictions.csv"
SUBMISSION_CSV = "submission.csv"
FAILURES_JSON = "failures.json"
#: The columns of predictions.csv.
PREDICTION_COLUMNS = (STUDY_UID, *VERTEBRAE, PATIENT_OVERALL)


@dataclass
class StudyPrediction:
    """The prediction for one study (what ``<UID>.json`` holds).

    Attributes:
        study_uid: StudyInstanceUID (see :mod:`cspine.io.study` for the fallbacks).
        probs: calibrated fracture probability per C1..C7; ``None`` for a vertebra not found (and for
            every vertebra of a study that is not a cervical spine CT).
        patient_overall: calibrated patient probability (partial when levels are missing: see
            ``status``); ``None`` for a study that is not a cervical spine CT.
        vertebrae: per C1..C7: ``present``, ``z_range`` (start, stop) and ``box`` (y0, y1, x0, x1) in
            canonical voxel indices, ``centroid``; ``None`` ranges for a vertebra not found.
        attention: per classified vertebra: ``weights`` (N,), ``slice_indices`` (canonical volume
            slice of each crop slice) and ``instance_numbers`` (DICOM InstanceNumber of that slice,
            RSNA's ``slice_number``; ``None`` for volumes not read from DICOM).
        seconds: wall seconds per stage: decode, seg, crops, cls (+ explain, dicom, total).
        versions: package versions and the model's identity (RUN folder, weights digests, fingerprint).
        warnings: what went wrong without stopping the study (levels not found, series choice...).
        source: the input path (``None`` for an in-memory volume).
        shape: canonical (Z, Y, X) of the volume; ``spacing``: mm per axis.
        explain_files: PNGs written by ``--explain``.
        status: one of :data:`cspine.ct.study_status.STATUSES` (never ``failed`` here).
        status_reason: why the study is not complete (empty when it is).
        prior: the model's training prior per C1..C7 and patient_overall (what submission.csv uses
            where there is no probability).
        operating_point: :meth:`ResolvedOperatingPoint.to_dict` when one was applied.
        positive: per C1..C7 and ``patient_overall``: the call at the operating point (``None`` without
            a probability); empty without an operating point.
        dicom: :meth:`cspine.outputs.dicom_results.DicomResults.to_dict` with ``--dicom-out``.
        run_key: what a rerun must match to reuse this result: ``model`` (fingerprint), ``input``
            (digest of the input files' names, sizes and times) and ``options``.
    """

    study_uid: str
    probs: dict[str, float | None]
    patient_overall: float | None
    vertebrae: dict[str, dict[str, Any]]
    attention: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    versions: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    source: str | None = None
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    explain_files: list[str] = field(default_factory=list)
    status: str = COMPLETE
    status_reason: str = ""
    prior: dict[str, float] = field(default_factory=dict)
    operating_point: dict[str, Any] | None = None
    positive: dict[str, bool | None] = field(default_factory=dict)
    dicom: dict[str, Any] | None = None
    run_key: dict[str, Any] = field(default_factory=dict)

    @property
    def missing_levels(self) -> list[str]:
        """The vertebrae without a probability."""
        return [v for v in VERTEBRAE if self.probs.get(v) is None]

    def row(self) -> dict[str, Any]:
        """One predictions.csv row (``None`` is written as an empty cell)."""
        row: dict[str, Any] = {STUDY_UID: self.study_uid, **{v: self.probs.get(v) for v in VERTEBRAE},
                               PATIENT_OVERALL: self.patient_overall, "status": self.status,
                               "missing_levels": ";".join(self.missing_levels)}
        if self.operating_point is not None:
            row["operating_point"] = self.operating_point.get("name")
            for v in (*VERTEBRAE, PATIENT_OVERALL):
                call = self.positive.get(v)
                row[f"{v}_positive" if v != PATIENT_OVERALL else "patient_positive"] = \
                    None if call is None else int(call)
        return row

    def submission_value(self, target: str) -> float:
        """The value submission.csv needs for ``target``: the probability, else the training prior."""
        value = self.patient_overall if target == PATIENT_OVERALL else self.probs.get(target)
        return float(self.prior.get(target, 0.5)) if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``probabilities`` and per-vertebra geometry + attention together."""
        verts = {}
        for v in VERTEBRAE:
            verts[v] = {"probability": self.probs.get(v), **self.vertebrae.get(v, {"present": False}),
                        "attention": self.attention.get(v)}
            if self.positive:
                verts[v]["positive"] = self.positive.get(v)
        return {
            "study_uid": self.study_uid,
            "source": self.source,
            "status": self.status,
            "status_reason": self.status_reason,
            "missing_levels": self.missing_levels,
            "probabilities": {**self.probs, PATIENT_OVERALL: self.patient_overall},
            "prior": dict(self.prior),
            "operating_point": self.operating_point,
            "patient_positive": self.positive.get(PATIENT_OVERALL),
            "vertebrae": verts,
            "seconds": self.seconds,
            "volume": {"shape": None if self.shape is None else list(self.shape),
                       "spacing_mm": None if self.spacing is None else list(self.spacing)},
            "versions": self.versions,
            "warnings": self.warnings,
            "explain_files": self.explain_files,
            "dicom": self.dicom,
            "run_key": self.run_key,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StudyPrediction:
        """Rebuild a result from its JSON document (used to rebuild the CSVs on resume)."""
        probs = doc["probabilities"]
        verts = doc.get("vertebrae", {})
        geometry = {v: {k: x for k, x in d.items() if k not in ("probability", "attention", "positive")}
                    for v, d in verts.items()}
        attention = {v: d["attention"] for v, d in verts.items() if d.get("attention")}
        positive: dict[str, bool | None] = {}
        if doc.get("operating_point"):
            positive = {v: (verts.get(v) or {}).get("positive") for v in VERTEBRAE}
            positive[PATIENT_OVERALL] = doc.get("patient_positive")
        vol = doc.get("volume") or {}
        return cls(study_uid=doc["study_uid"], probs={v: _opt_float(probs[v]) for v in VERTEBRAE},
                   patient_overall=_opt_float(probs[PATIENT_OVERALL]), vertebrae=geometry,
                   attention=attention,
                   seconds=doc.get("seconds", {}), versions=doc.get("versions", {}),
                   warnings=list(doc.get("warnings", [])), source=doc.get("source"),
                   shape=tuple(vol["shape"]) if vol.get("shape") else None,
                   spacing=tuple(vol["spacing_mm"]) if vol.get("spacing_mm") else None,
                   explain_files=list(doc.get("explain_files", [])), status=str(doc.get("status", COMPLETE)),
                   status_reason=str(doc.get("status_reason", "")),
                   prior={k: float(x) for k, x in (doc.get("prior") or {}).items()},
                   operating_point=doc.get("operating_point"), positive=positive, dicom=doc.get("dicom"),
                   run_key=dict(doc.get("run_key") or {}))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def failed_row(source: str) -> dict[str, Any]:
    """The predictions.csv row of a study that failed: named as :func:`cspine.io.study.study_uid` would
    name it without tags (folder name or NIfTI stem), no probability."""
    return {STUDY_UID: nifti_stem(source) if is_nifti(source) else Path(source).name, "status": FAILED}


def read_test_csv(path: Path) -> pd.DataFrame:
    """The competition's test.csv, checked.

    Raises:
        DatasetError: missing file or column, or an unknown ``prediction_type``.
    """
    if not path.is_file():
        raise DatasetError("test.csv not found", path)
    df = pd.read_csv(path, dtype=str)
    missing = [c for c in TEST_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"lacks the columns {missing} of the competition's test.csv", path)
    bad = ~df["prediction_type"].isin(TARGETS)
    if bad.any():
        raise DatasetError(f"unknown prediction_type {df['prediction_type'][bad].iloc[0]!r}", path)
    return df


def done_predictions(out_dir: Path, accept: Callable[[StudyPrediction], bool] | None = None,
                     folder: OutputFolder | None = None) -> dict[str, StudyPrediction]:
    """The results already in ``out_dir`` (every ``<UID>.json`` with probabilities), by UID.

    Args:
        out_dir: the prediction folder.
        accept: keep only the results it accepts (e.g. those of the current model and options).
        folder: when given, only files cspine wrote there (its manifest) count.
    """
    done: dict[str, StudyPrediction] = {}
    for path in sorted(out_dir.glob("*.json")):
        if path.name in (FAILURES_JSON, MANIFEST) or path.name.startswith("."):
            continue
        if folder is not None and (path.name not in folder.recorded or not folder.owns(path.name)):
            continue
        try:
            result = StudyPrediction.from_dict(read_json(path))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: not a study result (%s); ignored", path, exc)
            continue
        if accept is None or accept(result):
            done[result.study_uid] = result
    return done


def write_predictions_csv(rows: Iterable[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``out_dir/predictions.csv`` from rows with :data:`PREDICTION_COLUMNS` (plus the status and
    operating-point columns when the rows have them), sorted by UID; ``None`` is an empty cell."""
    rows = list(rows)
    extra = [c for c in (*STATUS_COLUMNS, *POSITIVE_COLUMNS) if any(c in r for r in rows)]
    pred = pd.DataFrame(rows, columns=[*PREDICTION_COLUMNS, *extra])
    for c in extra:
        if c.endswith("_positive"):
            pred[c] = pred[c].astype("Int64")
    pred = pred.sort_values(STUDY_UID, kind="stable").reset_index(drop=True)
    path = out_dir / PREDICTIONS_CSV
    with atomic_path(path) as tmp:
        pred.to_csv(tmp, index=False, float_format="%.6f")
    return path


def write_failures(out_dir: Path, failed: Sequence[tuple[str, str]]) -> None:
    """Write ``failures.json`` (input, error) for the failed studies, or remove an old one when none
    failed (a clean rerun clears the old report)."""
    path = out_dir / FAILURES_JSON
    if failed:
        write_json(path, [{"input": p, "error": e} for p, e in failed])
    elif path.exists():
        path.unlink()


def rebuild_outputs(out_dir: Path, test_csv: Path | None = None, prior: dict[str, float] | None = None, *,
                    accept: Callable[[StudyPrediction], bool] | None = None,
                    failed: Sequence[tuple[str, str]] = (), folder: OutputFolder | None = None,
                    ) -> tuple[Path, Path, int, list[str]]:
    """Write predictions.csv and submission.csv from the ``<UID>.json`` files in ``out_dir``.

    Args:
        out_dir: the prediction folder.
        test_csv: the competition's test.csv: the submission then has exactly its rows, in order.
        prior: probabilities for test.csv studies without a result (default 0.5 each).
        accept: which results belong in the CSVs (default: all); others stay on disk, unlisted.
        failed: ``(input, error)`` of this run's failed studies: a ``failed`` row each.
        folder: only files cspine wrote there count (see :func:`done_predictions`).

    Returns:
        (predictions.csv, submission.csv, number of studies with a result, test studies filled with
        the prior).
    """
    results = done_predictions(out_dir, accept, folder)
    rows = [results[u].row() for u in sorted(results)]
    failed_rows = [failed_row(src) for src, _ in failed]
    failed_rows = [r for r in failed_rows if r[STUDY_UID] not in results]
    pred_path = write_predictions_csv(rows + failed_rows, out_dir)
    missing: list[str] = []
    fill = prior or {t: 0.5 for t in TARGETS}
    if test_csv is not None:
        test = read_test_csv(test_csv)
        values = []
        for uid, target in zip(test[STUDY_UID], test["prediction_type"], strict=True):
            if uid in results:
                values.append(results[uid].submission_value(target))
            else:
                values.append(fill[target])
                missing.append(uid)
        missing = list(dict.fromkeys(missing))
        if missing:
            log.warning("%d test.csv studies have no prediction and get the prior (first: %s)",
                        len(missing), missing[0])
        sub = pd.DataFrame({SUBMISSION_COLUMNS[0]: test["row_id"], SUBMISSION_COLUMNS[1]: values})
    else:
        sub = pd.DataFrame([(f"{u}_{t}", results[u].submission_value(t))
                            for u in sorted(results) for t in TARGETS], columns=list(SUBMISSION_COLUMNS))
    sub_path = out_dir / SUBMISSION_CSV
    with atomic_path(sub_path) as tmp:
        sub.to_csv(tmp, index=False, float_format="%.6f")
    return pred_path, sub_path, len(rows), missing
