"""NIfTI volumes and label masks, mapped through their affines onto a :class:`Volume`'s grid.

NIfTI stores voxels in ``(i, j, k)`` order with an affine to RAS millimetres; a :class:`Volume`
stores ``(z, y, x)`` with an affine to DICOM's LPS millimetres. The two are tied together by

* ``F = diag(-1, -1, 1, 1)``: RAS <-> LPS (negate the first two world axes);
* a 4x4 index permutation/flip ``Q`` between the two voxel orders.

Masks are never flipped "by convention": every mapping here goes voxel -> world -> voxel through
both affines, so a sagittal, oblique or axial mask lands where its header says it lies.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from cspine.errors import NiftiError
from cspine.io.volume import Volume
from cspine.labels import HU_MAX, HU_MIN

#: Values outside this range (HU) are no CT's: metal reaches about +30,000 in extended scales, air -1,024.
IMPLAUSIBLE_HU = (-32_768.0, 65_535.0)

log = logging.getLogger(__name__)

#: RAS <-> LPS: negate the first two world axes (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: (z, y, x, 1) <-> (i, j, k, 1) with i = x, j = y, k = z (its own inverse).
ZYX_TO_IJK = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)

# Voxels processed per step by the general (oblique) resampler: bounds temporaries to ~100 MB.
_CHUNK_VOXELS = 1 << 20
# Relative size below which an affine entry counts as zero (axis-aligned fast path).
_AXIS_TOL = 1e-6
#: Float labels further than this from an integer are not labels (rounding noise stays below it).
NON_INTEGER_TOL = 0.01
#: Two grids' axes further apart than this (degrees) are not the same grid.
GRID_ANGLE_TOL_DEG = 1.0


def lps_affine_from_nifti(affine_ras: np.ndarray) -> np.ndarray:
    """Turn a NIfTI affine ((i, j, k) -> RAS) into a Volume affine ((k, j, i) -> LPS)."""
    return RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64) @ ZYX_TO_IJK


def _load(path: str | Path) -> nib.Nifti1Image | nib.Nifti2Image:
    path = Path(path)
    if not path.is_file():
        raise NiftiError("file not found", path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad file
        raise NiftiError(f"not a readable NIfTI file ({exc})", path) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise NiftiError(f"expected a NIfTI image, got {type(img).__name__}", path)
    shape = img.shape
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        img = img.slicer[(..., *([0] * (len(shape) - 3)))]
    if len(img.shape) != 3:
        raise NiftiError(f"expected a 3-D image, got shape {shape}", path)
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise NiftiError("the header's affine is singular or not finite", path)
    sizes = np.linalg.norm(img.affine[:3, :3], axis=0)
    if sizes.min() < 1e-3 or sizes.max() > 1e4 or np.linalg.cond(img.affine[:3, :3] / sizes) > 1e3:
        raise NiftiError(f"the header's affine is degenerate (voxel size {np.round(sizes, 6).tolist()} mm, "
                         "or axes nearly parallel)", path)
    return img


def read_nifti_volume(path: str | Path) -> Volume:
    """Read a NIfTI CT image as a :class:`Volume` (int16 HU, LPS affine, ``(k, j, i)`` axis order).

    The array is NOT reoriented: axis 0 is the file's k axis. Pass the result through
    ``cspine.io.orient.to_canonical`` for the canonical orientation. Scaling (scl_slope/inter) is
    applied; values are rounded and clipped to ``[HU_MIN, HU_MAX]``.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Returns:
        A Volume whose ``meta`` holds only geometry facts (no patient data).

    Raises:
        NiftiError: missing, unreadable or non-3-D file.
    """
    img = _load(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # a truncated or corrupt data block: nibabel raises many kinds
        raise NiftiError(f"cannot read the image data ({type(exc).__name__}: {exc})", path) from exc
    warns: list[str] = []
    n_nan = 0
    if np.issubdtype(data.dtype, np.floating):
        n_nan = int((~np.isfinite(data)).sum())  # NaN and +-inf: no number a CT voxel can hold
        if n_nan:
            warns.append(f"{n_nan} NaN or infinite voxel(s) in the file, set to {HU_MIN} HU")
        data = np.rint(np.nan_to_num(data, nan=HU_MIN, posinf=HU_MIN, neginf=HU_MIN))
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo < IMPLAUSIBLE_HU[0] or hi > IMPLAUSIBLE_HU[1]:
        warns.append(f"values from {lo:.4g} to {hi:.4g}, far outside any CT's Hounsfield units: clipped to "
                     f"{HU_MIN}..{HU_MAX} (is this a CT in HU, with its scl_slope/scl_inter?)")
    hu = np.clip(data, HU_MIN, HU_MAX).astype(np.int16)
    hu = np.ascontiguousarray(hu.transpose(2, 1, 0))
    meta = {
        "Modality": "CT",
        "source_format": "NIfTI",
        "nifti_orientation": "".join(c or "?" for c in nib.aff2axcodes(img.affine)),
        "nan_voxels": n_nan,
        "warnings": warns,
    }
    return Volume(hu, lps_affine_from_nifti(img.affine), (), meta)


def _integer_labels(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """The mask's voxels as the smallest unsigned integer array.

    The stored array is read once in its on-disk type (slicing a gzipped proxy again and again would
    decompress the file from its start each time); float or scaled values are rounded k-slab by
    k-slab, so a float64 copy of a large mask never exists whole.
    """
    proxy = img.dataobj
    try:
        raw = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    except Exception as exc:  # a truncated or corrupt data block: nibabel raises many kinds
        raise NiftiError(f"cannot read the mask's data ({type(exc).__name__}: {exc})", path) from exc
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    scaled = slope != 1.0 or inter != 0.0
    limit = np.iinfo(np.uint16).max
    if not scaled and np.issubdtype(raw.dtype, np.integer):
        lo, hi = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
        if lo < 0 or hi > limit:
            raise NiftiError(f"label mask values must lie in 0..65535, found {lo}..{hi}", path)
        return raw.astype(np.uint8 if hi <= 255 else np.uint16, copy=False)
    out = np.empty(raw.shape, dtype=np.uint16)
    step = max(1, _CHUNK_VOXELS // max(1, raw.shape[0] * raw.shape[1]))
    for k0 in range(0, raw.shape[2], step):
        chunk = raw[:, :, k0:k0 + step].astype(np.float64)
        if scaled:
            chunk = chunk * slope + inter
        finite = np.isfinite(chunk)
        if not finite.all():
            n_nan = int(np.isnan(chunk).sum())
            what = f"{n_nan} NaN (not-a-number)" if n_nan else f"{int((~finite).sum())} infinite"
            raise NiftiError(f"{what} voxel value(s) from slice k={k0 + int(np.argwhere(~finite)[0][2])} on; "
                             "a label mask holds integer labels only", path)
        rounded = np.rint(chunk)
        off = np.abs(chunk - rounded)
        if off.size and float(off.max()) > NON_INTEGER_TOL:
            bad = float(chunk.flat[int(np.argmax(off))])
            raise NiftiError(f"non-integer label value {bad:g} (a label mask holds integers; is this an "
                             "image rather than a mask?)", path)
        chunk = rounded
        if chunk.size and (chunk.min() < 0 or chunk.max() > limit):
            raise NiftiError(
                f"label mask values must lie in 0..65535, found {chunk.min():g}..{chunk.max():g}", path)
        out[:, :, k0:k0 + step] = chunk
    return out.astype(np.uint8) if out.size and out.max() <= 255 else out


def _axis_map(m: np.ndarray) -> list[int] | None:
    """For a volume-index -> mask-index matrix, the volume axis each mask axis depends on, when each
    mask axis depends on exactly one volume axis (no obliquity); else None."""
    lin = m[:3, :3]
    scale = np.abs(lin).max()
    nz = np.abs(lin) > _AXIS_TOL * scale
    if not (nz.sum(axis=1) == 1).all() or not (nz.sum(axis=0) == 1).all():
        return None
    return [int(np.argmax(nz[a])) for a in range(3)]


def _nearest(coord: np.ndarray) -> np.ndarray:
    # floor(c + 0.5): half-way points go up consistently (np.rint would alternate by parity).
    return np.floor(coord + 0.5).astype(np.int64)


def read_label_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A label NIfTI's voxels as unsigned integers ``(i, j, k)`` and its affine (voxel -> RAS).

    Raises:
        NiftiError: unreadable or non-3-D file, NaN/infinite or non-integer values, labels that are
            negative or beyond 65535.
    """
    path = Path(path)
    img = _load(path)
    return _integer_labels(img, path), np.asarray(img.affine, np.float64)


def grid_mismatch(affine: np.ndarray, shape: tuple[int, ...], volume: Volume,
                  slack_voxels: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> str | None:
    """Why a label grid (NIfTI ``affine``, voxel shape ``shape``) is not the grid of ``volume``, or None.

    The grids match when the mask's axes run along the volume's (within
    :data:`GRID_ANGLE_TOL_DEG`) and its field of view -- the box spanned by its first and last voxel
    centres -- coincides with the volume's along every axis within half a voxel of the coarser grid
    (plus ``slack_voxels`` of the volume, e.g. the rows and columns tilt correction added). A mask drawn
    on the same series therefore matches whatever its storage order, orientation or (isotropic)
    resampling; a mask of another study, a cropped or padded mask, or one with a lost header does not.
    """
    vol_dirs = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    lin = RAS_TO_LPS[:3, :3] @ np.asarray(affine, np.float64)[:3, :3]  # mask index -> LPS
    mask_sizes = np.linalg.norm(lin, axis=0)
    cosines = np.abs((lin / mask_sizes).T @ vol_dirs)  # mask axis x volume axis
    worst = float(np.degrees(np.arccos(np.clip(cosines.max(axis=1).min(), -1.0, 1.0))))
    if worst > GRID_ANGLE_TOL_DEG:
        return f"its axes are rotated by {worst:.1f} degrees against the CT's"
    to_vol = np.linalg.inv(volume.affine) @ RAS_TO_LPS @ np.asarray(affine, np.float64)  # mask idx -> vol idx
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)])
    in_vol = corners @ to_vol.T
    vol_sizes = np.linalg.norm(volume.affine[:3, :3], axis=0)
    axis_of = cosines.argmax(axis=0)  # the mask axis along each volume axis
    names = ("slice", "row", "column")
    for v in range(3):
        lo, hi = float(in_vol[:, v].min()), float(in_vol[:, v].max())
        tol = 0.5 * max(1.0, mask_sizes[axis_of[v]] / vol_sizes[v]) + slack_voxels[v] + 1e-3
        n = volume.shape[v]
        if abs(lo) > tol or abs(hi - (n - 1)) > tol:
            return (f"along the CT's {names[v]} axis it covers voxels {lo:.1f}..{hi:.1f} of the CT's "
                    f"0..{n - 1} (mask shape {tuple(int(x) for x in shape)}, CT shape {volume.shape})")
    return None


def load_mask_on_grid(path: str | Path, volume: Volume, *, _force_general: bool = False) -> np.ndarray:
    """Map a label NIfTI onto ``volume``'s voxel grid through both affines (nearest neighbour).

    Works for any mask orientation (axial, sagittal, oblique) and voxel size: for each voxel centre
    of ``volume`` the world position is mapped into the mask's voxel space and the nearest label is
    taken. Float-typed labels are rounded; positions outside the mask get 0.

    Args:
        path: label ``.nii``/``.nii.gz``.
        volume: the grid to map onto.

    Returns:
        ``uint8`` (or ``uint16`` for labels above 255) array of ``volume.shape``.

    Raises:
        NiftiError: unreadable file, NaN or non-integer values, or labels that are negative or beyond
            65535.
    """
    labels, affine = read_label_file(path)
    return map_labels_on_grid(labels, affine, volume, _force_general=_force_general)


def map_labels_on_grid(labels: np.ndarray, affine: np.ndarray, volume: Volume, *,
                       _force_general: bool = False) -> np.ndarray:
    """Map integer labels ``(i, j, k)`` with NIfTI ``affine`` onto ``volume``'s grid (nearest neighbour)."""
    # volume index (z, y, x, 1) -> LPS -> RAS -> mask index (i, j, k, 1)
    m = np.linalg.inv(np.asarray(affine, np.float64)) @ RAS_TO_LPS @ volume.affine
    out_shape = volume.shape
    axes = None if _force_general else _axis_map(m)
    if axes is not None:
        return _gather_separable(labels, m, axes, out_shape)
    return _gather_general(labels, m, out_shape)


def _gather_separable(labels: np.ndarray, m: np.ndarray, axes: list[int],
                      out_shape: tuple[int, int, int]) -> np.ndarray:
    """Axis-aligned case: each mask index is a 1-D function of one volume index, so the result is
    an outer-product gather (no per-voxel coordinates in memory)."""
    idx_by_vol_axis: list[np.ndarray] = [np.empty(0, np.int64)] * 3
    ok_by_vol_axis: list[np.ndarray] = [np.empty(0, bool)] * 3
    for a, v in enumerate(axes):
        coord = m[a, v] * np.arange(out_shape[v], dtype=np.float64) + m[a, 3]
        idx = _nearest(coord)
        ok = (idx >= 0) & (idx < labels.shape[a])
        idx_by_vol_axis[v] = np.where(ok, idx, 0)
        ok_by_vol_axis[v] = ok
    # Reorder the mask's axes into volume order, then gather with an open mesh.
    perm = [axes.index(v) for v in range(3)]
    src = labels.transpose(perm)
    out = src[np.ix_(*idx_by_vol_axis)]
    for v in range(3):
        bad = ~ok_by_vol_axis[v]
        if bad.any():
            sl: list[slice | np.ndarray] = [slice(None)] * 3
            sl[v] = bad
            out[tuple(sl)] = 0
    return np.ascontiguousarray(out)


def _gather_general(labels: np.ndarray, m: np.ndarray, out_shape: tuple[int, int, int]) -> np.ndarray:
    """Oblique case: per-voxel coordinates, slab by slab along z to bound memory. Each mask axis is
    handled on its own and folded into one flat index, which avoids (N, 3) temporaries."""
    nz, ny, nx = out_shape
    out = np.zeros(out_shape, dtype=labels.dtype)
    flat_labels = np.ascontiguousarray(labels).ravel()
    strides = (labels.shape[1] * labels.shape[2], labels.shape[2], 1)
    yy = np.arange(ny, dtype=np.float64)[:, None]
    xx = np.arange(nx, dtype=np.float64)[None, :]
    # Mask coordinate a of slice z = 0 plus 0.5 (so floor rounds to nearest); slice z adds z * m[a, 0].
    base = [yy * m[a, 1] + xx * m[a, 2] + (m[a, 3] + 0.5) for a in range(3)]
    step = max(1, _CHUNK_VOXELS // max(1, ny * nx))
    for z0 in range(0, nz, step):
        zs = np.arange(z0, min(nz, z0 + step), dtype=np.float64)[:, None, None]
        flat = np.zeros((len(zs), ny, nx), dtype=np.int64)
        ok = np.ones((len(zs), ny, nx), dtype=bool)
        for a in range(3):
            idx = np.floor(base[a] + zs * m[a, 0]).astype(np.int64)
            ok &= (idx >= 0) & (idx < labels.shape[a])
            idx *= strides[a]
            flat += idx
        flat[~ok] = 0
        vals = flat_labels[flat]
        vals[~ok] = 0
        out[z0:z0 + len(zs)] = vals
    return out


def _storage_transform(order: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Q: stored mask index (i, j, k, 1) -> volume index (z, y, x, 1)."""
    nz, _, nx = shape
    if order == "axial":
        return ZYX_TO_IJK.copy()
    if order == "sagittal":
        # i = y, j = reversed z, k = reversed x: sagittal slices along k, and a reader that ignores
        # the header sees the mask flipped in z and mirrored in x, as with RSNA's files.
        return np.array([[0, -1, 0, nz - 1], [1, 0, 0, 0], [0, 0, -1, nx - 1], [0, 0, 0, 1]], np.float64)
    raise ValueError(f"order must be 'sagittal' or 'axial', got {order!r}")


def _stored_array(labels_zyx: np.ndarray, order: str) -> np.ndarray:
    if order == "axial":
        return labels_zyx.transpose(2, 1, 0)
    return labels_zyx[::-1, :, ::-1].transpose(1, 0, 2)


def save_mask_nifti(path: str | Path, labels_zyx: np.ndarray, volume: Volume,
                    order: str = "sagittal") -> None:
    """Write a label map that lives on ``volume``'s grid as a NIfTI with the correct affine.

    ``order="sagittal"`` stores the voxels as RSNA's segmentations do (sagittal slices, so a reader
    ignoring the header gets a flipped mask); ``"axial"`` stores ``(x, y, z)``. Either way
    :func:`load_mask_on_grid` maps the file back onto ``volume`` exactly. The write is atomic.

    Args:
        path: output ``.nii`` or ``.nii.gz``.
        labels_zyx: integer labels of shape ``volume.shape`` (values 0..65535).
        volume: the grid the labels live on.
        order: ``"sagittal"`` (default) or ``"axial"``.

    Raises:
        ValueError: wrong shape, non-integer or out-of-range labels, unknown order or file suffix.
    """
    path = Path(path)
    labels_zyx = np.asarray(labels_zyx)
    if labels_zyx.shape != volume.shape:
        raise ValueError(f"labels shape {labels_zyx.shape} != volume shape {volume.shape}")
    if not (np.issubdtype(labels_zyx.dtype, np.integer) or labels_zyx.dtype == bool):
        raise ValueError(f"labels must be integers, got {labels_zyx.dtype}")
    hi = int(labels_zyx.max()) if labels_zyx.size else 0
    if (labels_zyx.size and int(labels_zyx.min()) < 0) or hi > np.iinfo(np.uint16).max:
        raise ValueError("labels must lie in 0..65535")
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    if suffix not in (".nii", ".nii.gz"):
        raise ValueError(f"{path}: a NIfTI mask needs a .nii or .nii.gz name")
    q = _storage_transform(order, volume.shape)
    affine = RAS_TO_LPS @ volume.affine @ q
    data = np.ascontiguousarray(_stored_array(labels_zyx, order)).astype(np.uint8 if hi <= 255 else np.uint16)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)  # scanner coordinates
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
