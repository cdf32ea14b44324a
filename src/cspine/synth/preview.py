"""Preview PNGs of synthetic data: axial slices through C2 and C5, a sagittal midline reformat with
the mask outline and fracture boxes, and radiographs of each class. Meant to be looked at."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from cspine.fileio import atomic_path
from cspine.labels import BONE_WINDOW, LABEL_OF
from cspine.preprocess.window import window_to_unit

log = logging.getLogger(__name__)

#: Outline colour per label (1..9), RGB.
_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
    ],
    dtype=np.uint8,
)


def _gray(hu: np.ndarray) -> np.ndarray:
    g = (window_to_unit(hu, BONE_WINDOW) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _outline(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    lab = labels.astype(np.int32)
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[1:] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, :-1] != lab[:, 1:]
    edge &= lab > 0
    out = rgb.copy()
    out[edge] = _COLOURS[np.clip(lab[edge], 0, len(_COLOURS) - 1)]
    return out


def _rect(rgb: np.ndarray, r0: int, c0: int, r1: int, c1: int, colour=(255, 40, 40)) -> None:  # noqa: ANN001
    h, w = rgb.shape[:2]
    r0, r1 = max(0, min(r0, h - 1)), max(0, min(r1, h - 1))
    c0, c1 = max(0, min(c0, w - 1)), max(0, min(c1, w - 1))
    rgb[r0, c0 : c1 + 1] = colour
    rgb[r1, c0 : c1 + 1] = colour
    rgb[r0 : r1 + 1, c0] = colour
    rgb[r0 : r1 + 1, c1] = colour


def _stretch_rows(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Resample rows (the z axis of a reformat) so that pixels are square."""
    h = max(1, int(round(rgb.shape[0] * factor)))
    idx = np.minimum((np.arange(h) / factor).astype(int), rgb.shape[0] - 1)
    return rgb[idx]


def level_slice(labels: np.ndarray, level: str) -> int:
    """The axial slice where vertebra ``level`` has the largest area (middle slice if absent)."""
    area = (labels == LABEL_OF[level]).reshape(labels.shape[0], -1).sum(1)
    return int(area.argmax()) if area.max() > 0 else labels.shape[0] // 2


def _midline(labels: np.ndarray) -> np.ndarray:
    """Per slice, the column through the spine's centre (a curved sagittal reformat follows it)."""
    z_n = labels.shape[0]
    cols = np.full(z_n, np.nan)
    for k in range(z_n):
        xs = np.nonzero(labels[k] > 0)[1]
        if xs.size:
            cols[k] = np.median(xs)
    if np.isnan(cols).all():
        return np.full(z_n, labels.shape[2] // 2)
    good = ~np.isnan(cols)
    cols = np.interp(np.arange(z_n), np.flatnonzero(good), cols[good])
    kernel = np.ones(9) / 9  # smooth: a lateral mass must not pull the plane sideways
    cols = np.convolve(np.pad(cols, 4, mode="edge"), kernel, mode="valid")
    return np.clip(np.round(cols).astype(int), 0, labels.shape[2] - 1)


def ct_previews(
    hu: np.ndarray,
    labels: np.ndarray | None,
    spacing: tuple[float, float, float],
    boxes: list[tuple[int, float, float, float, float]] = (),  # type: ignore[assignment]
) -> dict[str, np.ndarray]:
    """RGB previews of a canonical study: ``axial_C2``, ``axial_C5``, ``sagittal`` (outline + boxes)."""
    out: dict[str, np.ndarray] = {}
    lab = labels if labels is not None else np.zeros(hu.shape, np.uint8)
    for level in ("C2", "C5"):
        k = level_slice(lab, level)
        rgb = _gray(hu[k])
        for s, x, y, w, h in boxes:
            if s == k:
                _rect(rgb, int(y), int(x), int(y + h), int(x + w))
        out[f"axial_{level}"] = rgb
    xc = _midline(lab)
    rows = np.arange(hu.shape[0])
    sag = _gray(hu[rows, :, xc])
    sag = _outline(sag, lab[rows, :, xc]) if labels is not None else sag
    # Boxes crossing the reformat's plane: one rectangle per run of consecutive slices.
    hits = sorted((s, y, y + h) for (s, x, y, w, h) in boxes if x <= xc[s] <= x + w)
    run: list[tuple[int, float, float]] = []
    for hit in hits + [(10**9, 0.0, 0.0)]:
        if run and hit[0] > run[-1][0] + 1:
            _rect(sag, run[0][0], int(min(r[1] for r in run)), run[-1][0], int(max(r[2] for r in run)))
            run = []
        run.append(hit)
    out["sagittal"] = _stretch_rows(sag, spacing[0] / spacing[1])
    return out


def save_png(path: str | Path, rgb_or_gray: np.ndarray) -> Path:
    """Write an image (uint8, or float in [0, 1]) as PNG, atomically."""
    arr = rgb_or_gray
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).astype(np.uint8)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return path


def preview_phantom(seed: int, out: str | Path, size: int = 256, fracture: bool | None = True) -> list[Path]:
    """Generate one phantom and write its CT previews to ``out``; returns the paths."""
    from cspine.synth.phantom import make_phantom

    p = make_phantom(seed, size=size, fracture=fracture)
    paths = []
    for name, img in ct_previews(p.hu, p.labels, p.spacing, p.boxes).items():
        paths.append(save_png(Path(out) / f"phantom_{seed}_{name}.png", img))
    return paths


def canonical_box(
    volume,
    slice_number: int,
    x: float,
    y: float,
    width: float,  # noqa: ANN001 - Volume
    height: float,
) -> tuple[int, float, float, float, float]:
    """An RSNA box (stored DICOM pixel grid, slice = InstanceNumber) on a canonical volume's grid:
    ``(slice index, x, y, width, height)``. Rows/columns mirrored by the reorientation are mirrored back."""
    k = volume.index_of_instance(int(slice_number))
    flip = volume.meta.get("reorientation", {}).get("flip", [False, False, False])
    _, rows, cols = volume.shape
    if flip[2]:
        x = cols - (x + width)
    if flip[1]:
        y = rows - (y + height)
    return k, float(x), float(y), float(width), float(height)


def preview_dataset(root: str | Path, out: str | Path, xray_seed: int = 0) -> list[Path]:
    """Previews of a generated dataset folder, written to ``out``.

    For an RSNA-layout root (``train.csv``): the first fractured training study with a
    segmentation is read back through the project's readers (DICOM -> canonical volume, mask through
    its affine, boxes through InstanceNumber) and shown as axial C2/C5 and a sagittal reformat.
    For a radiograph folder (``labels.csv``): one image per class. When the root holds no
    radiographs, one of each class is rendered from phantoms.
    """
    import pandas as pd

    from cspine.labels import BOXES_CSV, SEGMENTATIONS, STUDY_UID, TRAIN_CSV, TRAIN_IMAGES, XRAY_CLASSES

    root, out = Path(root), Path(out)
    paths: list[Path] = []
    if (root / TRAIN_CSV).exists():
        from cspine.io.nifti import load_mask_on_grid
        from cspine.io.study import load_study

        train = pd.read_csv(root / TRAIN_CSV, dtype={STUDY_UID: str})
        seg = {p.name[: -len(".nii")] for p in (root / SEGMENTATIONS).glob("*.nii")}
        order = sorted(
            train.itertuples(), key=lambda r: (-(r.patient_overall), r.StudyInstanceUID not in seg)
        )
        if order:
            uid = order[0].StudyInstanceUID
            volume = load_study(root / TRAIN_IMAGES / uid, workers=1)
            labels = load_mask_on_grid(root / SEGMENTATIONS / f"{uid}.nii", volume) if uid in seg else None
            boxes_df = pd.read_csv(root / BOXES_CSV, dtype={STUDY_UID: str})
            boxes = [
                canonical_box(volume, b.slice_number, b.x, b.y, b.width, b.height)
                for b in boxes_df[boxes_df[STUDY_UID] == uid].itertuples()
            ]
            for name, img in ct_previews(volume.hu, labels, volume.spacing, boxes).items():
                paths.append(save_png(out / f"ct_{name}.png", img))
    xray_labels = root / "labels.csv"
    if xray_labels.exists():
        table = pd.read_csv(xray_labels)
        for cls in XRAY_CLASSES:
            rows = table[table["label"] == cls]
            if len(rows):
                img = np.asarray(Image.open(root / rows.iloc[0]["path"]).convert("L"))
                paths.append(save_png(out / f"xray_{cls}.png", img))
    else:
        from cspine.synth.xray import render_radiograph

        for i, cls in enumerate(XRAY_CLASSES):
            paths.append(save_png(out / f"xray_{cls}.png", render_radiograph(xray_seed + i, cls, size=400)))
    log.info("wrote %d previews to %s", len(paths), out)
    return paths
