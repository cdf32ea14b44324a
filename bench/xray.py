"""Radiograph benchmark: inference throughput of AlexNet and GoogLeNet, and test accuracy / macro-F1
on synthetic phantom radiographs after training with the default recipe (fewer epochs if asked).

    .venv/bin/python bench/xray.py --n-images 240 --epochs 3           # what fits on a shared CPU
    .venv/bin/python bench/xray.py --n-images 2009 --epochs 30         # the paper's scale (GPU)

Throughput: random-init models in eval mode at the paper's input size (227 / 224 px), batches of
10 and 1, median of ``--runs`` timed passes after one warm-up pass, ``--threads`` torch threads.
Accuracy: ``cspine.synth.xray.generate_xray_dataset`` images, the patient-grouped stratified 70/15/15
split, ``train_xray`` with the default recipe (SGD 0.9, lr 1e-3 halved every 4 epochs, batch 10,
no pretrained weights: none can be downloaded here), then the test split for each architecture and
their probability-averaging ensemble.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_benchmark, machine_line  # noqa: E402

from cspine.models.radiograph import XrayConfig, build_xray_model  # noqa: E402

ARCHS = ("alexnet", "googlenet")


def throughput(arch: str, batch: int, runs: int, device: str) -> float:
    """Median images per second of ``runs`` forward passes (after one warm-up)."""
    model = build_xray_model(XrayConfig(arch=arch)).to(device).eval()
    size = int(model.cfg.image_size)  # type: ignore[arg-type]
    x = torch.rand(batch, 3, size, size, device=device)
    times = []
    with torch.inference_mode():
        model.predict_proba(x)
        for _ in range(runs):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.predict_proba(x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_xray"), help="Data and runs go here.")
    ap.add_argument("--n-images", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=0, help="0 = the paper's (227 / 224).")
    ap.add_argument("--runs", type=int, default=5, help="Timed passes per throughput figure.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--no-append", action="store_true", help="Print only; leave docs/BENCHMARKS.md alone.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    command = "python bench/xray.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(machine_line())

    rows_tp = []
    if not args.skip_throughput:
        for arch in args.archs:
            for batch in (10, 1):
                ips = throughput(arch, batch, args.runs, args.device)
                rows_tp.append((arch, batch, ips))
                print(f"{arch} batch {batch}: {ips:.1f} images/s")

    rows_acc = []
    if not args.skip_training:
        from cspine.synth.xray import generate_xray_dataset
        from cspine.xray.evaluate import evaluate_xray
        from cspine.xray.train import XrayTrainConfig, train_xray

        data = generate_xray_dataset(args.work / f"data_{args.n_images}", args.n_images, seed=0)
        runs = []
        for arch in args.archs:
            out = args.work / f"run_{arch}_{args.n_images}_e{args.epochs}_s{args.image_size}"
            t0 = time.perf_counter()
            cfg = XrayConfig(arch=arch, image_size=args.image_size or None)
            train_xray(data, out, cfg, XrayTrainConfig(epochs=args.epochs), device=args.device,
                       resume=out.exists())
            train_s = time.perf_counter() - t0
            runs.append(out)
            doc = evaluate_xray([out], data, args.work / f"eval_{out.name}", device=args.device)
            m = next(iter(doc["models"].values()))
            rows_acc.append((arch, m["n"], m["accuracy"], m["macro"]["f1"], m["macro"]["auc"], train_s))
        if len(runs) > 1:
            doc = evaluate_xray(runs, data, args.work / "eval_ensemble", device=args.device)
            m = doc["models"]["ensemble"]
            rows_acc.append(("ensemble", m["n"], m["accuracy"], m["macro"]["f1"], m["macro"]["auc"], None))

    table = ""
    if rows_tp:
        table += "| architecture | input px | batch | images/s (median) |\n|---|---|---|---|\n"
        table += "".join(f"| {a} | {227 if a == 'alexnet' else 224} | {b} | {v:.1f} |\n"
                         for a, b, v in rows_tp)
    if rows_acc:
        table += ("\n| model (synthetic phantom radiographs) | test images | accuracy | macro F1 | macro AUC "
                  "| training s |\n|---|---|---|---|---|---|\n")
        table += "".join(f"| {a} | {n} | {acc:.3f} | {_f(f1)} | {_f(auc)} | {_f(s, 0, '-')} |\n"
                         for a, n, acc, f1, auc, s in rows_acc)
    notes = (f"Command: `{command}`. Device {args.device}, {args.threads} torch threads. Throughput: "
             f"random-init models, median of {args.runs} passes after a warm-up; the machine is shared with "
             "other jobs, so CPU figures are lower bounds.")
    if rows_acc:
        notes += (" Accuracy rows are *synthetic* (phantom "
                  f"radiographs, {args.n_images} images, patient-grouped 70/15/15 split, input "
                  f"{args.image_size or 'paper size'} px, {args.epochs} epochs of the default recipe, random "
                  "init: no ImageNet weights here), far from the paper's setting "
                  "(ImageNet-pretrained, 2,009 real images, 30 epochs).")
    print(table)
    print(notes)
    if not args.no_append:
        append_benchmark("Radiographs: AlexNet / GoogLeNet throughput and accuracy (bench/xray.py)",
                         table, notes)


def _f(v: float | None, digits: int = 3, missing: str = "n/a") -> str:
    return missing if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    main()
