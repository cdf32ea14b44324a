"""Run exported models with ONNX Runtime on a CPU, without importing PyTorch.

:func:`load_ct` gives an :class:`OnnxCtModel`: a :class:`cspine.ct.model.CtModel` whose two stages are
ONNX Runtime sessions, so :func:`cspine.ct.inference.predict` / ``predict_many`` run it unchanged (the
decode, resampling, post-processing, crops, calibration and outputs are the numpy code the PyTorch path
runs too). :func:`load_xray` gives an :class:`OnnxXrayModel` for :func:`cspine.xray.batch.predict_images`.
Grad-CAM needs PyTorch's gradients, so an ONNX model refuses ``--explain`` and ``--saliency``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cspine.ct.cls.calibrate import Calibration
from cspine.ct.model import CLS_DIR, SEG_DIR, CtModel
from cspine.ct.seg.segment import default_batch_size, stack_batches
from cspine.errors import CheckpointError, CspineError
from cspine.fileio import read_json
from cspine.labels import VERTEBRAE
from cspine.output_folder import file_sha256

from .manifest import CT, MANIFEST, XRAY, ConfigView, read_manifest

__all__ = ["EXPLAIN_REFUSED", "ExplainUnavailable", "OnnxClsModel", "OnnxCtModel", "OnnxSegModel",
           "OnnxXrayModel", "load_ct", "load_xray"]

EXPLAIN_REFUSED = ("--explain/--saliency (attention plots, Grad-CAM) need PyTorch's gradients and are not "
                   "available with --runtime onnx; predict with the PyTorch RUN folder (--runtime torch) "
                   "to explain")


class ExplainUnavailable(CspineError):
    """An explanation was asked of a model run by ONNX Runtime."""


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise CspineError("--runtime onnx needs onnxruntime: pip install 'cspine[onnx]' "
                          "(or pip install onnxruntime)") from exc
    return ort


def runtime_label() -> str:
    """``"cpu (onnxruntime X.Y.Z)"``: the device a prediction records."""
    return f"cpu (onnxruntime {_import_ort().__version__})"


def session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` with every graph optimisation on.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: ``OMP_NUM_THREADS`` when set, else ONNX Runtime's choice).

    Raises:
        CheckpointError: the file cannot be loaded.
    """
    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    env_threads = os.environ.get("OMP_NUM_THREADS", "")
    n = threads if threads is not None else (int(env_threads) if env_threads.isdigit() else 0)
    opts.intra_op_num_threads = max(0, n)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad file
        raise CheckpointError(f"cannot be loaded by ONNX Runtime ({type(exc).__name__}: {exc})",
                              path) from exc


class OnnxSegModel:
    """Stage 1 in ONNX Runtime: the reduced-volume pass of :class:`cspine.ct.seg.segment.StackModel`."""

    def __init__(self, sess: Any, cfg: ConfigView, levels: tuple[int, ...]) -> None:
        self.session, self.cfg, self._levels = sess, cfg, levels
        self.device = runtime_label()

    @property
    def levels(self) -> tuple[int, ...]:
        return self._levels

    def predict_reduced(self, image: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Argmax classes (uint8 (n, S, S)) for a reduced volume ``image`` (n, S, S) in [0, 1] (float32,
        or uint8 scaled 0..255)."""
        batch_size = batch_size or default_batch_size("cpu", int(image.shape[-1]))
        out = np.empty(image.shape, np.uint8)
        scale = np.float32(1 / 255) if image.dtype == np.uint8 else None
        for b0, stacks in stack_batches(image, int(self.cfg.in_slices), batch_size):
            x = (stacks.astype(np.float32) * scale if scale is not None
                 else np.ascontiguousarray(stacks, np.float32))
            out[b0:b0 + len(x)] = self.session.run(["labels"], {"image": x})[0]
        return out


@dataclass
class OnnxClsModel:
    """Stage 2 in ONNX Runtime, with the calibration of the RUN's ``cls/config.json``
    (:class:`cspine.ct.cls.scores.VertebraNet`)."""

    session: Any
    cfg: ConfigView
    calibration: Calibration
    patient_calibration: Calibration
    prior: dict[str, float]
    patient_pool: str
    extra: dict[str, Any]
    device: str

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertebra logits ``(B,)`` and attention ``(B, N)`` of crops ``(B, N, C, H, W)``."""
        x = np.ascontiguousarray(crops, dtype=np.float32)
        logit, attention = self.session.run(["logit", "attention"], {"crops": x})
        return logit, attention


@dataclass
class OnnxCtModel(CtModel):
    """A :class:`CtModel` whose stages run in ONNX Runtime (see :func:`load_ct`)."""

    manifest: dict[str, Any] | None = None
    runtime: ClassVar[str] = "onnx"

    def check_explain(self) -> None:
        raise ExplainUnavailable(EXPLAIN_REFUSED)

    def operating_points(self) -> Any:
        from cspine.ct.cls.operating_points import CONFIG_KEY, OperatingPoints

        block = ((self.manifest or {}).get(CLS_DIR, {}).get("extra") or {}).get(CONFIG_KEY)
        if block is None:
            return None
        try:
            return OperatingPoints.from_dict(block)
        except (TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"holds a malformed {CONFIG_KEY!r} block ({exc})",
                                  self.run_dir / MANIFEST) from exc


def _calibration(extra: dict[str, Any], key: str) -> Calibration:
    return Calibration(**extra.get(key, {}))


def load_ct(folder: str | Path, threads: int | None = None) -> OnnxCtModel:
    """Load a CT export folder (``cspine export onnx --model RUN``).

    Raises:
        CheckpointError: not a CT export, a network file missing, changed or unloadable.
    """
    folder = Path(folder)
    doc = read_manifest(folder, CT)
    nets = doc["networks"]
    fingerprint = hashlib.sha256((folder / MANIFEST).read_bytes())
    for name in (SEG_DIR, CLS_DIR):
        digest = file_sha256(folder / nets[name]["file"])
        if digest != nets[name]["sha256"]:
            raise CheckpointError(f"{nets[name]['file']} does not match the sha256 in {MANIFEST} (changed "
                                  "after export?); export again", folder)
        fingerprint.update(f"{name}:{digest}:".encode())
    seg_doc, cls_doc = doc[SEG_DIR], doc[CLS_DIR]
    seg = OnnxSegModel(session(folder / nets[SEG_DIR]["file"], threads),
                       ConfigView(seg_doc["config"], folder / MANIFEST), tuple(int(v) for v in doc["levels"]))
    extra = cls_doc.get("extra", {})
    cls = OnnxClsModel(session=session(folder / nets[CLS_DIR]["file"], threads),
                       cfg=ConfigView(cls_doc["config"], folder / MANIFEST),
                       calibration=_calibration(extra, "calibration"),
                       patient_calibration=_calibration(extra, "patient_calibration"),
                       prior={v: float(extra.get("absent_vertebra_prior", {}).get(v, 0.0))
                              for v in VERTEBRAE},
                       patient_pool=str(extra.get("patient_pool", "noisy_or")), extra=extra,
                       device=runtime_label())
    info: dict[str, Any] = {"run_dir": str(folder.resolve()), "runtime": "onnx",
                            "precision": doc.get("precision"), "exported_from": doc.get("source"),
                            "fingerprint": fingerprint.hexdigest()[:32]}
    for name, stage in ((SEG_DIR, seg_doc), (CLS_DIR, cls_doc)):
        info[name] = {"kind": stage.get("kind"), "trained_with": stage.get("cspine_version"),
                      "onnx_sha256_16": nets[name]["sha256"][:16], "config": stage.get("config")}
    return OnnxCtModel(seg=seg, cls=cls, run_dir=folder, info=info, manifest=doc)


class OnnxXrayModel:
    """A radiograph network in ONNX Runtime (:class:`cspine.xray.batch.RadiographNet`)."""

    def __init__(self, sess: Any, cfg: ConfigView) -> None:
        self.session, self.cfg = sess, cfg

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, C)`` of preprocessed images ``(B, 3, S, S)``."""
        return self.session.run(["proba"], {"image": np.ascontiguousarray(x, dtype=np.float32)})[0]


def load_xray(folder: str | Path, threads: int | None = None) -> OnnxXrayModel:
    """Load a radiograph export folder (``cspine export onnx --model XRAY_MODEL``).

    Raises:
        CheckpointError: not a radiograph export, or its network is missing or unloadable.
    """
    folder = Path(folder)
    doc = read_manifest(folder, XRAY)
    net = doc["networks"]["model"]
    return OnnxXrayModel(session(folder / net["file"], threads), ConfigView(doc["model"]["config"],
                                                                             folder / MANIFEST))


def is_export(folder: str | Path) -> bool:
    """Whether ``folder`` holds an ONNX export (its manifest)."""
    return (Path(folder) / MANIFEST).is_file() and "kind" in read_json(Path(folder) / MANIFEST)
