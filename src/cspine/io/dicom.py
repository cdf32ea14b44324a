"""Reading a CT study from DICOM files into a :class:`~cspine.io.volume.Volume`.

:func:`read_series` is the entry point. It

1. lists the files (a folder is searched recursively; a folder is one study, even with empty UIDs),
2. reads their headers and skips what is not a usable image (:mod:`cspine.io.dicom_series`); a
   multi-frame Enhanced CT / Legacy Converted Enhanced CT file gives one header per frame, read from its
   functional groups (:mod:`cspine.io.dicom_enhanced`), and its frames are slices from then on,
3. splits series by UID, SeriesNumber, size and orientation and chooses the axial CT series with the
   most images (``meta["series_choice"]`` says which and why),
4. sorts the slices along the slice normal and checks spacing, duplicates, gaps and gantry tilt
   (:mod:`cspine.io.dicom_geometry`),
5. decodes the slices straight into one preallocated int16 HU array (:mod:`cspine.io.dicom_decode`),
   in worker processes when there are several cores: pydicom, GDCM and dicomsdl all hold the GIL
   while decoding (measured: two threads run no faster than one), so threads would not help.
   The workers write into one shared memory mapping, so memory stays at one copy of the volume.

The returned volume keeps the DICOM stacking order (ascending along the slice normal, i.e. for axial
images from inferior to superior); :func:`cspine.io.orient.to_canonical` (or
:func:`cspine.io.study.load_study`) turns it into the project's canonical orientation.
"""

from __future__ import annotations

import functools
import logging
import mmap
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cspine.errors import DicomError, SeriesGeometryError, UnsupportedTransferSyntaxError
from cspine.io.dicom_decode import (
    BACKENDS,
    check_decodable,
    decode_file_into,
    decode_frames_into,
    decode_hu,
    read_slice_hu,
    resolve_backend,
    syntax_name,
)
from cspine.io.dicom_geometry import MIN_SLICES, StackPlan, apply_plan, plan_stack
from cspine.io.dicom_series import Header, choose_series, list_files, scan, split_series
from cspine.io.volume import SliceInfo, Volume
from cspine.labels import HU_MIN

__all__ = [
    "BACKENDS", "MIN_SLICES", "DicomError", "SeriesGeometryError", "UnsupportedTransferSyntaxError",
    "decode_hu", "default_workers", "read_series", "read_slice_hu", "syntax_name",
]

log = logging.getLogger(__name__)

#: Below this many files a process pool costs more than it saves.
PARALLEL_MIN_FILES = 16


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


# --- worker side ----------------------------------------------------------------------------------
_SHARED: dict[str, Any] = {}


def _decode_items(items: Sequence[tuple[int, Header]], out: np.ndarray, backend: str) -> list[str]:
    """Decode ``(index, header)`` items into ``out[index]``; the frames of a multi-frame file together."""
    warns: list[str] = []
    frames: dict[str, list[tuple[int, Header]]] = {}
    for k, h in items:
        if h.frame is not None:
            frames.setdefault(h.path, []).append((k, h))
            continue
        warns += decode_file_into(h.path, out[k], backend=backend, syntax=h.syntax, slope=h.slope,
                                  intercept=h.intercept, bits_stored=h.bits_stored, signed=h.signed)
    for path, group in frames.items():
        h0 = group[0][1]
        warns += decode_frames_into(path, [h.frame for _, h in group], [out[k] for k, _ in group],  # type: ignore[misc]
                                    backend=backend, syntax=h0.syntax, slopes=[h.slope for _, h in group],
                                    intercepts=[h.intercept for _, h in group], bits_stored=h0.bits_stored,
                                    signed=h0.signed)
    return warns


def _decode_chunk(args: tuple[str, tuple[int, int, int], list[tuple[int, Header]], str]) -> list[str]:
    """Worker: decode ``(index, header)`` items into the shared output file."""
    path, shape, items, backend = args
    if _SHARED.get("path") != path:  # map the output once per worker
        _SHARED.clear()
        _SHARED.update(path=path, arr=np.memmap(path, dtype=np.int16, mode="r+", shape=shape))
    return _decode_items(items, _SHARED["arr"], backend)


def _decode_serial(headers: Sequence[Header], shape: tuple[int, int, int], backend: str
                   ) -> tuple[np.ndarray, list[str]]:
    out = np.empty(shape, np.int16)
    return out, _decode_items(list(enumerate(headers)), out, backend)


def _chunks(headers: Sequence[Header], workers: int) -> list[list[tuple[int, Header]]]:
    """Work items for the pool: a few single-frame files each, or a share of one multi-frame file's frames
    (each chunk parses its file's header once, so those chunks are larger)."""
    single = [(k, h) for k, h in enumerate(headers) if h.frame is None]
    # Small chunks keep every worker busy to the end; a few slices each amortise the IPC.
    size = max(1, min(8, len(single) // (4 * workers)))
    chunks = [single[i:i + size] for i in range(0, len(single), size)]
    by_file: dict[str, list[tuple[int, Header]]] = {}
    for k, h in enumerate(headers):
        if h.frame is not None:
            by_file.setdefault(h.path, []).append((k, h))
    for items in by_file.values():
        size = max(8, -(-len(items) // workers))
        chunks += [items[i:i + size] for i in range(0, len(items), size)]
    return chunks


def _shared_dir() -> str:
    shm = "/dev/shm"  # RAM-backed on Linux: the shared output never touches the disk
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _decode_parallel(pool: Any, headers: Sequence[Header], shape: tuple[int, int, int], backend: str,
                     workers: int) -> tuple[np.ndarray, list[str]]:
    """Decode in ``pool`` into a shared file mapping; return an array backed by that mapping."""
    nbytes = int(np.prod(shape)) * 2
    if hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd"):
        # An anonymous RAM file: nothing to clean up even if the process is killed; the workers
        # open it through /proc (same user).
        fd = os.memfd_create("cspine-volume")
        path, unlink = f"/proc/{os.getpid()}/fd/{fd}", False
    else:
        fd, path = tempfile.mkstemp(prefix="cspine-volume-", dir=_shared_dir())
        unlink = True
    try:
        os.ftruncate(fd, nbytes)
        chunks = [(path, shape, items, backend) for items in _chunks(headers, workers)]
        warns: list[str] = []
        for w in pool.imap_unordered(_decode_chunk, chunks):
            warns += w
        mm = mmap.mmap(fd, nbytes)  # the mapping outlives the unlinked file
    finally:
        os.close(fd)
        if unlink:
            os.unlink(path)
    return np.frombuffer(mm, dtype=np.int16).reshape(shape), warns


def _pool(workers: int) -> Any:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return multiprocessing.get_context(method).Pool(workers)


# --- the reader -----------------------------------------------------------------------------------
def _image_hu(h: Header) -> np.ndarray:
    out = np.empty((1, h.rows, h.cols), np.int16)
    _decode_items([(0, h)], out, "pydicom")
    return out[0]


def _same_pixels(a: Header, b: Header) -> bool:
    return bool(np.array_equal(_image_hu(a), _image_hu(b)))


def _summarise_skipped(skipped: dict[str, list[str]]) -> list[str]:
    out = []
    for reason, paths in skipped.items():
        names = ", ".join(paths[:3]) + (f" (+{len(paths) - 3} more)" if len(paths) > 3 else "")
        out.append(f"skipped {len(paths)} file(s): {reason}: {names}")
    return out


def read_series(source: str | Path | Sequence[str | Path], *, workers: int | None = None,
                backend: str = "auto", modality: str | None = "CT", on_gap: str = "error",
                on_tilt: str = "error") -> Volume:
    """Read one study's CT series into a :class:`Volume` (DICOM stacking order, see module doc).

    Args:
        source: a study folder (searched recursively) or a list of DICOM files.
        workers: processes decoding in parallel (default: the cores available; 1 = in this process).
        backend: ``"auto"``, ``"pydicom"``, ``"gdcm"`` or ``"dicomsdl"`` (see :mod:`cspine.io.dicom_decode`).
        modality: the modality to read (``None``: any; HU then means the rescaled stored values).
        on_gap: ``"error"`` or ``"resample"`` (onto the finest step acquired) when slices are missing
            or unevenly spaced.
        on_tilt: ``"error"`` or ``"resample"`` (onto an enlarged orthogonal grid) for a gantry-tilted
            (sheared) stack.

    Returns:
        A volume with int16 HU ``(Z, Y, X)``, slices ascending along the slice normal, an LPS affine,
        one :class:`SliceInfo` per slice, and ``meta`` holding StudyInstanceUID, SeriesInstanceUID,
        SeriesNumber, Modality, SeriesDescription, ``series_choice``, ``series_found``,
        ``slice_thickness_tag``, ``spacing_from_positions``, ``transfer_syntaxes``, ``backend``,
        ``gantry_tilt_degrees``, ``tilt_padding_pixels`` (rows and columns added before/after the stored
        ones by tilt correction) and ``warnings`` -- never patient identifiers.

    Raises:
        DicomError: nothing readable, no series of the modality, or a slice that fails to decode.
        UnsupportedTransferSyntaxError: a chosen slice's syntax cannot be decoded (names file + syntax).
        SeriesGeometryError: the chosen series is not a volume (too few slices, different images at
            one position, or a gap / tilt with the default ``"error"`` modes).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown DICOM backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    where = str(source) if isinstance(source, (str, Path)) else f"{len(source)} given files"
    files = list_files(source)
    workers = default_workers() if workers is None else max(1, int(workers))
    use_pool = workers > 1 and len(files) >= PARALLEL_MIN_FILES
    pool = _pool(min(workers, len(files))) if use_pool else None
    try:
        chunk = max(1, min(16, len(files) // (4 * workers)))
        scanned = scan(files, functools.partial(pool.imap, chunksize=chunk) if pool is not None else map)
        warns = _summarise_skipped(scanned.skipped)
        if not scanned.headers:
            raise DicomError("no readable DICOM image in it (" + "; ".join(warns) + ")", where)
        groups = split_series(scanned.headers)
        group, why, choice_warns = choose_series(groups, modality, where)
        warns += choice_warns
        log.info("%s: %s", where, why)
        plan: StackPlan = plan_stack(group.headers, on_gap=on_gap, on_tilt=on_tilt, same_pixels=_same_pixels)
        warns += plan.warnings
        syntaxes = sorted({h.syntax for h in plan.headers})
        for syntax in syntaxes:
            check_decodable(syntax, next(h.path for h in plan.headers if h.syntax == syntax))
        parser_warns = sorted({w for h in plan.headers for w in h.warnings})
        if parser_warns:
            warns.append("non-conformant header values (read anyway): " + "; ".join(parser_warns[:5]))
        first = plan.headers[0]
        shape = (len(plan.headers), first.rows, first.cols)
        if pool is not None and len(plan.headers) >= PARALLEL_MIN_FILES:
            hu, decode_warns = _decode_parallel(pool, plan.headers, shape, backend, workers)
        else:
            hu, decode_warns = _decode_serial(plan.headers, shape, backend)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    warns += sorted(set(decode_warns))[:5]
    hu = apply_plan(hu, plan, HU_MIN)
    offsets = ([None] * len(plan.headers) if plan.shifts is None else
               [(round(float(r), 4), round(float(c), 4)) for r, c in plan.shifts])
    infos = [SliceInfo(h.path, h.instance_number, h.sop_instance_uid or None, h.frame, off)
             for h, off in zip(plan.headers, offsets, strict=True)]
    if plan.blend is not None:
        infos = [infos[p[0][0]] if len(p) == 1 else SliceInfo() for p in plan.blend]
    for w in warns:
        log.warning("%s: %s", where, w)
    meta: dict[str, Any] = {
        "StudyInstanceUID": first.study_uid or None,
        "SeriesInstanceUID": first.series_uid or None,
        "SeriesNumber": first.series_number,
        "SeriesDescription": first.series_description,
        "Modality": first.modality,
        "FrameOfReferenceUID": first.frame_of_reference or None,
        "source": where,
        "series_choice": why,
        "series_found": [g.summary() | {"chosen": g is group} for g in groups],
        "slice_thickness_tag": first.slice_thickness,
        "spacing_from_positions": plan.step,
        "gantry_tilt_degrees": plan.tilt_degrees,
        "tilt_padding_pixels": [list(p) for p in plan.padding],
        "transfer_syntaxes": [f"{s} ({syntax_name(s)})" for s in syntaxes],
        "backend": sorted({resolve_backend(backend, s) for s in syntaxes}),
        "n_files": len(files),
        "n_files_skipped": sum(len(v) for v in scanned.skipped.values()),
        "warnings": warns,
    }
    return Volume(hu, plan.affine, tuple(infos), meta)
