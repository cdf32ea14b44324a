"""``cspine xray ...``: train, evaluate, predict and compare with readers (radiographs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cspine.io.images import DEFAULT_MAX_PIXELS

app = typer.Typer(no_args_is_help=True)

ARCH_HELP = "alexnet (227 px), googlenet (224 px) or efficientnet_lite0 (224 px)."
MAX_PIXELS_HELP = ("Refuse an image whose header claims more pixels (rows x columns; a corrupt header or a "
                   "decompression bomb). 0 = no limit.")
OVERWRITE_HELP = "Replace files under cspine's output names that cspine did not write."


@app.command("train")
def train(
    data: Path = typer.Option(..., "--data", help="A folder per class, or a CSV path,label[,patient_id]."),
    arch: str | None = typer.Option(None, "--arch", help=ARCH_HELP + " Default googlenet."),
    out: Path = typer.Option(..., "--out", help="The model folder to create."),
    preset: str | None = typer.Option(
        None, "--preset", help="paper (SGD 0.001, batch 10, step every 4 epochs, 30 epochs, ImageNet) "
                               "or cpu (frozen ImageNet Lite0 but its last stage, lr 0.01, 12 epochs). "
                               "Options given explicitly override it."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Default 30."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Default 10."),
    lr: float | None = typer.Option(None, "--lr", help="Initial learning rate (default 0.001)."),
    lr_step: int | None = typer.Option(None, "--lr-step", min=1, help="Epochs between lr steps (4)."),
    lr_gamma: float | None = typer.Option(None, "--lr-gamma", help="lr factor at each step (0.5)."),
    pretrained: str | None = typer.Option(
        None, "--pretrained", help="none (default) | imagenet (Lite0: offline registry; AlexNet, GoogLeNet: "
                                   "torchvision's local cache) | PATH.safetensors (pickles are refused)."),
    finetune: str | None = typer.Option(None, "--finetune", help="all layers (default), or only the head."),
    frozen_stages: int | None = typer.Option(
        None, "--frozen-stages", min=0, help="efficientnet_lite0: freeze the stem and first N of 7 stages "
                                             "(computed once per image; default 0)."),
    image_size: int | None = typer.Option(None, "--image-size", min=0,
                                          help="Input size; 0 = the architecture's (227/224)."),
    dropout: float = typer.Option(0.5, "--dropout"),
    hidden: int = typer.Option(512, "--hidden", help="Width of the first head layer."),
    augment: bool = typer.Option(False, "--augment/--no-augment",
                                 help="Mirror, small rotations and contrast."),
    drop_duplicates: bool = typer.Option(False, "--drop-duplicates",
                                         help="Remove val/test images with a near duplicate in train."),
    splits: Path | None = typer.Option(None, "--splits", help="Reuse this splits.json."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs", min=0.0,
                                        help="Linear learning-rate warm-up (epochs; 0 = the paper's none)."),
    clip_grad: float = typer.Option(0.0, "--clip-grad", min=0.0, help="Gradient-norm clip (0 = off)."),
    batch_norm: bool = typer.Option(False, "--batch-norm/--no-batch-norm",
                                    help="AlexNet from random init only: a batch norm after each convolution "
                                         "(not the paper's AlexNet; without it SGD does not train it from "
                                         "scratch)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=0, help=MAX_PIXELS_HELP),
) -> None:
    """Train AlexNet, GoogLeNet or EfficientNet-Lite0 (SGD momentum 0.9, lr stepped, cross-entropy).

    Every image's header is read first: an unreadable image, or one larger than --max-pixels, stops the
    run with its name before anything is written."""
    from cspine.models.radiograph import XrayConfig
    from cspine.xray.presets import preset_configs
    from cspine.xray.train import XrayTrainConfig, train_xray

    model_kw, train_kw = preset_configs(preset) if preset else ({}, {})
    given_model = {"arch": arch, "pretrained": pretrained, "finetune": finetune,
                   "frozen_stages": frozen_stages}
    model_kw.update({k: v for k, v in given_model.items() if v is not None})
    if image_size is not None:
        model_kw["image_size"] = image_size or None
    given_train = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "lr_step": lr_step,
                   "lr_gamma": lr_gamma}
    train_kw.update({k: v for k, v in given_train.items() if v is not None})
    try:
        mcfg = XrayConfig(dropout=dropout, hidden=hidden, batch_norm=batch_norm, **model_kw)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    tcfg = XrayTrainConfig(seed=seed, augment=augment, drop_duplicates=drop_duplicates,
                           warmup_epochs=warmup_epochs, clip_grad_norm=clip_grad, **train_kw)
    res = train_xray(data, out, mcfg, tcfg, device=device, resume=resume, splits_file=splits,
                     max_pixels=max_pixels or None)
    typer.echo(f"best epoch {res.best_epoch}: validation accuracy {res.best_val_accuracy:.3f}; "
               f"model in {res.out}")


@app.command("evaluate")
def evaluate(
    model: list[Path] = typer.Option(..., "--model", help="A trained model folder; repeat for an ensemble."),
    data: Path = typer.Option(..., "--data", help="The dataset the models were trained on."),
    split: str = typer.Option("test", "--split", help="train, val, test or all."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, report.md and plots."),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(10, "--batch-size", min=1),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=0, help=MAX_PIXELS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Accuracy and per-class sensitivity/specificity/precision/F1/AUC, ROC and confusion plots.

    cspine replaces only files it wrote itself in --out (--overwrite to force)."""
    from cspine.xray.evaluate import evaluate_xray

    doc = evaluate_xray(model, data, out, split=split, device=device, batch_size=batch_size, progress=True,
                        max_pixels=max_pixels or None, overwrite=overwrite)
    for name, m in doc["models"].items():
        typer.echo(f"{name}: accuracy {m['accuracy']:.3f}, macro F1 {_fmt(m['macro']['f1'])}, "
                   f"macro AUC {_fmt(m['macro']['auc'])} (n={m['n']})")
    typer.echo(f"wrote {Path(out) / 'metrics.json'} and {Path(out) / 'report.md'}")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


@app.command("predict")
def predict(
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images."),
    model: list[Path] = typer.Option(..., "--model", help="A trained model folder; repeat for an ensemble."),
    out: Path = typer.Option(..., "--out", help="Folder for predictions.csv (and saliency PNGs)."),
    saliency: bool = typer.Option(False, "--saliency", help="Write gradient saliency and Grad-CAM PNGs."),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(10, "--batch-size", min=1),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=0, help=MAX_PIXELS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    runtime: str = typer.Option(
        "torch", "--runtime", help="torch (--model: trained model folders) or onnx (--model: exports of "
                                   "`cspine export onnx`, run by ONNX Runtime on the CPU without PyTorch; "
                                   "no --saliency)."),
) -> None:
    """Class probabilities for each image (the mean over the models when several are given).

    An image that cannot be read (corrupt, not an image, larger than --max-pixels) is skipped and listed:
    its predictions.csv row has status 'failed', failures.json says why, and the exit status is 1.
    cspine replaces only files it wrote itself in --out (--overwrite to force)."""
    from rich.console import Console
    from rich.markup import escape

    from cspine.output_folder import open_output_folder
    from cspine.xray.batch import (
        FAILURES_JSON,
        PREDICTIONS_CSV,
        collect_images,
        predict_images,
        write_failures,
        write_predictions,
    )

    if runtime not in ("torch", "onnx"):
        raise typer.BadParameter(f"{runtime!r}: use torch or onnx", param_hint="--runtime")
    if runtime == "onnx" and saliency:
        from cspine.onnx.runtime import EXPLAIN_REFUSED, ExplainUnavailable

        raise ExplainUnavailable(EXPLAIN_REFUSED)
    limit = max_pixels or None
    paths = collect_images(inputs)  # a missing input fails before any folder is made
    folder = open_output_folder(out, overwrite=overwrite, names=[PREDICTIONS_CSV, FAILURES_JSON],
                                command="cspine xray predict")
    if runtime == "onnx":
        from cspine.onnx.runtime import load_xray

        models: list = [load_xray(m) for m in model]
    else:
        from cspine.xray.predict import load_xray_model

        models = [load_xray_model(m, device) for m in model]
    tags = [f"{m.cfg.arch}{i}" if len(models) > 1 else "" for i, m in enumerate(models)]
    if saliency:  # every PNG name is known now: a foreign file stops the run before any image is read
        from cspine.xray.saliency import saliency_names, unique_stems, write_saliency

        stems = unique_stems(paths)
        folder.check([n for t in tags for p in paths for n in saliency_names(stems[p], t)],
                     "cspine xray predict")
    failures: dict[Path, str] = {}
    ens, _ = predict_images(paths, models, batch_size, progress=True, max_pixels=limit, failures=failures)
    csv_path = write_predictions(folder.path / PREDICTIONS_CSV, ens, failed=list(failures))
    write_failures(folder.path / FAILURES_JSON, failures)
    folder.record(PREDICTIONS_CSV, FAILURES_JSON)
    if saliency:
        for m, tag in zip(models, tags, strict=True):
            for p in ens.paths:
                written = write_saliency(m, p, folder.path, tag, stem=stems[p], max_pixels=limit)
                folder.record(*(w.name for w in written))
    console = Console()
    console.print(f"wrote {escape(str(csv_path))} ({len(ens.paths)} images predicted, "
                  f"{len(failures)} failed)", highlight=False, soft_wrap=True)
    if failures:
        where = escape(str(folder.path / FAILURES_JSON))
        console.print(f"[red]failed images[/] ({len(failures)}; also in {where}):", highlight=False,
                      soft_wrap=True)
        for reason in failures.values():
            console.print(f"  {escape(reason)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command("compare-readers")
def compare_readers_cmd(
    pred: Path = typer.Option(..., "--pred", help="predictions.csv of cspine xray predict."),
    reads: Path = typer.Option(..., "--reads", help="path,reader,label or path,<reader1>,<reader2>,..."),
    truth: Path = typer.Option(..., "--truth", help="path,label"),
    out: Path | None = typer.Option(None, "--out", help="Also write the result as JSON here."),
) -> None:
    """Correct/wrong counts of the model and each reader, per-class agreement, kappa, McNemar."""
    from cspine.fileio import write_json
    from cspine.xray.readers import compare_readers, render_readers_table

    result = compare_readers(pred, reads, truth)
    typer.echo(render_readers_table(result))
    if out is not None:
        write_json(out, result)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(json.dumps(result["mcnemar"], indent=1))
