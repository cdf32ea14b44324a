"""Training of the radiograph classifiers with the paper's recipe.

SGD with momentum 0.9, initial learning rate 0.001, cross-entropy, mini-batches of 10, 30 epochs.
The learning rate is multiplied by ``lr_gamma`` = 0.5 every 4 epochs. The paper does not give the
factor; MATLAB's default of 0.1 would leave 1e-5 after 8 of the 30 epochs and 1e-10 at the end,
i.e. the last two thirds of training would change nothing, whereas halving keeps the step size
useful over the whole run (1e-3 -> 7.8e-6 at epoch 29).

From scratch (no ImageNet weights) that recipe is too timid: lr 0.001 is a fine-tuning rate. Two
options, off by default, make a from-scratch recipe (used by ``bench/xray.py``): ``warmup_epochs``
ramps the learning rate linearly from ~0 to ``lr`` over the first mini-batches (He-initialised
networks take large first steps), and ``clip_grad_norm`` caps the gradient's global norm (AlexNet has
no batch norm; He-initialised throughout, its first gradients had norm ~75 and its loss overflowed
within 30 steps at lr 0.01 without a cap).

Frozen layers are computed once: when the model freezes part of itself (``finetune="head"``, or
Lite0's ``frozen_stages``), the frozen part's output for every training and validation image is
computed once before the first epoch (kept in memory as float16) and the epochs run only the part
that trains; with ``augment`` the training images change every epoch, so only validation is cached.

The model folder ``OUT`` receives ``config.json`` + ``model.safetensors`` (the best epoch on the
validation split: highest accuracy, ties broken by lower validation loss), ``splits.json``,
``log.jsonl`` (one line per epoch) and ``last.safetensors`` + ``last.json`` for ``--resume``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from cspine import distributed as ddp
from cspine.checkpoint import (
    LOG,
    load_training_state,
    save_model,
    save_training_state,
)
from cspine.errors import DatasetError
from cspine.fileio import append_jsonl, read_jsonl, write_json, write_text
from cspine.io.images import DEFAULT_MAX_PIXELS
from cspine.metrics.multiclass import json_safe, multiclass_metrics
from cspine.models.radiograph import (
    CHECKPOINT_KIND,
    XrayConfig,
    XrayNet,
    build_xray_model,
    check_pretrained_source,
)
from cspine.output_folder import OutputFolderError, open_output_folder
from cspine.runtime import resolve_device, seed_everything
from cspine.xray.data import (
    SPLITS_FILE,
    XrayDataset,
    check_images,
    check_leakage,
    load_dataset,
    load_splits,
    make_splits,
    save_splits,
)
from cspine.xray.torchdata import ImageSet
from cspine.xray.transforms import Augment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class XrayTrainConfig:
    """The training recipe (defaults = the paper's; ``lr_gamma`` is cspine's choice, see module doc)."""

    epochs: int = 30
    batch_size: int = 10
    lr: float = 1e-3
    momentum: float = 0.9
    lr_step: int = 4
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    seed: int = 0
    augment: bool = False
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    duplicate_distance: int = 4
    drop_duplicates: bool = False
    num_workers: int = 0
    warmup_epochs: float = 0.0
    clip_grad_norm: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or self.clip_grad_norm < 0:
            raise ValueError("warmup_epochs and clip_grad_norm must be >= 0 (0 = off)")


@dataclass(frozen=True)
class TrainResult:
    """Where the model went and how the best epoch did."""

    out: Path
    best_epoch: int
    best_val_accuracy: float
    epochs_run: int
    history: list[dict[str, Any]]


def _loader(ds: Dataset, batch: int, shuffle: bool, seed: int, workers: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch, shuffle=shuffle, generator=g, num_workers=workers)


def run_epoch(model: nn.Module, loader: DataLoader, device: torch.device,
              optimizer: torch.optim.Optimizer | None = None, desc: str = "",
              progress: bool = True, lr_at: Callable[[int], float] | None = None,
              clip_grad_norm: float = 0.0) -> tuple[float, np.ndarray, np.ndarray]:
    """One pass; trains when ``optimizer`` is given. Returns (mean loss, labels, probabilities).

    ``model`` maps the loader's inputs to logits (an :class:`XrayNet`, or :class:`FromFrozen` over
    cached frozen features).

    ``lr_at(k)``: the learning rate of the epoch's k-th mini-batch (warm-up); ``clip_grad_norm`` > 0
    caps the global gradient norm.
    """
    train = optimizer is not None
    model.train(train)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, n = 0.0, 0
    ys, ps = [], []
    ctx = torch.enable_grad() if train else torch.inference_mode()
    with ctx, tqdm(loader, desc=desc, leave=False, disable=None if progress else True, unit="batch") as bar:
        for k, (x, y) in enumerate(bar):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            if train:
                if lr_at is not None:
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(k)
                optimizer.zero_grad(set_to_none=True)
                (loss / len(y)).backward()
                if clip_grad_norm > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                optimizer.step()
            total += float(loss.detach())
            n += len(y)
            ys.append(y.cpu().numpy())
            ps.append(torch.softmax(logits.detach().float(), 1).cpu().numpy())
            bar.set_postfix(loss=f"{total / n:.4f}")
    return total / max(n, 1), np.concatenate(ys), np.concatenate(ps)


class FromFrozen(nn.Module):
    """An :class:`XrayNet` applied to the output of its frozen part (``XrayNet.forward_frozen``)."""

    def __init__(self, net: XrayNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.forward_tail(f.float())

    def train(self, mode: bool = True) -> FromFrozen:
        self.training = mode
        self.net.train(mode)
        return self


def frozen_features(model: XrayNet, ds: ImageSet, device: torch.device, batch: int = 10,
                    progress: bool = False) -> TensorDataset:
    """``(features, labels)`` with the frozen part's output of every image of ``ds`` (float16, CPU)."""
    model.eval()
    feats, labels = [], []
    with torch.inference_mode():
        for x, y in tqdm(_loader(ds, batch, False, 0, 0), desc="frozen features", leave=False,
                         disable=None if progress else True, unit="batch"):
            feats.append(model.forward_frozen(x.to(device)).to("cpu", torch.float16))
            labels.append(y)
    return TensorDataset(torch.cat(feats), torch.cat(labels))


def prepare_splits(data: XrayDataset, out: Path, cfg: XrayTrainConfig,
                   splits_file: Path | None = None) -> dict[str, list[int]]:
    """Reuse ``OUT/splits.json`` (resume) or ``splits_file``, else make, leak-check and save a split."""
    existing = out / SPLITS_FILE
    if existing.is_file():
        return load_splits(existing, data)
    splits = load_splits(splits_file, data) if splits_file is not None else make_splits(data, cfg.fractions,
                                                                                          cfg.seed)
    splits, _, dropped = check_leakage(data, splits, cfg.duplicate_distance, cfg.drop_duplicates)
    save_splits(existing, data, splits, cfg.seed, cfg.fractions,
                [data.key(data.items[i]) for i in dropped])
    return splits


def train_xray(data: str | Path | XrayDataset, out: str | Path, model_cfg: XrayConfig,
               train_cfg: XrayTrainConfig = XrayTrainConfig(), device: str | None = None,
               resume: bool = False, splits_file: str | Path | None = None,
               progress: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> TrainResult:
    """Train a radiograph classifier and keep the best validation checkpoint in ``out``.

    Args:
        data: a dataset folder/CSV (see :mod:`cspine.xray.data`) or a loaded dataset.
        out: the model folder (created).
        model_cfg: the architecture; its ``classes`` are replaced by the dataset's class names.
        train_cfg: the recipe.
        device: ``"cpu"``, ``"cuda"`` or ``None`` = auto.
        resume: continue from ``out/last.*`` (a finished run is left as it is).
        splits_file: a ``splits.json`` to reuse instead of a new random split.
        max_pixels: the largest image read when ``data`` is a path (a loaded dataset has its own).

    Raises:
        DatasetError: bad dataset, or ``out`` already holds a run and ``resume`` is off.
        ImageError: an image whose header cannot be read or claims more than ``max_pixels`` pixels
            (every header is read before anything is written).
        OutputFolderError: ``out`` is a file or cannot be created or written.
        CheckpointError: pretrained weights that are pickled, missing or do not fit.
    """
    out = Path(out)
    check_pretrained_source(model_cfg)  # before anything is read or written
    ddp.init_from_env(device)  # under torchrun: join the ranks (no-op otherwise)
    dev = resolve_device(ddp.local_device(device))
    world = ddp.world_size()
    if train_cfg.batch_size % world:
        raise DatasetError(f"batch size {train_cfg.batch_size} does not split over {world} processes; give a "
                           "multiple of the process count (each takes an equal share)")
    if not isinstance(data, XrayDataset):
        data = load_dataset(data, max_pixels=max_pixels)
    if out.exists() and not out.is_dir():
        raise OutputFolderError("is a file, not a folder; give a new folder for the model", out)
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise DatasetError("already holds files; pass --resume to continue that run or choose a new "
                           "--out (nothing is overwritten)", out)
    check_images(data)  # a broken or gigantic image stops the run now, not after an hour of training
    ddp.barrier()  # every rank checked the folder before rank 0 writes into it
    model_cfg = model_cfg.replace(classes=tuple(data.class_names))
    seed_everything(train_cfg.seed)
    if ddp.is_main():  # only rank 0 writes; the others read its split
        open_output_folder(out, command="cspine xray train")  # created and writable, or a clear error
        splits = prepare_splits(data, out, train_cfg, Path(splits_file) if splits_file else None)
    ddp.barrier()
    if not ddp.is_main():
        splits = load_splits(out / SPLITS_FILE, data)
    size = int(model_cfg.image_size)  # type: ignore[arg-type]

    def subset(split: str, aug: Augment | None) -> ImageSet:
        idx = splits[split]
        return ImageSet([data.items[i].path for i in idx], [data.items[i].label for i in idx], size,
                        mean=model_cfg.mean, std=model_cfg.std, aug=aug,  # type: ignore[arg-type]
                        seed=train_cfg.seed, max_pixels=data.max_pixels)

    train_set: Dataset = subset("train", Augment(enabled=train_cfg.augment))
    val_set: Dataset = subset("val", None)
    model = build_xray_model(model_cfg).to(dev)
    train_net: nn.Module = model
    val_net: nn.Module = model
    if model.frozen_modules:  # the frozen part's output is computed once, not every epoch
        val_set, val_net = frozen_features(model, val_set, dev, progress=progress), FromFrozen(model)
        if not train_cfg.augment:
            train_set = frozen_features(model, train_set, dev, progress=progress)
            train_net = val_net
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=train_cfg.lr, momentum=train_cfg.momentum,
                                weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, train_cfg.lr_step, train_cfg.lr_gamma)
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_acc": -1.0, "best_loss": math.inf}
    if resume:
        restored = load_training_state(out, model, optimizer, scheduler)
        if restored is not None:
            state = restored
            log.info("resuming %s after epoch %d", out, state["epoch"])
            # keep the log consistent with the restored state (an epoch may have been logged
            # before a crash prevented its state from being saved)
            if (out / LOG).is_file() and ddp.is_main():
                kept = [r for r in read_jsonl(out / LOG) if r.get("epoch", 0) <= state["epoch"]]
                write_text(out / LOG, "".join(_jsonl(r) for r in kept))
    if ddp.is_main():
        write_json(out / "train_config.json", asdict(train_cfg))
    fit_net = ddp.wrap_ddp(train_net, dev)  # gradients averaged across ranks under torchrun
    history = read_jsonl(out / LOG) if (out / LOG).is_file() else []
    epochs = range(int(state["epoch"]) + 1, train_cfg.epochs + 1)
    for epoch in tqdm(epochs, desc=f"{model_cfg.arch}", unit="epoch", disable=None if progress else True):
        t0 = time.perf_counter()
        seed_everything(train_cfg.seed + epoch)
        lr = optimizer.param_groups[0]["lr"]
        tl = _loader(train_set, train_cfg.batch_size, True, train_cfg.seed + epoch, train_cfg.num_workers)
        shard = ddp.sampler(train_set, shuffle=True, seed=train_cfg.seed + epoch)
        if shard is not None:  # each rank its share of every global batch
            tl = DataLoader(train_set, batch_size=train_cfg.batch_size // world, sampler=shard,
                            num_workers=train_cfg.num_workers)
        vl = _loader(val_set, train_cfg.batch_size, False, 0, train_cfg.num_workers)
        lr_at = _warmup(lr, epoch, len(tl), train_cfg.warmup_epochs)
        train_loss, ty, tp = run_epoch(fit_net, tl, dev, optimizer, f"epoch {epoch} train", progress,
                                       lr_at, train_cfg.clip_grad_norm)
        for group in optimizer.param_groups:  # the schedule steps from the epoch's nominal rate
            group["lr"] = lr
        loss_sum, n_seen, n_right = ddp.all_reduce_sums(
            [train_loss * len(ty), len(ty), float((tp.argmax(1) == ty).sum())], dev)
        train_loss, train_acc = loss_sum / max(n_seen, 1), n_right / max(n_seen, 1)
        val_loss, vm = 0.0, {}
        if ddp.is_main():  # validation once, on rank 0; every rank gets its result
            val_loss, vy, vp = run_epoch(val_net, vl, dev, None, f"epoch {epoch} val", progress)
            vm = multiclass_metrics(vy, vp, data.class_names)
        val_loss, vm = ddp.broadcast_object((val_loss, vm))
        scheduler.step()
        record = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
                  "train_accuracy": train_acc, "val_loss": val_loss,
                  "val_accuracy": vm["accuracy"], "val_macro_f1": vm["macro"]["f1"],
                  "seconds": time.perf_counter() - t0}
        better = (vm["accuracy"] > state["best_acc"]
                  or (vm["accuracy"] == state["best_acc"] and val_loss < state["best_loss"]))
        if better:
            state.update(best_epoch=epoch, best_acc=vm["accuracy"], best_loss=val_loss)
        if better and ddp.is_main():
            save_model(out, model, model_cfg, CHECKPOINT_KIND,
                       extra={"epoch": epoch, "val": json_safe(vm), "train": asdict(train_cfg)})
        record["best"] = better
        history.append(json_safe(record))
        state["epoch"] = epoch
        if ddp.is_main():
            append_jsonl(out / LOG, json_safe(record))
            save_training_state(out, model, optimizer, scheduler, state)
        log.info("epoch %d: train loss %.4f, val loss %.4f, val acc %.3f%s", epoch, train_loss, val_loss,
                 vm["accuracy"], " (best)" if better else "")
    return TrainResult(out, int(state["best_epoch"]), float(state["best_acc"]), int(state["epoch"]), history)


def _warmup(lr: float, epoch: int, steps: int, warmup_epochs: float) -> Callable[[int], float] | None:
    """Linear warm-up over the first ``warmup_epochs`` epochs' mini-batches (``None`` after it)."""
    total = warmup_epochs * steps
    first = (epoch - 1) * steps
    if total <= 0 or first >= total:
        return None
    return lambda k: lr * min(1.0, (first + k + 1) / total)


def _jsonl(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"
