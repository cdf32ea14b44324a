"""Stage-1 training data: label classes, slice sampling and level-safe augmentation."""

from __future__ import annotations

import numpy as np
import torch

from cspine.ct.seg.dataset import augment_batch, class_map, reduce_study, sample_slices
from cspine.models.unet2p5d import SegConfig

CFG = SegConfig(backbone="resnet18", image_size=32, z_spacing=2.0, decoder_channels=(8, 8, 8, 8, 8))


def test_class_map_drops_thoracic_unless_t1() -> None:
    lab = np.array([0, 1, 7, 8, 9, 19], np.uint8)
    assert class_map(lab, CFG).tolist() == [0, 1, 7, 0, 0, 0]
    assert class_map(lab, SegConfig(include_t1=True)).tolist() == [0, 1, 7, 8, 0, 0]


def test_sampling_prefers_vertebra_slices() -> None:
    hu = np.zeros((40, 32, 32), np.int16)
    lab = np.zeros_like(hu, dtype=np.uint8)
    lab[30:34, 10:20, 10:20] = 5
    st = reduce_study("a", hu, (2.0, 1.0, 1.0), lab, CFG)
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

