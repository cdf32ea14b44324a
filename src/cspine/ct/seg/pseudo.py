"""Pseudo-labels: stage 1 segments every cached study that has no true mask, so stage 2 can learn from
all studies (in the real data only 87 of 2,019 have a segmentation)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cspine.fileio import write_npy
from cspine.preprocess.cache import PSEUDO_MASK_FILE

from .predict import SegModel, segment

log = logging.getLogger(__name__)

#: File name of a pseudo-label map inside a study's cache folder (the cache owns its layout).
PSEUDO_MASK = PSEUDO_MASK_FILE


def _has_true_mask(store: object, uid: str) -> bool:
    has = getattr(store, "has_mask", None)
    if callable(has):
        return bool(has(uid))
    try:
        return store.load_mask(uid, mmap=True) is not None  # type: ignore[attr-defined]
    except FileNotFoundError:
        return False


def pseudo_label_cache(cache_dir: str | Path, model_folder: str | Path, *, device: str | None = None,
                       batch_size: int | None = None) -> int:
    """Write ``<cache>/<uid>/pseudo_mask.npy`` (uint8 labels on the cached volume's grid) for every
    cached study without a true mask.

    Resumable: a study whose pseudo-mask exists is skipped; each file is written atomically. A study
    that fails (unreadable, one slice, ...) is logged and skipped.

    Args:
        cache_dir: a prepared cache (``cspine.preprocess.cache.StudyCache``).
        model_folder: a stage-1 model folder (``RUN/seg``).
        device: ``"cpu"``, ``"cuda"`` or ``None`` (auto).
        batch_size: 2.5D stacks per forward pass (default: by device).

    Returns:
        The number of pseudo-masks written by this call.
    """
    from tqdm.auto import tqdm

    from cspine.errors import CspineError
    from cspine.preprocess.cache import StudyCache

    cache_dir = Path(cache_dir)
    store = StudyCache(cache_dir)
    model = SegModel.load(model_folder, device=device)
    todo = [u for u in store.uids()
            if not (cache_dir / u / PSEUDO_MASK).exists() and not _has_true_mask(store, u)]
    written = 0
    for uid in tqdm(todo, desc="seg: pseudo-labels", unit="study", disable=None):
        try:
            seg = segment(store.load(uid), model, batch_size=batch_size)
        except (CspineError, OSError, ValueError) as exc:
            log.warning("study %s: no pseudo-label (%s)", uid, exc)
            continue
        for w in seg.warnings:
            log.info("study %s: %s", uid, w)
        write_npy(cache_dir / uid / PSEUDO_MASK, np.ascontiguousarray(seg.labels, dtype=np.uint8))
        written += 1
    return written
