"""The phantom's soft tissue and air in a voxel region: what bone is painted over.

Air around the neck; the neck's outline (:func:`cspine.synth.layout.neck_profile`) with subcutaneous
fat over muscle; in front of the spine the airway, larynx cartilage, thyroid, esophagus and the fat
around the carotid sheaths; fat planes between the posterior neck muscles; the lung apices below T1;
and the table. Every value depends on its voxel's world coordinates and on boxes computed from the
whole study, never from the region, so a patch rendered alone equals the same voxels of the whole
volume (the fracture mask relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cspine.synth.anatomy import LEVELS
from cspine.synth.layout import Region, StudyLayout, axis_mm, intersect, neck_profile
from cspine.synth.sdf import clip01

Arr = np.ndarray
f32 = np.float32


def _col(v: Arr | float) -> Arr:
    """Per-slice values as a ``(Z, 1, 1)`` float32 column."""
    return np.asarray(v, dtype=np.float32).reshape(-1, 1, 1)


def level_index(st: StudyLayout, wz: Arr) -> Arr:
    """Continuous level index of world z (0 = C1 centre, 8 = T2), extrapolated above C1."""
    t = np.interp(wz, st.level_z, np.arange(len(LEVELS), dtype=np.float64))
    return np.where(wz < st.level_z[0], (wz - st.level_z[0]) / 15.0, t)


@dataclass(frozen=True)
class _Slab:
    """A region's world coordinates and, per slice, the level index and the spine's axis and depth."""

    r: Region
    wz: Arr  # (Z,) mm
    wy: Arr  # (1, Y, 1) mm
    wx: Arr  # (1, 1, X) mm
    t: Arr  # (Z,) level index
    ys: Arr  # (Z,) spine axis y, mm
    xs: Arr  # (Z,) spine axis x, mm
    bd: Arr  # (Z,) vertebral body depth, mm

    @classmethod
    def of(cls, st: StudyLayout, r: Region) -> _Slab:
        sz, sy, sx = st.spacing
        wz = axis_mm(r[0], r[1], sz)
        return cls(r, wz, axis_mm(r[2], r[3], sy)[None, :, None], axis_mm(r[4], r[5], sx)[None, None, :],
                   level_index(st, wz), np.interp(wz, st.level_z, st.level_y).astype(np.float32),
                   np.interp(wz, st.level_z, st.level_x).astype(np.float32),
                   np.interp(wz, st.level_z, st.level_bd).astype(np.float32))

    def box(self, y0: int, y1: int, x0: int, x1: int) -> tuple[slice, slice] | None:
        """Region-relative (y, x) slices of the absolute in-plane box, or ``None`` outside."""
        b = intersect(self.r, (self.r[0], self.r[1], y0, y1, x0, x1))
        if b is None:
            return None
        return slice(b[2] - self.r[2], b[3] - self.r[2]), slice(b[4] - self.r[4], b[5] - self.r[4])


def _neck(st: StudyLayout, g: _Slab, ant: Arr, post: Arr, half_w: Arr) -> Arr:
    """Air outside the neck's outline, fat under the skin, muscle inside."""
    # An ellipse per slice; separable in y and x, so only two full-size operations.
    ny = (g.wy - _col(g.ys + (post - ant) / 2)) / _col((ant + post) / 2)
    nx = (g.wx - _col(g.xs)) / _col(half_w)
    rho = np.sqrt(ny * ny + nx * nx)  # 1 at the skin
    inv_aa = f32(80.0)  # ~1 mm soft edge
    skin = clip01((f32(1.0) - rho) * inv_aa + f32(0.5))
    inner = rho
    inner += _col(st.tissue["fat_mm"] / ((ant + post) / 2)) - f32(1.0)
    inner *= -inv_aa
    inner += f32(0.5)
    clip01(inner)
    out = skin
    out *= f32(st.tissue["fat"] + 1000.0)
    out += f32(-1000.0)
    inner *= f32(st.tissue["muscle"] - st.tissue["fat"])
    out += inner
    return out


def _front_of_spine(st: StudyLayout, g: _Slab, out: Arr, x_lo: int, x_hi: int) -> None:
    """Airway, larynx cartilage, thyroid, esophagus and carotid-sheath fat, in place."""
    sy = st.spacing[1]
    y_lo = int(max(0, np.floor((float(np.min(st.level_y - st.level_bd)) - 75.0) / sy)))
    y_hi = int(min(st.shape[1], np.ceil((float(np.max(st.level_y))) / sy)))
    box = g.box(y_lo, y_hi, x_lo, x_hi)
    if box is None:
        return
    v, by, bx = out[:, box[0], box[1]], g.wy[:, box[0]], g.wx[:, :, box[1]]
    t, ys, xs, bd, knots = g.t, g.ys, g.xs, g.bd, np.arange(-1, 9)
    ary = np.interp(t, knots, [6, 7, 7, 7, 9, 9, 8.5, 8, 8, 8])
    arx = np.interp(t, knots, [12, 14, 14, 12, 8, 8, 8.5, 9, 9, 9])
    pv = np.interp(t, knots, [4, 4, 4, 4, 5, 6, 12, 14, 15, 15])
    ya = ys - bd - pv - ary
    d_air = (np.sqrt(((by - _col(ya)) / _col(ary)) ** 2 + ((bx - _col(xs)) / _col(arx)) ** 2) - f32(1.0)
             ) * _col(np.minimum(ary, arx))
    air = clip01(f32(0.5) - d_air / f32(sy))
    v += (f32(-1000.0) - v) * air
    lar = _col(((t > 3.0) & (t < 5.2)).astype(np.float32))
    cart = (np.abs(d_air - f32(3.5)) < f32(0.8)) & (by < _col(ya + 2))
    v += (f32(st.tissue["cartilage"]) - v) * cart * lar
    thy = _col(((t > 5.6) & (t < 7.8)).astype(np.float32))
    for sgn in (-1.0, 1.0):
        d_t = ((by - _col(ya + 3)) / f32(8.5)) ** 2 + ((bx - _col(xs + sgn * (arx + 8))) / f32(6.5)) ** 2
        v += (f32(st.tissue["thyroid"]) - v) * (d_t < 1) * thy
    if st.tissue["esophagus_air"]:
        eso = _col((t > 4.6).astype(np.float32))
        d_e = ((by - _col(ys - bd - 4.0)) / f32(1.4)) ** 2 + ((bx - _col(xs)) / f32(3.5)) ** 2
        v += (f32(-900.0) - v) * (d_e < 1) * eso
    for sgn in (-1.0, 1.0):  # fat around the carotid sheaths, beside the airway
        d_c = ((by - _col(ya + ary + 3)) / f32(5.5)) ** 2 + (
            (bx - _col(xs + sgn * (arx + 17))) / f32(4.5)) ** 2
        v += (f32(st.tissue["fat"]) - v) * ((d_c < 1) & (d_c > 0.55))


def _posterior_fat_planes(st: StudyLayout, g: _Slab, out: Arr, x_lo: int, x_hi: int) -> None:
    """Fat planes between the posterior neck muscles (semispinalis / splenius / trapezius layers)."""
    sy, h = st.spacing[1], st.tissue["habitus"]
    y_lo = int(max(0, np.floor((float(np.min(st.level_y)) + 18.0) / sy)))
    y_hi = int(min(st.shape[1], np.ceil((float(np.max(st.level_y)) + 80.0 * h) / sy)))
    box = g.box(y_lo, y_hi, x_lo, x_hi)
    if box is None:
        return
    v, by, bx, ys, xs = out[:, box[0], box[1]], g.wy[:, box[0]], g.wx[:, :, box[1]], g.ys, g.xs
    for cy_mm, ry_mm, rx_mm in ((30.0, 24.0, 30.0), (38.0, 34.0, 40.0)):
        e = np.sqrt(((by - _col(ys + cy_mm * h)) / f32(ry_mm * h)) ** 2
                    + ((bx - _col(xs)) / f32(rx_mm * h)) ** 2)
        plane = (np.abs(e - f32(1.0)) < f32(0.9 / (ry_mm * h))) & (by > _col(ys + 22.0 * h)) & (v > -200)
        v += (f32(st.tissue["fat"]) - v) * plane
    midline = (np.abs(bx - _col(xs)) < f32(0.8)) & (by > _col(ys + 48.0 * h)) & (v > -200)
    v += (f32(st.tissue["fat"] * 0.6) - v) * midline


def _lung_apices(st: StudyLayout, g: _Slab, out: Arr) -> None:
    """The lung apices below T1, widening with depth, in place."""
    apex_z = st.level_z[7] - 6.0
    z_apex = int(max(0, np.floor(apex_z / st.spacing[0])))
    lung_box = intersect(g.r, (z_apex, st.shape[0], 0, st.shape[1], 0, st.shape[2]))
    if lung_box is None:
        return
    k0, h = lung_box[0] - g.r[0], st.tissue["habitus"]
    v = out[k0:]
    depth = np.clip(g.wz[k0:] - apex_z, 0, None)
    lung_r = _col(np.sqrt(depth) * 6.0)
    for sgn in (-1.0, 1.0):
        d_l = np.sqrt((g.wy - _col(g.ys[k0:] + 8)) ** 2 + (g.wx - _col(g.xs[k0:] + sgn * 48 * h)) ** 2)
        v += (f32(-850.0) - v) * clip01((lung_r - d_l) * f32(0.5))


def _table(st: StudyLayout, g: _Slab, out: Arr) -> None:
    """The table: a curved plate under the back of the neck (the same on every slice), in place."""
    sy = st.spacing[1]
    table_y = float(st.level_y.mean() + 84.0 * st.tissue["habitus"])
    x_mid = float(st.level_x.mean())
    box = g.box(int(max(0, (table_y - 8) / sy)), int(min(st.shape[1], (table_y + 30) / sy)), 0, st.shape[2])
    if box is None:
        return
    ty = g.wy[:, box[0]]
    d_tab = np.abs(np.sqrt((ty - f32(table_y + 400.0)) ** 2 + (g.wx - f32(x_mid)) ** 2) - f32(402.0)
                   ) - f32(1.5)
    plate2d = ((d_tab < 0) & (np.abs(g.wx - f32(x_mid)) < f32(160)))[0]
    out[:, box[0]][:, plate2d] = f32(250.0)


def soft_tissue(st: StudyLayout, r: Region) -> Arr:
    """The soft tissue, air and table of region ``r``: float32 HU, shaped as the region."""
    g = _Slab.of(st, r)
    ant, post, half_w = neck_profile(g.t, st.tissue["habitus"])
    out = _neck(st, g, ant, post, half_w)
    sx = st.spacing[2]
    # Boxes come from the whole study, never from region r: a patch must see the same boxes.
    x_lo = int(max(0, np.floor((float(np.min(st.level_x)) - 45.0) / sx)))
    x_hi = int(min(st.shape[2], np.ceil((float(np.max(st.level_x)) + 45.0) / sx)))
    _front_of_spine(st, g, out, x_lo, x_hi)
    _posterior_fat_planes(st, g, out, x_lo, x_hi)
    _lung_apices(st, g, out)
    if st.tissue.get("table", 1.0):
        _table(st, g, out)
    return out
