"""Benchmark: seconds to write one 100-slice 128x128 phantom study as DICOM, per encoding, with the
pre-encoded header writer (``write_ct_series``) against the reference writer (one pydicom ``save_as`` per
slice, JPEG lossless through GDCM and a temporary raw file: ``write_ct_series_reference``).

Usage: ``python bench/writer.py [--repeats 7] [--threads 1] [--no-append]``. Old and new run back to
back, alternating, in one process pinned to one core, with the verification settings of
``cspine synth``/``cspine demo`` (every 8th slice decoded again); medians of ``--repeats`` runs after a
warm-up. Both writers produce byte-identical files (checked here on the first study, and by
tests/synth/test_synth_writer.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import markdown_table, publish  # noqa: E402

# The demo's mix of encodings (random_options): the weights of the per-study average.
MIX = {"explicit": 0.27, "jpeg_lossless": 0.33, "jpeg2000": 0.30, "implicit": 0.05, "rle": 0.05}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (the writers use one).")
    ap.add_argument("--verify-every", type=int, default=8, help="As cspine synth/demo (0 = no verification).")
    ap.add_argument("--no-append", action="store_true", help="Print only; do not touch docs/BENCHMARKS.md.")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    if cores:
        os.sched_setaffinity(0, {sorted(cores)[0]})

    from cspine.synth.ct_writer import SeriesOptions, write_ct_series, write_ct_series_reference
    from cspine.synth.phantom import make_phantom

    study = make_phantom(1, size=128).volume()  # (100, 128, 128)
    verify = args.verify_every > 0
    writers = {"old": write_ct_series_reference, "new": write_ct_series}
    rows, means = [], {"old": 0.0, "new": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for enc in MIX:
            opts = SeriesOptions(enc, signed=enc in ("implicit", "rle"))
            times: dict[str, list[float]] = {"old": [], "new": []}
            for rep in range(args.repeats + 1):  # run 0 is the warm-up
                order = ("old", "new") if rep % 2 == 0 else ("new", "old")
                for name in order:
                    folder = Path(tmp) / f"{enc}-{name}-{rep}"
                    t0 = time.perf_counter()
                    writers[name](study, folder, opts, uid_seed=enc, verify=verify,
                                  verify_every=max(1, args.verify_every))
                    if rep:
                        times[name].append(time.perf_counter() - t0)
                if rep == 0:  # same bytes from both writers
                    old, new = (Path(tmp) / f"{enc}-{n}-0" for n in ("old", "new"))
                    for f in sorted(old.glob("*.dcm")):
                        if f.read_bytes() != (new / f.name).read_bytes():
                            raise SystemExit(f"{enc}: {f.name} differs between the writers")
                for name in order:
                    shutil.rmtree(Path(tmp) / f"{enc}-{name}-{rep}")
            med = {k: statistics.median(v) for k, v in times.items()}
            for k in means:
                means[k] += MIX[enc] * med[k]
            rows.append([enc, f"{med['old']:.3f}", f"{med['new']:.3f}", f"{med['old'] / med['new']:.2f}x"])
    if cores:  # the machine line reports the machine's cores, not the one this run was pinned to
        os.sched_setaffinity(0, cores)
    rows.append(["demo mix (weighted by random_options)", f"{means['old']:.3f}", f"{means['new']:.3f}",
                 f"{means['old'] / means['new']:.2f}x"])
    table = markdown_table(["encoding (synthetic study, 100 x 128x128)", "old s/study (median)",
                            "new s/study (median)", "speed-up"], rows)
    notes = (f"`python bench/writer.py --repeats {args.repeats} --threads {args.threads}`: one *synthetic* "
             "100-slice 128x128 study written per run, old (`write_ct_series_reference`: pydicom `save_as` "
             "per slice, JPEG lossless via GDCM and a temporary raw file) and new (`write_ct_series`: "
             "constant elements encoded once per series, GDCM JPEG lossless in memory) alternating back to "
             f"back in one process pinned to one core; every {args.verify_every}th slice decoded again as in "
             f"the demo; medians of {args.repeats} runs after a warm-up; the files are byte-identical. "
             f"Shared 2-core machine (1-minute load average {os.getloadavg()[0]:.1f}): timings are noisy.")
    publish("Phantom CT writer: pre-encoded header vs pydicom save_as (bench/writer.py)", table, notes,
            not args.no_append)


if __name__ == "__main__":
    main()
