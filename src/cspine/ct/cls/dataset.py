"""Stage-2 training samples: one crop per (study, present vertebra) with its labels.

Per-slice auxiliary targets (what teaches a randomly initialised CNN where a fracture is):

* a study with fracture boxes (``train_bounding_boxes.csv``): a crop slice of a fractured vertebra is
  positive when its source slice carries a box and the vertebra's mask is on that slice; all slices
  of an intact vertebra are negative;
* a study without boxes: the RSNA 2022 3rd/5th-place pseudo-label, the vertebra's area on the slice
  relative to its largest slice area, times the vertebra's label.

Per-pixel targets (for the model's optional pixel head, ``ClsConfig.pixel_head``), uint8 on the crop
grid: 1 inside a fracture box on a fractured vertebra's crop slice, 0 where there is no fracture, and
:data:`UNKNOWN` where the answer is not known: every pixel of every crop of a fractured patient without
boxes, and the pixels of an intact vertebra's crop that lie in a box (a neighbour's fracture seen in
the crop's margin must not be taught as "no fracture").

Crops are kept as uint8 (the [0, 1] bone window in 255 steps, about 7 HU each) so that a few
thousand of them fit in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from cspine.ct.cls.crops import VertebraCrop, extract_crops, jitter_geometry
from cspine.ct.seg.postprocess import Segmentation
from cspine.ct.training_studies import Box, box_regions_of, box_slices_of  # noqa: F401 (their old home)
from cspine.io.volume import Volume
from cspine.labels import LABEL_OF, VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig

log = logging.getLogger(__name__)


#: Pixel-target value of "not known" (ignored by the loss).
UNKNOWN = 255


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
        box_regions: the boxes themselves on the canonical grid
            (:func:`cspine.ct.training_studies.box_regions_of`), for the
            per-pixel targets; ``None`` when unknown.
    """

    uid: str
    volume: Volume
    seg: Segmentation
    labels: dict[str, int]
    box_slices: frozenset[int] | None = None
    box_regions: Mapping[int, tuple[Box, ...]] | None = None


@dataclass(frozen=True, eq=False)
class CropSample:
    """A stored crop with its targets."""

    uid: str
    name: str
    image: np.ndarray  # uint8 (N, C, H, W)
    label: float
    slice_target: np.ndarray  # float32 (N,)
    slice_indices: np.ndarray  # int64 (N,)
    pixel_target: np.ndarray | None = None  # uint8 (N, H, W): 0, 1 or UNKNOWN (see the module docstring)
    variant: int = 0  # 0: the crop the mask gives; 1..: a crop with jittered geometry (training only)


def crop_slice_targets(crop: VertebraCrop, seg: Segmentation, fractured: bool,
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


def pixel_targets(crop: VertebraCrop, fractured: bool, regions: Mapping[int, tuple[Box, ...]] | None,
                  size: int) -> np.ndarray:
    """Per-pixel targets of one crop (see the module docstring): uint8 ``(N, size, size)``."""
    n = len(crop.slice_indices)
    if regions is None:
        return np.full((n, size, size), UNKNOWN if fractured else 0, np.uint8)
    y0, y1, x0, x1 = crop.box
    sy, sx = size / max(y1 - y0, 1), size / max(x1 - x0, 1)
    out = np.zeros((n, size, size), np.uint8)
    for i, z in enumerate(crop.slice_indices):
        for by0, by1, bx0, bx1 in regions.get(int(z), ()):
            r0, r1 = int(np.floor((by0 - y0) * sy)), int(np.ceil((by1 - y0) * sy))
            c0, c1 = int(np.floor((bx0 - x0) * sx)), int(np.ceil((bx1 - x0) * sx))
            r0, r1, c0, c1 = max(r0, 0), min(r1, size), max(c0, 0), min(c1, size)
            if r1 > r0 and c1 > c0:
                out[i, r0:r1, c0:c1] = 1 if fractured else UNKNOWN
    return out


def to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def samples_from_study(study: ClsStudy, cfg: ClsConfig, *, variant: int = 0, jitter: float = 0.0,
                       rng: np.random.Generator | None = None) -> list[CropSample]:
    """Crops and targets of every present vertebra of one study.

    ``variant > 0`` with ``jitter > 0`` crops with the geometry moved at random
    (:func:`cspine.ct.cls.crops.jitter_geometry`); the targets follow the moved crop.
    """
    seg = study.seg
    if variant and jitter > 0:
        seg = jitter_geometry(seg, rng if rng is not None else np.random.default_rng(variant), jitter)
    crops = extract_crops(study.volume, seg, cfg)
    out = []
    for name, crop in crops.items():
        y = int(study.labels.get(name, 0))
        pixels = None
        if cfg.pixel_head:
            # A fractured patient without boxes: even an intact level's crop may show the fracture of
            # its neighbour in its margin, so nothing in the study is known pixel by pixel.
            unknown_study = study.box_regions is None and any(study.labels.get(v, 0) for v in VERTEBRAE)
            pixels = pixel_targets(crop, bool(y) or unknown_study, study.box_regions, cfg.image_size)
        out.append(CropSample(study.uid, name, to_uint8(crop.array), float(y),
                              crop_slice_targets(crop, study.seg, bool(y), study.box_slices),
                              crop.slice_indices, pixels, variant))
    return out


def build_samples(studies: Iterable[ClsStudy], cfg: ClsConfig, *, variants: int = 1, jitter: float = 0.0,
                  seed: int = 0) -> Iterator[CropSample]:
    """Crop studies one at a time (a study's volume can be dropped once its crops are made):
    ``variants`` crops per vertebra, the first as the mask gives it, the others jittered (none without
    ``jitter``: they would repeat the first)."""
    rng = np.random.default_rng(seed)
    n = max(1, variants) if jitter > 0 else 1
    for study in studies:
        for v in range(n):
            yield from samples_from_study(study, cfg, variant=v, jitter=jitter, rng=rng)


class CropDataset(Dataset):
    """Torch dataset over :class:`CropSample` with light augmentation for training.

    Augmentation keeps the level and the fracture meaningful: a left-right mirror (the neck is
    near-symmetric), a small in-plane shift, and a contrast/brightness jitter of the CT channels.

    Random draws: in the main process (``num_workers=0``) one generator seeded with ``seed`` runs
    through all epochs, so a seed gives one sequence. A DataLoader worker holds a copy of the dataset,
    generator included; drawing from that copy would make every worker repeat the same augmentations,
    epoch after epoch. A worker therefore draws from a generator seeded with ``seed`` and the seed
    the DataLoader gave that worker (its base seed, new every epoch, plus the worker's id).
    """

    def __init__(self, samples: list[CropSample], augment: bool = False, seed: int = 0,
                 mask_channel: bool = True) -> None:
        self.samples = samples
        self.augment = augment
        self.mask_channel = mask_channel
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None  # the DataLoader worker seed self._worker_rng was made for
        self._worker_rng: np.random.Generator | None = None

    @property
    def rng(self) -> np.random.Generator:
        """The generator of this process: the dataset's own, or this worker's for this epoch."""
        info = get_worker_info()
        if info is None:
            return self._rng
        if self._worker_rng is None or info.seed != self._worker_seed:
            self._worker_seed = info.seed
            self._worker_rng = np.random.default_rng([self.seed, info.seed])
        return self._worker_rng

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(crop (N, C, H, W) float, label, slice targets (N,), pixel targets (N, H, W) uint8 or
        an empty tensor when the samples carry none)``."""
        s = self.samples[i]
        x = s.image.astype(np.float32) / 255.0
        pix = getattr(s, "pixel_target", None)  # the one-stage baseline's samples have none
        if self.augment:
            x, pix = self._augment(x, pix)
        pix_t = (torch.from_numpy(np.ascontiguousarray(pix)) if pix is not None
                 else torch.zeros(0, dtype=torch.uint8))
        return (torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(s.label, dtype=torch.float32),
                torch.from_numpy(s.slice_target), pix_t)

    def _augment(self, x: np.ndarray, pix: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        rng = self.rng
        if rng.random() < 0.5:
            x = x[..., ::-1]
            pix = pix[..., ::-1] if pix is not None else None
        size = x.shape[-1]
        shift = max(1, size // 16)
        dy, dx = rng.integers(-shift, shift + 1, size=2)
        x = np.roll(x, (int(dy), int(dx)), axis=(-2, -1))
        if pix is not None:
            pix = np.roll(pix, (int(dy), int(dx)), axis=(-2, -1))
        scale, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.05, 0.05)
        ct = slice(0, x.shape[1] - 1) if self.mask_channel else slice(None)
        x = x.copy()
        x[:, ct] = np.clip(x[:, ct] * scale + offset, 0.0, 1.0)
        return x, pix


# --- an RSNA root (or its prepared cache) as a stream of ClsStudy ------------------------------

def iter_rsna_studies(data: Path, *, cache: Path | None = None, seg_dir: Path | None = None,
                      device: str | None = None, uids: list[str] | None = None,
                      bad_masks: str = "error") -> Iterator[ClsStudy]:
    """Yield the training studies of an RSNA root with their masks and labels.

    Studies, volumes and masks come from :func:`cspine.ct.training_studies.iter_training_studies` (the
    cache when given, the true mask where there is one, checked as ``cspine ct prepare`` checks it, else
    the cached stage-1 pseudo mask); a study with neither is segmented by stage 1 (``seg_dir``), or
    skipped with a warning when no stage-1 model is given.
    """
    from cspine.ct.training_studies import iter_training_studies

    seg_model = None
    for study in iter_training_studies(data, cache=cache, uids=uids, bad_masks=bad_masks):
        if study.mask is not None:
            seg = Segmentation.from_labels(np.asarray(study.mask, dtype=np.uint8))
        elif seg_dir is not None:
            from cspine.ct.seg.predict import SegModel, segment

            seg_model = seg_model or SegModel.load(seg_dir, device=device)
            seg = segment(study.volume, seg_model)
        else:
            log.warning("study %s: no mask, no pseudo mask and no stage-1 model: skipped", study.uid)
            continue
        yield ClsStudy(study.uid, study.volume, seg, study.labels, study.box_slices, study.box_regions)
