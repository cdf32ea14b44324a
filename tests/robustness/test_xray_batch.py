"""Radiographs behave like CT in a batch: an unreadable or gigantic image is skipped and listed by
``xray predict``, refused by name (before anything is written) by ``xray train``, and the output folders
hold only what cspine wrote."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cspine.checkpoint import save_model
from cspine.cli.main import app
from cspine.errors import ImageError
from cspine.io.images import image_shape, read_image
from cspine.models.radiograph import CHECKPOINT_KIND, XrayConfig, build_xray_model
from cspine.output_folder import MANIFEST, OutputFolderError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ("normal", "fracture", "dislocation")


def bomb_png(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A valid 1x1 PNG whose IHDR is rewritten to claim ``width`` x ``height`` (CRC fixed)."""
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    assert raw[12:16] == b"IHDR"
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    return path


def _png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (40, 36), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = XrayConfig(arch="googlenet", image_size=32, hidden=16, classes=CLASSES)
    out = tmp_path_factory.mktemp("xr") / "model"
    save_model(out, build_xray_model(cfg, load_pretrained=False), cfg, CHECKPOINT_KIND)
    return out


def test_the_size_limit_is_read_from_the_header(tmp_path: Path) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageError) as err:
        read_image(bomb)
    msg = str(err.value)
    assert msg.startswith(str(bomb)) and "60000 x 60000" in msg and "--max-pixels" in msg and "\n" not in msg
    with pytest.raises(ImageError, match="60000 x 60000"):
        image_shape(bomb)
    small = _png(tmp_path / "small.png", 0)
    assert image_shape(small) == (40, 36)
    with pytest.raises(ImageError, match="36 x 40 pixels"):
        read_image(small, max_pixels=1000)
    assert read_image(small, max_pixels=None).shape == (40, 36)


def test_predict_skips_and_lists_unreadable_and_gigantic_images(model_dir: Path, tmp_path: Path,
                                                                snapshot) -> None:
    pics = tmp_path / "pics"
    good = [_png(pics / f"good{i}.png", i) for i in range(3)]
    bomb = bomb_png(pics / "bomb.png")
    truncated = pics / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:60])
    snap = snapshot(pics)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["xray", "predict", str(pics), "--model", str(model_dir), "--out", str(out),
                                   "--device", "cpu", "--batch-size", "2"])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "3 images predicted, 2 failed" in text
    assert str(bomb) in text and "60000 x 60000" in text and str(truncated) in text
    with open(out / "predictions.csv", newline="") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    statuses = {n: r["status"] for n, r in rows.items()}
    assert statuses == {"good0.png": "ok", "good1.png": "ok", "good2.png": "ok", "bomb.png": "failed",
                        "truncated.png": "failed"}
    assert rows["bomb.png"]["prediction"] == "" and rows["bomb.png"]["normal"] == ""
    assert sum(float(rows["good1.png"][c]) for c in CLASSES) == pytest.approx(1.0, abs=1e-4)
    failures = {Path(f["input"]).name: f["error"] for f in json.loads((out / "failures.json").read_text())}
    assert set(failures) == {"bomb.png", "truncated.png"}
    assert "megapixels" in failures["bomb.png"] and "cannot be decoded" in failures["truncated.png"]
    snap.assert_unchanged(allow_new=False)  # the inputs are untouched

    # the same good images predicted alone give the same probabilities (a failure shifts no row)
    alone = tmp_path / "alone"
    res = CliRunner().invoke(app, ["xray", "predict", *map(str, good), "--model", str(model_dir), "--out",
                                   str(alone), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    with open(alone / "predictions.csv", newline="") as f:
        for r in csv.DictReader(f):
            # equal up to float rounding (batches of another size take other BLAS paths); a row shifted to
            # another image would differ by far more
            assert float(r["normal"]) == pytest.approx(float(rows[Path(r["path"]).name]["normal"]), abs=1e-5)
    assert not (alone / "failures.json").exists()


def test_predict_max_pixels_is_configurable(model_dir: Path, tmp_path: Path) -> None:
    img = _png(tmp_path / "pics" / "a.png", 0)
    res = CliRunner().invoke(app, ["xray", "predict", str(img), "--model", str(model_dir), "--out",
                                   str(tmp_path / "out"), "--device", "cpu", "--max-pixels", "1000"])
    assert res.exit_code == 1 and "more than the limit" in " ".join(res.output.split())


def test_train_refuses_a_gigantic_image_by_name_before_writing(tmp_path: Path, snapshot) -> None:
    data = tmp_path / "data"
    for c in ("normal", "fracture"):
        for i in range(4):
            _png(data / c / f"{c}{i}.png", i)
    bomb = bomb_png(data / "fracture" / "huge.png")
    snap = snapshot(data)
    out = tmp_path / "model"
    res = CliRunner().invoke(app, ["xray", "train", "--data", str(data), "--out", str(out), "--arch",
                                   "googlenet", "--image-size", "32", "--epochs", "1", "--device", "cpu"])
    assert isinstance(res.exception, ImageError), res.output
    assert str(bomb) in str(res.exception) and "megapixels" in str(res.exception)
    assert not out.exists()
    snap.assert_unchanged(allow_new=False)


def test_train_refuses_an_output_path_that_is_a_file(tmp_path: Path, snapshot) -> None:
    data = tmp_path / "data"
    for c in ("normal", "fracture"):
        for i in range(4):
            _png(data / c / f"{c}{i}.png", i)
    target = tmp_path / "model.txt"
    target.write_text("x")
    snap = snapshot(tmp_path)
    res = CliRunner().invoke(app, ["xray", "train", "--data", str(data), "--out", str(target), "--device",
                                   "cpu"])
    assert isinstance(res.exception, OutputFolderError), res.output
    assert str(target) in str(res.exception) and "is a file" in str(res.exception)
    snap.assert_unchanged(allow_new=False)


def test_predict_refuses_a_foreign_predictions_csv_and_an_output_path_that_is_a_file(
        model_dir: Path, tmp_path: Path, snapshot) -> None:
    img = _png(tmp_path / "pics" / "a.png", 0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("path,my reading\n")
    snap = snapshot(tmp_path)
    base = ["xray", "predict", str(img), "--model", str(model_dir), "--device", "cpu"]
    res = CliRunner().invoke(app, [*base, "--out", str(out)])
    assert isinstance(res.exception, OutputFolderError), res.output
    assert str(out / "predictions.csv") in str(res.exception) and "--overwrite" in str(res.exception)
    as_file = tmp_path / "pics" / "a.png"
    res = CliRunner().invoke(app, [*base, "--out", str(as_file)])
    assert isinstance(res.exception, OutputFolderError) and "is a file" in str(res.exception)
    snap.assert_unchanged(allow_new=False)
    res = CliRunner().invoke(app, [*base, "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "predictions.csv" in json.loads((out / MANIFEST).read_text())["files"]
    res = CliRunner().invoke(app, [*base, "--out", str(out)])  # cspine's own file: replaced freely
    assert res.exit_code == 0, res.output


def test_saliency_of_images_with_the_same_name_never_share_a_file(model_dir: Path, tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a" / "p0.png", 0), _png(tmp_path / "b" / "p0.png", 1)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["xray", "predict", str(a), str(b), "--model", str(model_dir), "--out",
                                   str(out), "--device", "cpu", "--saliency"])
    assert res.exit_code == 0, res.output
    assert (out / "p0.saliency.png").is_file() and (out / "p0-2.saliency.png").is_file()
    assert (out / "p0.saliency.png").read_bytes() != (out / "p0-2.saliency.png").read_bytes()


def test_evaluate_refuses_a_foreign_metrics_json(model_dir: Path, tmp_path: Path, snapshot) -> None:
    data = tmp_path / "data"
    for k, c in enumerate(CLASSES):
        for i in range(2):
            _png(data / c / f"{c}{i}.png", 10 * k + i)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}\n')
    snap = snapshot(tmp_path)
    base = ["xray", "evaluate", "--model", str(model_dir), "--data", str(data), "--split", "all", "--device",
            "cpu", "--out", str(out)]
    res = CliRunner().invoke(app, base)
    assert isinstance(res.exception, OutputFolderError), res.output
    assert str(out / "metrics.json") in str(res.exception)
    snap.assert_unchanged(allow_new=False)
    res = CliRunner().invoke(app, [*base, "--overwrite"])
    assert res.exit_code == 0, res.output
    files = json.loads((out / MANIFEST).read_text())["files"]
    assert {"metrics.json", "report.md", "predictions_googlenet_model.csv"} <= set(files)
    res = CliRunner().invoke(app, base)  # a rerun replaces its own outputs
    assert res.exit_code == 0, res.output
