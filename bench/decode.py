"""Benchmark: read a 300-slice 512x512 JPEG-lossless CT study into an HU volume.

Readers compared in one run, on the same synthetic study (JPEG Lossless SV1, 1.2.840.10008.1.2.4.70,
encoded with GDCM):

* ``cspine`` -- :func:`cspine.io.dicom.read_series` with ``backend="auto"`` and each explicit backend;
* a plain loop of ``pydicom.dcmread(f).pixel_array`` (+ rescale to HU);
* SimpleITK's ``ImageSeriesReader`` (GDCM inside);
* dicomsdl (C++), one file after another.

Each reader runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``, which counts
what C decoders allocate) can be compared with the size of the int16 volume. Throughput is the median
of ``--repeats`` runs inside that subprocess. Every reader's HU volume is checked to be identical.

Usage::

    .venv/bin/python bench/decode.py [--slices 300] [--repeats 3] [--workers N] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def phantom_slice(k: int, n: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """A CT-like axial slice in HU: air, an elliptic body with fat/muscle texture, lungs in the
    upper part of the stack, a vertebral body and cord, and scanner noise (so it compresses like CT)."""
    rng = np.random.default_rng(seed + k)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size * 0.5, size * 0.5
    t = k / max(n - 1, 1)
    hu = np.full((size, size), -1000.0, np.float32)
    body = ((yy - cy) / (size * 0.33)) ** 2 + ((xx - cx) / (size * 0.42)) ** 2 < 1.0
    hu[body] = 40.0
    fat = body & (((yy - cy) / (size * 0.30)) ** 2 + ((xx - cx) / (size * 0.39)) ** 2 >= 1.0)
    hu[fat] = -90.0
    if t < 0.6:  # lungs in the cranial part of the stack
        for sx in (-1, 1):
            lung = ((yy - cy + size * 0.03) / (size * 0.2)) ** 2 + ((xx - cx - sx * size * 0.2) /
                                                                    (size * 0.13)) ** 2 < 1.0
            hu[lung] = -850.0
    vy, vx = cy + size * 0.16, cx
    r = np.hypot(yy - vy, xx - vx)
    hu[r < size * 0.06] = 300.0 + 40.0 * np.sin(k / 7.0)  # cancellous bone
    hu[(r >= size * 0.06) & (r < size * 0.07)] = 1100.0  # cortex
    hu[np.hypot(yy - (vy + size * 0.1), xx - vx) < size * 0.02] = 30.0  # cord
    hu += rng.normal(0.0, 18.0, hu.shape).astype(np.float32)
    fov = np.hypot(yy - cy, xx - cx) < size * 0.5
    hu[~fov] = -2000.0  # outside the reconstruction circle, as GE/Siemens store it
    return np.clip(np.rint(hu), -2048, 3071).astype(np.int16)


def write_study(folder: Path, n: int = 300, size: int = 512) -> list[Path]:
    """Write ``n`` JPEG-lossless CT slices (1 mm apart, InstanceNumber cranial -> caudal) to ``folder``."""
    from _common import write_jpeg_lossless_series

    return write_jpeg_lossless_series(folder, (phantom_slice(k, n, size) for k in range(n)),
                                      (1.0, 0.488281, 0.488281))


# --- readers (each runs inside its own subprocess) ----------------------------------------------------
def _clip_hu(arr: np.ndarray) -> np.ndarray:
    from cspine.labels import HU_MAX, HU_MIN

    return np.clip(arr, HU_MIN, HU_MAX).astype(np.int16)


def read_plain_pydicom(files: list[str]) -> np.ndarray:
    import pydicom

    slices = []
    for f in files:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append((float(ds.ImagePositionPatient[2]), hu))
    slices.sort(key=lambda s: s[0])
    return _clip_hu(np.stack([s[1] for s in slices]))


def read_simpleitk(folder: str) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    return _clip_hu(sitk.GetArrayFromImage(reader.Execute()))  # sorted along the normal by GDCM


def read_dicomsdl_loop(files: list[str]) -> np.ndarray:
    import dicomsdl

    first = dicomsdl.open(files[0])
    out = np.empty((len(files), first.Rows, first.Columns), np.int16)
    z = np.empty(len(files))
    for k, f in enumerate(files):
        ds = dicomsdl.open(f)
        z[k] = ds.ImagePositionPatient[2]
        out[k] = _clip_hu(ds.pixelData(storedvalue=True).astype(np.int32) * int(ds.RescaleSlope)
                          + int(ds.RescaleIntercept))
    return out[np.argsort(z)]


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_reader(name: str, folder: str, repeats: int, workers: int) -> dict[str, object]:
    """Time one reader ``repeats`` times (after one warm-up run) and report memory and a HU checksum."""
    import hashlib

    files = sorted(str(p) for p in Path(folder).glob("*.dcm"))
    if name.startswith("cspine"):
        from cspine.io.dicom import read_series

        backend = name.split(":")[1]
        w = int(name.split(":")[2]) if name.count(":") == 2 else workers
        fn = lambda: read_series(folder, workers=w, backend=backend).hu  # noqa: E731
    elif name == "pydicom-loop":
        fn = lambda: read_plain_pydicom(files)  # noqa: E731
    elif name == "simpleitk":
        fn = lambda: read_simpleitk(folder)  # noqa: E731
    elif name == "dicomsdl-loop":
        fn = lambda: read_dicomsdl_loop(files)  # noqa: E731
    else:
        raise SystemExit(f"unknown reader {name}")
    base = _rss_mib()
    times = []
    digest = ""
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        hu = fn()
        dt = time.perf_counter() - t0
        if i:
            times.append(dt)
        # hash the buffer itself: .tobytes() would add a second copy to the peak being measured
        digest = hashlib.sha256(np.ascontiguousarray(hu).data).hexdigest()[:16]
        shape = list(hu.shape)
        del hu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"reader": name, "times": times, "median_s": statistics.median(times), "shape": shape,
            "sha": digest, "base_mib": base, "peak_mib": peak, "child_peak_mib": child}


READERS = ["cspine:auto", "cspine:auto:1", "cspine:pydicom", "cspine:gdcm", "cspine:dicomsdl",
           "pydicom-loop", "simpleitk", "dicomsdl-loop"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="cspine workers (default: all cores)")
    ap.add_argument("--readers", default=",".join(READERS))
    ap.add_argument("--no-append", action="store_true",
                    help="print only; do not append to docs/BENCHMARKS.md")
    ap.add_argument("--_child", nargs=2, metavar=("READER", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    if args._child:
        print(json.dumps(run_reader(args._child[0], args._child[1], args.repeats, workers)))
        return
    from _common import markdown_table, publish

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cspine-bench-") as tmp:
        t0 = time.perf_counter()
        write_study(Path(tmp), args.slices)
        print(f"wrote {args.slices} JPEG-lossless slices in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        vol_mib = args.slices * 512 * 512 * 2 / 2**20
        results = []
        for name in args.readers.split(","):
            cmd = [sys.executable, __file__, "--_child", name, tmp, "--repeats", str(args.repeats),
                   "--workers", str(workers)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                print(f"{name} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(res)
            print(f"{name}: {args.slices / res['median_s']:.0f} slices/s", file=sys.stderr)
    ref = next((r["sha"] for r in results if r["reader"] == "cspine:pydicom"), results[0]["sha"])
    plain = next((r for r in results if r["reader"] == "pydicom-loop"), None)
    rows = []
    for r in results:
        speed = args.slices / r["median_s"]
        rows.append([
            r["reader"], f"{speed:.0f}", " / ".join(f"{t:.2f}" for t in r["times"]),
            f"{speed * plain['median_s'] / args.slices:.2f}x" if plain else "-",
            f"{(r['peak_mib'] - r['base_mib']) / vol_mib:.2f}",
            f"{max(r['child_peak_mib'] - r['base_mib'], 0) / vol_mib:.2f}" if r["child_peak_mib"] else "-",
            "yes" if r["sha"] == ref else f"NO ({r['sha']})",
        ])
    table = markdown_table(["reader", "slices/s (median)", "runs (s)", "vs pydicom loop",
                            "peak RSS increase / volume", "worker peak / volume", "HU identical"], rows)
    print(table)
    notes = (
        f"Synthetic: a {args.slices}-slice 512x512 CT-like phantom (bench/decode.py), JPEG Lossless SV1 "
        f"(1.2.840.10008.1.2.4.70) encoded with GDCM; volume = {vol_mib:.0f} MiB int16. Median of "
        f"{args.repeats} runs after one warm-up, each reader in its own subprocess; `cspine:<backend>` uses "
        f"{workers} worker processes (`cspine:auto:1` one). 'peak RSS increase' = ru_maxrss minus RSS after "
        "imports; cspine's workers write into one shared mapping, which the worker column also counts "
        "(shared pages appear in both). The machine was shared with other jobs during the run (1-minute "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{len(os.sched_getaffinity(0))} cores), so absolute numbers are noisy and ratios matter more.")
    publish("DICOM decode: 300-slice JPEG-lossless study", table, notes, not args.no_append)


if __name__ == "__main__":
    main()
