"""The stage-1 grid: a volume onto the U-Net's reduced grid and labels back, 2.5D stacks."""

from __future__ import annotations

import numpy as np

from cspine.ct.seg.dataset import resample_mask
from cspine.ct.seg.grid import reduced_grid, resample_image, stack_indices, to_full_grid
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


def test_stack_indices_clamped() -> None:
    assert stack_indices(3, 3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
