"""``cspine export onnx``: a trained CT RUN folder or radiograph model as ONNX networks + their JSON."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Export trained models for other runtimes.")


@app.command("onnx")
def onnx(
    model: Path = typer.Option(..., "--model", help="A CT RUN folder (seg/ and cls/) or a radiograph model "
                                                    "folder."),
    out: Path = typer.Option(..., "--out", help="The export folder (created)."),
    int8: bool = typer.Option(False, "--int8", help="Dynamic int8 quantization of every network (ONNX "
                                                    "Runtime's quantize_dynamic): smaller, and on some CPUs "
                                                    "faster, with slightly different probabilities."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 or later)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an export already in --out."),
) -> None:
    """Export to ONNX for `cspine ct predict --runtime onnx` / `cspine xray predict --runtime onnx`.

    CT: OUT/seg.onnx (stage 1, labels), OUT/cls.onnx (stage 2, logit + attention; any number of vertebrae);
    radiographs: OUT/model.onnx (probabilities). OUT/cspine-onnx.json holds the training configs
    (calibration, operating points, prior, window, normalisation, crop geometry). Each network is checked
    with onnx.checker and against PyTorch on an example input.
    """
    from cspine.onnx.export import export_model

    result = export_model(model, out, opset=opset, int8=int8, overwrite=overwrite)
    for name, path in result.files.items():
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in result.max_abs_diff[name].items())
        typer.echo(f"{name}: {path} (largest |ONNX Runtime - PyTorch| on the check input: {diffs})")
    typer.echo(f"wrote a {result.task} export ({'int8' if result.int8 else 'fp32'}) to {result.out_dir}")
