"""What the node does with a complete series: the CT pipeline, the SEG and SR, and the send.

The prediction is :func:`cspine.ct.inference.predict` (decoding, stage 1, stage 2, and the DICOM SEG and
TID 1500 SR of :mod:`cspine.outputs.dicom_results`); nothing of it is repeated here. The result
document (``result.json``, as ``cspine ct predict`` writes ``<UID>.json``) and the DICOM files go into
the series' ``results/`` folder; then the SEG and SR are sent to the destination, if there is one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cspine.errors import CspineError
from cspine.fileio import write_json
from cspine.node.config import Destination
from cspine.node.redact import Redactor
from cspine.node.send import SendError, send_files
from cspine.node.spool import SeriesRef

if TYPE_CHECKING:
    from cspine.ct.cls.operating_points import ResolvedOperatingPoint
    from cspine.ct.model import CtModel

log = logging.getLogger(__name__)

__all__ = ["RESULT_JSON", "ProcessingError", "SeriesProcessor"]

RESULT_JSON = "result.json"
#: Header fields hidden from the logs behind the node's names.
_PATIENT_FIELDS = ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber")


class ProcessingError(CspineError):
    """A series could not be processed; ``stage`` says where (``pipeline`` or ``send``)."""

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(message)


@dataclass
class SeriesProcessor:
    """Process one complete series (called by :class:`cspine.node.worker.Worker`, one at a time).

    Args:
        model: the loaded two-stage model.
        operating_point: the thresholds the SR's present/absent calls use.
        destination: where SEG and SR are sent (``None``: they stay in the spool).
        ae_title: this node's AE title (the calling AE of the send).
        redactor: learns each series' identifiers so that no log line shows them.
        timeout: network timeout of the send, in seconds.
    """

    model: CtModel
    operating_point: ResolvedOperatingPoint
    destination: Destination | None
    ae_title: str
    redactor: Redactor
    timeout: float = 30.0

    def _register(self, ref: SeriesRef, files: list[Path]) -> bool:
        """Hide the series' identifiers in logs; returns whether the images are multi-frame."""
        import pydicom

        try:
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        except Exception:  # an unreadable file: the pipeline reports it
            return False
        self.redactor.add(ds.get("StudyInstanceUID"), f"study {ref.study}")
        self.redactor.add(ds.get("SeriesInstanceUID"), f"series {ref.series}")
        for keyword in _PATIENT_FIELDS:
            value = ds.get(keyword)
            for part in [value, *str(value or "").split("^")]:
                self.redactor.add(part, "<patient>")
        return int(ds.get("NumberOfFrames", 1) or 1) > 1

    def __call__(self, ref: SeriesRef, files: list[Path], complete: dict[str, Any]) -> dict[str, Any]:
        """Run the pipeline on ``ref`` and send its results.

        Returns:
            The outcome for ``done.json``: status, result files (relative to the series folder),
            where they were sent and the seconds of each step.

        Raises:
            ProcessingError: with the stage and a reason that names no patient or UID.
        """
        from cspine.ct.inference import predict

        multi_frame = self._register(ref, files)
        ref.results_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            result = predict(ref.images_dir, self.model, operating_point=self.operating_point,
                             dicom_out=None if multi_frame else ref.results_dir)
        except CspineError as exc:
            raise ProcessingError("pipeline", self.redactor.redact(str(exc))) from exc
        write_json(ref.results_dir / RESULT_JSON, result.to_dict())
        wall = time.perf_counter() - t0
        notes = []
        if multi_frame:
            notes.append("multi-frame (Enhanced CT) source: no SEG/SR written (not supported for such "
                         "sources yet); probabilities in results/result.json")
        if result.dicom is None and not multi_frame:
            notes.append(f"no SEG/SR: {result.status} ({result.status_reason})")
        dicom = result.dicom or {}
        outputs = [Path(p) for p in (dicom.get("seg"), dicom.get("sr")) if p]
        dicom_seconds = float(result.seconds.get("dicom", 0.0))
        seconds = {"pipeline": round(wall - dicom_seconds, 3), "dicom": round(dicom_seconds, 3), "send": 0.0}
        sent_to = None
        if self.destination is not None and outputs:
            t1 = time.perf_counter()
            try:
                send_files(self.destination, outputs, calling_ae=self.ae_title, timeout=self.timeout)
            except SendError as exc:
                raise ProcessingError("send", self.redactor.redact(str(exc))) from exc
            seconds["send"] = round(time.perf_counter() - t1, 3)
            sent_to = str(self.destination)
        first, last = complete.get("first_received"), complete.get("last_received")
        if first is not None and last is not None:
            seconds["receive"] = round(float(last) - float(first), 3)
            seconds["idle_wait"] = round(float(complete["completed_at"]) - float(last), 3)
        return {"study": ref.study, "series": ref.series, "instances": len(files), "status": result.status,
                "results": [str(p.relative_to(ref.path)) for p in outputs] + [f"results/{RESULT_JSON}"],
                "sent_to": sent_to, "seconds": seconds,
                "notes": [self.redactor.redact(n) for n in notes]}
