"""Benchmark: the whole CT pipeline, seconds per study per stage, and peak memory.

What is measured (all on *synthetic* phantom studies, CPU unless a GPU is present):

* seconds per stage -- decode (DICOM JPEG lossless -> canonical HU volume), seg (stage-1 U-Net,
  post-processing, labels back on the full grid), crops (per-vertebra 2.5D stacks), cls (stage-2
  CNN + BiGRU + attention, calibration) -- for a 512x512x300 JPEG-lossless study, through
  :func:`cspine.ct.inference.predict` exactly as ``cspine ct predict`` runs it; the median of
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

``--quality`` trains both systems on the same phantom set and split and reports *synthetic* quality
on its held-out studies (patient AUC with 95% CI, mean vertebra AUC, RSNA weighted log loss, and the
loss of predicting the training prevalence):

* two-stage: :func:`cspine.ct.demo.run_demo` with the demo's configuration
  (:class:`cspine.ct.demo.DemoConfig`, read at run time) resized to ``--q-train``/``--q-test``/``--q-size``:
  phantoms, cache, stage 1 + pseudo-labels, stage 2 (:func:`cspine.ct.train_run.train_run`),
  :func:`cspine.ct.inference.predict_many` on the held-out DICOM studies, :func:`cspine.ct.evaluate.evaluate`;
* one-stage baseline (:mod:`cspine.ct.baseline`): the same CNN + BiGRU + attention over the whole
  study, trained with the stage-2 configuration read back from the trained ``run/cls/config.json``
  (backbone, image size, ``k``, epochs, lr, batch size, seed, validation fraction), twice stage 2's
  slices over the whole scan, on the same cached studies; predicted from the same held-out DICOM
  studies and scored by the same ``evaluate``.

``--workdir`` keeps everything and a rerun reuses every finished step (seconds of the steps that ran
earlier are kept in ``quality.json``). ``--q-epochs`` overrides both stages' (and so the baseline's)
epochs and ``--q-max-steps`` caps the stage-2/baseline steps per epoch, for smoke runs only;
``--q-baseline-epochs`` trains the baseline longer or shorter than stage 2 (an epoch of the baseline is
one pass over the studies, of stage 2 one pass over the crops: seven times as many steps)::

    .venv/bin/python bench/pipeline.py --quality --q-train 200 --q-test 50 --q-size 256 --threads 2 \
        --workdir runs/bench_quality
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    from cspine.ct import CtModel, predict

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
    from cspine.ct import CtModel, predict

    model = CtModel.load(run, device=device)
    base = _peak_rss_mib()
    r = predict(study, model)
    print(json.dumps({"peak_mib": _peak_rss_mib(), "after_model_load_mib": base, "seconds": r.seconds,
                      "shape": list(r.shape or ())}))


def quality_configs(args: argparse.Namespace) -> Any:
    """The demo's configuration (read now: it is being tuned) resized by the ``--q-*`` options."""
    from cspine.ct.demo import DemoConfig

    base = DemoConfig()
    changes: dict[str, Any] = {"n_train": args.q_train, "n_test": args.q_test, "size": args.q_size}
    if args.q_epochs:
        changes.update(seg_epochs=args.q_epochs, cls_epochs=args.q_epochs)
    if args.q_max_steps:
        changes["cls_overrides"] = dict(base.cls_overrides, max_steps_per_epoch=args.q_max_steps)
        changes["seg_slices_per_epoch"] = min(base.seg_slices_per_epoch, 8 * args.q_max_steps)
    return dataclasses.replace(base, **changes)


def stage2_train_config(run: Path) -> tuple[Any, list[str] | None]:
    """The stage-2 ``ClsTrainConfig`` the two-stage run trained with (from its config.json) and its
    validation studies."""
    from cspine.checkpoint import config_from_dict, read_config
    from cspine.ct.cls.train import ClsTrainConfig
    from cspine.models.vertebra_classifier import ClsConfig

    doc = read_config(run / "cls", "vertebra_classifier")
    names = {f.name for f in dataclasses.fields(ClsTrainConfig)} - {"model"}
    train = {k: v for k, v in doc["extra"]["train"].items() if k in names}
    cfg = ClsTrainConfig(model=config_from_dict(ClsConfig, doc["config"]), **train)
    return cfg, doc["extra"].get("val_uids")


def _steps(cfg: Any, n_samples: int | None) -> int | str:
    """Optimizer steps of a stage-2-style training run over ``n_samples`` training samples."""
    if not n_samples:
        return "n/a"
    per_epoch = max(1, -(-n_samples // cfg.batch_size))
    if cfg.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.max_steps_per_epoch)
    return per_epoch * cfg.epochs


def quality(args: argparse.Namespace) -> None:
    """Synthetic quality of the two-stage system and the one-stage baseline (see the module docstring)."""
    import torch

    from cspine.ct.baseline.predict import BaselineModel, predict_studies
    from cspine.ct.baseline.train import baseline_train_config, train_baseline
    from cspine.ct.demo import run_demo
    from cspine.ct.evaluate import evaluate
    from cspine.fileio import read_json, write_json
    from cspine.labels import TEST_LABELS_CSV

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cspine-bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    record_path = work / "quality.json"
    record = read_json(record_path) if record_path.is_file() else {"seconds": {}}
    seconds: dict[str, float] = record["seconds"]
    cfg = quality_configs(args)
    print(f"two-stage system: the demo's configuration in {work}", flush=True)
    demo = run_demo(work, config=cfg, workers=args.threads, progress=True)
    for step, sec in demo.seconds.items():  # a resumed step takes ~0 s: keep the first measurement
        if sec > 1.0 or step not in seconds:
            seconds[step] = round(sec, 1)
    data, cache = work / "data", work / "cache"

    ccfg, two_stage_val = stage2_train_config(work / "run")
    bcfg = baseline_train_config(ccfg)
    if args.q_baseline_epochs:
        bcfg = dataclasses.replace(bcfg, epochs=args.q_baseline_epochs)
    model_dir, pred_dir = work / "baseline", work / "baseline_predictions"
    eval_dir = work / "baseline_evaluation"
    if not (model_dir / "metrics.json").is_file():  # written last: a model folder without it is resumed
        t = time.perf_counter()
        train_baseline(data, model_dir, bcfg, cache=cache, resume=True, device=args.device or "cpu")
        seconds["baseline: train + calibration"] = round(time.perf_counter() - t, 1)
    pred_csv = pred_dir / "predictions.csv"
    if not pred_csv.is_file() or pred_csv.stat().st_mtime < (model_dir / "metrics.json").stat().st_mtime:
        t = time.perf_counter()
        predict_studies([data], BaselineModel.load(model_dir, device=args.device or "cpu"), pred_dir)
        seconds["baseline: predict test studies"] = round(time.perf_counter() - t, 1)
    base_m = evaluate(pred_csv, data / TEST_LABELS_CSV, eval_dir, data_root=data)
    base_val = read_json(model_dir / "config.json")["extra"].get("val_uids")
    # An epoch draws as many crops as there are training vertebrae; jittered variants only widen the pool.
    cls_metrics = read_json(work / "run" / "cls" / "metrics.json")
    steps = {"two-stage": _steps(ccfg, cls_metrics.get("n_train_vertebrae")),
             "baseline": _steps(bcfg, read_json(model_dir / "metrics.json").get("n_train_studies"))}
    record.update({"seconds": seconds, "demo_config": dataclasses.asdict(cfg),
                   "baseline_config": dataclasses.asdict(bcfg), "note": "synthetic data (cspine phantom)"})
    write_json(record_path, record)

    def f(v: object, d: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    def row(name: str, m: dict) -> list[str]:
        ci = m.get("patient_auc_ci95") or [None, None]
        return [name, f"{f(m.get('patient_auc'))} ({f(ci[0])}-{f(ci[1])})", f(m.get("vertebra_auc_mean")),
                f(m.get("rsna_weighted_log_loss"), 4), f(m.get("prevalence_baseline_log_loss"), 4)]

    from _common import markdown_table, publish

    mc = bcfg.model
    header = ["system", "patient AUC (95% CI)", "mean vertebra AUC", "RSNA weighted log loss",
              "prevalence baseline loss"]
    table = markdown_table(header, [
        row("two-stage (stage 1 U-Net -> per-vertebra crops -> CNN + BiGRU + attention)", demo.metrics),
        row(f"one-stage baseline (same CNN + BiGRU + attention over {mc.n_slices} whole-study slices)",
            base_m)])
    spent = ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
    same_split = "identical" if two_stage_val == base_val else "DIFFERENT (studies skipped by one system?)"
    notes = (f"*Synthetic*: {cfg.n_train} training and {demo.metrics['n_studies']} held-out phantom studies "
             f"of {cfg.size} px (`bench/pipeline.py --quality --q-train {args.q_train} "
             f"--q-test {args.q_test} --q-size {args.q_size}"
             + (f" --q-epochs {args.q_epochs}" if args.q_epochs else "")
             + (f" --q-max-steps {args.q_max_steps}" if args.q_max_steps else "")
             + (f" --q-baseline-epochs {args.q_baseline_epochs}" if args.q_baseline_epochs else "")
             + f"`). Two-stage: `cspine demo`'s configuration (stage 1 {cfg.seg_epochs} epochs, stage 2 "
             f"{ccfg.epochs} epochs, `{ccfg.model.backbone}` at {ccfg.model.image_size} px, "
             f"{ccfg.model.n_slices} slices per vertebra); baseline: the same backbone, image size, k, "
             f"lr and seed, {bcfg.epochs} epochs, {mc.n_slices} slices over the whole scan, whole field of "
             f"view, no mask; optimizer steps (batch {ccfg.batch_size}): stage 2 {steps['two-stage']} "
             "(an epoch draws as many crops as there are vertebrae, 7 per study), "
             f"baseline {steps['baseline']} (as many studies as there are); "
             f"validation split {same_split}; both calibrated on it (temperature + bias, noisy-OR patient). "
             f"Seconds (CPU, {torch.get_num_threads()} torch threads, shared machine): {spent}.")
    publish("CT: two-stage system vs one-stage baseline (synthetic)", table, notes, not args.no_append)


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
    ap.add_argument("--q-epochs", type=int, default=None, help="override both stages' epochs (smoke runs)")
    ap.add_argument("--q-baseline-epochs", type=int, default=None, help="baseline epochs (default: the "
                    "two-stage run's stage-2 epochs)")
    ap.add_argument("--q-max-steps", type=int, default=None, help="cap stage-2/baseline steps per epoch and "
                    "stage-1 slices per epoch (smoke runs)")
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

    from _common import markdown_table, publish

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
    publish("CT pipeline: seconds per stage and peak memory", table, notes, not args.no_append)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
