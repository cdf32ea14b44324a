"""Benchmark: the whole CT pipeline, seconds per study per stage, and peak memory.

What is measured (all on *synthetic* phantom studies, CPU unless a GPU is present):

* seconds per stage -- decode (DICOM JPEG lossless -> canonical HU volume), seg (stage-1 U-Net,
  post-processing, labels back on the full grid), crops (per-vertebra 2.5D stacks), cls (stage-2
  CNN + BiGRU + attention, calibration) -- for a 512x512x300 JPEG-lossless study, through
  :func:`cspine.ct.pipeline.predict` exactly as ``cspine ct predict`` runs it; the median of
  ``--repeats`` runs after one warm-up run (the OS file cache is warm from the second run on);
* peak resident memory of a fresh subprocess that loads the model and predicts one study, for a
  600-slice 512x512 study (the 300-slice phantom with each slice written twice at half the spacing:
  same anatomy, twice the slices). The peak is ``VmHWM`` of ``/proc/self/status``: Linux carries
  ``ru_maxrss`` over ``fork``/``exec`` from the parent (whose peak after timing 512x512 studies would
  be reported as the child's), while ``VmHWM`` belongs to the child's own address space;
* CPU seconds (user + system, all threads) per study next to the wall seconds: on a shared machine
  wall time depends on the load, CPU time much less (wall >= CPU / cores on an idle machine).

Models: ``--model RUN`` uses a trained RUN folder; without it, random-weight models of the chosen
``--preset`` are built and saved into a temporary RUN folder (speed and memory do not depend on the
weights; the number of vertebrae stage 1 reports, and so the stage-2 work, does, and is printed).

Usage::

    .venv/bin/python bench/pipeline.py [--slices 300] [--mem-slices 600] [--repeats 3] [--preset paper|fast]
                                       [--model RUN] [--threads N] [--workdir DIR] [--no-append]

``--quality`` runs the product end to end through its CLI on a fresh phantom set and reports
*synthetic* quality: ``cspine synth ct`` (``--q-train`` training + ``--q-test`` held-out studies),
``cspine ct train --stage all --preset fast``, ``cspine ct predict`` on the held-out studies and
``cspine ct evaluate`` against their labels: patient AUC (95% CI), mean vertebra AUC, RSNA weighted log
loss and the prevalence baseline's. The one-stage baseline (the same CNN + GRU over the whole study) is
not implemented yet and is reported as missing::

    .venv/bin/python bench/pipeline.py --quality --q-train 200 --q-test 50 --q-size 256 [--q-epochs N]
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

STAGES = ("decode", "seg", "crops", "cls")
STUDY_UID = "1.2.826.0.1.3680043.8.498.999"


# --- data ---------------------------------------------------------------------------------------------
def write_jpeg_lossless_study(folder: Path, hu: np.ndarray, spacing: tuple[float, float, float],
                              repeat: int = 1) -> int:
    """Write a canonical HU volume (slice 0 cranial) as JPEG Lossless SV1 CT files ``<N>.dcm``.

    With ``repeat > 1`` each slice is written ``repeat`` times at ``spacing[0] / repeat`` apart (a
    taller study from the same anatomy). Returns the number of files.
    """
    from _common import write_jpeg_lossless_series

    slices = (hu[k // repeat] for k in range(hu.shape[0] * repeat))
    step = (spacing[0] / repeat, spacing[1], spacing[2])
    return len(write_jpeg_lossless_series(folder, slices, step, study_uid=STUDY_UID))


def make_study(workdir: Path, slices: int, size: int, seed: int = 0) -> tuple[np.ndarray, tuple, float]:
    """Render a fractured phantom study (canonical HU) and return it with its spacing and seconds."""
    from cspine.synth.phantom import make_phantom

    t0 = time.perf_counter()
    p = make_phantom(seed, size=size, n_slices=slices, fracture=True)
    return p.hu, tuple(float(s) for s in p.spacing), time.perf_counter() - t0


# --- models -------------------------------------------------------------------------------------------
def presets() -> dict[str, tuple[dict, dict]]:
    """(stage-1 config, stage-2 config) overrides per preset. ``paper``: the defaults of the model
    configs (EfficientNet-B0 U-Net at 256 px; tf_efficientnetv2_s, 24 slices of 128 px); ``fast``:
    the small CPU models used for the demo-sized runs."""
    return {
        "paper": ({}, {}),
        "fast": ({"backbone": "resnet18", "image_size": 128, "encoder_depth": 4,
                  "decoder_channels": (64, 32, 16, 8), "z_spacing": 3.0},
                 {"backbone": "resnet18", "n_slices": 16, "image_size": 64, "gru_hidden": 64,
                  "attn_dim": 32}),
    }


def build_run(run: Path, preset: str) -> None:
    """Random-weight models of ``preset`` saved as a RUN folder (seg + cls)."""
    import torch

    from cspine.checkpoint import save_model
    from cspine.labels import VERTEBRAE
    from cspine.models.unet2p5d import SegConfig, build_seg_model
    from cspine.models.vertebra_classifier import ClsConfig, build_classifier

    seg_kw, cls_kw = presets()[preset]
    torch.manual_seed(0)
    scfg = SegConfig(**seg_kw)
    save_model(run / "seg", build_seg_model(scfg), scfg, kind="seg")
    ccfg = ClsConfig(**cls_kw)
    save_model(run / "cls", build_classifier(ccfg), ccfg, kind="vertebra_classifier",
               extra={"absent_vertebra_prior": {v: 0.1 for v in VERTEBRAE}})


# --- measurements -------------------------------------------------------------------------------------
def time_stages(study: Path, run: Path, repeats: int, device: str | None) -> tuple[dict[str, float], dict]:
    """Median seconds per stage over ``repeats`` runs after a warm-up, and the last result's facts."""
    from cspine.ct.pipeline import CtModel, predict

    t0 = time.perf_counter()
    model = CtModel.load(run, device=device)
    load_s = time.perf_counter() - t0
    predict(study, model)  # warm-up: lazy imports, allocator, OS file cache
    runs, cpu = [], []
    for _ in range(repeats):
        c0 = _cpu_seconds()
        runs.append(predict(study, model))
        cpu.append(_cpu_seconds() - c0)
    med = {k: statistics.median(r.seconds[k] for r in runs) for k in (*STAGES, "total")}
    med["cpu"] = statistics.median(cpu)
    last = runs[-1]
    facts = {"load_s": load_s, "n_vertebrae": sum(1 for v in last.vertebrae.values() if v.get("present")),
             "totals": [round(r.seconds["total"], 2) for r in runs], "device": model.device}
    return med, facts


def peak_memory(study: Path, run: Path, device: str | None) -> dict:
    """Peak RSS of a fresh process that loads the model and predicts ``study`` once."""
    cmd = [sys.executable, __file__, "--_child-mem", str(study), "--model", str(run)]
    if device:
        cmd += ["--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss where /proc is absent, see the docstring)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child_mem(study: Path, run: Path, device: str | None) -> None:
    from cspine.ct.pipeline import CtModel, predict

    model = CtModel.load(run, device=device)
    base = _peak_rss_mib()
    r = predict(study, model)
    print(json.dumps({"peak_mib": _peak_rss_mib(), "after_model_load_mib": base, "seconds": r.seconds,
                      "shape": list(r.shape or ())}))


def _cli(*argv: str) -> float:
    """Run ``cspine ARGV...`` (the installed console script's module) and return its seconds."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", "from cspine.cli.main import main; main()", *argv]
    print("$ cspine " + " ".join(argv), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def quality(args: argparse.Namespace) -> None:
    """Synthetic quality of the trained two-stage system (see the module docstring)."""
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cspine-bench-quality-"))
    data, run, pred, ev = work / "data", work / "run", work / "pred", work / "eval"
    seconds = {}
    if not (data / "test_labels.csv").is_file():
        seconds["synth"] = _cli("synth", "ct", "--out", str(data), "--studies", str(args.q_train),
                                "--test-studies", str(args.q_test), "--size", str(args.q_size))
    train = ["ct", "train", "--data", str(data), "--out", str(run), "--stage", "all",
             "--preset", args.q_preset, "--resume"]
    if args.q_epochs:
        train += ["--epochs", str(args.q_epochs)]
    seconds["train"] = _cli(*train)
    seconds["predict"] = _cli("ct", "predict", str(data), "--model", str(run), "--out", str(pred))
    _cli("ct", "evaluate", "--pred", str(pred / "predictions.csv"), "--labels", str(data / "test_labels.csv"),
         "--out", str(ev), "--data", str(data))
    m = json.loads((ev / "metrics.json").read_text())
    ci = m.get("patient_auc_ci95") or [None, None]

    def f(v: object, d: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    from _common import append_benchmark, markdown_table

    header = ["system", "patient AUC (95% CI)", "mean vertebra AUC", "RSNA weighted log loss",
              "prevalence baseline loss"]
    table = markdown_table(header, [
        [f"two-stage ({args.q_preset} preset)", f"{f(m['patient_auc'])} ({f(ci[0])}-{f(ci[1])})",
         f(m["vertebra_auc_mean"]), f(m["rsna_weighted_log_loss"], 4),
         f(m["prevalence_baseline_log_loss"], 4)],
        ["one-stage baseline (CNN + GRU over the whole study)", "not implemented", "", "", ""]])
    spent = ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
    notes = (f"*Synthetic*: {args.q_train} training and {m['n_studies']} held-out phantom studies of "
             f"{args.q_size} px (`bench/pipeline.py --quality --q-train {args.q_train} "
             f"--q-test {args.q_test} --q-size {args.q_size}`). Seconds: {spent}.")
    print(table)
    print(notes)
    if not args.no_append:
        append_benchmark("CT pipeline: quality on a phantom set (synthetic)", table, notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--mem-slices", type=int, default=600, help="slices of the peak-memory study "
                    "(a multiple of --slices)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", choices=("paper", "fast"), default="paper")
    ap.add_argument("--model", type=Path, default=None, help="a trained RUN folder (default: random weights)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores available)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the studies here (reused if present)")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--quality", action="store_true", help="train + evaluate on a phantom set (see above)")
    ap.add_argument("--q-train", type=int, default=200)
    ap.add_argument("--q-test", type=int, default=50)
    ap.add_argument("--q-size", type=int, default=256)
    ap.add_argument("--q-epochs", type=int, default=None, help="override the preset's epochs")
    ap.add_argument("--q-preset", default="fast")
    ap.add_argument("--_child-mem", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    from cspine.runtime import cpu_threads

    torch.set_num_threads(args.threads or cpu_threads())
    if args._child_mem is not None:
        _child_mem(args._child_mem, args.model, args.device)
        return
    if args.quality:
        quality(args)
        return
    if args.mem_slices % args.slices:
        sys.exit("--mem-slices must be a multiple of --slices")

    tmp = tempfile.TemporaryDirectory(prefix="cspine-bench-pipeline-") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    study = work / f"study_{args.size}x{args.slices}"
    study_mem = work / f"study_{args.size}x{args.mem_slices}"
    gen_s = None
    if not (study / "1.dcm").is_file() or (args.mem_slices and not (study_mem / "1.dcm").is_file()):
        hu, spacing, gen_s = make_study(work, args.slices, args.size)
        print(f"phantom {hu.shape} rendered in {gen_s:.1f} s; writing JPEG lossless ...", flush=True)
        write_jpeg_lossless_study(study, hu, spacing)
        if args.mem_slices:
            write_jpeg_lossless_study(study_mem, hu, spacing, repeat=args.mem_slices // args.slices)
        del hu
    run = args.model
    if run is None:
        run = work / f"run_{args.preset}"
        if not (run / "cls" / "model.safetensors").is_file():
            build_run(run, args.preset)
    print("timing stages ...", flush=True)
    med, facts = time_stages(study, run, args.repeats, args.device)
    mem = peak_memory(study_mem, run, args.device) if args.mem_slices else None

    from _common import append_benchmark, machine_line, markdown_table

    models = f"trained RUN {args.model}" if args.model else f"random-weight `{args.preset}` preset models"
    rows = [[f"{args.size}x{args.size}x{args.slices} JPEG lossless (synthetic)", f"{med['decode']:.2f}",
             f"{med['seg']:.2f}", f"{med['crops']:.2f}", f"{med['cls']:.2f}", f"{med['total']:.2f}",
             f"{med['cpu']:.1f}", facts["n_vertebrae"]]]
    header = ["study", "decode s", "seg s", "crops s", "cls s", "total s", "CPU s (all threads)",
              "vertebrae classified"]
    table = markdown_table(header, rows)
    if mem:
        table += "\n\n" + markdown_table(
            ["study", "peak RSS MiB", "RSS after model load MiB", "total s"],
            [[f"{args.size}x{args.size}x{args.mem_slices} JPEG lossless (synthetic)",
              f"{mem['peak_mib']:.0f}", f"{mem['after_model_load_mib']:.0f}",
              f"{mem['seconds']['total']:.1f}"]])
    how = "--model RUN" if args.model else f"--preset {args.preset}"
    notes = (f"`bench/pipeline.py {how} --repeats {args.repeats}`: {models}, device "
             f"{facts['device']}, {torch.get_num_threads()} torch threads. Median of {args.repeats} runs "
             f"after one warm-up (totals {facts['totals']}); model load {facts['load_s']:.1f} s not "
             "included. "
             "Targets: <= 20 s per study on 2 CPU cores, <= 3 GB peak for 600 slices. The machine was shared "
             f"with other jobs while measuring (load average {os.getloadavg()[0]:.1f}), so times are upper "
             "bounds.")
    print(machine_line())
    print(table)
    print(notes)
    if not args.no_append:
        print("appended to", append_benchmark("CT pipeline: seconds per stage and peak memory", table, notes))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
