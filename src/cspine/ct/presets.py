"""Training presets for both CT stages: ``paper`` (the paper's backbones and sizes, for a GPU) and
``fast`` (small backbones and images, for a CPU).

``fast`` is sized so that both stages train on a 50-study 256x256 phantom set in about 20 minutes
on 2 CPU cores; ``cspine demo`` shrinks it further. The default is ``paper`` on a GPU and ``fast``
on a CPU. Any option given explicitly (``--epochs``, ``--batch-size``, ``--image-size``,
``--backbone``, ``--amp``) overrides the preset.

:func:`train_run` is the typed API behind ``cspine ct train`` (one stage or both into a RUN folder).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cspine.ct.cls.train import ClsTrainConfig
from cspine.models.vertebra_classifier import ClsConfig

PRESETS: tuple[str, ...] = ("paper", "fast")


def default_preset(device: str | None = None) -> str:
    """``paper`` when training runs on a GPU, ``fast`` on a CPU."""
    from cspine.runtime import resolve_device

    return "paper" if resolve_device(device).type == "cuda" else "fast"


def _check(preset: str) -> None:
    if preset not in PRESETS:
        from cspine.errors import CspineError

        raise CspineError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def _seg_base(preset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(SegConfig fields, SegTrainConfig fields) of a preset."""
    if preset == "paper":
        # The RSNA runner-up's 2.5D U-Net: EfficientNet-B0 encoder, 256 px, 3 slices.
        # ImageNet weights from smp's/timm's local cache (a machine that has them; nothing is downloaded).
        return (dict(backbone="efficientnet-b0", pretrained="imagenet", image_size=256, in_slices=3,
                     z_spacing=2.0),
                dict(epochs=20, batch_size=16, slices_per_epoch=2048, lr=1e-3))
    # ImageNet EfficientNet-Lite0 encoder from the offline registry (cspine.registry.weights).
    return (dict(backbone="tu-tf_efficientnet_lite0", pretrained="imagenet", image_size=96, in_slices=3,
                 z_spacing=3.0, decoder_channels=(32, 32, 16, 16, 16)),
            dict(epochs=12, batch_size=8, slices_per_epoch=512, lr=3e-3))


def _cls_base(preset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ClsConfig fields, ClsTrainConfig fields) of a preset."""
    if preset == "paper":
        # The CT paper / RSNA winners: EfficientNetV2-S per slice, 24 slices, BiGRU + attention.
        return (dict(backbone="tf_efficientnetv2_s", pretrained="imagenet", n_slices=24, k=3, image_size=224,
                     gru_hidden=256, attn_dim=128, dropout=0.2),
                dict(epochs=15, batch_size=8, lr=3e-4))
    # ImageNet EfficientNet-Lite0 per slice, its first three block stages frozen and cached per crop
    # (feature_cache.py): on 2 CPU cores an epoch then costs only the low-resolution rest.
    return (dict(backbone="tf_efficientnet_lite0", pretrained="imagenet", frozen_stages=3, n_slices=12, k=3,
                 image_size=64, gru_hidden=64, attn_dim=32, dropout=0.2, pixel_head=True),
            dict(epochs=10, batch_size=8, lr=1e-3, backbone_lr_scale=0.3, prefix_variants=4, aux_weight=1.0))


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


def _given(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def seg_train_config(preset: str, *, epochs: int | None = None, batch_size: int | None = None,
                     image_size: int | None = None, backbone: str | None = None, amp: bool | None = None,
                     **model_overrides: Any) -> Any:
    """The stage-1 :class:`~cspine.ct.seg.train.SegTrainConfig` of a preset, with overrides."""
    from cspine.ct.seg.train import SegTrainConfig
    from cspine.models.unet2p5d import SegConfig

    _check(preset)
    model_kw, train_kw = _seg_base(preset)
    _swap_backbone(model_kw, backbone)
    model_kw.update(_given(image_size=image_size))
    train_fields = {f.name for f in dataclasses.fields(SegTrainConfig)}
    for key, value in model_overrides.items():
        (train_kw if key in train_fields else model_kw)[key] = value
    train_kw.update(_given(epochs=epochs, batch_size=batch_size, amp=amp))
    return SegTrainConfig(model=SegConfig(**model_kw), **train_kw)


def cls_train_config(preset: str, *, epochs: int | None = None, batch_size: int | None = None,
                     image_size: int | None = None, backbone: str | None = None, amp: bool | None = None,
                     **model_overrides: Any) -> ClsTrainConfig:
    """The stage-2 :class:`~cspine.ct.cls.train.ClsTrainConfig` of a preset, with overrides."""
    _check(preset)
    model_kw, train_kw = _cls_base(preset)
    _swap_backbone(model_kw, backbone)
    model_kw.update(_given(image_size=image_size))
    train_fields = {f.name for f in dataclasses.fields(ClsTrainConfig)}
    for key, value in model_overrides.items():
        (train_kw if key in train_fields else model_kw)[key] = value
    train_kw.update(_given(epochs=epochs, batch_size=batch_size, amp=amp))
    return ClsTrainConfig(model=ClsConfig(**model_kw), **train_kw)


def split_backbone(backbone: str | None) -> tuple[str | None, str | None]:
    """``--backbone``: ``SEG,CLS`` names each stage's encoder; one name serves both stages (stage 2
    drops smp's ``tu-`` prefix, which marks a timm encoder inside segmentation-models-pytorch)."""
    if not backbone:
        return None, None
    if "," in backbone:
        seg, cls = (part.strip() or None for part in backbone.split(",", 1))
        return seg, cls
    return backbone, backbone.removeprefix("tu-")


def train_run(data: Path | None, out: Path, *, stage: str = "all", epochs: int | None = None,
              batch_size: int | None = None, image_size: int | None = None, backbone: str | None = None,
              device: str | None = None, amp: bool | None = None, resume: bool = False,
              preset: str | None = None, cache: Path | None = None, pretrained: str | None = None,
              seg_overrides: dict[str, Any] | None = None, cls_overrides: dict[str, Any] | None = None,
              volumes: Any = None, studies: Any = None, progress: bool = True) -> dict[str, Any]:
    """Train stage 1, stage 2 or both into ``out`` (what ``cspine ct train`` runs).

    ``--stage all`` trains stage 1 (``out/seg``), pseudo-labels the cached studies without a mask
    (when a cache is given; otherwise stage 2 runs stage 1 on them on the fly), then trains stage 2
    (``out/cls``). ``seg_overrides``/``cls_overrides`` set any config field (model or training).

    Returns:
        ``{"out": out, "stages": [...], "preset": name, "metrics": {stage: metrics.json}}``.

    Raises:
        CspineError: an unknown stage or preset, no usable study, an existing model without resume.
    """
    from cspine.errors import CspineError
    from cspine.fileio import read_json

    if stage not in ("seg", "cls", "all"):
        raise CspineError(f"unknown --stage {stage!r}; choose seg, cls or all")
    preset = preset or default_preset(device)
    _check(preset)
    out = Path(out)
    # Explicit options win over the overrides dicts, which win over the preset.
    common = _given(epochs=epochs, batch_size=batch_size, image_size=image_size, amp=amp)
    seg_backbone, cls_backbone = split_backbone(backbone)
    done: list[str] = []
    metrics: dict[str, Any] = {}
    if stage in ("seg", "all"):
        from cspine.ct.seg.train import train_segmentation

        extra = dict(seg_overrides or {})
        if pretrained is not None:
            extra.setdefault("pretrained", pretrained)
        scfg = seg_train_config(preset, **{**extra, **common, **_given(backbone=seg_backbone)})
        seg_folder = train_segmentation(data, out, scfg, cache=cache, volumes=volumes, resume=resume,
                                        device=device)
        done.append("seg")
        seg_metrics = Path(seg_folder) / "metrics.json"
        metrics["seg"] = read_json(seg_metrics) if seg_metrics.exists() else {}
        if cache is not None:
            from cspine.ct.seg.pseudo import pseudo_label_cache

            pseudo_label_cache(cache, seg_folder, device=device)
    if stage in ("cls", "all"):
        from cspine.ct.cls.train import train_classifier

        seg_dir = out / "seg" if (out / "seg" / "config.json").exists() else None
        extra = dict(cls_overrides or {})
        if pretrained is not None:
            extra.setdefault("pretrained", pretrained)
        ccfg = cls_train_config(preset, **{**extra, **common, **_given(backbone=cls_backbone)})
        cls_folder = train_classifier(data, out, ccfg, cache=cache, seg_dir=seg_dir, studies=studies,
                                      resume=resume, device=device, progress=progress)
        done.append("cls")
        metrics["cls"] = read_json(cls_folder / "metrics.json")
    return {"out": str(out), "stages": done, "preset": preset, "metrics": metrics}
