"""A tiny two-stage RUN folder for pipeline tests: stage 1 labels every voxel C3 (zero weights, a large C3
bias), so which vertebra stage 2 sees is known; stage 2 keeps random weights (formats are under test,
not accuracy)."""

from __future__ import annotations

from pathlib import Path

import torch

from cspine.checkpoint import save_model
from cspine.labels import LABEL_OF, VERTEBRAE
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.models.vertebra_classifier import ClsConfig, build_classifier

PRIOR = {v: 0.1 for v in VERTEBRAE}


def make_run(run: Path, *, stages: tuple[str, ...] = ("seg", "cls"), seed: int = 0,
             operating_points: dict | None = None) -> None:
    """Write ``run/seg`` and/or ``run/cls``; ``seed`` changes stage 2's weights (another model)."""
    torch.manual_seed(0)
    if "seg" in stages:
        scfg = SegConfig(backbone="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8), image_size=32,
                         z_spacing=2.5)
        net = build_seg_model(scfg)
        conv = net.segmentation_head[0]
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.fill_(-10.0)
            conv.bias[LABEL_OF["C3"]] = 10.0
        save_model(run / "seg", net, scfg, kind="seg")
    if "cls" in stages:
        torch.manual_seed(seed)
        ccfg = ClsConfig(backbone="test_efficientnet", n_slices=6, k=3, image_size=64, gru_hidden=8,
                         attn_dim=8, dropout=0.0)
        extra = {"calibration": {"temperature": 1.0, "bias": 0.0},
                 "patient_calibration": {"temperature": 1.0, "bias": 0.0},
                 "absent_vertebra_prior": PRIOR}
        if operating_points is not None:
            extra["operating_points"] = operating_points
        save_model(run / "cls", build_classifier(ccfg), ccfg, kind="vertebra_classifier", extra=extra)
