"""The studies the viewer shows: every ``<UID>.json`` of its results folders, under opaque keys.

A study is known to the browser only by its key, an HMAC-SHA256 of its results folder and
StudyInstanceUID under a secret drawn when the server starts: URLs carry no UID, and a key cannot be
turned back into a UID by hashing candidates (RSNA's UIDs, for one, are a short running number).
Keys therefore change when the server restarts.

What the page gets (:meth:`StudyStore.summary`, :meth:`StudyStore.detail`) is built from the result
documents that ``cspine ct predict`` writes (:meth:`cspine.ct.StudyResult.to_dict`); the source path
of a study never leaves the server.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cspine.fileio import read_json
from cspine.labels import LABEL_OF, PATIENT_OVERALL, VERTEBRAE
from cspine.viewer.volumes import CT_FILE, HEAT_FILE, LABELS_FILE, read_view, view_dir_for

if TYPE_CHECKING:
    from cspine.ct.cls.operating_points import ResolvedOperatingPoint

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLD", "ServePoint", "StudyEntry", "StudyStore", "flagged_vertebrae",
           "operating_point", "resolve_serve_point"]

#: The decision threshold when a result carries no operating point.
DEFAULT_THRESHOLD = 0.5
_NOT_RESULTS = frozenset({"failures.json"})


@dataclass(frozen=True)
class StudyEntry:
    """One study: its key, UID, the results folder holding ``<UID>.json``, and where it came from."""

    key: str
    uid: str
    folder: Path
    json_path: Path
    origin: str  # "results" (a --results folder) or "upload"
    doc: dict[str, Any]

    @property
    def view_dir(self) -> Path:
        return view_dir_for(self.folder, self.uid)


@dataclass(frozen=True)
class ServePoint:
    """The operating point of ``cspine serve``: the one ``--operating-point`` names (``explicit``: it
    replaces every result's own calls), or the model's default (used only for results without one)."""

    point: ResolvedOperatingPoint
    explicit: bool = False


def resolve_serve_point(spec: str | None, model: Any | None) -> ServePoint | None:
    """``cspine serve --operating-point``: read as ``cspine ct predict`` reads it
    (:func:`cspine.ct.cls.operating_points.resolve_requested_point`: default ``sens90`` when the model
    stores points). Without a model only a threshold ``0.NN`` can be given.

    Raises:
        OperatingPointError: an unknown point, a number outside (0, 1), a named point without --model.
    """
    from cspine.ct.cls.operating_points import (
        OperatingPointError,
        resolve_operating_point,
        resolve_requested_point,
    )

    if model is None:
        if spec is None:
            return None
        try:
            float(spec)
        except ValueError:
            raise OperatingPointError(f"--operating-point {spec}: a stored point needs --model RUN (the "
                                      "points are stored with the model); give a threshold such as 0.3"
                                      ) from None
        return ServePoint(resolve_operating_point(spec, None), explicit=True)
    point = resolve_requested_point(spec, model.operating_points())
    return None if point is None else ServePoint(point, explicit=spec is not None)


def _own_point(doc: dict[str, Any]) -> dict[str, Any] | None:
    op = doc.get("operating_point")
    if isinstance(op, dict):
        vert, pat = op.get("vertebra_threshold"), op.get("patient_threshold")
        if isinstance(vert, int | float) and isinstance(pat, int | float):
            return {"name": str(op.get("name") or f"{float(vert):g}"), "vertebra": float(vert),
                    "patient": float(pat), "source": op.get("source"), "note": None, "recalled": False}
    return None


def operating_point(doc: dict[str, Any], serve: ServePoint | None = None) -> dict[str, Any]:
    """The thresholds a result is shown at: ``serve``'s when it was asked for explicitly (the result's
    own calls are then replaced: ``recalled``), else the result's own (``operating_point`` of
    ``<UID>.json``, written by ``cspine ct predict --operating-point``), else ``serve``'s default point,
    else 0.5; a note says which when it is not the result's own."""
    own = _own_point(doc)
    if serve is not None and (serve.explicit or own is None):
        p = serve.point
        note = ("predicted without an operating point" if own is None else
                f"predicted at {own['name']}") + f"; called here at {p.name} (cspine serve)"
        if own is not None and own["vertebra"] == p.vertebra and own["patient"] == p.patient:
            note = None
        return {"name": p.name, "vertebra": float(p.vertebra), "patient": float(p.patient),
                "source": p.source, "note": note, "recalled": note is not None}
    if own is not None:
        return own
    return {"name": f"{DEFAULT_THRESHOLD:g} (default)", "vertebra": DEFAULT_THRESHOLD,
            "patient": DEFAULT_THRESHOLD, "source": None, "recalled": False,
            "note": f"predicted without an operating point; p >= {DEFAULT_THRESHOLD:g} is flagged here"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _positive(value: Any, probability: float | None, threshold: float, own_calls: bool = True) -> bool:
    """The result's own call when it made one (and ``own_calls``), else ``probability >= threshold``
    (no probability: no)."""
    if own_calls and isinstance(value, bool):
        return value
    return probability is not None and probability >= threshold


def flagged_vertebrae(doc: dict[str, Any], serve: ServePoint | None = None) -> list[str]:
    """The vertebrae a result flags at :func:`operating_point`'s thresholds, in C1..C7 order."""
    op = operating_point(doc, serve)
    probs, verts = doc.get("probabilities") or {}, doc.get("vertebrae") or {}
    return [v for v in VERTEBRAE if _positive((verts.get(v) or {}).get("positive"), _number(probs.get(v)),
                                              op["vertebra"], not op["recalled"])]


def _is_result(doc: Any) -> bool:
    """A study result: a UID and a probability (or ``null`` for a level not found) per target."""
    if not isinstance(doc, dict) or not isinstance(doc.get("study_uid"), str):
        return False
    probs = doc.get("probabilities")
    targets = (*VERTEBRAE, PATIENT_OVERALL)
    return isinstance(probs, dict) and all(
        t in probs and (probs[t] is None or _number(probs[t]) is not None) for t in targets)


class StudyStore:
    """The results folders the viewer lists, rescanned on every listing (new results appear).

    Args:
        folders: results folders of ``cspine ct predict``.
        secret: the key secret (default: random per process).
        serve_point: the operating point of ``cspine serve`` (:func:`operating_point`).
    """

    def __init__(self, folders: list[Path] | tuple[Path, ...] = (), secret: bytes | None = None,
                 serve_point: ServePoint | None = None) -> None:
        self.serve_point = serve_point
        self._secret = secret or secrets.token_bytes(32)
        self._folders: dict[Path, str] = {}
        self._cache: dict[Path, tuple[int, StudyEntry | None]] = {}
        self._lock = threading.Lock()
        for folder in folders:
            self.add_folder(folder, "results")

    def key_for(self, folder: Path, uid: str) -> str:
        """The opaque key of study ``uid`` in results folder ``folder``."""
        msg = f"{Path(folder).resolve()}\0{uid}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:24]

    def add_folder(self, folder: str | Path, origin: str) -> None:
        with self._lock:
            self._folders[Path(folder)] = origin

    def _load(self, path: Path, folder: Path, origin: str) -> StudyEntry | None:
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        try:
            doc = read_json(path)
        except (OSError, ValueError):
            doc = None
        entry = None
        if _is_result(doc):
            uid = doc["study_uid"]
            entry = StudyEntry(key=self.key_for(folder, uid), uid=uid, folder=folder, json_path=path,
                               origin=origin, doc=doc)
        else:
            log.warning("a JSON file in a results folder is not a study result; ignored")
        self._cache[path] = (mtime, entry)
        return entry

    def entries(self) -> list[StudyEntry]:
        """Every study of every folder, uploads first (newest first), then results by UID."""
        with self._lock:
            folders = list(self._folders.items())
        out: list[StudyEntry] = []
        for folder, origin in folders:
            if not folder.is_dir():
                continue
            found = []
            for path in sorted(folder.glob("*.json")):
                if path.name in _NOT_RESULTS:
                    continue
                with self._lock:
                    entry = self._load(path, folder, origin)
                if entry is not None:
                    found.append(entry)
            out += found
        uploads = [e for e in out if e.origin == "upload"][::-1]
        return uploads + sorted((e for e in out if e.origin != "upload"), key=lambda e: e.uid)

    def get(self, key: str) -> StudyEntry | None:
        return next((e for e in self.entries() if e.key == key), None)

    def keys_in(self, folder: Path) -> list[str]:
        """Keys of the studies of one folder (an upload's results)."""
        return [e.key for e in self.entries() if e.folder == Path(folder)]

    # --- what the page gets ----------------------------------------------------------------------

    def summary(self, entry: StudyEntry) -> dict[str, Any]:
        """One row of the study list."""
        doc = entry.doc
        return {"key": entry.key, "study_uid": entry.uid, "origin": entry.origin,
                "patient_overall": _number(doc["probabilities"][PATIENT_OVERALL]),
                "flagged": flagged_vertebrae(doc, self.serve_point), "status": doc.get("status"),
                "view_ready": read_view(entry.view_dir) is not None}

    def detail(self, entry: StudyEntry) -> dict[str, Any]:
        """Everything the study page shows except the view status (the caller adds it)."""
        doc = entry.doc
        op = operating_point(doc, self.serve_point)
        own_calls = not op["recalled"]
        probs = doc["probabilities"]
        verts = doc.get("vertebrae") or {}
        prior = doc.get("prior") or {}
        rows = []
        for v in VERTEBRAE:
            d = verts.get(v) or {}
            p = _number(probs[v])
            att = d.get("attention") or None
            attention = None if att is None else {"weights": att.get("weights") or [],
                                                  "slice_indices": att.get("slice_indices") or []}
            rows.append({"name": v, "label": LABEL_OF[v], "probability": p, "prior": _number(prior.get(v)),
                         "positive": _positive(d.get("positive"), p, op["vertebra"], own_calls),
                         "present": bool(d.get("present", False)), "z_range": d.get("z_range"),
                         "centroid": d.get("centroid"),
                         "attention": attention})
        patient = _number(probs[PATIENT_OVERALL])
        return {"key": entry.key, "study_uid": entry.uid, "origin": entry.origin,
                "status": doc.get("status"), "status_reason": doc.get("status_reason"),
                "patient": {"probability": patient,
                            "positive": _positive(doc.get("patient_positive"), patient, op["patient"],
                                                  own_calls)},
                "operating_point": op, "vertebrae": rows,
                "seconds": doc.get("seconds") or {}, "model": model_summary(doc),
                "warnings": [str(w) for w in doc.get("warnings") or []],
                "volume": doc.get("volume") or {}}

    def view_files(self, entry: StudyEntry) -> dict[str, str | None] | None:
        """URLs of the view files when the study's view folder is complete, else ``None``."""
        meta = read_view(entry.view_dir)
        if meta is None:
            return None
        base = f"/api/studies/{entry.key}/files"
        heat = (meta.get("files") or {}).get("heat")
        return {"ct": f"{base}/{CT_FILE}", "labels": f"{base}/{LABELS_FILE}",
                "heat": f"{base}/{HEAT_FILE}" if heat else None, "window_hu": meta.get("window_hu"),
                "affine_ras": meta.get("affine_ras"),
                "heat_vertebrae": sorted((meta.get("heat_vertebrae") or {}).keys())}


def model_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """Model identity and software versions of a result, without local paths."""
    versions = doc.get("versions") or {}
    model = versions.get("model") or {}
    packages = versions.get("packages") or {}
    run = model.get("run_dir")
    return {"run": Path(run).name if run else None,
            "seg_weights": (model.get("seg") or {}).get("weights_sha256_16"),
            "cls_weights": (model.get("cls") or {}).get("weights_sha256_16"),
            "trained_with": (model.get("cls") or {}).get("trained_with"),
            "cspine": packages.get("cspine"), "torch": packages.get("torch"),
            "device": versions.get("device")}
