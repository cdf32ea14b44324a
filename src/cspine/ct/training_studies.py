"""The training studies of an RSNA root (or of its prepared cache), as every CT trainer reads them: the
canonical volume, the vertebra mask when there is one, the labels and the fracture boxes.

One loader for stage 1, stage 2 and the one-stage baseline:

* volumes come from the prepared cache (``cspine ct prepare``) when it holds the study, else they are
  decoded from ``train_images`` (:func:`cspine.io.study.load_study`);
* masks (when asked for): the cached mask (checked when it was cached), else the stage-1 pseudo mask the
  cache holds (:data:`cspine.preprocess.cache.PSEUDO_MASK_FILE`), else ``segmentations/<UID>.nii``, which
  is checked here exactly as ``cspine ct prepare`` checks it
  (:func:`cspine.preprocess.mask_check.check_training_mask`). A mask that fails its checks stops the
  training with the mask's file and problem (``bad_masks="error"``, the default) or is left out with a
  warning (``"exclude"``: the study is used without it); a mask whose levels look misaligned is logged;
* a study that cannot be read is skipped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cspine.io.volume import Volume
from cspine.labels import VERTEBRAE

log = logging.getLogger(__name__)

#: A box on a canonical slice: ``(y0, y1, x0, x1)`` pixel rows and columns, stop exclusive.
Box = tuple[int, int, int, int]
#: Where a study's mask came from.
TRUE, PSEUDO = "true", "pseudo"


@dataclass(frozen=True, eq=False)
class TrainingStudy:
    """One training study.

    Attributes:
        uid: StudyInstanceUID.
        volume: the canonical volume.
        mask: uint8 labels on the volume's grid (0 background, 1..7 C1..C7, 8.. T1..), or ``None``.
        mask_source: ``"true"`` (a segmentation), ``"pseudo"`` (stage 1's, from the cache) or ``None``.
        labels: ``{C1..C7: 0|1}``.
        box_slices: volume slice indices carrying a fracture box (``None``: the study has no boxes).
        box_regions: the boxes on the canonical grid (``None``: unknown).
    """

    uid: str
    volume: Volume
    mask: np.ndarray | None
    mask_source: str | None
    labels: dict[str, int]
    box_slices: frozenset[int] | None = None
    box_regions: Mapping[int, tuple[Box, ...]] | None = None


def box_slices_of(volume: Volume, boxes: object, uid: str) -> frozenset[int] | None:
    """Volume slice indices carrying a fracture box of ``uid`` (``None`` when it has no boxes).

    ``boxes`` is ``train_bounding_boxes.csv`` as a DataFrame; ``slice_number`` is the InstanceNumber,
    mapped through the volume's slice map (never used as an array index directly).
    """
    import pandas as pd

    assert isinstance(boxes, pd.DataFrame)
    rows = boxes[boxes["StudyInstanceUID"] == uid]
    if rows.empty:
        return None
    out = set()
    for n in rows["slice_number"].astype(int):
        try:
            out.add(volume.index_of_instance(int(n)))
        except KeyError:
            log.warning("study %s: box on InstanceNumber %d, which the volume does not have", uid, n)
    return frozenset(out)


def box_regions_of(volume: Volume, boxes: object, uid: str) -> dict[int, tuple[Box, ...]] | None:
    """The fracture boxes of ``uid`` on the canonical grid: ``{slice index: ((y0, y1, x0, x1), ...)}``.

    ``x``/``y``/``width``/``height`` are columns and rows of the stored DICOM image; they are shifted by
    the slice's gantry-tilt offset and carried through the reorientation that made the volume canonical
    (:func:`cspine.io.orient.stored_box_on_canonical`). ``None`` when the study has no boxes, or when it
    was not acquired axially (then the stored rows and columns are not an axial plane).
    """
    import pandas as pd

    assert isinstance(boxes, pd.DataFrame)
    rows = boxes[boxes["StudyInstanceUID"] == uid]
    if rows.empty:
        return None
    from cspine.io.orient import stored_box_on_canonical

    reo = volume.meta.get("reorientation") or {"perm": [0, 1, 2]}
    if list(reo["perm"])[0] != 0:
        return None
    out: dict[int, list[Box]] = {}
    for r in rows.itertuples(index=False):
        try:
            z = volume.index_of_instance(int(r.slice_number))
        except KeyError:
            continue  # box_slices_of has already warned
        # the slice's own tilt-correction offset, then the reorientation
        box = stored_box_on_canonical(volume, z, float(r.x), float(r.y), float(r.width), float(r.height))
        if box is not None:
            out.setdefault(z, []).append(box)
    return {z: tuple(b) for z, b in out.items()}


def _checked_mask(path: Path, volume: Volume, uid: str, bad_masks: str) -> np.ndarray | None:
    """The checked mask on ``volume``'s grid; ``None`` when it fails and ``bad_masks`` is ``exclude``."""
    from cspine.errors import NiftiError
    from cspine.preprocess.mask_check import check_training_mask, report_warning

    try:
        mask, report = check_training_mask(path, volume)
    except NiftiError as exc:
        if bad_masks == "error":  # the message already starts with the mask's file
            raise NiftiError(f"{exc}; pass --bad-masks exclude to train on this study without its "
                             "mask") from exc
        log.warning("study %s: mask left out (used without it): %s", uid, exc)
        return None
    warning = report_warning(uid, report)
    if warning:
        log.warning("%s", warning)
    return mask


def iter_training_studies(data: Path, *, cache: Path | None = None, uids: Sequence[str] | None = None,
                          masks: bool = True, require_mask: bool = False, bad_masks: str = "error",
                          workers: int | None = None) -> Iterator[TrainingStudy]:
    """Yield the training studies of an RSNA root, one volume in memory at a time.

    Args:
        data: the RSNA 2022 root (labels, boxes, images, segmentations).
        cache: its prepared cache (volumes and checked masks are read from it where it has the study).
        uids: these studies (default: every study of ``train.csv``, in its order).
        masks: read the masks (the baseline needs none).
        require_mask: only studies with a true mask (stage 1); others are not even decoded.
        bad_masks: ``"error"`` or ``"exclude"`` for a segmentation that fails its checks.
        workers: DICOM decoding processes per study (default: the cores available).

    Raises:
        NiftiError: a segmentation fails its checks and ``bad_masks`` is ``"error"``.
        DatasetError: the root's tables are unreadable.
        ValueError: an unknown ``bad_masks``.
    """
    from cspine.errors import CspineError
    from cspine.io.rsna import RsnaDataset
    from cspine.preprocess.cache import BAD_MASK_MODES, PSEUDO_MASK_FILE, StudyCache

    if bad_masks not in BAD_MASK_MODES:
        raise ValueError(f"bad_masks must be one of {BAD_MASK_MODES}, got {bad_masks!r}")
    ds = RsnaDataset(data)
    store = StudyCache(cache) if cache is not None else None
    labels_df = ds.train.set_index("StudyInstanceUID")
    for uid in uids or ds.train_uids():
        cached = store is not None and store.has(uid)
        if require_mask and ds.mask_path(uid) is None and not (cached and store.load_mask(uid, mmap=True)
                                                                is not None):
            continue
        mask, source, path = None, None, None
        try:
            if cached:
                volume = store.load(uid)  # type: ignore[union-attr]
                if masks:
                    mask = store.load_mask(uid)  # type: ignore[union-attr]
                    source = TRUE if mask is not None else None
                    pseudo = store.cache_dir / uid / PSEUDO_MASK_FILE  # type: ignore[union-attr]
                    if mask is None and not require_mask and pseudo.is_file():
                        mask, source = np.load(pseudo, allow_pickle=False), PSEUDO
            else:
                from cspine.io.study import load_study

                volume = load_study(ds.study_dir(uid), workers=workers)
                path = ds.mask_path(uid) if masks else None
        except (CspineError, OSError, ValueError) as exc:
            log.warning("study %s skipped: %s", uid, exc)
            continue
        if path is not None:
            mask = _checked_mask(path, volume, uid, bad_masks)
            source = TRUE if mask is not None else None
        if require_mask and mask is None:
            continue
        row = labels_df.loc[uid]
        yield TrainingStudy(uid, volume, mask, source, {v: int(row[v]) for v in VERTEBRAE},
                            box_slices_of(volume, ds.boxes, uid), box_regions_of(volume, ds.boxes, uid))
