"""Stage-1 post-processing and its result type.

* :func:`largest_component_per_level` keeps one 3-D connected component per vertebra (a spurious
  blob labelled "C4" in the skull is dropped).
* :func:`enforce_level_order` keeps anatomy: along axis 0 of the canonical orientation (superior ->
  inferior) C1 lies above C2 ... above C7. When the centroids of the found levels are out of order the
  labels are reassigned by position (the highest found level gets the smallest found label, and so on)
  and a warning says which levels were swapped.
* :class:`Segmentation` holds the label map and a :class:`VertebraBox` per vertebra;
  :meth:`Segmentation.from_labels` builds it from any label map (stage 2 trains from true masks so).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from cspine.labels import CERVICAL_LABELS, NAME_OF, VERTEBRAE

#: The start of the warning :func:`enforce_level_order` gives when it had to relabel the levels.
RELABELLED_WARNING = "vertebra levels were out of cranio-caudal order and were relabelled by position"


@dataclass(frozen=True)
class VertebraBox:
    """Where one vertebra lies on the volume's grid (stop indices are exclusive)."""

    name: str
    present: bool
    z_range: tuple[int, int] = (0, 0)  # (start, stop) slice indices
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (y0, y1, x0, x1)
    centroid: tuple[float, float, float] = (float("nan"),) * 3  # (z, y, x) voxel indices
    voxels: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "present": self.present, "z_range": list(self.z_range),
                "box": list(self.box), "centroid": [round(c, 2) for c in self.centroid],
                "voxels": self.voxels}


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A stage-1 result: ``labels`` uint8 (Z, Y, X) on the volume's grid (1..7 = C1..C7, 8 = T1 when
    the model has it) and a box per cervical vertebra."""

    labels: np.ndarray
    vertebrae: dict[str, VertebraBox]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(n for n, b in self.vertebrae.items() if b.present)

    @classmethod
    def from_labels(cls, labels: np.ndarray, warnings: tuple[str, ...] | list[str] = ()) -> Segmentation:
        """Boxes of C1..C7 from a label map (any integer dtype; 1..7 = C1..C7).

        Example:
            >>> lab = np.zeros((4, 5, 5), np.uint8); lab[1:3, 1:4, 2:4] = 2
            >>> b = Segmentation.from_labels(lab).vertebrae["C2"]
            >>> b.z_range, b.box, b.voxels
            ((1, 3), (1, 4, 2, 4), 12)
        """
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels must be 3-D (Z, Y, X), got shape {labels.shape}")
        top = max(CERVICAL_LABELS)
        # find_objects ignores labels above max_label (thoracic levels); no copy of a large volume.
        small = labels if labels.dtype.kind == "u" else labels.astype(np.int64)
        objects = ndimage.find_objects(small, max_label=top) if labels.size else [None] * top
        boxes: dict[str, VertebraBox] = {}
        for lab, name in zip(CERVICAL_LABELS, VERTEBRAE, strict=True):
            sl = objects[lab - 1]
            if sl is None:
                boxes[name] = VertebraBox(name, False)
                continue
            coords = np.nonzero(small[sl] == lab)
            cen = tuple(float(c.mean() + s.start) for c, s in zip(coords, sl, strict=True))
            boxes[name] = VertebraBox(name, True, (sl[0].start, sl[0].stop),
                                      (sl[1].start, sl[1].stop, sl[2].start, sl[2].stop),
                                      cen, int(len(coords[0])))  # type: ignore[arg-type]
        return cls(labels.astype(np.uint8, copy=False), boxes, tuple(warnings))

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary (no label map)."""
        return {"vertebrae": {n: b.to_dict() for n, b in self.vertebrae.items()},
                "warnings": list(self.warnings)}


def largest_component_per_level(labels: np.ndarray, levels: tuple[int, ...] | None = None,
                                ) -> tuple[np.ndarray, dict[int, int]]:
    """Keep only the largest 26-connected component of every level.

    Returns:
        The cleaned labels (a copy) and, per level, how many voxels were removed.
    """
    out = np.array(labels, copy=True)
    levels = tuple(int(v) for v in np.unique(out) if v) if levels is None else levels
    structure = np.ones((3, 3, 3), bool)
    removed: dict[int, int] = {}
    top = int(out.max()) if out.size else 0
    objects = ndimage.find_objects(out if out.dtype.kind == "u" else out.astype(np.int64), max_label=top) \
        if top else []
    for lab in levels:
        if lab > top or objects[lab - 1] is None:
            continue
        sl = objects[lab - 1]
        sub = out[sl]
        comp, n = ndimage.label(sub == lab, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        keep = int(np.argmax(sizes))
        drop = (comp != keep) & (comp > 0)
        removed[lab] = int(drop.sum())
        sub[drop] = 0
    return out, removed


def enforce_level_order(labels: np.ndarray, levels: tuple[int, ...] = CERVICAL_LABELS,
                        ) -> tuple[np.ndarray, list[str]]:
    """Make the found levels run from cranial (small axis-0 index) to caudal in label order.

    When the z-centroids of the found levels are not increasing with the label, the found labels
    are reassigned by position and a warning names the swap. Missing levels are left missing.
    """
    found: list[tuple[float, int]] = []
    for lab in levels:
        zs = np.nonzero(np.any(labels == lab, axis=(1, 2)))[0]
        if len(zs):
            counts = np.count_nonzero(labels[zs] == lab, axis=(1, 2))
            found.append((float(np.average(zs, weights=counts)), lab))
    by_label = [lab for _, lab in sorted(found, key=lambda t: t[1])]
    by_position = [lab for _, lab in sorted(found, key=lambda t: t[0])]
    if by_label == by_position:
        return labels, []
    # The component at the k-th position from the top gets the k-th smallest found label.
    lut = np.arange(max(256, int(labels.max()) + 1), dtype=labels.dtype)
    for new, old in zip(by_label, by_position, strict=True):
        lut[old] = new
    moved = [f"{NAME_OF[old]}->{NAME_OF[new]}" for new, old in zip(by_label, by_position, strict=True)
             if new != old]
    warning = f"{RELABELLED_WARNING}: " + ", ".join(moved)
    return lut[labels], [warning]


def monotone_slice_levels(labels: np.ndarray, levels: tuple[int, ...] = CERVICAL_LABELS) -> np.ndarray:
    """The best non-decreasing level per slice (0 for slices without a vertebra).

    Each slice votes with its pixel counts per level; a dynamic programme picks the sequence of
    levels, non-decreasing from cranial to caudal, that agrees with the most pixels. This pools the
    level evidence of the whole column (C1's ring, C2's dens, C7's long spinous process) instead of
    trusting each slice alone.
    """
    n = len(labels)
    lv = np.asarray(levels)
    counts = np.stack([np.count_nonzero(labels == v, axis=(1, 2)) for v in lv], axis=1).astype(np.float64)
    rows = np.flatnonzero(counts.sum(1) > 0)
    out = np.zeros(n, np.int64)
    if not len(rows):
        return out
    score = np.zeros((len(rows), len(lv)))
    back = np.zeros((len(rows), len(lv)), np.int64)
    score[0] = counts[rows[0]]
    for i in range(1, len(rows)):
        best_prev = np.maximum.accumulate(score[i - 1])  # best over levels <= l
        back[i] = [int(np.argmax(score[i - 1][: j + 1])) for j in range(len(lv))]
        score[i] = best_prev + counts[rows[i]]
    j = int(np.argmax(score[-1]))
    for i in range(len(rows) - 1, -1, -1):
        out[rows[i]] = lv[j]
        j = back[i][j] if i else j
    return out


def relabel_monotone(labels: np.ndarray, levels: tuple[int, ...] = CERVICAL_LABELS) -> np.ndarray:
    """Give every vertebra pixel of slice z the slice's monotone level, unless the network said the
    next level up or down (slices where two vertebrae meet keep both)."""
    per_slice = monotone_slice_levels(labels, levels)
    out = labels.copy()
    fg = np.isin(labels, levels)
    target = per_slice[:, None, None]
    near = np.abs(labels.astype(np.int64) - target) <= 1
    fix = fg & ~near & (target > 0)
    out[fix] = np.broadcast_to(target, labels.shape)[fix]
    return out


def postprocess(labels: np.ndarray, levels: tuple[int, ...] = CERVICAL_LABELS,
                ) -> tuple[np.ndarray, list[str]]:
    """Monotone level per slice, largest component per level, then level order.

    Returns the labels and any warnings.
    """
    cleaned = relabel_monotone(labels, levels)
    cleaned, _ = largest_component_per_level(cleaned, levels)
    return enforce_level_order(cleaned, levels)
