"""The stage-1 2.5D U-Net: config checks, shapes, local encoder weights, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cspine.errors import CheckpointError
from cspine.models.unet2p5d import SegConfig, build_seg_model

TINY = dict(backbone="resnet18", image_size=64, decoder_channels=(16, 16, 8, 8, 8))


def test_config_classes_and_validation() -> None:
    cfg = SegConfig()
    assert cfg.backbone == "efficientnet-b0" and cfg.in_slices == 3 and cfg.image_size == 256
    assert cfg.class_names == ("background", "C1", "C2", "C3", "C4", "C5", "C6", "C7")
    assert SegConfig(include_t1=True).n_classes == 9
    with pytest.raises(ValueError, match="odd"):
        SegConfig(in_slices=2)
    with pytest.raises(ValueError, match="multiple of 32"):
        SegConfig(image_size=100)
    with pytest.raises(ValueError, match="decoder_channels"):
        SegConfig(decoder_channels=(8, 8))


def test_forward_shape_k5() -> None:
    torch.manual_seed(0)
    net = build_seg_model(SegConfig(in_slices=5, **TINY)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 5, 64, 64))
    assert out.shape == (2, 8, 64, 64)


def test_encoder_weights_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    # An "RGB" encoder file (3 input channels) loads into a k=5 model: first conv adapted.
    src = build_seg_model(SegConfig(in_slices=3, **TINY))
    path = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in src.encoder.state_dict().items()}, str(path))
    net = build_seg_model(SegConfig(in_slices=5, pretrained=str(path), **TINY))
    a, b = src.encoder.state_dict(), net.encoder.state_dict()
    assert torch.equal(a["layer1.0.conv1.weight"], b["layer1.0.conv1.weight"])
    w3, w5 = a["conv1.weight"], b["conv1.weight"]
    assert w5.shape[1] == 5
    # RGB filters repeated over the 5 channels and rescaled by 3/5 (as smp adapts in_channels)
    torch.testing.assert_close(w5, w3.repeat(1, 2, 1, 1)[:, :5] * 3 / 5)


def test_bad_pretrained_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        build_seg_model(SegConfig(pretrained=str(tmp_path / "missing.safetensors"), **TINY))
    other = build_seg_model(SegConfig(backbone="tu-resnet10t", image_size=64,
                                      decoder_channels=(16, 16, 8, 8, 8)))
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.encoder.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="does not fit"):
        build_seg_model(SegConfig(pretrained=str(path), **TINY))
    with pytest.raises(CheckpointError, match="local cache"):
        build_seg_model(SegConfig(pretrained="imagenet", **TINY))
