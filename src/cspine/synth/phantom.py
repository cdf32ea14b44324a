"""One synthetic cervical spine CT study in memory: :func:`make_phantom`.

The study is laid out in millimetres (:mod:`cspine.synth.layout`: a lordotic spine C1..T2 with
per-study size, curvature, rotation and shift; neck soft tissue, fat, airway, thyroid, lung apices,
mandible, hyoid, skull base, the table) and rendered in the canonical orientation
(:mod:`cspine.synth.render`, over :mod:`cspine.synth.soft_tissue`: axis 0 superior -> inferior,
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
from cspine.labels import VERTEBRAE
from cspine.synth import fractures as fx
from cspine.synth.layout import layout_study
from cspine.synth.render import render

f32 = np.float32


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


def _boxes(mask: np.ndarray, min_voxels: int = 4) -> list[tuple[int, float, float, float, float]]:
    """The fracture boxes of a mask: ``(slice, x, y, width, height)`` on slices with enough voxels,
    one pixel of margin (RSNA's ``train_bounding_boxes.csv`` columns)."""
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
        n_slices: Number of axial slices; default :func:`cspine.synth.layout.default_slices` (200 at 256).
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
            probe = layout_study(seed, size, n_slices, [], None)
            px = probe.spacing[1]
            for level in fx.sample_levels(frng):
                fractures.append(fx.sample_fracture(frng, probe.shapes[level], px, fracture_kinds))
    st = layout_study(seed, size, n_slices, list(fractures), dislocation, swelling)
    st.tissue["table"] = float(table)
    noise_arr = None
    if noise:
        noise_arr = np.random.default_rng([seed, 2]).standard_normal(st.shape, dtype=np.float32)
        noise_arr *= f32(st.noise_sigma)
    full = (0, st.shape[0], 0, st.shape[1], 0, st.shape[2])
    hu, labels = render(st, full, noise_arr, True)
    assert labels is not None
    mask = np.zeros(st.shape, bool)
    if fractures:
        plain = layout_study(seed, size, n_slices, [], dislocation)
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
            ref, _ = render(plain, pad, sub_noise, False)
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
