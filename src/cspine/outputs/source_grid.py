"""Mapping a label map on the canonical grid back onto the source DICOM images' own pixel grids.

The pipeline segments a canonical volume (:func:`cspine.io.orient.to_canonical`: axis 0 superior ->
inferior, 1 anterior -> posterior, 2 right -> left), which may also have been resampled (a gap or
gantry tilt). A DICOM Segmentation needs one frame per source image, with that image's rows and
columns as stored. Rather than undoing the reader's steps one by one, each source pixel centre is
placed in patient space from the image's own ImagePositionPatient, ImageOrientationPatient and
PixelSpacing, taken into the canonical volume's index space through its affine, and given the label
of the nearest canonical voxel (0 outside the volume). Without resampling every source pixel centre
falls on a canonical voxel centre, so the mapping is exact: a permutation and flip of the array.

Axis-aligned images (the normal case) are gathered as an outer product of two index vectors; oblique
ones pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cspine.io.volume import Volume

__all__ = ["frame_geometry", "to_source_grid"]

_TOL = 1e-6


def frame_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(origin, step_row, step_col)`` in LPS mm: the centre of pixel (0, 0) and the moves of one row
    down and one column right (DICOM: IOP[:3] runs along a row, PixelSpacing = (row, column) spacing)."""
    origin = np.asarray([float(v) for v in ds.ImagePositionPatient], np.float64)
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], np.float64)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    return origin, iop[3:] * row_spacing, iop[:3] * col_spacing


def _nearest(x: np.ndarray | float) -> np.ndarray:
    return np.floor(np.asarray(x, np.float64) + 0.5).astype(np.int64)


def _frame_separable(labels: np.ndarray, q0: np.ndarray, qi: np.ndarray, qj: np.ndarray, rows: int,
                     cols: int) -> np.ndarray | None:
    dep_i, dep_j = np.abs(qi) > _TOL, np.abs(qj) > _TOL
    if dep_i.sum() != 1 or dep_j.sum() != 1 or (dep_i & dep_j).any():
        return None
    ai, aj = int(np.argmax(dep_i)), int(np.argmax(dep_j))
    a0 = 3 - ai - aj
    out = np.zeros((rows, cols), labels.dtype)
    k0 = int(_nearest(q0[a0]))
    if not 0 <= k0 < labels.shape[a0]:
        return out
    ii = _nearest(q0[ai] + np.arange(rows) * qi[ai])
    jj = _nearest(q0[aj] + np.arange(cols) * qj[aj])
    ok_i = (ii >= 0) & (ii < labels.shape[ai])
    ok_j = (jj >= 0) & (jj < labels.shape[aj])
    plane = np.take(labels, k0, axis=a0)  # remaining axes in ascending order
    if ai > aj:
        plane = plane.T
    out[np.ix_(ok_i, ok_j)] = plane[np.ix_(ii[ok_i], jj[ok_j])]
    return out


def _frame_general(labels: np.ndarray, q0: np.ndarray, qi: np.ndarray, qj: np.ndarray, rows: int,
                   cols: int) -> np.ndarray:
    i = np.arange(rows, dtype=np.float64)[:, None]
    j = np.arange(cols, dtype=np.float64)[None, :]
    idx = [_nearest(q0[a] + i * qi[a] + j * qj[a]) for a in range(3)]
    ok = np.ones((rows, cols), bool)
    for a in range(3):
        ok &= (idx[a] >= 0) & (idx[a] < labels.shape[a])
    out = np.zeros((rows, cols), labels.dtype)
    out[ok] = labels[idx[0][ok], idx[1][ok], idx[2][ok]]
    return out


def to_source_grid(labels: np.ndarray, volume: Volume, datasets: Sequence[Any], *,
                   _force_general: bool = False) -> np.ndarray:
    """The label map on each source image's pixel grid, frames in the order of ``datasets``.

    Args:
        labels: ``(Z, Y, X)`` label map on ``volume``'s grid (e.g. stage 1's, canonical).
        volume: the volume the labels live on (its affine: index -> LPS mm).
        datasets: the source images' headers (ImagePositionPatient, ImageOrientationPatient,
            PixelSpacing, Rows, Columns), e.g. :class:`cspine.outputs.source_series.SourceSeries`'s.

    Returns:
        ``(len(datasets), Rows, Columns)`` array of ``labels.dtype``.

    Example:
        >>> from cspine.io.volume import volume_from_arrays
        >>> from pydicom import Dataset
        >>> vol = volume_from_arrays(np.zeros((2, 2, 3), np.int16))
        >>> lab = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        >>> ds = Dataset(); ds.Rows, ds.Columns, ds.PixelSpacing = 2, 3, [1, 1]
        >>> ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, -1]
        >>> to_source_grid(lab, vol, [ds])[0].tolist()  # z = -1 mm is canonical slice 1
        [[6, 7, 8], [9, 10, 11]]
    """
    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise ValueError(f"label map shape {labels.shape} differs from the volume's {volume.shape}")
    inv = np.linalg.inv(volume.affine)
    out = []
    for ds in datasets:
        rows, cols = int(ds.Rows), int(ds.Columns)
        origin, step_row, step_col = frame_geometry(ds)
        q0 = inv[:3, :3] @ origin + inv[:3, 3]
        qi, qj = inv[:3, :3] @ step_row, inv[:3, :3] @ step_col
        frame = None if _force_general else _frame_separable(labels, q0, qi, qj, rows, cols)
        out.append(frame if frame is not None else _frame_general(labels, q0, qi, qj, rows, cols))
    return np.stack(out) if out else np.zeros((0, 0, 0), labels.dtype)
