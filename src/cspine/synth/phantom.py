"""One synthetic cervical spine CT study in memory: :func:`make_phantom`.

The study is laid out in millimetres (a lordotic spine C1..T2 with per-study size, curvature,
rotation and shift; neck soft tissue, fat, airway, thyroid, lung apices, mandible, hyoid, skull
base, the table) and voxelised in the canonical orientation (axis 0 superior -> inferior,
axis 1 anterior -> posterior, axis 2 right -> left). Bone is drawn from signed distance
functions: the distance gives partial-volume edges, a cortical shell and textured cancellous bone.
A light in-plane blur (reconstruction kernel) and Gaussian noise finish the image.

Random streams are separate for anatomy, fractures and noise, so the same seed with and without
a fracture gives the same study except where the fracture is; :attr:`Phantom.fracture_mask` is
exactly the set of voxels that differ (it is computed by re-rendering the fractured region
without the fracture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cspine.io.volume import Volume, volume_from_arrays
from cspine.labels import HU_MAX, HU_MIN, LABEL_OF, VERTEBRAE
from cspine.synth import anatomy, sdf
from cspine.synth import fractures as fx
from cspine.synth.anatomy import LEVELS, SdfFn, VertebraShape

Arr = np.ndarray
f32 = np.float32
Region = tuple[int, int, int, int, int, int]  # z0, z1, y0, y1, x0, x1


@dataclass
class Phantom:
    """A synthetic study in the canonical orientation (see the module docstring)."""

    hu: np.ndarray  # int16 (Z, Y, X)
    labels: np.ndarray  # uint8 (Z, Y, X): 0 background, 1..7 C1..C7, 8..9 T1..T2
    spacing: tuple[float, float, float]  # (z, y, x) mm
    fractured: dict[str, int]  # C1..C7 -> 0/1
    fracture_mask: np.ndarray  # bool (Z, Y, X): the voxels the fractures changed
    boxes: list[tuple[int, float, float, float, float]]  # (slice index, x, y, width, height)
    fractures: list[fx.Fracture] = field(default_factory=list)
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def patient_overall(self) -> int:
        return int(any(self.fractured.values()))

    def volume(self) -> Volume:
        """The study as a canonical :class:`Volume` (no slice map: it was never a DICOM series)."""
        return volume_from_arrays(self.hu, self.spacing, {"synthetic": True, "seed": self.seed})


@dataclass
class _Item:
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
class _Study:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    items: list[_Item]
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


def _region(
    center: np.ndarray,
    rot: np.ndarray,
    bounds: tuple,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    margin: float = 1.5,
) -> Region:
    corners = np.array([[a, b, c] for a in bounds[0] for b in bounds[1] for c in bounds[2]], dtype=np.float64)
    world = corners @ rot.T + center
    lo = np.floor((world.min(0) - margin) / spacing).astype(int)
    hi = np.ceil((world.max(0) + margin) / spacing).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, shape)
    return (int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))


def _intersect(a: Region, b: Region) -> Region | None:
    r = (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]), max(a[4], b[4]), min(a[5], b[5]))
    return r if r[0] < r[1] and r[2] < r[3] and r[4] < r[5] else None


def _axis_mm(lo: int, hi: int, step: float) -> Arr:
    # float64 product then float32: a voxel's coordinate does not depend on the range it is part of
    return (np.arange(lo, hi, dtype=np.float64) * step).astype(np.float32)


def _local_coords(item: _Item, r: Region, spacing: tuple[float, float, float]) -> tuple[Arr, Arr, Arr]:
    dz = (_axis_mm(r[0], r[1], spacing[0]) - f32(item.center[0]))[:, None, None]
    dy = (_axis_mm(r[2], r[3], spacing[1]) - f32(item.center[1]))[None, :, None]
    dx = (_axis_mm(r[4], r[5], spacing[2]) - f32(item.center[2]))[None, None, :]
    m = item.rot.astype(np.float32)
    lz = dz * m[0, 0] + dy * m[1, 0] + dx * m[2, 0]
    ly = dz * m[0, 1] + dy * m[1, 1] + dx * m[2, 1]
    lx = dz * m[0, 2] + dy * m[1, 2] + dx * m[2, 2]
    return lz, ly, lx


# --- layout ----------------------------------------------------------------------------------


def default_slices(size: int) -> int:
    """Slices of a study of ``size`` pixels when not given: 200 at 256, 100 at 128."""
    return max(24, int(round(size * 0.78)))


def _fov_mm(size: int) -> float:
    # A neck CT's reconstruction field is ~150-200 mm; small test sizes zoom in a little so that a
    # 64-128 pixel study still resolves the vertebrae.
    return min(175.0, 92.0 + 0.33 * size)


def _layout(
    seed: int,
    size: int,
    n_slices: int | None,
    fractures: list[fx.Fracture],
    dislocation: tuple[str, float, float] | None,
    swelling: bool = False,
) -> _Study:
    rng = np.random.default_rng([seed, 0])
    scale = float(rng.uniform(0.9, 1.1))
    shapes = {name: anatomy.make_shape(name, scale, rng) for name in LEVELS}
    discs = {name: float(rng.uniform(3.4, 4.8) * scale) for name in LEVELS[1:-1]}
    # Arc length of each level centre along the spine axis, C1 = 0.
    s = {"C1": 0.0, "C2": shapes["C2"].dims["bh"] + 8.0 * scale}
    for upper, lower in zip(LEVELS[1:-1], LEVELS[2:], strict=True):
        s[lower] = s[upper] + shapes[upper].dims["bh"] + discs[upper] + shapes[lower].dims["bh"]
    cobb = np.deg2rad(rng.choice([rng.uniform(-5, 8), rng.uniform(8, 35)], p=[0.25, 0.75]))
    kappa = cobb / (s["C7"] - s["C2"])
    theta0 = np.deg2rad(rng.uniform(-7, 7))

    def theta(sv: float) -> float:
        if sv <= s["C7"]:
            return theta0 + kappa * (sv - s["C4"])
        return theta0 + kappa * (s["C7"] - s["C4"]) - 0.35 * kappa * (sv - s["C7"])

    # Integrate the axis from C1 downwards (z down, y posterior).
    grid = np.linspace(0.0, s["T2"], 400)
    th = np.array([theta(v) for v in grid])
    step = np.diff(grid, prepend=0.0)
    path = np.stack([np.cumsum(np.cos(th) * step), np.cumsum(np.sin(th) * step)], 1)
    top_margin = float(rng.uniform(16, 28) * scale)
    bottom_margin = float(rng.uniform(2, 10))
    extent = (
        top_margin + float(np.interp(s["T2"], grid, path[:, 0])) + shapes["T2"].dims["bh"] + bottom_margin
    )
    n = n_slices or default_slices(size)
    sz = round(extent / n, 3)
    px = round(_fov_mm(size) * float(rng.uniform(0.9, 1.1)) / size, 4)
    spacing = (sz, px, px)
    shape = (n, size, size)

    habitus = float(rng.uniform(0.88, 1.18))
    mid_t = 4.0
    A = np.interp(mid_t, np.arange(-1, 9), [95, 90, 80, 60, 52, 50, 50, 55, 60, 65]) * habitus
    P = np.interp(mid_t, np.arange(-1, 9), [80, 75, 72, 70, 70, 70, 70, 72, 78, 82]) * habitus
    origin = np.array(
        [
            top_margin,
            size * px / 2 + (A - P) / 2 + rng.uniform(-6, 6),
            size * px / 2 + rng.uniform(-6, 6),
        ]
    )
    axial, bend = np.deg2rad(rng.uniform(-6, 6)), np.deg2rad(rng.uniform(-2.5, 2.5))
    r_global = _rot_z(axial) @ _rot_y(bend)
    pivot = np.array(
        [float(np.interp(s["C4"], grid, path[:, 0])), float(np.interp(s["C4"], grid, path[:, 1])), 0]
    )

    centers, rots = {}, {}
    for name in LEVELS:
        p = np.array([np.interp(s[name], grid, path[:, 0]), np.interp(s[name], grid, path[:, 1]), 0.0])
        jit = np.deg2rad(rng.normal(0, 1.0, 3))
        centers[name] = origin + pivot + r_global @ (p - pivot)
        rots[name] = r_global @ _rot_x(theta(s[name]) + jit[0]) @ _rot_z(jit[1]) @ _rot_y(jit[2])
    if dislocation is not None:  # the levels down to `level` slide (and tilt) over the one below
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

    density = float(rng.uniform(0.6, 0.8) if rng.random() < 0.2 else rng.uniform(0.88, 1.12))
    bone = {
        "cortex": float(rng.uniform(950, 1300) * density),
        "cancellous": float(rng.uniform(230, 330) * density),
        "texture": float(rng.uniform(40, 80) * density),
        "cortex_mm": float(rng.uniform(0.9, 1.4)),
    }
    tissue = {
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
    trng = np.random.default_rng([seed, 5])
    tex = trng.standard_normal((16, 16, 16)).astype(np.float32)
    for ax in range(3):  # a periodic smooth field: trabecular texture
        tex = (tex + np.roll(tex, 1, ax) + np.roll(tex, -1, ax)) / 3
    tex /= tex.std() + 1e-6

    items: list[_Item] = []
    groups_of = {name: fx.fractured_groups(shapes[name], fractures) for name in LEVELS}

    def add(
        name: str,
        label: int,
        groups: dict[str, SdfFn],
        level: str,
        bounds: tuple,
        bone_: bool,
        value: float = 0.0,
        extra_margin: float = 0.0,
    ) -> None:
        reg = _region(centers[level], rots[level], bounds, spacing, shape, 1.5 + extra_margin)
        if reg[0] < reg[1] and reg[2] < reg[3] and reg[4] < reg[5]:
            items.append(_Item(name, label, groups, centers[level], rots[level], reg, bone_, value))

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
        margin = max(
            (float(np.linalg.norm(f.shift)) + f.gap for f in fractures if f.level == name), default=0.0
        )
        add(name, LABEL_OF[name], groups_of[name], name, shapes[name].bounds, True, extra_margin=margin)

    level_c = np.array([centers[n] for n in LEVELS])
    return _Study(
        shape,
        spacing,
        items,
        level_c[:, 0],
        level_c[:, 1],
        level_c[:, 2],
        np.array([shapes[n].dims["bd"] for n in LEVELS]),
        tissue,
        bone,
        tex,
        blur=float(rng.uniform(0.06, 0.2)),
        noise_sigma=float(rng.uniform(8, 28)),
        shapes=shapes,
    )


# --- rendering -------------------------------------------------------------------------------


def _clip01(a: Arr) -> Arr:
    """``clip(a, 0, 1)`` in place (np.clip is several times slower than this on large arrays)."""
    np.maximum(a, 0, out=a)
    return np.minimum(a, 1, out=a)


def _sub(r: Region, z0: int, z1: int, y0: int, y1: int, x0: int, x1: int) -> Region | None:
    """The part of a box (absolute voxel indices) inside region ``r``."""
    return _intersect(r, (z0, z1, y0, y1, x0, x1))


def _tissue(st: _Study, r: Region) -> Arr:
    """Air, neck outline with subcutaneous fat, muscle, airway, esophagus, thyroid, lungs, table."""
    sz, sy, sx = st.spacing
    nzv, nyv, nxv = st.shape
    wz = _axis_mm(r[0], r[1], sz)
    wy = _axis_mm(r[2], r[3], sy)[None, :, None]
    wx = _axis_mm(r[4], r[5], sx)[None, None, :]
    t = _level_index(st, wz)
    ys = np.interp(wz, st.level_z, st.level_y).astype(np.float32)
    xs = np.interp(wz, st.level_z, st.level_x).astype(np.float32)
    bd = np.interp(wz, st.level_z, st.level_bd).astype(np.float32)
    h = st.tissue["habitus"]
    knots = np.arange(-1, 9)
    ant = np.interp(t, knots, [95, 90, 80, 60, 52, 50, 50, 55, 60, 65]) * h
    post = np.interp(t, knots, [80, 75, 72, 70, 70, 70, 70, 72, 78, 82]) * h
    half_w = np.interp(t, knots, [72, 68, 62, 58, 56, 56, 58, 66, 88, 115]) * h

    def col(v: Arr | float) -> Arr:
        return np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)

    # Neck outline: an ellipse per slice; separable in y and x, so only two full-size operations.
    ny = (wy - col(ys + (post - ant) / 2)) / col((ant + post) / 2)
    nx = (wx - col(xs)) / col(half_w)
    rho = np.sqrt(ny * ny + nx * nx)  # 1 at the skin
    inv_aa = f32(80.0)  # ~1 mm soft edge
    skin = _clip01((f32(1.0) - rho) * inv_aa + f32(0.5))
    inner = rho
    inner += col(st.tissue["fat_mm"] / ((ant + post) / 2)) - f32(1.0)
    inner *= -inv_aa
    inner += f32(0.5)
    _clip01(inner)
    out = skin
    out *= f32(st.tissue["fat"] + 1000.0)
    out += f32(-1000.0)
    inner *= f32(st.tissue["muscle"] - st.tissue["fat"])
    out += inner
    del inner

    # Structures in front of the spine, computed in a box around them.
    # Box bounds come from the whole study, never from region r: a patch must see the same boxes.
    y_lo = int(max(0, np.floor((float(np.min(st.level_y - st.level_bd)) - 75.0) / sy)))
    y_hi = int(min(nyv, np.ceil((float(np.max(st.level_y))) / sy)))
    x_lo = int(max(0, np.floor((float(np.min(st.level_x)) - 45.0) / sx)))
    x_hi = int(min(nxv, np.ceil((float(np.max(st.level_x)) + 45.0) / sx)))
    box = _sub(r, r[0], r[1], y_lo, y_hi, x_lo, x_hi)
    if box is not None:
        v = out[:, box[2] - r[2] : box[3] - r[2], box[4] - r[4] : box[5] - r[4]]
        by = wy[:, box[2] - r[2] : box[3] - r[2]]
        bx = wx[:, :, box[4] - r[4] : box[5] - r[4]]
        ary = np.interp(t, knots, [6, 7, 7, 7, 9, 9, 8.5, 8, 8, 8])
        arx = np.interp(t, knots, [12, 14, 14, 12, 8, 8, 8.5, 9, 9, 9])
        pv = np.interp(t, knots, [4, 4, 4, 4, 5, 6, 12, 14, 15, 15])
        ya = ys - bd - pv - ary
        d_air = (
            np.sqrt(((by - col(ya)) / col(ary)) ** 2 + ((bx - col(xs)) / col(arx)) ** 2) - f32(1.0)
        ) * col(np.minimum(ary, arx))
        air = _clip01(f32(0.5) - d_air / f32(sy))
        v += (f32(-1000.0) - v) * air
        lar = col(((t > 3.0) & (t < 5.2)).astype(np.float32))
        cart = (np.abs(d_air - f32(3.5)) < f32(0.8)) & (by < col(ya + 2))
        v += (f32(st.tissue["cartilage"]) - v) * cart * lar
        thy = col(((t > 5.6) & (t < 7.8)).astype(np.float32))
        for sgn in (-1.0, 1.0):
            d_t = ((by - col(ya + 3)) / f32(8.5)) ** 2 + ((bx - col(xs + sgn * (arx + 8))) / f32(6.5)) ** 2
            v += (f32(st.tissue["thyroid"]) - v) * (d_t < 1) * thy
        if st.tissue["esophagus_air"]:
            eso = col((t > 4.6).astype(np.float32))
            d_e = ((by - col(ys - bd - 4.0)) / f32(1.4)) ** 2 + ((bx - col(xs)) / f32(3.5)) ** 2
            v += (f32(-900.0) - v) * (d_e < 1) * eso
        for sgn in (-1.0, 1.0):  # fat around the carotid sheaths, beside the airway
            d_c = ((by - col(ya + ary + 3)) / f32(5.5)) ** 2 + (
                (bx - col(xs + sgn * (arx + 17))) / f32(4.5)
            ) ** 2
            v += (f32(st.tissue["fat"]) - v) * ((d_c < 1) & (d_c > 0.55))
    # Fat planes between the posterior neck muscles (semispinalis / splenius / trapezius layers).
    y_lo = int(max(0, np.floor((float(np.min(st.level_y)) + 18.0) / sy)))
    y_hi = int(min(nyv, np.ceil((float(np.max(st.level_y)) + 80.0 * h) / sy)))
    box = _sub(r, r[0], r[1], y_lo, y_hi, x_lo, x_hi)
    if box is not None:
        v = out[:, box[2] - r[2] : box[3] - r[2], box[4] - r[4] : box[5] - r[4]]
        by = wy[:, box[2] - r[2] : box[3] - r[2]]
        bx = wx[:, :, box[4] - r[4] : box[5] - r[4]]
        for cy_mm, ry_mm, rx_mm in ((30.0, 24.0, 30.0), (38.0, 34.0, 40.0)):
            e = np.sqrt(
                ((by - col(ys + cy_mm * h)) / f32(ry_mm * h)) ** 2 + ((bx - col(xs)) / f32(rx_mm * h)) ** 2
            )
            plane = (np.abs(e - f32(1.0)) < f32(0.9 / (ry_mm * h))) & (by > col(ys + 22.0 * h)) & (v > -200)
            v += (f32(st.tissue["fat"]) - v) * plane
        midline = (np.abs(bx - col(xs)) < f32(0.8)) & (by > col(ys + 48.0 * h)) & (v > -200)
        v += (f32(st.tissue["fat"] * 0.6) - v) * midline
    # Lung apices below T1.
    apex_z = st.level_z[7] - 6.0
    z_apex = int(max(0, np.floor(apex_z / sz)))
    lung_box = _sub(r, z_apex, nzv, 0, nyv, 0, nxv)
    if lung_box is not None:
        k0 = lung_box[0] - r[0]
        v = out[k0:]
        depth = np.clip(wz[k0:] - apex_z, 0, None)
        lung_r = col(np.sqrt(depth) * 6.0)
        for sgn in (-1.0, 1.0):
            d_l = np.sqrt((wy - col(ys[k0:] + 8)) ** 2 + (wx - col(xs[k0:] + sgn * 48 * h)) ** 2)
            v += (f32(-850.0) - v) * _clip01((lung_r - d_l) * f32(0.5))
    # The table: a curved plate under the back of the neck (the same on every slice).
    table_y = float(st.level_y.mean() + 84.0 * h)
    x_mid = float(st.level_x.mean())
    tb = _sub(r, r[0], r[1], int(max(0, (table_y - 8) / sy)), int(min(nyv, (table_y + 30) / sy)), 0, nxv)
    if tb is not None and st.tissue.get("table", 1.0):
        ty = wy[:, tb[2] - r[2] : tb[3] - r[2]]
        d_tab = np.abs(np.sqrt((ty - f32(table_y + 400.0)) ** 2 + (wx - f32(x_mid)) ** 2) - f32(402.0)) - f32(
            1.5
        )
        plate2d = ((d_tab < 0) & (np.abs(wx - f32(x_mid)) < f32(160)))[0]
        out[:, tb[2] - r[2] : tb[3] - r[2]][:, plate2d] = f32(250.0)
    return out


def _level_index(st: _Study, wz: Arr) -> Arr:
    """Continuous level index of world z (0 = C1 centre, 8 = T2), extrapolated above C1."""
    t = np.interp(wz, st.level_z, np.arange(len(LEVELS), dtype=np.float64))
    return np.where(wz < st.level_z[0], (wz - st.level_z[0]) / 15.0, t)


def _paint(st: _Study, img: Arr, labels: Arr | None, r: Region) -> None:
    """Paint every item intersecting region ``r`` into ``img`` (which covers exactly ``r``)."""
    sz, sy, sx = st.spacing
    aa = f32((sz + sy + sx) / 3.0)
    b = st.bone
    n_tex = st.texture.shape[0]
    for item in st.items:
        sub = _intersect(item.region, r)
        if sub is None:
            continue
        lz, ly, lx = _local_coords(item, sub, st.spacing)
        fns = list(item.groups.values())
        ds = [fn(lz, ly, lx) for fn in fns]
        d = sdf.union(*ds)
        occ = _clip01(f32(0.5) - d / aa)
        view = img[
            sub[0] - r[0] : sub[1] - r[0], sub[2] - r[2] : sub[3] - r[2], sub[4] - r[4] : sub[5] - r[4]
        ]
        if item.bone:
            tex = st.texture[
                np.ix_(
                    np.arange(sub[0], sub[1]) % n_tex,
                    np.arange(sub[2], sub[3]) % n_tex,
                    np.arange(sub[4], sub[5]) % n_tex,
                )
            ]
            canc = f32(b["cancellous"]) + f32(b["texture"]) * tex
            # The cortical shell follows each group's intact surface: a fracture's margins stay
            # cancellous (see cspine.synth.fractures); without a fracture d_cortex is d.
            d_cortex = d
            if any(isinstance(fn, fx.FracturedSdf) for fn in fns):
                d_cortex = sdf.union(*(fn.cortex(lz, ly, lx) if isinstance(fn, fx.FracturedSdf) else di
                                       for fn, di in zip(fns, ds, strict=True)))
            wc = _clip01((d_cortex + f32(b["cortex_mm"])) / aa + f32(0.5))
            value = canc + (f32(b["cortex"]) - canc) * wc
        else:
            value = f32(item.value)
        view += (value - view) * occ
        if labels is not None and item.label:
            lview = labels[
                sub[0] - r[0] : sub[1] - r[0], sub[2] - r[2] : sub[3] - r[2], sub[4] - r[4] : sub[5] - r[4]
            ]
            lview[occ >= 0.5] = item.label


def _blur_inplane(img: Arr, a: float) -> Arr:
    """A 3-tap [a, 1-2a, a] blur along y and x (edge values repeated): the reconstruction kernel.

    Each output voxel is the same fixed-order sum of its neighbours, so a patch blurred alone
    matches the whole volume blurred, away from the patch's own edge (the fracture mask relies on it).
    """
    from scipy.ndimage import convolve1d

    kernel = np.array([a, 1.0 - 2.0 * a, a], dtype=np.float32)
    out = convolve1d(img, kernel, axis=1, mode="nearest")
    return convolve1d(out, kernel, axis=2, mode="nearest", output=img)


def _finish(clean: Arr, noise: Arr | None, blur: float) -> Arr:
    img = _blur_inplane(clean, blur)
    if noise is not None:
        img += noise
    np.rint(img, out=img)
    np.maximum(img, HU_MIN, out=img)
    np.minimum(img, HU_MAX, out=img)
    return img.astype(np.int16)


def _render(st: _Study, r: Region, noise: Arr | None, with_labels: bool) -> tuple[Arr, Arr | None]:
    img = _tissue(st, r)
    labels = np.zeros(img.shape, np.uint8) if with_labels else None
    _paint(st, img, labels, r)
    return _finish(img, noise, st.blur), labels


def _boxes(mask: Arr, min_voxels: int = 4) -> list[tuple[int, float, float, float, float]]:
    boxes = []
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).sum(1) >= min_voxels):
        ys, xs = np.nonzero(mask[k])
        x0, y0 = float(xs.min()) - 1.0, float(ys.min()) - 1.0
        boxes.append((int(k), x0, y0, float(xs.max() + 2.0 - x0), float(ys.max() + 2.0 - y0)))
    return boxes


def make_phantom(
    seed: int,
    size: int = 256,
    n_slices: int | None = None,
    fracture: bool | None = None,
    *,
    fractures: list[fx.Fracture] | None = None,
    fracture_kinds: tuple[str, ...] | None = None,
    dislocation: tuple[str, float, float] | None = None,
    noise: bool = True,
    table: bool = True,
    swelling: bool = False,
) -> Phantom:
    """Generate one synthetic cervical spine CT study.

    Args:
        seed: Everything follows from it (anatomy, fractures, noise use separate streams).
        size: In-plane matrix (rows = columns); the field of view is ~150-190 mm at 256.
        n_slices: Number of axial slices; default :func:`default_slices` (200 at 256).
        fracture: ``True``/``False`` forces a fractured/normal patient; ``None`` draws one with the
            RSNA rate (~48%). The same seed gives the same anatomy either way.
        fractures: Explicit fractures (overrides ``fracture``), e.g. from :func:`fx.sample_fracture`.
        fracture_kinds: Restrict drawn fracture kinds (see :func:`fx.sample_fracture`).
        dislocation: ``(level, shift_mm, flexion_deg)``: the levels down to ``level`` are translated
            along the AP axis of the level below and tilted (no fracture).
        noise: Add CT noise.
        table: Draw the CT table under the neck (radiographs leave it out).
        swelling: Add prevertebral soft-tissue swelling (haematoma) in front of fractured levels, a
            sign radiographs show; off for CT, where ``fracture_mask`` then covers bone changes only.

    Returns:
        The :class:`Phantom`.

    Example:
        >>> p = make_phantom(3, size=64, n_slices=48)
        >>> p.hu.shape, p.hu.dtype.name, bool(p.labels.max() <= 9)
        ((48, 64, 64), 'int16', True)
    """
    if size < 32 or (n_slices is not None and n_slices < 16):
        raise ValueError(f"phantom too small: size={size}, n_slices={n_slices} (need >= 32 and >= 16)")
    if fractures is None:
        frng = np.random.default_rng([seed, 1])
        broken = bool(frng.random() < fx.FRACTURE_RATE) if fracture is None else bool(fracture)
        fractures = []
        if broken:
            probe = _layout(seed, size, n_slices, [], None)
            px = probe.spacing[1]
            for level in fx.sample_levels(frng):
                fractures.append(fx.sample_fracture(frng, probe.shapes[level], px, fracture_kinds))
    st = _layout(seed, size, n_slices, list(fractures), dislocation, swelling)
    st.tissue["table"] = float(table)
    noise_arr = None
    if noise:
        noise_arr = np.random.default_rng([seed, 2]).standard_normal(st.shape, dtype=np.float32)
        noise_arr *= f32(st.noise_sigma)
    full = (0, st.shape[0], 0, st.shape[1], 0, st.shape[2])
    hu, labels = _render(st, full, noise_arr, True)
    assert labels is not None
    mask = np.zeros(st.shape, bool)
    if fractures:
        plain = _layout(seed, size, n_slices, [], dislocation)
        plain.tissue["table"] = float(table)
        for item in st.items:
            if item.name not in {f.level for f in fractures}:
                continue
            r = item.region
            pad = (
                max(r[0], 0),
                min(r[1], st.shape[0]),
                max(r[2] - 2, 0),
                min(r[3] + 2, st.shape[1]),
                max(r[4] - 2, 0),
                min(r[5] + 2, st.shape[2]),
            )
            sub_noise = (
                None if noise_arr is None else noise_arr[pad[0] : pad[1], pad[2] : pad[3], pad[4] : pad[5]]
            )
            ref, _ = _render(plain, pad, sub_noise, False)
            got = hu[pad[0] : pad[1], pad[2] : pad[3], pad[4] : pad[5]]
            diff = got != ref
            # The outermost in-plane ring of the patch is blurred with repeated edges: keep it out.
            inner = np.zeros(diff.shape, bool)
            y0 = 0 if pad[2] == 0 else 1
            x0 = 0 if pad[4] == 0 else 1
            y1 = diff.shape[1] - (0 if pad[3] == st.shape[1] else 1)
            x1 = diff.shape[2] - (0 if pad[5] == st.shape[2] else 1)
            inner[:, y0:y1, x0:x1] = True
            mask[pad[0] : pad[1], pad[2] : pad[3], pad[4] : pad[5]] |= diff & inner
    fractured = {v: int(any(f.level == v for f in fractures)) for v in VERTEBRAE}
    meta = {
        "spacing": st.spacing,
        "noise_sigma": st.noise_sigma,
        "blur": st.blur,
        "bone": st.bone,
        "dislocation": dislocation,
    }
    return Phantom(hu, labels, st.spacing, fractured, mask, _boxes(mask), list(fractures), seed, meta)
