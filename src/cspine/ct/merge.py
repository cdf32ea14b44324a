"""``cspine ct predict --merge``: one predictions.csv and submission.csv from the parts of a sharded run.

Parts (``--part K --parts N``, or torchrun ranks) write each study's ``<UID>.json`` into one shared folder
and their failures into ``failures.part-K-of-N.json``; :func:`merge_parts` checks that every input has a
result of this model and these options (or a recorded failure), and only then rebuilds the CSVs with
:func:`cspine.ct.outputs.rebuild_outputs` (submission in test.csv's order). An input without either is
*lost*: the merge refuses, naming how many and which part (and which worker, if one still claims it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cspine.ct.inference import OUTPUT_NAMES, PredictSummary, input_digest, run_options, shard_order
from cspine.ct.model import CtModel
from cspine.ct.outputs import (
    StudyPrediction,
    done_predictions,
    read_test_csv,
    rebuild_outputs,
    write_failures,
)
from cspine.ct.shared_output import SharedOutputFolder, open_shared_output_folder
from cspine.fileio import read_json, write_json
from cspine.io.study import expand_inputs
from cspine.shard import Claims, Shard, ShardError, claim_key

if TYPE_CHECKING:
    from cspine.ct.cls.operating_points import ResolvedOperatingPoint

log = logging.getLogger(__name__)

__all__ = ["merge_parts", "part_failures", "write_part_failures"]

PART_FAILURES = "failures.part-*.json"


def write_part_failures(folder: SharedOutputFolder, shard: Shard, failed: Sequence[tuple[str, str]]) -> None:
    """Write (or clear) ``failures.<part-K-of-N>.json``: this part's ``(input, error)`` pairs."""
    name = f"failures.{shard.label}.json"
    path = folder.path / name
    if failed:
        write_json(path, [{"input": p, "error": e} for p, e in failed])
    else:
        path.unlink(missing_ok=True)
    folder.record(name)


def part_failures(out_dir: Path) -> dict[str, str]:
    """Every part's failures: resolved input path -> error."""
    out: dict[str, str] = {}
    for path in sorted(out_dir.glob(PART_FAILURES)):
        for item in read_json(path):
            out[str(Path(item["input"]).resolve())] = str(item["error"])
    return out


def merge_parts(inputs: Sequence[str | Path], model: CtModel, out_dir: str | Path, *,
                parts: int | None = None, test_csv: Path | None = None, explain: bool = False,
                operating_point: ResolvedOperatingPoint | None = None, dicom_out: str | Path | None = None,
                overwrite: bool = False) -> PredictSummary:
    """Write predictions.csv, submission.csv and failures.json of a sharded run's shared folder.

    Args:
        inputs, model, test_csv, explain, operating_point, dicom_out: as the parts were given them
            (results of another model or other options do not count).
        out_dir: the folder the parts wrote into.
        parts: the number of parts, to name the part of a missing input in the error.
        overwrite: replace files under cspine's output names that cspine did not write.

    Returns:
        A :class:`~cspine.ct.inference.PredictSummary` (``resumed`` lists every merged study).

    Raises:
        ShardError: an input has neither a result nor a recorded failure (its part is still running,
            was killed, or never ran); nothing is written then.
    """
    studies, found_csv = expand_inputs(inputs)
    folder = open_shared_output_folder(out_dir, overwrite=overwrite, names=OUTPUT_NAMES,
                                       command="cspine ct predict --merge")
    out = folder.path
    test_csv = Path(test_csv) if test_csv is not None else found_csv
    if test_csv is not None:
        read_test_csv(test_csv)
    options = run_options(explain, operating_point, dicom_out)

    def current(r: StudyPrediction) -> bool:
        return r.run_key.get("model") == model.fingerprint and r.run_key.get("options") == options

    done = done_predictions(out, accept=current, folder=folder)
    by_source = {str(Path(r.source).resolve()): r for r in done.values() if r.source}
    failures = part_failures(out)
    summary = PredictSummary(out_dir=out)
    missing: list[Path] = []
    for path in studies:
        key = str(path.resolve())
        result = by_source.get(key)
        if result is not None and result.run_key.get("input") == input_digest(path):
            summary.resumed.append(result.study_uid)
            summary.statuses[result.study_uid] = result.status
            if result.status_reason:
                summary.reasons[result.study_uid] = result.status_reason
        elif key in failures:
            summary.failed.append((str(path), failures[key]))
        else:
            missing.append(path)
    if missing:
        raise ShardError(_missing_message(missing, studies, parts, Claims(out)), out)
    write_failures(out, summary.failed)
    pred, sub, n, filled = rebuild_outputs(out, test_csv, model.prior(), accept=current,
                                           failed=summary.failed, folder=folder)
    folder.record(*OUTPUT_NAMES)
    summary.predictions_csv, summary.submission_csv = pred, sub
    summary.n_studies, summary.missing_in_submission = n, filled
    return summary


def _missing_message(missing: list[Path], studies: Sequence[Path], parts: int | None, claims: Claims) -> str:
    first = missing[0]
    where = ""
    if parts is not None:
        order = sorted(studies, key=shard_order)
        where = f" (part {order.index(first) % parts} of --parts {parts})"
    holder = claims.holder(claim_key(first.name, str(first.resolve())))
    state = ("no worker holds it" if holder is None else
             f"claimed by PID {holder.pid} on {holder.host}, heartbeat {holder.age_s:.0f} s ago")
    return (f"{len(missing)} of {len(studies)} inputs have no result of this model and options yet, first "
            f"{first}{where}: {state}. Wait for the parts to finish, or rerun the missing ones "
            "(finished studies are not redone); nothing was merged")
