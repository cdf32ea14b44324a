"""Work the viewer does with the model, one job at a time in a background thread.

* an **upload** job unpacks a checked zip (:func:`cspine.viewer.uploads.extract_zip`) into
  ``<work>/<job>/upload-<id>/``, predicts it with :func:`cspine.ct.predict_many` into ``<work>/<job>/result/``
  (the same files ``cspine ct predict --explain`` writes) and builds its view folder;
* a **view** job builds the view folder of a study from a results folder that has none
  (:func:`cspine.viewer.volumes.build_view`: decode, stage 1 and Grad-CAM again).

Jobs are named by random ids; logs name jobs and study keys, never UIDs or paths.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cspine.errors import CspineError
from cspine.viewer.store import StudyEntry, StudyStore, flagged_vertebrae
from cspine.viewer.uploads import UploadLimits, extract_zip
from cspine.viewer.volumes import build_view, view_dir_for

log = logging.getLogger(__name__)

__all__ = ["Job", "JobRunner"]

UPLOAD_ZIP = "upload.zip"


@dataclass
class Job:
    """One unit of work and its state (``queued``, ``running``, ``done``, ``failed``)."""

    id: str
    kind: str
    state: str = "queued"
    message: str = "waiting for the model"
    study_keys: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    seconds: float | None = None
    target: str | None = None  # the study key a view job builds

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "message": self.message,
                "study_keys": self.study_keys, "seconds": self.seconds, "target": self.target}


class JobRunner:
    """A queue of jobs and the thread that runs them with the model.

    Args:
        store: the study list (upload results are added to it).
        model: a loaded ``cspine.ct.CtModel``.
        work_dir: where uploads and their results go.
        limits: upload limits (checked again while extracting).
    """

    def __init__(self, store: StudyStore, model: Any, work_dir: Path, limits: UploadLimits) -> None:
        self.store, self.model, self.work_dir, self.limits = store, model, Path(work_dir), limits
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[tuple[Job, Callable[[Job], None]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- submitting --------------------------------------------------------------------------------

    def new_upload_dir(self) -> tuple[str, Path]:
        """A fresh job id and its folder (the route streams the zip into ``folder/upload.zip``)."""
        job_id = secrets.token_urlsafe(12)
        folder = self.work_dir / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit_upload(self, job_id: str) -> Job:
        job = Job(id=job_id, kind="upload")
        return self._submit(job, self._run_upload)

    def submit_view(self, entry: StudyEntry) -> Job:
        """Queue a view build for ``entry`` (or return the one already queued or running)."""
        with self._lock:
            for job in self._jobs.values():
                if job.kind == "view" and job.target == entry.key and job.state in ("queued", "running"):
                    return job
        job = Job(id=secrets.token_urlsafe(12), kind="view", target=entry.key)
        return self._submit(job, lambda j: self._run_view(j, entry))

    def _submit(self, job: Job, fn: Callable[[Job], None]) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="cspine-viewer-jobs", daemon=True)
                self._thread.start()
        self._queue.put((job, fn))
        log.info("job %s (%s) queued", job.id, job.kind)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def building(self, key: str) -> bool:
        """Whether a view job for study ``key`` is queued or running."""
        with self._lock:
            return any(j.target == key and j.state in ("queued", "running") for j in self._jobs.values())

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the running job (if any) and stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    # --- running -----------------------------------------------------------------------------------

    def _worker(self) -> None:
        while (item := self._queue.get()) is not None:
            job, fn = item
            job.state, job.message = "running", "running"
            t0 = time.perf_counter()
            try:
                fn(job)
                job.state = "done"
            except CspineError as exc:
                job.state, job.message = "failed", self._public(str(exc), job)
            except Exception as exc:  # a bug must not stop the queue; the log has the traceback
                log.error("job %s failed: %s", job.id, type(exc).__name__, exc_info=True)
                job.state = "failed"
                job.message = f"internal error ({type(exc).__name__}); see the server log"
            job.seconds = round(time.perf_counter() - t0, 2)
            log.info("job %s (%s) %s in %.1f s", job.id, job.kind, job.state, job.seconds)

    def _public(self, message: str, job: Job) -> str:
        """An error message without the server's folder names."""
        return message.replace(str(self.work_dir / job.id) + "/", "").replace(str(self.work_dir), "<work>")

    def _run_upload(self, job: Job) -> None:
        from cspine.ct import predict_many

        folder = self.work_dir / job.id
        # the folder names the study when its files carry no StudyInstanceUID (anonymised)
        zip_path, study_dir = folder / UPLOAD_ZIP, folder / f"upload-{job.id[:8]}"
        result_dir = folder / "result"
        job.message = "unpacking"
        study_dir.mkdir(exist_ok=True)
        extract_zip(zip_path, study_dir, self.limits)
        zip_path.unlink()
        job.message = "predicting"
        point = self.store.serve_point
        summary = predict_many([study_dir], self.model, result_dir, explain=True, progress=False,
                               operating_point=None if point is None else point.point)
        if not summary.predicted:
            reasons = "; ".join(reason for _, reason in summary.failed) or "no study found in the zip"
            raise CspineError(f"the study could not be predicted: {reasons}")
        self.store.add_folder(result_dir, "upload")
        job.study_keys = [self.store.key_for(result_dir, uid) for uid in summary.predicted]
        for i, uid in enumerate(summary.predicted):
            job.message = f"building the views ({i + 1}/{len(summary.predicted)})"
            entry = self.store.get(job.study_keys[i])
            if entry is None:
                raise CspineError("the prediction wrote no result document")
            build_view(entry.doc["source"], self.model, view_dir_for(result_dir, uid), entry.doc,
                       flagged_vertebrae(entry.doc, self.store.serve_point))
        job.message = "done" if not summary.failed else \
            f"done; {len(summary.failed)} other series in the zip failed"

    def _run_view(self, job: Job, entry: StudyEntry) -> None:
        source = entry.doc.get("source")
        if not source or not Path(source).exists():
            raise CspineError("the study's source recorded in its result is no longer there")
        job.message = "decoding and segmenting"
        build_view(source, self.model, entry.view_dir, entry.doc,
                   flagged_vertebrae(entry.doc, self.store.serve_point))
        job.study_keys = [entry.key]
        job.message = "done"
