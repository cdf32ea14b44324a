"""Train the stage-2 vertebra classifier and calibrate it: ``RUN/cls``.

Loss: the competition-weighted BCE per vertebra (weight 1 for an intact, 2 for a fractured one) plus
``aux_weight`` x a per-slice BCE on the slice targets of :mod:`cspine.ct.cls.dataset`. The patient
label is not modelled by the network: the patient probability is the calibrated noisy-OR of the
vertebra probabilities (see :mod:`cspine.ct.cls.calibrate`).

Sampling: fractured and intact vertebrae are drawn with equal probability (``pos_fraction``) with
replacement, an epoch being as many draws as there are training vertebrae. ``crop_variants`` adds that
many crops per training vertebra with jittered geometry (:func:`cspine.ct.cls.crops.jitter_geometry`:
stage-1 masks at prediction time place crops less exactly than the true masks many training studies
have); they widen what an epoch draws from, not its length. The validation split is the run's
patient-level folds (``RUN/folds.csv``, :func:`cspine.io.rsna.fold_split`: stratified on the fracture
pattern; validation is fold 0 of ``round(1 / val_fraction)``), shared with stage 1 and the baseline.
The checkpoint kept is the epoch with the lowest validation weighted loss after calibration (ties:
last); temperature and bias are fitted on the same validation split and stored in ``config.json``.
Optimisation, selection, calibration and saving are the shared training skeleton
:func:`cspine.ct.cls.loop.fit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cspine.ct.cls.dataset import UNKNOWN, ClsStudy, CropDataset, CropSample, build_samples
from cspine.ct.cls.loop import FitData, check_out_folder, fit
from cspine.errors import DatasetError
from cspine.io.rsna import FOLDS_CSV
from cspine.labels import VERTEBRA_WEIGHTS, VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig, build_classifier
from cspine.runtime import autocast, resolve_device, seed_everything

log = logging.getLogger(__name__)

KIND = "vertebra_classifier"


@dataclass(frozen=True)
class ClsTrainConfig:
    """Stage-2 training settings (``model`` is saved as the model folder's config)."""

    model: ClsConfig = field(default_factory=ClsConfig)
    epochs: int = 15
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_epochs: float = 0.5
    aux_weight: float = 1.0
    pixel_weight: float = 5.0
    pos_fraction: float = 0.5
    val_fraction: float = 0.2
    seed: int = 0
    amp: bool = True
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    # Extra training crops per vertebra with jittered geometry (see crops.jitter_geometry): 0 = none.
    crop_variants: int = 0
    crop_jitter: float = 0.15
    # Learning rate of the pretrained CNN relative to ``lr`` (the new GRU, attention and heads): a
    # pretrained backbone fine-tunes at a fraction of the rate new layers need.
    backbone_lr_scale: float = 1.0
    # With ClsConfig.frozen_stages: augmented copies of each training crop whose frozen-prefix features
    # are cached (feature_cache.py); each draw picks one.
    prefix_variants: int = 4


def run_split(labels: dict[str, dict[str, int]], data: Path | None, path: Path, cfg: ClsTrainConfig
              ) -> tuple[list[str], list[str]]:
    """The (train, validation) studies of ``labels``: the run's saved patient-level folds
    (:func:`cspine.io.rsna.fold_split`), made from ``data``'s whole ``train.csv`` when training from an RSNA
    root (so every trainer of the run shares them), else from ``labels``."""
    from cspine.io.rsna import RsnaDataset, fold_split, folds_table

    table = RsnaDataset(data).train if data is not None else folds_table(labels)
    return fold_split(list(labels), table, path, val_fraction=cfg.val_fraction, seed=cfg.seed)


def param_groups(model: torch.nn.Module, lr: float, backbone_scale: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: the per-slice CNN at ``lr * backbone_scale``, the rest at ``lr``
    (frozen parameters are left out)."""
    backbone = {id(p) for p in model.backbone.parameters()}  # type: ignore[union-attr]
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) in backbone], "lr": lr * backbone_scale},
              {"params": [p for p in trainable if id(p) not in backbone], "lr": lr}]
    return [g for g in groups if g["params"]]


def pixel_loss(pixel_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of ``(B, N, h, w)`` fracture-box logits against ``(B, N, H, W)`` uint8 pixel targets.

    A feature cell is positive when any pixel it covers is in a box (max-pooling), unknown when it
    covers an unknown pixel and no box pixel; unknown cells do not count.
    """
    h, w = pixel_logits.shape[-2:]
    t = target.flatten(0, 1)[:, None].float()
    pos = F.adaptive_max_pool2d((t == 1).float(), (h, w))
    unknown = F.adaptive_max_pool2d((t == UNKNOWN).float(), (h, w)) * (1 - pos)
    known = (1 - unknown).reshape(pixel_logits.shape)
    if float(known.sum()) == 0:
        return pixel_logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(pixel_logits.float(), pos.reshape(pixel_logits.shape),
                                             reduction="none")
    return (bce * known).sum() / known.sum()


def weighted_bce_loss(out: Any, y: torch.Tensor, slice_y: torch.Tensor, aux_weight: float,
                      pixel_target: torch.Tensor | None = None, pixel_weight: float = 0.0) -> torch.Tensor:
    """The competition-weighted BCE of ``out.logit`` (1 intact, 2 fractured) + ``aux_weight`` x the
    per-slice BCE of ``out.slice_logits`` (and ``out.feature_slice_logits`` when present) +
    ``pixel_weight`` x :func:`pixel_loss` when the model has a pixel head and targets are given."""
    w = torch.where(y > 0.5, VERTEBRA_WEIGHTS[1], VERTEBRA_WEIGHTS[0]).to(out.logit.dtype)
    main = (F.binary_cross_entropy_with_logits(out.logit.float(), y, reduction="none") * w).sum() / w.sum()
    aux = F.binary_cross_entropy_with_logits(out.slice_logits.float(), slice_y)
    if out.feature_slice_logits is not None:
        aux = aux + F.binary_cross_entropy_with_logits(out.feature_slice_logits.float(), slice_y)
    loss = main + aux_weight * aux
    pixel_logits = getattr(out, "pixel_logits", None)
    if pixel_logits is not None and pixel_target is not None and pixel_target.numel() and pixel_weight:
        loss = loss + pixel_weight * pixel_loss(pixel_logits, pixel_target)
    return loss


@torch.no_grad()
def predict_logits(model: torch.nn.Module, samples: Sequence[CropSample], device: torch.device,
                   batch_size: int = 8, amp: bool = True) -> np.ndarray:
    """Raw vertebra logits of stored samples."""
    model.eval()
    logits = []
    for i in range(0, len(samples), batch_size):
        x = np.stack([s.image for s in samples[i:i + batch_size]]).astype(np.float32) / 255.0
        with autocast(device, amp):
            out = model(torch.from_numpy(x).to(device))
        logits.append(out.logit.float().cpu().numpy())
    return np.concatenate(logits) if logits else np.zeros(0)


def train_classifier(data: Path | None, out: Path, cfg: ClsTrainConfig, *, cache: Path | None = None,
                     seg_dir: Path | None = None, studies: Iterable[ClsStudy] | None = None,
                     resume: bool = False, device: str | None = None, progress: bool = True,
                     bad_masks: str = "error") -> Path:
    """Train, select, calibrate and save the stage-2 model into ``out/cls``.

    Args:
        data: an RSNA 2022 root (ignored when ``studies`` is given).
        out: the RUN folder; the model goes to ``out/cls``.
        cfg: training settings.
        cache: the preprocessing cache (``cspine ct prepare``) and stage-1 pseudo masks.
        seg_dir: a stage-1 model folder (``RUN/seg``) to segment studies without any mask.
        studies: in-memory studies instead of ``data`` (tests, the demo, scripts).
        resume: continue from ``out/cls/last.*`` when present.
        device: ``cpu``, ``cuda`` or ``None`` (auto).
        progress: show progress bars.
        bad_masks: a segmentation of ``data`` that fails its checks (read without a cache):
            ``"error"`` stops, ``"exclude"`` uses the study without it (``cspine ct prepare --bad-masks``).

    Returns:
        The model folder ``out/cls``.
    """
    folder = Path(out) / "cls"
    check_out_folder(folder, resume, "a stage-2 model",
                     "pass --resume to continue it or choose another --out")
    dev = resolve_device(device)
    seed_everything(cfg.seed)
    mcfg = cfg.model
    studies_from_data = studies is None
    if studies is None:
        if data is None:
            raise DatasetError("train_classifier needs an RSNA root (data) or in-memory studies")
        from cspine.ct.cls.dataset import iter_rsna_studies

        studies = iter_rsna_studies(Path(data), cache=cache, seg_dir=seg_dir, device=device,
                                    bad_masks=bad_masks)

    t0 = time.perf_counter()
    samples: list[CropSample] = []
    labels: dict[str, dict[str, int]] = {}
    it = tqdm(studies, desc="stage 2 crops", unit="study", disable=None if progress else True, leave=False)
    for study in it:
        labels[study.uid] = {v: int(study.labels.get(v, 0)) for v in VERTEBRAE}
        samples.extend(build_samples([study], mcfg, variants=1 + cfg.crop_variants, jitter=cfg.crop_jitter,
                                     seed=cfg.seed + len(labels)))
    if not samples:
        raise DatasetError("no study could be used for stage 2: none had a vertebra mask (true or "
                           "pseudo) and no stage-1 model was given; train stage 1 first "
                           "(`cspine ct train --stage seg` or `--stage all`)", data)
    log.info("%d crops from %d studies in %.1fs", len(samples), len(labels), time.perf_counter() - t0)

    train_uids, val_uids = run_split(labels, data if studies_from_data else None, Path(out) / FOLDS_CSV, cfg)
    tr = [s for s in samples if s.uid in set(train_uids)]
    va = [s for s in samples if s.uid in set(val_uids) and s.variant == 0]
    prevalence = {v: float(np.mean([labels[u][v] for u in train_uids])) if train_uids else 0.0
                  for v in VERTEBRAE}

    model = build_classifier(mcfg).to(dev)
    amp = cfg.amp and dev.type == "cuda"
    forward: Any = None
    val_logits: Any = None
    if mcfg.frozen_stages > 0:
        # The frozen prefix never changes: run it once per (augmented) crop, then train only the rest.
        from cspine.ct.cls.feature_cache import PrefixDataset, build_prefix_cache, cached_logits

        t1 = time.perf_counter()
        ds: Any = PrefixDataset(build_prefix_cache(
            model, tr, variants=cfg.prefix_variants, augment=True, seed=cfg.seed,
            mask_channel=mcfg.use_mask_channel, device=dev, progress=progress), seed=cfg.seed)
        val_cache = build_prefix_cache(model, va, variants=1, augment=False, seed=cfg.seed,
                                       mask_channel=mcfg.use_mask_channel, device=dev, progress=progress,
                                       desc="stage 2 validation features") if va else None
        log.info("frozen-prefix features of %d training crops x %d variants in %.1fs", len(tr),
                 cfg.prefix_variants, time.perf_counter() - t1)

        def forward(batch: tuple[torch.Tensor, ...]) -> Any:
            return model.forward_cached(batch[0], batch[4] if batch[4].shape[2] else None)

        def val_logits(net: torch.nn.Module) -> np.ndarray:
            return cached_logits(net, val_cache, dev)
    else:
        ds = CropDataset(tr, augment=True, seed=cfg.seed, mask_channel=mcfg.use_mask_channel)

        def val_logits(net: torch.nn.Module) -> np.ndarray:
            return predict_logits(net, va, dev, cfg.batch_size, amp)

    def loss_fn(out: Any, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        _, y, sy, pix = batch[:4]
        return weighted_bce_loss(out, y, sy, cfg.aux_weight, pix, cfg.pixel_weight)

    # An epoch is as many draws as there are vertebrae: jittered variants add diversity, not steps.
    n_train_vertebrae = sum(s.variant == 0 for s in tr)
    fit_data = FitData(ds, np.array([s.label for s in tr]) > 0.5, n_train_vertebrae, va, val_logits, labels,
                       prevalence)
    fit(folder, model, cfg, fit_data, kind=KIND, name="stage 2", build=lambda: build_classifier(mcfg),
        loss_fn=loss_fn, device=dev, params=param_groups(model, cfg.lr, cfg.backbone_lr_scale),
        forward=forward, resume=resume, progress=progress, operating_points=True,
        metrics={"n_train_studies": len(train_uids), "n_val_studies": len(val_uids),
                 "n_train_vertebrae": n_train_vertebrae, "n_train_crops": len(tr), "n_val_crops": len(va)},
        extra={"absent_vertebra_prior": prevalence, "val_uids": val_uids})
    return folder
