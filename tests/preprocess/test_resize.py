"""The numpy bilinear resize every runtime shares equals PyTorch's interpolate (antialiased when shrinking).

Tolerance: 1e-4 of the value range. PyTorch computes the filter taps in float32, this code in float64, so
a tap of near-zero weight at a window's edge can be in one and not the other (seen: 4e-5 of the range on
one pixel in 100,000); all other pixels agree to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cspine.preprocess.resize import resize_bilinear, resize_taps


@pytest.mark.parametrize(("shape", "size"), [
    ((3, 512, 512), (256, 256)),   # stage 1's 2x shrink
    ((4, 87, 87), (64, 64)),       # a crop box shrunk
    ((2, 40, 40), (64, 64)),       # a crop box enlarged (plain bilinear)
    ((2, 300, 200), (224, 224)),   # a radiograph: one axis shrinks, the other grows
    ((1, 7, 5), (3, 11)),
])
def test_equals_torch_interpolate(shape, size):
    x = np.random.default_rng(0).normal(0, 500, shape).astype(np.float32)
    t = torch.from_numpy(x)[:, None]
    antialias = shape[1] > size[0] or shape[2] > size[1]
    ref = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=antialias)[:, 0].numpy()
    got = resize_bilinear(x, size)
    assert got.dtype == np.float32 and got.shape == (shape[0], *size)
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(x).max())


def test_taps_sum_to_one_and_same_size_is_a_copy():
    for n_in, n_out in ((512, 256), (40, 64), (3, 1), (1, 5)):
        idx, w = resize_taps(n_in, n_out)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        assert idx.min() >= 0 and idx.max() < n_in
    x = np.ones((1, 4, 4), np.float32)
    out = resize_bilinear(x, 4)
    assert out is not x and np.array_equal(out, x)
