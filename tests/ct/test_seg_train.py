"""Stage-1 training on phantom studies: the loss goes down, the run folder, --resume, and Dice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cspine.ct.seg.dataset import SliceDataset, sample_slices
from cspine.ct.seg.predict import SegModel, segment
from cspine.ct.seg.train import (
    SegTrainConfig,
    load_training_studies,
    seg_loss,
    split_studies,
    train_segmentation,
)
from cspine.errors import CspineError
from cspine.metrics.segmentation import aggregate, segmentation_metrics
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.synth.phantom import make_phantom

TINY = SegConfig(backbone="tu-mobilenetv3_small_050", image_size=64, z_spacing=4.0,
                 decoder_channels=(32, 32, 16, 16, 16))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pairs(seeds: range, size: int = 64) -> list:
    out = []
    for s in seeds:
        p = make_phantom(s, size=size, fracture=False)
        out.append((p.volume(), p.labels))
    return out


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    cfg = SegTrainConfig(model=TINY)
    studies = load_training_studies(None, cfg, volumes=_pairs(range(2)))
    idx = sample_slices(studies, 16, np.random.default_rng(0))
    x, y = next(iter(torch.utils.data.DataLoader(SliceDataset(studies, idx, 3), batch_size=16)))
    net = build_seg_model(TINY)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = seg_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_patient_level_split_keeps_groups_together() -> None:
    cfg = SegTrainConfig(model=TINY)
    vols = _pairs(range(4))
    for i, (v, _) in enumerate(vols):
        v.meta["patient_group"] = f"p{i // 2}"  # two studies per patient
    studies = load_training_studies(None, cfg, volumes=vols)
    train, val = split_studies(studies, 0.5, seed=0)
    assert len(train) == len(val) == 2
    assert {s.group for s in train}.isdisjoint({s.group for s in val})


def test_run_folder_refuses_overwrite_and_resumes(tmp_path: Path) -> None:
    vols = _pairs(range(3))
    cfg = SegTrainConfig(model=TINY, epochs=1, batch_size=8, slices_per_epoch=16, val_fraction=0.34)
    seg_dir = train_segmentation(None, tmp_path, cfg, volumes=vols)
    assert seg_dir == tmp_path / "seg"
    for name in ("model.safetensors", "config.json", "log.jsonl", "metrics.json", "last.json"):
        assert (seg_dir / name).is_file(), name
    doc = json.loads((seg_dir / "config.json").read_text())
    assert doc["kind"] == "seg" and doc["config"]["backbone"] == TINY.backbone
    assert SegTrainConfig.from_dict(doc["extra"]["train"]) == cfg
    metrics = json.loads((seg_dir / "metrics.json").read_text())
    assert set(metrics["dice"]) == {"C1", "C2", "C3", "C4", "C5", "C6", "C7"}
    with pytest.raises(CspineError, match="--resume"):
        train_segmentation(None, tmp_path, cfg, volumes=vols)
    longer = SegTrainConfig(model=TINY, epochs=2, batch_size=8, slices_per_epoch=16, val_fraction=0.34)
    train_segmentation(None, tmp_path, longer, volumes=vols, resume=True)
    epochs = [json.loads(line)["epoch"] for line in (seg_dir / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert SegModel.load(seg_dir).cfg == TINY


@pytest.mark.slow
def test_short_cpu_training_reaches_dice_on_held_out_phantoms(tmp_path: Path) -> None:
    # 24 training phantoms, 5-slice stacks (20 mm of context helps tell the levels apart), ~900 steps.
    model_cfg = SegConfig(backbone="tu-mobilenetv3_small_050", image_size=64, z_spacing=4.0, in_slices=5,
                          decoder_channels=(32, 32, 16, 16, 16))
    cfg = SegTrainConfig(model=model_cfg, epochs=14, batch_size=8, slices_per_epoch=512, lr=3e-3,
                         val_fraction=0.15, seed=0)
    seg_dir = train_segmentation(None, tmp_path, cfg, volumes=_pairs(range(24)))
    model = SegModel.load(seg_dir)
    results = [segmentation_metrics(segment(v, model).labels, lab) for v, lab in _pairs(range(100, 103))]
    summary = aggregate(results)
    assert summary["mean_dice"] >= 0.7, summary
    assert summary["level_identification_accuracy"] >= 0.8, summary
