"""Stage-1 benchmark: inference seconds for one 512x512x300 study, training throughput, and (``--full``)
mean Dice after a full training on a phantom set.

Inference runs :func:`cspine.ct.seg.predict.segment` end to end (resample to the model grid, batched
2.5D stacks, post-processing, labels back on the full grid) for the default config (EfficientNet-B0
U-Net, 256 px, 2 mm) and the CPU ``fast`` preset. The study is a phantom rendered at 256 px x 150
slices and upsampled x2 to 512 x 512 x 300 (*synthetic*). Models have random weights unless
``--model`` names a trained one: the network's cost does not depend on its weights, only the
post-processing's does a little.

Usage::

    python bench/seg.py                      # inference + training throughput, appends to BENCHMARKS.md
    python bench/seg.py --repeats 5 --no-append
    python bench/seg.py --full --studies 200 --study-size 128 --epochs 20   # + full training, mean Dice
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, publish  # noqa: E402


def configs() -> dict:
    from cspine.models.unet2p5d import SegConfig

    return {
        "default (efficientnet-b0, 256 px, 2 mm)": SegConfig(),
        "fast (resnet18 d4, 128 px, 3 mm)": SegConfig(backbone="resnet18", image_size=128, encoder_depth=4,
                                                       decoder_channels=(64, 32, 16, 8), z_spacing=3.0),
    }


def big_study(size: int = 512, slices: int = 300):
    """A phantom rendered at half resolution and upsampled x2 (nearest), as a canonical Volume."""
    from cspine.io.volume import volume_from_arrays
    from cspine.synth.phantom import make_phantom

    p = make_phantom(0, size=size // 2, n_slices=slices // 2, fracture=False)
    hu = np.repeat(np.repeat(np.repeat(p.hu, 2, 0), 2, 1), 2, 2)
    spacing = tuple(s / 2 for s in p.spacing)
    return volume_from_arrays(hu, spacing)  # type: ignore[arg-type]


def bench_inference(volume, cfg, repeats: int, model_dir: Path | None, device: str) -> dict:
    import torch

    from cspine.checkpoint import save_model
    from cspine.ct.seg.grid import reduced_grid, resample_image
    from cspine.ct.seg.predict import SegModel, segment
    from cspine.models.unet2p5d import build_seg_model

    with tempfile.TemporaryDirectory() as tmp:
        if model_dir is None:
            torch.manual_seed(0)
            save_model(Path(tmp) / "seg", build_seg_model(cfg), cfg, "seg")
            model_dir = Path(tmp) / "seg"
        model = SegModel.load(model_dir, device=device)
        grid = reduced_grid(volume.shape, volume.spacing, model.cfg)
        segment(volume, model)  # warm-up
        total, net = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            segment(volume, model)
            total.append(time.perf_counter() - t0)
            image = resample_image(volume.hu, grid, model.cfg)
            t1 = time.perf_counter()
            model.predict_reduced(image)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            net.append(time.perf_counter() - t1)
    return {"total": statistics.median(total), "net": statistics.median(net), "runs": total,
            "reduced": (grid.n_slices, model.cfg.image_size, model.cfg.image_size)}


def bench_training(cfg, steps: int, batch: int) -> float:
    """Median training slices/s (forward, Dice+CE loss, backward, AdamW step) on random stacks."""
    import torch

    from cspine.ct.seg.dataset import augment_batch
    from cspine.ct.seg.train import seg_loss
    from cspine.models.unet2p5d import build_seg_model

    torch.manual_seed(0)
    net = build_seg_model(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, cfg.in_slices, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.n_classes, (batch, cfg.image_size, cfg.image_size))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        xa, ya = augment_batch(x, y, g)
        loss = seg_loss(net(xa), ya)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def full_training(n_studies: int, size: int, epochs: int, out: Path) -> dict:
    """Train stage 1 as the CPU demo configures it (:class:`cspine.ct.demo.DemoConfig`: backbone, grid,
    slices, lr, batch) on ``n_studies`` phantoms, every one with its mask (90/10 split inside), for
    ``epochs`` x 2048 stacks; evaluate on 20 new phantoms on their full grid."""
    from cspine.ct.demo import DemoConfig
    from cspine.ct.seg.predict import SegModel, segment
    from cspine.ct.seg.train import SegTrainConfig, train_segmentation
    from cspine.metrics.segmentation import aggregate, segmentation_metrics
    from cspine.models.unet2p5d import SegConfig
    from cspine.synth.phantom import make_phantom

    demo = DemoConfig()
    train_keys = {"lr", "batch_size"}
    model_kw = {k: v for k, v in demo.seg_overrides.items() if k not in train_keys}
    cfg_model = SegConfig(**{**model_kw, "image_size": demo.seg_image_size})
    pairs = []
    for s in tqdm(range(n_studies), desc="phantoms"):
        p = make_phantom(s, size=size)
        pairs.append((p.volume(), p.labels))
    cfg = SegTrainConfig(model=cfg_model, epochs=epochs, slices_per_epoch=2048, val_fraction=0.1,
                         **{k: v for k, v in demo.seg_overrides.items() if k in train_keys})
    t0 = time.perf_counter()
    seg_dir = train_segmentation(None, out, cfg, volumes=pairs)
    train_s = time.perf_counter() - t0
    model = SegModel.load(seg_dir)
    res = []
    for s in range(10_000, 10_020):
        p = make_phantom(s, size=size)
        res.append(segmentation_metrics(segment(p.volume(), model).labels, p.labels))
    return {"train_s": train_s, "config": cfg_model, **aggregate(res)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=512, help="in-plane size of the inference study")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", type=Path, default=None,
                    help="a trained RUN/seg folder (default: random weights)")
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores visible)")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--full", action="store_true", help="also train on a phantom set and report mean Dice")
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--study-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()

    import torch

    from cspine.runtime import cpu_threads

    torch.set_num_threads(args.threads or cpu_threads())
    volume = big_study(args.size, args.slices)
    rows = []
    for name, cfg in configs().items():
        inf = bench_inference(volume, cfg, args.repeats, args.model, args.device)
        sps = bench_training(cfg, args.train_steps, 16)
        rows.append([name, "x".join(map(str, volume.shape)), "x".join(map(str, inf["reduced"])),
                     f"{inf['total']:.2f}", f"{inf['net']:.2f}", f"{sps:.1f}",
                     " ".join(f"{r:.2f}" for r in inf["runs"])])
        print(name, rows[-1], flush=True)
    header = ["config", "study (ZxYxX)", "model grid", "segment s (median)", "network s", "train slices/s",
              "runs s"]
    table = markdown_table(header, rows)
    notes = (f"Stage-1 inference on one synthetic 512x512x300 phantom study (device {args.device}, "
             f"{cpu_threads()} cores visible, torch threads {torch.get_num_threads()}), median of "
             f"{args.repeats} runs after a warm-up; `segment s` is end to end (resampling, network, "
             "post-processing, labels back on the full grid), `network s` the U-Net alone. Training "
             "throughput: 2.5D stacks per second at batch 16 with augmentation, Dice+CE, AdamW (median "
             f"of {args.train_steps} steps). Weights: {'random' if args.model is None else args.model}. "
             "Target: <= 6 s on 2 cores.")
    if args.full:
        notes += (f" Full training (`--full`): stage 1 in the CPU demo's configuration on {args.studies} "
                  f"phantoms of {args.study_size} px, all with masks, 10% held out for checkpoint choice; "
                  "mean Dice and level identification on 20 further phantoms, on their full grid "
                  "(*synthetic*).")
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            full = full_training(args.studies, args.study_size, args.epochs, Path(tmp))
        table += "\n\n" + markdown_table(
            ["stage-1 config (the CPU demo's)", "studies", "size", "epochs x 2048 stacks", "train s",
             "mean Dice (synthetic)", "level id. acc. (synthetic)"],
            [[f"{full['config'].backbone}, {full['config'].image_size} px, {full['config'].z_spacing:g} mm, "
              f"k={full['config'].in_slices}", args.studies, args.study_size, args.epochs,
              f"{full['train_s']:.0f}",
              f"{full['mean_dice']:.3f}", f"{full['level_identification_accuracy']:.3f}"]])
    publish("CT stage 1 (segmentation): inference and training speed", table, notes, not args.no_append)


if __name__ == "__main__":
    main()
