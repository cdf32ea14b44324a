"""CropDataset's augmentations: one sequence per seed in-process; new draws per worker and per epoch."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import DataLoader

from cspine.ct.cls.dataset import CropDataset, CropSample

N_SLICES, SIZE = 3, 16


def identical_samples(n: int) -> list[CropSample]:
    """``n`` copies of one crop: any difference between served items comes from the augmentation."""
    image = np.random.default_rng(0).integers(0, 256, (N_SLICES, 2, SIZE, SIZE)).astype(np.uint8)
    return [CropSample("u", "C3", image, 0.0, np.zeros(N_SLICES, np.float32), np.arange(N_SLICES))
            for _ in range(n)]


def epoch_images(loader: DataLoader) -> list[str]:
    """A digest of each served (augmented) crop, in order."""
    return [hashlib.sha1(batch[0][0].numpy().tobytes()).hexdigest()[:12] for batch in loader]


def test_two_workers_and_two_epochs_draw_different_augmentations() -> None:
    torch.manual_seed(0)
    ds = CropDataset(identical_samples(4), augment=True, seed=0)
    loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=2)  # items 0, 2 -> worker 0; 1, 3 -> 1
    first, second = epoch_images(loader), epoch_images(loader)
    assert first[0] != first[1], "both workers drew the same augmentation"
    assert first != second, "the second epoch repeated the first"
    assert len(set(first + second)) == 8


def test_in_process_draws_follow_the_seed() -> None:
    def draws(seed: int) -> list[str]:
        ds = CropDataset(identical_samples(4), augment=True, seed=seed)
        loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=0)
        return epoch_images(loader) + epoch_images(loader)

    a = draws(3)
    assert a == draws(3)  # reproducible
    assert len(set(a)) == 8  # and still new at every draw, epoch after epoch
    assert a != draws(4)
