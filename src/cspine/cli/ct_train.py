"""``cspine ct train``: train stage 1 (seg), stage 2 (cls) or both into one RUN folder."""

from __future__ import annotations

from pathlib import Path

import typer

from cspine.registry.presets import DEFAULT_PRESET
from cspine.registry.stages import ALL, TRAIN_STAGES

_STAGE_HELP = f"{' | '.join(TRAIN_STAGES)} (stage 1, pseudo-labels, stage 2)."
_PRESET_HELP = f"{' | '.join(DEFAULT_PRESET.values())} (default: {DEFAULT_PRESET['cuda']} on GPU)."


def train(
    data: Path = typer.Option(..., "--data", help="RSNA 2022 root (train.csv, train_images/, ...)."),
    out: Path = typer.Option(..., "--out", help="RUN folder: models go to RUN/seg and RUN/cls."),
    stage: str = typer.Option(ALL, "--stage", help=_STAGE_HELP),
    epochs: int | None = typer.Option(None, "--epochs", help="Override the preset's epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Override the preset's batch size."),
    image_size: int | None = typer.Option(None, "--image-size", help="Override the preset's image size."),
    backbone: str | None = typer.Option(None, "--backbone", help="Encoder; SEG,CLS for two stages."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="Mixed precision on a GPU (default on)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted training."),
    preset: str | None = typer.Option(None, "--preset", help=_PRESET_HELP),
    cache: Path | None = typer.Option(None, "--cache", help="Prepared cache (`cspine ct prepare`); "
                                      "also where stage-1 pseudo masks are written."),
    pretrained: str | None = typer.Option(None, "--pretrained", help="none | imagenet | PATH.safetensors"),
    bad_masks: str = typer.Option(
        "error", "--bad-masks",
        help="Masks read from --data (not from a --cache) are checked as `cspine ct prepare` checks them: "
             "'error' stops at a bad one; 'exclude' trains on its study without it."),
) -> None:
    """Train the CT models: stage 1 segments C1-C7, stage 2 classifies each vertebra."""
    from rich.console import Console

    from cspine.ct.train_run import train_run
    from cspine.output_folder import check_output_path

    check_output_path(out, "cspine ct train")  # a file as --out: one line now, not a traceback later
    from cspine.preprocess.cache import BAD_MASK_MODES

    if bad_masks not in BAD_MASK_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(BAD_MASK_MODES)}", param_hint="--bad-masks")
    console = Console(stderr=True)
    run = train_run(data, out, stage=stage, epochs=epochs, batch_size=batch_size, image_size=image_size,
                    backbone=backbone, device=device, amp=amp, resume=resume, preset=preset, cache=cache,
                    pretrained=pretrained, bad_masks=bad_masks)
    console.print(f"[green]trained[/] {', '.join(run['stages'])} -> {run['out']}")
    for name, metrics in run["metrics"].items():
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and v is not None}
        console.print(f"  {name}: {shown}")
