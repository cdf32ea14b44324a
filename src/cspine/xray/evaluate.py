"""Evaluation of one or several radiograph models (and their ensemble) on a held-out split."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cspine.errors import DatasetError
from cspine.io.images import DEFAULT_MAX_PIXELS
from cspine.output_folder import OutputFolder, open_output_folder
from cspine.reports.xray_report import write_xray_report
from cspine.xray.data import SPLITS, SPLITS_FILE, find_near_duplicates, load_dataset, load_splits
from cspine.xray.predict import Predictions, load_xray_model, predict_images, write_predictions

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
#: What an evaluation writes into its folder (fixed names, and the patterns of the per-model files).
OUTPUT_NAMES = ("metrics.json", "report.md")
OUTPUT_PATTERNS = ("roc_*.png", "confusion_*.png", "predictions_*.csv")


def _outputs_present(folder: OutputFolder) -> list[str]:
    """Output names of an evaluation: the fixed ones and every file there matching its patterns."""
    found = sorted({p.name for pattern in OUTPUT_PATTERNS for p in folder.path.glob(pattern) if p.is_file()})
    return [*OUTPUT_NAMES, *found]


def _name(folder: Path, arch: str, taken: set[str]) -> str:
    name = f"{arch}:{folder.name}"
    k = 2
    while name in taken:
        name, k = f"{arch}:{folder.name}#{k}", k + 1
    return name


def evaluate_xray(model_dirs: Sequence[str | Path], data: str | Path, out: str | Path, split: str = "test",
                  device: str | None = None, batch_size: int = 10, check_leakage: bool = True,
                  progress: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  overwrite: bool = False) -> dict[str, Any]:
    """Metrics of each model and (with several) of their probability-averaging ensemble.

    Args:
        model_dirs: trained model folders; the split comes from the first one's ``splits.json``.
        data: the dataset folder/CSV the models were trained on (or any labelled set with
            ``split="all"``).
        out: output folder: ``metrics.json``, ``report.md``, ``roc_*.png``, ``confusion_*.png``,
            ``predictions_<model>.csv``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every image of ``data``).
        check_leakage: report test images with a near duplicate in train (pHash).
        max_pixels: refuse images whose header claims more pixels.
        overwrite: replace files under the evaluation's output names that cspine did not write
            (:mod:`cspine.output_folder`).

    Raises:
        DatasetError: unknown split, no ``splits.json``, or images the split names are missing.
        ImageError: an image of the split cannot be read (evaluation needs every one of them).
        OutputFolderError: ``out`` is a file, not writable, or holds an output cspine did not write.
    """
    if split not in (*SPLITS, "all"):
        raise DatasetError(f"--split must be one of {', '.join((*SPLITS, 'all'))}, got {split!r}")
    dirs = [Path(d) for d in model_dirs]
    folder = open_output_folder(out, overwrite=overwrite, command="cspine xray evaluate")
    folder.check(_outputs_present(folder), "cspine xray evaluate")
    models = [load_xray_model(d, device) for d in dirs]
    dataset = load_dataset(data, class_names=models[0].cfg.classes, max_pixels=max_pixels)
    notes: list[str] = []
    if split == "all":
        idx = list(range(len(dataset.items)))
        splits = None
    else:
        sp = dirs[0] / SPLITS_FILE
        if not sp.is_file():
            raise DatasetError(f"has no {SPLITS_FILE}; evaluate with --split all on a separate labelled set",
                               dirs[0])
        splits = load_splits(sp, dataset)
        idx = splits[split]
    if not idx:
        raise DatasetError(f"the {split} split is empty", data)
    paths = [dataset.items[i].path for i in idx]
    y = np.array([dataset.items[i].label for i in idx])
    ens, each = predict_images(paths, models, batch_size, progress, max_pixels=max_pixels)
    names: set[str] = set()
    probas: dict[str, np.ndarray] = {}
    out = folder.path
    written: list[str] = []
    for d, m, p in zip(dirs, models, each, strict=True):
        name = _name(d, m.cfg.arch, names)
        names.add(name)
        probas[name] = p.proba
        written.append(write_predictions(out / f"predictions_{name.replace(':', '_').replace('#', '_')}.csv",
                                         p).name)
    if len(models) > 1:
        probas[ENSEMBLE] = ens.proba
        written.append(write_predictions(out / "predictions_ensemble.csv",
                                         Predictions(ens.paths, ens.class_names, ens.proba)).name)
    leak: dict[str, Any] = {}
    if check_leakage and splits is not None and split != "train":
        pairs = [p for p in find_near_duplicates(dataset, {"train": splits["train"], split: idx})
                 if "train" in (p.split_a, p.split_b)]
        leak = {"near_duplicates_with_train": len({p.a if p.split_a == split else p.b for p in pairs})}
        if pairs:
            notes.append(f"**Leakage warning:** {leak['near_duplicates_with_train']} of {len(idx)} {split} "
                         "images have a near duplicate (pHash distance <= 4) in the training split; the "
                         "figures below may be optimistic.")
    extra = {"data": str(Path(data)), "split": split, "n_images": len(idx),
             "models_evaluated": [str(d) for d in dirs], **leak}
    doc = write_xray_report(out, y, probas, dataset.class_names, extra, notes)
    written += [f for m in doc["models"].values() for f in m.get("plots", {}).values()]
    folder.record(*OUTPUT_NAMES, *written)
    return doc
