"""Lateral cervical spine radiographs rendered from phantoms (digitally reconstructed radiographs).

X-rays cross the neck from side to side: the image is the line integral of the linear attenuation
along the patient's left-right axis (``mu`` ~ (HU + 1000) / 1000 x water), log-transformed as a
radiograph processor does, then given a random size (300-600 px), exposure, contrast curve,
blur and quantum noise, and either orientation (face to the left or right).

Classes (:data:`cspine.labels.XRAY_CLASSES`):

* ``normal``: an intact spine;
* ``fracture``: a fracture that a lateral view shows: a wedge compression, a displaced fracture
  line through a body, or a displaced dens fracture;
* ``dislocation``: the spine down to one level translated 3-8 mm forwards or backwards over the
  level below, with its facets tilted out of line (0-15 degrees), and no fracture.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cspine.fileio import atomic_path
from cspine.labels import XRAY_CLASSES

log = logging.getLogger(__name__)

#: Class shares of the Kaggle dataset the radiograph paper used (707 normal, 772 fracture, 530 dislocation).
CLASS_SHARES: dict[str, float] = {"normal": 707 / 2009, "fracture": 772 / 2009, "dislocation": 530 / 2009}
#: Matrix of the phantom a radiograph is projected from (coarse: fast, and a radiograph is blurry anyway).
DRR_SIZE, DRR_SLICES = 112, 140
#: Extra attenuation of bone per 1000 HU relative to its HU at CT energies.
BONE_GAIN = 2.2
#: Water's linear attenuation at ~60 keV effective energy, per mm.
MU_WATER = 0.019


def _visible_fracture(rng: np.random.Generator, probe_shapes: dict, px: float):  # noqa: ANN202
    """A fracture a lateral radiograph shows: wedge, displaced body line, or displaced dens."""
    from cspine.synth import fractures as fx

    level = str(rng.choice(["C2", "C3", "C4", "C5", "C6", "C7"], p=[0.25, 0.1, 0.12, 0.16, 0.18, 0.19]))
    kinds = ("dens",) if level == "C2" else ("wedge", "body")
    f = fx.sample_fracture(rng, probe_shapes[level], px, kinds)
    if f.kind == "wedge":
        return replace(f, wedge=max(f.wedge, float(rng.uniform(0.4, 0.6))), subtle=False)
    # Displaced within the sagittal plane (forwards/backwards and down) so the lateral view shows it.
    shift = np.array([rng.uniform(0.5, 2.0), rng.choice([-1, 1]) * rng.uniform(3.0, 5.0), 0.0])
    normal = np.array(f.normal)
    normal[2] *= 0.2  # fracture plane seen edge-on from the side
    normal /= np.linalg.norm(normal)
    return replace(
        f,
        gap=max(f.gap, 2.0 * px),
        shift=tuple(float(v) for v in shift),
        normal=tuple(float(v) for v in normal),
        subtle=False,
    )


def render_radiograph(seed: int, label: str, size: int | None = None) -> np.ndarray:
    """A lateral c-spine radiograph of class ``label``, as uint8 (rows, columns).

    Args:
        seed: Everything follows from it.
        label: One of :data:`cspine.labels.XRAY_CLASSES`.
        size: Output height in pixels (default: random 300-600); width follows the neck's aspect.
    """
    if label not in XRAY_CLASSES:
        raise ValueError(f"label must be one of {XRAY_CLASSES}, got {label!r}")
    p = _patient(seed, label)
    return project(p.hu, p.spacing, np.random.default_rng([seed, 32]), size)


def _patient(seed: int, label: str):  # noqa: ANN202 - a Phantom
    """The patient of a radiograph: a coarse phantom with the class's fracture or dislocation."""
    from cspine.synth import phantom as ph

    rng = np.random.default_rng([seed, 31])
    fractures, dislocation = [], None
    if label == "fracture":
        probe = ph._layout(seed, DRR_SIZE, DRR_SLICES, [], None)
        fractures = [_visible_fracture(rng, probe.shapes, probe.spacing[1])]
    elif label == "dislocation":
        level = str(rng.choice(["C2", "C3", "C4", "C5", "C6"], p=[0.1, 0.2, 0.25, 0.25, 0.2]))
        dislocation = (level, float(rng.choice([-1, 1]) * rng.uniform(3.0, 8.0)), float(rng.uniform(0, 15)))
    return ph.make_phantom(
        seed,
        size=DRR_SIZE,
        n_slices=DRR_SLICES,
        fractures=fractures,
        dislocation=dislocation,
        noise=False,
        table=False,
        swelling=True,
    )


def project(
    hu: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator, size: int | None = None
) -> np.ndarray:
    """Project a canonical CT volume laterally into a processed radiograph (uint8)."""
    h = hu.astype(np.float32)
    # Relative to water, bone attenuates more at radiographic energies than its HU (measured at
    # CT energies) suggests: weight positive HU more (photoelectric effect of calcium).
    rel = np.where(h > 0, 1.0 + h * np.float32(BONE_GAIN / 1000.0), np.maximum(h + 1000.0, 0.0) / 1000.0)
    line = rel.sum(axis=2) * np.float32(spacing[2] * MU_WATER)  # (z, y): integral along left-right
    # Processing as a radiograph unit does: subtract a heavily smoothed copy (unsharp masking /
    # equalisation) so that bone stands out of the thick soft tissue of the neck.
    line = line - np.float32(rng.uniform(0.45, 0.7)) * _smooth(line, 12.0 / spacing[1])
    exposure = rng.uniform(0.8, 1.25)
    lo, hi = np.percentile(line, 2), np.percentile(line, 99.7)
    img = np.clip((line - lo * rng.uniform(0.7, 1.0)) / (hi * exposure - lo * 0.7 + 1e-6), 0, 1)
    img = img ** rng.uniform(0.6, 1.3)  # contrast curve
    height = int(size or rng.integers(300, 601))
    aspect = (img.shape[1] * spacing[1]) / (img.shape[0] * spacing[0])
    width = max(32, int(round(height * aspect * rng.uniform(0.95, 1.05))))
    pil = Image.fromarray((img * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    out = np.asarray(pil, dtype=np.float32) / 255.0
    out = _smooth(out, rng.uniform(0.5, 1.6))  # focal spot / detector blur
    out += rng.normal(0, rng.uniform(0.008, 0.035), out.shape) * np.sqrt(np.clip(out, 0.05, 1))
    if rng.random() < 0.5:  # facing left or right
        out = out[:, ::-1]
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="nearest")


def generate_xray_dataset(out: str | Path, n_images: int, seed: int = 0, progress: bool = True) -> Path:
    """Write ``n_images`` radiographs into ``out/normal|fracture|dislocation/*.png`` and ``out/labels.csv``.

    ``labels.csv`` has columns ``path`` (relative to ``out``), ``label``, ``patient_id``. About one
    image in six is a second exposure of the previous patient (same anatomy and class, new exposure),
    so a split must group by ``patient_id``. Existing images are kept (the run resumes).
    """
    if n_images < 1:
        raise ValueError("n_images must be at least 1")
    from tqdm.auto import tqdm

    out = Path(out)
    rng = np.random.default_rng([seed, 4242])
    rows = []
    patient_seed, patient_label = None, None
    for i in tqdm(range(n_images), desc="synthetic radiographs", unit="image", disable=not progress):
        if patient_seed is not None and rng.random() < 1 / 6:
            label, phantom_seed = patient_label, patient_seed
        else:
            label = str(rng.choice(list(CLASS_SHARES), p=list(CLASS_SHARES.values())))
            phantom_seed = int(seed) * 1_000_003 + 500_000 + i
        patient_seed, patient_label = phantom_seed, label
        rel = Path(label) / f"{label}_{i:05d}.png"
        path = out / rel
        if not path.exists():
            img = _render_exposure(phantom_seed, label, i)
            with atomic_path(path) as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
        rows.append({"path": rel.as_posix(), "label": label, "patient_id": f"P{phantom_seed}"})
    with atomic_path(out / "labels.csv") as tmp:
        pd.DataFrame(rows, columns=["path", "label", "patient_id"]).to_csv(tmp, index=False)
    return out


def _render_exposure(phantom_seed: int, label: str, exposure_index: int) -> np.ndarray:
    """The patient of ``render_radiograph(phantom_seed, label)`` with this exposure's own size,
    contrast and noise."""
    p = _patient(phantom_seed, label)
    return project(p.hu, p.spacing, np.random.default_rng([phantom_seed, exposure_index, 97]))
