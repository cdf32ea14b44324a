"""The one-stage baseline: whole-study inputs, loss, training, checkpoint and predictions.csv."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from _rsna_fixture import write_rsna_layout
from cspine.ct.baseline.data import BaselineStudy, sample_from_study
from cspine.ct.baseline.inputs import stack_slice_targets, study_stack
from cspine.ct.baseline.model import build_study_classifier
from cspine.ct.baseline.predict import BaselineModel, predict_studies, predict_volume
from cspine.ct.baseline.train import baseline_loss, baseline_train_config, train_baseline
from cspine.ct.cls.dataset import CropDataset
from cspine.ct.cls.train import ClsTrainConfig
from cspine.ct.evaluate import evaluate
from cspine.errors import CheckpointError, CspineError
from cspine.io.volume import volume_from_arrays
from cspine.labels import TARGETS, TEST_LABELS_CSV, VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig

STAGE2 = ClsConfig(backbone="test_efficientnet", n_slices=6, k=3, image_size=32, gru_hidden=8, attn_dim=8,
                   dropout=0.0)
CFG = baseline_train_config(ClsTrainConfig(model=STAGE2, epochs=1, batch_size=4, lr=3e-3,
                                           max_steps_per_epoch=2, val_fraction=0.3))
MODEL = CFG.model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_study(seed: int, nz: int = 49) -> BaselineStudy:
    """Seven bright blocks down z; a fractured one has a dark gap on one slice (with a box there)."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(0, 30, (nz, 24, 32)).astype(np.int16)
    labels, boxes = {}, set()
    for i, name in enumerate(VERTEBRAE):
        z0 = i * 7
        hu[z0:z0 + 6, 6:18, 8:24] = 800
        labels[name] = int(rng.random() < 0.35)
        if labels[name]:
            zc = z0 + int(rng.integers(2, 4))
            hu[zc, 6:18, 8:24] = 0
            boxes.add(zc)
    return BaselineStudy(f"toy{seed}", volume_from_arrays(hu), labels, frozenset(boxes))


def test_config_doubles_the_slices_and_drops_the_mask() -> None:
    assert MODEL.n_slices == 2 * STAGE2.n_slices and not MODEL.use_mask_channel and MODEL.in_chans == 3
    assert (MODEL.backbone, MODEL.image_size, MODEL.k) == (STAGE2.backbone, STAGE2.image_size, STAGE2.k)
    assert CFG.epochs == 1 and CFG.seed == 0


def test_stack_covers_the_whole_study_and_targets_follow_the_boxes() -> None:
    study = toy_study(0)
    stack = study_stack(study.volume, MODEL)
    assert stack.array.shape == (12, 3, 32, 32) and stack.array.dtype == np.float32
    assert stack.slice_indices[0] == 0 and stack.slice_indices[-1] == 48 and stack.step == 4
    assert 0.0 <= stack.array.min() and stack.array.max() <= 1.0
    # whole field of view, 24 rows padded with air to 32: the top and bottom rows are air (0 in the window)
    assert stack.array[:, :, :3].max() == 0.0 and stack.array[:, :, 14:18].max() > 0.5
    # a box on slice 25 belongs to the input slice whose centre (every 48/11 slices) is nearest
    t = stack_slice_targets(stack, frozenset({25}), fractured=True)
    assert t.sum() == 1 and abs(stack.slice_indices[int(t.argmax())] - 25) <= 2.2
    assert stack_slice_targets(stack, frozenset({0, 48}), True).tolist() == [1] + [0] * 10 + [1]
    assert not stack_slice_targets(stack, frozenset({25}), fractured=False).any()
    assert np.isnan(stack_slice_targets(stack, None, fractured=True)).all()


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    samples = [sample_from_study(toy_study(seed), MODEL) for seed in range(6)]
    ds = CropDataset(samples, mask_channel=False)
    x, y, sy = (torch.stack([ds[i][j] for i in range(len(ds))]) for j in range(3))
    assert y.shape == (6, 7) and 0 < y.sum() < y.numel()
    sy[0] = float("nan")  # a fractured study without boxes: no slice target, no NaN in the loss
    # with stage 2's optional CNN-feature slice head, which the baseline mirrors
    model = build_study_classifier(dataclasses.replace(MODEL, feature_slice_head=True))
    out = model(x)
    assert out.logit.shape == (6, 7) and out.slice_logits.shape == out.feature_slice_logits.shape == (6, 12)
    assert torch.allclose(out.attention.sum(1), torch.ones(6, 7), atol=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    with torch.no_grad():
        before = float(baseline_loss(model(x), y, sy, 1.0))
    for _ in range(15):
        loss = baseline_loss(model(x), y, sy, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(baseline_loss(model(x), y, sy, 1.0))
    assert np.isfinite(before) and after < 0.7 * before


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("baseline")
    info = write_rsna_layout(base / "rsna", n_train=8, n_test=3, shape=(16, 32, 32), n_masks=0)
    folder = train_baseline(base / "rsna", base / "model", CFG, progress=False)
    return base, info, folder


def test_training_from_an_rsna_root_writes_the_model_folder(trained) -> None:
    _, _, folder = trained
    for name in ("model.safetensors", "config.json", "log.jsonl", "metrics.json", "last.safetensors"):
        assert (folder / name).is_file(), name
    doc = json.loads((folder / "config.json").read_text())
    assert doc["kind"] == "study_classifier" and doc["config"]["n_slices"] == 12
    assert doc["extra"]["outputs"] == list(VERTEBRAE) and doc["extra"]["patient_pool"] == "noisy_or"
    assert doc["extra"]["calibration"]["temperature"] > 0
    # the split is fold 0 of the folds of the root's whole train.csv, saved beside the model (0.3 -> 3 folds)
    from cspine.io.rsna import RsnaDataset, fold_split, load_folds

    folds = load_folds(folder / "folds.csv")
    assert sorted(folds["StudyInstanceUID"]) == sorted(RsnaDataset(folder.parent / "rsna").train_uids())
    assert doc["extra"]["val_uids"] == sorted(folds.loc[folds["fold"] == 0, "StudyInstanceUID"])
    assert fold_split(folds["StudyInstanceUID"], RsnaDataset(folder.parent / "rsna").train, None,
                      val_fraction=0.3)[1] == doc["extra"]["val_uids"]  # what stage 2 would validate on
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_train_studies"] + metrics["n_val_studies"] == 8 and metrics["n_val_studies"] >= 2
    with pytest.raises(CspineError, match="already holds"):
        train_baseline(trained[0] / "rsna", folder, CFG, progress=False)
    masked = dataclasses.replace(CFG, model=dataclasses.replace(MODEL, use_mask_channel=True))
    with pytest.raises(CspineError, match="no mask channel"):
        train_baseline(trained[0] / "rsna", trained[0] / "other", masked, progress=False)
    with pytest.raises(CheckpointError, match="config.json"):
        BaselineModel.load(trained[0] / "rsna", device="cpu")


def test_predictions_csv_is_scored_by_evaluate_and_reload_is_identical(trained, tmp_path) -> None:
    base, info, folder = trained
    model = BaselineModel.load(folder, device="cpu")
    path = predict_studies([base / "rsna"], model, tmp_path / "pred", progress=False)
    pred = pd.read_csv(path, dtype={"StudyInstanceUID": str})
    assert pred.columns.tolist() == ["StudyInstanceUID", *TARGETS]
    assert sorted(pred["StudyInstanceUID"]) == sorted(info.test_uids) == pred["StudyInstanceUID"].tolist()
    values = pred[list(TARGETS)].to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    metrics = evaluate(path, base / "rsna" / TEST_LABELS_CSV, tmp_path / "eval")
    assert metrics["n_studies"] == 3 and metrics["rsna_weighted_log_loss"] > 0
    # the checkpoint round-trips: a fresh load gives the same probabilities, from files or memory
    again = BaselineModel.load(folder, device="cpu")
    vol = volume_from_arrays(info.hu[info.test_uids[0]])
    a, b = predict_volume(vol, model), predict_volume(vol, again)
    assert a.probs == b.probs and a.patient == b.patient
    path2 = predict_studies({"u1": vol}, again, tmp_path / "pred2", progress=False)
    row = pd.read_csv(path2).iloc[0]
    assert row["C3"] == pytest.approx(a.probs["C3"], abs=1e-6)
    assert a.attention.shape == (12, 7) and np.allclose(a.attention.sum(0), 1.0, atol=1e-5)
