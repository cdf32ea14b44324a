"""The node's single worker thread: it turns idle series into queued ones and processes the queue.

One series at a time, oldest first. The queue is the spool itself (:class:`cspine.node.spool.Spool`),
so a restart finds the same work. A failure is recorded in the series' ``failed.json`` with its stage
and reason and the worker goes on with the next series.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cspine.node.pipeline import ProcessingError
from cspine.node.spool import SeriesRef, Spool

log = logging.getLogger(__name__)

__all__ = ["Processor", "Worker"]

#: ``(series, its instance files, its complete.json) -> done.json outcome``.
Processor = Callable[[SeriesRef, list[Path], dict[str, Any]], dict[str, Any]]


class Worker:
    """Poll the spool, complete idle series, process complete ones (in a daemon thread).

    Args:
        spool: the spool.
        process: what to do with a complete series (:class:`cspine.node.pipeline.SeriesProcessor`).
        poll_seconds: how often the spool is looked at when there is nothing to do.
    """

    def __init__(self, spool: Spool, process: Processor, *, poll_seconds: float = 0.2) -> None:
        self.spool, self.process, self.poll_seconds = spool, process, float(poll_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy_with: str | None = None  # the series being processed, for shutdown messages

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cspine-node-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the series in progress; returns whether the thread ended within ``timeout``."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # a bug must not end the node; the next poll tries again
                log.exception("node worker error")
                worked = False
            if not worked:
                self._stop.wait(self.poll_seconds)

    def complete_idle(self) -> int:
        """Queue every series idle for the idle time; returns how many."""
        n = 0
        for ref in self.spool.due():
            doc = self.spool.mark_complete(ref)
            if doc is not None:
                n += 1
                log.info("series %s: complete (%d instances; none for %g s); queued", ref.key,
                         doc["instances"], self.spool.idle_seconds)
        return n

    def run_once(self) -> bool:
        """Complete idle series and process the oldest queued one; returns whether one was processed."""
        self.complete_idle()
        queued = self.spool.queued()
        if not queued or self._stop.is_set():
            return False
        ref, complete = queued[0]
        self.busy_with = ref.key
        try:
            self._process(ref, complete)
        finally:
            self.busy_with = None
        return True

    def _process(self, ref: SeriesRef, complete: dict[str, Any]) -> None:
        token = str(complete.get("token", ""))
        log.info("series %s: processing (%d queued after it)", ref.key, len(self.spool.queued()) - 1)
        try:
            outcome = self.process(ref, self.spool.instances(ref), complete)
        except ProcessingError as exc:
            self._record(ref, token, {"study": ref.study, "series": ref.series, "stage": exc.stage,
                                      "reason": str(exc)}, failed=True)
            log.error("series %s: failed at %s: %s", ref.key, exc.stage, exc)
            return
        except Exception as exc:  # a bug or a broken file must not stop the queue
            log.error("series %s: internal error (%s)", ref.key, type(exc).__name__, exc_info=True)
            self._record(ref, token, {"study": ref.study, "series": ref.series, "stage": "internal",
                                      "reason": f"internal error ({type(exc).__name__}); see the node's log"},
                         failed=True)
            return
        if self._record(ref, token, outcome):
            sent = f"sent to {outcome['sent_to']}" if outcome.get("sent_to") else "kept in the spool"
            log.info("series %s: done (%s; %s): %s", ref.key, outcome.get("status"), sent,
                     ", ".join(f"{k} {v:.1f} s" for k, v in outcome.get("seconds", {}).items()))
            for note in outcome.get("notes", []):
                log.warning("series %s: %s", ref.key, note)

    def _record(self, ref: SeriesRef, token: str, outcome: dict[str, Any], *, failed: bool = False) -> bool:
        if self.spool.finish(ref, token, outcome, failed=failed):
            return True
        log.warning("series %s: new instances arrived while it was processed; it will be processed again",
                    ref.key)
        return False
