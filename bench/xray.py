"""Radiograph benchmark: inference throughput of AlexNet and GoogLeNet, and test accuracy / macro-F1
on synthetic phantom radiographs after training with the default recipe (fewer epochs if asked).

    .venv/bin/python bench/xray.py --n-images 2009 --epochs 30         # the paper's recipe and scale (GPU)
    # the from-scratch recipe on one shared CPU core (see "Random init" below):
    .venv/bin/python bench/xray.py --n-images 1200 --image-size 112 --epochs 10 --lr 0.01 \
        --warmup-epochs 1 --clip-grad 5 --alexnet-bn --threads 1

Throughput: random-init models in eval mode at the paper's input size (227 / 224 px), batches of
10 and 1, median of ``--runs`` timed passes after one warm-up pass, ``--threads`` torch threads.
Accuracy: ``cspine.synth.xray.generate_xray_dataset`` images, the patient-grouped stratified 70/15/15
split, ``train_xray`` with the default recipe (SGD 0.9, lr 1e-3 halved every 4 epochs, batch 10,
no pretrained weights: none can be downloaded here), then the test split for each architecture and
their probability-averaging ensemble.

Random init: the paper's lr of 0.001 is a fine-tuning rate for ImageNet weights; from random init
it barely moves the network in the few epochs a CPU affords, so CPU runs pass ``--lr 0.01`` with a
one-epoch linear warm-up and a gradient-norm cap (``--warmup-epochs``, ``--clip-grad``; He init is
what ``pretrained="none"`` builds, see cspine.models.radiograph): the table's notes record the
recipe used. The paper's AlexNet (no batch norm) did not learn the phantom from scratch with SGD
(train loss at the class prior); ``--alexnet-bn`` trains AlexNet with a batch norm after each
convolution instead (``XrayConfig.batch_norm``), a from-scratch variant labelled so in the table.
The phantom's signs are realistic, i.e. a few pixels at 112 px (3.5-9 mm listhesis,
25-60% anterior height loss of a ~14 mm body; ~1.4 mm per pixel), see docs/BENCHMARKS.md.
``--augment`` switches on the training augmentation (off by default, as in the paper). The data
folder is named after the phantom's version (``PHANTOM_VERSION``), so images of an older phantom
are never reused.
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
from _common import machine_line, publish  # noqa: E402

from cspine.models.radiograph import XrayConfig, build_xray_model  # noqa: E402

ARCHS = ("alexnet", "googlenet")
#: Bumped whenever cspine.synth.xray draws different images: the data folder is named after it.
PHANTOM_VERSION = 4
#: Bumped when random init changes, so that run folders of an older init are never resumed
#: (2: He init + a N(0, 0.01) head output layer; 3: He init, PyTorch's default head).
INIT_VERSION = 3


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


def trivial_baseline(data: Path, run: Path) -> tuple[str, int, float, float, float, None]:
    """Logistic regression on a 16x16 thumbnail + 32-bin histogram of each image, on the run's split.

    A check of the phantom: if this scored near the CNNs, the classes would differ by a global,
    non-anatomical cue (brightness, contrast, framing) rather than by their radiographic signs.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cspine.io.images import read_image
    from cspine.metrics.multiclass import multiclass_metrics
    from cspine.xray.data import SPLITS_FILE, load_dataset, load_splits
    from cspine.xray.transforms import resize_unit

    ds = load_dataset(data)
    splits = load_splits(run / SPLITS_FILE, ds)

    def features(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        x, y = [], []
        for i in idx:
            img = read_image(ds.items[i].path)
            thumb = resize_unit(img, 16).numpy().ravel()
            hist = np.histogram(img, bins=32, range=(0.0, 1.0))[0] / img.size
            x.append(np.concatenate([thumb, hist]))
            y.append(ds.items[i].label)
        return np.asarray(x), np.asarray(y)

    xtr, ytr = features(splits["train"] + splits["val"])
    xte, yte = features(splits["test"])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)).fit(xtr, ytr)
    proba = np.zeros((len(yte), len(ds.class_names)))
    proba[:, clf.classes_] = clf.predict_proba(xte)
    m = multiclass_metrics(yte, proba, ds.class_names)
    return ("trivial baseline: logistic regression, 16 px thumbnail + histogram", m["n"], m["accuracy"],
            m["macro"]["f1"], m["macro"]["auc"], None)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_xray"), help="Data and runs go here.")
    ap.add_argument("--n-images", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3, help="Initial learning rate (the paper: 0.001).")
    ap.add_argument("--lr-step", type=int, default=4, help="Epochs between learning-rate steps.")
    ap.add_argument("--lr-gamma", type=float, default=0.5, help="Learning-rate factor at each step.")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--warmup-epochs", type=float, default=0.0, help="Linear lr warm-up (0 = off).")
    ap.add_argument("--alexnet-bn", action="store_true",
                    help="AlexNet with batch norms (XrayConfig.batch_norm): a from-scratch variant.")
    ap.add_argument("--clip-grad", type=float, default=0.0, help="Gradient-norm cap (0 = off).")
    ap.add_argument("--augment", action="store_true", help="Training augmentation (rotation, contrast).")
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

        t0 = time.perf_counter()
        data = generate_xray_dataset(args.work / f"data_v{PHANTOM_VERSION}_{args.n_images}", args.n_images,
                                     seed=0)
        gen_s = time.perf_counter() - t0
        recipe = XrayTrainConfig(epochs=args.epochs, lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
                                 batch_size=args.batch_size, augment=args.augment,
                                 warmup_epochs=args.warmup_epochs, clip_grad_norm=args.clip_grad)
        tag = (f"v{PHANTOM_VERSION}_{args.n_images}_e{args.epochs}_s{args.image_size}_lr{args.lr:g}"
               f"_st{args.lr_step}_g{args.lr_gamma:g}_b{args.batch_size}{'_aug' if args.augment else ''}"
               f"_w{args.warmup_epochs:g}_c{args.clip_grad:g}_init{INIT_VERSION}")
        runs = []
        for arch in args.archs:
            bn = "_bn" if args.alexnet_bn and arch == "alexnet" else ""
            out = args.work / f"run_{arch}{bn}_{tag}"
            t0 = time.perf_counter()
            cfg = XrayConfig(arch=arch, image_size=args.image_size or None,
                             batch_norm=args.alexnet_bn and arch == "alexnet")
            train_xray(data, out, cfg, recipe, device=args.device, resume=out.exists())
            train_s = time.perf_counter() - t0
            runs.append(out)
            doc = evaluate_xray([out], data, args.work / f"eval_{out.name}", device=args.device)
            m = next(iter(doc["models"].values()))
            name = arch + (" + batch norm (from-scratch variant)" if bn else "")
            rows_acc.append((name, m["n"], m["accuracy"], m["macro"]["f1"], m["macro"]["auc"], train_s))
        if len(runs) > 1:
            doc = evaluate_xray(runs, data, args.work / f"eval_ensemble_{tag}", device=args.device)
            m = doc["models"]["ensemble"]
            rows_acc.append(("ensemble", m["n"], m["accuracy"], m["macro"]["f1"], m["macro"]["auc"], None))
        if runs:
            rows_acc.append(trivial_baseline(data, runs[0]))

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
        default = ((args.lr, args.lr_step, args.lr_gamma, args.batch_size, args.warmup_epochs, args.clip_grad)
                   == (1e-3, 4, 0.5, 10, 0.0, 0.0))
        notes += (" Accuracy rows are *synthetic* (phantom "
                  f"v{PHANTOM_VERSION} radiographs, {args.n_images} images generated in {gen_s:.0f} s (0 = "
                  "reused), patient-grouped 70/15/15 split, input "
                  f"{args.image_size or 'paper size'} px, {args.epochs} epochs of "
                  + ("the default recipe" if default else
                     f"SGD momentum 0.9 with lr {args.lr:g} x {args.lr_gamma:g} every {args.lr_step} epochs, "
                     f"batch {args.batch_size}"
                     + (f", linear warm-up over {args.warmup_epochs:g} epoch(s)"
                        if args.warmup_epochs else "")
                     + (f", gradient norm capped at {args.clip_grad:g}" if args.clip_grad else ""))
                  + (", augmentation on" if args.augment else ", no augmentation")
                  + ", random init (He-normal convolutions): no ImageNet weights here), far from the "
                  "paper's setting (ImageNet-pretrained, 2,009 real images, 30 epochs). The trivial baseline "
                  "(logistic regression on 16x16 thumbnails and grey-level histograms, same split) checks "
                  "that the phantom's classes differ by their radiographic signs, not by a global cue.")
    publish("Radiographs: AlexNet / GoogLeNet throughput and accuracy (bench/xray.py)", table, notes,
            not args.no_append)


def _f(v: float | None, digits: int = 3, missing: str = "n/a") -> str:
    return missing if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    main()
