"""``cspine export onnx`` of a CT RUN folder and ``cspine ct predict --runtime onnx``: the ONNX Runtime path
gives PyTorch's outputs on a phantom study (fp32: probabilities within 1e-4 absolute), runs without
importing torch, refuses Grad-CAM in one line, and an int8 export gives probabilities in range."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _onnx_fixtures import PHANTOM_UID, make_runs, write_phantom_study
from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.ct.cls.crops import extract_crops
from cspine.ct.cls.predict import ClsModel
from cspine.ct.inference import predict
from cspine.ct.model import CtModel
from cspine.ct.seg.grid import reduced_grid, resample_image
from cspine.ct.seg.postprocess import Segmentation
from cspine.ct.seg.predict import SegModel
from cspine.errors import CheckpointError
from cspine.io.study import load_study
from cspine.labels import VERTEBRAE
from cspine.onnx.export import export_model
from cspine.onnx.manifest import MANIFEST
from cspine.onnx.runtime import ExplainUnavailable, load_ct

#: fp32 ONNX Runtime vs PyTorch: calibrated probabilities and attention weights, absolute.
PROB_TOL = 1e-4
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("onnx_ct")
    run, run_rand = make_runs(base)
    phantom = write_phantom_study(base / "study")
    export_model(run, base / "exp")
    export_model(run_rand, base / "exp_rand")
    return base, run, run_rand, phantom


def test_manifest_copies_the_training_configs(env):
    base, run, _, _ = env
    doc = json.loads((base / "exp" / MANIFEST).read_text())
    cls_doc = json.loads((run / "cls" / "config.json").read_text())
    assert doc["opset"] >= 17 and doc["precision"] == "fp32" and doc["task"] == "ct"
    assert doc["cls"]["extra"] == cls_doc["extra"]  # calibration, prior: one home, copied
    assert doc["cls"]["config"]["input_norm"] == list(CtModel.load(run, "cpu").cls.cfg.input_norm)
    assert doc["seg"]["config"]["window"] == list(CtModel.load(run, "cpu").seg.cfg.window)
    for net in doc["networks"].values():
        assert all(d < 1e-4 for d in net["check_max_abs_diff"].values())


def test_predict_equals_pytorch_on_a_phantom_study(env):
    base, run, _, _ = env
    study = base / "study"
    ref = predict(study, CtModel.load(run, device="cpu"))
    got = predict(study, load_ct(base / "exp"))
    assert got.study_uid == ref.study_uid == PHANTOM_UID and got.status == ref.status
    assert got.vertebrae == ref.vertebrae
    assert ref.probs["C3"] is not None
    for v in VERTEBRAE:
        assert (got.probs[v] is None) == (ref.probs[v] is None)
        if ref.probs[v] is not None:
            assert abs(got.probs[v] - ref.probs[v]) < PROB_TOL
    assert abs(got.patient_overall - ref.patient_overall) < PROB_TOL
    np.testing.assert_allclose(got.attention["C3"]["weights"], ref.attention["C3"]["weights"], atol=PROB_TOL)
    assert got.attention["C3"]["slice_indices"] == ref.attention["C3"]["slice_indices"]
    assert "onnxruntime" in got.versions["device"]


def test_stage1_labels_equal_pytorch_with_any_batch(env):
    base, _, run_rand, _ = env
    volume = load_study(base / "study")
    torch_seg = SegModel.load(run_rand / "seg", device="cpu")
    onnx_seg = load_ct(base / "exp_rand").seg
    grid = reduced_grid(volume.shape, volume.spacing, torch_seg.cfg)
    image = resample_image(volume.hu, grid, torch_seg.cfg)
    ref = torch_seg.predict_reduced(image)
    assert len(np.unique(ref)) > 2  # a random head: the argmax varies, so the comparison means something
    for batch in (1, 5):
        got = onnx_seg.predict_reduced(image, batch_size=batch)
        assert np.mean(got == ref) > 0.999  # near-ties may flip on float rounding, nothing else


def test_stage2_equals_pytorch_for_any_number_of_vertebrae(env):
    base, run, _, phantom = env
    volume = load_study(base / "study")
    seg = Segmentation.from_labels(phantom.labels)
    torch_cls = ClsModel.load(run / "cls", device="cpu")
    crops = extract_crops(volume, seg, torch_cls.cfg)
    assert len(crops) == 7
    x = np.stack([c.array for c in crops.values()])
    onnx_cls = load_ct(base / "exp").cls
    for n in (1, 3, 7):
        ref_logit, ref_att = torch_cls.infer(x[:n])
        got_logit, got_att = onnx_cls.infer(x[:n])
        assert got_logit.shape == (n,) and got_att.shape == ref_att.shape
        np.testing.assert_allclose(got_logit, ref_logit, atol=1e-5)
        np.testing.assert_allclose(got_att, ref_att, atol=1e-5)


def test_cli_predict_runs_without_torch(env, tmp_path):
    base, run, _, _ = env
    out = tmp_path / "pred"
    code = (
        "import sys\n"
        "from cspine.cli.main import app\n"
        f"app(['ct', 'predict', {str(base / 'study')!r}, '--model', {str(base / 'exp')!r}, "
        f"'--out', {str(out)!r}, '--runtime', 'onnx'], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
        "print('NO-TORCH-OK')\n"
    )
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=env_vars, timeout=300)
    assert proc.returncode == 0 and "NO-TORCH-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads((out / f"{PHANTOM_UID}.json").read_text())
    ref = predict(base / "study", CtModel.load(run, device="cpu"))
    assert abs(doc["probabilities"]["C3"] - ref.probs["C3"]) < PROB_TOL
    assert (out / "predictions.csv").is_file() and (out / "submission.csv").is_file()


def test_explain_is_refused_in_one_line(env, tmp_path):
    base, _, _, _ = env
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["ct", "predict", str(base / "study"), "--model", str(base / "exp"),
                                      "--out", str(out), "--runtime", "onnx", "--explain"])
    assert isinstance(result.exception, ExplainUnavailable)
    msg = str(result.exception)
    assert "\n" not in msg and "Grad-CAM" in msg and "--runtime onnx" in msg
    assert not out.exists()  # refused before any work
    with pytest.raises(ExplainUnavailable):
        predict(base / "study", load_ct(base / "exp"), explain_dir=tmp_path / "explain")


def test_a_pytorch_folder_given_as_onnx_says_how_to_export(env):
    _, run, _, _ = env
    with pytest.raises(CheckpointError, match="cspine export onnx"):
        load_ct(run)


def test_changed_network_file_is_refused(env, tmp_path):
    base, _, _, _ = env
    copy = tmp_path / "exp"
    shutil.copytree(base / "exp", copy)
    with open(copy / "cls.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="sha256"):
        load_ct(copy)


def test_int8_export_gives_probabilities_in_range(env, tmp_path):
    base, run, _, _ = env
    result = export_model(run, tmp_path / "exp8", int8=True)
    assert result.int8 and json.loads((tmp_path / "exp8" / MANIFEST).read_text())["precision"] == "int8"
    got = predict(base / "study", load_ct(tmp_path / "exp8"))
    probs = [p for p in got.probs.values() if p is not None] + [got.patient_overall]
    assert probs and all(0.0 <= p <= 1.0 for p in probs)
    assert sum(got.attention["C3"]["weights"]) == pytest.approx(1.0, abs=1e-3)


def test_frozen_stage_backbone_with_mask_and_pixel_head_exports(env, tmp_path):
    """The fast preset's stage 2 (StagedBackbone: frozen prefix, mask joined after it; pixel head)."""
    import torch

    from cspine.checkpoint import save_model
    from cspine.models.vertebra_classifier import ClsConfig, build_classifier

    base, run, _, phantom = env
    torch.manual_seed(2)
    cfg = ClsConfig(backbone="test_efficientnet", n_slices=6, k=3, image_size=64, gru_hidden=8, attn_dim=8,
                    dropout=0.0, frozen_stages=1, pixel_head=True)
    net = build_classifier(cfg)
    with torch.no_grad():  # a mask path that matters (it starts at zero when trained)
        net.backbone.mask_proj.weight.normal_()
    staged = tmp_path / "run"
    shutil.copytree(run / "seg", staged / "seg")
    save_model(staged / "cls", net, cfg, kind="vertebra_classifier",
               extra=json.loads((run / "cls" / "config.json").read_text())["extra"])
    export_model(staged, tmp_path / "exp")
    volume = load_study(base / "study")
    torch_cls = ClsModel.load(staged / "cls", device="cpu")
    x = np.stack([c.array for c in extract_crops(volume, Segmentation.from_labels(phantom.labels),
                                                 torch_cls.cfg).values()])
    ref_logit, ref_att = torch_cls.infer(x)
    got_logit, got_att = load_ct(tmp_path / "exp").cls.infer(x)
    np.testing.assert_allclose(got_logit, ref_logit, atol=1e-5)
    np.testing.assert_allclose(got_att, ref_att, atol=1e-5)
