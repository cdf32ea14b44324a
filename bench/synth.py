"""Benchmark: seconds to generate one synthetic 256x256x200 CT study on one core, one radiograph,
and to write one study as DICOM in each encoding. Target: at most 3 s per study.

Usage: ``python bench/synth.py [--repeats 5] [--no-append]``. The process pins itself to one core.
Wall and CPU seconds are both reported: on a shared machine the CPU time is the steadier number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, publish  # noqa: E402


def _time(fn, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """Median wall and CPU seconds of ``fn()`` (one warm-up run first)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-append", action="store_true", help="Print only; do not touch docs/BENCHMARKS.md.")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from cspine.synth.ct_writer import SeriesOptions, write_ct_series
    from cspine.synth.phantom import make_phantom
    from cspine.synth.xray import render_radiograph

    rows = []
    seeds = iter(range(10_000))
    for label, kwargs in (
        ("CT study 256x256x200, normal", {"fracture": False}),
        ("CT study 256x256x200, fractured", {"fracture": True}),
        ("CT study 128x128x100", {"size": 128}),
    ):
        size = kwargs.pop("size", 256)
        wall, cpu = _time(lambda kw=kwargs, s=size: make_phantom(next(seeds), size=s, **kw), args.repeats)
        rows.append([label, f"{wall:.2f}", f"{cpu:.2f}", "<= 3 s" if size == 256 else ""])
    wall, cpu = _time(lambda: render_radiograph(next(seeds), "fracture"), args.repeats)
    rows.append(["lateral radiograph (DRR), 300-600 px", f"{wall:.2f}", f"{cpu:.2f}", ""])
    study = make_phantom(1, size=256, fracture=True)
    with tempfile.TemporaryDirectory() as tmp:
        for enc in ("explicit", "jpeg_lossless", "jpeg2000"):
            n = iter(range(1000))
            wall, cpu = _time(
                lambda e=enc, it=n: write_ct_series(study, Path(tmp) / f"{e}{next(it)}", SeriesOptions(e)),
                max(1, args.repeats // 2),
            )
            rows.append([f"write 200 slices as DICOM, {enc} (verified)", f"{wall:.2f}", f"{cpu:.2f}", ""])
    table = markdown_table(["task (synthetic data, 1 core)", "median wall s", "median CPU s", "target"], rows)
    notes = (f"Median of {args.repeats} runs after one warm-up, process pinned to one core; a new seed "
             "each run. A fractured study renders the fractured region a second time (to compute the exact "
             "fracture mask). DICOM writing decodes every file again to verify it. 1-minute load average "
             f"during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: CPU "
             "seconds are the steadier number).")
    publish("Synthetic data generation (bench/synth.py)", table, notes, not args.no_append)


if __name__ == "__main__":
    main()
