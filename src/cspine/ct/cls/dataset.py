"""Stage-2 training samples: one crop per (study, present vertebra) with its labels.

Per-slice auxiliary targets (what teaches a randomly initialised CNN where a fracture is):

* a study with fracture boxes (``train_bounding_boxes.csv``): a crop slice of a fractured vertebra is
  positive when its source slice carries a box and the vertebra's mask is on that slice; all slices
  of an intact vertebra are negative;
* a study without boxes: the RSNA 2022 3rd/5th-place pseudo-label, the vertebra's area on the slice
  relative to its largest slice area, times the vertebra's label.

Crops are kept as uint8 (the [0, 1] bone window in 255 steps, about 7 HU each) so that a few
thousand of them fit in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cspine.ct.cls.crops import Segmentation, VertebraCrop, extract_crops
from cspine.io.volume import Volume
from cspine.labels import LABEL_OF, VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ClsStudy:
    """One training study as stage 2 needs it.

    Attributes:
        uid: StudyInstanceUID.
        volume: the canonical volume.
        seg: its vertebra masks (true, pseudo or predicted).
        labels: ``{C1..C7: 0|1}`` fracture labels (``patient_overall`` optional).
        box_slices: volume slice indices carrying a fracture box, or ``None`` when the study has no
            boxes (pseudo slice labels are used then).
    """

    uid: str
    volume: Volume
    seg: Segmentation
    labels: dict[str, int]
    box_slices: frozenset[int] | None = None


@dataclass(frozen=True, eq=False)
class CropSample:
    """A stored crop with its targets."""

    uid: str
    name: str
    image: np.ndarray  # uint8 (N, C, H, W)
    label: float
    slice_target: np.ndarray  # float32 (N,)
    slice_indices: np.ndarray  # int64 (N,)


def slice_targets(crop: VertebraCrop, seg: Segmentation, fractured: bool,
                  box_slices: frozenset[int] | None) -> np.ndarray:
    """Auxiliary per-slice targets of one crop (see the module docstring)."""
    n = len(crop.slice_indices)
    if not fractured:
        return np.zeros(n, np.float32)
    label = LABEL_OF[crop.name]
    area = np.array([(seg.labels[int(z)] == label).sum() for z in crop.slice_indices], np.float32)
    if box_slices is not None:
        boxed = np.array([int(z) in box_slices for z in crop.slice_indices], np.float32)
        return (boxed * (area > 0)).astype(np.float32)
    peak = area.max()
    return (area / peak).astype(np.float32) if peak > 0 else np.zeros(n, np.float32)


def to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def samples_from_study(study: ClsStudy, cfg: ClsConfig) -> list[CropSample]:
    """Crops and targets of every present vertebra of one study."""
    crops = extract_crops(study.volume, study.seg, cfg)
    out = []
    for name, crop in crops.items():
        y = int(study.labels.get(name, 0))
        out.append(CropSample(study.uid, name, to_uint8(crop.array), float(y),
                              slice_targets(crop, study.seg, bool(y), study.box_slices),
                              crop.slice_indices))
    return out


def build_samples(studies: Iterable[ClsStudy], cfg: ClsConfig) -> Iterator[CropSample]:
    """Crop studies one at a time (a study's volume can be dropped once its crops are made)."""
    for study in studies:
        yield from samples_from_study(study, cfg)


class CropDataset(Dataset):
    """Torch dataset over :class:`CropSample` with light augmentation for training.

    Augmentation keeps the level and the fracture meaningful: a left-right mirror (the neck is
    near-symmetric), a small in-plane shift, and a contrast/brightness jitter of the CT channels.
    """

    def __init__(self, samples: list[CropSample], augment: bool = False, seed: int = 0,
                 mask_channel: bool = True) -> None:
        self.samples = samples
        self.augment = augment
        self.mask_channel = mask_channel
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.samples[i]
        x = s.image.astype(np.float32) / 255.0
        if self.augment:
            x = self._augment(x)
        return (torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(s.label, dtype=torch.float32),
                torch.from_numpy(s.slice_target))

    def _augment(self, x: np.ndarray) -> np.ndarray:
        rng = self.rng
        if rng.random() < 0.5:
            x = x[..., ::-1]
        size = x.shape[-1]
        shift = max(1, size // 16)
        dy, dx = rng.integers(-shift, shift + 1, size=2)
        x = np.roll(x, (int(dy), int(dx)), axis=(-2, -1))
        scale, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.05, 0.05)
        ct = slice(0, x.shape[1] - 1) if self.mask_channel else slice(None)
        x = x.copy()
        x[:, ct] = np.clip(x[:, ct] * scale + offset, 0.0, 1.0)
        return x


# --- an RSNA root (or its prepared cache) as a stream of ClsStudy ------------------------------

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


def iter_rsna_studies(data: Path, *, cache: Path | None = None, seg_dir: Path | None = None,
                      device: str | None = None, uids: list[str] | None = None) -> Iterator[ClsStudy]:
    """Yield the training studies of an RSNA root with their masks and labels.

    Volumes come from the prepared cache when given (else they are decoded from ``train_images``).
    Masks: the true mask where there is one, else the stage-1 pseudo mask
    (``<cache>/<uid>/pseudo_mask.npy``), else stage 1 (``seg_dir``) is run on the study. A study that
    cannot be read or has no mask at all is skipped with a warning.
    """
    from cspine.errors import CspineError
    from cspine.io.rsna import RsnaDataset

    ds = RsnaDataset(data)
    store = None
    if cache is not None:
        from cspine.preprocess.cache import StudyCache

        store = StudyCache(cache)
    seg_model = None
    labels_df = ds.train.set_index("StudyInstanceUID")
    for uid in uids or ds.train_uids():
        try:
            if store is not None and store.has(uid):
                volume = store.load(uid)
                mask = store.load_mask(uid)
                pseudo = Path(cache) / uid / "pseudo_mask.npy"  # type: ignore[arg-type]
                if mask is None and pseudo.is_file():
                    mask = np.load(pseudo, allow_pickle=False)
            else:
                from cspine.io.study import load_study

                volume = load_study(ds.study_dir(uid))
                mask = None
                if ds.mask_path(uid) is not None:
                    from cspine.io.nifti import load_mask_on_grid

                    mask = load_mask_on_grid(ds.mask_path(uid), volume)
            if mask is not None:
                seg = Segmentation.from_labels(np.asarray(mask, dtype=np.uint8))
            elif seg_dir is not None:
                from cspine.ct.seg.predict import SegModel, segment

                seg_model = seg_model or SegModel.load(seg_dir, device=device)
                seg = segment(volume, seg_model)
            else:
                log.warning("study %s: no mask, no pseudo mask and no stage-1 model: skipped", uid)
                continue
        except (CspineError, OSError, ValueError) as exc:
            log.warning("study %s skipped: %s", uid, exc)
            continue
        row = labels_df.loc[uid]
        labels = {v: int(row[v]) for v in VERTEBRAE}
        yield ClsStudy(uid, volume, seg, labels, box_slices_of(volume, ds.boxes, uid))
