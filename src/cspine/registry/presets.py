"""The CT training presets, by name: what ``cspine ct train --preset``, ``cspine demo`` and the API build
their configurations from.

A preset gives, per stage, values for the fields of the model config (:class:`~cspine.models.unet2p5d.
SegConfig`, :class:`~cspine.models.vertebra_classifier.ClsConfig`) and of the training config
(``SegTrainConfig``, ``ClsTrainConfig``) in one mapping: each key goes to the training config when it is one
of its fields, else to the model's. A preset with a ``base`` starts from that preset and applies its own
values as explicit options would be applied (:func:`cspine.ct.presets.cls_train_config`): another backbone
then drops the base's ImageNet weights where the weights registry has none, and its frozen stages.

* ``paper``: the paper's backbones and sizes, for a GPU (the default on one);
* ``fast``: small backbones and images, for a CPU (the default without a GPU): sized so that both stages
  train on a 50-study 256x256 phantom set in about 20 minutes on 2 CPU cores;
* ``defaults``: the dataclass defaults, unchanged (no value of its own);
* ``demo``: what ``cspine demo`` trains (``fast`` cut to a CPU demo; its numbers are the demo's);
* ``demo-quick``: ``cspine demo --quick``'s seconds-scale smoke run (numbers meaningless).

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class CtPreset:
    """One named CT training preset.

    Attributes:
        name: the preset's name (``--preset NAME``).
        summary: one line on what it is for.
        seg: stage-1 values (``SegConfig`` and ``SegTrainConfig`` fields).
        cls: stage-2 values (``ClsConfig`` and ``ClsTrainConfig`` fields).
        base: the preset these values change (``None``: they start from the dataclass defaults).
    """

    name: str
    summary: str
    seg: Mapping[str, Any] = field(default_factory=dict)
    cls: Mapping[str, Any] = field(default_factory=dict)
    base: str | None = None


def _frozen(values: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(values)


_PAPER = CtPreset(
    "paper", "the paper's backbones and sizes, for a GPU",
    # The RSNA runner-up's 2.5D U-Net: EfficientNet-B0 encoder, 256 px, 3 slices. ImageNet weights from
    # smp's/timm's local cache (a machine that has them; nothing is downloaded).
    seg=_frozen(dict(backbone="efficientnet-b0", pretrained="imagenet", image_size=256, field_mm=200.0,
                     in_slices=3, z_spacing=2.0, epochs=20, batch_size=16, slices_per_epoch=2048, lr=1e-3)),
    # The CT paper / RSNA winners: EfficientNetV2-S per slice, 24 slices, BiGRU + attention.
    cls=_frozen(dict(backbone="tf_efficientnetv2_s", pretrained="imagenet", n_slices=24, k=3, image_size=224,
                     gru_hidden=256, attn_dim=128, dropout=0.2, epochs=15, batch_size=8, lr=3e-4)))

_FAST = CtPreset(
    "fast", "small backbones and images, for a CPU",
    # ImageNet EfficientNet-Lite0 encoder from the offline weights registry (cspine.registry.weights).
    seg=_frozen(dict(backbone="tu-tf_efficientnet_lite0", pretrained="imagenet", image_size=96,
                     field_mm=200.0, in_slices=3, z_spacing=3.0, decoder_channels=(32, 32, 16, 16, 16),
                     epochs=12, batch_size=8, slices_per_epoch=512, lr=3e-3)),
    # ImageNet EfficientNet-Lite0 per slice, its first three block stages frozen and cached per crop
    # (feature_cache.py): on 2 CPU cores an epoch then costs only the low-resolution rest.
    cls=_frozen(dict(backbone="tf_efficientnet_lite0", pretrained="imagenet", frozen_stages=3, n_slices=12,
                     k=3, image_size=64, gru_hidden=64, attn_dim=32, dropout=0.2, pixel_head=True, epochs=10,
                     batch_size=8, lr=1e-3, backbone_lr_scale=0.3, prefix_variants=4, aux_weight=1.0)))

_DEFAULTS = CtPreset("defaults", "the configuration dataclasses' defaults, unchanged")

_DEMO = CtPreset(
    "demo", "what `cspine demo` trains on its CPU phantom set (synthetic)", base="fast",
    # The fast preset's ImageNet EfficientNet-Lite0 U-Net encoder at 64 px; 5-slice stacks give 20 mm of
    # context to tell the levels apart; augmentation on. Validation Dice 0.81 per level, every level
    # identified (synthetic; was 0.75-0.78 with a random-init MobileNetV3).
    seg=_frozen(dict(backbone="tu-tf_efficientnet_lite0", pretrained="imagenet", field_mm=140.0,
                     z_spacing=4.0, in_slices=5, decoder_channels=(32, 32, 16, 16, 16), lr=3e-3, batch_size=8,
                     epochs=14, slices_per_epoch=512, image_size=64)),
    # Stage 2 is the fast preset (ImageNet Lite0, first three stages frozen and cached per crop, 64 px,
    # 12 slices) cut to what a CPU demo affords: 4 epochs, two augmented copies per crop. Measured on the
    # demo's data (synthetic, 40 validation studies, docs/BENCHMARKS.md): validation vertebra AUC 0.70 ->
    # 0.84 over the first 3 epochs (0.85 at 5-6); freezing six stages instead made an epoch ~6x cheaper but
    # stopped at 0.76.
    cls=_frozen(dict(prefix_variants=2, epochs=4)))

_DEMO_QUICK = CtPreset(
    "demo-quick", "`cspine demo --quick`: tiny everything, each step in well under a minute", base="fast",
    seg=_frozen(dict(backbone="resnet18", z_spacing=4.0, encoder_depth=3, decoder_channels=(16, 8, 8),
                     epochs=1, slices_per_epoch=32, image_size=64)),
    cls=_frozen(dict(backbone="test_efficientnet", n_slices=6, image_size=32, gru_hidden=8, attn_dim=8,
                     max_steps_per_epoch=2, pixel_head=True, epochs=1)))

#: Every CT training preset, by name.
CT_PRESETS: dict[str, CtPreset] = {p.name: p for p in (_PAPER, _FAST, _DEFAULTS, _DEMO, _DEMO_QUICK)}

#: The preset training uses by default on each kind of device.
DEFAULT_PRESET: dict[str, str] = {"cuda": "paper", "cpu": "fast"}


def preset_names() -> tuple[str, ...]:
    """The names ``--preset`` accepts."""
    return tuple(CT_PRESETS)


def get_preset(name: str) -> CtPreset:
    """The preset called ``name``.

    Raises:
        CspineError: no preset has that name (the message lists them).
    """
    if name not in CT_PRESETS:
        from cspine.errors import CspineError

        raise CspineError(f"unknown preset {name!r}; choose one of {', '.join(CT_PRESETS)}")
    return CT_PRESETS[name]
