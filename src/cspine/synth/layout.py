"""The phantom's layout: one study in millimetres, drawn from its seed, before any voxel is painted.

A lordotic spine C1..T2 with per-study size, curvature, rotation and shift (:func:`layout_study`),
the neck's outline along it (:func:`neck_profile`), the HU of bone and soft tissue, and the items
painted by :mod:`cspine.synth.render`: each a signed distance function in a local frame with the
voxel box it can touch. Coordinates are world millimetres ``(z, y, x)`` of the canonical orientation
(axis 0 superior -> inferior, 1 anterior -> posterior, 2 right -> left).

Random draws come from ``default_rng([seed, 0])`` in a fixed order (the trabecular texture from
``[seed, 5]``): the same seed gives the same study whatever the fractures, which only change the
signed distance functions of their levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cspine.labels import LABEL_OF
from cspine.synth import anatomy
from cspine.synth import fractures as fx
from cspine.synth.anatomy import LEVELS, SdfFn, VertebraShape

Arr = np.ndarray
#: A voxel box ``(z0, z1, y0, y1, x0, x1)``, stops exclusive.
Region = tuple[int, int, int, int, int, int]

#: The neck's outline per level: knots at the continuous level index (-1 above C1, 0 = C1 .. 8 = T2)
#: of the skin's distance (mm, before the patient's habitus) anterior and posterior of the spine's
#: axis, and of the neck's half width.
NECK_KNOTS = np.arange(-1, 9)
NECK_ANTERIOR_MM = (95, 90, 80, 60, 52, 50, 50, 55, 60, 65)
NECK_POSTERIOR_MM = (80, 75, 72, 70, 70, 70, 70, 72, 78, 82)
NECK_HALF_WIDTH_MM = (72, 68, 62, 58, 56, 56, 58, 66, 88, 115)


def neck_profile(t: Arr | float, habitus: float) -> tuple[Arr, Arr, Arr]:
    """Anterior and posterior skin distance from the spine's axis and the neck's half width (mm) at
    continuous level index ``t`` (see :data:`NECK_KNOTS`), scaled by the patient's habitus."""
    return (np.interp(t, NECK_KNOTS, NECK_ANTERIOR_MM) * habitus,
            np.interp(t, NECK_KNOTS, NECK_POSTERIOR_MM) * habitus,
            np.interp(t, NECK_KNOTS, NECK_HALF_WIDTH_MM) * habitus)


@dataclass
class Item:
    """Something painted into the image: a signed distance function in a local frame."""

    name: str
    label: int  # 0 for unlabelled tissue and bone
    groups: dict[str, SdfFn]
    center: np.ndarray  # world mm (z, y, x)
    rot: np.ndarray  # columns: local z, y, x axes in world coordinates
    region: Region  # voxel bounding box (clipped to the volume)
    bone: bool
    value: float = 0.0  # HU of soft items


@dataclass
class StudyLayout:
    """One study laid out: its grid, the items to paint, the level centres and the tissue values."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    items: list[Item]
    level_z: np.ndarray  # world z (mm) of each level centre, LEVELS order
    level_y: np.ndarray
    level_x: np.ndarray
    level_bd: np.ndarray
    tissue: dict[str, float]
    bone: dict[str, float]
    texture: np.ndarray
    blur: float
    noise_sigma: float
    shapes: dict[str, VertebraShape]


# --- geometry helpers ------------------------------------------------------------------------


def _rot_x(a: float) -> np.ndarray:  # flexion: turns z towards y
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _rot_z(a: float) -> np.ndarray:  # axial rotation: turns y towards x
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:  # lateral bend: turns z towards x
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, -s], [0, 1.0, 0], [s, 0, c]])


def voxel_region(center: np.ndarray, rot: np.ndarray, bounds: tuple, spacing: tuple[float, float, float],
                 shape: tuple[int, int, int], margin: float = 1.5) -> Region:
    """The voxel box (clipped to ``shape``) holding local ``bounds`` placed at ``center``/``rot``."""
    corners = np.array([[a, b, c] for a in bounds[0] for b in bounds[1] for c in bounds[2]], dtype=np.float64)
    world = corners @ rot.T + center
    lo = np.floor((world.min(0) - margin) / spacing).astype(int)
    hi = np.ceil((world.max(0) + margin) / spacing).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, shape)
    return (int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))


def intersect(a: Region, b: Region) -> Region | None:
    """The common part of two voxel boxes, or ``None``."""
    r = (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]), max(a[4], b[4]), min(a[5], b[5]))
    return r if r[0] < r[1] and r[2] < r[3] and r[4] < r[5] else None


def axis_mm(lo: int, hi: int, step: float) -> Arr:
    """World mm of voxel indices ``lo .. hi - 1`` along one axis, float32."""
    # float64 product then float32: a voxel's coordinate does not depend on the range it is part of
    return (np.arange(lo, hi, dtype=np.float64) * step).astype(np.float32)


def default_slices(size: int) -> int:
    """Slices of a study of ``size`` pixels when not given: 200 at 256, 100 at 128."""
    return max(24, int(round(size * 0.78)))


def _fov_mm(size: int) -> float:
    # A neck CT's reconstruction field is ~150-200 mm; small test sizes zoom in a little so that a
    # 64-128 pixel study still resolves the vertebrae.
    return min(175.0, 92.0 + 0.33 * size)


# --- the spine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SpineAxis:
    """The spine's axis in the sagittal plane: the arc length of each level centre (C1 = 0), its
    angle to z (constant curvature C2..C7, less below) and the path integrated from C1 downwards
    (z down, y posterior)."""

    arc: dict[str, float]
    theta0: float
    kappa: float

    def theta(self, sv: float) -> float:
        """The axis' angle to z at arc length ``sv``."""
        s = self.arc
        if sv <= s["C7"]:
            return self.theta0 + self.kappa * (sv - s["C4"])
        return self.theta0 + self.kappa * (s["C7"] - s["C4"]) - 0.35 * self.kappa * (sv - s["C7"])

    @cached_property
    def grid(self) -> Arr:
        return np.linspace(0.0, self.arc["T2"], 400)

    @cached_property
    def path(self) -> Arr:
        th = np.array([self.theta(v) for v in self.grid])
        step = np.diff(self.grid, prepend=0.0)
        return np.stack([np.cumsum(np.cos(th) * step), np.cumsum(np.sin(th) * step)], 1)

    def point(self, sv: float) -> tuple[float, float]:
        """``(z, y)`` mm of the axis at arc length ``sv``."""
        z, y = (float(np.interp(sv, self.grid, self.path[:, i])) for i in (0, 1))
        return z, y


def _spine_axis(rng: np.random.Generator, shapes: dict[str, VertebraShape], discs: dict[str, float],
                scale: float) -> _SpineAxis:
    s = {"C1": 0.0, "C2": shapes["C2"].dims["bh"] + 8.0 * scale}
    for upper, lower in zip(LEVELS[1:-1], LEVELS[2:], strict=True):
        s[lower] = s[upper] + shapes[upper].dims["bh"] + discs[upper] + shapes[lower].dims["bh"]
    cobb = np.deg2rad(rng.choice([rng.uniform(-5, 8), rng.uniform(8, 35)], p=[0.25, 0.75]))
    kappa = cobb / (s["C7"] - s["C2"])
    return _SpineAxis(s, np.deg2rad(rng.uniform(-7, 7)), kappa)


def _level_poses(rng: np.random.Generator, axis: _SpineAxis, size: int, px: float, top_margin: float,
                 habitus: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """World centre and rotation of every level: the axis placed in the field of view (the neck
    centred), turned and bent as a whole, each level jittered a little."""
    ant, post, _ = neck_profile(4.0, habitus)  # the neck at C5
    origin = np.array([top_margin, size * px / 2 + (ant - post) / 2 + rng.uniform(-6, 6),
                       size * px / 2 + rng.uniform(-6, 6)])
    axial, bend = np.deg2rad(rng.uniform(-6, 6)), np.deg2rad(rng.uniform(-2.5, 2.5))
    r_global = _rot_z(axial) @ _rot_y(bend)
    pivot = np.array([*axis.point(axis.arc["C4"]), 0])
    centers, rots = {}, {}
    for name in LEVELS:
        p = np.array([*axis.point(axis.arc[name]), 0.0])
        jit = np.deg2rad(rng.normal(0, 1.0, 3))
        centers[name] = origin + pivot + r_global @ (p - pivot)
        rots[name] = r_global @ _rot_x(axis.theta(axis.arc[name]) + jit[0]) @ _rot_z(jit[1]) @ _rot_y(jit[2])
    return centers, rots


def _dislocate(centers: dict[str, np.ndarray], rots: dict[str, np.ndarray], shapes: dict[str, VertebraShape],
               dislocation: tuple[str, float, float]) -> None:
    """The levels down to ``level`` slide (and tilt) over the one below, in place."""
    level, shift, flex = dislocation
    k = LEVELS.index(level)
    below = LEVELS[k + 1]
    e_y, e_z = rots[below][:, 1], rots[below][:, 0]
    hinge = centers[below] - e_z * (shapes[below].dims["bh"] + 2.0) + e_y * shapes[below].dims["bd"]
    rf = _rot_x(np.deg2rad(flex))
    rf = rots[below] @ rf @ rots[below].T
    for name in LEVELS[: k + 1]:
        centers[name] = hinge + rf @ (centers[name] - hinge) + e_y * shift
        rots[name] = rf @ rots[name]


# --- tissue values ---------------------------------------------------------------------------


def _bone_values(rng: np.random.Generator) -> dict[str, float]:
    density = float(rng.uniform(0.6, 0.8) if rng.random() < 0.2 else rng.uniform(0.88, 1.12))
    return {
        "cortex": float(rng.uniform(950, 1300) * density),
        "cancellous": float(rng.uniform(230, 330) * density),
        "texture": float(rng.uniform(40, 80) * density),
        "cortex_mm": float(rng.uniform(0.9, 1.4)),
    }


def _tissue_values(rng: np.random.Generator, habitus: float) -> dict[str, float]:
    return {
        "muscle": float(rng.uniform(38, 55)),
        "fat": float(rng.uniform(-110, -85)),
        "fat_mm": float(rng.uniform(3, 14) * habitus),
        "habitus": habitus,
        "disc": float(rng.uniform(75, 95)),
        "csf": float(rng.uniform(5, 15)),
        "thyroid": float(rng.uniform(90, 125)),
        "cartilage": float(rng.uniform(80, 420)),
        "esophagus_air": float(rng.random() < 0.5),
        "table_y": 0.0,
    }


def _trabecular_texture(seed: int) -> Arr:
    """A periodic smooth 16^3 field of unit deviation: the cancellous bone's texture."""
    tex = np.random.default_rng([seed, 5]).standard_normal((16, 16, 16)).astype(np.float32)
    for ax in range(3):
        tex = (tex + np.roll(tex, 1, ax) + np.roll(tex, -1, ax)) / 3
    tex /= tex.std() + 1e-6
    return tex


# --- the items -------------------------------------------------------------------------------


def _items(rng: np.random.Generator, *, shapes: dict[str, VertebraShape], discs: dict[str, float],
           centers: dict[str, np.ndarray], rots: dict[str, np.ndarray], spacing: tuple[float, float, float],
           shape: tuple[int, int, int], fractures: list[fx.Fracture], swelling: bool, scale: float,
           tissue: dict[str, float]) -> list[Item]:
    """Everything painted, in painting order: soft items first (CSF, discs, swelling), then bone."""
    items: list[Item] = []
    groups_of = {name: fx.fractured_groups(shapes[name], fractures) for name in LEVELS}

    def add(name: str, label: int, groups: dict[str, SdfFn], level: str, bounds: tuple, bone: bool,
            value: float = 0.0, extra_margin: float = 0.0) -> None:
        reg = voxel_region(centers[level], rots[level], bounds, spacing, shape, 1.5 + extra_margin)
        if reg[0] < reg[1] and reg[2] < reg[3] and reg[4] < reg[5]:
            items.append(Item(name, label, groups, centers[level], rots[level], reg, bone, value))

    for name in LEVELS:  # soft items first: CSF in the canal, discs
        fn, b = anatomy.thecal_sac(shapes[name], 12.0 * scale)
        add(f"csf_{name}", 0, {"csf": fn}, name, b, False, tissue["csf"])
    for name in LEVELS[1:-1]:
        fn, b = anatomy.disc(shapes[name], discs[name])
        add(f"disc_{name}", 0, {"disc": fn}, name, b, False, tissue["disc"])
    if swelling:  # prevertebral haematoma in front of each fractured level: narrows the airway
        for level in sorted({f.level for f in fractures}):
            fn, b = anatomy.prevertebral_swelling(shapes[level], scale)
            add(f"swelling_{level}", 0, {"soft": fn}, level, b, False, tissue["muscle"] + 10.0)
    fn, b = anatomy.skull_base(scale, shapes["C1"])
    add("skull_base", 0, {"bone": fn}, "C1", b, True)
    fn, b = anatomy.mandible(scale, float(rng.random()))
    add("mandible", 0, {"bone": fn}, "C2", b, True)
    fn, b = anatomy.hyoid(scale)
    add("hyoid", 0, {"bone": fn}, "C3", b, True)
    for name, drop in (("T1", 14.0), ("T2", 18.0)):
        fn, b = anatomy.first_rib(shapes[name], scale, drop)
        add(f"rib_{name}", 0, {"bone": fn}, name, b, True)
    for name in LEVELS:
        margin = max((float(np.linalg.norm(f.shift)) + f.gap for f in fractures if f.level == name),
                     default=0.0)
        add(name, LABEL_OF[name], groups_of[name], name, shapes[name].bounds, True, extra_margin=margin)
    return items


def layout_study(seed: int, size: int, n_slices: int | None, fractures: list[fx.Fracture],
                 dislocation: tuple[str, float, float] | None, swelling: bool = False) -> StudyLayout:
    """Lay out the study of ``seed`` (see the module docstring).

    Args:
        seed: the study's seed.
        size: in-plane matrix; the pixel size follows from the field of view.
        n_slices: axial slices (default :func:`default_slices`); the slice spacing follows from the
            spine's extent.
        fractures: drawn into their levels' signed distance functions.
        dislocation: ``(level, shift_mm, flexion_deg)``, or ``None``.
        swelling: prevertebral soft-tissue swelling in front of fractured levels.
    """
    rng = np.random.default_rng([seed, 0])
    scale = float(rng.uniform(0.9, 1.1))
    shapes = {name: anatomy.make_shape(name, scale, rng) for name in LEVELS}
    discs = {name: float(rng.uniform(3.4, 4.8) * scale) for name in LEVELS[1:-1]}
    axis = _spine_axis(rng, shapes, discs, scale)
    top_margin = float(rng.uniform(16, 28) * scale)
    bottom_margin = float(rng.uniform(2, 10))
    extent = top_margin + axis.point(axis.arc["T2"])[0] + shapes["T2"].dims["bh"] + bottom_margin
    n = n_slices or default_slices(size)
    px = round(_fov_mm(size) * float(rng.uniform(0.9, 1.1)) / size, 4)
    spacing = (round(extent / n, 3), px, px)
    shape = (n, size, size)
    habitus = float(rng.uniform(0.88, 1.18))
    centers, rots = _level_poses(rng, axis, size, px, top_margin, habitus)
    if dislocation is not None:
        _dislocate(centers, rots, shapes, dislocation)
    bone = _bone_values(rng)
    tissue = _tissue_values(rng, habitus)
    texture = _trabecular_texture(seed)
    items = _items(rng, shapes=shapes, discs=discs, centers=centers, rots=rots, spacing=spacing, shape=shape,
                   fractures=fractures, swelling=swelling, scale=scale, tissue=tissue)
    level_c = np.array([centers[n] for n in LEVELS])
    return StudyLayout(shape, spacing, items, level_c[:, 0], level_c[:, 1], level_c[:, 2],
                       np.array([shapes[n].dims["bd"] for n in LEVELS]), tissue, bone, texture,
                       blur=float(rng.uniform(0.06, 0.2)), noise_sigma=float(rng.uniform(8, 28)),
                       shapes=shapes)
