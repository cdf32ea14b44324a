"""Vertebra shapes in millimetres, in each vertebra's local frame, as signed distance functions.

Local frame of a vertebra (same axis order as the canonical volume): ``z`` runs down the spine
axis (superior -> inferior), ``y`` from anterior to posterior, ``x`` from the patient's right to
left. The origin is the centre of the vertebral body (for C1, which has no body, the dens axis at
the level of the atlas). Dimensions are adult averages from morphometric studies, scaled per study.

A shape is a dict of *groups* (``body``, ``posterior``, ``dens``, ``anterior_arch``, ...): each group
is a callable ``(z, y, x) -> signed distance`` so that a fracture can cut or displace one group
(e.g. the dens) and leave the others alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cspine.synth import sdf

Arr = np.ndarray
SdfFn = Callable[[Arr, Arr, Arr], Arr]

LEVELS: tuple[str, ...] = ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2")

# Per level (half width, half depth, half height of the body; canal AP depth, canal half width;
# spinous length, spinous drop; transverse process length), in mm.
_SUBAXIAL: dict[str, tuple[float, ...]] = {
    "C3": (7.5, 7.5, 6.5, 14.5, 12.0, 13.0, 5.0, 9.0),
    "C4": (8.0, 7.6, 6.5, 14.5, 12.3, 13.5, 5.5, 9.5),
    "C5": (8.5, 7.8, 6.6, 14.0, 12.5, 15.0, 7.0, 10.0),
    "C6": (9.0, 8.0, 6.8, 14.0, 12.5, 20.0, 9.0, 10.5),
    "C7": (10.0, 8.3, 7.1, 14.0, 12.0, 28.0, 13.0, 13.0),
    "T1": (11.0, 8.8, 8.0, 13.0, 10.5, 32.0, 18.0, 17.0),
    "T2": (11.5, 9.5, 8.5, 12.0, 9.0, 32.0, 22.0, 15.0),
}


@dataclass
class VertebraShape:
    """A vertebra's groups of signed distance functions and its local bounding box (mm)."""

    name: str
    groups: dict[str, SdfFn]
    bounds: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    dims: dict[str, float] = field(default_factory=dict)


def _scaled(values: tuple[float, ...], s: float, jitter: np.ndarray) -> list[float]:
    return [v * s * (1.0 + j) for v, j in zip(values, jitter, strict=False)]


def subaxial(name: str, scale: float, rng: np.random.Generator) -> VertebraShape:
    """C3..T2: body, pedicles, articular pillars, laminae, spinous and transverse processes."""
    bw, bd, bh, canal, cw, sp_len, sp_drop, tp_len = _scaled(
        _SUBAXIAL[name], scale, rng.uniform(-0.05, 0.05, 8)
    )
    thoracic = name.startswith("T")
    bifid = name in ("C3", "C4", "C5", "C6") and rng.random() < 0.8
    ym = bd + canal  # posterior end of the canal (spinolaminar line)
    lm_y, lm_x = bd + 5.5, cw + 4.5  # articular pillar centre
    facet_slope = 0.35 if thoracic else 0.8  # facets: ~45 deg cervical, near-coronal thoracic

    def body(z: Arr, y: Arr, x: Arr) -> Arr:
        d = sdf.elliptic_cylinder(z, y, x, (0.0, 0.0, 0.0), bd, bw, bh, rounding=1.6)
        d = sdf.intersect(d, y - bd * 0.82)  # flattened posterior wall
        if not thoracic:  # uncinate processes: lips on the superolateral edges
            d = sdf.union(
                d,
                sdf.mirror_x(
                    lambda zz, yy, xx: sdf.ellipsoid(
                        zz, yy, xx, (-bh + 0.3, bd * 0.15, bw - 1.2), (2.2, 4.5, 1.6)
                    ),
                    z,
                    y,
                    x,
                ),
            )
        return d

    def half_posterior(z: Arr, y: Arr, x: Arr) -> Arr:
        pedicle = sdf.plate(z, y, x, (bd * 0.55, bw * 0.7), (lm_y - 1.0, lm_x - 1.5), 2.4, -0.5, -0.5, 3.4)
        zc = 0.0
        top = (-(bh + 1.6) + facet_slope * (y - lm_y)) - z
        bot = z - ((bh + 1.6) + facet_slope * (y - lm_y))
        k = np.float32(1.0 / np.sqrt(1.0 + facet_slope**2))
        pillar = sdf.intersect(sdf.ellipse2d(y, x, lm_y, lm_x, 6.3, 5.3), top * k, bot * k)
        lamina = sdf.plate(
            z, y, x, (lm_y + 2.5, lm_x - 2.5), (ym + 1.0, 0.0), 2.1, zc + 0.5, zc + 2.0, bh * 0.8
        )
        parts = [pedicle, pillar, lamina]
        if thoracic:
            tp = sdf.plate(z, y, x, (lm_y, lm_x), (lm_y + 6.0, lm_x + tp_len), 3.6, -1.0, -2.5, 3.6)
            parts.append(tp)
        else:
            anterior_bar = sdf.plate(
                z, y, x, (bd * 0.05, bw * 0.85), (bd * 0.25, bw + tp_len), 2.2, 0.5, 1.2, 2.6
            )
            posterior_bar = sdf.plate(
                z, y, x, (lm_y - 2.0, lm_x - 0.5), (bd * 0.35 + 1.5, bw + tp_len), 2.0, 0.5, 1.2, 2.6
            )
            tubercles = sdf.ellipsoid(z, y, x, (1.0, bd * 0.3 + 0.5, bw + tp_len), (3.0, 3.6, 2.2))
            tp = sdf.union(anterior_bar, posterior_bar, tubercles)
            foramen_r = 1.7 if name == "C7" else 2.7
            foramen = sdf.elliptic_cylinder(
                z, y, x, (0.0, bd * 0.35 + 0.8, bw + 5.0), foramen_r, foramen_r, 6.0, rounding=0.0
            )
            parts.append(sdf.subtract(tp, foramen))
        if bifid:
            parts.append(sdf.ellipsoid(z, y, x, (sp_drop + 1.0, ym + sp_len - 1.0, 2.6), (3.0, 3.0, 2.2)))
        return sdf.union(*parts)

    def posterior(z: Arr, y: Arr, x: Arr) -> Arr:
        spinous = sdf.union(
            sdf.capsule(z, y, x, (-0.5, ym - 0.5, 0.0), (sp_drop - 0.5, ym + sp_len, 0.0), 2.8, 2.2),
            sdf.capsule(z, y, x, (1.3, ym - 0.5, 0.0), (sp_drop + 1.0, ym + sp_len - 1.0, 0.0), 2.8, 2.2),
        )
        return sdf.union(sdf.mirror_x(half_posterior, z, y, x), spinous)

    lateral = max(lm_x + 6.0, bw + tp_len + 4.0) + (8.0 if thoracic else 0.0)
    bounds = ((-bh - 5.0, max(bh + 4.0, sp_drop + 6.0)), (-bd - 3.0, ym + sp_len + 5.0), (-lateral, lateral))
    dims = {
        "bw": bw,
        "bd": bd,
        "bh": bh,
        "canal": canal,
        "cw": cw,
        "sp_len": sp_len,
        "sp_drop": sp_drop,
        "lm_y": lm_y,
        "lm_x": lm_x,
        "tp_len": tp_len,
    }
    return VertebraShape(name, {"body": body, "posterior": posterior}, bounds, dims)


def axis_c2(scale: float, rng: np.random.Generator) -> VertebraShape:
    """C2: a tall body, the dens rising into the atlas, large superior facets, a big bifid spinous."""
    bw, bd, bh, dens_r, dens_len, canal, cw, sp_len = _scaled(
        (8.0, 8.0, 8.5, 5.0, 14.0, 15.5, 12.5, 20.0), scale, rng.uniform(-0.05, 0.05, 8)
    )
    ym = bd + canal

    def body(z: Arr, y: Arr, x: Arr) -> Arr:
        d = sdf.elliptic_cylinder(z, y, x, (0.0, 0.0, 0.0), bd, bw, bh, rounding=2.0)
        lip = sdf.ellipsoid(z, y, x, (bh - 1.0, -bd + 1.5, 0.0), (2.0, 2.5, bw * 0.7))  # anteroinferior lip
        return sdf.intersect(sdf.union(d, lip), y - bd * 0.85)

    def dens(z: Arr, y: Arr, x: Arr) -> Arr:
        return sdf.capsule(
            z, y, x, (-bh + 1.5, -0.5, 0.0), (-bh - dens_len + dens_r * 0.8, 0.5, 0.0), dens_r, dens_r * 0.8
        )

    def half_posterior(z: Arr, y: Arr, x: Arr) -> Arr:
        sup_facet = sdf.ellipsoid(z, y, x, (-bh + 3.0, 1.5, bw + 3.5), (3.8, 7.5, 6.0))
        pars = sdf.plate(z, y, x, (bd * 0.5, bw * 0.8), (bd + 6.0, cw + 3.5), 3.0, -1.0, 2.5, 4.0)
        inf_facet = sdf.intersect(
            sdf.ellipse2d(y, x, bd + 6.5, cw + 3.5, 5.5, 4.8), -3.0 - z, z - (bh + 2.0 + 0.8 * (y - bd - 6.5))
        )
        lamina = sdf.plate(z, y, x, (bd + 8.0, cw + 1.0), (ym + 1.0, 0.0), 2.6, 1.5, 3.0, 5.5)
        tp = sdf.plate(z, y, x, (bd * 0.4, bw * 0.9), (bd * 0.55, bw + 9.0), 2.6, 1.5, 3.5, 2.8)
        foramen = sdf.capsule(z, y, x, (-6.0, bd * 0.45, bw + 3.0), (6.0, bd * 0.5, bw + 6.0), 2.4, 2.4)
        tip = sdf.ellipsoid(z, y, x, (9.0, ym + sp_len - 1.0, 3.2), (3.5, 3.0, 2.8))
        return sdf.union(sup_facet, pars, inf_facet, lamina, sdf.subtract(tp, foramen), tip)

    def posterior(z: Arr, y: Arr, x: Arr) -> Arr:
        spinous = sdf.union(
            sdf.capsule(z, y, x, (0.5, ym - 0.5, 0.0), (7.0, ym + sp_len, 0.0), 4.0, 3.0),
            sdf.capsule(z, y, x, (4.5, ym - 0.5, 0.0), (10.0, ym + sp_len - 1.5, 0.0), 3.6, 2.8),
        )
        return sdf.union(sdf.mirror_x(half_posterior, z, y, x), spinous)

    bounds = ((-bh - dens_len - 2.0, bh + 10.0), (-bd - 4.0, ym + sp_len + 5.0), (-bw - 15.0, bw + 15.0))
    dims = {
        "bw": bw,
        "bd": bd,
        "bh": bh,
        "dens_r": dens_r,
        "dens_len": dens_len,
        "canal": canal,
        "cw": cw,
        "sp_len": sp_len,
        "lm_y": bd + 6.5,
        "lm_x": cw + 3.5,
    }
    return VertebraShape("C2", {"body": body, "dens": dens, "posterior": posterior}, bounds, dims)


def atlas_c1(scale: float, rng: np.random.Generator) -> VertebraShape:
    """C1: a ring of anterior and posterior arches around lateral masses, with no body."""
    ry, rx, ant, post, lm_x, tp_len = _scaled(
        (18.0, 15.5, 2.3, 2.6, 14.0, 22.0), scale, rng.uniform(-0.05, 0.05, 6)
    )
    cy = -9.5 * scale + ry  # the ring's centre: the anterior arch lies just in front of the dens

    def anterior_arch(z: Arr, y: Arr, x: Arr) -> Arr:
        arch = sdf.intersect(sdf.ring(z, y, x, (0.0, cy, 0.0), ry, rx, ant, 4.2), y - (cy - ry * 0.35))
        tubercle = sdf.ellipsoid(z, y, x, (0.0, cy - ry - 1.0, 0.0), (5.8, 2.6, 4.0))
        return sdf.union(arch, tubercle)

    def half_lateral(z: Arr, y: Arr, x: Arr) -> Arr:
        mass = sdf.ellipsoid(z, y, x, (0.5, cy - ry * 0.45, lm_x), (6.5, 8.5, 5.8))
        tp = sdf.plate(
            z, y, x, (cy - ry * 0.4, lm_x + 3.0), (cy - ry * 0.35, lm_x + tp_len), 4.0, 0.0, 0.5, 3.2
        )
        foramen = sdf.elliptic_cylinder(
            z, y, x, (0.0, cy - ry * 0.38, lm_x + 8.5), 2.8, 2.8, 6.0, rounding=0.0
        )
        return sdf.union(mass, sdf.subtract(tp, foramen))

    def lateral_masses(z: Arr, y: Arr, x: Arr) -> Arr:
        return sdf.mirror_x(half_lateral, z, y, x)

    def posterior_arch(z: Arr, y: Arr, x: Arr) -> Arr:
        arch = sdf.intersect(sdf.ring(z, y, x, (0.0, cy, 0.0), ry, rx, post, 3.8), (cy + ry * 0.05) - y)
        tubercle = sdf.ellipsoid(z, y, x, (0.5, cy + ry + 1.0, 0.0), (5.0, 3.5, 5.0))
        return sdf.union(arch, tubercle)

    lateral = lm_x + tp_len + 5.0
    bounds = ((-9.0, 9.0), (cy - ry - 6.0, cy + ry + 7.0), (-lateral, lateral))
    dims = {"cy": cy, "ry": ry, "rx": rx, "lm_x": lm_x, "bh": 5.0, "bd": 0.0}
    return VertebraShape(
        "C1",
        {"anterior_arch": anterior_arch, "lateral_masses": lateral_masses, "posterior_arch": posterior_arch},
        bounds,
        dims,
    )


def make_shape(name: str, scale: float, rng: np.random.Generator) -> VertebraShape:
    """The shape of vertebra ``name`` (C1..C7, T1, T2) at a study's ``scale``."""
    if name == "C1":
        return atlas_c1(scale, rng)
    if name == "C2":
        return axis_c2(scale, rng)
    return subaxial(name, scale, rng)


# --- non-vertebral bone, in the local frame of a nearby vertebra (label 0 in the masks) ---------


def skull_base(scale: float, c1: VertebraShape) -> tuple[SdfFn, tuple]:
    """Occipital condyles over C1's lateral masses and the occipital bone around the foramen magnum."""
    cy, lm_x = c1.dims["cy"], c1.dims["lm_x"]

    def fn(z: Arr, y: Arr, x: Arr) -> Arr:
        condyles = sdf.mirror_x(
            lambda zz, yy, xx: sdf.ellipsoid(
                zz, yy, xx, (-10.5 * scale, cy - 0.45 * c1.dims["ry"], lm_x - 1.0), (4.5, 9.0, 5.0)
            ),
            z,
            y,
            x,
        )
        # The occiput rises towards the back and curves up at the sides (a bowl, not a flat plate).
        zc = -15.0 * scale - 0.45 * (y - cy) - np.float32(0.012) * x * x
        plate = sdf.extrude(
            sdf.subtract(
                sdf.ellipse2d(y, x, cy + 8.0, 0.0, 48.0 * scale, 52.0 * scale),
                sdf.ellipse2d(y, x, cy + 2.0, 0.0, 17.0 * scale, 14.5 * scale),
            ),
            z,
            zc,
            2.2,
            1.2,
        )
        plate = sdf.intersect(plate, (cy - 24.0 * scale) - y)  # nothing anterior of the clivus
        clivus = sdf.capsule(
            z,
            y,
            x,
            (-14.0 * scale, cy - 26.0 * scale, 0.0),
            (-40.0 * scale, cy - 40.0 * scale, 0.0),
            5.5,
            6.5,
        )
        return sdf.union(condyles, plate, clivus)

    bounds = ((-70.0 * scale, -4.0), (-60.0 * scale, 60.0 * scale), (-56.0 * scale, 56.0 * scale))
    return fn, bounds


def mandible(scale: float, open_: float) -> tuple[SdfFn, tuple]:
    """Mandibular body (a U opening backwards) and rami, in C2's frame; ``open_`` in [0, 1] tilts it."""
    cy = -34.0 * scale

    def fn(z: Arr, y: Arr, x: Arr) -> Arr:
        zc = 10.0 * scale - (0.25 + 0.15 * open_) * (y - cy)
        u = sdf.ring(z, y, x, (0.0, cy, 0.0), 30.0 * scale, 40.0 * scale, 3.0, 60.0, 1.0)
        body = sdf.intersect(u, np.abs(z - zc) - 9.0 * scale, (y - (cy + 4.0)) * -1.0)
        rami = sdf.mirror_x(
            lambda zz, yy, xx: sdf.plate(
                zz,
                yy,
                xx,
                (cy + 2.0, 39.0 * scale),
                (cy + 16.0 * scale, 42.0 * scale),
                3.0,
                -18.0 * scale,
                -18.0 * scale,
                24.0 * scale,
            ),
            z,
            y,
            x,
        )
        return sdf.union(body, rami)

    bounds = (
        (-48.0 * scale, 32.0 * scale),
        (cy - 36.0 * scale, cy + 24.0 * scale),
        (-48.0 * scale, 48.0 * scale),
    )
    return fn, bounds


def hyoid(scale: float) -> tuple[SdfFn, tuple]:
    """The hyoid bone, a small U in front of C3."""
    cy = -30.0 * scale

    def fn(z: Arr, y: Arr, x: Arr) -> Arr:
        u = sdf.ring(z, y, x, (1.0, cy + 12.0 * scale, 0.0), 12.0 * scale, 17.0 * scale, 1.7, 2.4)
        return sdf.intersect(u, y - (cy + 14.0 * scale))

    bounds = ((-4.0, 6.0), (cy - 4.0, cy + 16.0 * scale), (-22.0 * scale, 22.0 * scale))
    return fn, bounds


def first_rib(shape: VertebraShape, scale: float, drop: float) -> tuple[SdfFn, tuple]:
    """A rib from the transverse process of T1/T2, curving laterally and forwards as it descends."""
    lm_y, lm_x, tp = shape.dims["lm_y"], shape.dims["lm_x"], shape.dims["tp_len"]
    ry, rx = 34.0 * scale, 44.0 * scale + lm_x
    cy = lm_y + 6.0 - ry * 0.2

    def half(z: Arr, y: Arr, x: Arr) -> Arr:
        zc = -2.0 + drop * np.clip((lm_y + 6.0 - y) / (ry * 1.8), 0, 1)
        d2 = np.abs(sdf.ellipse2d(y, x, cy, 0.0, ry, rx)) - np.float32(3.0)
        d = sdf.extrude(d2, z, zc, 2.5, 1.2)
        return sdf.intersect(d, (lm_x + tp * 0.7) - x)

    bounds = ((-8.0, drop + 6.0), (cy - ry - 6.0, lm_y + 14.0), (-rx - 6.0, rx + 6.0))
    return (lambda z, y, x: sdf.mirror_x(half, z, y, x)), bounds


def disc(upper: VertebraShape, lower_gap: float) -> tuple[SdfFn, tuple]:
    """The intervertebral disc below ``upper`` (its frame), filling ``lower_gap`` mm of the axis."""
    bw, bd, bh = upper.dims["bw"], upper.dims["bd"], upper.dims["bh"]
    zc, hh = bh + lower_gap / 2.0, lower_gap / 2.0 + 1.0

    def fn(z: Arr, y: Arr, x: Arr) -> Arr:
        return sdf.elliptic_cylinder(z, y, x, (zc, 0.0, 0.0), bd * 0.95, bw * 0.92, hh, rounding=0.8)

    bounds = ((zc - hh - 1.0, zc + hh + 1.0), (-bd - 2.0, bd + 2.0), (-bw - 2.0, bw + 2.0))
    return fn, bounds


def thecal_sac(shape: VertebraShape, reach: float) -> tuple[SdfFn, tuple]:
    """Cerebrospinal fluid and cord in the canal, covering ``reach`` mm above and below the centre."""
    if shape.name == "C1":
        cy, r_ap, r_w = shape.dims["cy"] + 3.0, 8.0, 9.5
    else:
        cy, r_ap, r_w = (
            shape.dims["bd"] + shape.dims["canal"] * 0.5,
            shape.dims["canal"] * 0.42,
            shape.dims["cw"] * 0.78,
        )

    def fn(z: Arr, y: Arr, x: Arr) -> Arr:
        return sdf.elliptic_cylinder(z, y, x, (0.0, cy, 0.0), r_ap, r_w, reach, rounding=0.0)

    bounds = ((-reach - 1.0, reach + 1.0), (cy - r_ap - 1.0, cy + r_ap + 1.0), (-r_w - 1.0, r_w + 1.0))
    return fn, bounds


def prevertebral_swelling(shape: VertebraShape, scale: float) -> tuple[SdfFn, tuple]:
    """Soft tissue swollen by a haematoma in front of a fractured vertebra (its frame)."""
    if shape.name == "C1":
        front, half_w = shape.dims["cy"] - shape.dims["ry"] - 2.3, 10.0
    else:
        front, half_w = -shape.dims["bd"], shape.dims["bw"] + 2.0
    c = (0.0, front - 5.0 * scale, 0.0)
    r = (shape.dims["bh"] + 6.0, 6.0 * scale, half_w)

    def fn(z: Arr, y: Arr, x: Arr) -> Arr:
        return sdf.ellipsoid(z, y, x, c, r)

    bounds = ((-r[0] - 1.0, r[0] + 1.0), (c[1] - r[1] - 1.0, c[1] + r[1] + 1.0), (-r[2] - 1.0, r[2] + 1.0))
    return fn, bounds
