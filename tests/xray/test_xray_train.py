"""Radiograph training, checkpoints, --resume, evaluation, prediction, saliency and the CLI.

Tiny on purpose (CPU CI): GoogLeNet at 32 px instead of 224 (``XrayConfig.image_size``), a few toy
images per class, one or two epochs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _xray_toy import toy_image, write_toy_dataset
from PIL import Image
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from cspine.checkpoint import load_weights, read_config
from cspine.cli.main import app
from cspine.errors import DatasetError
from cspine.models.radiograph import XrayConfig, build_xray_model
from cspine.runtime import seed_everything
from cspine.xray.data import load_dataset
from cspine.xray.predict import load_xray_model, predict_images
from cspine.xray.saliency import saliency_maps
from cspine.xray.torchdata import ImageSet
from cspine.xray.train import XrayTrainConfig, _warmup, run_epoch, train_xray
from cspine.xray.transforms import preprocess

SIZE = 32
CFG = XrayConfig(arch="googlenet", image_size=SIZE, hidden=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "data", per_class=8, seed=0)


@pytest.fixture(scope="module")
def run(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "g"
    # warm-up and gradient clipping on: the from-scratch recipe's code path
    train_xray(toy, out, CFG, XrayTrainConfig(epochs=1, lr=0.01, warmup_epochs=0.5, clip_grad_norm=5.0),
               device="cpu", progress=False)
    return out


def _full_batch_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    # train mode (batch statistics, as the training steps see them) without dropout (dropout=0 in the
    # config), no gradient: the very loss that full-batch steps minimise, deterministically
    model.train()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


@pytest.mark.parametrize("seed", [0, 1])
def test_short_training_lowers_the_loss(toy: Path, seed: int) -> None:
    # run_epoch's optimisation steps must fit the data they train on. Full-batch steps on 12 images
    # (one mini-batch per epoch, no shuffling noise) make this a deterministic descent on one fixed
    # loss, which any correct forward/backward/step memorises: measured 1.06-1.16 -> ~0.001 in 30
    # steps on five seeds, so the bound below (a 5x drop) leaves two orders of magnitude of slack for
    # other library versions. Without backward() or without optimizer.step() the loss stays put.
    seed_everything(seed)
    data = load_dataset(toy)
    items = data.items[::2]  # 12 images, 4 per class
    ds = ImageSet([it.path for it in items], [it.label for it in items], SIZE, mean=CFG.mean, std=CFG.std)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([it.label for it in items])
    model = build_xray_model(CFG.replace(dropout=0.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = _full_batch_loss(model, x, y)
    loader = DataLoader(ds, batch_size=len(ds), shuffle=False)
    for _ in range(30):
        run_epoch(model, loader, torch.device("cpu"), opt, progress=False)
    after = _full_batch_loss(model, x, y)
    assert after < 0.2 * before, (before, after)


def test_run_folder_checkpoint_round_trip_and_resume(run: Path, toy: Path) -> None:
    for name in ("model.safetensors", "config.json", "splits.json", "log.jsonl", "last.safetensors"):
        assert (run / name).is_file(), name
    doc = read_config(run, "xray")
    assert doc["config"]["classes"] == ["normal", "fracture", "dislocation"]
    assert doc["config"]["image_size"] == SIZE
    model = load_xray_model(run, "cpu")
    fresh = build_xray_model(CFG, load_pretrained=False)
    load_weights(run, fresh)
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fresh.eval()(x))
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 24
    # refusing to overwrite, then --resume for one more epoch appends exactly one log line
    with pytest.raises(DatasetError, match="--resume"):
        train_xray(toy, run, CFG, XrayTrainConfig(epochs=2), device="cpu", progress=False)
    res = train_xray(toy, run, CFG, XrayTrainConfig(epochs=2, lr=0.01), device="cpu", resume=True,
                     progress=False)
    epochs = [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2] and res.epochs_run == 2
    rec = json.loads((run / "log.jsonl").read_text().splitlines()[1])
    assert rec["lr"] == pytest.approx(0.01)  # the step down comes after epoch 4
    assert json.loads((run / "splits.json").read_text()) == splits  # the split is kept on resume


def test_warmup_ramps_linearly_then_hands_back_to_the_schedule(run: Path) -> None:
    first = _warmup(0.01, 1, 10, 1.5)  # 15 warm-up steps over epochs 1-2 of 10 batches
    assert first is not None
    assert first(0) == pytest.approx(0.01 / 15) and first(9) == pytest.approx(0.01 * 10 / 15)
    second = _warmup(0.01, 2, 10, 1.5)
    assert second is not None and second(4) == pytest.approx(0.01) and second(9) == pytest.approx(0.01)
    assert _warmup(0.01, 3, 10, 1.5) is None and _warmup(0.01, 1, 10, 0.0) is None
    # the log keeps the epoch's nominal rate, and the schedule steps from it (not from the warm-up's)
    assert json.loads((run / "log.jsonl").read_text().splitlines()[0])["lr"] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        XrayTrainConfig(clip_grad_norm=-1.0)


@pytest.mark.parametrize("arch", ["googlenet", "alexnet", "efficientnet_lite0"])
def test_saliency_maps_have_image_size_and_structure(arch: str) -> None:
    # 96 px: the last convolutional block keeps 3x3 cells for Grad-CAM (at 32 px it is 1x1)
    seed_everything(0)
    model = build_xray_model(XrayConfig(arch=arch, image_size=96, hidden=32))
    img = np.zeros((70, 50), np.float32)
    img[:, 20:30] = 0.9
    sal, cam, cls = saliency_maps(model, img)
    for m in (sal, cam):
        assert m.shape == (70, 50) and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0 + 1e-6
        assert m.std() > 0.05 and np.ptp(m) > 0.5  # not uniform
    assert cls == int(model.eval()(preprocess(img, 96, model.cfg.mean, model.cfg.std)[None]).argmax())
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_cli_predict_evaluate_and_ensemble(run: Path, toy: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    rng = np.random.default_rng(9)
    pics = tmp_path / "pics"
    pics.mkdir()
    for i, c in enumerate(("normal", "fracture")):
        Image.fromarray((toy_image(c, rng)[:, :48] * 255).astype(np.uint8)).save(pics / f"p{i}.png")
    out = tmp_path / "pred"
    r = runner.invoke(app, ["xray", "predict", str(pics), "--model", str(run), "--model", str(run),
                            "--out", str(out), "--saliency", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "prediction", "normal", "fracture", "dislocation", "status"]
    assert len(rows) == 2
    for row in rows:
        probs = [float(row[c]) for c in ("normal", "fracture", "dislocation")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["prediction"] == ("normal", "fracture", "dislocation")[int(np.argmax(probs))]
    cam = Image.open(out / "p0.googlenet0.gradcam.png")
    assert cam.size == (48, 64)  # (W, H) of the input image
    assert Image.open(out / "p1.googlenet1.saliency.png").size == (48, 64)

    ev = tmp_path / "eval"
    r = runner.invoke(app, ["xray", "evaluate", "--model", str(run), "--model", str(run), "--data", str(toy),
                            "--out", str(ev), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    m = json.loads((ev / "metrics.json").read_text())
    names = list(m["models"])
    assert names[-1] == "ensemble" and len(names) == 3
    assert m["models"][names[0]]["accuracy"] == m["models"]["ensemble"]["accuracy"]  # same model twice
    assert set(m["models"]["ensemble"]["per_class"]) == {"normal", "fracture", "dislocation"}
    assert (ev / "roc_ensemble.png").is_file() and (ev / "confusion_ensemble.png").is_file()
    assert "macro F1" in (ev / "report.md").read_text()


def test_predict_ensemble_is_the_mean(run: Path, toy: Path) -> None:
    a = load_xray_model(run, "cpu")
    b = build_xray_model(CFG, load_pretrained=False).eval()  # a different (untrained) model
    paths = sorted((toy / "normal").glob("*.png"))[:3]
    ens, each = predict_images(paths, [a, b])
    np.testing.assert_allclose(ens.proba, (each[0].proba + each[1].proba) / 2, rtol=1e-6)


def test_cli_error_for_single_class(tmp_path: Path) -> None:
    single = write_toy_dataset(tmp_path / "s", per_class=2, classes=("normal",))
    r = CliRunner().invoke(app, ["xray", "train", "--data", str(single), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and isinstance(r.exception, DatasetError)
    assert "single class" in str(r.exception)


def test_cli_from_scratch_options_reach_the_configs(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    r = CliRunner().invoke(app, ["xray", "train", "--data", str(toy), "--out", str(out), "--arch", "alexnet",
                                 "--epochs", "1", "--image-size", "64", "--batch-norm", "--warmup-epochs",
                                 "0.5", "--clip-grad", "5", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["batch_norm"] is True
    assert doc["extra"]["train"]["warmup_epochs"] == 0.5 and doc["extra"]["train"]["clip_grad_norm"] == 5.0
    r = CliRunner().invoke(app, ["xray", "train", "--data", str(toy), "--out", str(tmp_path / "g"),
                                 "--arch", "googlenet", "--batch-norm"])
    assert r.exit_code != 0 and "AlexNet option" in r.output
    r = CliRunner().invoke(app, ["xray", "train", "--data", str(toy), "--out", str(tmp_path / "p"),
                                 "--preset", "fastest"])
    assert r.exit_code != 0 and "unknown radiograph preset 'fastest'" in str(r.exception)
    assert not (tmp_path / "p").exists()


def test_lite0_training_run_and_predict_use_the_registry_normalisation(toy: Path, tmp_path: Path) -> None:
    from cspine.models.pretrained import pretrained_state

    out = tmp_path / "lite"
    # the cpu preset (ImageNet Lite0, stages 0-5 frozen, SGD 0.01) with explicit options overriding it
    r = CliRunner().invoke(app, ["xray", "train", "--data", str(toy), "--out", str(out), "--preset", "cpu",
                                 "--image-size", "64", "--epochs", "2", "--hidden", "16", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "config.json").read_text())
    cfg = doc["config"]
    assert cfg["arch"] == "efficientnet_lite0" and cfg["image_size"] == 64 and cfg["hidden"] == 16
    assert cfg["pretrained"] == "imagenet" and cfg["frozen_stages"] == 6
    assert doc["extra"]["train"]["epochs"] == 2 and doc["extra"]["train"]["lr"] == 0.01
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["std"] == [0.5, 0.5, 0.5]  # the registry's, saved
    model = load_xray_model(out, "cpu")
    # the frozen stages kept the registry's ImageNet weights; the last stage trained from them
    ref = pretrained_state("tf_efficientnet_lite0")
    own = model.backbone.state_dict()
    torch.testing.assert_close(own["blocks.5.3.conv_pw.weight"], ref["blocks.5.3.conv_pw.weight"])
    torch.testing.assert_close(own["bn1.running_mean"], ref["bn1.running_mean"])
    assert not torch.allclose(own["blocks.6.0.conv_pw.weight"], ref["blocks.6.0.conv_pw.weight"])
    # predict reads the folder and normalises as training did: (x - 0.5) / 0.5, not ImageNet's
    pics = sorted((toy / "fracture").glob("*.png"))[:3]
    pred = tmp_path / "pred"
    r = CliRunner().invoke(app, ["xray", "predict", *map(str, pics), "--model", str(out), "--out", str(pred),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with open(pred / "predictions.csv", newline="") as f:
        got = np.array([[float(row[c]) for c in ("normal", "fracture", "dislocation")]
                        for row in csv.DictReader(f)])
    imgs = [np.asarray(Image.open(p), np.float32) / 255.0 for p in pics]
    with torch.no_grad():
        want = model.predict_proba(torch.stack([preprocess(im, 64, (0.5,) * 3, (0.5,) * 3) for im in imgs]))
        imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        other = model.predict_proba(torch.stack([preprocess(im, 64, *imagenet) for im in imgs]))
    np.testing.assert_allclose(got, want.numpy(), atol=2e-5)
    assert np.abs(got - other.numpy()).max() > 1e-3  # the normalisation matters to this model


def test_cli_refuses_pickled_pretrained_weights_in_one_line(toy: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    pth = tmp_path / "weights_from_somewhere" / "pickle.pth"
    pth.parent.mkdir()
    torch.save(build_xray_model(CFG).backbone.state_dict(), pth)
    out = tmp_path / "never"
    r = subprocess.run([sys.executable, "-c", "from cspine.cli.main import main; main()", "xray", "train",
                        "--data", str(toy), "--out", str(out), "--pretrained", str(pth), "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(pth) in lines[0] and "pickled weights are refused" in lines[0] and "run any code" in lines[0]
    assert "weights_only" not in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()  # refused before anything was written
