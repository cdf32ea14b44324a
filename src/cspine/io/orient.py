"""Reorienting a volume into the canonical axis order by flips and axis permutations only.

Canonical (what every model sees): axis 0 runs superior -> inferior, axis 1 anterior -> posterior,
axis 2 the patient's right -> left. In LPS terms the axes point along -z, +y, +x.

Each array axis is matched to the patient axis its affine column points along most (the best of the
six permutations, so oblique volumes get a consistent answer), and flipped when it points the wrong way.
No voxel is resampled, so HU values are untouched and a label map predicted on the canonical grid
maps back to the original array exactly with :meth:`Reorientation.invert`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from cspine.io.volume import Volume

#: For canonical axes 0, 1, 2: the LPS component (z, y, x) and the sign it must have.
_TARGET = ((2, -1.0), (1, 1.0), (0, 1.0))


@dataclass(frozen=True)
class Reorientation:
    """Canonical axis ``c`` is original axis ``perm[c]``, reversed when ``flip[c]``."""

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """Original array -> canonical array (a view; copy it if you need it contiguous)."""
        out = np.transpose(arr, self.perm)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    def invert(self, arr: np.ndarray) -> np.ndarray:
        """Canonical array (e.g. a predicted label map) -> original array order (a view)."""
        arr = arr[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]
        return np.transpose(arr, np.argsort(self.perm))

    def affine(self, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The canonical volume's affine, given the original ``affine`` and array ``shape``."""
        out = np.eye(4)
        out[:3, 3] = affine[:3, 3]
        for c, (axis, flipped) in enumerate(zip(self.perm, self.flip, strict=True)):
            col = affine[:3, axis]
            if flipped:
                out[:3, 3] += col * (shape[axis] - 1)
                col = -col
            out[:3, c] = col
        return out

    def to_dict(self) -> dict[str, list]:
        return {"perm": list(self.perm), "flip": list(self.flip)}


def canonical_transform(affine: np.ndarray) -> Reorientation:
    """The flips/permutation that bring an array with this index->LPS ``affine`` to canonical."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = np.abs(cols) / np.maximum(np.linalg.norm(cols, axis=0), 1e-12)
    best = max(itertools.permutations(range(3)),
               key=lambda p: sum(unit[_TARGET[c][0], p[c]] for c in range(3)))
    flip = tuple(bool(np.sign(cols[_TARGET[c][0], best[c]]) != _TARGET[c][1]) for c in range(3))
    return Reorientation(tuple(best), flip)  # type: ignore[arg-type]


def _flip_inplace(arr: np.ndarray, axis: int) -> None:
    """Reverse ``arr`` along ``axis`` in place, one slice at a time (no second full copy)."""
    if axis == 0:
        n = arr.shape[0]
        for k in range(n // 2):
            tmp = arr[k].copy()
            arr[k] = arr[n - 1 - k]
            arr[n - 1 - k] = tmp
    else:
        for k in range(arr.shape[0]):
            arr[k] = np.flip(arr[k], axis - 1).copy()


def to_canonical(volume: Volume, *, inplace: bool = False) -> Volume:
    """Flip/permute ``volume`` into the canonical orientation, keeping affine and slice map consistent.

    Args:
        volume: any volume with an index -> LPS affine (axial, sagittal, coronal or oblique).
        inplace: reuse ``volume.hu``'s memory when only flips are needed (then ``volume`` must not be used
            afterwards); otherwise the result owns a new C-contiguous array.

    Returns:
        The canonical volume. ``meta["reorientation"]`` records the :class:`Reorientation` (``perm``,
        ``flip``) and ``meta["source_shape"]``, so a canonical label map can be mapped back with
        :func:`from_canonical`. Slice records follow axis 0 when it was the slice axis (reversed with
        it); when another axis becomes axis 0 (e.g. a sagittal series) they no longer describe axial
        slices and are dropped.
    """
    reo = canonical_transform(volume.affine)
    affine = reo.affine(volume.affine, volume.shape)
    meta = dict(volume.meta)
    meta["reorientation"] = reo.to_dict()
    meta["source_shape"] = list(volume.shape)
    slices = volume.slices
    if reo.perm[0] != 0:
        slices = ()
    elif reo.flip[0]:
        slices = slices[::-1]
    if reo.perm == (0, 1, 2) and inplace and volume.hu.flags.writeable and volume.hu.flags.c_contiguous:
        hu = volume.hu
        for axis in range(3):
            if reo.flip[axis]:
                _flip_inplace(hu, axis)
    else:
        hu = np.ascontiguousarray(reo.apply(volume.hu))
        if not inplace and np.shares_memory(hu, volume.hu):
            hu = hu.copy()
    return Volume(hu, affine, slices, meta)


def from_canonical(array: np.ndarray, volume_or_reorientation: Volume | Reorientation) -> np.ndarray:
    """Map an array on the canonical grid (e.g. a label map) back to the source array's axis order.

    Args:
        array: ``(Z, Y, X)`` array on the canonical volume's grid.
        volume_or_reorientation: the canonical volume returned by :func:`to_canonical` (its
            ``meta["reorientation"]``) or the :class:`Reorientation` itself.
    """
    reo = volume_or_reorientation
    if isinstance(reo, Volume):
        info = reo.meta.get("reorientation")
        if info is None:
            raise ValueError("the volume has no meta['reorientation']; was it made by to_canonical?")
        reo = Reorientation(tuple(info["perm"]), tuple(bool(f) for f in info["flip"]))  # type: ignore[arg-type]
    return np.ascontiguousarray(reo.invert(array))


def stored_box_on_canonical(volume: Volume, z: int, x: float, y: float, width: float,
                            height: float) -> tuple[int, int, int, int] | None:
    """A box in the stored pixels of the image behind canonical slice ``z`` -> ``(y0, y1, x0, x1)`` on the
    canonical grid (stops exclusive, clipped to the grid), or ``None`` when nothing of it is left.

    ``x``/``width`` are columns and ``y``/``height`` rows of the DICOM image as stored (RSNA's
    ``train_bounding_boxes.csv``). The slice's ``pixel_offset`` (gantry-tilt correction shifts every slice
    by its own amount onto an enlarged grid) is added first, then the volume's reorientation
    (``meta["reorientation"]``; none means the volume was canonical as read) is applied.

    Raises:
        ValueError: the volume was not acquired axially (axis 0 is not the stored slice axis), so its
            stored rows and columns are no axial plane.
    """
    reo = volume.meta.get("reorientation") or {"perm": [0, 1, 2], "flip": [False, False, False]}
    perm, flip = list(reo["perm"]), list(reo["flip"])
    if perm[0] != 0:
        raise ValueError("the volume's slices are not its stored images (not acquired axially)")
    info = volume.slices[z] if volume.slices else None
    off_r, off_c = (info.pixel_offset if info is not None and info.pixel_offset is not None else (0.0, 0.0))
    source_shape = list(volume.meta.get("source_shape") or volume.shape)
    ranges = {1: (float(y) + off_r, float(y) + float(height) + off_r),
              2: (float(x) + off_c, float(x) + float(width) + off_c)}
    canon = []
    for c in (1, 2):
        lo, hi = ranges[perm[c]]
        n = source_shape[perm[c]]
        if flip[c]:
            lo, hi = n - hi, n - lo
        canon.append((max(int(np.floor(lo)), 0), min(int(np.ceil(hi)), volume.shape[c])))
    (y0, y1), (x0, x1) = canon
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None

