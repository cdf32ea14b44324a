"""Stage-1 inference: the reduced-grid pipeline, save/reload, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cspine.checkpoint import save_model
from cspine.ct.seg.predict import SegmentationInputError, SegModel, segment
from cspine.errors import CheckpointError
from cspine.io.volume import volume_from_arrays
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.synth.phantom import make_phantom

CFG = SegConfig(backbone="resnet18", image_size=64, z_spacing=4.0, decoder_channels=(16, 16, 8, 8, 8))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _ThresholdNet(torch.nn.Module):
    """Says "C3" wherever the centre slice is brighter than 0.5 (about 400 HU): a known answer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 8, *x.shape[2:])
        logits[:, 3] = (x[:, x.shape[1] // 2] > 0.5).float() * 10 - 5
        return logits


def test_segment_maps_labels_back_to_the_full_grid() -> None:
    hu = np.full((60, 100, 90), 40, np.int16)
    hu[20:40, 30:70, 20:50] = 1000  # a bone block
    hu[2, 2, 2] = 1000  # a one-voxel speck: removed by the largest-component step
    vol = volume_from_arrays(hu, (1.0, 0.8, 0.8))
    model = SegModel(_ThresholdNet(), CFG, torch.device("cpu"))
    seg = segment(vol, model, batch_size=7)
    assert seg.labels.shape == hu.shape and seg.labels.dtype == np.uint8
    c3 = seg.vertebrae["C3"]
    assert c3.present and not seg.vertebrae["C2"].present
    # reduced grid: 4 mm slices, 64 px for 100/90 px: boundaries within half a reduced voxel (+1)
    assert abs(c3.z_range[0] - 20) <= 3 and abs(c3.z_range[1] - 40) <= 3
    y0, y1, x0, x1 = c3.box
    assert abs(y0 - 30) <= 2 and abs(y1 - 70) <= 2 and abs(x0 - 20) <= 2 and abs(x1 - 50) <= 2
    np.testing.assert_allclose(c3.centroid, (29.5, 49.5, 34.5), atol=2.5)
    assert seg.labels[2, 2, 2] == 0
    assert any("not found" in w for w in seg.warnings)


def test_saved_and_reloaded_model_gives_identical_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_seg_model(CFG)
    save_model(tmp_path / "seg", net, CFG, "seg")
    vol = make_phantom(3, size=64, fracture=False).volume()
    before = segment(vol, SegModel(net, CFG, torch.device("cpu")))
    again = SegModel.load(tmp_path)  # a RUN folder holding seg/ works too
    assert again.cfg == CFG
    after = segment(vol, again)
    np.testing.assert_array_equal(before.labels, after.labels)
    assert before.vertebrae == after.vertebrae


def test_one_slice_study_is_a_clear_error() -> None:
    model = SegModel(_ThresholdNet(), CFG, torch.device("cpu"))
    with pytest.raises(SegmentationInputError, match="1 axial slice"):
        segment(volume_from_arrays(np.full((1, 64, 64), 1000, np.int16)), model)


def test_no_bone_in_view_gives_all_absent_with_a_warning() -> None:
    model = SegModel(_ThresholdNet(), CFG, torch.device("cpu"))
    rng = np.random.default_rng(0)
    vol = volume_from_arrays(rng.normal(0, 30, (20, 64, 64)).astype(np.int16), (2.0, 1.0, 1.0))
    seg = segment(vol, model)
    assert not seg.labels.any() and seg.present == ()
    assert any("no bone" in w for w in seg.warnings)


def test_checkpoint_folder_errors(tmp_path: Path) -> None:
    net = build_seg_model(CFG)
    save_model(tmp_path / "ok", net, CFG, "seg")
    with pytest.raises(CheckpointError, match="not found"):
        SegModel.load(tmp_path / "nowhere")
    shutil.copytree(tmp_path / "ok", tmp_path / "no_config")
    (tmp_path / "no_config" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        SegModel.load(tmp_path / "no_config")
    shutil.copytree(tmp_path / "ok", tmp_path / "no_weights")
    (tmp_path / "no_weights" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        SegModel.load(tmp_path / "no_weights")
    save_model(tmp_path / "cls", net, CFG, "cls")
    with pytest.raises(CheckpointError, match="expected 'seg'"):
        SegModel.load(tmp_path / "cls")
