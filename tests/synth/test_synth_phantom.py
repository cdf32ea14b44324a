"""The phantom: anatomy labels, fractures that change exactly the voxels they claim, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from cspine.labels import LABEL_OF, RSNA_FRACTURE_COUNTS, VERTEBRAE
from cspine.synth import fractures as fx
from cspine.synth.phantom import make_phantom


@pytest.fixture(scope="module")
def normal():
    return make_phantom(11, size=96, n_slices=72, fracture=False)


def test_anatomy_labels_and_intensities(normal) -> None:
    p = normal
    assert p.hu.shape == (72, 96, 96) and p.hu.dtype == np.int16 and p.labels.dtype == np.uint8
    assert set(np.unique(p.labels)) == set(range(10))  # background, C1..C7, T1, T2
    # Cranio-caudal order along axis 0: each level's centre of mass lies below the previous one.
    centres = [np.nonzero(p.labels == lab)[0].mean() for lab in range(1, 10)]
    assert all(b > a for a, b in zip(centres, centres[1:], strict=False))
    # Bone is bright (cortex + cancellous), air outside the neck is air, soft tissue in between.
    for lab in range(1, 10):
        assert 250 < p.hu[p.labels == lab].mean() < 1200
    mid = p.hu.shape[0] // 2
    assert p.hu[mid, :3, :3].mean() < -900  # the corners of a mid-neck slice are outside the neck
    centre_col = p.hu[p.hu.shape[0] // 2, :, p.hu.shape[2] // 2]
    assert ((centre_col > -150) & (centre_col < 150)).sum() > 20  # muscle/fat of the neck
    # Anterior -> posterior: the bodies lie in front of the spinous processes.
    ys = np.nonzero(p.labels == 5)[1]
    z5 = int(np.median(np.nonzero(p.labels == 5)[0]))
    body_y = np.nonzero(p.labels[z5] == 5)[0].min()
    assert body_y < np.median(ys)
    assert not p.fracture_mask.any() and p.boxes == [] and not any(p.fractured.values())


def test_same_seed_is_the_same_study() -> None:
    a = make_phantom(5, size=48, n_slices=32)
    b = make_phantom(5, size=48, n_slices=32)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels) and a.fractured == b.fractured
    c = make_phantom(6, size=48, n_slices=32)
    assert not np.array_equal(a.hu, c.hu)


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_fracture_changes_exactly_its_voxels(seed: int) -> None:
    broken = make_phantom(seed, size=64, n_slices=56, fracture=True)
    intact = make_phantom(seed, size=64, n_slices=56, fracture=False)
    changed = broken.hu != intact.hu
    assert broken.fracture_mask.sum() > 0
    assert np.array_equal(changed, broken.fracture_mask)
    assert broken.patient_overall == 1 and sum(broken.fractured.values()) == len(
        {f.level for f in broken.fractures}
    )
    # The changed voxels are at the fractured vertebrae (the intact study's labels there).
    near = intact.labels[broken.fracture_mask]
    levels = {VERTEBRAE.index(f.level) + 1 for f in broken.fractures}
    assert np.isin(near[near > 0], list(levels)).mean() > 0.6  # coarse voxels: neighbours share some
    # A box on every slice where the fracture shows, enclosing the changed voxels of that slice.
    assert broken.boxes
    for k, x, y, w, h in broken.boxes:
        ys, xs = np.nonzero(broken.fracture_mask[k])
        assert x <= xs.min() and xs.max() < x + w and y <= ys.min() and ys.max() < y + h
    # Fractures show as lost bone (a gap) or moved bone: the mean HU change is not zero there.
    assert np.abs(broken.hu[changed].astype(float) - intact.hu[changed]).mean() > 20


def test_fracture_levels_follow_rsna_frequencies() -> None:
    rng = np.random.default_rng(0)
    draws = [fx.sample_levels(rng) for _ in range(3000)]
    counts = {v: sum(v in d for d in draws) for v in VERTEBRAE}
    assert max(counts, key=counts.get) == max(RSNA_FRACTURE_COUNTS, key=RSNA_FRACTURE_COUNTS.get)  # C7
    assert min(counts, key=counts.get) == "C3"
    assert 1.35 < np.mean([len(d) for d in draws]) < 1.65  # RSNA: 1,444 levels / 961 patients
    adjacent = np.mean(
        [
            any(b - a == 1 for a, b in zip(idx, idx[1:], strict=False))
            for idx in ([VERTEBRAE.index(v) for v in d] for d in draws)
        ]
    )
    assert adjacent > 0.25
    assert 0.45 < fx.FRACTURE_RATE < 0.5


def test_patient_fracture_rate_and_subtle_share() -> None:
    # make_phantom's own draw (fracture=None) follows the RSNA rate; ~1/3 of fractures are subtle.
    frng = [np.random.default_rng([s, 1]).random() < fx.FRACTURE_RATE for s in range(2000)]
    assert 0.44 < np.mean(frng) < 0.52
    from cspine.synth.anatomy import make_shape

    rng = np.random.default_rng(3)
    shape = make_shape("C5", 1.0, rng)
    subtle = [fx.sample_fracture(rng, shape, 0.7).subtle for _ in range(900)]
    assert 0.27 < np.mean(subtle) < 0.4


def test_small_phantoms_and_bad_sizes() -> None:
    p = make_phantom(2, size=32, n_slices=16, fracture=True)
    assert p.hu.shape == (16, 32, 32) and p.labels.max() >= 7
    with pytest.raises(ValueError, match="too small"):
        make_phantom(0, size=16)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_displaced_fragment_never_sinks_into_the_other_one(sign: float) -> None:
    """Whichever way the shift points along the fracture plane's normal, the gap stays open (wider,
    not closed): a displaced fracture must be visible, never hidden by the union of overlapping bone."""

    def slab(z, y, x):  # a 20 mm bone block centred on the origin
        return np.maximum(np.maximum(np.abs(z), np.abs(y)), np.abs(x)) - 10.0

    gap = 1.0
    f = fx.Fracture("C4", "line", "body", point=(0.0, 0.0, 0.0), normal=(0.0, 0.0, 1.0), gap=gap,
                    shift=(0.0, 0.0, sign * 2.0))
    broken = fx.apply(slab, f, {})
    x = np.linspace(-5, 5, 1001, dtype=np.float32)
    zeros = np.zeros_like(x)
    outside = broken(zeros, zeros, x) > 0  # along a line crossing the plane inside the block
    width = outside.sum() * (x[1] - x[0])
    assert width >= gap + 2.0 - 0.05  # the gap plus the 2 mm the fragment moved away


def _slab(z, y, x):  # a 20 mm bone block centred on the origin
    return np.maximum(np.maximum(np.abs(z), np.abs(y)), np.abs(x)) - 10.0


def test_fracture_margins_are_not_corticated() -> None:
    """An acute break exposes cancellous bone: beside the fracture plane the bone is deep inside its
    cortex distance (no new rim), while the outer surface keeps its cortex and moves with the fragment."""
    f = fx.Fracture("C4", "line", "body", point=(0.0, 0.0, 0.0), normal=(0.0, 0.0, 1.0), gap=1.0,
                    shift=(0.0, 0.0, 2.0))
    broken = fx.apply(_slab, f, {})
    cortex = fx.cortex_of(broken)
    z = np.zeros(1, np.float32)
    beside_gap = np.array([-0.7, 2.7], np.float32)  # just inside each fragment's fracture face
    assert np.all(np.abs(broken(z, z, beside_gap)) < 0.3)  # the bone ends there...
    assert np.all(cortex(z, z, beside_gap) < -5.0)  # ...but no cortex: that is cancellous bone
    # the moved fragment's outer face (x = 10 + 2) carries the cortex, the old face position does not
    assert abs(float(cortex(z, z, np.array([12.0], np.float32))[0])) < 1e-4
    assert float(cortex(z, z, np.array([10.0], np.float32))[0]) < -1.0
    # an undisplaced crack leaves the cortex where it was; unfractured groups keep their own distance
    crack = fx.apply(_slab, fx.Fracture("C4", "line", "body", normal=(0.0, 0.0, 1.0), gap=0.5), {})
    pts = np.linspace(-12, 12, 97, dtype=np.float32)
    np.testing.assert_array_equal(fx.cortex_of(crack)(z, z, pts), _slab(z, z, pts))
    assert fx.cortex_of(_slab) is _slab


def test_rendered_fracture_shows_a_cortical_break() -> None:
    """In a rendered phantom the bone along a line fracture's gap is cancellous: darker than the median
    of the intact vertebra's bone (the old rendering wrapped each fragment in a new bright cortex, and
    these margins were brighter than that median)."""
    from scipy import ndimage

    p = make_phantom(20, size=96, noise=False)
    q = make_phantom(20, size=96, noise=False, fractures=[])
    lines = [f for f in p.fractures if f.kind == "line"]
    assert len(lines) == 2
    for f in lines:
        lab = LABEL_OF[f.level]
        gap = ((q.hu.astype(np.int32) - p.hu) > 300) & (q.labels == lab)  # bone the break removed
        margin = ndimage.binary_dilation(gap) & ~gap & (p.labels == lab)
        assert margin.sum() > 10, f.level
        assert p.hu[margin].mean() < np.median(q.hu[q.labels == lab]) - 40, f.level
