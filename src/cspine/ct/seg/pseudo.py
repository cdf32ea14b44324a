"""Pseudo-labels: stage 1 segments every cached study that has no true mask, so stage 2 can learn from
all studies (in the real data only 87 of 2,019 have a segmentation)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cspine.fileio import write_npy, write_text
from cspine.preprocess.cache import PSEUDO_MASK_FILE

from .predict import SegModel, segment

log = logging.getLogger(__name__)

#: File name of a pseudo-label map inside a study's cache folder (the cache owns its layout).
PSEUDO_MASK = PSEUDO_MASK_FILE
#: Beside each pseudo-label map: the fingerprint of the stage-1 model that made it.
PSEUDO_MODEL = PSEUDO_MASK_FILE + ".model"


def model_fingerprint(model_folder: str | Path) -> str:
    """SHA-256 (first 16 hex) over a stage-1 model folder's weights and config."""
    import hashlib

    from cspine.output_folder import file_sha256

    folder = Path(model_folder)
    digest = "".join(file_sha256(folder / name) for name in ("model.safetensors", "config.json"))
    return hashlib.sha256(digest.encode()).hexdigest()[:16]


def _made_by(cache_dir: Path, uid: str, fingerprint: str) -> bool:
    tag = cache_dir / uid / PSEUDO_MODEL
    try:
        return (cache_dir / uid / PSEUDO_MASK).exists() and tag.read_text().strip() == fingerprint
    except OSError:
        return False


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

    Resumable: a study whose pseudo-mask this same model made (its fingerprint, ``pseudo_mask.npy.model``)
    is skipped; one made by another stage-1 model (a cache shared by runs) or of unknown origin is made
    again, so stage 2 never trains on another model's labels. Each file is written atomically. A study
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
    fingerprint = model_fingerprint(model_folder)
    todo = [u for u in store.uids()
            if not _made_by(cache_dir, u, fingerprint) and not _has_true_mask(store, u)]
    written = 0
    for uid in tqdm(todo, desc="seg: pseudo-labels", unit="study", disable=None):
        try:
            seg = segment(store.load(uid), model, batch_size=batch_size)
        except (CspineError, OSError, ValueError) as exc:
            log.warning("study %s: no pseudo-label (%s)", uid, exc)
            continue
        for w in seg.warnings:
            log.info("study %s: %s", uid, w)
        (cache_dir / uid / PSEUDO_MODEL).unlink(missing_ok=True)
        write_npy(cache_dir / uid / PSEUDO_MASK, np.ascontiguousarray(seg.labels, dtype=np.uint8))
        write_text(cache_dir / uid / PSEUDO_MODEL, fingerprint + "\n")
        written += 1
    return written
