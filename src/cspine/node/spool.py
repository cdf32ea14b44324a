"""The node's spool: received instances, the state of each series, and its results. It is the queue.

Layout (names from :class:`cspine.node.names.SpoolNames`, never UIDs)::

    SPOOL/.key                              the naming key
    SPOOL/<study>/<series>/series.json      received: first arrival, calling AE (written once)
    SPOOL/<study>/<series>/study-<study>/   the instances, <hash>.dcm, each written atomically
    SPOOL/<study>/<series>/complete.json    no instance arrived for the idle time: queued
    SPOOL/<study>/<series>/done.json        processed (and sent): what, where, how long
    SPOOL/<study>/<series>/failed.json      processing failed: the stage and the reason
    SPOOL/<study>/<series>/results/         SEG, SR and the result document

The instance folder is named ``study-<study>`` because the pipeline names an anonymised study (empty
StudyInstanceUID) after its folder. A series' state is read from its markers: ``failed`` or ``done``
when that marker exists, else ``complete``, else ``receiving``. An instance that arrives for a series
past ``receiving`` reopens it (the markers go; it is processed again once complete). A restart loses
nothing: complete series are still queued, and half-received ones wait the idle time again (more
instances may still come) before they are processed.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cspine.fileio import atomic_path, read_json, write_json
from cspine.node.names import SpoolNames

log = logging.getLogger(__name__)

__all__ = ["COMPLETE", "COMPLETE_JSON", "DONE", "DONE_JSON", "FAILED", "FAILED_JSON", "RECEIVING",
           "SERIES_JSON", "STATES", "SeriesRef", "Spool", "Stored"]

RECEIVING, COMPLETE, DONE, FAILED = "receiving", "complete", "done", "failed"
STATES = (RECEIVING, COMPLETE, DONE, FAILED)
SERIES_JSON, COMPLETE_JSON = "series.json", "complete.json"
DONE_JSON, FAILED_JSON = "done.json", "failed.json"
RESULTS_DIR = "results"
_TERMINAL = (COMPLETE_JSON, DONE_JSON, FAILED_JSON)


@dataclass(frozen=True)
class SeriesRef:
    """One series of the spool, by the hashed names of its study and itself."""

    study: str
    series: str
    path: Path

    @property
    def key(self) -> str:
        """``<study>/<series>``: how logs name the series."""
        return f"{self.study}/{self.series}"

    @property
    def images_dir(self) -> Path:
        return self.path / f"study-{self.study}"

    @property
    def results_dir(self) -> Path:
        return self.path / RESULTS_DIR

    def marker(self, name: str) -> Path:
        return self.path / name


@dataclass(frozen=True)
class Stored:
    """What :meth:`Spool.store` did with an instance."""

    ref: SeriesRef
    new_series: bool
    reopened: bool


class Spool:
    """A spool folder and the arrival times of the series still receiving.

    Args:
        root: the spool folder (created).
        idle_seconds: a series is complete when no instance arrived for this long.
        clock: wall-clock seconds (tests pass a fake one).
    """

    def __init__(self, root: str | Path, idle_seconds: float, *, clock: Any = time.time) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.idle_seconds = float(idle_seconds)
        self.names = SpoolNames.open(self.root)
        self._clock = clock
        self._lock = threading.RLock()
        self._last: dict[str, float] = {}
        self._refs: dict[str, SeriesRef] = {}
        self.resumed: list[SeriesRef] = []
        for ref in self._scan():
            self._refs[ref.key] = ref
            if self.state(ref) == RECEIVING:
                # half received before a restart: more instances may still come, so wait again
                self._last[ref.key] = self._clock()
                self.resumed.append(ref)

    # --- naming and reading ----------------------------------------------------------------------

    def ref(self, study_uid: str, series_uid: str) -> SeriesRef:
        """The series folder of these identifiers (nothing is created)."""
        study = self.names.study(study_uid)
        series = self.names.series(study_uid, series_uid)
        return SeriesRef(study, series, self.root / study / series)

    def _scan(self) -> list[SeriesRef]:
        refs = []
        for marker in sorted(self.root.glob(f"*/*/{SERIES_JSON}")):
            folder = marker.parent
            refs.append(SeriesRef(folder.parent.name, folder.name, folder))
        return refs

    def series(self) -> list[SeriesRef]:
        """Every series of the spool."""
        with self._lock:
            return list(self._refs.values())

    def state(self, ref: SeriesRef) -> str:
        """``receiving``, ``complete``, ``done`` or ``failed`` (see the module docstring)."""
        if ref.marker(FAILED_JSON).is_file():
            return FAILED
        if ref.marker(DONE_JSON).is_file():
            return DONE
        if ref.marker(COMPLETE_JSON).is_file():
            return COMPLETE
        return RECEIVING

    def instances(self, ref: SeriesRef) -> list[Path]:
        """The series' instance files (temporary files of writes in progress excluded)."""
        if not ref.images_dir.is_dir():
            return []
        return sorted(p for p in ref.images_dir.glob("*.dcm") if not p.name.startswith("."))

    def read_marker(self, ref: SeriesRef, name: str) -> dict[str, Any] | None:
        path = ref.marker(name)
        try:
            doc = read_json(path)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def counts(self) -> dict[str, int]:
        """How many series are in each state."""
        out = dict.fromkeys(STATES, 0)
        for ref in self.series():
            out[self.state(ref)] += 1
        return out

    # --- receiving -------------------------------------------------------------------------------

    def store(self, study_uid: str, series_uid: str, sop_instance_uid: str, data: bytes,
              calling_ae: str = "") -> Stored:
        """Write one received instance (a DICOM file's bytes) atomically into its series.

        Raises:
            OSError: the spool cannot be written (the C-STORE is then answered with a failure).
        """
        ref = self.ref(study_uid, series_uid)
        new = False
        with self._lock:
            if ref.key not in self._refs or not ref.marker(SERIES_JSON).is_file():
                new = not ref.marker(SERIES_JSON).is_file()
                ref.images_dir.mkdir(parents=True, exist_ok=True)
                if new:
                    write_json(ref.marker(SERIES_JSON), {"study": ref.study, "series": ref.series,
                                                         "first_received": self._clock(),
                                                         "calling_ae": calling_ae})
                self._refs[ref.key] = ref
            self._last[ref.key] = self._clock()
        with atomic_path(ref.images_dir / f"{self.names.instance(sop_instance_uid)}.dcm") as tmp:
            tmp.write_bytes(data)
        with self._lock:
            self._last[ref.key] = self._clock()
            reopened = self._reopen(ref)
        return Stored(ref, new, reopened)

    def _reopen(self, ref: SeriesRef) -> bool:
        """Remove the markers of a series past ``receiving`` (an instance arrived after completion)."""
        present = [name for name in _TERMINAL if ref.marker(name).is_file()]
        for name in present:
            ref.marker(name).unlink(missing_ok=True)
        return bool(present)

    def last_arrival(self, ref: SeriesRef) -> float | None:
        with self._lock:
            return self._last.get(ref.key)

    # --- the queue -------------------------------------------------------------------------------

    def due(self) -> list[SeriesRef]:
        """Receiving series that have been idle for ``idle_seconds``."""
        now = self._clock()
        with self._lock:
            return [ref for key, ref in self._refs.items()
                    if key in self._last and now - self._last[key] >= self.idle_seconds
                    and self.state(ref) == RECEIVING]

    def mark_complete(self, ref: SeriesRef) -> dict[str, Any] | None:
        """Queue ``ref`` if it is still receiving and idle; returns its ``complete.json`` (else ``None``).

        The document holds a random ``token``: :meth:`finish` writes the outcome only if the series was
        not reopened meanwhile.
        """
        with self._lock:
            last = self._last.get(ref.key)
            if last is None or self._clock() - last < self.idle_seconds or self.state(ref) != RECEIVING:
                return None
            files = self.instances(ref)
            if not files:
                return None
            received = self.read_marker(ref, SERIES_JSON) or {}
            doc = {"token": secrets.token_hex(8), "completed_at": self._clock(), "instances": len(files),
                   "first_received": received.get("first_received"),
                   "last_received": max(os.stat(f).st_mtime for f in files)}
            write_json(ref.marker(COMPLETE_JSON), doc)
            self._last.pop(ref.key, None)
            return doc

    def queued(self) -> list[tuple[SeriesRef, dict[str, Any]]]:
        """Complete, unprocessed series with their ``complete.json``, oldest first."""
        out = []
        for ref in self.series():
            if self.state(ref) == COMPLETE:
                doc = self.read_marker(ref, COMPLETE_JSON)
                if doc is not None:
                    out.append((ref, doc))
        return sorted(out, key=lambda item: float(item[1].get("completed_at") or 0.0))

    def finish(self, ref: SeriesRef, token: str, outcome: dict[str, Any], *, failed: bool = False) -> bool:
        """Write ``done.json`` (or ``failed.json``) unless the series was reopened since ``token``.

        Returns:
            Whether the outcome was recorded (``False``: new instances came; it is processed again).
        """
        with self._lock:
            doc = self.read_marker(ref, COMPLETE_JSON)
            if doc is None or doc.get("token") != token:
                return False
            write_json(ref.marker(FAILED_JSON if failed else DONE_JSON),
                       {**outcome, "state": FAILED if failed else DONE, "finished_at": self._clock()})
            return True
