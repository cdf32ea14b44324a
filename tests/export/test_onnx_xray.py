"""``cspine export onnx`` of a radiograph model and ``cspine xray predict --runtime onnx``: PyTorch's
probabilities within 1e-4 (fp32), no torch import, --saliency refused in one line, int8 in range."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _onnx_fixtures import make_xray_model, write_images
from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.onnx.export import export_model
from cspine.onnx.runtime import ExplainUnavailable, load_xray
from cspine.xray.predict import load_xray_model, predict_images

PROB_TOL = 1e-4
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("onnx_xray")
    model = make_xray_model(base / "model")
    images = write_images(base / "images")
    export_model(model, base / "exp")
    return base, model, images


def test_probabilities_equal_pytorch(env):
    base, model, images = env
    ref, _ = predict_images(images, [load_xray_model(model, "cpu")], batch_size=2)
    got, _ = predict_images(images, [load_xray(base / "exp")], batch_size=3)
    assert got.class_names == ref.class_names and got.paths == ref.paths
    assert np.ptp(ref.proba[:, 0]) > 0  # the images differ and so do their probabilities
    np.testing.assert_allclose(got.proba, ref.proba, atol=PROB_TOL)


def test_cli_predict_runs_without_torch(env, tmp_path):
    base, model, images = env
    out = tmp_path / "pred"
    code = (
        "import sys\n"
        "from cspine.cli.main import app\n"
        f"app(['xray', 'predict', {str(base / 'images')!r}, '--model', {str(base / 'exp')!r}, "
        f"'--out', {str(out)!r}, '--runtime', 'onnx'], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
        "print('NO-TORCH-OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0 and "NO-TORCH-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    df = pd.read_csv(out / "predictions.csv")
    ref, _ = predict_images(images, [load_xray_model(model, "cpu")])
    np.testing.assert_allclose(df[list(ref.class_names)].to_numpy(), ref.proba, atol=PROB_TOL)


def test_saliency_is_refused_in_one_line(env, tmp_path):
    base, _, _ = env
    result = CliRunner().invoke(app, ["xray", "predict", str(base / "images"), "--model", str(base / "exp"),
                                      "--out", str(tmp_path / "p"), "--runtime", "onnx", "--saliency"])
    assert isinstance(result.exception, ExplainUnavailable) and "\n" not in str(result.exception)
    assert not (tmp_path / "p").exists()


def test_int8_export_gives_probabilities_in_range(env, tmp_path):
    base, model, images = env
    export_model(model, tmp_path / "exp8", int8=True)
    got, _ = predict_images(images, [load_xray(tmp_path / "exp8")])
    assert np.all((got.proba >= 0) & (got.proba <= 1))
    np.testing.assert_allclose(got.proba.sum(axis=1), 1.0, atol=1e-4)


def test_export_refuses_an_existing_export_and_a_low_opset(env, tmp_path):
    base, model, _ = env
    from cspine.onnx.export import ExportError

    with pytest.raises(ExportError, match="--overwrite"):
        export_model(model, base / "exp")
    with pytest.raises(ExportError, match="opset"):
        export_model(model, tmp_path / "x", opset=13)
