"""Grad-CAM and attention plots of the stage-2 classifier."""

from __future__ import annotations

import numpy as np
import torch

from cspine.ct.explain import grad_cam, plot_attention, plot_gradcam
from cspine.models.vertebra_classifier import ClsConfig, build_classifier


def _model():
    torch.manual_seed(0)
    cfg = ClsConfig(backbone="test_efficientnet", n_slices=3, k=3, image_size=64, gru_hidden=8, attn_dim=8,
                    dropout=0.0)
    return build_classifier(cfg).eval(), cfg


def test_grad_cam_shape_range_and_restores_backbone():
    model, cfg = _model()
    crop = np.random.default_rng(0).random((3, cfg.in_chans, 64, 64)).astype(np.float32)
    before = model(torch.from_numpy(crop)[None]).logit.item()
    cams = [grad_cam(model, crop, i) for i in range(3)]
    for cam in cams:
        assert cam.shape == (64, 64) and cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() <= 1.0
    # the maps differ between slices (each slice has its own feature map and gradient)
    assert any(not np.allclose(cams[0], c) for c in cams[1:])
    # the hook is removed: the backbone's forward is the class's again, and outputs are unchanged
    assert "forward" not in vars(model.backbone)
    assert not model.training
    assert model(torch.from_numpy(crop)[None]).logit.item() == before


def test_plots_write_pngs(tmp_path):
    a = plot_attention(np.array([0.1, 0.5, 0.4]), np.array([10, 12, 14]), tmp_path / "a.png", "C5")
    g = plot_gradcam(np.zeros((32, 32)), np.ones((32, 32)), tmp_path / "g.png", "C5")
    assert a.read_bytes()[:4] == b"\x89PNG" and g.read_bytes()[:4] == b"\x89PNG"
