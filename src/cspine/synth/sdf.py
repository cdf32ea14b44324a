"""Signed distance primitives (millimetres, float32, negative inside) for the phantom's anatomy.

Every function takes coordinate arrays ``z, y, x`` (broadcastable, in a shape's local frame) and
returns an approximate signed distance. Only elementwise arithmetic and ``sqrt`` are used, so a
value depends on its own voxel's coordinates alone and is bit-identical whether a voxel is rendered
as part of the whole volume or of a small patch (the fracture mask relies on this).
"""

from __future__ import annotations

import numpy as np

Arr = np.ndarray
_EPS = np.float32(1e-6)


def _f(v: float) -> np.float32:
    return np.float32(v)


def clip01(a: Arr) -> Arr:
    """``clip(a, 0, 1)`` in place (much faster than ``np.clip`` on large float32 arrays)."""
    np.maximum(a, 0, out=a)
    return np.minimum(a, 1, out=a)


def ellipse2d(y: Arr, x: Arr, cy: float, cx: float, ry: float, rx: float) -> Arr:
    """Approximate signed distance to an axis-aligned ellipse in the (y, x) plane."""
    dy = (y - _f(cy)) / _f(ry)
    dx = (x - _f(cx)) / _f(rx)
    k0 = np.sqrt(dy * dy + dx * dx)
    dy2 = dy / _f(ry)
    dx2 = dx / _f(rx)
    k1 = np.sqrt(dy2 * dy2 + dx2 * dx2) + _EPS
    return k0 * (k0 - _f(1.0)) / k1


def ellipsoid(z: Arr, y: Arr, x: Arr, c: tuple[float, float, float], r: tuple[float, float, float]) -> Arr:
    """Approximate signed distance to an axis-aligned ellipsoid (centre ``c``, radii ``r``)."""
    dz = (z - _f(c[0])) / _f(r[0])
    dy = (y - _f(c[1])) / _f(r[1])
    dx = (x - _f(c[2])) / _f(r[2])
    k0 = np.sqrt(dz * dz + dy * dy + dx * dx)
    dz2, dy2, dx2 = dz / _f(r[0]), dy / _f(r[1]), dx / _f(r[2])
    k1 = np.sqrt(dz2 * dz2 + dy2 * dy2 + dx2 * dx2) + _EPS
    return k0 * (k0 - _f(1.0)) / k1


def extrude(d2: Arr, z: Arr, zc: Arr | float, half_height: float, rounding: float = 0.0) -> Arr:
    """Extrude a 2-D distance ``d2`` along z between ``zc -+ half_height``, with rounded edges."""
    r = _f(rounding)
    a = d2 + r
    b = np.abs(z - zc) - _f(half_height) + r
    outside = np.sqrt(np.maximum(a, 0) ** 2 + np.maximum(b, 0) ** 2)
    return outside + np.minimum(np.maximum(a, b), 0) - r


def elliptic_cylinder(
    z: Arr,
    y: Arr,
    x: Arr,
    c: tuple[float, float, float],
    ry: float,
    rx: float,
    half_height: float,
    rounding: float = 1.0,
) -> Arr:
    """A vertical elliptic cylinder (vertebral bodies, discs) with rounded rims."""
    return extrude(ellipse2d(y, x, c[1], c[2], ry, rx), z, _f(c[0]), half_height, rounding)


def segment2d(y: Arr, x: Arr, a: tuple[float, float], b: tuple[float, float]) -> tuple[Arr, Arr]:
    """Distance to a 2-D segment a->b in (y, x) and the position ``h`` in [0, 1] along it."""
    by, bx = b[0] - a[0], b[1] - a[1]
    py, px = y - _f(a[0]), x - _f(a[1])
    h = clip01((py * _f(by) + px * _f(bx)) * _f(1.0 / (by * by + bx * bx)))
    qy, qx = py - _f(by) * h, px - _f(bx) * h
    return np.sqrt(qy * qy + qx * qx), h


def plate(
    z: Arr,
    y: Arr,
    x: Arr,
    a: tuple[float, float],
    b: tuple[float, float],
    radius: float,
    z_a: float,
    z_b: float,
    half_height: float,
    rounding: float = 0.8,
) -> Arr:
    """A 2-D capsule a->b in the axial plane, extruded in z around a centre sloping from z_a to z_b.

    Laminae, pedicles and transverse processes are plates like this.
    """
    d, h = segment2d(y, x, a, b)
    zc = _f(z_a) + _f(z_b - z_a) * h
    return extrude(d - _f(radius), z, zc, half_height, min(rounding, radius * 0.9, half_height * 0.9))


def capsule(
    z: Arr, y: Arr, x: Arr, a: tuple[float, float, float], b: tuple[float, float, float], ra: float, rb: float
) -> Arr:
    """A segment a->b with a radius tapering from ``ra`` to ``rb`` (spinous processes, dens)."""
    bz, by, bx = (b[i] - a[i] for i in range(3))
    pz, py, px = z - _f(a[0]), y - _f(a[1]), x - _f(a[2])
    h = clip01((pz * _f(bz) + py * _f(by) + px * _f(bx)) * _f(1.0 / (bz * bz + by * by + bx * bx)))
    qz, qy, qx = pz - _f(bz) * h, py - _f(by) * h, px - _f(bx) * h
    return np.sqrt(qz * qz + qy * qy + qx * qx) - (_f(ra) + _f(rb - ra) * h)


def ring(
    z: Arr,
    y: Arr,
    x: Arr,
    c: tuple[float, float, float],
    ry: float,
    rx: float,
    thickness: float,
    half_height: float,
    rounding: float = 1.0,
) -> Arr:
    """An elliptic ring (tube of half-thickness ``thickness``) in the axial plane (C1 arches, mandible)."""
    d2 = np.abs(ellipse2d(y, x, c[1], c[2], ry, rx)) - _f(thickness)
    return extrude(d2, z, _f(c[0]), half_height, min(rounding, thickness * 0.9, half_height * 0.9))


def union(*ds: Arr) -> Arr:
    out = ds[0]
    for d in ds[1:]:
        out = np.minimum(out, d)
    return out


def subtract(a: Arr, b: Arr) -> Arr:
    """``a`` minus ``b``."""
    return np.maximum(a, -b)


def intersect(*ds: Arr) -> Arr:
    out = ds[0]
    for d in ds[1:]:
        out = np.maximum(out, d)
    return out


def mirror_x(fn, z: Arr, y: Arr, x: Arr) -> Arr:  # noqa: ANN001 - callable(z, y, x) -> Arr
    """A bilateral structure: ``fn`` defines the left (+x) half, evaluated on both sides."""
    return fn(z, y, np.abs(x))
