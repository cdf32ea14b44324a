"""The stage-1 grid: a volume onto the U-Net's reduced grid and labels back, 2.5D stacks."""

from __future__ import annotations

import numpy as np

from cspine.ct.seg.dataset import resample_mask
from cspine.ct.seg.grid import reduced_grid, resample_image, stack_indices, to_full_grid
from cspine.models.unet2p5d import SegConfig

CFG = SegConfig(backbone="resnet18", image_size=32, z_spacing=2.0, decoder_channels=(8, 8, 8, 8, 8))


def test_reduced_grid_and_back() -> None:
    grid = reduced_grid((21, 64, 48), (1.0, 1.0, 1.0), CFG)  # 20 mm of slices at 1 mm -> 11 slices at 2 mm
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
    img = resample_image(hu, reduced_grid(hu.shape, (1.0, 1.0, 1.0), SegConfig(image_size=32, z_spacing=0.5)),
                         SegConfig(image_size=32, z_spacing=0.5))
    np.testing.assert_allclose(img[:, 0, 0], [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)


FIELD = SegConfig(backbone="resnet18", image_size=32, z_spacing=2.0, field_mm=64.0,
                  decoder_channels=(8, 8, 8, 8, 8))


def _neck(n_px: int, px_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A 'vertebra' (30 x 20 mm bone block, label 3) in the centre of a slice of n_px pixels of px_mm."""
    hu = np.full((5, n_px, n_px), -1000, np.int16)
    lab = np.zeros(hu.shape, np.uint8)
    c = n_px / 2
    r = slice(int(round(c - 10 / px_mm)), int(round(c + 10 / px_mm)))
    q = slice(int(round(c - 15 / px_mm)), int(round(c + 15 / px_mm)))
    hu[:, r, q] = 1000
    lab[:, r, q] = 3
    return hu, lab


def test_field_makes_the_model_input_independent_of_the_scanner_field_of_view() -> None:
    # The same anatomy reconstructed with a 100 mm field at 0.5 mm and a 300 mm field at 1 mm (x3 wider,
    # so the bone is 6x smaller in pixels of the whole slice): the model input is the same image.
    small = {}
    for n_px, px in ((200, 0.5), (300, 1.0)):
        hu, lab = _neck(n_px, px)
        grid = reduced_grid(hu.shape, (2.0, px, px), FIELD)
        img, m = resample_image(hu, grid, FIELD), resample_mask(lab, grid, FIELD)
        assert img.shape[1:] == m.shape[1:] == (32, 32)
        small[px] = img, m
        # bone: 20 x 30 mm of a 64 mm field -> 10 x 15 of 32 reduced pixels
        assert (m[0] == 3).sum() == 150
        back = to_full_grid(m, grid)
        assert back.shape == lab.shape and np.mean(back == lab) > 0.99
    np.testing.assert_allclose(small[0.5][0], small[1.0][0], atol=0.05)
    # Without a field, the whole slice is resized: the same bone covers 6x fewer reduced pixels.
    hu, lab = _neck(300, 1.0)
    whole = resample_mask(lab, reduced_grid(hu.shape, (2.0, 1.0, 1.0), CFG), CFG)
    assert (whole[0] == 3).sum() < 30


def test_field_larger_than_the_image_is_air_and_labels_outside_it_are_background() -> None:
    hu, lab = _neck(40, 1.0)  # a 40 mm image inside the 64 mm field: padded with air
    grid = reduced_grid(hu.shape, (2.0, 1.0, 1.0), FIELD)
    img = resample_image(hu, grid, FIELD)
    assert img[0, 0, 0] == 0.0 and img[0, 16, 16] > 0.8  # 1000 HU in the bone window
    hu, lab = _neck(200, 1.0)  # a 200 mm image, of which the field keeps the central 64 mm
    lab[:, :20, :20] = 5  # a label far outside the field
    grid = reduced_grid(hu.shape, (2.0, 1.0, 1.0), FIELD)
    back = to_full_grid(resample_mask(lab, grid, FIELD), grid)
    assert (back[:, :60, :] == 0).all() and (back[:, 100, 100] == 3).all()


def test_stack_indices_clamped() -> None:
    assert stack_indices(3, 3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
