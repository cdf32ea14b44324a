"""Stage-2 crops: the right slices, the mask channel, slice indices that map back to the volume."""

from __future__ import annotations

import numpy as np
import pytest

from cspine.ct.cls.crops import extract_crops, jitter_geometry
from cspine.ct.cls.dataset import crop_slice_targets
from cspine.ct.seg.postprocess import Segmentation
from cspine.io.volume import volume_from_arrays
from cspine.labels import BONE_WINDOW, VERTEBRAE, window_bounds
from cspine.models.vertebra_classifier import ClsConfig

CFG = ClsConfig(backbone="test_efficientnet", n_slices=8, k=3, image_size=24, z_margin=0.0, xy_margin=0.0,
                mask_blur=0.0)


def _stack() -> tuple[np.ndarray, np.ndarray]:
    """Seven blocks down z; each slice's HU encodes its own index (so crops reveal their source)."""
    z, y, x = 80, 40, 48
    hu = np.full((z, y, x), -1000, np.int16)
    labels = np.zeros((z, y, x), np.uint8)
    for i in range(6):  # C7 absent
        z0 = 2 + i * 12
        labels[z0:z0 + 10, 10 + i:26 + i, 12:36] = i + 1
    for k in range(z):
        hu[k][labels[k] > 0] = -500 + 20 * k  # distinct per slice, inside the bone window
    return hu, labels


def _hu_of(value: float) -> float:
    low, high = window_bounds(BONE_WINDOW)
    return low + value * (high - low)


def test_crops_only_present_vertebrae_with_shapes() -> None:
    hu, labels = _stack()
    crops = extract_crops(volume_from_arrays(hu), Segmentation.from_labels(labels), CFG)
    assert list(crops) == list(VERTEBRAE[:6])
    for crop in crops.values():
        assert crop.array.shape == (8, 4, 24, 24)
        assert crop.array.dtype == np.float32
        assert crop.slice_indices.shape == (8,)
        assert 0.0 <= crop.array.min() and crop.array.max() <= 1.0


def test_slice_indices_cover_the_vertebra_and_map_back() -> None:
    hu, labels = _stack()
    crops = extract_crops(volume_from_arrays(hu), Segmentation.from_labels(labels), CFG)
    c3 = crops["C3"]
    assert c3.z_range == (26, 36)
    assert c3.slice_indices[0] == 26 and c3.slice_indices[-1] == 35
    assert np.all(np.diff(c3.slice_indices) >= 0)
    # The centre channel (k // 2) of crop slice j shows volume slice slice_indices[j]: its bone HU
    # (encoded per slice) must match, read in the middle of the box.
    mid = CFG.image_size // 2
    for j, z in enumerate(c3.slice_indices):
        assert _hu_of(c3.array[j, 1, mid, mid]) == pytest.approx(-500 + 20 * int(z), abs=8)
        # the neighbours are the adjacent slices (clamped at the volume edge)
        assert _hu_of(c3.array[j, 0, mid, mid]) < _hu_of(c3.array[j, 2, mid, mid]) or z in (26, 35)


def test_mask_channel_is_the_vertebra_mask() -> None:
    hu, labels = _stack()
    seg = Segmentation.from_labels(labels)
    crop = extract_crops(volume_from_arrays(hu), seg, CFG)["C2"]
    mask = crop.array[:, 3]
    # no margin: the square box is as wide as the 24-pixel side; the 16 rows of the mask fill 2/3
    assert mask.mean() == pytest.approx(16 / 24, abs=0.02)
    assert mask[:, 12, :].min() == 1.0  # the centre row lies inside the mask across the box
    assert mask[:, :4, 12].max() == 0.0  # the top rows are above it
    with_margin = ClsConfig(**{**CFG.__dict__, "xy_margin": 0.25, "z_margin": 0.3})
    crop = extract_crops(volume_from_arrays(hu), seg, with_margin)["C2"]
    m = crop.array[:, 3]
    assert 0.05 < m.mean() < 0.4
    assert m[0].max() == 0.0 and m[-1].max() == 0.0  # the z-margin slices lie outside C2
    assert m[:, 0, 0].max() == 0.0  # corners are outside the vertebra
    no_mask = ClsConfig(**{**CFG.__dict__, "use_mask_channel": False})
    assert extract_crops(volume_from_arrays(hu), seg, no_mask)["C2"].array.shape[1] == 3


def test_blurred_mask_channel_marks_the_vertebra_but_not_a_fracture_gap() -> None:
    # A true mask follows a fracture: here a 1-pixel gap splits C2's mask. The sharp channel shows the
    # gap; the blurred one (the default) must not, yet must still say where the vertebra is.
    hu, labels = _stack()
    labels[14:24, 11:27, 24] = 0
    seg = Segmentation.from_labels(labels)
    sharp = extract_crops(volume_from_arrays(hu), seg, CFG)["C2"].array[:, 3]
    cfg = ClsConfig(**{**CFG.__dict__, "mask_blur": ClsConfig().mask_blur, "xy_margin": 0.25})
    soft = extract_crops(volume_from_arrays(hu), seg, cfg)["C2"].array[:, 3]
    row, gap, beside = 12, 12, 9  # crop pixels: the centre row, the gap column, a column next to it
    assert sharp[4, row, gap] < 0.6 * sharp[4, row, beside]
    assert soft[4, row, gap] > 0.9 * soft[4, row, beside]
    assert soft[4, row, gap] > 3 * soft[4, 0, 0]  # the vertebra still stands out from the corner


def test_jitter_geometry_moves_edges_within_the_share_asked() -> None:
    hu, labels = _stack()
    seg = Segmentation.from_labels(labels)
    assert jitter_geometry(seg, np.random.default_rng(0), 0.0) is seg
    moved = [jitter_geometry(seg, np.random.default_rng(s), 0.2) for s in range(20)]
    assert all(m.labels is seg.labels for m in moved)  # geometry only; the label map is shared
    assert not moved[0].vertebrae["C7"].present  # absent stays absent
    changed = 0
    for m in moved:
        for name in VERTEBRAE[:6]:
            a, b = seg.vertebrae[name], m.vertebrae[name]
            ext = (a.z_range[1] - a.z_range[0], a.box[1] - a.box[0], a.box[3] - a.box[2])
            for i, e in enumerate((*a.z_range, *a.box)):
                f = (*b.z_range, *b.box)[i]
                assert abs(f - e) <= 0.2 * ext[i // 2] + 0.5
                changed += f != e
            assert b.z_range[1] > b.z_range[0] and b.box[1] > b.box[0] and b.box[3] > b.box[2]
    assert changed > 0.5 * 20 * 6 * 6


def test_box_outside_volume_is_padded_with_air() -> None:
    hu, labels = _stack()
    labels[:, :, :] = 0
    labels[10:20, 0:8, 0:8] = 4  # touches the corner: a margin reaches outside
    hu[10:20, 0:8, 0:8] = 1000
    cfg = ClsConfig(**{**CFG.__dict__, "xy_margin": 0.5})
    crop = extract_crops(volume_from_arrays(hu), Segmentation.from_labels(labels), cfg)["C4"]
    assert crop.box[0] < 0 and crop.box[2] < 0
    assert crop.array[:, :3, 0, 0].max() == 0.0  # air, windowed to 0


def test_slice_targets_boxes_and_pseudo_labels() -> None:
    hu, labels = _stack()
    seg = Segmentation.from_labels(labels)
    crop = extract_crops(volume_from_arrays(hu), seg, CFG)["C3"]
    assert crop_slice_targets(crop, seg, False, None).sum() == 0
    pseudo = crop_slice_targets(crop, seg, True, None)
    assert pseudo.max() == 1.0 and pseudo.min() > 0  # the block has the same area on every slice
    boxed = crop_slice_targets(crop, seg, True, frozenset({28, 29, 100}))
    assert set(crop.slice_indices[boxed > 0].tolist()) <= {28, 29}
    assert boxed.sum() >= 1


def test_shape_mismatch_is_an_error() -> None:
    hu, labels = _stack()
    with pytest.raises(ValueError, match="shape"):
        extract_crops(volume_from_arrays(hu[:-1]), Segmentation.from_labels(labels), CFG)
