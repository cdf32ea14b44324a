"""The dataset splits of an RSNA 2022 root, by name: ``train`` (``train_images/``, labels, masks) and
``test`` (``test_images/``, ``test.csv``). What ``cspine ct prepare --split`` accepts and what
:class:`cspine.io.rsna.RsnaDataset` reads. Nothing here imports torch."""

from __future__ import annotations

#: The training studies (labels in train.csv, some with segmentations).
TRAIN = "train"
#: The test studies (test.csv, no labels).
TEST = "test"
#: Every split of an RSNA root.
RSNA_SPLITS: tuple[str, ...] = (TRAIN, TEST)
