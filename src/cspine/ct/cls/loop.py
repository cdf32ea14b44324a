"""The training loop pieces stage 2 and the one-stage baseline share: balanced sampling, the warm-up +
cosine schedule, one epoch of optimisation (gradient clipping, AMP on a GPU, a progress bar) and the
end-of-epoch bookkeeping (log line, best checkpoint, resumable state)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler
from tqdm.auto import tqdm

from cspine.checkpoint import LOG, save_model, save_training_state
from cspine.fileio import append_jsonl
from cspine.runtime import autocast


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
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
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
