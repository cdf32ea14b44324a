"""``cspine ct train`` on a tiny phantom RSNA root (tiny presets: the wiring is under test)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.ct import presets
from cspine.errors import CspineError, DatasetError
from cspine.registry.presets import CT_PRESETS, CtPreset


@pytest.fixture
def tiny_presets(monkeypatch):
    tiny = CtPreset("fast", "tiny models for the wiring tests",
                    seg=dict(backbone="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8), image_size=32,
                             z_spacing=4.0, epochs=1, batch_size=8, slices_per_epoch=16),
                    cls=dict(backbone="test_efficientnet", n_slices=6, image_size=32, gru_hidden=8,
                             attn_dim=8, epochs=1, batch_size=4, max_steps_per_epoch=2))
    monkeypatch.setitem(CT_PRESETS, "fast", tiny)
    monkeypatch.setitem(CT_PRESETS, "paper", dataclasses.replace(tiny, name="paper"))


@pytest.fixture(scope="module")
def rsna_root(tmp_path_factory):
    from cspine.synth.ct import generate_ct_dataset

    root = tmp_path_factory.mktemp("rsna") / "data"
    generate_ct_dataset(root, 5, n_test=0, seed=3, size=64, progress=False)
    assert len(list((root / "segmentations").glob("*.nii*"))) >= 2
    return root


def test_stage_all_writes_seg_and_cls(tiny_presets, rsna_root, tmp_path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["ct", "train", "--data", str(rsna_root), "--out", str(run), "--stage",
                                      "all", "--preset", "fast", "--device", "cpu", "--epochs", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for stage, kind in (("seg", "seg"), ("cls", "vertebra_classifier")):
        doc = json.loads((run / stage / "config.json").read_text())
        assert doc["kind"] == kind
        assert (run / stage / "model.safetensors").is_file()
    # explicit options beat the preset; stage 2 learned from every study (masks or stage-1 output)
    assert json.loads((run / "cls" / "config.json").read_text())["config"]["backbone"] == "test_efficientnet"
    metrics = json.loads((run / "cls" / "metrics.json").read_text())
    assert metrics["n_train_studies"] + metrics["n_val_studies"] == 5


def test_stage_cls_without_masks_or_stage1_is_a_clear_error(tiny_presets, rsna_root, tmp_path) -> None:
    root = tmp_path / "nomasks"
    shutil.copytree(rsna_root, root)
    shutil.rmtree(root / "segmentations")
    result = CliRunner().invoke(app, ["ct", "train", "--data", str(root), "--out", str(tmp_path / "run"),
                                      "--stage", "cls", "--device", "cpu"])
    assert isinstance(result.exception, DatasetError)
    assert "train stage 1 first" in str(result.exception)
    assert not (tmp_path / "run" / "cls" / "model.safetensors").exists()


def test_bad_stage_and_preset_are_clear_errors(tmp_path) -> None:
    cases = ((["--stage", "everything"], "unknown --stage"), (["--preset", "huge"], "unknown preset"))
    for args, message in cases:
        result = CliRunner().invoke(app, ["ct", "train", "--data", str(tmp_path), "--out",
                                          str(tmp_path / "r"), *args])
        assert isinstance(result.exception, CspineError), result.output
        assert message in str(result.exception)


def test_presets_and_overrides() -> None:
    paper = presets.cls_train_config("paper")
    assert paper.model.backbone == "tf_efficientnetv2_s" and paper.model.n_slices == 24
    fast = presets.cls_train_config("fast")
    assert (fast.model.backbone, fast.model.pretrained, fast.model.input_norm) == (
        "tf_efficientnet_lite0", "imagenet", (0.5, 0.5))
    assert presets.seg_train_config("fast").model.backbone == "tu-tf_efficientnet_lite0"
    # another backbone drops the preset's weights (not in the registry) and frozen stages
    fast = presets.cls_train_config("fast", epochs=2, image_size=40, backbone="test_resnet")
    assert (fast.epochs, fast.model.image_size, fast.model.backbone) == (2, 40, "test_resnet")
    assert (fast.model.pretrained, fast.model.frozen_stages, fast.model.input_norm) == ("none", 0, (0.0, 1.0))
    lite1 = presets.cls_train_config("fast", backbone="tf_efficientnet_lite1")
    assert lite1.model.pretrained == "imagenet" and lite1.model.frozen_stages == 0
    assert presets.split_backbone("tu-resnet18") == ("tu-resnet18", "resnet18")
    assert presets.split_backbone("efficientnet-b0,resnet50d") == ("efficientnet-b0", "resnet50d")
    seg = presets.seg_train_config("paper")
    assert seg.model.backbone == "efficientnet-b0" and seg.model.image_size == 256
    assert presets.default_preset("cpu") == "fast"
