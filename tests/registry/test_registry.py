"""The torch-free registry: named CT presets (defaults and the demo's included), stages and splits, read by
the CLI and the training API."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cspine.ct import presets
from cspine.ct.cls.train import ClsTrainConfig
from cspine.ct.demo import DemoConfig
from cspine.ct.seg.train import SegTrainConfig
from cspine.errors import CspineError
from cspine.registry.presets import CT_PRESETS, DEFAULT_PRESET, get_preset
from cspine.registry.splits import RSNA_SPLITS
from cspine.registry.stages import TRAIN_STAGES, check_train_stage


def test_registry_imports_no_torch() -> None:
    code = ("import sys, cspine.registry.presets, cspine.registry.stages, cspine.registry.splits, "
            "cspine.registry.weights\n"
            "print(sorted(m for m in ('torch', 'timm', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_defaults_preset_is_the_dataclass_defaults() -> None:
    assert presets.cls_train_config("defaults") == ClsTrainConfig()
    assert presets.seg_train_config("defaults") == SegTrainConfig()
    # and no other preset is
    assert all(presets.cls_train_config(n) != ClsTrainConfig() for n in CT_PRESETS if n != "defaults")


def test_demo_presets_are_what_the_demo_trains() -> None:
    for name, cfg in (("demo", DemoConfig()), ("demo-quick", DemoConfig.quick())):
        # what run_demo passes to train_run for each stage
        seg = presets.seg_train_config("fast", epochs=cfg.seg_epochs, image_size=cfg.seg_image_size,
                                       **dict(cfg.seg_overrides, slices_per_epoch=cfg.seg_slices_per_epoch))
        cls = presets.cls_train_config("fast", epochs=cfg.cls_epochs, **cfg.cls_overrides)
        assert presets.seg_train_config(name) == seg, name
        assert presets.cls_train_config(name) == cls, name
    demo = presets.cls_train_config("demo")
    fast = presets.cls_train_config("fast")
    assert (demo.epochs, demo.prefix_variants) == (4, 2)
    assert dataclasses.replace(demo, epochs=fast.epochs, prefix_variants=fast.prefix_variants) == fast
    # the quick demo's stage 2 swaps the backbone: the base's ImageNet weights and frozen stages go
    quick = presets.cls_train_config("demo-quick")
    assert (quick.model.backbone, quick.model.pretrained, quick.model.frozen_stages) == (
        "test_efficientnet", "none", 0)
    # explicit options still beat a derived preset's values
    assert presets.cls_train_config("demo", epochs=9).epochs == 9


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(CspineError, match="unknown preset 'huge'; choose one of paper, fast, defaults"):
        get_preset("huge")
    with pytest.raises(CspineError, match="unknown preset"):
        presets.seg_train_config("huge")
    with pytest.raises(CspineError, match="unknown --stage 'both'; choose seg, cls or all"):
        check_train_stage("both")
    assert TRAIN_STAGES == ("seg", "cls", "all") and RSNA_SPLITS == ("train", "test")
    assert set(DEFAULT_PRESET.values()) <= set(CT_PRESETS)


def test_cli_help_reads_the_registry() -> None:
    from cspine.cli.main import app

    train = CliRunner().invoke(app, ["ct", "train", "--help"], env={"COLUMNS": "200"})
    assert "seg | cls | all (stage 1, pseudo-labels, stage 2)." in train.output
    assert "paper | fast (default: paper on GPU)." in train.output
    prepare = CliRunner().invoke(app, ["ct", "prepare", "--help"], env={"COLUMNS": "200"})
    assert "train (with masks) or test." in prepare.output
    bad = CliRunner().invoke(app, ["ct", "prepare", "--data", ".", "--cache", ".", "--split", "val"])
    assert bad.exit_code != 0 and "must be 'train' or 'test'" in bad.output
