"""Stage-2 training, checkpointing, resuming and inference on tiny toy studies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cspine.ct.cls.dataset import ClsStudy, CropDataset, build_samples, samples_from_study
from cspine.ct.cls.predict import ClsModel, classify
from cspine.ct.cls.train import ClsTrainConfig, train_classifier, weighted_bce_loss
from cspine.ct.seg.postprocess import Segmentation
from cspine.errors import CspineError, DatasetError
from cspine.io.rsna import fold_split, folds_table, load_folds
from cspine.io.volume import volume_from_arrays
from cspine.labels import VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig, build_classifier

MODEL = ClsConfig(backbone="test_efficientnet", n_slices=6, k=3, image_size=32, gru_hidden=8, attn_dim=8,
                  dropout=0.0)


def toy_study(seed: int, drop: str | None = None) -> ClsStudy:
    """Seven bright blocks down z; a fractured one has a dark gap on one slice (with a box there)."""
    rng = np.random.default_rng(seed)
    z, y, x = 50, 32, 32
    hu = rng.normal(0, 30, (z, y, x)).astype(np.int16)
    labels = np.zeros((z, y, x), np.uint8)
    fractured, boxes = {}, set()
    for i, name in enumerate(VERTEBRAE):
        z0 = 1 + i * 7
        if name == drop:
            fractured[name] = 0
            continue
        hu[z0:z0 + 6, 8:24, 8:24] = 800
        labels[z0:z0 + 6, 8:24, 8:24] = i + 1
        fractured[name] = int(rng.random() < 0.35)
        if fractured[name]:
            zc = z0 + int(rng.integers(2, 4))
            hu[zc, 8:24, 8:24] = 0
            boxes.add(zc)
    return ClsStudy(f"toy{seed}", volume_from_arrays(hu), Segmentation.from_labels(labels), fractured,
                    frozenset(boxes))


def test_split_is_patient_level_stratified_and_saved(tmp_path) -> None:
    uids = [f"u{i}" for i in range(20)]
    y = {u: i % 2 for i, u in enumerate(uids)}
    table = folds_table({u: {"C3": y[u]} for u in uids})
    train, val = fold_split(uids, table, tmp_path / "folds.csv", val_fraction=0.2, seed=0)
    assert not set(train) & set(val) and len(train) + len(val) == 20
    assert sum(y[u] for u in val) == 2 and len(val) == 4
    saved = load_folds(tmp_path / "folds.csv")
    assert set(saved.loc[saved["fold"] == 0, "StudyInstanceUID"]) == set(val)
    # the saved folds are reused (another seed changes nothing once they exist), a subset keeps its side
    assert fold_split(uids, table, tmp_path / "folds.csv", val_fraction=0.2, seed=5) == (train, val)
    assert fold_split(uids[:10], table, tmp_path / "folds.csv", val_fraction=0.2, seed=0) == (
        [u for u in train if u in uids[:10]], [u for u in val if u in uids[:10]])
    # several studies of one patient stay on one side; no validation when asked for none
    groups = {u: f"p{i // 2}" for i, u in enumerate(uids)}
    train, val = fold_split(uids, folds_table({u: {} for u in uids}, groups), None, val_fraction=0.25)
    assert {groups[u] for u in train}.isdisjoint({groups[u] for u in val}) and len(val) == 6
    assert fold_split(uids, table, None, val_fraction=0.0) == (sorted(uids), [])


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    samples = [s for seed in range(3) for s in samples_from_study(toy_study(seed), MODEL)]
    ds = CropDataset(samples)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    sy = torch.stack([ds[i][2] for i in range(len(ds))])
    assert 0 < y.sum() < len(y)
    model = build_classifier(MODEL)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()  # batch statistics in BatchNorm both times (no dropout: the loss is deterministic)
    with torch.no_grad():
        before = float(weighted_bce_loss(model(x), y, sy, 1.0))
    for _ in range(15):
        loss = weighted_bce_loss(model(x), y, sy, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(weighted_bce_loss(model(x), y, sy, 1.0))
    assert after < 0.7 * before


def test_jittered_variants_only_with_jitter() -> None:
    study = toy_study(0)
    plain = list(build_samples([study], MODEL, variants=2, jitter=0.0))
    assert len(plain) == 7 and {s.variant for s in plain} == {0}  # no identical repeats
    both = list(build_samples([study], MODEL, variants=2, jitter=0.3, seed=1))
    assert [s.variant for s in both] == [0] * 7 + [1] * 7
    pairs = zip(both[:7], both[7:], strict=True)
    assert any(not np.array_equal(a.slice_indices, b.slice_indices) for a, b in pairs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls_run")
    studies = [toy_study(seed) for seed in range(8)]
    cfg = ClsTrainConfig(model=MODEL, epochs=1, batch_size=4, lr=3e-3, max_steps_per_epoch=3,
                         val_fraction=0.3, crop_variants=1)
    folder = train_classifier(None, out, cfg, studies=studies, progress=False)
    return out, folder, cfg, studies


def test_training_writes_the_model_folder(trained) -> None:
    _, folder, _, _ = trained
    for name in ("model.safetensors", "config.json", "log.jsonl", "metrics.json", "last.safetensors"):
        assert (folder / name).is_file(), name
    doc = json.loads((folder / "config.json").read_text())
    assert doc["kind"] == "vertebra_classifier"
    assert doc["config"]["backbone"] == "test_efficientnet"
    extra = doc["extra"]
    assert extra["calibration"]["temperature"] > 0
    assert set(extra["absent_vertebra_prior"]) == set(VERTEBRAE)
    assert extra["patient_pool"] == "noisy_or" and "noisy_or" in extra["patient_aggregation"]
    # operating points chosen on the validation patients, stored beside the calibration
    from cspine.ct.cls.operating_points import load_operating_points, resolve_operating_point

    ops = extra["operating_points"]
    assert set(ops["vertebra"]) == {"sens90", "sens95"}
    v90, v95 = ops["vertebra"]["sens90"], ops["vertebra"]["sens95"]
    assert v95 is None or 0 < v95 <= v90 <= 1
    point = resolve_operating_point("sens90", load_operating_points(folder))
    assert point.to_dict()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_train_studies"] + metrics["n_val_studies"] == 8
    # the validation studies are fold 0 of the run's saved folds (0.3 -> 3 folds)
    folds = load_folds(folder.parent / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    assert extra["val_uids"] == sorted(folds.loc[folds["fold"] == 0, "StudyInstanceUID"])
    # crop_variants=1: every training vertebra twice (as the mask gives it, then jittered), the
    # validation vertebrae once, as predict would crop them
    assert metrics["n_train_crops"] == 2 * 7 * metrics["n_train_studies"]
    assert metrics["n_train_vertebrae"] == 7 * metrics["n_train_studies"]  # what an epoch draws
    assert metrics["n_val_crops"] == 7 * metrics["n_val_studies"]


def test_classify_outputs_and_reload_is_identical(trained) -> None:
    out, folder, _, _ = trained
    study = toy_study(100, drop="C4")
    a = classify(study.volume, study.seg, ClsModel.load(out, device="cpu"))
    b = classify(study.volume, study.seg, ClsModel.load(folder, device="cpu"))
    assert set(a.probs) == set(VERTEBRAE)
    assert "C4" not in a.present and "C4" not in a.crops
    model = ClsModel.load(folder, device="cpu")
    assert a.probs["C4"] == pytest.approx(model.prior["C4"])  # absent: the training prevalence
    for name in a.present:
        assert a.probs[name] == b.probs[name]  # reload gives the identical output
        weights, idx = a.attention[name]
        assert weights.shape == idx.shape == (MODEL.n_slices,)
        assert weights.sum() == pytest.approx(1.0, abs=1e-5)
        assert a.crops[name].array.shape == (MODEL.n_slices, MODEL.in_chans, 32, 32)
    assert 0.0 <= a.patient <= 1.0


def test_existing_model_is_not_overwritten_and_resume_continues(trained) -> None:
    out, folder, cfg, studies = trained
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(CspineError, match="--resume"):
        train_classifier(None, out, cfg, studies=studies, progress=False)
    assert (folder / "model.safetensors").read_bytes() == before
    longer = ClsTrainConfig(**{**cfg.__dict__, "epochs": 2})
    train_classifier(None, out, longer, studies=studies, resume=True, progress=False)
    epochs = [json.loads(line)["epoch"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_no_masks_is_a_clear_error(tmp_path) -> None:
    study = toy_study(0)
    empty = ClsStudy("x", study.volume, Segmentation.from_labels(np.zeros(study.volume.shape, np.uint8)),
                     study.labels)
    with pytest.raises(DatasetError, match="train stage 1 first"):
        train_classifier(None, tmp_path, ClsTrainConfig(model=MODEL, epochs=1), studies=[empty],
                         progress=False)


def test_missing_model_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CspineError, match="stage-2"):
        ClsModel.load(tmp_path, device="cpu")
