"""Rendering a laid-out phantom (:mod:`cspine.synth.layout`) into HU and labels, region by region.

Soft tissue first (:mod:`cspine.synth.soft_tissue`), then every item painted over it from its signed
distance: the distance gives partial-volume edges, and for bone a cortical shell over textured
cancellous bone. A light in-plane blur (reconstruction kernel) and Gaussian noise finish the image.
Any region renders the same voxels as the whole volume (away from the blur at its own edge), which
is how the phantom finds the voxels a fracture changed.
"""

from __future__ import annotations

import numpy as np

from cspine.labels import HU_MAX, HU_MIN
from cspine.synth import fractures as fx
from cspine.synth import sdf
from cspine.synth.layout import Item, Region, StudyLayout, axis_mm, intersect
from cspine.synth.soft_tissue import soft_tissue

Arr = np.ndarray
f32 = np.float32


def _local_coords(item: Item, r: Region, spacing: tuple[float, float, float]) -> tuple[Arr, Arr, Arr]:
    dz = (axis_mm(r[0], r[1], spacing[0]) - f32(item.center[0]))[:, None, None]
    dy = (axis_mm(r[2], r[3], spacing[1]) - f32(item.center[1]))[None, :, None]
    dx = (axis_mm(r[4], r[5], spacing[2]) - f32(item.center[2]))[None, None, :]
    m = item.rot.astype(np.float32)
    lz = dz * m[0, 0] + dy * m[1, 0] + dx * m[2, 0]
    ly = dz * m[0, 1] + dy * m[1, 1] + dx * m[2, 1]
    lx = dz * m[0, 2] + dy * m[1, 2] + dx * m[2, 2]
    return lz, ly, lx


def _paint(st: StudyLayout, img: Arr, labels: Arr | None, r: Region) -> None:
    """Paint every item intersecting region ``r`` into ``img`` (which covers exactly ``r``)."""
    sz, sy, sx = st.spacing
    aa = f32((sz + sy + sx) / 3.0)
    b = st.bone
    n_tex = st.texture.shape[0]
    for item in st.items:
        sub = intersect(item.region, r)
        if sub is None:
            continue
        lz, ly, lx = _local_coords(item, sub, st.spacing)
        fns = list(item.groups.values())
        ds = [fn(lz, ly, lx) for fn in fns]
        d = sdf.union(*ds)
        occ = sdf.clip01(f32(0.5) - d / aa)
        inside = (slice(sub[0] - r[0], sub[1] - r[0]), slice(sub[2] - r[2], sub[3] - r[2]),
                  slice(sub[4] - r[4], sub[5] - r[4]))
        view = img[inside]
        if item.bone:
            tex = st.texture[np.ix_(np.arange(sub[0], sub[1]) % n_tex, np.arange(sub[2], sub[3]) % n_tex,
                                    np.arange(sub[4], sub[5]) % n_tex)]
            canc = f32(b["cancellous"]) + f32(b["texture"]) * tex
            # The cortical shell follows each group's intact surface: a fracture's margins stay
            # cancellous (see cspine.synth.fractures); without a fracture d_cortex is d.
            d_cortex = d
            if any(isinstance(fn, fx.FracturedSdf) for fn in fns):
                d_cortex = sdf.union(*(fn.cortex(lz, ly, lx) if isinstance(fn, fx.FracturedSdf) else di
                                       for fn, di in zip(fns, ds, strict=True)))
            wc = sdf.clip01((d_cortex + f32(b["cortex_mm"])) / aa + f32(0.5))
            value = canc + (f32(b["cortex"]) - canc) * wc
        else:
            value = f32(item.value)
        view += (value - view) * occ
        if labels is not None and item.label:
            labels[inside][occ >= 0.5] = item.label


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


def render(st: StudyLayout, r: Region, noise: Arr | None, with_labels: bool) -> tuple[Arr, Arr | None]:
    """Render region ``r`` of ``st``: int16 HU (blurred, ``noise`` added: the region's part of the
    study's noise) and, when ``with_labels``, the uint8 label map (1..7 = C1..C7, 8..9 = T1..T2)."""
    img = soft_tissue(st, r)
    labels = np.zeros(img.shape, np.uint8) if with_labels else None
    _paint(st, img, labels, r)
    return _finish(img, noise, st.blur), labels
