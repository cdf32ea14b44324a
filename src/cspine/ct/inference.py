"""Two-stage CT prediction: a study in, fracture probabilities for C1..C7 and the patient out.

``decode`` (:func:`cspine.io.study.load_study`, canonical orientation) -> ``seg`` (stage 1,
:func:`cspine.ct.seg.predict.segment`: C1..C7 labels and boxes) -> ``crops``
(:func:`cspine.ct.cls.crops.extract_crops`: per-vertebra 2.5D stacks, cut once) -> ``cls`` (stage 2,
:func:`cspine.ct.cls.predict.classify`: CNN + BiGRU + attention, calibrated). Each stage is timed;
the result carries the probabilities, where each vertebra was found, the stage-2 attention with its
source slices, versions and warnings. :func:`predict_many` writes the output folder of
:mod:`cspine.ct.outputs`.
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

from cspine import __version__
from cspine.ct.model import CtModel
from cspine.ct.outputs import (
    FAILURES_JSON,
    PREDICTIONS_CSV,
    SUBMISSION_CSV,
    StudyPrediction,
    done_predictions,
    read_test_csv,
    rebuild_outputs,
    write_failures,
)
from cspine.ct.study_status import (
    COMPLETE,
    LEVELS_MISSING,
    LEVELS_OUT_OF_ORDER,
    NOT_CERVICAL,
    level_order_problem,
    not_cervical_reason,
    quality_warnings,
)
from cspine.errors import CspineError
from cspine.fileio import write_json
from cspine.io.orient import to_canonical
from cspine.io.study import StudyInputError, check_ct_study, expand_inputs, load_study, study_uid
from cspine.io.volume import Volume
from cspine.labels import PATIENT_OVERALL, VERTEBRAE
from cspine.output_folder import OutputFolder, OutputFolderError, open_output_folder
from cspine.shard import Claims, Shard, claim_key

if TYPE_CHECKING:
    from cspine.ct.cls.operating_points import ResolvedOperatingPoint

log = logging.getLogger(__name__)

__all__ = ["PredictSummary", "package_versions", "predict", "predict_many"]


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


def input_digest(path: Path | None) -> str | None:
    """A digest of an input's files (relative names, sizes, modification times): a study changed on
    disk gets another digest. ``None`` for an in-memory volume."""
    if path is None:
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _absent_geometry() -> dict[str, dict[str, Any]]:
    return {v: {"present": False, "z_range": None, "box": None, "centroid": None} for v in VERTEBRAE}


def predict(path_or_volume: str | Path | Volume, model: CtModel, *, explain_dir: Path | None = None,
            explain_threshold: float = 0.5, operating_point: ResolvedOperatingPoint | None = None,
            dicom_out: str | Path | OutputFolder | None = None) -> StudyPrediction:
    """Predict fracture probabilities for one CT study.

    Args:
        path_or_volume: a DICOM study folder, a NIfTI CT file, or a :class:`Volume` (turned into
            the canonical orientation; it needs ``meta["StudyInstanceUID"]``).
        model: from :meth:`CtModel.load`.
        explain_dir: when given, attention plots and Grad-CAM overlays of every vertebra with
            probability >= ``explain_threshold`` are written there.
        explain_threshold: probability from which a vertebra is explained.
        operating_point: when given, each vertebra and the patient is called positive/negative
            (:func:`cspine.ct.cls.operating_points.resolve_operating_point`).
        dicom_out: when given (with ``operating_point``), the study's DICOM SEG and SR are written
            there (:func:`cspine.outputs.dicom_results.write_dicom_results_for_volume`) from the
            canonical volume and stage-1 label map of this prediction; an :class:`OutputFolder` also
            refuses to replace files cspine did not write.

    Returns:
        A :class:`~cspine.ct.outputs.StudyPrediction` with its status
        (:mod:`cspine.ct.study_status`): a study that is not a cervical spine CT gets no probability,
        a vertebra not found gets none either (``None``).

    Raises:
        StudyInputError: missing input, empty folder, non-CT series, fewer than
            :data:`cspine.io.study.MIN_SLICES` slices, slices more than 5 mm apart, NaN voxels, mostly
            blank slices, an unnamed in-memory volume.
        CspineError: any reader error (unreadable DICOM, bad NIfTI ...), ``--dicom-out`` without an
            operating point, a foreign file under a DICOM output name.

    Example:
        >>> model = CtModel.load("runs/demo")  # doctest: +SKIP
        >>> predict("study_dir/", model).patient_overall  # doctest: +SKIP
    """
    from cspine.ct.cls.crops import extract_crops
    from cspine.ct.cls.scores import classify
    from cspine.ct.seg.segment import segment

    if dicom_out is not None and operating_point is None:
        raise CspineError("--dicom-out needs an operating point (--operating-point sens90|sens95|0.NN): "
                          "the SR states present/absent per vertebra")
    if explain_dir is not None:
        model.check_explain()
    t_start = time.perf_counter()
    path = None if isinstance(path_or_volume, Volume) else Path(path_or_volume)
    volume = to_canonical(path_or_volume) if isinstance(path_or_volume, Volume) else load_study(path)
    t_decode = time.perf_counter() - t_start
    check_ct_study(volume, path)
    uid = study_uid(volume, path)
    warnings = [str(w) for w in volume.meta.get("warnings", [])]
    warnings += quality_warnings(volume, path)
    prior = model.prior()
    seconds: dict[str, float] = {"decode": t_decode}
    versions = {"packages": package_versions(), "model": model.identity(), "device": model.device}
    result = StudyPrediction(
        study_uid=uid, probs=dict.fromkeys(VERTEBRAE), patient_overall=None, vertebrae=_absent_geometry(),
        attention={}, seconds=seconds, versions=versions, warnings=warnings,
        source=None if path is None else str(path), shape=volume.shape,
        spacing=tuple(round(s, 4) for s in volume.spacing),  # type: ignore[arg-type]
        status=NOT_CERVICAL, prior=prior,
        operating_point=None if operating_point is None else operating_point.to_dict())
    reason = not_cervical_reason(volume)
    seg = scores = None
    if reason is None:
        t0 = time.perf_counter()
        seg = segment(volume, model.seg)
        seconds["seg"] = time.perf_counter() - t0
        warnings += [str(w) for w in seg.warnings]
        if not any(b.present for b in seg.vertebrae.values()):
            reason = "stage 1 found no cervical vertebra (C1..C7)"
    if reason is not None:
        result.status_reason = reason
        warnings.append(f"{NOT_CERVICAL}: {reason}")
        log.warning("%s: %s (%s); no probability given", uid, NOT_CERVICAL, reason)
    else:
        assert seg is not None
        t1 = time.perf_counter()
        crops = extract_crops(volume, seg, model.cls.cfg)
        t2 = time.perf_counter()
        scores = classify(volume, seg, model.cls, crops=crops)
        seconds.update(crops=t2 - t1, cls=time.perf_counter() - t2)
        found = {v for v, b in seg.vertebrae.items() if b.present}
        result.probs = {v: float(scores.probs[v]) if v in found else None for v in VERTEBRAE}
        result.patient_overall = float(scores.patient)
        result.vertebrae = _vertebra_geometry(seg)
        for name, (weights, indices) in scores.attention.items():
            idx = np.asarray(indices, dtype=np.int64)
            result.attention[name] = {"weights": [round(float(w), 6) for w in np.asarray(weights)],
                                      "slice_indices": idx.tolist(),
                                      "instance_numbers": _instance_numbers(volume, idx)}
        missing = result.missing_levels
        result.status = LEVELS_MISSING if missing else COMPLETE
        if missing:
            result.status_reason = (f"not found: {', '.join(missing)} (no probability; patient_overall is "
                                    "partial: the missing levels enter it with the training prior)")
        disorder = level_order_problem(seg.vertebrae, seg.warnings)
        if disorder is not None:  # which vertebra is which is uncertain: flag it above a missing level
            result.status = LEVELS_OUT_OF_ORDER
            result.status_reason = disorder + (f"; {result.status_reason}" if missing else "")
            log.warning("%s: %s (%s)", uid, LEVELS_OUT_OF_ORDER, disorder)
    if operating_point is not None:
        result.positive = {v: None if p is None else operating_point.positive(p, "vertebra")
                           for v, p in result.probs.items()}
        result.positive[PATIENT_OVERALL] = (None if result.patient_overall is None
                                            else operating_point.positive(result.patient_overall, "patient"))
    if explain_dir is not None and scores is not None:
        from cspine.ct.explain import explain_study

        t0 = time.perf_counter()
        files = explain_study(volume, scores, model.cls, Path(explain_dir), threshold=explain_threshold,
                              title=uid)
        seconds["explain"] = time.perf_counter() - t0
        result.explain_files = [str(f) for f in files]
    if dicom_out is not None and seg is not None and result.status != NOT_CERVICAL:
        assert operating_point is not None
        t0 = time.perf_counter()
        result.dicom = _write_dicom(volume, seg.labels, result, operating_point, dicom_out)
        seconds["dicom"] = time.perf_counter() - t0
    elif dicom_out is not None:
        warnings.append("no DICOM SEG/SR written: the study is not a cervical spine CT")
    seconds["total"] = time.perf_counter() - t_start
    result.seconds = {k: round(v, 4) for k, v in seconds.items()}
    return result


def _write_dicom(volume: Volume, labels: np.ndarray, result: StudyPrediction, op: ResolvedOperatingPoint,
                 dicom_out: str | Path | OutputFolder) -> dict[str, Any]:
    from cspine.outputs.dicom_results import model_name_version, write_dicom_results_for_volume

    folder = dicom_out if isinstance(dicom_out, OutputFolder) else None
    names = [f"{result.study_uid}_SEG.dcm", f"{result.study_uid}_SR.dcm"]
    if folder is not None:
        folder.check(names, "cspine ct predict --dicom-out")
    out_dir = folder.path if folder is not None else Path(dicom_out)  # type: ignore[arg-type]
    name, version = model_name_version(result.versions)
    written = write_dicom_results_for_volume(volume, labels, result, op, out_dir, name, version)
    if folder is not None:
        folder.record(*names)
    return written.to_dict()


# --- many studies --------------------------------------------------------------------------------

@dataclass
class PredictSummary:
    """What :func:`predict_many` did.

    Attributes:
        out_dir: the output folder.
        predicted: UIDs predicted in this run.
        resumed: inputs skipped because their JSON was already there, from the same model, input
            and options.
        failed: ``(input path, error message)`` of studies that failed (also in failures.json).
        statuses: per UID predicted or resumed in this run: its status (:mod:`cspine.ct.study_status`).
        reasons: per UID whose status is not ``complete``: why.
        left_out: UIDs of earlier results in the folder from another model or other options, left out
            of the CSVs (their JSON stays).
        predictions_csv, submission_csv: the rebuilt CSVs.
        n_studies: studies with a result in predictions.csv (this run and earlier ones).
        missing_in_submission: test.csv studies without a prediction, filled with the prior.
    """

    out_dir: Path
    predicted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    predictions_csv: Path | None = None
    submission_csv: Path | None = None
    n_studies: int = 0
    missing_in_submission: list[str] = field(default_factory=list)
    #: Inputs of this part that another live worker was predicting (sharded runs).
    busy: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


#: Files of the output folder known before the run (the ``<UID>.json`` are checked as they are written).
OUTPUT_NAMES = (PREDICTIONS_CSV, SUBMISSION_CSV, FAILURES_JSON)


def run_options(explain: bool, operating_point: ResolvedOperatingPoint | None,
                dicom_out: str | Path | None) -> dict[str, Any]:
    """The options a result's ``run_key`` records: a rerun (or a merge of parts) uses only results whose
    options are equal."""
    return {"explain": bool(explain),
            "operating_point": None if operating_point is None else operating_point.to_dict(),
            "dicom_out": None if dicom_out is None else str(Path(dicom_out).resolve())}


def shard_order(path: Path) -> str:
    """The key that orders the inputs before they are split into parts: folder name (the UID in an RSNA
    root), then the absolute path."""
    return f"{path.name}\0{path.resolve()}"


def predict_many(inputs: Sequence[str | Path], model: CtModel, out_dir: str | Path, *, explain: bool = False,
                 test_csv: Path | None = None, progress: bool = True,
                 operating_point: ResolvedOperatingPoint | None = None, dicom_out: str | Path | None = None,
                 overwrite: bool = False, shard: Shard | None = None) -> PredictSummary:
    """Predict many studies into ``out_dir``; a failing study is reported and skipped.

    A study already in ``out_dir`` is reused only when its ``<UID>.json`` records the same model
    fingerprint, the same input files and the same options; otherwise it is predicted again. The CSVs
    list only results of this model and these options. cspine replaces only files it wrote itself
    (:mod:`cspine.output_folder`).

    Args:
        inputs: DICOM study folders, NIfTI CTs, folders of study folders, or RSNA roots (their
            ``test_images/`` and ``test.csv``; see :func:`cspine.io.study.expand_inputs`).
        model: from :meth:`CtModel.load`.
        out_dir: output folder (created); earlier results there are kept and reused.
        explain: write attention and Grad-CAM PNGs under ``out_dir/explain/<UID>/``.
        test_csv: order and rows of submission.csv (default: the RSNA root's test.csv, if any).
        progress: show a progress bar.
        operating_point: call each vertebra and patient positive/negative at these thresholds.
        dicom_out: folder for each study's DICOM SEG and SR (needs ``operating_point``).
        overwrite: replace files under cspine's output names that cspine did not write.
        shard: predict only this part of the sorted inputs (:mod:`cspine.shard`), claiming each study
            in ``out_dir/.claims`` first; the CSVs are then left to :func:`cspine.ct.merge.merge_parts`
            and this part's failures go to ``failures.part-K-of-N.json``.

    Returns:
        A :class:`PredictSummary`.

    Raises:
        StudyInputError: an input path that does not exist (before anything runs).
        OutputFolderError: an output folder that is a file or not writable, or a file cspine did not
            write under one of its output names (before anything runs, or when that study is reached).
    """
    from tqdm.auto import tqdm

    if dicom_out is not None and operating_point is None:
        raise CspineError("--dicom-out needs an operating point (--operating-point sens90|sens95|0.NN): "
                          "the SR states present/absent per vertebra")
    if explain:
        model.check_explain()
    studies, found_csv = expand_inputs(inputs)  # a missing input fails before any folder is made
    if shard is None:
        folder = open_output_folder(out_dir, overwrite=overwrite, names=OUTPUT_NAMES,
                                    command="cspine ct predict")
    else:
        from cspine.ct.shared_output import ResultIndex, open_shared_output_folder

        studies = shard.select(studies, key=shard_order)
        folder = open_shared_output_folder(out_dir, overwrite=overwrite, command="cspine ct predict")
        index, claims = ResultIndex(folder.path, folder), Claims(folder.path)
    dicom_folder = None if dicom_out is None else open_output_folder(
        dicom_out, overwrite=overwrite, command="cspine ct predict --dicom-out")
    out_dir = folder.path
    test_csv = Path(test_csv) if test_csv is not None else found_csv
    if test_csv is not None:
        read_test_csv(test_csv)  # fail before hours of work, not after
    options = run_options(explain, operating_point, None if dicom_folder is None else dicom_folder.path)

    def current(r: StudyPrediction) -> bool:
        return r.run_key.get("model") == model.fingerprint and r.run_key.get("options") == options

    summary = PredictSummary(out_dir=out_dir)
    done = done_predictions(out_dir, folder=folder)
    by_source = {str(Path(r.source).resolve()): r for r in done.values() if r.source}
    uid_sources = {u: r.source for u, r in done.items() if current(r)}
    for path in tqdm(studies, desc="predict", unit="study", disable=None if progress else True):
        key = str(path.resolve())
        old = by_source.get(key)
        run_key = {"model": model.fingerprint, "input": input_digest(path), "options": options}
        claim = None
        if shard is not None and (old is None or old.run_key != run_key):
            claim = claims.acquire(claim_key(path.name, key))
            if claim is None:
                summary.busy.append(str(path))
                continue
            old = index.refresh().get(key, old)  # another worker may have finished it meanwhile
            if old is not None and old.run_key == run_key:
                claim.release()
        if old is not None and old.run_key == run_key:
            summary.resumed.append(old.study_uid)
            summary.statuses[old.study_uid] = old.status
            if old.status != COMPLETE:
                summary.reasons[old.study_uid] = old.status_reason
            continue
        if old is not None:
            uid_sources.pop(old.study_uid, None)
        try:
            explain_dir = out_dir / "explain" / path.name if explain else None
            result = predict(path, model, explain_dir=explain_dir, operating_point=operating_point,
                             dicom_out=dicom_folder)
            if result.study_uid in uid_sources and uid_sources[result.study_uid] != str(path):
                raise StudyInputError(f"StudyInstanceUID {result.study_uid} was already predicted from "
                                      f"{uid_sources[result.study_uid]}; not overwriting it", path)
            result.run_key = run_key
            name = f"{result.study_uid}.json"
            folder.check([name], "cspine ct predict")
            write_json(out_dir / name, result.to_dict())
            folder.record(name)
            uid_sources[result.study_uid] = str(path)
            summary.predicted.append(result.study_uid)
            summary.statuses[result.study_uid] = result.status
            if result.status != COMPLETE:
                summary.reasons[result.study_uid] = result.status_reason
        except OutputFolderError:
            raise  # a foreign file: stop, never replace it
        except CspineError as exc:
            log.error("skipped %s: %s", path, exc)
            summary.failed.append((str(path), str(exc)))
            if old is not None:  # its earlier result no longer stands for this input
                folder.forget(f"{old.study_uid}.json")
        except Exception as exc:  # a bug or a corrupt file must not end a 1,000-study run
            log.error("skipped %s: unexpected %s: %s", path, type(exc).__name__, exc, exc_info=True)
            summary.failed.append((str(path), f"{type(exc).__name__}: {exc}"))
            if old is not None:
                folder.forget(f"{old.study_uid}.json")
        finally:
            if claim is not None:
                claim.release()
    if shard is not None:
        from cspine.ct.merge import write_part_failures

        write_part_failures(folder, shard, summary.failed)
        return summary
    write_failures(out_dir, summary.failed)
    pred_path, sub_path, n, missing = rebuild_outputs(out_dir, test_csv, model.prior(), accept=current,
                                                      failed=summary.failed, folder=folder)
    folder.record(*OUTPUT_NAMES)
    earlier = done_predictions(out_dir, folder=folder)
    summary.left_out = sorted(u for u, r in earlier.items() if not current(r))
    if summary.left_out:
        log.warning("%d earlier result(s) in %s come from another model or other options and are left out of "
                    "predictions.csv (first: %s)", len(summary.left_out), out_dir, summary.left_out[0])
    summary.predictions_csv, summary.submission_csv = pred_path, sub_path
    summary.n_studies, summary.missing_in_submission = n, missing
    return summary
