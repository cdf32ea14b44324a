"""The one training skeleton that stage 2 and the one-stage baseline share: :func:`fit`.

:func:`fit` takes a built model, its training dataset and its validation split, and does the rest the
same way for both: the optimizer and the warm-up + cosine schedule, ``--resume``, balanced sampling
(fractured and intact items drawn with probability ``pos_fraction``), the epoch loop (gradient clipping,
AMP on a GPU, a progress bar), per-epoch validation after calibration, the best checkpoint (lowest
calibrated validation weighted loss; ties: the later epoch), and at the end the calibration of the best
epoch (temperature and bias of the vertebrae and of the patient pool, optionally the operating points)
written into the model folder with its metrics. The callers only build their samples, model and loss.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, WeightedRandomSampler
from tqdm.auto import tqdm

from cspine import distributed as ddp
from cspine.checkpoint import (
    LOG,
    METRICS,
    WEIGHTS,
    load_training_state,
    load_weights,
    save_model,
    save_training_state,
)
from cspine.ct.cls.calibrate import (
    DEFAULT_PATIENT_POOL,
    Calibration,
    fit_calibration,
    fit_patient_calibration,
    logit,
    pool_vertebrae,
    weighted_nll,
)
from cspine.errors import CspineError
from cspine.fileio import append_jsonl, write_json
from cspine.labels import PATIENT_WEIGHTS, VERTEBRAE
from cspine.runtime import autocast

log = logging.getLogger(__name__)

#: How the patient probability is made from the vertebra probabilities (stored in each model folder).
PATIENT_AGGREGATION = f"{DEFAULT_PATIENT_POOL} over calibrated C1..C7, then patient_calibration"


def steps_per_epoch(n_samples: int, batch_size: int, max_steps: int | None = None) -> int:
    """Optimizer steps of one epoch: as many draws as there are samples, capped by ``max_steps``."""
    steps = max(1, math.ceil(n_samples / batch_size))
    return min(steps, max_steps) if max_steps else steps


def balanced_sampler(positive: np.ndarray, pos_fraction: float, n_draws: int,
                     seed: int) -> WeightedRandomSampler:
    """Draw positives (``positive`` true) with probability ``pos_fraction``, with replacement."""
    y = np.asarray(positive, bool)
    n_pos, n_neg = max(int(y.sum()), 1), max(len(y) - int(y.sum()), 1)
    weights = np.where(y, pos_fraction / n_pos, (1 - pos_fraction) / n_neg)
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=n_draws,
                                 replacement=True, generator=torch.Generator().manual_seed(seed))


class RankShare(Sampler[int]):
    """This rank's share of every global batch that ``base`` draws (:func:`cspine.distributed.rank_slice`):
    every rank draws the same sequence, so the balanced sampling of one process holds for the global batch."""

    def __init__(self, base: Sampler[int], per_rank_batch: int) -> None:
        self.base, self.per_rank_batch = base, per_rank_batch

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(ddp.rank_slice(list(self.base), self.per_rank_batch))

    def __len__(self) -> int:
        return len(ddp.rank_slice(range(len(self.base)), self.per_rank_batch))  # type: ignore[arg-type]


class _Forward(torch.nn.Module):
    """A model's training forward (e.g. ``forward_cached``) as a module, so DDP sees the call."""

    def __init__(self, model: torch.nn.Module, fn: Callable[[tuple[torch.Tensor, ...]], Any]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *batch: torch.Tensor) -> Any:
        return self.fn(batch)


def warmup_cosine(opt: torch.optim.Optimizer, steps: int, total: int, warmup_epochs: float
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_epochs`` epochs of ``steps`` steps, then cosine decay to 0 at
    ``total`` steps."""
    warm = max(1, int(warmup_epochs * steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


def train_epoch(model: torch.nn.Module, loader: Any, opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, device: torch.device, amp: bool,
                loss_fn: Callable[[Any, tuple[torch.Tensor, ...]], torch.Tensor], desc: str,
                progress: bool, forward: Callable[[tuple[torch.Tensor, ...]], Any] | None = None
                ) -> tuple[float, float]:
    """One pass over ``loader``; ``loss_fn(model output, batch on device)``. Returns (mean loss, seconds).

    ``forward(batch)`` computes the model output (default: ``model(batch[0])``)."""
    forward = forward or (lambda b: model(b[0]))
    model.train()
    t0, losses = time.perf_counter(), []
    bar = tqdm(loader, desc=desc, disable=None if progress else True, leave=False)
    for batch in bar:
        batch = tuple(t.to(device) for t in batch)
        with autocast(device, amp):
            out = forward(batch)
        loss = loss_fn(out, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 5.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return float(np.mean(losses)), time.perf_counter() - t0


def end_epoch(folder: Path, model: torch.nn.Module, cfg: Any, kind: str, opt: torch.optim.Optimizer,
              sched: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any], record: dict[str, Any],
              score: float) -> None:
    """Append ``record`` to the log, save the weights when ``score`` is the best so far (ties: later
    epochs win; calibration is added once training ends) and the state ``--resume`` continues from."""
    append_jsonl(folder / LOG, record)
    state["epoch"] = int(record["epoch"])
    if state["best"] is None or score >= state["best"]:
        state["best"], state["best_epoch"] = score, state["epoch"]
        save_model(folder, model, cfg, kind)
    save_training_state(folder, model, opt, sched, state)


# --- validation after calibration ----------------------------------------------------------------

def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def evaluate_split(rows: Sequence[Any], logits: np.ndarray, labels: dict[str, dict[str, int]],
                   cal: Calibration, prevalence: dict[str, float], pool: str = DEFAULT_PATIENT_POOL
                   ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Vertebra and patient metrics of a split after calibration ``cal``, with the (P, 7) calibrated
    probabilities (absent vertebra: ``prevalence``) and the patient labels.

    ``rows`` has one item per logit with ``uid``, ``name`` (C1..C7) and ``label`` (a stage-2
    :class:`~cspine.ct.cls.dataset.CropSample`, or one level of a baseline study)."""
    y = np.array([r.label for r in rows])
    p = cal.probs(logits)
    by_study: dict[str, dict[str, float]] = {}
    for r, pv in zip(rows, p, strict=True):
        by_study.setdefault(r.uid, {})[r.name] = float(pv)
    uids = sorted(by_study)
    pv_mat = np.array([[by_study[u].get(v, prevalence.get(v, 0.0)) for v in VERTEBRAE] for u in uids])
    patient_y = np.array([int(max(labels[u].get(v, 0) for v in VERTEBRAE)) for u in uids])
    return {
        "vertebra_loss": weighted_nll(p, y) if len(y) else None,
        "vertebra_auc": _auc(y, logits),
        "patient_auc": _auc(patient_y, pool_vertebrae(pv_mat, pool)) if len(uids) else None,
        "n_vertebrae": len(y), "n_patients": len(uids),
    }, pv_mat, patient_y


@dataclass
class FitData:
    """What :func:`fit` trains on and validates with.

    Attributes:
        train: the training dataset (items are ``(input, label, slice targets, pixel targets[, ...])``).
        positive: per training item, whether it is fractured (the balanced sampler's classes).
        n_per_epoch: draws one epoch is made of (before the ``max_steps_per_epoch`` cap).
        val_rows: one item per validation logit with ``uid``, ``name`` and ``label``
            (:func:`evaluate_split`); empty: no validation, the training loss selects the epoch.
        val_logits: the raw validation logits of a model, in ``val_rows``' order.
        labels: ``{uid: {C1..C7: 0|1}}`` of every study (patient labels of the validation split).
        prevalence: the probability of a vertebra absent from a study (stage 2; empty for the baseline).
    """

    train: Any
    positive: np.ndarray
    n_per_epoch: int
    val_rows: Sequence[Any]
    val_logits: Callable[[torch.nn.Module], np.ndarray]
    labels: dict[str, dict[str, int]]
    prevalence: dict[str, float] = field(default_factory=dict)


def check_out_folder(folder: Path, resume: bool, what: str, hint: str) -> None:
    """Refuse to train into a folder that holds a model (or a log) unless resuming; create it.

    Raises:
        CspineError: ``folder`` holds a model and ``resume`` is off (``hint`` says what to do).
    """
    if not resume and ((folder / WEIGHTS).exists() or (folder / LOG).exists()):
        raise CspineError(f"already holds {what}; {hint} (nothing was overwritten)", folder)
    folder.mkdir(parents=True, exist_ok=True)


def _validate(model: torch.nn.Module, data: FitData) -> tuple[dict[str, Any], Calibration, np.ndarray,
                                                              np.ndarray]:
    logits = data.val_logits(model)
    y = np.array([r.label for r in data.val_rows])
    cal = fit_calibration(logits, y)
    metrics, pv_mat, pat_y = evaluate_split(data.val_rows, logits, data.labels, cal, data.prevalence)
    metrics["vertebra_loss_uncalibrated"] = weighted_nll(Calibration().probs(logits), y)
    return metrics, cal, pv_mat, pat_y


def fit(folder: Path, model: torch.nn.Module, cfg: Any, data: FitData, *, kind: str, name: str,
        build: Callable[[], torch.nn.Module],
        loss_fn: Callable[[Any, tuple[torch.Tensor, ...]], torch.Tensor], device: torch.device,
        params: Any = None,
        forward: Callable[[tuple[torch.Tensor, ...]], Any] | None = None, resume: bool = False,
        progress: bool = True, operating_points: bool = False, metrics: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` into ``folder``, keep its best epoch, calibrate it and save it.

    Args:
        folder: the model folder (created by :func:`check_out_folder`).
        model: the built model, on ``device``.
        cfg: a :class:`~cspine.ct.cls.train.ClsTrainConfig` (``model`` is saved as the folder's config).
        data: the training dataset and validation split.
        kind: the model folder's kind.
        name: what the log lines and progress bars call this training (``stage 2``, ``baseline``).
        build: a fresh model of the same config (the best weights are loaded into it).
        loss_fn: ``loss_fn(model output, batch on device)``.
        device: where to train.
        params: the optimizer's parameters or parameter groups (default: ``model.parameters()``).
        forward: ``forward(batch)`` computes the model output (default: ``model(batch[0])``).
        resume: continue from the folder's ``last.*`` when present.
        progress: show progress bars.
        operating_points: also choose and store the operating points on the validation patients.
        metrics: counts added to ``metrics.json`` (numbers of studies, crops ...).
        extra: fields added to ``config.json``'s ``extra`` beside the calibration and the training settings
            (the validation studies, what the model's inputs and outputs are ...).

    Returns:
        The metrics written to ``metrics.json`` (validation metrics of the best epoch after calibration).
    """
    ddp.init_from_env(str(device))  # under torchrun: join the ranks (no-op otherwise)
    world = ddp.world_size()
    if cfg.batch_size % world:
        raise CspineError(f"batch size {cfg.batch_size} does not split over {world} processes; give a "
                          "multiple of the process count")
    opt = torch.optim.AdamW(model.parameters() if params is None else params, lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    steps = steps_per_epoch(data.n_per_epoch, cfg.batch_size, cfg.max_steps_per_epoch)
    sched = warmup_cosine(opt, steps, steps * cfg.epochs, cfg.warmup_epochs)
    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": None}
    if resume:
        loaded = load_training_state(folder, model, opt, sched)
        if loaded is not None:
            state = loaded
            log.info("resuming %s after epoch %d", name, state["epoch"])

    amp = cfg.amp and device.type == "cuda"
    sampler = balanced_sampler(data.positive, cfg.pos_fraction, steps * cfg.batch_size,
                               cfg.seed + state["epoch"])
    per_rank = cfg.batch_size // world
    loader = DataLoader(data.train, batch_size=per_rank, sampler=RankShare(sampler, per_rank) if world > 1
                        else sampler, num_workers=cfg.num_workers, drop_last=False)
    if ddp.is_distributed():  # gradients averaged by DDP across ranks
        net = ddp.wrap_ddp(_Forward(model, forward or (lambda b: model(b[0]))), device, find_unused=True)
        forward = lambda b: net(*b)  # noqa: E731
    validate = bool(data.val_rows)
    for epoch in range(state["epoch"], cfg.epochs):
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)
        train_loss, seconds = train_epoch(model, loader, opt, sched, device, amp, loss_fn,
                                          f"{name} epoch {epoch + 1}/{cfg.epochs}", progress, forward)
        loss_sum, n_ranks = ddp.all_reduce_sums([train_loss, 1.0], device)
        train_loss = loss_sum / n_ranks  # the mean over ranks of each rank's mean batch loss
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss,
                                  "lr": float(sched.get_last_lr()[0]), "seconds": round(seconds, 2)}
        score = -train_loss
        if validate:  # once, on rank 0; every rank gets its result
            found = ddp.broadcast_object(_validate(model, data)[0] if ddp.is_main() else None)
            record.update({f"val_{k}": v for k, v in found.items()})
            score = -found["vertebra_loss"]
        if not ddp.is_main():  # only rank 0 writes
            continue
        log.info("%s epoch %d: %s", name, epoch + 1, record)
        end_epoch(folder, model, cfg.model, kind, opt, sched, state, record, score)
    ddp.barrier()
    if not ddp.is_main():
        return {}

    # Calibrate the best checkpoint on the validation split and write the final config.
    best = load_weights(folder, build()).to(device)
    cal, pcal, final = Calibration(), Calibration(), {}
    ops: dict[str, Any] | None = None
    if validate:
        final, cal, pv_mat, pat_y = _validate(best, data)
        pcal = fit_patient_calibration(pv_mat, pat_y, pool=DEFAULT_PATIENT_POOL)
        pat_p = pcal.probs(logit(pool_vertebrae(pv_mat, DEFAULT_PATIENT_POOL)))
        final["patient_loss"] = weighted_nll(pat_p, pat_y, PATIENT_WEIGHTS)
        if operating_points:
            # Thresholds for target sensitivities, on the validation patients (rows as evaluate_split's).
            from cspine.ct.cls.operating_points import choose_operating_points

            val_y = np.array([[data.labels[u][v] for v in VERTEBRAE]
                              for u in sorted({r.uid for r in data.val_rows})])
            ops = choose_operating_points(np.c_[pv_mat, pat_p], np.c_[val_y, pat_y]).to_dict()
    final.update({"best_epoch": state["best_epoch"], **(metrics or {})})
    doc = {
        **(extra or {}),
        "calibration": dataclasses.asdict(cal),
        "patient_calibration": dataclasses.asdict(pcal),
        "patient_pool": DEFAULT_PATIENT_POOL,
        "patient_aggregation": PATIENT_AGGREGATION,
        "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "model"},
    }
    if operating_points:
        doc["operating_points"] = ops
    save_model(folder, best, cfg.model, kind, extra=doc)
    write_json(folder / METRICS, final)
    log.info("%s saved to %s (validation: %s)", name, folder, final)
    return final
