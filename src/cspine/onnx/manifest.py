"""An ONNX export folder: its networks and the JSON beside them (no torch, no onnxruntime import).

``cspine export onnx`` writes::

    OUT/seg.onnx, OUT/cls.onnx      CT: stage 1 (argmax labels) and stage 2 (logit, attention)
    OUT/model.onnx                  radiographs: class probabilities
    OUT/cspine-onnx.json            everything predict needs besides the networks

The JSON holds, per network, the source model folder's ``config.json`` document as training wrote it
(calibration, operating points, absent-vertebra prior, patient pool under ``extra``), with its config
resolved to every field of the dataclass (window, input normalisation, sizes, k, margins, ...): the facts
keep their one home, the training run's config, and are copied, never re-typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cspine.errors import CheckpointError
from cspine.fileio import read_json

__all__ = ["CT", "MANIFEST", "XRAY", "ConfigView", "read_manifest"]

MANIFEST = "cspine-onnx.json"
KIND = "cspine-onnx"
#: ``task`` of an export: a two-stage CT model or a radiograph model.
CT, XRAY = "ct", "xray"
#: Version of the folder layout; a reader refuses a newer one.
FORMAT = 1


class ConfigView:
    """A read-only view of a saved config (lists as tuples), standing in for the training dataclass where
    PyTorch is not imported. A field the export lacks is a clear error, never a guessed default."""

    def __init__(self, data: Mapping[str, Any], where: Path) -> None:
        self._data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        self._where = where

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise CheckpointError(f"the exported config lacks {name!r} (exported by an older cspine?); "
                                  "export the model again with `cspine export onnx`", self._where) from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


def read_manifest(folder: str | Path, task: str) -> dict[str, Any]:
    """The checked ``cspine-onnx.json`` of an export folder of ``task``.

    Raises:
        CheckpointError: no such folder or file, another task, a newer format, or a network file missing.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        hint = ("a PyTorch model folder: make an ONNX export with `cspine export onnx --model "
                f"{folder} --out DIR`" if (folder / "config.json").is_file() or (folder / "seg").is_dir()
                else "export one with `cspine export onnx`")
        raise CheckpointError(f"no {MANIFEST} here, so not an ONNX export ({hint})", folder)
    try:
        doc = read_json(path)
    except ValueError as exc:
        raise CheckpointError(f"is not valid JSON ({exc})", path) from exc
    if doc.get("kind") != KIND or doc.get("task") != task:
        raise CheckpointError(f"holds a {doc.get('task')!r} export, expected {task!r}", path)
    if int(doc.get("format", 0)) > FORMAT:
        raise CheckpointError(f"export format {doc.get('format')} is newer than this cspine reads ({FORMAT})",
                              path)
    for name, net in doc.get("networks", {}).items():
        if not (folder / net["file"]).is_file():
            raise CheckpointError(f"the {name} network {net['file']} is missing", folder)
    return doc
