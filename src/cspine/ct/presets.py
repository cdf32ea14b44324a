"""Training configurations of both CT stages built from a named preset (:mod:`cspine.registry.presets`:
``paper`` for a GPU, ``fast`` for a CPU, ``defaults``, ``demo``, ``demo-quick``).

The default is ``paper`` on a GPU and ``fast`` on a CPU. Any option given explicitly (``--epochs``,
``--batch-size``, ``--image-size``, ``--backbone``, ``--amp``) overrides the preset.
:func:`cspine.ct.train_run.train_run` is the typed API behind ``cspine ct train``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cspine.registry.presets import DEFAULT_PRESET, get_preset


def default_preset(device: str | None = None) -> str:
    """``paper`` when training runs on a GPU, ``fast`` on a CPU."""
    from cspine.runtime import resolve_device

    return DEFAULT_PRESET["cuda" if resolve_device(device).type == "cuda" else "cpu"]


def _resolve(preset: str, stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the preset's starting values, the values applied over them as options) of one stage."""
    p = get_preset(preset)
    values = dict(getattr(p, stage))
    if p.base is None:
        return values, {}
    start, over = _resolve(p.base, stage)
    return start, {**over, **values}


def _swap_backbone(model_kw: dict[str, Any], backbone: str | None) -> None:
    """Put ``backbone`` in place of the preset's. The preset's weights and frozen stages belong to its own
    backbone: another one takes ImageNet weights only where the offline registry has them, and nothing
    frozen (explicit overrides, applied after this, still set either)."""
    if not backbone or backbone == model_kw.get("backbone"):
        return
    from cspine.registry.weights import entry_for

    model_kw["backbone"] = backbone
    if model_kw.get("pretrained") == "imagenet" and entry_for(backbone) is None:
        model_kw["pretrained"] = "none"
    model_kw.pop("frozen_stages", None)


def given(**kwargs: Any) -> dict[str, Any]:
    """The options that were given (``None`` means "the preset's")."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _build(stage: str, preset: str, train_cls: Any, model_cls: Any, explicit: dict[str, Any]) -> Any:
    """``train_cls(model=model_cls(...), ...)`` of ``preset`` with ``explicit`` options over it."""
    start, options = _resolve(preset, stage)
    options = {**options, **explicit}
    train_fields = {f.name for f in dataclasses.fields(train_cls)}
    model_kw = {k: v for k, v in start.items() if k not in train_fields}
    train_kw = {k: v for k, v in start.items() if k in train_fields}
    _swap_backbone(model_kw, options.pop("backbone", None))
    for key, value in options.items():
        (train_kw if key in train_fields else model_kw)[key] = value
    return train_cls(model=model_cls(**model_kw), **train_kw)


def seg_train_config(preset: str, *, epochs: int | None = None, batch_size: int | None = None,
                     image_size: int | None = None, backbone: str | None = None, amp: bool | None = None,
                     **model_overrides: Any) -> Any:
    """The stage-1 :class:`~cspine.ct.seg.train.SegTrainConfig` of a preset, with overrides.

    Raises:
        CspineError: an unknown preset.
    """
    from cspine.ct.seg.train import SegTrainConfig
    from cspine.models.unet2p5d import SegConfig

    explicit = {**model_overrides, **given(epochs=epochs, batch_size=batch_size, image_size=image_size,
                                            backbone=backbone, amp=amp)}
    return _build("seg", preset, SegTrainConfig, SegConfig, explicit)


def cls_train_config(preset: str, *, epochs: int | None = None, batch_size: int | None = None,
                     image_size: int | None = None, backbone: str | None = None, amp: bool | None = None,
                     **model_overrides: Any) -> Any:
    """The stage-2 :class:`~cspine.ct.cls.train.ClsTrainConfig` of a preset, with overrides.

    Raises:
        CspineError: an unknown preset.
    """
    from cspine.ct.cls.train import ClsTrainConfig
    from cspine.models.vertebra_classifier import ClsConfig

    explicit = {**model_overrides, **given(epochs=epochs, batch_size=batch_size, image_size=image_size,
                                            backbone=backbone, amp=amp)}
    return _build("cls", preset, ClsTrainConfig, ClsConfig, explicit)


def split_backbone(backbone: str | None) -> tuple[str | None, str | None]:
    """``--backbone``: ``SEG,CLS`` names each stage's encoder; one name serves both stages (stage 2
    drops smp's ``tu-`` prefix, which marks a timm encoder inside segmentation-models-pytorch)."""
    if not backbone:
        return None, None
    if "," in backbone:
        seg, cls = (part.strip() or None for part in backbone.split(",", 1))
        return seg, cls
    return backbone, backbone.removeprefix("tu-")
