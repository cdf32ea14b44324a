"""Helpers shared by the benchmark scripts: a line describing the machine, and appending results
to docs/BENCHMARKS.md (append-only, so every run's numbers are kept with their machine and date)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """E.g. ``Linux x86_64, AMD EPYC 7B13, 2 cores, 23.4 GiB, Python 3.11.7, torch 2.14.1, no GPU``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")))
        mem = f"{mem_kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        mem = "? GiB"
    parts = [f"{platform.system()} {platform.machine()}", cpu_model(), f"{cores} cores", mem,
             f"Python {platform.python_version()}"]
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        parts += [f"torch {torch.__version__}", gpu]
    except ImportError:
        pass
    return ", ".join(parts)


def append_benchmark(title: str, table_md: str, notes: str = "") -> Path:
    """Append a dated section with the machine line, a markdown table and notes to docs/BENCHMARKS.md."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text(
            "# Benchmarks\n\nAppended by the scripts in `bench/`; each section names its machine and date.\n"
            "Numbers measured on the project's phantom data are marked *synthetic*.\n")
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}\n\n*{stamp}* — {machine_line()}\n\n{table_md.strip()}\n"
    if notes:
        section += f"\n{notes.strip()}\n"
    with open(BENCHMARKS_MD, "a", encoding="utf-8") as f:
        f.write(section)
    return BENCHMARKS_MD


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs, and all runs."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def publish(title: str, table_md: str, notes: str = "", append: bool = True) -> None:
    """Print the machine line, the table and the notes, and (unless ``append`` is false, i.e. the script's
    ``--no-append``) append them as a dated section to docs/BENCHMARKS.md."""
    print(machine_line())
    print(table_md)
    if notes:
        print(notes)
    if append:
        print(f"appended to {append_benchmark(title, table_md, notes)}")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_jpeg_lossless_series(folder: Path, slices: Iterable[np.ndarray],
                               spacing: tuple[float, float, float],
                               study_uid: str | None = None) -> list[Path]:
    """Write HU slices (slice 0 cranial) as JPEG Lossless SV1 CT files ``<N>.dcm``, the way the decode and
    pipeline benchmarks have always built their studies: signed 16-bit, intercept -1024, encoded by GDCM."""
    import gdcm
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = study_uid or generate_uid(), generate_uid(), generate_uid()
    dz, dy, dx = spacing
    paths = []
    for k, hu in enumerate(slices):
        ny, nx = hu.shape
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 2, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-(nx - 1) * dx / 2, -(ny - 1) * dy / 2, -k * dz]
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu.astype(np.int32) + 1024).astype(np.int16).tobytes()
        raw = folder / f"raw_{k}.dcm"
        ds.save_as(raw, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(raw))
        if not reader.Read():
            raise RuntimeError(f"GDCM cannot read {raw}")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("GDCM could not encode JPEG lossless")
        out = folder / f"{k + 1}.dcm"
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(out))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError(f"GDCM cannot write {out}")
        raw.unlink()
        paths.append(out)
    return paths
