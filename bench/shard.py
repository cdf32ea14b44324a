"""Sharded ``cspine ct prepare`` and ``cspine ct predict`` throughput: studies per hour with 1 and 2 workers.

Writes ``--studies`` small phantom test studies (``cspine synth ct``), then for each worker count runs that
many ``--part K --parts N`` processes at once over one shared folder (each on one thread), timing the wall
clock until the last one finishes; predict is followed by ``--merge``. The model is ``--model RUN`` or the
tiny two-stage run of the pipeline tests (formats, not accuracy). Phantom numbers are synthetic.

    .venv/bin/python bench/shard.py --studies 100 --size 128
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import markdown_table, publish  # noqa: E402

CSPINE = str(Path(sys.executable).with_name("cspine"))


def _parallel(commands: list[list[str]]) -> float:
    """Run the commands at once (one thread each); wall seconds until the last ends."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    for p, c in zip(procs, commands, strict=True):
        _, err = p.communicate()
        if p.returncode not in (0,):
            raise SystemExit(f"{' '.join(c)} failed ({p.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--size", type=int, default=128, help="in-plane matrix of the phantom studies")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", type=Path, default=None, help="a RUN folder (default: the tests' tiny run)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cspine-shard-bench-") as tmp:
        base = Path(tmp)
        root = base / "phantom"
        t0 = time.perf_counter()
        subprocess.run([CSPINE, "synth", "ct", "--out", str(root), "--studies", "1", "--test-studies",
                        str(args.studies), "--size", str(args.size), "--workers", "2"], check=True,
                       stdout=subprocess.DEVNULL)
        synth_s = time.perf_counter() - t0
        model = args.model
        if model is None:
            from _tiny_ct_run import make_run

            model = base / "run"
            make_run(model)
        rows = []
        for n in args.workers:
            cache, out = base / f"cache{n}", base / f"pred{n}"
            prep = _parallel([[CSPINE, "ct", "prepare", "--data", str(root), "--cache", str(cache), "--split",
                               "test", "--part", str(k), "--parts", str(n)] for k in range(n)])
            pred_cmd = [CSPINE, "ct", "predict", str(root), "--model", str(model), "--out", str(out),
                        "--device", "cpu"]
            pred = _parallel([[*pred_cmd, "--part", str(k), "--parts", str(n)] for k in range(n)])
            merge = _parallel([[*pred_cmd, "--merge"]])
            import pandas as pd

            pred_csv = pd.read_csv(out / "predictions.csv")
            if len(pred_csv) != args.studies or (pred_csv["status"] == "failed").any():
                raise SystemExit(f"{n} workers: predictions.csv has {len(pred_csv)} rows for {args.studies} "
                                 f"studies, statuses {pred_csv['status'].value_counts().to_dict()}")
            rows.append([n, f"{prep:.1f}", f"{3600 * args.studies / prep:,.0f}", f"{pred:.1f}",
                         f"{3600 * args.studies / pred:,.0f}", f"{merge:.1f}"])
    table = markdown_table(["workers", "prepare s", "prepare studies/h", "predict s", "predict studies/h",
                            "merge s"], rows)
    which = "the tests' tiny two-stage run" if args.model is None else str(args.model)
    notes = (f"{args.studies} phantom test studies (synthetic), {args.size}x{args.size} in-plane, written in "
             f"{synth_s:.0f} s; model: {which}; "
             "each worker a `--part K --parts N` process on one thread over one shared folder, wall clock "
             "from start to the last worker's end (process start-up included); `--merge` writes the CSVs.")
    publish("Sharded prepare / predict (bench/shard.py)", table, notes, append=not args.no_append)


if __name__ == "__main__":
    main()
