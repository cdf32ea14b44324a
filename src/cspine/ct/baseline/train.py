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
* split: the same patient-level folds (:func:`~cspine.ct.cls.train.run_split`, same seed and fraction,
  saved as ``folds.csv`` in the model folder; identical to stage 2's when both train from one RSNA root);
* selection and calibration: the epoch with the lowest calibrated validation weighted loss; the
  temperature/bias of the levels and of the patient noisy-OR fitted on the validation split with
  :mod:`cspine.ct.cls.calibrate`; all of it stage 2's training skeleton, :func:`cspine.ct.cls.loop.fit`.
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
from tqdm.auto import tqdm

from cspine.ct.baseline.data import BaselineStudy, StudySample, iter_baseline_studies, sample_from_study
from cspine.ct.baseline.model import KIND, build_study_classifier
from cspine.ct.cls.dataset import CropDataset
from cspine.ct.cls.loop import FitData, check_out_folder, fit
from cspine.ct.cls.train import ClsTrainConfig, predict_logits, run_split, weighted_bce_loss
from cspine.errors import CspineError, DatasetError
from cspine.io.rsna import FOLDS_CSV
from cspine.labels import VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig, ClsOutput
from cspine.runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)

#: What the baseline's input is (stored in its model folder).
INPUT = "whole study: n_slices evenly spaced 2.5D slices, whole axial field of view, bone window"


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
    """One row per (study, level), the shape :func:`cspine.ct.cls.loop.evaluate_split` reads."""
    return [SimpleNamespace(uid=s.uid, name=v, label=float(s.label[i]))
            for s in samples for i, v in enumerate(VERTEBRAE)]


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
    if cfg.model.use_mask_channel:
        raise CspineError("the one-stage baseline has no mask channel; build the config with "
                          "baseline_train_config")
    check_out_folder(folder, resume, "a baseline model", "resume it or choose another folder")
    dev = resolve_device(device)
    seed_everything(cfg.seed)
    mcfg = cfg.model
    studies_from_data = studies is None
    if studies is None:
        if data is None:
            raise DatasetError("train_baseline needs an RSNA root (data) or in-memory studies")
        studies = iter_baseline_studies(Path(data), cache=cache)

    t0 = time.perf_counter()
    bar = tqdm(studies, desc="baseline stacks", unit="study", disable=None if progress else True, leave=False)
    samples = [sample_from_study(s, mcfg) for s in bar]  # one volume in memory at a time
    if not samples:
        raise DatasetError("no study could be read for the baseline", data)
    log.info("%d study stacks in %.1fs", len(samples), time.perf_counter() - t0)
    labels = {s.uid: {v: int(s.label[i]) for i, v in enumerate(VERTEBRAE)} for s in samples}
    train_uids, val_uids = run_split(labels, data if studies_from_data else None, folder / FOLDS_CSV, cfg)
    tr = [s for s in samples if s.uid in set(train_uids)]
    va = [s for s in samples if s.uid in set(val_uids)]

    model = build_study_classifier(mcfg).to(dev)
    amp = cfg.amp and dev.type == "cuda"
    ds = CropDataset(tr, augment=True, seed=cfg.seed, mask_channel=False)  # type: ignore[arg-type]

    def val_logits(net: torch.nn.Module) -> np.ndarray:
        return predict_logits(net, va, dev, cfg.batch_size, amp).reshape(-1)  # (P * 7,) study-major

    def loss_fn(out: Any, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return baseline_loss(out, batch[1], batch[2], cfg.aux_weight)

    fit_data = FitData(ds, np.array([float(s.label.max()) for s in tr]) > 0.5, len(tr), _level_rows(va),
                       val_logits, labels)
    fit(folder, model, cfg, fit_data, kind=KIND, name="baseline", build=lambda: build_study_classifier(mcfg),
        loss_fn=loss_fn, device=dev, resume=resume, progress=progress,
        metrics={"n_train_studies": len(train_uids), "n_val_studies": len(val_uids)},
        extra={"outputs": list(VERTEBRAE), "val_uids": val_uids, "input": INPUT})
    return folder
