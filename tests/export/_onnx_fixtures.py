"""Shared pieces of the ONNX tests: a tiny CT RUN folder with a random-weight stage 1 beside the fixed one,
a phantom study written as DICOM with the project's synth tools, and a small random-init radiograph model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from _tiny_ct_run import make_run
from cspine.checkpoint import save_model
from cspine.models.radiograph import CHECKPOINT_KIND, XrayConfig, build_xray_model
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.synth.ct_writer import write_ct_series
from cspine.synth.phantom import Phantom, make_phantom

PHANTOM_UID = "1.2.826.0.1.3680043.8.498.77"


def make_runs(base: Path) -> tuple[Path, Path]:
    """``base/run`` (stage 1 labels every voxel C3: one known vertebra for stage 2) and ``base/run_rand``
    (the same stage 2, a random-weight stage 1 whose argmax varies over the image)."""
    make_run(base / "run")
    torch.manual_seed(1)
    scfg = SegConfig(backbone="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8), image_size=32,
                     z_spacing=2.5)
    net = build_seg_model(scfg)
    with torch.no_grad():  # no background prior: the random head's argmax then varies over the image
        net.segmentation_head[0].bias.zero_()
    save_model(base / "run_rand" / "seg", net, scfg, kind="seg")
    make_run(base / "run_rand", stages=("cls",))
    return base / "run", base / "run_rand"


def write_phantom_study(folder: Path, seed: int = 3) -> Phantom:
    """A 64 px, 40-slice fractured phantom written as a DICOM series under ``folder``."""
    phantom = make_phantom(seed, size=64, n_slices=40, fracture=True)
    write_ct_series(phantom, folder, study_uid=PHANTOM_UID, uid_seed=seed)
    return phantom


def make_xray_model(folder: Path, image_size: int = 64) -> Path:
    """A random-init GoogLeNet radiograph model folder (small input, small head)."""
    torch.manual_seed(0)
    cfg = XrayConfig(arch="googlenet", image_size=image_size, hidden=16, dropout=0.0)
    save_model(folder, build_xray_model(cfg), cfg, kind=CHECKPOINT_KIND)
    return folder


def write_images(folder: Path, n: int = 5, seed: int = 0) -> list[Path]:
    """``n`` random grey PNGs of varied sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = (rng.random((80 + 7 * i, 70 + 5 * i)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
        out.append(folder / f"img{i}.png")
    return out
