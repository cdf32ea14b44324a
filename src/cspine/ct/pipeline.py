"""The whole CT pipeline: a study in, fracture probabilities for C1..C7 and the patient out.

``decode`` (:func:`cspine.io.study.load_study`, canonical orientation) -> ``seg`` (stage 1:
C1..C7 labels and boxes) -> ``crops`` (per-vertebra 2.5D stacks) -> ``cls`` (stage 2: CNN + BiGRU +
attention, calibrated). Each stage is timed; the result carries the probabilities, where each
vertebra was found, the stage-2 attention with its source slices, versions and warnings.

Study identity: a DICOM study is named by its StudyInstanceUID tag; when the tag is absent or
empty (anonymised files), by its folder name, which is the UID in the RSNA layout
(``test_images/<UID>/<N>.dcm``). A NIfTI CT is named by the tag-like ``StudyInstanceUID`` of its
metadata if a reader set one, else by its file name without ``.nii``/``.nii.gz``.

Outputs of :func:`predict_many` (all written atomically; a rerun skips studies whose JSON exists and
rebuilds the CSVs from all JSONs, so an interrupted run resumes):

* ``<UID>.json``: :meth:`StudyResult.to_dict`;
* ``predictions.csv``: StudyInstanceUID, C1..C7, patient_overall (probabilities);
* ``submission.csv``: Kaggle format (row_id = ``<UID>_<target>``, fractured), in test.csv's row
  order when there is one; a test.csv study that failed gets the model's training prior (vertebrae)
  and its noisy-OR (patient), with a warning, so the file stays a complete submission;
* ``failures.json``: the studies that failed and why (absent when none failed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cspine import __version__
from cspine.errors import CheckpointError, CspineError, DatasetError
from cspine.fileio import atomic_path, read_json, write_json
from cspine.io.volume import Volume
from cspine.labels import (
    PATIENT_OVERALL,
    STUDY_UID,
    SUBMISSION_COLUMNS,
    TARGETS,
    TEST_COLUMNS,
    TEST_CSV,
    TEST_IMAGES,
    VERTEBRAE,
)

if TYPE_CHECKING:
    from cspine.ct.cls.predict import ClsModel
    from cspine.ct.seg.predict import SegModel

log = logging.getLogger(__name__)

__all__ = ["CtModel", "PredictSummary", "StudyInputError", "StudyResult", "expand_inputs", "predict",
           "predict_many", "rebuild_outputs", "MIN_SLICES"]

#: Fewest axial slices a study must have: no cervical spine CT has fewer (10 slices of 5 mm cover
#: 50 mm, less than half of C1..C7); fewer means a scout, a partial series or a wrong folder.
MIN_SLICES = 10
PREDICTIONS_CSV = "predictions.csv"
SUBMISSION_CSV = "submission.csv"
FAILURES_JSON = "failures.json"
SEG_DIR, CLS_DIR = "seg", "cls"
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class StudyInputError(CspineError):
    """A study cannot go through the pipeline (empty folder, too few slices, not a CT)."""


# --- the model -----------------------------------------------------------------------------------

def _weights_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class CtModel:
    """Both stages of a trained RUN folder (``RUN/seg`` and ``RUN/cls``), loaded once.

    Attributes:
        seg: the stage-1 model.
        cls: the stage-2 model with its calibration.
        run_dir: the RUN folder.
        info: per stage: config kind, cspine version that trained it, weights digest.
    """

    seg: SegModel
    cls: ClsModel
    run_dir: Path
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path, device: str | None = None) -> CtModel:
        """Load ``RUN/seg`` and ``RUN/cls``.

        Args:
            run_dir: a folder written by ``cspine ct train --stage all`` (or both stages).
            device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

        Raises:
            CheckpointError: the folder or one stage is missing (the message names the stage and
                the command that makes it), or a stage's files do not match its config.
        """
        from cspine.ct.cls.predict import ClsModel
        from cspine.ct.seg.predict import SegModel

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError("model RUN folder not found", run_dir)
        stages = {SEG_DIR: "stage 1 (segmentation, `cspine ct train --stage seg`)",
                  CLS_DIR: "stage 2 (vertebra classifier, `cspine ct train --stage cls`)"}
        missing = [f"{name}/ for {what}" for name, what in stages.items()
                   if not (run_dir / name / "config.json").is_file()]
        if missing:
            raise CheckpointError(f"the RUN folder lacks {' and '.join(missing)}; "
                                  "`cspine ct train --stage all` trains both", run_dir)
        seg = SegModel.load(run_dir / SEG_DIR, device=device)
        clsm = ClsModel.load(run_dir / CLS_DIR, device=device)
        info: dict[str, Any] = {"run_dir": str(run_dir.resolve())}
        for name in (SEG_DIR, CLS_DIR):
            doc = read_json(run_dir / name / "config.json")
            info[name] = {"kind": doc.get("kind"), "trained_with": doc.get("cspine_version"),
                          "weights_sha256_16": _weights_digest(run_dir / name / "model.safetensors"),
                          "config": doc.get("config")}
        return cls(seg=seg, cls=clsm, run_dir=run_dir, info=info)

    @property
    def device(self) -> str:
        return str(self.cls.device)

    def prior(self) -> dict[str, float]:
        """Training prevalence per vertebra (stage 2's prior) and its noisy-OR for the patient."""
        p = {v: float(self.cls.prior.get(v, 0.0)) for v in VERTEBRAE}
        p[PATIENT_OVERALL] = float(1.0 - np.prod([1.0 - x for x in p.values()]))
        return p


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes a prediction."""
    import importlib.metadata as md

    out = {"cspine": __version__, "python": platform.python_version()}
    for name in ("torch", "timm", "segmentation-models-pytorch", "numpy", "pydicom", "nibabel"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


# --- one study -----------------------------------------------------------------------------------

@dataclass
class StudyResult:
    """The prediction for one study (what ``<UID>.json`` holds).

    Attributes:
        study_uid: StudyInstanceUID (see the module docstring for the fallbacks).
        probs: calibrated fracture probability per C1..C7.
        patient_overall: calibrated patient probability.
        vertebrae: per C1..C7: ``present``, ``z_range`` (start, stop) and ``box`` (y0, y1, x0, x1) in
            canonical voxel indices, ``centroid``; ``None`` ranges for a vertebra not found.
        attention: per classified vertebra: ``weights`` (N,), ``slice_indices`` (canonical volume
            slice of each crop slice) and ``instance_numbers`` (DICOM InstanceNumber of that slice,
            RSNA's ``slice_number``; ``None`` for volumes not read from DICOM).
        seconds: wall seconds per stage: decode, seg, crops, cls (+ explain, total).
        versions: package versions and the model's identity (RUN folder, weights digests).
        warnings: what went wrong without stopping the study (levels not found, series choice...).
        source: the input path (``None`` for an in-memory volume).
        shape: canonical (Z, Y, X) of the volume; ``spacing``: mm per axis.
        explain_files: PNGs written by ``--explain``.
    """

    study_uid: str
    probs: dict[str, float]
    patient_overall: float
    vertebrae: dict[str, dict[str, Any]]
    attention: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    versions: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    source: str | None = None
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    explain_files: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """One predictions.csv row."""
        return {STUDY_UID: self.study_uid, **{v: self.probs[v] for v in VERTEBRAE},
                PATIENT_OVERALL: self.patient_overall}

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``probabilities`` and per-vertebra geometry + attention together."""
        verts = {}
        for v in VERTEBRAE:
            verts[v] = {"probability": self.probs[v], **self.vertebrae.get(v, {"present": False}),
                        "attention": self.attention.get(v)}
        return {
            "study_uid": self.study_uid,
            "source": self.source,
            "probabilities": {**self.probs, PATIENT_OVERALL: self.patient_overall},
            "vertebrae": verts,
            "seconds": self.seconds,
            "volume": {"shape": None if self.shape is None else list(self.shape),
                       "spacing_mm": None if self.spacing is None else list(self.spacing)},
            "versions": self.versions,
            "warnings": self.warnings,
            "explain_files": self.explain_files,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> StudyResult:
        """Rebuild a result from its JSON document (used to rebuild the CSVs on resume)."""
        probs = doc["probabilities"]
        verts = doc.get("vertebrae", {})
        geometry = {v: {k: x for k, x in d.items() if k not in ("probability", "attention")}
                    for v, d in verts.items()}
        attention = {v: d["attention"] for v, d in verts.items() if d.get("attention")}
        vol = doc.get("volume") or {}
        return cls(study_uid=doc["study_uid"], probs={v: float(probs[v]) for v in VERTEBRAE},
                   patient_overall=float(probs[PATIENT_OVERALL]), vertebrae=geometry, attention=attention,
                   seconds=doc.get("seconds", {}), versions=doc.get("versions", {}),
                   warnings=list(doc.get("warnings", [])), source=doc.get("source"),
                   shape=tuple(vol["shape"]) if vol.get("shape") else None,
                   spacing=tuple(vol["spacing_mm"]) if vol.get("spacing_mm") else None,
                   explain_files=list(doc.get("explain_files", [])))


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load(path: Path) -> Volume:
    """Decode a DICOM folder or NIfTI file into a canonical volume, with clear input errors."""
    from cspine.io.study import load_study

    if not path.exists():
        raise StudyInputError("input not found", path)
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        raise StudyInputError("the folder holds no files; expected the DICOM files of one CT study", path)
    return load_study(path)


def _canonical(volume: Volume) -> Volume:
    try:
        from cspine.io.orient import to_canonical
    except ImportError:  # pragma: no cover - the orientation module is part of the package
        return volume
    return to_canonical(volume)


def _check_study(volume: Volume, where: Path | None) -> None:
    modality = str(volume.meta.get("Modality") or "CT").upper()
    if modality != "CT":
        raise StudyInputError(f"the series is {modality}, not CT; cspine's CT pipeline needs an axial CT "
                              "of the cervical spine", where)
    if volume.shape[0] < MIN_SLICES:
        raise StudyInputError(
            f"the study has {volume.shape[0]} axial slices; a cervical spine CT needs at least {MIN_SLICES} "
            "(is this a scout, a partial series or the wrong folder?)", where)


def _uid_for(volume: Volume, path: Path | None) -> str:
    uid = str(volume.study_uid or "").strip()
    if uid:
        return uid
    if path is None:
        raise StudyInputError("an in-memory volume needs meta['StudyInstanceUID'] to be named")
    return _nifti_stem(path) if _is_nifti(path) else path.name


def _vertebra_geometry(seg: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for v in VERTEBRAE:
        b = seg.vertebrae.get(v)
        if b is None or not b.present:
            out[v] = {"present": False, "z_range": None, "box": None, "centroid": None}
        else:
            out[v] = {"present": True, "z_range": [int(x) for x in b.z_range], "box": [int(x) for x in b.box],
                      "centroid": [round(float(c), 2) for c in b.centroid], "voxels": int(b.voxels)}
    return out


def _instance_numbers(volume: Volume, indices: np.ndarray) -> list[int | None] | None:
    if not volume.slices:
        return None
    nums = [volume.slices[int(i)].instance_number for i in indices]
    return None if all(n is None for n in nums) else nums


def _classify(volume: Volume, seg: Any, model: CtModel) -> tuple[Any, float, float]:
    """Stage 2 with crops timed apart: crops are cut here and handed to ``classify`` when it takes
    them; otherwise ``classify`` cuts them again and its time includes that (documented)."""
    import inspect

    from cspine.ct.cls.crops import extract_crops
    from cspine.ct.cls.predict import classify

    t0 = time.perf_counter()
    crops = extract_crops(volume, seg, model.cls.cfg)
    t1 = time.perf_counter()
    if "crops" in inspect.signature(classify).parameters:
        scores = classify(volume, seg, model.cls, crops=crops)
    else:
        scores = classify(volume, seg, model.cls)
    return scores, t1 - t0, time.perf_counter() - t1


def predict(path_or_volume: str | Path | Volume, model: CtModel, *, explain_dir: Path | None = None,
            explain_threshold: float = 0.5) -> StudyResult:
    """Predict fracture probabilities for one CT study.

    Args:
        path_or_volume: a DICOM study folder, a NIfTI CT file, or a :class:`Volume` (turned into
            the canonical orientation; it needs ``meta["StudyInstanceUID"]``).
        model: from :meth:`CtModel.load`.
        explain_dir: when given, attention plots and Grad-CAM overlays of every vertebra with
            probability >= ``explain_threshold`` are written there.
        explain_threshold: probability from which a vertebra is explained.

    Returns:
        A :class:`StudyResult`.

    Raises:
        StudyInputError: empty folder, non-CT series, fewer than :data:`MIN_SLICES` slices.
        CspineError: any reader error (unreadable DICOM, bad NIfTI ...).

    Example:
        >>> model = CtModel.load("runs/demo")  # doctest: +SKIP
        >>> predict("study_dir/", model).patient_overall  # doctest: +SKIP
    """
    from cspine.ct.seg.predict import segment

    t_start = time.perf_counter()
    path = None if isinstance(path_or_volume, Volume) else Path(path_or_volume)
    if path is None:
        volume = _canonical(path_or_volume)  # type: ignore[arg-type]
    else:
        volume = _load(path)
    t_decode = time.perf_counter() - t_start
    _check_study(volume, path)
    uid = _uid_for(volume, path)
    warnings = [str(w) for w in volume.meta.get("warnings", [])]

    t0 = time.perf_counter()
    seg = segment(volume, model.seg)
    t_seg = time.perf_counter() - t0
    warnings += [str(w) for w in seg.warnings]

    scores, t_crops, t_cls = _classify(volume, seg, model)
    attention = {}
    for name, (weights, indices) in scores.attention.items():
        idx = np.asarray(indices, dtype=np.int64)
        attention[name] = {"weights": [round(float(w), 6) for w in np.asarray(weights)],
                           "slice_indices": idx.tolist(), "instance_numbers": _instance_numbers(volume, idx)}
    seconds = {"decode": t_decode, "seg": t_seg, "crops": t_crops, "cls": t_cls}
    result = StudyResult(
        study_uid=uid, probs={v: float(scores.probs[v]) for v in VERTEBRAE},
        patient_overall=float(scores.patient), vertebrae=_vertebra_geometry(seg), attention=attention,
        seconds=seconds, versions={"packages": package_versions(), "model": _model_identity(model),
                                   "device": model.device},
        warnings=warnings, source=None if path is None else str(path), shape=volume.shape,
        spacing=tuple(round(s, 4) for s in volume.spacing))  # type: ignore[arg-type]
    if explain_dir is not None:
        from cspine.ct.explain import explain_study

        t0 = time.perf_counter()
        files = explain_study(volume, scores, model.cls, Path(explain_dir), threshold=explain_threshold,
                              title=uid)
        seconds["explain"] = time.perf_counter() - t0
        result.explain_files = [str(f) for f in files]
    seconds["total"] = time.perf_counter() - t_start
    result.seconds = {k: round(v, 4) for k, v in seconds.items()}
    return result


def _model_identity(model: CtModel) -> dict[str, Any]:
    stages = {s: {k: v for k, v in model.info.get(s, {}).items() if k != "config"}
              for s in (SEG_DIR, CLS_DIR)}
    return {"run_dir": model.info.get("run_dir"), **stages}


# --- many studies --------------------------------------------------------------------------------

@dataclass
class PredictSummary:
    """What :func:`predict_many` did.

    Attributes:
        out_dir: the output folder.
        predicted: UIDs predicted in this run.
        resumed: inputs skipped because their JSON was already there.
        failed: ``(input path, error message)`` of studies that failed (also in failures.json).
        predictions_csv, submission_csv: the rebuilt CSVs.
        n_studies: studies in predictions.csv (this run and earlier ones).
        missing_in_submission: test.csv studies without a prediction, filled with the prior.
    """

    out_dir: Path
    predicted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    predictions_csv: Path | None = None
    submission_csv: Path | None = None
    n_studies: int = 0
    missing_in_submission: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def _is_study_container(folder: Path) -> bool:
    """A folder holding only sub-folders (no files): a folder of study folders."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.is_dir() for p in entries)


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """Turn the command-line inputs into study paths, and find a test.csv.

    * an RSNA root (holding ``test_images/``): each folder of ``test_images/``, and its ``test.csv``;
    * a folder of study folders (e.g. ``train_images/``): each sub-folder;
    * a DICOM study folder or a NIfTI file: itself.

    Raises:
        StudyInputError: an input that does not exist.
    """
    studies: list[Path] = []
    test_csv: Path | None = None
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise StudyInputError("input not found", path)
        if path.is_dir() and (path / TEST_IMAGES).is_dir():
            studies += sorted(p for p in (path / TEST_IMAGES).iterdir() if p.is_dir())
            if (path / TEST_CSV).is_file() and test_csv is None:
                test_csv = path / TEST_CSV
        elif path.is_dir() and _is_study_container(path):
            studies += sorted(path.iterdir())
        else:
            studies.append(path)
    return list(dict.fromkeys(studies)), test_csv


def _read_test_csv(path: Path) -> pd.DataFrame:
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


def _done_results(out_dir: Path) -> dict[str, StudyResult]:
    """The results already in ``out_dir`` (every ``<UID>.json`` with probabilities)."""
    done: dict[str, StudyResult] = {}
    for path in sorted(out_dir.glob("*.json")):
        if path.name == FAILURES_JSON:
            continue
        try:
            doc = read_json(path)
            result = StudyResult.from_dict(doc)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: not a study result (%s); ignored", path, exc)
            continue
        done[result.study_uid] = result
    return done


def rebuild_outputs(out_dir: Path, test_csv: Path | None = None,
                    prior: dict[str, float] | None = None) -> tuple[Path, Path, int, list[str]]:
    """Write predictions.csv and submission.csv from every ``<UID>.json`` in ``out_dir``.

    Args:
        out_dir: the prediction folder.
        test_csv: the competition's test.csv: the submission then has exactly its rows, in order.
        prior: probabilities for test.csv studies without a result (default 0.5 each).

    Returns:
        (predictions.csv, submission.csv, number of studies, test studies filled with the prior).
    """
    results = _done_results(out_dir)
    rows = [results[u].row() for u in sorted(results)]
    pred = pd.DataFrame(rows, columns=[STUDY_UID, *VERTEBRAE, PATIENT_OVERALL])
    pred_path, sub_path = out_dir / PREDICTIONS_CSV, out_dir / SUBMISSION_CSV
    with atomic_path(pred_path) as tmp:
        pred.to_csv(tmp, index=False, float_format="%.6f")
    missing: list[str] = []
    if test_csv is not None:
        test = _read_test_csv(test_csv)
        fill = prior or {t: 0.5 for t in TARGETS}
        values = []
        for uid, target in zip(test[STUDY_UID], test["prediction_type"], strict=True):
            if uid in results:
                r = results[uid]
                values.append(r.patient_overall if target == PATIENT_OVERALL else r.probs[target])
            else:
                values.append(fill[target])
                if not missing or missing[-1] != uid:
                    missing.append(uid)
        missing = list(dict.fromkeys(missing))
        if missing:
            log.warning("%d test.csv studies have no prediction and get the prior (first: %s)",
                        len(missing), missing[0])
        sub = pd.DataFrame({SUBMISSION_COLUMNS[0]: test["row_id"], SUBMISSION_COLUMNS[1]: values})
    else:
        sub = pd.DataFrame(
            [(f"{r[STUDY_UID]}_{t}", r[t]) for r in rows for t in TARGETS], columns=list(SUBMISSION_COLUMNS))
    with atomic_path(sub_path) as tmp:
        sub.to_csv(tmp, index=False, float_format="%.6f")
    return pred_path, sub_path, len(rows), missing


def predict_many(inputs: Sequence[str | Path], model: CtModel, out_dir: str | Path, *, explain: bool = False,
                 test_csv: Path | None = None, progress: bool = True) -> PredictSummary:
    """Predict many studies into ``out_dir``; a failing study is reported and skipped.

    Args:
        inputs: DICOM study folders, NIfTI CTs, folders of study folders, or RSNA roots (their
            ``test_images/`` and ``test.csv``).
        model: from :meth:`CtModel.load`.
        out_dir: output folder (created); earlier results there are kept and reused.
        explain: write attention and Grad-CAM PNGs under ``out_dir/explain/<UID>/``.
        test_csv: order and rows of submission.csv (default: the RSNA root's test.csv, if any).
        progress: show a progress bar.

    Returns:
        A :class:`PredictSummary`.

    Raises:
        StudyInputError: an input path that does not exist (before anything runs).
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    studies, found_csv = expand_inputs(inputs)
    test_csv = Path(test_csv) if test_csv is not None else found_csv
    if test_csv is not None:
        _read_test_csv(test_csv)  # fail before hours of work, not after
    summary = PredictSummary(out_dir=out_dir)
    done = _done_results(out_dir)
    done_sources = {str(Path(r.source).resolve()): u for u, r in done.items() if r.source}
    uid_sources = {u: r.source for u, r in done.items()}
    for path in tqdm(studies, desc="predict", unit="study", disable=not progress):
        key = str(path.resolve())
        if key in done_sources:
            summary.resumed.append(done_sources[key])
            continue
        try:
            explain_dir = out_dir / "explain" / path.name if explain else None
            result = predict(path, model, explain_dir=explain_dir)
            if result.study_uid in uid_sources and uid_sources[result.study_uid] != str(path):
                raise StudyInputError(f"StudyInstanceUID {result.study_uid} was already predicted from "
                                      f"{uid_sources[result.study_uid]}; not overwriting it", path)
            write_json(out_dir / f"{result.study_uid}.json", result.to_dict())
            uid_sources[result.study_uid] = str(path)
            summary.predicted.append(result.study_uid)
        except CspineError as exc:
            log.error("skipped %s: %s", path, exc)
            summary.failed.append((str(path), str(exc)))
        except Exception as exc:  # a bug or a corrupt file must not end a 1,000-study run
            log.error("skipped %s: unexpected %s: %s", path, type(exc).__name__, exc, exc_info=True)
            summary.failed.append((str(path), f"{type(exc).__name__}: {exc}"))
    if summary.failed:
        write_json(out_dir / FAILURES_JSON, [{"input": p, "error": e} for p, e in summary.failed])
    elif (out_dir / FAILURES_JSON).exists():
        (out_dir / FAILURES_JSON).unlink()  # a clean rerun clears the old report
    pred_path, sub_path, n, missing = rebuild_outputs(out_dir, test_csv, model.prior())
    summary.predictions_csv, summary.submission_csv = pred_path, sub_path
    summary.n_studies, summary.missing_in_submission = n, missing
    return summary
