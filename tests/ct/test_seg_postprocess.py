"""Stage-1 post-processing: one component per level, level order, vertebra boxes."""

from __future__ import annotations

import numpy as np

from cspine.ct.seg.postprocess import (
    Segmentation,
    enforce_level_order,
    largest_component_per_level,
    postprocess,
)


def _column(levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)) -> np.ndarray:
    lab = np.zeros((7 * 4 + 4, 12, 12), np.uint8)
    for i, v in enumerate(levels):
        lab[2 + 4 * i: 5 + 4 * i, 3:9, 3:9] = v  # 3 slices per level, a gap slice between
    return lab


def test_spurious_blob_removed() -> None:
    lab = _column()
    lab[0, 0:2, 0:2] = 4  # a stray "C4" at the top
    out, removed = largest_component_per_level(lab)
    assert removed == {4: 4}
    assert not out[0].any()
    np.testing.assert_array_equal(out, _column())
    assert lab[0, 0, 0] == 4  # the input is not modified


def test_swapped_levels_repaired_and_flagged() -> None:
    swapped = _column((1, 2, 4, 3, 5, 6, 7))
    out, warnings = enforce_level_order(swapped)
    np.testing.assert_array_equal(out, _column())
    assert len(warnings) == 1 and "C3->C4" in warnings[0] and "C4->C3" in warnings[0]


def test_order_kept_when_levels_missing() -> None:
    lab = _column((1, 2, 3, 5, 6, 7, 0))  # C4 not found: order is fine, nothing relabelled
    out, warnings = postprocess(lab)
    assert warnings == []
    np.testing.assert_array_equal(out, lab)


def test_from_labels_boxes() -> None:
    lab = _column()
    lab[2, 3, 3] = 9  # a thoracic label is ignored by the C1..C7 boxes
    seg = Segmentation.from_labels(lab)
    c3 = seg.vertebrae["C3"]
    assert c3.present and c3.z_range == (10, 13) and c3.box == (3, 9, 3, 9)
    assert c3.centroid == (11.0, 5.5, 5.5) and c3.voxels == 3 * 36
    assert seg.present == ("C1", "C2", "C3", "C4", "C5", "C6", "C7")
    empty = Segmentation.from_labels(np.zeros((3, 4, 4), np.uint8))
    assert not any(b.present for b in empty.vertebrae.values())
    assert empty.to_dict()["vertebrae"]["C1"]["present"] is False
