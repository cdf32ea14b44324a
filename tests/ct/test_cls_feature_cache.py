"""Stage 2 with a frozen, cached CNN prefix: the cache gives the full forward, training leaves the prefix
alone, and the saved model predicts through the plain forward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cls_train import toy_study

from cspine.ct.cls.dataset import build_samples
from cspine.ct.cls.feature_cache import build_prefix_cache, cached_logits, scanner_augment
from cspine.ct.cls.predict import ClsModel, classify
from cspine.ct.cls.train import ClsTrainConfig, predict_logits, train_classifier
from cspine.models.vertebra_classifier import ClsConfig, build_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FROZEN = ClsConfig(backbone="tf_efficientnet_lite0", pretrained="imagenet", frozen_stages=2, n_slices=4, k=3,
                   image_size=32, gru_hidden=8, attn_dim=8, dropout=0.0, pixel_head=True)


def test_cached_prefix_gives_the_full_forward() -> None:
    torch.manual_seed(0)
    model = build_classifier(FROZEN)
    with torch.no_grad():  # a mask projection that is not zero, so the mask path is exercised
        model.backbone.mask_proj.weight.normal_(0, 0.5)
    samples = list(build_samples([toy_study(1), toy_study(2)], FROZEN))
    cache = build_prefix_cache(model, samples, variants=3, augment=False, seed=0, mask_channel=True,
                               device=torch.device("cpu"), progress=False)
    assert cache.variants == 1 and cache.feats.dtype == torch.float16
    full = predict_logits(model, samples, torch.device("cpu"), amp=False)
    np.testing.assert_allclose(cached_logits(model, cache, torch.device("cpu")), full, atol=2e-2)
    # the mask matters: the same crops without their mask channel score differently
    no_mask = cache.masks.clone().zero_()
    cache.masks = no_mask
    assert not np.allclose(cached_logits(model, cache, torch.device("cpu")), full, atol=1e-3)


def test_scanner_augment_changes_only_the_ct_channels() -> None:
    rng = np.random.default_rng(0)
    x = np.random.default_rng(1).random((4, 4, 16, 16)).astype(np.float32)
    y = scanner_augment(x, rng, ct_channels=3)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not np.allclose(y[:, :3], x[:, :3])
    np.testing.assert_array_equal(y[:, 3], x[:, 3])


def test_training_leaves_the_prefix_and_the_model_predicts(tmp_path) -> None:
    studies = [toy_study(seed) for seed in range(6)]
    cfg = ClsTrainConfig(model=FROZEN, epochs=2, batch_size=4, lr=3e-3, max_steps_per_epoch=3,
                         val_fraction=0.3, prefix_variants=2, backbone_lr_scale=0.5)
    start = build_classifier(FROZEN).state_dict()
    folder = train_classifier(None, tmp_path, cfg, studies=studies, progress=False)
    model = ClsModel.load(folder, device="cpu")
    state = model.model.state_dict()
    prefix = [k for k in start if k.startswith(("backbone.net.conv_stem", "backbone.net.bn1",
                                               "backbone.net.blocks.0", "backbone.net.blocks.1"))]
    assert prefix and all(torch.equal(state[k], start[k]) for k in prefix)
    rest = [k for k in start if k.startswith("backbone.net.blocks.4") and k.endswith("weight")]
    assert any(not torch.equal(state[k], start[k]) for k in rest)  # the trainable stages did train
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and "val_vertebra_auc" in log[-1]
    study = toy_study(50)
    result = classify(study.volume, study.seg, model)
    assert all(0.0 <= result.probs[v] <= 1.0 for v in result.present)
