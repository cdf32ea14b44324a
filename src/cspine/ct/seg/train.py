"""Stage-1 training: Dice + cross-entropy on 2.5D slice stacks of the studies that have masks.

Every study is first resampled once onto the model grid (``z_spacing`` mm, ``image_size`` pixels;
see :mod:`cspine.ct.seg.grid`) and kept in RAM as uint8, so an epoch costs only the network.
Each epoch draws ``slices_per_epoch`` stacks (mostly from slices showing a vertebra), augments them
without changing which level is which, and ends with a validation on whole held-out studies
(patient-level split) that runs exactly the inference path (batched stacks, argmax, post-processing)
on the reduced grid. The best epoch by mean Dice is written to ``OUT/seg/model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from cspine import distributed as ddp
from cspine.checkpoint import (
    CONFIG,
    LOG,
    METRICS,
    WEIGHTS,
    load_training_state,
    save_model,
    save_training_state,
)
from cspine.errors import CspineError, DatasetError
from cspine.fileio import append_jsonl, write_json
from cspine.io.volume import Volume
from cspine.metrics.segmentation import aggregate, segmentation_metrics
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.runtime import autocast, resolve_device, seed_everything

from .dataset import ReducedStudy, SliceDataset, augment_batch, reduce_study, sample_slices
from .postprocess import postprocess
from .predict import KIND, predict_stacks, seg_config_from_dict

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegTrainConfig:
    """Stage-1 training options (the model's own options live in ``model``).

    Attributes:
        model: the :class:`SegConfig` of the network and its input grid.
        epochs: passes of ``slices_per_epoch`` sampled stacks each.
        batch_size: stacks per optimizer step.
        lr: AdamW peak learning rate (cosine decay to 0 over all steps).
        weight_decay: AdamW weight decay.
        val_fraction: share of patients held out for validation (at least one when there are two).
        seed: seeds the split, the sampling, the augmentation and the initial weights.
        slices_per_epoch: 2.5D stacks drawn per epoch.
        foreground_share: share of stacks drawn from slices that show a vertebra.
        augment: rotation/scale/shift/mirror + intensity augmentation.
        amp: mixed precision on a GPU (no effect on the CPU).
        dice_weight: weight of the soft Dice loss next to cross-entropy (weight 1).
        num_workers: DataLoader workers.
        max_studies: use at most this many studies with masks (``None``: all).
    """

    model: SegConfig = field(default_factory=SegConfig)
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0
    slices_per_epoch: int = 2048
    foreground_share: float = 0.8
    augment: bool = True
    amp: bool = True
    dice_weight: float = 1.0
    num_workers: int = 0
    max_studies: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> SegTrainConfig:
        """Rebuild from :func:`dataclasses.asdict` output (e.g. ``config.json``'s ``extra.train``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
              if k in names and k != "model"}
        return cls(model=seg_config_from_dict(data.get("model", {})), **kw)


# --- data ----------------------------------------------------------------------------------------

def _from_volumes(volumes: Sequence[tuple[Volume, np.ndarray]], cfg: SegConfig) -> Iterator[ReducedStudy]:
    for i, (vol, mask) in enumerate(volumes):
        uid = vol.study_uid or f"study{i:04d}"
        yield reduce_study(uid, vol.hu, vol.spacing, np.asarray(mask), cfg,
                           group=str(vol.meta.get("patient_group", uid)))


def _from_cache(cache: Path, cfg: SegConfig) -> Iterator[ReducedStudy]:
    from cspine.preprocess.cache import StudyCache

    store = StudyCache(cache)
    for uid in store.uids():
        mask = store.load_mask(uid, mmap=True)
        if mask is None:
            continue
        vol = store.load(uid)
        yield reduce_study(uid, vol.hu, vol.spacing, np.asarray(mask), cfg)


def _from_rsna(root: Path, cfg: SegConfig, bad_masks: str = "error") -> Iterator[ReducedStudy]:
    """The studies with a mask, masks checked as ``cspine ct prepare`` checks them (one loader for every
    CT trainer: :mod:`cspine.ct.training_studies`)."""
    from cspine.ct.training_studies import iter_training_studies

    for st in iter_training_studies(root, require_mask=True, bad_masks=bad_masks):
        yield reduce_study(st.uid, st.volume.hu, st.volume.spacing, st.mask, cfg)  # type: ignore[arg-type]


def load_training_studies(data: Path | None, cfg: SegTrainConfig, *, cache: Path | None = None,
                          volumes: Sequence[tuple[Volume, np.ndarray]] | None = None,
                          bad_masks: str = "error") -> list[ReducedStudy]:
    """Prepare every study with a mask from ``volumes``, else ``cache``, else the RSNA root ``data``
    (``bad_masks``: ``error`` | ``exclude`` for a mask there that fails its checks)."""
    if volumes is not None:
        source: Iterator[ReducedStudy] = _from_volumes(volumes, cfg.model)
        where = "the given volumes"
    elif cache is not None:
        source, where = _from_cache(Path(cache), cfg.model), str(cache)
    elif data is not None:
        source, where = _from_rsna(Path(data), cfg.model, bad_masks), str(data)
    else:
        raise ValueError("train_segmentation needs data, cache or volumes")
    studies: list[ReducedStudy] = []
    from tqdm.auto import tqdm

    for st in tqdm(source, desc="seg: preparing studies", unit="study", leave=False, disable=None):
        if not st.foreground_slices.size:
            log.warning("study %s: its mask has no C1..C7 voxel; skipped", st.uid)
            continue
        studies.append(st)
        if cfg.max_studies is not None and len(studies) >= cfg.max_studies:
            break
    if not studies:
        raise DatasetError("no study with a C1..C7 segmentation mask to train stage 1 on", where)
    return studies


def split_studies(studies: Sequence[ReducedStudy], val_fraction: float, seed: int, path: Path | None = None,
                  table: pd.DataFrame | None = None) -> tuple[list[ReducedStudy], list[ReducedStudy]]:
    """Patient-level split on the run's folds (:func:`cspine.io.rsna.fold_split`, saved at ``path``): all
    studies of a patient (``group``) land on the same side. ``table``: the dataset's ``train.csv`` (the
    folds every trainer of the run shares); default: the studies themselves."""
    from cspine.io.rsna import fold_split, folds_table

    if table is None:
        table = folds_table({s.uid: {} for s in studies}, {s.uid: s.group for s in studies})
    _, val_uids = fold_split([s.uid for s in studies], table, path, val_fraction=val_fraction, seed=seed)
    held_out = set(val_uids)
    train = [s for s in studies if s.uid not in held_out]
    val = [s for s in studies if s.uid in held_out]
    if not val:
        log.warning("only %d patient(s) in the validation fold: validating on the training studies",
                    len({s.group for s in studies}))
        val = list(train)
    return train, val


# --- loss and validation -------------------------------------------------------------------------

def seg_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x (1 - soft Dice of the foreground classes pooled over the batch)."""
    logits = logits.float()
    ce = F.cross_entropy(logits, target)
    if dice_weight == 0:
        return ce
    probs = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice_weight * (1 - dice.mean())


def validate(net: torch.nn.Module, studies: Sequence[ReducedStudy], cfg: SegConfig, device: torch.device,
             batch_size: int = 16) -> dict[str, object]:
    """Inference path on whole studies (reduced grid): Dice per level, mean Dice, level identification."""
    levels = tuple(range(1, cfg.n_classes))
    was_training = net.training
    net.eval()
    try:
        per_study = []
        for st in studies:
            pred = predict_stacks(net, st.image, cfg.in_slices, device, batch_size)
            pred, _ = postprocess(pred, levels)
            per_study.append(segmentation_metrics(pred, st.mask))
    finally:
        net.train(was_training)
    return aggregate(per_study)


# --- training ------------------------------------------------------------------------------------

def train_segmentation(data: Path | None, out: Path, cfg: SegTrainConfig, *, cache: Path | None = None,
                       volumes: Sequence[tuple[Volume, np.ndarray]] | None = None, resume: bool = False,
                       device: str | None = None, bad_masks: str = "error") -> Path:
    """Train the stage-1 U-Net and write ``out/seg``.

    Args:
        data: an RSNA root (studies with ``segmentations/<uid>.nii``), used when neither ``cache``
            nor ``volumes`` is given.
        out: the run folder; the model goes to ``out/seg``.
        cfg: training options.
        cache: a prepared study cache (``cspine ct prepare``): studies with a stored mask are used.
        volumes: in-memory (canonical volume, label mask) pairs, mainly for tests.
        resume: continue from ``out/seg/last.*`` after an interruption.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (auto).
        bad_masks: ``"error"`` | ``"exclude"``: a mask of ``data`` that fails its checks stops the training /
            is left out (masks of a ``cache`` were checked when it was prepared).

    Returns:
        ``out/seg`` holding ``model.safetensors`` (best mean Dice), ``config.json``, ``log.jsonl``,
        ``metrics.json`` and the resume state.

    Raises:
        CspineError: ``out/seg`` already holds a model and ``resume`` is false, or no study has a mask.
    """
    seg_dir = Path(out) / KIND
    if not resume and ((seg_dir / WEIGHTS).exists() or (seg_dir / LOG).exists()):
        raise CspineError("already holds a stage-1 model; pass --resume to continue it or choose another "
                          "--out (nothing was overwritten)", seg_dir)
    ddp.init_from_env(device)  # under torchrun: join the ranks (no-op otherwise)
    dev = resolve_device(ddp.local_device(device))
    world = ddp.world_size()
    if cfg.batch_size % world:
        raise CspineError(f"batch size {cfg.batch_size} does not split over {world} processes; give a "
                          "multiple of the process count (each takes an equal share of every batch)")
    seed_everything(cfg.seed)
    studies = load_training_studies(data, cfg, cache=cache, volumes=volumes, bad_masks=bad_masks)
    from cspine.io.rsna import FOLDS_CSV, RsnaDataset

    table = RsnaDataset(data).train if data is not None and volumes is None else None
    train_set, val_set = split_studies(studies, cfg.val_fraction, cfg.seed, Path(out) / FOLDS_CSV, table)
    log.info("stage 1: %d training and %d validation studies on %s", len(train_set), len(val_set), dev)

    net = build_seg_model(cfg.model).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(cfg.slices_per_epoch / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
    start, best = 0, -1.0
    if resume:
        state = load_training_state(seg_dir, net, opt, sched)
        if state is not None:
            start, best = int(state["epoch"]) + 1, float(state["best"])
            log.info("resuming stage 1 at epoch %d (best mean Dice so far %.4f)", start + 1, best)
    fit = ddp.wrap_ddp(net, dev)  # gradients averaged across ranks under torchrun
    fp16 = dev.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    extra = {"train": dataclasses.asdict(cfg), "n_train": len(train_set), "n_val": len(val_set),
             "val_uids": [s.uid for s in val_set]}

    from tqdm.auto import tqdm

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 7919 * ddp.rank())
        index = sample_slices(train_set, cfg.slices_per_epoch, rng, cfg.foreground_share)
        mine = ddp.rank_slice(index, cfg.batch_size // world)  # this rank's share of every global batch
        loader = torch.utils.data.DataLoader(SliceDataset(train_set, mine, cfg.model.in_slices),
                                             batch_size=cfg.batch_size // world, shuffle=False,
                                             num_workers=cfg.num_workers, pin_memory=dev.type == "cuda")
        net.train()
        losses = []
        bar = tqdm(loader, desc=f"seg epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=None)
        for x, y in bar:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if cfg.augment:
                x, y = augment_batch(x, y, gen)
            with autocast(dev, enabled=cfg.amp):
                logits = fit(x)
            loss = seg_loss(logits, y, cfg.dice_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_s = time.perf_counter() - t0
        loss_sum, n_steps = ddp.all_reduce_sums([sum(losses), len(losses)], dev)
        # validation once, on rank 0; every rank gets its result
        val = ddp.broadcast_object(validate(net, val_set, cfg.model, dev, cfg.batch_size) if ddp.is_main()
                                   else None)
        mean = val["mean_dice"] if val["mean_dice"] is not None else 0.0
        record = {"epoch": epoch + 1, "loss": loss_sum / n_steps if n_steps else None,
                  "lr": sched.get_last_lr()[0], "val_mean_dice": val["mean_dice"], "val_dice": val["dice"],
                  "val_level_identification": val["level_identification_accuracy"],
                  "train_seconds": round(train_s, 2), "slices_per_second": round(len(index) / train_s, 2),
                  "seconds": round(time.perf_counter() - t0, 2)}
        if not ddp.is_main():  # only rank 0 writes
            best = max(best, mean)
            continue
        append_jsonl(seg_dir / LOG, record)
        log.info("seg epoch %d: loss %.4f, val mean Dice %.4f", epoch + 1, record["loss"] or 0, mean)
        if mean > best or not (seg_dir / WEIGHTS).exists():
            best = max(best, mean)
            save_model(seg_dir, net, cfg.model, KIND, extra={**extra, "epoch": epoch + 1})
            write_json(seg_dir / METRICS, {"epoch": epoch + 1, "split": "validation", "grid": "reduced",
                                           **val, "n_train": len(train_set)})
        save_training_state(seg_dir, net, opt, sched, {"epoch": epoch, "best": best})
    # epochs == 0 or resumed past the end: still a usable folder
    if ddp.is_main() and not (seg_dir / CONFIG).exists():
        save_model(seg_dir, net, cfg.model, KIND, extra={**extra, "epoch": start})
    return seg_dir
