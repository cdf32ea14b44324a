"""Pseudo-labels for cached studies without a true mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cspine.checkpoint import save_model
from cspine.ct.seg.pseudo import PSEUDO_MASK, PSEUDO_MODEL, pseudo_label_cache
from cspine.ct.seg.train import SegTrainConfig, train_segmentation
from cspine.io.nifti import save_mask_nifti
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.preprocess.cache import prepare_study
from cspine.synth.phantom import make_phantom

CFG = SegConfig(backbone="resnet18", image_size=32, z_spacing=4.0, decoder_channels=(8, 8, 8, 8, 8))


def _cache(tmp_path: Path) -> Path:
    """A prepared cache of two phantom studies; only 1.2.3 has a segmentation mask."""
    cache = tmp_path / "cache"
    (tmp_path / "images").mkdir()
    for uid, with_mask in (("1.2.3", True), ("1.2.4", False)):
        p = make_phantom(int(uid[-1]), size=32, n_slices=24, fracture=False)
        vol = p.volume()
        mask_path = None
        if with_mask:
            mask_path = tmp_path / f"{uid}.nii.gz"
            save_mask_nifti(mask_path, p.labels, vol)
        res = prepare_study(uid, tmp_path / "images", mask_path, cache / uid, loader=lambda _d, v=vol: v)
        assert res.status == "done", res
    return cache


def test_training_from_a_cache_uses_the_studies_with_masks(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    cfg = SegTrainConfig(model=CFG, epochs=1, batch_size=4, slices_per_epoch=8)
    seg_dir = train_segmentation(None, tmp_path / "run", cfg, cache=cache)
    extra = json.loads((seg_dir / "config.json").read_text())["extra"]
    assert extra["n_train"] == 1 and extra["val_uids"] == ["1.2.3"]  # one patient: validated on itself


def test_pseudo_labels_only_for_studies_without_a_mask(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    torch.manual_seed(0)
    save_model(tmp_path / "run" / "seg", build_seg_model(CFG), CFG, "seg")
    assert pseudo_label_cache(cache, tmp_path / "run" / "seg") == 1
    assert not (cache / "1.2.3" / PSEUDO_MASK).exists()
    pseudo = np.load(cache / "1.2.4" / PSEUDO_MASK)
    assert pseudo.shape == (24, 32, 32) and pseudo.dtype == np.uint8 and pseudo.max() <= 7
    assert pseudo_label_cache(cache, tmp_path / "run" / "seg") == 0  # resumable: done studies skipped


def test_pseudo_labels_of_another_stage1_model_are_made_again(tmp_path: Path) -> None:
    # Two runs share one cache: the second run's stage 2 must not train on the first run's pseudo-labels.
    cache = _cache(tmp_path)
    for seed, run in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        save_model(tmp_path / run / "seg", build_seg_model(CFG), CFG, "seg")
    assert pseudo_label_cache(cache, tmp_path / "a" / "seg") == 1
    assert pseudo_label_cache(cache, tmp_path / "a" / "seg") == 0
    assert pseudo_label_cache(cache, tmp_path / "b" / "seg") == 1  # another model: redone
    assert pseudo_label_cache(cache, tmp_path / "b" / "seg") == 0
    (cache / "1.2.4" / PSEUDO_MODEL).unlink()  # a pseudo-label of unknown origin (an older cspine)
    assert pseudo_label_cache(cache, tmp_path / "b" / "seg") == 1
