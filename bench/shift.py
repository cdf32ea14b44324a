"""Benchmark: how a trained model holds up when the scanner changes (all on *synthetic* phantom studies).

A model is trained on one set of studies; hospitals send others: a wider reconstruction field, a finer
matrix, thicker slices, a softer kernel, more noise and another HU calibration. This script rewrites the
held-out studies of an RSNA-layout phantom root (``test_images/``, ``test_labels.csv``) once per such
*shift* (same anatomy, same labels, same study UIDs; each shift a DICOM series written by cspine's
writer), runs ``cspine ct predict`` and ``cspine ct evaluate`` on every shifted copy with each given model,
and prints patient AUC, pooled vertebra AUC and RSNA loss per model and shift. A model that only works on
the scanner it was trained on loses its AUC on the shifted copies.

Shifts (each applied to the canonical HU volume):

* ``original``: the studies as generated;
* ``wide-field``: the matrix padded with air to 1.6x its size at the same pixel size (a 1.6x wider
  reconstruction field; the neck covers a smaller part of the slice);
* ``fine-matrix``: the same field on a 2x finer matrix (bilinear);
* ``thick-slices``: pairs of slices averaged (twice the slice spacing and thickness);
* ``soft-kernel``: an in-plane Gaussian blur of 0.8 pixel;
* ``noise-offset``: Gaussian noise of 40 HU and a +40 HU calibration offset.

Usage::

    .venv/bin/python bench/shift.py --data cspine-demo/data --model cspine-demo/run [--model OTHER_RUN ...]
        [--shifts original,wide-field,...] [--n 60] [--workdir DIR] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_benchmark, machine_line  # noqa: E402

CSPINE = [sys.executable, "-c",
          "import sys; from cspine.cli.main import main; sys.argv[0] = 'cspine'; main()"]


def _wide_field(hu: np.ndarray, sp: tuple[float, float, float]) -> tuple[np.ndarray, tuple]:
    n = hu.shape[1]
    pad = int(round(0.3 * n))
    return np.pad(hu, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1000), sp


def _fine_matrix(hu: np.ndarray, sp: tuple[float, float, float]) -> tuple[np.ndarray, tuple]:
    from scipy.ndimage import zoom

    return zoom(hu.astype(np.float32), (1, 2, 2), order=1), (sp[0], sp[1] / 2, sp[2] / 2)


def _thick_slices(hu: np.ndarray, sp: tuple[float, float, float]) -> tuple[np.ndarray, tuple]:
    n = hu.shape[0] // 2 * 2
    return hu[:n].astype(np.float32).reshape(n // 2, 2, *hu.shape[1:]).mean(1), (sp[0] * 2, sp[1], sp[2])


def _soft_kernel(hu: np.ndarray, sp: tuple[float, float, float]) -> tuple[np.ndarray, tuple]:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(hu.astype(np.float32), (0, 0.8, 0.8)), sp


def _noise_offset(hu: np.ndarray, sp: tuple[float, float, float], seed: int = 0) -> tuple[np.ndarray, tuple]:
    rng = np.random.default_rng(seed)
    return hu.astype(np.float32) + 40.0 + rng.normal(0, 40.0, hu.shape).astype(np.float32), sp


SHIFTS: dict[str, Callable | None] = {
    "original": None,
    "wide-field": _wide_field,
    "fine-matrix": _fine_matrix,
    "thick-slices": _thick_slices,
    "soft-kernel": _soft_kernel,
    "noise-offset": _noise_offset,
}


def shifted_root(data: Path, shift: str, work: Path, uids: list[str]) -> Path:
    """An RSNA-layout root whose test_images are ``data``'s, rewritten under ``shift`` (reused if done)."""
    if SHIFTS[shift] is None:
        return data
    from cspine.io.study import load_study
    from cspine.io.volume import volume_from_arrays
    from cspine.synth.ct_writer import write_ct_series

    root = work / "data" / shift
    done = root / ".done"
    if done.exists():
        return root
    _write_tables(data, root, uids)
    for uid in uids:
        vol = load_study(data / "test_images" / uid)
        hu, spacing = SHIFTS[shift](np.asarray(vol.hu), tuple(float(s) for s in vol.spacing))
        hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
        out = root / "test_images" / uid
        if out.exists():
            shutil.rmtree(out)
        write_ct_series(volume_from_arrays(hu, spacing), out, study_uid=uid, uid_seed=f"{shift}/{uid}",
                        verify_every=50)
    done.touch()
    return root


def run_model(model: Path, root: Path, out: Path) -> dict:
    """Predict and evaluate ``root``'s test studies with ``model``; the evaluation's metrics."""
    pred, ev = out / "predictions", out / "evaluation"
    t = time.perf_counter()
    if not (pred / "predictions.csv").exists():
        subprocess.run([*CSPINE, "ct", "predict", str(root), "--model", str(model), "--out", str(pred),
                        "--device", "cpu"], check=False, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    if not (ev / "metrics.json").exists():
        subprocess.run([*CSPINE, "ct", "evaluate", "--pred", str(pred / "predictions.csv"), "--labels",
                        str(root / "test_labels.csv"), "--data", str(root), "--out", str(ev)],
                       check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((ev / "metrics.json").read_text())
    statuses = {}
    import pandas as pd

    table = pd.read_csv(pred / "predictions.csv")
    if "status" in table:
        statuses = table["status"].value_counts().to_dict()
    return {"patient_auc": metrics["patient_auc"], "vertebra_auc_pooled": metrics["vertebra_auc_pooled"],
            "rsna_loss": metrics["rsna_weighted_log_loss"],
            "prevalence_loss": metrics["prevalence_baseline_log_loss"],
            "complete": int(statuses.get("complete", 0)), "n": int(metrics["n_studies"]), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="RSNA-layout phantom root with test_labels.csv")
    ap.add_argument("--model", type=Path, action="append", required=True, help="trained RUN folder (repeat)")
    ap.add_argument("--label", action="append", default=None, help="a name per --model for the table")
    ap.add_argument("--shifts", default=",".join(SHIFTS))
    ap.add_argument("--n", type=int, default=0, help="first N test studies only (0: all)")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench_shift"))
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    import pandas as pd

    labels = pd.read_csv(args.data / "test_labels.csv")
    uids = sorted(labels["StudyInstanceUID"].astype(str))[: args.n or None]
    shifts = [s for s in args.shifts.split(",") if s]
    names = args.label or [m.name if m.name != "run" else m.parent.name for m in args.model]
    rows = []
    for shift in shifts:
        root = shifted_root(args.data, shift, args.workdir, uids)
        if args.n and SHIFTS[shift] is None:  # the original root restricted to the first N studies
            root = shifted_root_subset(args.data, args.workdir, uids)
        for name, model in zip(names, args.model, strict=True):
            r = run_model(model, root, args.workdir / "runs" / name / shift)
            rows.append({"model": name, "shift": shift, **r})
            print(f"{name:>14} {shift:>13}: patient AUC {r['patient_auc']:.3f}, pooled vertebra AUC "
                  f"{r['vertebra_auc_pooled']:.3f}, RSNA loss {r['rsna_loss']:.3f}, "
                  f"complete {r['complete']}/{r['n']}",
                  flush=True)
    header = ("| model | shift | patient AUC | pooled vertebra AUC | RSNA loss (prevalence) "
              "| studies complete |\n"
              "|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {r['model']} | {r['shift']} | {r['patient_auc']:.3f} | {r['vertebra_auc_pooled']:.3f} | "
        f"{r['rsna_loss']:.3f} ({r['prevalence_loss']:.3f}) | {r['complete']}/{r['n']} |\n" for r in rows)
    print(table)
    if not args.no_append:
        append_benchmark("Scanner shifts: one model on rewritten held-out studies (synthetic)", table,
                         f"`bench/shift.py`, {len(uids)} held-out phantom studies per shift; "
                         f"{machine_line()}")


def _write_tables(data: Path, root: Path, uids: list[str]) -> None:
    """train.csv (the prevalence baseline) as is; test.csv and test_labels.csv restricted to ``uids``."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(data / "train.csv", root / "train.csv")
    for name in ("test.csv", "test_labels.csv"):
        if (data / name).exists():
            table = pd.read_csv(data / name)
            table[table["StudyInstanceUID"].astype(str).isin(uids)].to_csv(root / name, index=False)


def shifted_root_subset(data: Path, work: Path, uids: list[str]) -> Path:
    """``data``'s first N test studies as a root of their own (symlinked studies, restricted tables)."""
    root = work / "data" / f"original-{len(uids)}"
    if (root / ".done").exists():
        return root
    (root / "test_images").mkdir(parents=True, exist_ok=True)
    for uid in uids:
        link = root / "test_images" / uid
        if not link.exists():
            link.symlink_to((data / "test_images" / uid).resolve())
    _write_tables(data, root, uids)
    (root / ".done").touch()
    return root


if __name__ == "__main__":
    main()
