"""Stage-1 data: the reduced grid, label resampling, 2.5D stacks and level-safe augmentation."""

from __future__ import annotations

import numpy as np
import torch

from cspine.ct.seg.dataset import (
    augment_batch,
    class_map,
    prepare_study,
    reduced_grid,
    resample_image,
    resample_mask,
    sample_slices,
    stack_indices,
)
from cspine.ct.seg.predict import to_full_grid
from cspine.models.unet2p5d import SegConfig

CFG = SegConfig(backbone="resnet18", image_size=32, z_spacing=2.0, decoder_channels=(8, 8, 8, 8, 8))


def test_reduced_grid_and_back() -> None:
    grid = reduced_grid((21, 64, 48), 1.0, CFG)  # 20 mm of slices at 1 mm -> 11 slices at 2 mm
    assert grid.n_slices == 11
    np.testing.assert_allclose(grid.z_positions, np.arange(11) * 2.0)
    labels = np.zeros((21, 64, 48), np.uint8)
    labels[4:13, 16:48, 12:36] = 3
    small = resample_mask(labels, grid, CFG)
    assert small.shape == (11, 32, 32)
    back = to_full_grid(small, grid)
    assert back.shape == labels.shape
    # nearest-neighbour round trip: exact away from the block's boundary
    assert (back[6:11, 18:46, 14:34] == 3).all() and (back[:3] == 0).all() and (back[15:] == 0).all()
    assert np.mean(back == labels) > 0.97


def test_resample_image_windows_and_interpolates() -> None:
    hu = np.zeros((3, 32, 32), np.int16)
    hu[0], hu[1], hu[2] = -500, 400, 1300  # 0, 0.5, 1 in the bone window
    img = resample_image(hu, reduced_grid(hu.shape, 1.0, SegConfig(image_size=32, z_spacing=0.5)),
                         SegConfig(image_size=32, z_spacing=0.5))
    np.testing.assert_allclose(img[:, 0, 0], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)


def test_class_map_drops_thoracic_unless_t1() -> None:
    lab = np.array([0, 1, 7, 8, 9, 19], np.uint8)
    assert class_map(lab, CFG).tolist() == [0, 1, 7, 0, 0, 0]
    assert class_map(lab, SegConfig(include_t1=True)).tolist() == [0, 1, 7, 8, 0, 0]


def test_stack_indices_clamped() -> None:
    assert stack_indices(3, 3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]


def test_sampling_prefers_vertebra_slices() -> None:
    hu = np.zeros((40, 32, 32), np.int16)
    lab = np.zeros_like(hu, dtype=np.uint8)
    lab[30:34, 10:20, 10:20] = 5
    st = prepare_study("a", hu, 2.0, lab, CFG)
    idx = sample_slices([st], 400, np.random.default_rng(0), foreground_share=0.8)
    fg = np.isin(idx[:, 1], st.foreground_slices)
    assert 0.75 < fg.mean() < 0.95


def test_augmentation_keeps_levels_and_slice_order() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(8, 32, 32, dtype=torch.long)
    y[:, 8:24, 10:22] = 4
    # each channel a different constant inside the object: a z-flip would reverse them
    x = torch.zeros(8, 3, 32, 32)
    for c in range(3):
        x[:, c][y > 0] = 0.2 + 0.3 * c
    xa, ya = augment_batch(x, y, g)
    assert set(ya.unique().tolist()) <= {0, 4}  # no label invented or mixed by interpolation
    inside = ya == 4
    assert inside.sum() > 0.7 * (y == 4).sum()
    means = [xa[:, c][inside].mean().item() for c in range(3)]
    assert means[0] < means[1] < means[2]
    # the image moved with the labels: the object's pixels are bright where the label is
    assert xa[:, 2][inside].mean() > 3 * xa[:, 2][~inside].mean()
