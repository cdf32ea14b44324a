"""Radiograph models: shapes, the paper's head, fine-tune modes, normalisation, pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cspine.errors import CheckpointError
from cspine.models.radiograph import (
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    XrayConfig,
    build_xray_model,
    imagenet_weights_path,
)
from cspine.registry.weights import entry_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_default_sizes_and_head() -> None:
    assert XrayConfig(arch="alexnet").image_size == 227
    assert XrayConfig(arch="googlenet").image_size == 224
    m = build_xray_model(XrayConfig(arch="googlenet", image_size=32, hidden=16))
    kinds = [type(x).__name__ for x in m.head]
    assert kinds == ["Dropout", "Linear", "ReLU", "Linear"]
    assert m.head[1].in_features == 1024 and m.head[3].out_features == 3
    assert m.backbone.aux1 is None and m.backbone.aux2 is None  # aux_logits off: one output
    m.train()
    out = m(torch.rand(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    m.eval()
    p = m.predict_proba(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(p.sum(1), torch.ones(2))


def test_alexnet_keeps_fc7_and_replaces_fc8() -> None:
    m = build_xray_model(XrayConfig(arch="alexnet", image_size=63, hidden=8, classes=("a", "b")))
    assert m.backbone.classifier[-2].out_features == 4096  # fc7 kept, fc8 removed
    assert m.head[1].in_features == 4096
    with torch.no_grad():
        assert m.eval()(torch.rand(1, 3, 63, 63)).shape == (1, 2)


def test_finetune_head_freezes_backbone_and_its_batchnorm() -> None:
    m = build_xray_model(XrayConfig(arch="googlenet", image_size=32, finetune="head"))
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    m.train()
    assert not m.backbone.training and m.head.training
    bn = m.backbone.conv1.bn
    before = bn.running_mean.clone()
    m(torch.rand(2, 3, 32, 32) * 5)
    torch.testing.assert_close(bn.running_mean, before)


def test_pretrained_from_local_file(tmp_path: Path) -> None:
    src = build_xray_model(XrayConfig(arch="googlenet", image_size=32))
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    m = build_xray_model(XrayConfig(arch="googlenet", image_size=32, pretrained=str(path)))
    torch.testing.assert_close(m.backbone.conv1.conv.weight, src.backbone.conv1.conv.weight)
    # a pickle (even a plain torchvision-style .pth state dict) is refused, in one line
    pth = tmp_path / "backbone.pth"
    torch.save(src.backbone.state_dict(), pth)
    with pytest.raises(CheckpointError, match="pickled weights are refused") as err:
        build_xray_model(XrayConfig(arch="googlenet", image_size=32, pretrained=str(pth)))
    assert "backbone.pth" in str(err.value) and "\n" not in str(err.value)


def test_pretrained_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match="googlenet-1378be20.pth"):
        build_xray_model(XrayConfig(arch="googlenet", image_size=32, pretrained="imagenet"))
    assert imagenet_weights_path("alexnet").name == "alexnet-owt-7be5be79.pth"
    wrong = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(3)}, str(wrong))
    with pytest.raises(CheckpointError, match="wrong.safetensors"):
        build_xray_model(XrayConfig(arch="googlenet", image_size=32, pretrained=str(wrong)))
    with pytest.raises(CheckpointError, match="not found"):
        build_xray_model(XrayConfig(arch="googlenet", image_size=32, pretrained=str(tmp_path / "none.pth")))


def test_bad_configs() -> None:
    with pytest.raises(ValueError):
        XrayConfig(arch="resnet")
    with pytest.raises(ValueError):
        XrayConfig(classes=("only",))
    with pytest.raises(ValueError):
        XrayConfig(arch="alexnet", image_size=32)


def test_random_init_is_he_normal() -> None:
    # torchvision's GoogLeNet init (std 0.01) trained less stably from scratch and AlexNet's PyTorch
    # default vanishes (see cspine.models.radiograph): random init is He-normal (fan-out, ReLU gain).
    torch.manual_seed(0)
    g = build_xray_model(XrayConfig(arch="googlenet", image_size=32, hidden=16))
    w = g.backbone.inception4a.branch2[1].conv.weight.detach()  # 3x3 conv, 208 outputs
    assert float(w.std()) == pytest.approx((2 / (w.shape[0] * 9)) ** 0.5, rel=0.05)
    a = build_xray_model(XrayConfig(arch="alexnet", image_size=63, hidden=16))
    w = a.backbone.features[3].weight.detach()  # conv2: 192 outputs, 5x5
    assert float(w.std()) == pytest.approx((2 / (192 * 25)) ** 0.5, rel=0.05)
    fc6 = a.backbone.classifier[1].weight.detach()
    assert float(fc6.std()) == pytest.approx(0.01, rel=0.05)
    for m in (g, a):  # the head keeps PyTorch's default (a N(0, 0.01) output layer stalled training)
        bound = 1 / m.head[-1].in_features ** 0.5
        w = m.head[-1].weight.detach()
        assert float(w.abs().max()) <= bound and float(w.std()) > 0.5 * bound / 3**0.5


def test_alexnet_batch_norm_variant() -> None:
    m = build_xray_model(XrayConfig(arch="alexnet", image_size=63, hidden=8, batch_norm=True))
    kinds = [type(x).__name__ for x in m.backbone.features]
    assert kinds.count("BatchNorm2d") == 5
    assert all(kinds[i + 1] == "BatchNorm2d" for i, k in enumerate(kinds) if k == "Conv2d")
    m.train()
    assert m(torch.rand(2, 3, 63, 63)).shape == (2, 3)
    with pytest.raises(ValueError, match="AlexNet"):
        XrayConfig(arch="googlenet", batch_norm=True)
    with pytest.raises(ValueError, match="random init"):
        XrayConfig(arch="alexnet", batch_norm=True, pretrained="imagenet")


def test_normalisation_is_per_arch_and_explicit_values_win() -> None:
    lite = entry_for("tf_efficientnet_lite0")
    assert lite is not None
    assert XrayConfig(arch="efficientnet_lite0").mean == lite.mean == (0.5, 0.5, 0.5)
    assert XrayConfig(arch="efficientnet_lite0").std == lite.std
    for arch in ("alexnet", "googlenet"):
        assert XrayConfig(arch=arch).mean == TORCHVISION_MEAN and XrayConfig(arch=arch).std == TORCHVISION_STD
    cfg = XrayConfig(arch="efficientnet_lite0", mean=(0.1, 0.2, 0.3), std=[1, 1, 1])
    assert cfg.mean == (0.1, 0.2, 0.3) and cfg.std == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="std"):
        XrayConfig(arch="efficientnet_lite0", std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="frozen_stages"):
        XrayConfig(arch="googlenet", frozen_stages=2)


def test_lite0_has_the_papers_head_on_1280_pooled_features() -> None:
    m = build_xray_model(XrayConfig(arch="efficientnet_lite0", image_size=64, hidden=16))
    assert XrayConfig(arch="efficientnet_lite0").image_size == 224
    assert [type(x).__name__ for x in m.head] == ["Dropout", "Linear", "ReLU", "Linear"]
    assert m.head[1].in_features == 1280 and m.head[3].out_features == 3
    assert m.backbone.conv_stem.in_channels == 3  # grayscale copied to RGB
    m.eval()
    p = m.predict_proba(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(p.sum(1), torch.ones(2))


def test_pretrained_lite0_is_the_registry_backbone() -> None:
    from cspine.models.pretrained import pretrained_state

    cfg = XrayConfig(arch="efficientnet_lite0", image_size=64, hidden=16)
    torch.manual_seed(0)
    pre = build_xray_model(cfg.replace(pretrained="imagenet"))
    torch.manual_seed(0)
    rand = build_xray_model(cfg)
    ref = pretrained_state("tf_efficientnet_lite0")
    own = pre.backbone.state_dict()
    compared = [k for k in own if not k.endswith("num_batches_tracked")]
    assert len(compared) > 200 and all(k in ref for k in compared)
    for k in compared:
        torch.testing.assert_close(own[k], ref[k], rtol=0, atol=0, msg=k)
    stem = "conv_stem.weight"
    assert not torch.allclose(rand.backbone.state_dict()[stem], ref[stem])
    last = "blocks.6.0.conv_pw.weight"
    assert not torch.allclose(rand.backbone.state_dict()[last], ref[last])


def test_lite0_frozen_stages_split_the_forward_and_stay_frozen() -> None:
    torch.manual_seed(0)
    m = build_xray_model(XrayConfig(arch="efficientnet_lite0", image_size=64, hidden=16, frozen_stages=4,
                                    dropout=0.0))
    frozen = {id(p) for mod in m.frozen_modules for p in mod.parameters()}
    assert frozen and all(not p.requires_grad for p in m.parameters() if id(p) in frozen)
    assert all(p.requires_grad for p in m.backbone.blocks[4].parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    m.train()
    assert not m.backbone.bn1.training and not m.backbone.blocks[3].training and m.backbone.blocks[4].training
    x = torch.rand(3, 3, 64, 64)
    f = m.forward_frozen(x)
    assert f.shape == (3, 80, 4, 4)  # after stage 4 (index 3): stride 16
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.forward_tail(m.forward_frozen(x)), m(x))
