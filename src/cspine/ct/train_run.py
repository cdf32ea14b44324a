"""Train stage 1, stage 2 or both into one RUN folder: the typed API behind ``cspine ct train`` (and the
demo's training steps). The configurations come from the named presets (:mod:`cspine.ct.presets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cspine.ct.presets import cls_train_config, default_preset, given, seg_train_config, split_backbone
from cspine.registry.presets import get_preset
from cspine.registry.stages import ALL, CLS, SEG, check_train_stage


def train_run(data: Path | None, out: Path, *, stage: str = ALL, epochs: int | None = None,
              batch_size: int | None = None, image_size: int | None = None, backbone: str | None = None,
              device: str | None = None, amp: bool | None = None, resume: bool = False,
              preset: str | None = None, cache: Path | None = None, pretrained: str | None = None,
              seg_overrides: dict[str, Any] | None = None, cls_overrides: dict[str, Any] | None = None,
              volumes: Any = None, studies: Any = None, progress: bool = True,
              bad_masks: str = "error") -> dict[str, Any]:
    """Train stage 1, stage 2 or both into ``out`` (what ``cspine ct train`` runs).

    ``--stage all`` trains stage 1 (``out/seg``), pseudo-labels the cached studies without a mask
    (when a cache is given; otherwise stage 2 runs stage 1 on them on the fly), then trains stage 2
    (``out/cls``). ``seg_overrides``/``cls_overrides`` set any config field (model or training).
    ``bad_masks`` (``error`` | ``exclude``): what a segmentation that fails its checks does when studies are
    read from ``data`` itself (a cache holds masks ``cspine ct prepare`` checked already).

    Returns:
        ``{"out": out, "stages": [...], "preset": name, "metrics": {stage: metrics.json}}``.

    Raises:
        CspineError: an unknown stage or preset, no usable study, an existing model without resume.
    """
    from cspine.fileio import read_json

    check_train_stage(stage)
    preset = preset or default_preset(device)
    get_preset(preset)
    out = Path(out)
    # Explicit options win over the overrides dicts, which win over the preset.
    common = given(epochs=epochs, batch_size=batch_size, image_size=image_size, amp=amp)
    seg_backbone, cls_backbone = split_backbone(backbone)
    done: list[str] = []
    metrics: dict[str, Any] = {}
    if stage in (SEG, ALL):
        from cspine.ct.seg.train import train_segmentation

        extra = dict(seg_overrides or {})
        if pretrained is not None:
            extra.setdefault("pretrained", pretrained)
        scfg = seg_train_config(preset, **{**extra, **common, **given(backbone=seg_backbone)})
        seg_folder = train_segmentation(data, out, scfg, cache=cache, volumes=volumes, resume=resume,
                                        device=device, bad_masks=bad_masks)
        done.append(SEG)
        seg_metrics = Path(seg_folder) / "metrics.json"
        metrics[SEG] = read_json(seg_metrics) if seg_metrics.exists() else {}
        if cache is not None:
            from cspine import distributed as ddp
            from cspine.ct.seg.pseudo import pseudo_label_cache

            if ddp.is_main():  # once, not once per torchrun rank; the others wait for it
                pseudo_label_cache(cache, seg_folder, device=device)
            ddp.barrier()
    if stage in (CLS, ALL):
        from cspine.ct.cls.train import train_classifier

        seg_dir = out / SEG if (out / SEG / "config.json").exists() else None
        extra = dict(cls_overrides or {})
        if pretrained is not None:
            extra.setdefault("pretrained", pretrained)
        ccfg = cls_train_config(preset, **{**extra, **common, **given(backbone=cls_backbone)})
        cls_folder = train_classifier(data, out, ccfg, cache=cache, seg_dir=seg_dir, studies=studies,
                                      resume=resume, device=device, progress=progress, bad_masks=bad_masks)
        done.append(CLS)
        metrics[CLS] = read_json(cls_folder / "metrics.json")
    return {"out": str(out), "stages": done, "preset": preset, "metrics": metrics}
