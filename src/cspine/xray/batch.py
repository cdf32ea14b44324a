"""Radiographs in a batch, whatever runs the network: read, preprocess (numpy), classify, write the CSV.

The networks run behind :class:`RadiographNet` (PyTorch: :class:`cspine.models.radiograph.XrayNet`;
ONNX Runtime: :class:`cspine.onnx.runtime.OnnxXrayModel`); everything else is this one implementation.
An ensemble averages the models' probabilities.

In a batch (``cspine xray predict``), an image that cannot be read (corrupt, truncated, not an image,
larger than ``max_pixels``) is skipped and listed: ``predictions.csv`` gets a row with ``status`` =
``failed`` and no probability, ``failures.json`` says why, and every other image is predicted.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from cspine.errors import CheckpointError, ImageError
from cspine.fileio import atomic_path, write_json
from cspine.io.archives import is_archive
from cspine.io.images import DEFAULT_MAX_PIXELS, is_image_file, read_image
from cspine.xray.preprocess import preprocess_array

log = logging.getLogger(__name__)

PREDICTIONS_CSV = "predictions.csv"
FAILURES_JSON = "failures.json"
#: ``status`` of a predictions.csv row.
OK, FAILED = "ok", "failed"


class RadiographNet(Protocol):
    """A loaded radiograph model, whatever runs it: its config (``arch``, ``classes``, ``image_size``,
    ``mean``, ``std``) and the network pass."""

    cfg: Any

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, C)`` float32 of preprocessed images ``(B, 3, S, S)`` float32."""
        ...


@dataclass(frozen=True)
class Predictions:
    """Class probabilities ``proba (N, C)`` of ``paths`` for ``class_names``."""

    paths: tuple[Path, ...]
    class_names: tuple[str, ...]
    proba: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


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
            archives = sorted(f for f in p.rglob("*") if is_archive(f))
            if archives:
                log.warning("%s: %d archive(s) not read (e.g. %s); unpack them to predict their images", p,
                            len(archives), archives[0])
        elif p.is_file():
            out.append(p)
        else:
            raise ImageError("no such image file or folder", p)
    if not out:
        raise ImageError(f"no images (.png/.jpg/.tif/.dcm) found in {', '.join(map(str, inputs))}")
    return out


def check_same_classes(models: Sequence[RadiographNet]) -> tuple[str, ...]:
    names = tuple(models[0].cfg.classes)
    for m in models[1:]:
        if tuple(m.cfg.classes) != names:
            raise CheckpointError(f"models disagree on the classes: {names} vs {m.cfg.classes}; an ensemble "
                                  "needs the same classes in the same order")
    return names


def model_proba(model: RadiographNet, paths: Sequence[Path], batch_size: int = 10, progress: bool = False, *,
                max_pixels: int | None = DEFAULT_MAX_PIXELS,
                failures: dict[Path, str] | None = None) -> np.ndarray:
    """Softmax probabilities ``(N, C)`` of one model (each preprocesses at its own size and normalisation).

    Args:
        model: a loaded model.
        paths: the images.
        batch_size: images per forward pass.
        progress: show a progress bar.
        max_pixels: refuse images whose header claims more pixels.
        failures: when given, an image that cannot be read is recorded here (path -> reason) and its
            row is NaN; images already in it are not read again. Without it, the error is raised.

    Raises:
        ImageError: an unreadable image, when ``failures`` is ``None``.
    """
    cfg = model.cfg
    size = int(cfg.image_size)  # type: ignore[arg-type]
    out = np.full((len(paths), len(cfg.classes)), np.nan, np.float32)
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, disable=None if progress else True, desc=cfg.arch, unit="batch", leave=False):
        rows, xs = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            if failures is not None and paths[i] in failures:
                continue
            try:
                xs.append(preprocess_array(read_image(paths[i], max_pixels), size, cfg.mean, cfg.std))
            except Exception as exc:  # one broken image must not end a batch of thousands
                if failures is None:
                    raise
                reason = (str(exc) if isinstance(exc, ImageError)  # it names the file already
                          else f"{paths[i]}: unexpected {type(exc).__name__}: {exc}")
                log.error("skipped %s", reason)
                failures[paths[i]] = reason
                continue
            rows.append(i)
        if xs:
            out[rows] = model.proba(np.stack(xs))
    return out


def predict_images(paths: Sequence[Path], models: Sequence[RadiographNet], batch_size: int = 10,
                   progress: bool = False, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   failures: dict[Path, str] | None = None) -> tuple[Predictions, list[Predictions]]:
    """Probabilities of the ensemble (mean of the models' probabilities) and of each model.

    With ``failures`` given, images that cannot be read are recorded there and left out of the
    returned predictions (see :func:`model_proba`); without it the first one raises
    :class:`~cspine.errors.ImageError`.
    """
    if not models:
        raise ValueError("at least one model is needed")
    names = check_same_classes(models)
    probas = [model_proba(m, paths, batch_size, progress, max_pixels=max_pixels, failures=failures)
              for m in models]
    keep = np.array([p not in (failures or {}) for p in paths], dtype=bool)
    kept = tuple(p for p, k in zip(paths, keep, strict=True) if k)
    each = [Predictions(kept, names, pr[keep]) for pr in probas]
    mean = np.mean([p.proba for p in each], axis=0) if each[0].proba.size else each[0].proba
    return Predictions(kept, names, mean), each


def write_predictions(path: str | Path, pred: Predictions, failed: Sequence[Path] = ()) -> Path:
    """``predictions.csv``: ``path``, ``prediction`` (class name), one probability column per class and
    ``status`` (``ok``, or ``failed`` with empty cells for each of ``failed``: see ``failures.json``)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "prediction", *pred.class_names, "status"])
        for p, row in zip(pred.paths, pred.proba, strict=True):
            w.writerow([str(p), pred.class_names[int(row.argmax())], *(f"{v:.6f}" for v in row), OK])
        for p in failed:
            w.writerow([str(p), "", *([""] * len(pred.class_names)), FAILED])
    return path


def write_failures(path: str | Path, failures: dict[Path, str]) -> Path | None:
    """``failures.json`` (input, error) of the images that could not be read; an old one is removed when
    none failed. Returns the file, or ``None``."""
    path = Path(path)
    if failures:
        write_json(path, [{"input": str(p), "error": e} for p, e in failures.items()])
        return path
    path.unlink(missing_ok=True)
    return None
