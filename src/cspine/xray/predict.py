"""Inference with one or several trained radiograph models; an ensemble averages probabilities."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cspine.checkpoint import config_from_dict, load_weights, read_config
from cspine.errors import CheckpointError, ImageError
from cspine.fileio import atomic_path
from cspine.io.images import is_image_file
from cspine.models.radiograph import CHECKPOINT_KIND, XrayConfig, XrayNet, build_xray_model
from cspine.runtime import resolve_device
from cspine.xray.torchdata import ImageSet

log = logging.getLogger(__name__)

PREDICTIONS_CSV = "predictions.csv"


@dataclass(frozen=True)
class Predictions:
    """Class probabilities ``proba (N, C)`` of ``paths`` for ``class_names``."""

    paths: tuple[Path, ...]
    class_names: tuple[str, ...]
    proba: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


def load_xray_model(folder: str | Path, device: str | torch.device | None = "cpu") -> XrayNet:
    """Rebuild a trained model from its folder (``config.json`` + ``model.safetensors``), in eval mode."""
    doc = read_config(folder, CHECKPOINT_KIND)
    try:
        cfg = config_from_dict(XrayConfig, doc["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"config.json does not describe a radiograph model ({exc})", folder) from exc
    model = build_xray_model(cfg, load_pretrained=False)
    load_weights(folder, model)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(dev).eval()


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named, or found (recursively, sorted) in the folders named.

    Raises:
        ImageError: an input does not exist, or no image is found.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if is_image_file(f)))
        elif p.is_file():
            out.append(p)
        else:
            raise ImageError("no such image file or folder", p)
    if not out:
        raise ImageError(f"no images (.png/.jpg/.tif/.dcm) found in {', '.join(map(str, inputs))}")
    return out


def check_same_classes(models: Sequence[XrayNet]) -> tuple[str, ...]:
    names = tuple(models[0].cfg.classes)
    for m in models[1:]:
        if tuple(m.cfg.classes) != names:
            raise CheckpointError(f"models disagree on the classes: {names} vs {m.cfg.classes}; an ensemble "
                                  "needs the same classes in the same order")
    return names


def model_proba(model: XrayNet, paths: Sequence[Path], batch_size: int = 10,
                progress: bool = False) -> np.ndarray:
    """Softmax probabilities ``(N, C)`` of one model (each preprocesses at its own size and normalisation)."""
    dev = next(model.parameters()).device
    cfg = model.cfg
    ds = ImageSet(paths, None, int(cfg.image_size), mean=cfg.mean, std=cfg.std,  # type: ignore[arg-type]
                  cache=False)
    out = []
    model.eval()
    with torch.inference_mode():
        for x, _ in tqdm(DataLoader(ds, batch_size=batch_size), disable=not progress,
                         desc=model.cfg.arch, unit="batch", leave=False):
            out.append(model.predict_proba(x.to(dev)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.cfg.classes)), np.float32)


def predict_images(paths: Sequence[Path], models: Sequence[XrayNet], batch_size: int = 10,
                   progress: bool = False) -> tuple[Predictions, list[Predictions]]:
    """Probabilities of the ensemble (mean of the models' probabilities) and of each model."""
    if not models:
        raise ValueError("at least one model is needed")
    names = check_same_classes(models)
    each = [Predictions(tuple(paths), names, model_proba(m, paths, batch_size, progress)) for m in models]
    mean = np.mean([p.proba for p in each], axis=0)
    return Predictions(tuple(paths), names, mean), each


def write_predictions(path: str | Path, pred: Predictions) -> Path:
    """``predictions.csv``: ``path``, ``prediction`` (class name), one probability column per class."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "prediction", *pred.class_names])
        for p, row in zip(pred.paths, pred.proba, strict=True):
            w.writerow([str(p), pred.class_names[int(row.argmax())], *(f"{v:.6f}" for v in row)])
    return path
