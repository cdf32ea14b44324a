"""Export trained models to ONNX (opset 17+): CT stage 1 and stage 2, and radiograph networks.

Stage 1 is exported as PyTorch's inference model runs it (BatchNorm folded, the input normalisation
inside) and ends in the argmax, so the graph returns uint8 labels ``(B, S, S)``; the batch of 2.5D
stacks is dynamic. Stage 2 is the whole classifier forward (per-slice CNN, with a frozen-stage backbone
and its mask path as they are, then BiGRU and attention) returning the vertebra logit ``(B,)`` and the
attention ``(B, N)``; the number of vertebrae in a batch is dynamic. A radiograph network returns its
softmax probabilities. Each graph is checked with ``onnx.checker`` and run once in ONNX Runtime on the
example input against PyTorch; the largest difference is recorded in the manifest (:mod:`.manifest`).

``int8=True`` applies ONNX Runtime's dynamic quantization (weights int8, activations quantised on the fly;
``onnxruntime.quantization.quantize_dynamic``) to every network.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cspine import __version__
from cspine.errors import CheckpointError, CspineError
from cspine.fileio import read_json, write_json
from cspine.output_folder import file_sha256

from .manifest import CT, FORMAT, KIND, MANIFEST, XRAY

__all__ = ["MIN_OPSET", "ExportResult", "export_ct", "export_model", "export_xray"]

#: Lowest opset written (GRU, ArgMax and the CNN ops of every backbone are stable there).
MIN_OPSET = 17


class ExportError(CspineError):
    """A model cannot be exported (unknown folder, an unsupported operation, a graph that fails its check)."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        out_dir: the export folder.
        task: ``ct`` or ``xray``.
        files: network name -> file.
        max_abs_diff: network name -> output name -> largest |ONNX Runtime - PyTorch| on the check input.
        int8: whether the networks are dynamically quantised.
    """

    out_dir: Path
    task: str
    files: dict[str, Path] = field(default_factory=dict)
    max_abs_diff: dict[str, dict[str, float]] = field(default_factory=dict)
    int8: bool = False


class _SegLabels(nn.Module):
    """The stage-1 U-Net with its argmax: uint8 labels out, as ``predict_stacks`` takes them."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).argmax(1).to(torch.uint8)


class _ClsOutputs(nn.Module):
    """The stage-2 classifier's forward, reduced to what prediction reads: logit and attention."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        return out.logit.float(), out.attention.float()


class _Proba(nn.Module):
    """A radiograph network's softmax probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.predict_proba(x)  # type: ignore[operator]


def _export_one(module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str],
                dynamic: dict[str, dict[int, str]], opset: int, int8: bool) -> dict[str, float]:
    """Export ``module`` to ``path`` (quantised when ``int8``), check it, and compare it with PyTorch."""
    import onnx
    import onnxruntime as ort

    module = module.eval()
    tmp_dir = Path(tempfile.mkdtemp(prefix="cspine-onnx-", dir=path.parent))
    try:
        fp32 = tmp_dir / "fp32.onnx"
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            try:
                torch.onnx.export(module, (example,), str(fp32), dynamo=False, opset_version=opset,
                                  input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                                  do_constant_folding=True)
            except Exception as exc:  # the exporter raises many types for an unsupported operation
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                raise ExportError(f"{path.name}: ONNX export failed ({type(exc).__name__}: {first})") from exc
            expected = module(example)
        expected = expected if isinstance(expected, tuple) else (expected,)
        final = fp32
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            final = tmp_dir / "int8.onnx"
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its advice to pre-process is logged on the root logger
            try:
                quantize_dynamic(str(fp32), str(final), weight_type=QuantType.QInt8)
            finally:
                root.setLevel(level)
        try:
            onnx.checker.check_model(str(final), full_check=True)
        except Exception as exc:
            raise ExportError(f"{path.name}: the exported graph fails onnx.checker ({exc})") from exc
        session = ort.InferenceSession(str(final), providers=["CPUExecutionProvider"])
        got = session.run(outputs, {inputs[0]: example.numpy()})
        diff = {name: float(np.max(np.abs(g.astype(np.float64) - e.numpy().astype(np.float64))))
                if g.size else 0.0 for name, g, e in zip(outputs, got, expected, strict=True)}
        shutil.move(str(final), str(path))  # same folder: an atomic rename
        return diff
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _resolved_doc(folder: Path, config: Any) -> dict[str, Any]:
    """The folder's ``config.json`` with its config resolved to every dataclass field."""
    doc = read_json(folder / "config.json")
    return {**doc, "config": dataclasses.asdict(config)}


def _prepare_out(out_dir: Path, overwrite: bool) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError("the output path is a file, not a folder", out_dir)
    if (out_dir / MANIFEST).exists() and not overwrite:
        raise ExportError(f"already holds an export ({MANIFEST}); pass --overwrite to replace it", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _manifest(task: str, source: Path, opset: int, int8: bool, networks: dict[str, dict[str, Any]],
              **docs: Any) -> dict[str, Any]:
    return {"kind": KIND, "format": FORMAT, "task": task, "cspine_version": __version__,
            "torch_version": torch.__version__, "opset": opset, "precision": "int8" if int8 else "fp32",
            "source": str(source.resolve()), "networks": networks, **docs}


def export_ct(run_dir: str | Path, out_dir: str | Path, *, opset: int = MIN_OPSET, int8: bool = False,
              overwrite: bool = False) -> ExportResult:
    """Export a CT RUN folder (``seg/`` + ``cls/``) to ``out_dir``.

    Raises:
        CheckpointError: the RUN folder is incomplete or does not match its configs.
        ExportError: the export or its check failed, or ``out_dir`` already holds an export.
    """
    from cspine.ct.model import CLS_DIR, SEG_DIR, CtModel

    run_dir = Path(run_dir)
    model = CtModel.load(run_dir, device="cpu")
    out_dir = _prepare_out(Path(out_dir), overwrite)
    result = ExportResult(out_dir, CT, int8=int8)
    gen = torch.Generator().manual_seed(0)
    scfg = model.seg.cfg  # type: ignore[attr-defined]
    seg_x = torch.rand(2, scfg.in_slices, scfg.image_size, scfg.image_size, generator=gen)
    ccfg = model.cls.cfg
    cls_x = torch.rand(2, ccfg.n_slices, ccfg.in_chans, ccfg.image_size, ccfg.image_size, generator=gen)
    specs = {
        SEG_DIR: (_SegLabels(model.seg.net), seg_x, ["image"], ["labels"],  # type: ignore[attr-defined]
                  {"image": {0: "stacks"}, "labels": {0: "stacks"}}),
        CLS_DIR: (_ClsOutputs(model.cls.model), cls_x, ["crops"], ["logit", "attention"],  # type: ignore[attr-defined]
                  {"crops": {0: "vertebrae"}, "logit": {0: "vertebrae"}, "attention": {0: "vertebrae"}}),
    }
    networks: dict[str, dict[str, Any]] = {}
    for name, (module, example, ins, outs, dyn) in specs.items():
        path = out_dir / f"{name}.onnx"
        result.max_abs_diff[name] = _export_one(module, example, path, ins, outs, dyn, opset, int8)
        result.files[name] = path
        networks[name] = {"file": path.name, "sha256": file_sha256(path), "inputs": ins, "outputs": outs,
                          "check_max_abs_diff": result.max_abs_diff[name]}
    write_json(out_dir / MANIFEST, _manifest(
        CT, run_dir, opset, int8, networks, levels=list(model.seg.levels),
        seg=_resolved_doc(run_dir / SEG_DIR, scfg), cls=_resolved_doc(run_dir / CLS_DIR, ccfg)))
    return result


def export_xray(model_dir: str | Path, out_dir: str | Path, *, opset: int = MIN_OPSET, int8: bool = False,
                overwrite: bool = False) -> ExportResult:
    """Export a radiograph model folder to ``out_dir`` (``model.onnx``: probabilities).

    Raises:
        CheckpointError: the folder is not a trained radiograph model.
        ExportError: the export or its check failed, or ``out_dir`` already holds an export.
    """
    from cspine.xray.predict import load_xray_model

    model_dir = Path(model_dir)
    net = load_xray_model(model_dir, "cpu")
    out_dir = _prepare_out(Path(out_dir), overwrite)
    size = int(net.cfg.image_size)  # type: ignore[arg-type]
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    path = out_dir / "model.onnx"
    diff = _export_one(_Proba(net), example, path, ["image"], ["proba"],
                       {"image": {0: "images"}, "proba": {0: "images"}}, opset, int8)
    networks = {"model": {"file": path.name, "sha256": file_sha256(path), "inputs": ["image"],
                          "outputs": ["proba"], "check_max_abs_diff": diff}}
    write_json(out_dir / MANIFEST, _manifest(XRAY, model_dir, opset, int8, networks,
                                             model=_resolved_doc(model_dir, net.cfg)))
    return ExportResult(out_dir, XRAY, {"model": path}, {"model": diff}, int8)


def export_model(model_dir: str | Path, out_dir: str | Path, *, opset: int = MIN_OPSET, int8: bool = False,
                 overwrite: bool = False) -> ExportResult:
    """Export a CT RUN folder or a radiograph model folder, whichever ``model_dir`` is.

    Raises:
        CheckpointError: ``model_dir`` is neither.
        ExportError: ``opset`` below :data:`MIN_OPSET`, or the export failed.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: cspine exports opset {MIN_OPSET} or later")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError("model folder not found", model_dir)
    if (model_dir / "seg").is_dir() or (model_dir / "cls").is_dir():
        return export_ct(model_dir, out_dir, opset=opset, int8=int8, overwrite=overwrite)
    if (model_dir / "config.json").is_file():
        kind = read_json(model_dir / "config.json").get("kind")
        from cspine.models.radiograph import CHECKPOINT_KIND

        if kind == CHECKPOINT_KIND:
            return export_xray(model_dir, out_dir, opset=opset, int8=int8, overwrite=overwrite)
        raise CheckpointError(f"holds a {kind!r} model; export a whole CT RUN folder (seg/ and cls/) or a "
                              "radiograph model folder", model_dir / "config.json")
    raise CheckpointError("neither a CT RUN folder (seg/, cls/) nor a radiograph model folder (config.json)",
                          model_dir)
