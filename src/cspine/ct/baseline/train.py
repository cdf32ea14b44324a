"""Train and calibrate the one-stage baseline into a model folder.

Everything is stage 2's (:mod:`cspine.ct.cls.train`) except the input and the output width, so that
the comparison measures what localising the vertebrae first is worth:

* config: stage 2's :class:`~cspine.ct.cls.train.ClsTrainConfig` (backbone, image size, ``k``, GRU,
  epochs, lr, batch size, seed ...), with ``n_slices`` multiplied by ``slice_factor`` (default 2: the
  whole scan gets twice the slices of one vertebra crop) and no mask channel
  (:func:`baseline_train_config`);
* loss: stage 2's competition-weighted BCE (weight 1 for an intact, 2 for a fractured vertebra) over
  the seven level logits of each study, plus ``aux_weight`` x a per-slice BCE where the slice targets
  are known (:func:`cspine.ct.baseline.inputs.stack_slice_targets`: from the fracture boxes; a fractured
  study without boxes has none). The patient label is not trained; the patient probability is the
  calibrated noisy-OR, as in stage 2;
* sampling: fractured and intact *studies* drawn with equal probability (``pos_fraction``), an epoch
  being as many draws as there are training studies (stage 2: as many as crops, seven per study,
  each a seventh of a study's slices, so both see each study about equally often per epoch);
* split: the same patient-level split (:func:`~cspine.ct.cls.train.split_patients`, same seed and
  fraction; identical to stage 2's when both see the same studies);
* selection and calibration: the epoch with the lowest calibrated validation weighted loss; the
  temperature/bias of the levels and of the patient noisy-OR fitted on the validation split with
  :mod:`cspine.ct.cls.calibrate`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cspine.checkpoint import (
    LOG,
    METRICS,
    WEIGHTS,
    load_training_state,
    load_weights,
    save_model,
)
from cspine.ct.baseline.data import BaselineStudy, StudySample, iter_baseline_studies, sample_from_study
from cspine.ct.baseline.model import KIND, build_study_classifier
from cspine.ct.cls.calibrate import (
    DEFAULT_PATIENT_POOL,
    Calibration,
    fit_calibration,
    fit_patient_calibration,
    logit,
    pool_vertebrae,
    weighted_nll,
)
from cspine.ct.cls.dataset import CropDataset
from cspine.ct.cls.loop import balanced_sampler, end_epoch, steps_per_epoch, train_epoch, warmup_cosine
from cspine.ct.cls.train import (
    ClsTrainConfig,
    evaluate_split,
    predict_logits,
    split_patients,
    weighted_bce_loss,
)
from cspine.errors import CspineError, DatasetError
from cspine.fileio import write_json
from cspine.labels import PATIENT_WEIGHTS, VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig, ClsOutput
from cspine.runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)

PATIENT_AGGREGATION = f"{DEFAULT_PATIENT_POOL} over calibrated C1..C7, then patient_calibration"


def baseline_model_config(cls_model: ClsConfig, slice_factor: float = 2.0) -> ClsConfig:
    """Stage 2's model config for the whole study: ``slice_factor`` x the slices, no mask channel, and
    no pixel head (the baseline learns from the boxes' slices, not from where on the slice they lie)."""
    return dataclasses.replace(cls_model, n_slices=max(2, int(round(cls_model.n_slices * slice_factor))),
                               use_mask_channel=False, pixel_head=False)


def baseline_train_config(cls_cfg: ClsTrainConfig, slice_factor: float = 2.0) -> ClsTrainConfig:
    """Stage 2's training config with :func:`baseline_model_config` as the model."""
    return dataclasses.replace(cls_cfg, model=baseline_model_config(cls_cfg.model, slice_factor))


def baseline_loss(out: ClsOutput, y: torch.Tensor, slice_y: torch.Tensor,
                  aux_weight: float) -> torch.Tensor:
    """Stage 2's weighted BCE over the ``(B, 7)`` level logits + ``aux_weight`` x the BCE of each
    per-slice head (as stage 2 sums them) where ``slice_y`` is not NaN
    (the slice terms are computed here, masked, not by stage 2's loss)."""
    main = weighted_bce_loss(out, y, torch.zeros_like(out.slice_logits), 0.0)
    known = ~torch.isnan(slice_y)
    if aux_weight == 0 or not bool(known.any()):
        return main
    heads = [h for h in (out.slice_logits, getattr(out, "feature_slice_logits", None)) if h is not None]
    aux = sum(F.binary_cross_entropy_with_logits(h.float()[known], slice_y[known]) for h in heads)
    return main + aux_weight * aux


def _level_rows(samples: list[StudySample]) -> list[SimpleNamespace]:
    """One row per (study, level), the shape stage 2's :func:`evaluate_split` reads."""
    return [SimpleNamespace(uid=s.uid, name=v, label=float(s.label[i]))
            for s in samples for i, v in enumerate(VERTEBRAE)]


def _validate(model: torch.nn.Module, va: list[StudySample], labels: dict[str, dict[str, int]],
              dev: torch.device, batch_size: int, amp: bool
              ) -> tuple[dict[str, Any], Calibration, np.ndarray, np.ndarray]:
    logits = predict_logits(model, va, dev, batch_size, amp).reshape(-1)  # (P * 7,) study-major
    y = np.stack([s.label for s in va]).reshape(-1)
    cal = fit_calibration(logits, y)
    metrics, pv_mat, pat_y = evaluate_split(_level_rows(va), logits, labels, cal, {})
    metrics["vertebra_loss_uncalibrated"] = weighted_nll(Calibration().probs(logits), y)
    return metrics, cal, pv_mat, pat_y


def train_baseline(data: Path | None, out: Path, cfg: ClsTrainConfig, *, cache: Path | None = None,
                   studies: Iterable[BaselineStudy] | None = None, resume: bool = False,
                   device: str | None = None, progress: bool = True) -> Path:
    """Train, select, calibrate and save the one-stage baseline into the model folder ``out``.

    Args:
        data: an RSNA 2022 root (ignored when ``studies`` is given).
        out: the model folder (``model.safetensors``, ``config.json``, ``log.jsonl``, ``metrics.json``).
        cfg: from :func:`baseline_train_config` (its ``model`` must have no mask channel).
        cache: the preprocessing cache of ``data`` (volumes are decoded from DICOM otherwise).
        studies: in-memory studies instead of ``data``.
        resume: continue from ``out/last.*`` when present.
        device: ``cpu``, ``cuda`` or ``None`` (auto).
        progress: show progress bars.

    Returns:
        ``out``.

    Raises:
        CspineError: ``out`` already holds a model and ``resume`` is off.
        DatasetError: no usable study.
    """
    folder = Path(out)
    if not resume and ((folder / WEIGHTS).exists() or (folder / LOG).exists()):
        raise CspineError("already holds a baseline model; resume it or choose another folder "
                          "(nothing was overwritten)", folder)
    if cfg.model.use_mask_channel:
        raise CspineError("the one-stage baseline has no mask channel; build the config with "
                          "baseline_train_config")
    folder.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    seed_everything(cfg.seed)
    mcfg = cfg.model
    if studies is None:
        if data is None:
            raise DatasetError("train_baseline needs an RSNA root (data) or in-memory studies")
        studies = iter_baseline_studies(Path(data), cache=cache)

    t0 = time.perf_counter()
    bar = tqdm(studies, desc="baseline stacks", unit="study", disable=not progress, leave=False)
    samples = [sample_from_study(s, mcfg) for s in bar]  # one volume in memory at a time
    if not samples:
        raise DatasetError("no study could be read for the baseline", data)
    log.info("%d study stacks in %.1fs", len(samples), time.perf_counter() - t0)
    labels = {s.uid: {v: int(s.label[i]) for i, v in enumerate(VERTEBRAE)} for s in samples}
    uids = sorted(labels)
    train_uids, val_uids = split_patients(uids, [max(labels[u].values()) for u in uids], cfg.val_fraction,
                                          cfg.seed)
    tr = [s for s in samples if s.uid in set(train_uids)]
    va = [s for s in samples if s.uid in set(val_uids)]

    model = build_study_classifier(mcfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    y_tr = np.array([float(s.label.max()) for s in tr])
    steps = steps_per_epoch(len(tr), cfg.batch_size, cfg.max_steps_per_epoch)
    sched = warmup_cosine(opt, steps, steps * cfg.epochs, cfg.warmup_epochs)

    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": None}
    if resume:
        loaded = load_training_state(folder, model, opt, sched)
        if loaded is not None:
            state = loaded
            log.info("resuming the baseline after epoch %d", state["epoch"])

    ds = CropDataset(tr, augment=True, seed=cfg.seed, mask_channel=False)  # type: ignore[arg-type]
    sampler = balanced_sampler(y_tr > 0.5, cfg.pos_fraction, steps * cfg.batch_size,
                               cfg.seed + state["epoch"])
    loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers)
    amp = cfg.amp and dev.type == "cuda"

    def loss_fn(out: Any, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return baseline_loss(out, batch[1], batch[2], cfg.aux_weight)

    for epoch in range(state["epoch"], cfg.epochs):
        train_loss, seconds = train_epoch(model, loader, opt, sched, dev, amp, loss_fn,
                                          f"baseline epoch {epoch + 1}/{cfg.epochs}", progress)
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss,
                                  "lr": float(sched.get_last_lr()[0]), "seconds": round(seconds, 2)}
        score = -train_loss
        if va:
            metrics, _, _, _ = _validate(model, va, labels, dev, cfg.batch_size, amp)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            score = -metrics["vertebra_loss"]
        log.info("baseline epoch %d: %s", epoch + 1, record)
        end_epoch(folder, model, mcfg, KIND, opt, sched, state, record, score)

    best = load_weights(folder, build_study_classifier(mcfg)).to(dev)
    cal, pcal, metrics = Calibration(), Calibration(), {}
    if va:
        metrics, cal, pv_mat, pat_y = _validate(best, va, labels, dev, cfg.batch_size, amp)
        pcal = fit_patient_calibration(pv_mat, pat_y, pool=DEFAULT_PATIENT_POOL)
        pooled = pool_vertebrae(pv_mat, DEFAULT_PATIENT_POOL)
        metrics["patient_loss"] = weighted_nll(pcal.probs(logit(pooled)), pat_y, PATIENT_WEIGHTS)
    metrics.update({"best_epoch": state["best_epoch"], "n_train_studies": len(train_uids),
                    "n_val_studies": len(val_uids)})
    extra = {
        "outputs": list(VERTEBRAE),
        "calibration": dataclasses.asdict(cal),
        "patient_calibration": dataclasses.asdict(pcal),
        "patient_pool": DEFAULT_PATIENT_POOL,
        "patient_aggregation": PATIENT_AGGREGATION,
        "input": "whole study: n_slices evenly spaced 2.5D slices, whole axial field of view, bone window",
        "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "model"},
        "val_uids": val_uids,
    }
    save_model(folder, best, mcfg, KIND, extra=extra)
    write_json(folder / METRICS, metrics)
    log.info("baseline saved to %s (validation: %s)", folder, metrics)
    return folder
