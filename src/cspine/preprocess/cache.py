"""Decode each RSNA study once into a memory-mappable cache that the CT stages train from.

Layout of ``<cache>/<StudyInstanceUID>/``:

* ``volume.npy``: int16 HU, canonical orientation (see :mod:`cspine.io.volume`), ``np.load(mmap_mode="r")``;
* ``geometry.json``: affine, spacing, shape, the slice map (array index -> InstanceNumber, SOPInstanceUID,
  source file) and the volume's non-identifying ``meta``;
* ``mask.npy``: uint8 labels on the same grid, when the study has a segmentation that passed the checks
  of :mod:`cspine.preprocess.mask_check`;
* ``done.json``: the marker, written last and atomically. A study without it is redone.

Training labels are checked, not trusted. A mask with NaN or non-integer voxels, labels outside 0..19,
no vertebra, or a grid that is not the CT's fails its study by default (``bad_masks="error"``: the study is
listed with the mask's file and problem, and ``prepare`` exits with 1); with ``bad_masks="exclude"`` the
study is cached without the mask and the exclusion is logged and listed in the summary. Every cached mask
gets a report (levels, voxels and mean HU per level); levels whose mean HU is below 150 are flagged as
likely misaligned. Fracture boxes reaching beyond the image or on a slice the study lacks are reported
with their CSV data row (training keeps the part inside the image); boxes with a non-positive size are
left out when the CSV is read (:class:`cspine.io.rsna.RsnaDataset`).

``<cache>/summary.json`` holds the last run's summary: failed studies and why, excluded masks, the mask
report of every cached study with a mask, flagged studies, and box problems.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cspine.errors import CspineError
from cspine.fileio import read_json, write_json, write_npy
from cspine.io.volume import SliceInfo, Volume
from cspine.output_folder import MANIFEST, OutputFolder, OutputFolderError, open_output_folder
from cspine.shard import STALE_AFTER_S, Claims, Shard

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
VOLUME_FILE = "volume.npy"
MASK_FILE = "mask.npy"
GEOMETRY_FILE = "geometry.json"
DONE_FILE = "done.json"
#: Stage-1 labels for a study without a true mask (written by ``cspine.ct.seg.pseudo``).
PSEUDO_MASK_FILE = "pseudo_mask.npy"
SUMMARY_FILE = "summary.json"

#: What to do with a mask that fails its checks: fail the study, or cache the study without it.
BAD_MASK_MODES = ("error", "exclude")

#: A study loader: study folder -> canonical Volume. Default: ``cspine.io.study.load_study``.
Loader = Callable[[Path], Volume]
#: A fracture box: (CSV data row, x, y, width, height, slice_number), as ``RsnaDataset.boxes_of`` gives.
BoxRow = tuple[int, float, float, float, float, int]


@dataclass
class StudyResult:
    """What happened to one study in :func:`prepare_cache`."""

    uid: str
    status: str  # "done" | "skipped" | "failed" | "busy" (claimed by another worker)
    reason: str | None = None
    shape: tuple[int, int, int] | None = None
    has_mask: bool = False
    seconds: float = 0.0
    #: The mask's report (:func:`cspine.preprocess.mask_check.mask_report`), when a mask was cached.
    mask_report: dict[str, Any] | None = None
    #: Why the study's mask was left out (``bad_masks="exclude"``).
    mask_excluded: str | None = None
    box_problems: list[str] = field(default_factory=list)


@dataclass
class PrepareSummary:
    """Outcome of a :func:`prepare_cache` run."""

    cache_dir: str
    split: str
    total: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: Studies of this part that another live worker was preparing (sharded runs only).
    busy: list[str] = field(default_factory=list)
    #: StudyInstanceUID -> why it could not be cached.
    failed: dict[str, str] = field(default_factory=dict)
    masks: int = 0
    seconds: float = 0.0
    #: StudyInstanceUID -> why its mask was left out (the study is cached without it).
    masks_excluded: dict[str, str] = field(default_factory=dict)
    #: StudyInstanceUID -> mask report, for every cached study with a mask (this run's and earlier ones).
    mask_reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: One line per study whose mask has levels flagged as likely misaligned.
    mask_warnings: list[str] = field(default_factory=list)
    #: One line per fracture box that is left out or reaches beyond its image, with its CSV data row.
    box_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_default(folder: Path, workers: int | None = None) -> Volume:
    from cspine.io.study import load_study

    return load_study(folder, workers=workers)


def _json_safe(value: Any) -> Any:
    """Meta values as plain JSON (pydicom values, numpy scalars, tuples...)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _box_problems(volume: Volume, boxes: list[BoxRow], uid: str) -> list[str]:
    """Boxes of ``uid`` that reach beyond the stored image or sit on a slice the series lacks."""
    from cspine.io.rsna import box_outside
    from cspine.labels import BOXES_CSV

    reo = volume.meta.get("reorientation") or {"perm": [0, 1, 2]}
    source = list(volume.meta.get("source_shape") or volume.shape)
    pad = volume.meta.get("tilt_padding_pixels") or [[0, 0], [0, 0]]
    axial = list(reo["perm"])[0] == 0
    rows, cols = source[1] - sum(pad[0]), source[2] - sum(pad[1])
    out = []
    for row, x, y, w, h, number in boxes:
        try:
            volume.index_of_instance(number)
            problem = box_outside(x, y, w, h, rows, cols) if axial else None
        except KeyError:
            problem = f"slice_number {number} is not an InstanceNumber of the study's series"
        if problem is not None:
            out.append(f"{BOXES_CSV}: data row {row} (study {uid}, slice_number {number}): {problem}; "
                       "training uses only the part inside the image")
    return out


def _geometry(volume: Volume, study_dir: Path, has_mask: bool, split: str) -> dict[str, Any]:
    # Volume.meta is non-identifying by contract; drop Patient* keys anyway so no cache file holds them.
    meta = {k: v for k, v in volume.meta.items() if not str(k).lower().startswith("patient")}
    return {
        "format": CACHE_FORMAT,
        "split": split,
        "shape": list(volume.shape),
        "spacing": list(volume.spacing),
        "affine": volume.affine.tolist(),
        "has_mask": has_mask,
        "slices": [
            {"index": k, "instance_number": s.instance_number, "sop_instance_uid": s.sop_instance_uid,
             "file": None if s.path is None else Path(s.path).name, "frame": s.frame,
             "pixel_offset": None if s.pixel_offset is None else list(s.pixel_offset)}
            for k, s in enumerate(volume.slices)
        ],
        "meta": _json_safe(meta),
        "source_dir": str(study_dir),
    }


def prepare_study(uid: str, study_dir: Path, mask_path: Path | None, out_dir: Path, split: str = "train",
                  loader: Loader | None = None, bad_masks: str = "error",
                  boxes: list[BoxRow] | None = None) -> StudyResult:
    """Decode one study into ``out_dir`` (volume, geometry, checked mask, then the marker). Never raises:
    a failure comes back as a ``failed`` result with its reason.

    Args:
        bad_masks: ``"error"``: a mask failing :func:`~cspine.preprocess.mask_check.check_training_mask`
            fails the study; ``"exclude"``: the study is cached without it (``mask_excluded`` says why).
        boxes: the study's fracture boxes, checked against its image (``box_problems``).
    """
    from cspine.errors import NiftiError
    from cspine.preprocess.mask_check import check_training_mask

    t0 = time.perf_counter()
    try:
        if bad_masks not in BAD_MASK_MODES:
            raise ValueError(f"bad_masks must be one of {BAD_MASK_MODES}, got {bad_masks!r}")
        if not study_dir.is_dir():
            raise CspineError("no image folder for this study", study_dir)
        volume = (loader or _load_default)(study_dir)
        if volume.hu.dtype != np.int16:
            raise CspineError(f"the loader returned {volume.hu.dtype}, expected int16 HU", study_dir)
        mask, report, excluded = None, None, None
        if mask_path is not None:
            try:
                mask, report = check_training_mask(mask_path, volume)
            except NiftiError as exc:
                if bad_masks == "error":
                    raise
                excluded = str(exc)
        box_problems = _box_problems(volume, boxes or [], uid)
        (out_dir / DONE_FILE).unlink(missing_ok=True)
        # A pseudo mask belongs to the volume it was predicted on: a re-decoded study needs a new one.
        (out_dir / PSEUDO_MASK_FILE).unlink(missing_ok=True)
        write_npy(out_dir / VOLUME_FILE, volume.hu)
        if mask is not None:
            write_npy(out_dir / MASK_FILE, mask)
        else:
            (out_dir / MASK_FILE).unlink(missing_ok=True)
        geometry = _geometry(volume, study_dir, mask is not None, split)
        geometry.update(mask_report=report, mask_excluded=excluded, box_problems=box_problems)
        write_json(out_dir / GEOMETRY_FILE, geometry)
        write_json(out_dir / DONE_FILE, {"format": CACHE_FORMAT, "uid": uid, "time": time.time()})
        return StudyResult(uid, "done", None, volume.shape, mask is not None, time.perf_counter() - t0,
                           report, excluded, box_problems)
    except Exception as exc:  # one bad study must never stop the run
        reason = str(exc) if isinstance(exc, CspineError) else f"{type(exc).__name__}: {exc}"
        return StudyResult(uid, "failed", reason, None, False, time.perf_counter() - t0)


def is_done(study_out: Path) -> bool:
    """True when the study's marker exists and has the current cache format."""
    marker = study_out / DONE_FILE
    if not marker.is_file():
        return False
    try:
        return read_json(marker).get("format") == CACHE_FORMAT
    except (OSError, ValueError):
        return False


def _progress(total: int, enabled: bool, split: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(f"[bold]prepare {split}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[last]}"), disable=not enabled,
                    transient=False)


def _record(summary: PrepareSummary, result: StudyResult) -> None:
    """Add a finished study's mask report, exclusion and box problems to ``summary`` (and the log)."""
    from cspine.preprocess.mask_check import report_warning

    if result.mask_report is not None:
        summary.mask_reports[result.uid] = result.mask_report
        line = report_warning(result.uid, result.mask_report)
        if line is not None:
            summary.mask_warnings.append(line)
            log.warning("%s", line)
    if result.mask_excluded is not None:
        summary.masks_excluded[result.uid] = result.mask_excluded
        log.warning("study %s: mask left out (cached without it): %s", result.uid, result.mask_excluded)
    for line in result.box_problems:
        summary.box_problems.append(line)
        log.warning("%s", line)


def _earlier(study_out: Path, uid: str) -> StudyResult:
    """A study finished by an earlier run, with the checks recorded in its geometry.json."""
    try:
        geo = read_json(study_out / GEOMETRY_FILE)
    except (OSError, ValueError):
        geo = {}
    return StudyResult(uid, "skipped", mask_report=geo.get("mask_report"),
                       mask_excluded=geo.get("mask_excluded"),
                       box_problems=list(geo.get("box_problems") or []))


def prepare_cache(root: str | Path, cache_dir: str | Path, *, workers: int = 1, split: str = "train",
                  progress: bool = True, loader: Loader | None = None,
                  uids: list[str] | None = None, bad_masks: str = "error", shard: Shard | None = None,
                  stale_after_s: float = STALE_AFTER_S, overwrite: bool = False) -> PrepareSummary:
    """Decode every study of an RSNA root once into ``cache_dir`` (resumable).

    Studies whose marker exists are skipped; a study that fails is recorded with its reason and the
    run goes on. The summary is also written to ``<cache>/summary.json``.

    Args:
        root: RSNA 2022 layout root (validated by :class:`cspine.io.rsna.RsnaDataset`).
        cache_dir: output folder.
        workers: processes decoding studies in parallel (1 = in this process).
        split: ``"train"`` (with masks) or ``"test"``.
        progress: show a rich progress bar.
        loader: study folder -> canonical Volume (default ``cspine.io.study.load_study``); must be a
            module-level function when ``workers > 1``.
        uids: restrict to these studies (default: all of the split).
        bad_masks: ``"error"`` (default): a mask that fails its checks (NaN, labels outside 0..19, no
            vertebra, a grid that is not the CT's) fails its study; ``"exclude"``: the study is cached
            without it and the exclusion is listed in the summary. Applies to the studies this run prepares.
        shard: prepare only this part of the sorted studies (:mod:`cspine.shard`); each study is claimed
            in ``<cache>/.claims`` first, so workers sharing the cache never prepare one study twice, and a
            dead worker's claim (``stale_after_s``) is retaken. The summary goes to
            ``summary.part-K-of-N.json``; a later run without a shard writes the whole ``summary.json``.
        overwrite: use a ``cache_dir`` that holds files of something else than a cspine cache, and replace
            a ``summary.json`` cspine did not write (:mod:`cspine.output_folder`).

    Returns:
        The :class:`PrepareSummary`.

    Raises:
        DatasetError: the root's layout or CSVs are invalid.
        OutputFolderError: ``cache_dir`` is a file, not writable, holds files that are not a cspine cache,
            or a ``summary.json`` cspine did not write (before any study is read).
    """
    from cspine.io.rsna import RsnaDataset

    if bad_masks not in BAD_MASK_MODES:
        raise ValueError(f"bad_masks must be one of {BAD_MASK_MODES}, got {bad_masks!r}")
    t0 = time.perf_counter()
    dataset = RsnaDataset(root)
    folder = _open_cache(Path(cache_dir), overwrite)
    cache_dir = folder.path
    if loader is None:
        # Several studies at once: one decoding process each, not a pool per study on top of ours.
        loader = functools.partial(_load_default, workers=1 if workers > 1 else None)
    all_uids = dataset.uids(split) if uids is None else list(uids)
    if shard is not None:
        all_uids = shard.select(all_uids)
    summary = PrepareSummary(str(cache_dir), split, len(all_uids))
    if split == "train":
        summary.box_problems += dataset.box_problems
    todo: list[tuple[Any, ...]] = []
    for uid in all_uids:
        if is_done(cache_dir / uid):
            summary.skipped.append(uid)
            _record(summary, _earlier(cache_dir / uid, uid))
            continue
        study_dir = dataset.root / ("train_images" if split == "train" else "test_images") / uid
        mask = dataset.mask_path(uid) if split == "train" else None
        boxes = dataset.boxes_of(uid) if split == "train" else []
        todo.append((uid, study_dir, mask, cache_dir / uid, split, loader, bad_masks, boxes))
    if summary.skipped:
        log.info("%d of %d studies already cached: skipped", len(summary.skipped), len(all_uids))

    with _progress(len(all_uids), progress, split) as bar:
        task = bar.add_task("prepare", total=len(all_uids), completed=len(summary.skipped), last="")
        claims = None if shard is None else Claims(cache_dir, stale_after_s=stale_after_s)
        for result in _run(todo, workers, claims):
            if result.status == "skipped":  # finished by another worker meanwhile
                summary.skipped.append(result.uid)
                _record(summary, result)
            elif result.status == "busy":
                summary.busy.append(result.uid)
            elif result.status == "done":
                summary.done.append(result.uid)
                summary.masks += int(result.has_mask)
                _record(summary, result)
            else:
                summary.failed[result.uid] = result.reason or "unknown error"
                log.warning("study %s failed: %s", result.uid, result.reason)
            bar.update(task, advance=1, last=f"{result.uid[-12:]} {result.status}")
    summary.seconds = time.perf_counter() - t0
    name = SUMMARY_FILE if shard is None else f"summary.{shard.label}.json"
    write_json(cache_dir / name, summary.to_dict())
    if shard is None:  # sharded workers share the folder: none of them rewrites the manifest
        folder.record(SUMMARY_FILE)
    return summary


def _open_cache(cache_dir: Path, overwrite: bool) -> OutputFolder:
    """The cache folder, checked before any work: writable, a cspine cache (or empty), and its
    ``summary.json`` cspine's own. A folder with files but no manifest is a cache of an earlier cspine
    version when it holds finished studies (their ``done.json``); its summary is then adopted."""
    folder = open_output_folder(cache_dir, overwrite=overwrite, command="cspine ct prepare")
    if (cache_dir / MANIFEST).is_file():
        folder.check([SUMMARY_FILE], "cspine ct prepare")
        return folder
    entries = sorted(p for p in cache_dir.iterdir() if not p.name.startswith("."))
    earlier = any((p / DONE_FILE).is_file() for p in entries if p.is_dir())
    if entries and not earlier and not overwrite:
        shown = ", ".join(p.name for p in entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise OutputFolderError(f"holds files that are not a cspine cache ({shown}); give an empty or new "
                                "--cache folder, or pass --overwrite to use it anyway", cache_dir)
    if not earlier:
        folder.check([SUMMARY_FILE], "cspine ct prepare")
    # The manifest marks the folder as a cache at once (sharded workers starting together all write the
    # same one), so a worker starting later sees a cache, not a folder of someone else's files.
    folder.record(*([SUMMARY_FILE] if earlier else []))
    return folder


def prepare_claimed(claims: Claims, uid: str, study_dir: Path, *args: Any) -> StudyResult:
    """:func:`prepare_study` under the study's claim: ``busy`` when a live worker holds it, ``skipped``
    when another worker finished it meanwhile."""
    claim = claims.acquire(uid)
    if claim is None:
        return StudyResult(uid, "busy", "being prepared by another worker")
    with claim:
        out_dir = args[1]
        if is_done(out_dir):
            return _earlier(out_dir, uid)
        return prepare_study(uid, study_dir, *args)


def _run(todo: list[tuple[Any, ...]], workers: int, claims: Claims | None = None) -> Iterator[StudyResult]:
    work: Callable[..., StudyResult] = (prepare_study if claims is None
                                        else functools.partial(prepare_claimed, claims))
    if workers <= 1 or len(todo) <= 1:
        for args in todo:
            yield work(*args)
        return
    # forkserver: the parent runs a progress-bar thread, and forking a threaded process can deadlock.
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    ctx = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures: dict[Future[StudyResult], str] = {pool.submit(work, *a): a[0] for a in todo}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except BrokenProcessPool:
                yield StudyResult(futures[fut], "failed", "a worker process died (out of memory?); rerun")
            except Exception as exc:  # e.g. an unpicklable loader
                yield StudyResult(futures[fut], "failed", f"{type(exc).__name__}: {exc}")
    finally:
        # On Ctrl-C (or any error) do not start the queued studies; finished ones keep their markers.
        pool.shutdown(wait=True, cancel_futures=True)


class StudyCache:
    """Read access to a cache written by :func:`prepare_cache`.

    Example:
        >>> cache = StudyCache("cache/")  # doctest: +SKIP
        >>> vol = cache.load(cache.uids()[0]); mask = cache.load_mask(vol.study_uid)  # doctest: +SKIP
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        if not self.cache_dir.is_dir():
            raise CspineError("cache folder not found; run `cspine ct prepare` first", self.cache_dir)

    def uids(self) -> list[str]:
        """Finished studies, sorted."""
        return sorted(p.name for p in self.cache_dir.iterdir() if p.is_dir() and is_done(p))

    def has(self, uid: str) -> bool:
        return is_done(self.cache_dir / uid)

    def _dir(self, uid: str) -> Path:
        folder = self.cache_dir / uid
        if not is_done(folder):
            raise CspineError(f"study {uid} is not in the cache (or unfinished); run `cspine ct prepare`",
                              folder)
        return folder

    def geometry(self, uid: str) -> dict[str, Any]:
        return read_json(self._dir(uid) / GEOMETRY_FILE)

    def load(self, uid: str, mmap: bool = True) -> Volume:
        """The cached Volume; ``hu`` is a read-only memory map unless ``mmap=False``."""
        folder = self._dir(uid)
        geo = read_json(folder / GEOMETRY_FILE)
        hu = np.load(folder / VOLUME_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
        slices = tuple(
            SliceInfo(None if s["file"] is None else str(Path(geo["source_dir"]) / s["file"]),
                      s["instance_number"], s["sop_instance_uid"], s.get("frame"),
                      None if s.get("pixel_offset") is None else tuple(s["pixel_offset"]))
            for s in geo["slices"])
        meta = dict(geo.get("meta", {}))
        meta.setdefault("StudyInstanceUID", uid)
        return Volume(hu, np.asarray(geo["affine"], dtype=np.float64), slices, meta)

    def load_mask(self, uid: str, mmap: bool = False) -> np.ndarray | None:
        """The label map on the volume's grid, or None when the study has no segmentation."""
        path = self._dir(uid) / MASK_FILE
        if not path.is_file():
            return None
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)

    def summary(self) -> dict[str, Any] | None:
        """The last run's summary (``summary.json``), if any."""
        path = self.cache_dir / SUMMARY_FILE
        return read_json(path) if path.is_file() else None

    def remove(self, uid: str) -> None:
        """Drop one study from the cache (it is redone by the next prepare)."""
        folder = self.cache_dir / uid
        if folder.is_dir():
            (folder / DONE_FILE).unlink(missing_ok=True)
            shutil.rmtree(folder)
