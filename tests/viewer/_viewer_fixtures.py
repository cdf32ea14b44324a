"""Helpers and fixtures of the viewer tests (imported by tests/viewer/conftest.py): a tiny random-weight
RUN folder, a phantom DICOM study, its zip, and a results folder predicted from it.

The RUN mirrors tests/ct/test_pipeline_e2e.py's: stage 1's head labels every voxel C3 (zero weights,
a large C3 bias), so the overlay is known; stage 2 keeps random weights, and its calibration bias is
set high so that C3 is flagged and gets a Grad-CAM map.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from cspine.checkpoint import save_model
from cspine.labels import LABEL_OF, VERTEBRAE
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.models.vertebra_classifier import ClsConfig, build_classifier

STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"
PRIOR = {v: 0.1 for v in VERTEBRAE}


def make_tiny_run(run: Path) -> Path:
    torch.manual_seed(0)
    scfg = SegConfig(backbone="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8), image_size=32,
                     z_spacing=2.5)
    net = build_seg_model(scfg)
    conv = net.segmentation_head[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-10.0)
        conv.bias[LABEL_OF["C3"]] = 10.0
    save_model(run / "seg", net, scfg, kind="seg")
    ccfg = ClsConfig(backbone="test_efficientnet", n_slices=6, k=3, image_size=64, gru_hidden=8, attn_dim=8,
                     dropout=0.0)
    save_model(run / "cls", build_classifier(ccfg), ccfg, kind="vertebra_classifier",
               extra={"calibration": {"temperature": 1.0, "bias": 6.0},
                      "patient_calibration": {"temperature": 1.0, "bias": 0.0},
                      "absent_vertebra_prior": PRIOR})
    return run


def write_phantom_study(folder: Path, uid: str = STUDY_UID, seed: int = 3) -> np.ndarray:
    """A 48-slice 64x64 phantom written as DICOM; returns its canonical HU array."""
    from cspine.synth.ct_writer import write_ct_series
    from cspine.synth.phantom import make_phantom

    p = make_phantom(seed, size=64, n_slices=48, fracture=True)
    write_ct_series(p.volume(), folder, study_uid=uid, uid_seed=seed)
    return p.hu


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, prefix + path.name)
    return buf.getvalue()


@dataclass
class ViewerData:
    run: Path
    study: Path
    hu: np.ndarray
    zip_bytes: bytes


@pytest.fixture(scope="session")
def viewer_data(tmp_path_factory) -> ViewerData:
    base = tmp_path_factory.mktemp("viewer")
    run = make_tiny_run(base / "run")
    hu = write_phantom_study(base / "study")
    return ViewerData(run=run, study=base / "study", hu=hu, zip_bytes=zip_folder(base / "study", "Doe^Jane/"))


@pytest.fixture(scope="session")
def tiny_model(viewer_data):
    from cspine.ct import CtModel

    torch.set_num_threads(1)
    return CtModel.load(viewer_data.run, device="cpu")


@pytest.fixture(scope="session")
def results_dir(viewer_data, tiny_model, tmp_path_factory) -> Path:
    """`cspine ct predict --explain` output for the phantom study (no view files)."""
    from cspine.ct import predict_many

    out = tmp_path_factory.mktemp("results")
    summary = predict_many([viewer_data.study], tiny_model, out, explain=True, progress=False)
    assert summary.predicted == [STUDY_UID]
    return out
