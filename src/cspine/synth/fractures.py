"""Fractures of the phantom: which levels break (RSNA frequencies) and how a break changes the bone.

A fracture acts on one *group* of a vertebra's shape (body, posterior elements, dens, an arch of
C1) by rewriting that group's signed distance function:

* ``line``: a plane cuts the group; a gap of ``gap`` mm opens along it and the fragment on the
  plane's positive side moves by ``shift`` mm (0 for an undisplaced, subtle fracture).
* ``wedge``: the body loses ``wedge`` of its height anteriorly (compression), the posterior wall stays.

An acute fracture's margins are not corticated: the break exposes cancellous bone and interrupts the
cortex (the cortical break and step-off a radiologist looks for), whereas a smooth cortical rim around
a fragment is the sign of an old injury, an ossicle or a normal variant (os odontoideum against a dens
fracture). So a ``line`` fracture changes where the bone is but not where its cortex lies: the cortex
follows the intact surface of each fragment (moved with it), never the fracture plane.
:func:`apply` returns a :class:`FracturedSdf` whose ``cortex`` gives that distance; the renderer
(:mod:`cspine.synth.phantom`) draws the cortical shell from it. A ``wedge`` deforms the whole body,
endplate included, so its cortex follows the deformed surface.

Everything is in the vertebra's local frame (see :mod:`cspine.synth.anatomy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cspine.labels import RSNA_FRACTURE_COUNTS, RSNA_N_FRACTURED_PATIENTS, RSNA_N_STUDIES, VERTEBRAE
from cspine.synth.anatomy import SdfFn, VertebraShape
from cspine.synth.sdf import clip01

Arr = np.ndarray

#: Share of patients with at least one fractured vertebra (961 of 2,019 real studies, ~48%).
FRACTURE_RATE: float = RSNA_N_FRACTURED_PATIENTS / RSNA_N_STUDIES
#: Chance that a fractured patient has the level next to the first one broken too, and a second,
#: separate level; with these the mean is ~1.5 fractured levels per patient, as in RSNA (1,444 / 961).
P_ADJACENT, P_SEPARATE = 0.35, 0.15
#: Share of fractures that are subtle: a thin undisplaced line, or a mild wedge.
P_SUBTLE = 1.0 / 3.0


@dataclass(frozen=True)
class Fracture:
    """One fracture of one group of one vertebra (local frame, millimetres)."""

    level: str
    kind: str  # "line" or "wedge"
    group: str
    point: tuple[float, float, float] = (0.0, 0.0, 0.0)
    normal: tuple[float, float, float] = (1.0, 0.0, 0.0)
    gap: float = 0.0
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wedge: float = 0.0
    subtle: bool = False
    site: str = ""


class FracturedSdf:
    """A group's signed distance after a fracture (calling it), and the distance its cortex follows.

    ``cortex(z, y, x)`` is the signed distance to the group's surface *before* the break, taken in the
    frame of the fragment the point belongs to: the cortical shell stays on the outer surface and is
    interrupted at the fracture, instead of wrapping each fragment in a new cortex.
    """

    def __init__(self, occupancy: SdfFn, cortex: SdfFn) -> None:
        self.occupancy = occupancy
        self.cortex = cortex

    def __call__(self, z: Arr, y: Arr, x: Arr) -> Arr:
        return self.occupancy(z, y, x)


def cortex_of(fn: SdfFn) -> SdfFn:
    """The distance the cortex of group ``fn`` follows: its own, unless a fracture says otherwise."""
    return fn.cortex if isinstance(fn, FracturedSdf) else fn


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    v = np.asarray(v, dtype=np.float64)
    return tuple(float(a) for a in v / np.linalg.norm(v))  # type: ignore[return-value]


def apply(fn: SdfFn, fracture: Fracture, dims: dict[str, float]) -> SdfFn:
    """The signed distance function of a group after ``fracture``: for a line fracture a
    :class:`FracturedSdf` whose cortex ignores the fracture plane; a wedge deforms the cortex with the
    bone (see the module docstring)."""
    f32 = np.float32
    cortex = cortex_of(fn)
    if fracture.kind == "wedge":
        bh, bd, w = dims["bh"], dims["bd"], fracture.wedge

        def warp(z: Arr, y: Arr) -> Arr:
            # Height kept: 1 at the posterior wall, 1 - w at the anterior wall (superior endplate sinks).
            keep = f32(1.0) - f32(w) * clip01((f32(bd * 0.8) - y) * f32(1.0 / (1.8 * bd)))
            return f32(bh) - (f32(bh) - z) / keep

        def wedged(z: Arr, y: Arr, x: Arr) -> Arr:
            return fn(warp(z, y), y, x)

        # The whole body deforms, endplate included: its cortex follows the deformed surface (the plain
        # function when no earlier fracture moved the cortex away from the surface).
        if cortex is fn:
            return wedged
        return FracturedSdf(wedged, lambda z, y, x: cortex(warp(z, y), y, x))

    pz, py, px = (f32(v) for v in fracture.point)
    normal = np.asarray(fracture.normal, np.float64)
    if float(np.dot(fracture.shift, normal)) < 0:
        # The fragment on the plane's positive side is the one that moves. A shift towards the other
        # fragment would sink it into that bone (the union hides the overlap and closes the gap: an
        # invisible "displaced" fracture); moving the fragment on the other side instead keeps the
        # same shift and opens the gap (distraction + translation, as displaced fractures look).
        normal = -normal
    nz, ny, nx = (f32(v) for v in normal)
    sz, sy, sx = (f32(v) for v in fracture.shift)
    half_gap = f32(fracture.gap / 2.0)
    moved = any(v != 0 for v in fracture.shift)

    def broken(z: Arr, y: Arr, x: Arr) -> Arr:
        side = (z - pz) * nz + (y - py) * ny + (x - px) * nx
        staying = np.maximum(fn(z, y, x), side + half_gap)
        if not moved:
            return np.maximum(staying, half_gap - np.abs(side)) if half_gap > 0 else staying
        zm, ym, xm = z - sz, y - sy, x - sx
        side_m = (zm - pz) * nz + (ym - py) * ny + (xm - px) * nx
        fragment = np.maximum(fn(zm, ym, xm), half_gap - side_m)
        return np.minimum(staying, fragment)

    def broken_cortex(z: Arr, y: Arr, x: Arr) -> Arr:
        if not moved:
            return cortex(z, y, x)
        zm, ym, xm = z - sz, y - sy, x - sx
        on_fragment = (zm - pz) * nz + (ym - py) * ny + (xm - px) * nx > 0
        return np.where(on_fragment, cortex(zm, ym, xm), cortex(z, y, x))

    return FracturedSdf(broken, broken_cortex)


def fractured_groups(shape: VertebraShape, fractures: list[Fracture]) -> dict[str, SdfFn]:
    """The shape's groups with every fracture of this level applied (in order)."""
    groups = dict(shape.groups)
    for fr in fractures:
        if fr.level == shape.name:
            groups[fr.group] = apply(groups[fr.group], fr, shape.dims)
    return groups


def sample_levels(rng: np.random.Generator) -> list[str]:
    """Fractured levels of a fractured patient: the first by the RSNA frequencies, neighbours often too."""
    weights = np.array([RSNA_FRACTURE_COUNTS[v] for v in VERTEBRAE], dtype=np.float64)
    first = int(rng.choice(len(VERTEBRAE), p=weights / weights.sum()))
    levels = {first}
    if rng.random() < P_ADJACENT:
        step = 1 if rng.random() < 0.5 else -1
        nb = first + step if 0 <= first + step < len(VERTEBRAE) else first - step
        levels.add(nb)
    if rng.random() < P_SEPARATE:
        levels.add(int(rng.choice(len(VERTEBRAE), p=weights / weights.sum())))
    return [VERTEBRAE[i] for i in sorted(levels)]


def _line_params(
    rng: np.random.Generator,
    subtle: bool,
    pixel_mm: float,
    shift_dirs: np.ndarray,
) -> tuple[float, tuple[float, float, float]]:
    if subtle:
        return float(rng.uniform(0.6, 0.85) * pixel_mm), (0.0, 0.0, 0.0)
    gap = float(rng.uniform(1.0, 2.0) * pixel_mm)
    direction = shift_dirs[rng.integers(len(shift_dirs))] + rng.normal(0, 0.25, 3)
    return gap, tuple(float(v) for v in np.asarray(_unit(direction)) * rng.uniform(1.0, 3.0))  # type: ignore


def sample_fracture(
    rng: np.random.Generator, shape: VertebraShape, pixel_mm: float, kinds: tuple[str, ...] | None = None
) -> Fracture:
    """One fracture of vertebra ``shape``: the kind fits the level (dens and ring fractures up top).

    ``kinds`` restricts the choice (e.g. ``("wedge", "body", "dens")`` for fractures that a lateral
    radiograph shows); names: ``wedge``, ``body``, ``posterior``, ``dens``, ``ring``, ``spinous``.
    """
    name, d = shape.name, shape.dims
    subtle = bool(rng.random() < P_SUBTLE)
    options = {"C1": ["ring", "ring", "lateral"], "C2": ["dens", "dens", "body", "hangman"]}.get(
        name,
        ["body", "body", "wedge", "posterior", "posterior"] + (["spinous"] if name in ("C6", "C7") else []),
    )
    if kinds is not None:
        allowed = [k for k in options if k in kinds]
        options = (
            allowed
            or [
                k
                for k in ("wedge", "body", "dens", "ring")
                if k in kinds
                and (k != "dens" or name == "C2")
                and (k != "ring" or name == "C1")
                and (k not in ("wedge", "body") or name != "C1")
            ]
            or options
        )
    kind = options[int(rng.integers(len(options)))]
    axes = np.eye(3)
    if kind == "wedge":
        w = rng.uniform(0.12, 0.18) if subtle else rng.uniform(0.22, 0.45)
        return Fracture(name, "wedge", "body", wedge=float(w), subtle=subtle, site="body")
    if kind == "ring":
        group = "anterior_arch" if rng.random() < 0.5 else "posterior_arch"
        side = 1.0 if rng.random() < 0.5 else -1.0
        xo = side * rng.uniform(2.0, 9.0)
        yo = d["cy"] + (-1 if group == "anterior_arch" else 1) * d["ry"] * np.sqrt(
            max(0.0, 1 - (xo / d["rx"]) ** 2)
        )
        normal = _unit([rng.normal(0, 0.2), rng.normal(0, 0.3), 1.0])
        gap, shift = _line_params(rng, subtle, pixel_mm, np.array([[0, 0, side], [0, 0, side]]))
        return Fracture(
            name, "line", group, (0.0, float(yo), float(xo)), normal, gap, shift, subtle=subtle, site=group
        )
    if kind == "lateral":
        side = 1.0 if rng.random() < 0.5 else -1.0
        point = (0.0, d["cy"] - d["ry"] * 0.45 + rng.uniform(-3, 3), side * d["lm_x"])
        normal = _unit([rng.normal(0, 0.3), 1.0, rng.normal(0, 0.4)])
        gap, shift = _line_params(rng, subtle, pixel_mm, np.array([[0, 0, side], [0, 1, 0]]))
        return Fracture(
            name, "line", "lateral_masses", point, normal, gap, shift, subtle=subtle, site="lateral"
        )
    if kind == "dens":
        point = (-d["bh"] - rng.uniform(0.5, 3.5), 0.0, 0.0)
        normal = _unit([-1.0, rng.normal(0, 0.3), rng.normal(0, 0.15)])
        gap, shift = _line_params(rng, subtle, pixel_mm, np.array([[0, 1, 0], [0, -1, 0]]))
        return Fracture(name, "line", "dens", point, normal, gap, shift, subtle=subtle, site="dens")
    if kind == "hangman":
        point = (0.0, d["bd"] + rng.uniform(2.0, 4.0), 0.0)
        normal = _unit([rng.normal(0, 0.3), 1.0, rng.normal(0, 0.15)])
        gap, shift = _line_params(rng, subtle, pixel_mm, np.array([[0, 1, 0], [1, 0, 0]]))
        return Fracture(name, "line", "posterior", point, normal, gap, shift, subtle=subtle, site="pars")
    if kind == "body":
        point = tuple(float(v) for v in rng.uniform(-0.35, 0.35, 3) * np.array([d["bh"], d["bd"], d["bw"]]))
        pick = int(rng.integers(4))
        if pick == 0:  # sagittal split
            normal = _unit(axes[2] + rng.normal(0, 0.25, 3))
        elif pick == 1:  # coronal
            normal = _unit(axes[1] + rng.normal(0, 0.25, 3))
        elif pick == 2:  # oblique through the body in the sagittal plane (teardrop-like)
            normal = _unit(np.array([1.0, -1.0 if rng.random() < 0.5 else 1.0, 0.0]) + rng.normal(0, 0.2, 3))
        else:  # horizontal, through the body
            normal = _unit(axes[0] + rng.normal(0, 0.25, 3))
        gap, shift = _line_params(rng, subtle, pixel_mm, np.array([[0, 1, 0], [0, -1, 0], [1, 0, 0]]))
        return Fracture(name, "line", "body", point, normal, gap, shift, subtle=subtle, site="body")
    if kind == "spinous":
        point = (
            d.get("sp_drop", 6.0) * 0.5,
            d["bd"] + d["canal"] + d["sp_len"] * rng.uniform(0.35, 0.6),
            0.0,
        )
        normal = _unit([0.4, 1.0, 0.0] + rng.normal(0, 0.2, 3))
        gap, shift = _line_params(rng, subtle, pixel_mm, np.array([[1, 0, 0], [0, 1, 0]]))
        return Fracture(name, "line", "posterior", point, normal, gap, shift, subtle=subtle, site="spinous")
    # posterior: pedicle, articular pillar or lamina on one side
    side = 1.0 if rng.random() < 0.5 else -1.0
    site = ("pedicle", "pillar", "lamina")[int(rng.integers(3))]
    if site == "pedicle":
        point, normal = (0.0, d["bd"] + 2.0, side * (d["bw"] + 1.5)), [0.0, 1.0, 0.6 * side]
    elif site == "pillar":
        point, normal = (rng.uniform(-2, 2), d["lm_y"], side * d["lm_x"]), [0.8, rng.normal(0, 0.4), 0.3]
    else:
        point, normal = (0.0, d["bd"] + d["canal"] * 0.7, side * d["cw"] * 0.45), [0.0, -0.5, 1.0]
    gap, shift = _line_params(rng, subtle, pixel_mm, np.array([[1, 0, 0], [0, 1, 0], [0, 0, side]]))
    return Fracture(
        name,
        "line",
        "posterior",
        tuple(float(v) for v in point),  # type: ignore[arg-type]
        _unit(np.asarray(normal) + rng.normal(0, 0.15, 3)),
        gap,
        shift,
        subtle=subtle,
        site=site,
    )
