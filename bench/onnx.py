"""Benchmark: PyTorch vs ONNX Runtime (fp32 and int8) on a CPU, CT study end to end and radiographs/s.

What is measured (all on *synthetic* phantom data):

* one 512x512x300 JPEG-lossless phantom CT study through :func:`cspine.ct.inference.predict`, as
  ``cspine ct predict`` runs it, with ``--runtime torch`` (the RUN folder) and ``--runtime onnx`` (its
  fp32 and int8 exports): median seconds per stage over ``--repeats`` runs after a warm-up;
* radiographs per second (read, preprocess, classify) over ``--images`` phantom radiographs;
* the peak resident memory (``VmHWM``) of each, every runtime in its own fresh process that loads only
  what it needs (the ONNX processes check that torch was never imported);
* how far int8 (and fp32) ONNX Runtime moves the outputs from PyTorch's: largest |delta p| over the
  study's vertebra and patient probabilities and over the radiographs' class probabilities, and the
  share of radiographs whose predicted class is unchanged.

Models: ``--model RUN`` (e.g. the demo's) and ``--xray-model DIR``; without them, random-weight models
shaped like the ``fast`` CT preset (stage 1 Lite0 U-Net, stage 2 Lite0 with frozen stages and the pixel
head) and the radiograph ``cpu`` preset (EfficientNet-Lite0, 224 px). Speed and memory do not depend on
the weights; with random weights stage 1 may find other vertebrae than a trained model would.

Usage::

    .venv/bin/python bench/onnx.py [--model RUN] [--xray-model DIR] [--slices 300] [--size 512]
                                   [--repeats 3] [--images 60] [--threads 2] [--workdir DIR] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# This script is named onnx.py: its folder goes last on the path, so that `import onnx` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

from _common import markdown_table, publish, write_jpeg_lossless_series  # noqa: E402

STUDY_UID = "1.2.826.0.1.3680043.8.498.300300"
STAGES = ("decode", "seg", "crops", "cls")
RUNTIMES = ("torch", "onnx fp32", "onnx int8")


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- children: one runtime per fresh process ---------------------------------------------------------
def _child(kind: str, runtime: str, model: Path, data: Path, repeats: int, threads: int) -> None:
    if runtime == "torch":
        import torch

        torch.set_num_threads(threads)
    if kind == "ct":
        from cspine.ct.inference import predict

        if runtime == "torch":
            from cspine.ct.model import CtModel

            ct_model: Any = CtModel.load(model, device="cpu")
        else:
            from cspine.onnx.runtime import load_ct

            ct_model = load_ct(model)
        predict(data, ct_model)  # warm-up: lazy imports, allocators, the OS file cache
        runs = [predict(data, ct_model) for _ in range(repeats)]
        seconds = {k: statistics.median(r.seconds.get(k, 0.0) for r in runs) for k in (*STAGES, "total")}
        last = runs[-1]
        out: dict[str, Any] = {"seconds": seconds, "probs": {**last.probs, "patient": last.patient_overall},
                               "found": [v for v, g in last.vertebrae.items() if g.get("present")]}
    else:
        from cspine.xray.batch import collect_images, predict_images

        if runtime == "torch":
            from cspine.xray.predict import load_xray_model

            net: Any = load_xray_model(model, "cpu")
        else:
            from cspine.onnx.runtime import load_xray

            net = load_xray(model)
        paths = collect_images([data])
        predict_images(paths[:10], [net], batch_size=10)  # warm-up
        t0 = time.perf_counter()
        pred, _ = predict_images(paths, [net], batch_size=10)
        wall = time.perf_counter() - t0
        out = {"images_per_s": len(paths) / wall, "proba": pred.proba.tolist()}
    out["peak_mib"] = _peak_rss_mib()
    out["torch_imported"] = "torch" in sys.modules
    print(json.dumps(out))


def run_child(kind: str, runtime: str, model: Path, data: Path, repeats: int, threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--_child", kind, runtime, str(model), str(data), str(repeats),
           str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {runtime} child failed:\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    if runtime != "torch" and doc["torch_imported"]:
        raise RuntimeError(f"{kind} {runtime}: torch was imported on the ONNX Runtime path")
    return doc


# --- inputs -------------------------------------------------------------------------------------------
def make_study(folder: Path, slices: int, size: int) -> None:
    from cspine.synth.phantom import make_phantom

    p = make_phantom(0, size=size, n_slices=slices, fracture=True)
    write_jpeg_lossless_series(folder, (p.hu[k] for k in range(p.hu.shape[0])),
                               tuple(float(s) for s in p.spacing), study_uid=STUDY_UID)  # type: ignore[arg-type]


def make_radiographs(folder: Path, n: int) -> None:
    from PIL import Image

    from cspine.labels import XRAY_CLASSES
    from cspine.synth.xray import render_radiograph

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = render_radiograph(1000 + i, XRAY_CLASSES[i % len(XRAY_CLASSES)])
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"xr_{i:03d}.png")


def build_ct_run(run: Path) -> None:
    """Random-weight models shaped like the ``fast`` CT preset, saved as a RUN folder."""
    import torch

    from cspine.checkpoint import config_from_dict, save_model
    from cspine.labels import VERTEBRAE
    from cspine.models.unet2p5d import SegConfig, build_seg_model
    from cspine.models.vertebra_classifier import ClsConfig, build_classifier
    from cspine.registry.presets import get_preset

    fast = get_preset("fast")
    torch.manual_seed(0)
    scfg = config_from_dict(SegConfig, {**fast.seg, "pretrained": "none"})
    save_model(run / "seg", build_seg_model(scfg), scfg, kind="seg")
    ccfg = config_from_dict(ClsConfig, {**fast.cls, "pretrained": "none"})
    save_model(run / "cls", build_classifier(ccfg), ccfg, kind="vertebra_classifier",
               extra={"absent_vertebra_prior": {v: 0.1 for v in VERTEBRAE}})


def build_xray_model(folder: Path) -> None:
    """A random-init radiograph model shaped like the ``cpu`` preset (EfficientNet-Lite0, 224 px)."""
    import torch

    from cspine.checkpoint import save_model
    from cspine.models.radiograph import CHECKPOINT_KIND, XrayConfig
    from cspine.models.radiograph import build_xray_model as build

    torch.manual_seed(0)
    cfg = XrayConfig(arch="efficientnet_lite0")
    save_model(folder, build(cfg), cfg, kind=CHECKPOINT_KIND)


# --- report -------------------------------------------------------------------------------------------
def _max_delta(a: dict[str, float | None], b: dict[str, float | None]) -> float:
    d = [abs(float(a[k]) - float(b[k])) for k in a if a[k] is not None and b.get(k) is not None]
    return max(d) if d else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="a trained CT RUN folder (default: random fast-preset models)")
    ap.add_argument("--xray-model", type=Path, help="a trained radiograph model folder (default: random "
                                                    "cpu-preset Lite0)")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--_child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        kind, runtime, model, data, repeats, threads = args._child
        _child(kind, runtime, Path(model), Path(data), int(repeats), int(threads))
        return
    from cspine.onnx.export import export_model

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cspine-bench-onnx-"))
    work.mkdir(parents=True, exist_ok=True)
    study, images = work / "study", work / "xr"
    if not study.is_dir():
        make_study(study, args.slices, args.size)
    if not images.is_dir():
        make_radiographs(images, args.images)
    run = args.model or work / "run_fast"
    if args.model is None and not (run / "cls").is_dir():
        build_ct_run(run)
    xray = args.xray_model or work / "xray_lite0"
    if args.xray_model is None and not (xray / "config.json").is_file():
        build_xray_model(xray)
    models: dict[str, dict[str, Path]] = {"ct": {"torch": run}, "xray": {"torch": xray}}
    for kind, src in (("ct", run), ("xray", xray)):
        for precision in ("fp32", "int8"):
            out = work / f"{kind}_{precision}"
            export_model(src, out, int8=precision == "int8", overwrite=True)
            models[kind][f"onnx {precision}"] = out
    res = {kind: {rt: run_child(kind, rt, models[kind][rt], study if kind == "ct" else images, args.repeats,
                                args.threads) for rt in RUNTIMES} for kind in ("ct", "xray")}
    ct0, xr0 = res["ct"]["torch"], res["xray"]["torch"]
    rows = []
    for rt in RUNTIMES:
        ct, xr = res["ct"][rt], res["xray"][rt]
        s = ct["seconds"]
        p0, p1 = np.asarray(xr0["proba"]), np.asarray(xr["proba"])
        rows.append([
            rt, f"{s['total']:.2f}", " / ".join(f"{s[k]:.2f}" for k in STAGES),
            f"{ct0['seconds']['total'] / s['total']:.2f}x", f"{ct['peak_mib']:.0f}",
            f"{xr['images_per_s']:.1f}", f"{xr['images_per_s'] / xr0['images_per_s']:.2f}x",
            f"{xr['peak_mib']:.0f}",
            "-" if rt == "torch" else f"{_max_delta(ct['probs'], ct0['probs']):.1e}",
            "-" if rt == "torch" else f"{np.abs(p1 - p0).max():.1e}",
            "-" if rt == "torch" else f"{np.mean(p1.argmax(1) == p0.argmax(1)):.3f}"])
    table = markdown_table(
        ["runtime", "CT study s", "decode / seg / crops / cls s", "CT speed vs torch", "CT peak RSS MiB",
         "radiographs/s", "xray speed vs torch", "xray peak RSS MiB", "CT max abs dp vs torch",
         "xray max abs dp vs torch", "xray same class"], rows)
    models_line = (f"CT: {'RUN ' + str(args.model) if args.model else 'random-weight fast-preset models'} "
                   f"(stage 1 found {len(ct0['found'])} vertebrae); radiographs: "
                   f"{'model ' + str(args.xray_model) if args.xray_model else 'random-init Lite0, 224 px'}")
    notes = (f"*Synthetic*: one {args.size}x{args.size}x{args.slices} JPEG-lossless phantom study (median of "
             f"{args.repeats} runs after a warm-up) and {args.images} phantom radiographs, {args.threads} "
             f"threads per runtime, each runtime in its own process (peak RSS = VmHWM; the ONNX processes "
             f"never import torch). {models_line}. The machine's 2 cores were shared with other work while "
             "this ran: compare the rows with each other, not with other sections. Command: "
             f"`.venv/bin/python bench/onnx.py{' --model ' + str(args.model) if args.model else ''}`.")
    publish("PyTorch vs ONNX Runtime on a CPU (bench/onnx.py)", table, notes, append=not args.no_append)


if __name__ == "__main__":
    main()
