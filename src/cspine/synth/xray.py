"""Lateral cervical spine radiographs rendered from phantoms (digitally reconstructed radiographs).

X-rays cross the neck from side to side: the image is the line integral of the linear attenuation
along the patient's left-right axis (``mu`` ~ (HU + 1000) / 1000 x water), log-transformed as a
radiograph processor does, then given the variation of real lateral views: patient tilt, field of
view, collimation, a random size (300-600 px), exposure, contrast curve, blur, quantum noise and
either orientation (face to the left or right).

Classes (:data:`cspine.labels.XRAY_CLASSES`) and the signs a radiologist reads on a lateral view:

* ``normal``: an intact spine (its lordosis, size and soft tissues vary as in any population);
* ``fracture``: a wedge compression (loss of 25-60% of the anterior body height, C3-C7, with the
  focal kyphosis it causes: the spine above tips forwards by up to the wedge's angle), a
  flexion teardrop (an anteroinferior body fragment displaced forwards and down, C3-C7) or a dens
  fracture displaced 2-6 mm forwards or backwards (C2); sometimes a second wedge next to it;
* ``dislocation``: the spine down to one level translated over the level below: anterolisthesis
  of 3.5-9 mm (a quarter of the body depth, the unilateral facet dislocation, to more than half,
  the bilateral one) with 4-18 degrees of focal kyphosis that fans the spinous processes apart
  (80%), or a retrolisthesis of 3-6 mm with slight extension (20%); no fracture.

Both injuries show prevertebral soft-tissue swelling (a haematoma that bulges the airway forwards)
in 75% of images, so swelling alone tells injured from normal only partly and never fracture from
dislocation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cspine.fileio import atomic_path
from cspine.labels import XRAY_CLASSES
from cspine.synth.anatomy import LEVELS

log = logging.getLogger(__name__)

#: Class shares of the Kaggle dataset the radiograph paper used (707 normal, 772 fracture, 530 dislocation).
CLASS_SHARES: dict[str, float] = {"normal": 707 / 2009, "fracture": 772 / 2009, "dislocation": 530 / 2009}
#: Matrix of the phantom a radiograph is projected from (coarse: fast, and a radiograph is blurry anyway).
DRR_SIZE, DRR_SLICES = 112, 140
#: Extra attenuation of bone per 1000 HU relative to its HU at CT energies.
BONE_GAIN = 2.2
#: Water's linear attenuation at ~60 keV effective energy, per mm.
MU_WATER = 0.019
#: Share of injured patients (fracture or dislocation) with prevertebral soft-tissue swelling.
P_SWELLING = 0.75
#: Fractured level (lateral-view fractures of the trauma series: C2 and the lower levels dominate).
FRACTURE_LEVELS: dict[str, float] = {"C2": 0.22, "C3": 0.08, "C4": 0.1, "C5": 0.17, "C6": 0.2, "C7": 0.23}
#: Upper level of a dislocated pair (C5/C6 and C6/C7 most often).
DISLOCATION_LEVELS: dict[str, float] = {"C2": 0.06, "C3": 0.12, "C4": 0.2, "C5": 0.3, "C6": 0.32}


def _unit(v: list[float] | np.ndarray) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    return tuple(float(x) for x in a / np.linalg.norm(a))  # type: ignore[return-value]


def _visible_fractures(rng: np.random.Generator, shapes: dict) -> list:  # noqa: ANN401
    """The fractures of a ``fracture`` radiograph, in the vertebra's frame (mm): z down, y posterior."""
    from cspine.synth.fractures import Fracture

    levels = list(FRACTURE_LEVELS)
    level = str(rng.choice(levels, p=list(FRACTURE_LEVELS.values())))
    d = shapes[level].dims
    if level == "C2":  # type II dens fracture: the dens slides forwards or backwards off its base
        point = (-d["bh"] - float(rng.uniform(0.5, 2.5)), 0.0, 0.0)
        sign = float(rng.choice([-1, 1]))
        shift = (-float(rng.uniform(0.0, 1.0)), sign * float(rng.uniform(2.0, 6.0)), 0.0)
        # The plane faces up (towards the dens) and leans the way the dens moves, so that the shift
        # points to the plane's positive side: fractures.apply then moves the dens, not the body.
        normal = _unit([-1.0, sign * abs(rng.normal(0, 0.2)), 0.0])
        return [Fracture("C2", "line", "dens", point, normal, gap=float(rng.uniform(1.0, 2.0)), shift=shift,
                         site="dens")]
    if rng.random() < 0.6:  # wedge compression: the anterior body height collapses
        out = [Fracture(level, "wedge", "body", wedge=float(rng.uniform(0.25, 0.6)), site="body")]
        nb = levels[levels.index(level) + (1 if level != "C7" else -1)]
        if nb != "C2" and rng.random() < 0.2:  # a second, milder wedge next to it
            out.append(Fracture(nb, "wedge", "body", wedge=float(rng.uniform(0.2, 0.4)), site="body"))
        return out
    # Flexion teardrop: an oblique line cuts off the anteroinferior corner, which moves forwards and down.
    point = (d["bh"] * float(rng.uniform(0.1, 0.4)), -d["bd"] * float(rng.uniform(0.3, 0.55)), 0.0)
    normal = _unit([1.0, -float(rng.uniform(0.7, 1.4)), rng.normal(0, 0.1)])
    shift = (float(rng.uniform(1.0, 3.0)), -float(rng.uniform(2.0, 5.0)), 0.0)
    return [Fracture(level, "line", "body", point, normal, gap=float(rng.uniform(1.0, 2.0)), shift=shift,
                     site="teardrop")]


def _dislocation(rng: np.random.Generator) -> tuple[str, float, float]:
    """``(upper level, shift mm (+ = posterior), flexion degrees)`` for :func:`make_phantom`."""
    level = str(rng.choice(list(DISLOCATION_LEVELS), p=list(DISLOCATION_LEVELS.values())))
    if rng.random() < 0.8:  # flexion injury: anterolisthesis with focal kyphosis
        return level, -float(rng.uniform(3.5, 9.0)), float(rng.uniform(4.0, 18.0))
    return level, float(rng.uniform(3.0, 6.0)), -float(rng.uniform(0.0, 8.0))


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


def _patient(seed: int, label: str, swelling: bool | None = None):  # noqa: ANN202 - a Phantom
    """The patient of a radiograph: a coarse phantom with the class's fracture or dislocation.

    ``swelling``: force the prevertebral haematoma of an injured patient on or off (default: drawn).

    ``meta["dislocation"]`` holds the dislocation, ``fractures`` the fractures, ``meta["swelling"]``
    whether the prevertebral soft tissue is swollen and ``meta["kyphosis_deg"]`` the focal kyphosis
    above a wedge fracture.
    """
    from cspine.synth import phantom as ph
    from cspine.synth.fractures import Fracture
    from cspine.synth.layout import layout_study

    rng = np.random.default_rng([seed, 31])
    fractures, dislocation = [], None
    drawn = bool(rng.random() < P_SWELLING)
    swelling = label != "normal" and (drawn if swelling is None else swelling)
    kyphosis = 0.0
    if label == "fracture":
        probe = layout_study(seed, DRR_SIZE, DRR_SLICES, [], None)
        fractures = _visible_fractures(rng, probe.shapes)
        main = fractures[0]
        if main.kind == "wedge":
            # The spine above a collapsed body tips forwards over its intact posterior wall: focal
            # kyphosis of about the wedge's angle. make_phantom's dislocation with no translation is
            # exactly that rotation (hinged at the posterior-superior corner of the level below).
            d = probe.shapes[main.level].dims
            kyphosis = float(np.degrees(np.arctan(main.wedge * 2 * d["bh"] / (1.8 * d["bd"]))))
            kyphosis *= float(rng.uniform(0.5, 1.0))
            upper = LEVELS[LEVELS.index(main.level) - 1]
            dislocation = (upper, 0.0, kyphosis)
    elif label == "dislocation":
        dislocation = _dislocation(rng)
        if swelling:
            # make_phantom swells the soft tissue in front of fractured levels only: an empty wedge
            # (no height lost, the bone is unchanged) marks the dislocated level for the haematoma.
            fractures = [Fracture(dislocation[0], "wedge", "body", wedge=0.0, site="none")]
    p = ph.make_phantom(
        seed,
        size=DRR_SIZE,
        n_slices=DRR_SLICES,
        fractures=fractures,
        dislocation=dislocation,
        noise=False,
        table=False,
        swelling=swelling,
    )
    if label == "dislocation":  # no fracture: drop the empty wedge's traces
        p.fractures = []
        p.fractured = dict.fromkeys(p.fractured, 0)
        p.fracture_mask[:] = False
        p.boxes = []
    if label == "fracture":
        p.meta["dislocation"] = None
    p.meta["swelling"] = swelling
    p.meta["kyphosis_deg"] = kyphosis
    return p


def project(
    hu: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator, size: int | None = None
) -> np.ndarray:
    """Project a canonical CT volume laterally into a processed radiograph (uint8).

    The exposure's variation comes from ``rng``: head tilt (+-8 degrees), field of view (up to 12%
    of each edge cropped), collimation (a shuttered edge in 35% of images), output height (300-600 px
    unless ``size`` is given), exposure, contrast curve, detector blur, quantum noise, facing left or right.
    """
    h = hu.astype(np.float32)
    # Relative to water, bone attenuates more at radiographic energies than its HU (measured at
    # CT energies) suggests: weight positive HU more (photoelectric effect of calcium).
    rel = np.where(h > 0, 1.0 + h * np.float32(BONE_GAIN / 1000.0), np.maximum(h + 1000.0, 0.0) / 1000.0)
    line = rel.sum(axis=2) * np.float32(spacing[2] * MU_WATER)  # (z, y): integral along left-right
    # Patient positioning: the neck is never exactly upright on the detector.
    line = _tilt(line, spacing, float(rng.uniform(-8.0, 8.0)))
    # Field of view: the cassette / detector frames the neck a little differently each time.
    rows, cols = line.shape
    top, bottom = (int(round(rows * f)) for f in rng.uniform(0.0, 0.1, 2))
    left, right = (int(round(cols * f)) for f in rng.uniform(0.0, 0.12, 2))
    line = line[top:rows - bottom, left:cols - right]
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
    if rng.random() < 0.35:  # collimator shutter: a bright unexposed band along one or two edges
        level = rng.uniform(0.75, 1.0)
        for _ in range(int(rng.integers(1, 3))):
            edge, frac = int(rng.integers(4)), rng.uniform(0.03, 0.1)
            n = max(1, int(round(frac * (height if edge < 2 else width))))
            band = (slice(0, n), slice(None)), (slice(-n, None), slice(None)), \
                (slice(None), slice(0, n)), (slice(None), slice(-n, None))
            out[band[edge]] = level
    out = _smooth(out, rng.uniform(0.5, 1.6))  # focal spot / detector blur
    out += rng.normal(0, rng.uniform(0.008, 0.035), out.shape) * np.sqrt(np.clip(out, 0.05, 1))
    if rng.random() < 0.5:  # facing left or right
        out = out[:, ::-1]
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def _tilt(img: np.ndarray, spacing: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Rotate a (z, y) projection by ``degrees`` in millimetre space (the pixels are not square)."""
    from scipy.ndimage import affine_transform

    a = np.deg2rad(degrees)
    sz, sy = float(spacing[0]), float(spacing[1])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    # output index -> mm -> rotated mm -> input index, about the image centre
    m = np.diag([1 / sz, 1 / sy]) @ rot @ np.diag([sz, sy])
    centre = (np.array(img.shape, dtype=np.float64) - 1) / 2
    return affine_transform(img, m, offset=centre - m @ centre, order=1, mode="nearest")


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
    for i in tqdm(range(n_images), desc="synthetic radiographs", unit="image",
                  disable=None if progress else True):
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
