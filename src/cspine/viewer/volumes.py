"""The files the viewer renders: the CT, its C1..C7 label map and a Grad-CAM heat map, as NIfTI.

A study's view folder (``<results>/view/<UID>/``, :func:`view_dir_for`) holds

* ``ct.nii.gz``: the canonical volume in HU (int16), its bone window in ``cal_min``/``cal_max``;
* ``labels.nii.gz``: stage 1's label map (uint8, 1..7 = C1..C7, NIfTI intent "label");
* ``heat.nii.gz``: Grad-CAM of the flagged vertebrae (uint8, 0..255 = 0..1), when any was flagged;
* ``view.json``: what was written and from what, and ``affine_ras`` (the files' (i, j, k) -> RAS mm
  affine, with i, j, k = the canonical x, y, z); written last, so its presence means the folder is
  complete.

All three images share the volume's grid; their affine maps (i, j, k) = (x, y, z) voxels to RAS
millimetres, so any NIfTI reader places them where the DICOM geometry says the patient was. The
voxel bytes are the C-ordered ``(z, y, x)`` array as it is, which is NIfTI's Fortran-ordered
``(x, y, z)``: nothing is copied to reorder them.
"""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cspine import __version__
from cspine.fileio import atomic_path, read_json, write_json
from cspine.io.nifti import RAS_TO_LPS, ZYX_TO_IJK
from cspine.io.volume import Volume
from cspine.labels import BONE_WINDOW, LABEL_OF, VERTEBRAE, window_bounds
from cspine.registry.stages import CT_STAGES

__all__ = ["CT_FILE", "HEAT_FILE", "LABELS_FILE", "VIEW_DIR", "VIEW_JSON", "ViewFiles", "build_view",
           "gradcam_heat", "paint_crop_heat", "read_view", "view_dir_for", "write_view_volumes"]

VIEW_DIR = "view"
CT_FILE, LABELS_FILE, HEAT_FILE, VIEW_JSON = "ct.nii.gz", "labels.nii.gz", "heat.nii.gz", "view.json"
#: NIfTI intent code of a label map (NIFTI_INTENT_LABEL).
_INTENT_LABEL = 1002
#: gzip level of the written files: level 1 is ~5x faster than 9 on a 512x512x300 CT and ~15% larger.
_GZIP_LEVEL = 1
#: Grad-CAM costs one forward and backward pass of stage 2 per crop slice; the most attended ones carry
#: the evidence, so at most this many slices per flagged vertebra are explained.
MAX_CAM_SLICES = 8


@dataclass(frozen=True)
class ViewFiles:
    """The files of one study's view folder (``heat`` is ``None`` when nothing was flagged)."""

    folder: Path
    ct: Path
    labels: Path
    heat: Path | None
    meta: Path


def view_dir_for(results_dir: str | Path, study_uid: str) -> Path:
    """``<results_dir>/view/<UID>/``: where a study's view files live beside its ``<UID>.json``."""
    return Path(results_dir) / VIEW_DIR / study_uid


def _nifti_affine(volume: Volume) -> np.ndarray:
    # volume.affine maps (z, y, x) to LPS; NIfTI wants (i, j, k) = (x, y, z) to RAS. Both permutation
    # matrices are their own inverses, so this is the reverse of cspine.io.nifti.lps_affine_from_nifti.
    return RAS_TO_LPS @ np.asarray(volume.affine, np.float64) @ ZYX_TO_IJK


def _write_nifti(path: Path, array_zyx: np.ndarray, volume: Volume, dtype: type, *,
                 cal: tuple[float, float] | None = None, intent: int | None = None) -> Path:
    data = np.asarray(array_zyx, dtype=dtype)
    if data.shape != volume.shape:
        raise ValueError(f"{path.name}: array shape {data.shape} != volume shape {volume.shape}")
    affine = _nifti_affine(volume)
    img = nib.Nifti1Image(np.ascontiguousarray(data).T, affine)  # .T of C order = NIfTI's F order, no copy
    img.set_sform(affine, code=1)  # scanner coordinates
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    if cal is not None:
        img.header["cal_min"], img.header["cal_max"] = cal
    if intent is not None:
        img.header.set_intent(intent)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=_GZIP_LEVEL))
    return path


def write_view_volumes(volume: Volume, label_map: np.ndarray, out_dir: str | Path,
                       heat: np.ndarray | None = None, info: Mapping[str, Any] | None = None) -> ViewFiles:
    """Write a study's view folder: ``ct.nii.gz``, ``labels.nii.gz``, ``heat.nii.gz`` and ``view.json``.

    Args:
        volume: the study in the canonical orientation (the grid of ``label_map``).
        label_map: stage 1's labels on that grid (0 background, 1..7 C1..C7).
        out_dir: the view folder (created); usually :func:`view_dir_for` ``(results, uid)``.
        heat: optional Grad-CAM heat map in [0, 1] on the same grid (see :func:`gradcam_heat`).
        info: extra facts recorded in ``view.json`` (e.g. which model made the label map).

    Returns:
        The written :class:`ViewFiles`. Every file is written atomically and ``view.json`` last, so a
        reader that finds ``view.json`` finds the whole folder.

    Raises:
        ValueError: an array whose shape is not the volume's, or labels outside 0..255.

    Example:
        >>> from cspine.io.volume import volume_from_arrays
        >>> v = volume_from_arrays(np.zeros((4, 8, 8), np.int16), (2.0, 0.5, 0.5))
        >>> write_view_volumes(v, np.ones((4, 8, 8), np.uint8), "view/1.2.3").ct.name  # doctest: +SKIP
        'ct.nii.gz'
    """
    out = Path(out_dir)
    labels = np.asarray(label_map)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
        raise ValueError(f"label map values must lie in 0..255, found {labels.min()}..{labels.max()}")
    meta_path = out / VIEW_JSON
    if meta_path.exists():
        meta_path.unlink()  # the folder is incomplete until view.json is written again
    ct = _write_nifti(out / CT_FILE, volume.hu, volume, np.int16, cal=window_bounds(BONE_WINDOW))
    lab = _write_nifti(out / LABELS_FILE, labels, volume, np.uint8, intent=_INTENT_LABEL)
    heat_path = None
    if heat is not None:
        h = np.asarray(heat, dtype=np.float32)
        h8 = np.rint(np.clip(np.nan_to_num(h), 0.0, 1.0) * 255.0).astype(np.uint8)
        heat_path = _write_nifti(out / HEAT_FILE, h8, volume, np.uint8, cal=(0.0, 255.0))
    present = [int(x) for x in np.unique(labels) if x]
    doc = {"cspine_version": __version__, "shape": list(volume.shape),
           "spacing_mm": [round(s, 4) for s in volume.spacing],
           "files": {"ct": CT_FILE, "labels": LABELS_FILE, "heat": HEAT_FILE if heat_path else None},
           "window_hu": list(window_bounds(BONE_WINDOW)), "labels_present": present,
           "affine_ras": np.round(_nifti_affine(volume), 6).tolist(), **dict(info or {})}
    write_json(meta_path, doc)
    return ViewFiles(folder=out, ct=ct, labels=lab, heat=heat_path, meta=meta_path)


def read_view(view_dir: str | Path) -> dict[str, Any] | None:
    """``view.json`` of a complete view folder, else ``None``."""
    path = Path(view_dir) / VIEW_JSON
    if not path.is_file():
        return None
    try:
        doc = read_json(path)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --- Grad-CAM on the volume's grid ----------------------------------------------------------------

def _slice_bounds(centres: np.ndarray, z_range: tuple[int, int]) -> list[tuple[int, int]]:
    """The volume slices ``[lo, hi)`` each crop slice stands for: half-way to its neighbours."""
    c = np.asarray(centres, dtype=np.float64)
    z0, z1 = int(z_range[0]), int(z_range[1])
    out = []
    for i in range(len(c)):
        lo = z0 if i == 0 else int(math.ceil((c[i - 1] + c[i]) / 2.0))
        hi = z1 if i == len(c) - 1 else int(math.ceil((c[i] + c[i + 1]) / 2.0))
        out.append((lo, max(hi, lo)))
    return out


def paint_crop_heat(heat: np.ndarray, crop: Any, slice_pos: int, cam: np.ndarray) -> None:
    """Put one crop slice's Grad-CAM map (``(H, W)`` in [0, 1]) back where the crop came from.

    The map is resized to the crop's in-plane box and written (maximum with what is there) on the
    volume slices that this crop slice stands for; parts of the box outside the volume are dropped.

    Args:
        heat: float32 ``(Z, Y, X)`` volume, changed in place.
        crop: a ``cspine.ct.cls.crops.VertebraCrop`` (``box``, ``slice_indices``, ``z_range``).
        slice_pos: which crop slice the map belongs to.
        cam: its Grad-CAM map.
    """
    from cspine.ct.cls.crops import resize_slices

    y0, y1, x0, x1 = (int(v) for v in crop.box)
    if y1 - y0 != x1 - x0:
        raise ValueError(f"crop box {crop.box} is not square")
    patch = resize_slices(np.asarray(cam, np.float32)[None], y1 - y0)[0]
    lo, hi = _slice_bounds(crop.slice_indices, crop.z_range)[slice_pos]
    nz, ny, nx = heat.shape
    lo, hi = max(lo, 0), min(hi, nz)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    if hi <= lo or sy1 <= sy0 or sx1 <= sx0:
        return
    part = np.clip(patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0], 0.0, 1.0)
    region = heat[lo:hi, sy0:sy1, sx0:sx1]
    np.maximum(region, part[None], out=region)


def _chosen_slices(weights: Sequence[float] | None, n: int, limit: int) -> list[int]:
    """The crop slices worth explaining: the most attended ones, at most ``limit``."""
    if weights is None or len(weights) != n:
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, limit))})
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-w, kind="stable")
    keep = [int(i) for i in order[:limit] if w[i] >= 1.0 / n] or [int(order[0])]
    return sorted(keep)


def gradcam_heat(volume: Volume, seg: Any, cls_model: Any, names: Sequence[str],
                 attention: Mapping[str, Sequence[float]] | None = None, max_slices: int = MAX_CAM_SLICES,
                 crops: Mapping[str, Any] | None = None) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Grad-CAM of stage 2 for the vertebrae ``names``, on the volume's grid.

    For each vertebra the crop stage 2 classified is cut again from ``seg`` (the same crop as in
    prediction), the most attended crop slices are explained with :func:`cspine.ct.explain.grad_cam`
    and their maps painted back (:func:`paint_crop_heat`).

    Args:
        volume: the canonical volume.
        seg: its stage-1 ``Segmentation``.
        cls_model: the loaded stage-2 ``ClsModel``.
        names: vertebrae to explain (those not present in ``seg`` are skipped).
        attention: per vertebra, the attention weights over its crop slices (from ``<UID>.json``);
            slices are then chosen by attention, else evenly.
        max_slices: most crop slices explained per vertebra.
        crops: the crops stage 2 classified (``VertebraScores.crops``), when the caller has them; else
            they are cut again from ``seg``.

    Returns:
        float32 heat map in [0, 1] and, per explained vertebra, the volume slices whose maps were used.
    """
    from cspine.ct.cls.crops import extract_crops
    from cspine.ct.explain import grad_cam

    heat = np.zeros(volume.shape, np.float32)
    wanted = tuple(n for n in VERTEBRAE if n in names)
    if crops is None:
        crops = extract_crops(volume, seg, cls_model.cfg, names=wanted)
    used: dict[str, list[int]] = {}
    for name in (n for n in wanted if n in crops):
        crop = crops[name]
        n = len(crop.slice_indices)
        picks = _chosen_slices((attention or {}).get(name), n, max_slices)
        for pos in picks:
            paint_crop_heat(heat, crop, pos, grad_cam(cls_model.model, crop.array, pos))
        used[name] = [int(crop.slice_indices[p]) for p in picks]
    return heat, used


def build_view(source: str | Path, model: Any, out_dir: str | Path, doc: Mapping[str, Any],
               flagged: Sequence[str]) -> ViewFiles:
    """Make a study's view folder from its source and a model: decode, stage 1, Grad-CAM, write.

    The prediction itself is not repeated: which vertebrae get a heat map (``flagged``) and their
    attention come from the study's result (``doc``, its ``<UID>.json``).

    Args:
        source: the study's DICOM folder or NIfTI file (``doc["source"]``).
        model: a loaded ``cspine.ct.CtModel``.
        out_dir: the view folder.
        doc: the study's result document.
        flagged: the vertebrae the result flags (they get a Grad-CAM map where stage 1 finds them).

    Raises:
        CspineError: the source cannot be read.
    """
    from cspine.ct.seg.predict import segment
    from cspine.io.study import load_study

    t0 = time.perf_counter()
    volume = load_study(source)
    seg = segment(volume, model.seg)
    verts = doc.get("vertebrae") or {}
    flagged = [v for v in VERTEBRAE if v in flagged
               and seg.vertebrae.get(v) is not None and seg.vertebrae[v].present]
    heat, used = None, {}
    if flagged:
        attention = {v: (verts.get(v) or {}).get("attention", {}).get("weights")
                     for v in flagged if (verts.get(v) or {}).get("attention")}
        heat, used = gradcam_heat(volume, seg, model.cls, flagged, attention)
    info = {"label_map": "stage 1 rerun by the viewer", "model": _model_digests(model),
            "heat_vertebrae": used,
            "label_numbers": {v: LABEL_OF[v] for v in VERTEBRAE},
            "seconds": round(time.perf_counter() - t0, 3)}
    return write_view_volumes(volume, seg.labels, out_dir, heat, info)


def _model_digests(model: Any) -> dict[str, Any]:
    info = getattr(model, "info", {}) or {}
    return {stage: (info.get(stage) or {}).get("weights_sha256_16") for stage in CT_STAGES}
