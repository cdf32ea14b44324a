"""Training samples of the one-stage baseline: one whole-study stack per study with its labels.

Studies come from an RSNA root (the CT trainers' one loader, :mod:`cspine.ct.training_studies`:
volumes from the preprocessing cache when given, else decoded) or from memory (:class:`BaselineStudy`).
No mask is needed: the baseline uses every training study, with or without a segmentation. Stacks are
kept as uint8 (the [0, 1] bone window in 255 steps) like stage 2's crops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cspine.ct.baseline.inputs import stack_slice_targets, study_stack
from cspine.ct.cls.dataset import to_uint8
from cspine.io.volume import Volume
from cspine.labels import VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig


@dataclass(frozen=True, eq=False)
class BaselineStudy:
    """One training study as the baseline needs it.

    Attributes:
        uid: StudyInstanceUID.
        volume: the canonical volume.
        labels: ``{C1..C7: 0|1}``.
        box_slices: volume slice indices carrying a fracture box, or ``None`` when it has no boxes.
    """

    uid: str
    volume: Volume
    labels: dict[str, int]
    box_slices: frozenset[int] | None = None


@dataclass(frozen=True, eq=False)
class StudySample:
    """A stored study stack with its targets (duck-compatible with stage 2's ``CropSample``, so
    :class:`cspine.ct.cls.dataset.CropDataset` serves it with the same augmentation)."""

    uid: str
    image: np.ndarray  # uint8 (N, k, S, S)
    label: np.ndarray  # float32 (7,) C1..C7
    slice_target: np.ndarray  # float32 (N,), NaN = no target
    slice_indices: np.ndarray  # int64 (N,)


def sample_from_study(study: BaselineStudy, cfg: ClsConfig) -> StudySample:
    """The stack and targets of one study."""
    stack = study_stack(study.volume, cfg)
    y = np.array([int(study.labels.get(v, 0)) for v in VERTEBRAE], np.float32)
    return StudySample(study.uid, to_uint8(stack.array), y,
                       stack_slice_targets(stack, study.box_slices, bool(y.max() > 0)), stack.slice_indices)


def iter_baseline_studies(data: Path, *, cache: Path | None = None,
                          uids: Sequence[str] | None = None) -> Iterator[BaselineStudy]:
    """Yield the training studies of an RSNA root (:func:`cspine.ct.training_studies.iter_training_studies`,
    without their masks); a study that cannot be read is skipped with a warning."""
    from cspine.ct.training_studies import iter_training_studies

    for study in iter_training_studies(data, cache=cache, uids=uids, masks=False, workers=1):
        yield BaselineStudy(study.uid, study.volume, study.labels, study.box_slices)
