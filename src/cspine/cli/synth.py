"""``cspine synth ...``: synthetic phantom data (CT studies in the RSNA layout, radiographs, previews)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
OVERWRITE_HELP = "Replace files under cspine's output names that cspine did not write."


@app.command("ct")
def ct(
    out: Path = typer.Option(..., "--out", help="Output folder (RSNA 2022 layout)."),
    studies: int = typer.Option(20, "--studies", min=0, help="Training studies."),
    test_studies: int = typer.Option(
        0, "--test-studies", min=0, help="Test studies (labels in test_labels.csv)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same dataset."),
    size: int = typer.Option(256, "--size", help="In-plane matrix: 128, 256 or 512."),
    workers: int = typer.Option(1, "--workers", min=1, help="Studies generated in parallel."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Synthetic cervical spine CT studies written as an RSNA 2022 dataset (DICOM, CSVs, NIfTI masks).

    The CSVs are only written over when cspine wrote them (a real RSNA root's train.csv is never replaced
    unless --overwrite)."""
    from cspine import labels
    from cspine.output_folder import open_output_folder
    from cspine.synth.ct import generate_ct_dataset

    if size not in (128, 256, 512):
        raise typer.BadParameter("--size must be 128, 256 or 512")
    names = (labels.TRAIN_CSV, labels.BOXES_CSV, labels.TEST_BOXES_CSV, labels.TEST_CSV,
             labels.SAMPLE_SUBMISSION_CSV, labels.TEST_LABELS_CSV)
    folder = open_output_folder(out, overwrite=overwrite, names=names, command="cspine synth ct")
    root = generate_ct_dataset(out, studies, test_studies, seed=seed, size=size, workers=workers)
    folder.record(*names)
    Console().print(f"wrote {studies} training and {test_studies} test studies to {root}")


@app.command("xray")
def xray(
    out: Path = typer.Option(
        ..., "--out", help="Output folder (normal/, fracture/, dislocation/, labels.csv)."
    ),
    images: int = typer.Option(300, "--images", min=1, help="Number of radiographs."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Synthetic lateral cervical spine radiographs (DRRs of phantoms) in class folders."""
    from cspine.output_folder import open_output_folder
    from cspine.synth.xray import generate_xray_dataset

    folder = open_output_folder(out, overwrite=overwrite, names=["labels.csv"], command="cspine synth xray")
    root = generate_xray_dataset(out, images, seed=seed)
    folder.record("labels.csv")
    Console().print(f"wrote {images} radiographs to {root}")


@app.command("preview")
def preview(
    root: Path = typer.Argument(
        ..., help="A folder written by `cspine synth ct` and/or `cspine synth xray`."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG previews."),
    seed: int = typer.Option(0, "--seed", help="Seed of radiographs rendered when ROOT has none."),
) -> None:
    """PNG previews: axial C2 and C5, sagittal reformat with mask outline and boxes, radiographs."""
    from cspine.errors import DatasetError
    from cspine.output_folder import open_output_folder
    from cspine.synth.preview import preview_dataset

    if not root.is_dir():
        raise DatasetError("not a folder; give the output folder of `cspine synth ct` or `synth xray`", root)
    open_output_folder(out, command="cspine synth preview")  # a file or an unwritable path: refused now
    for path in preview_dataset(root, out, xray_seed=seed):
        Console().print(str(path))
