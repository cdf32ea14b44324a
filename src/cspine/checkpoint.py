"""Model folders: weights as safetensors, everything inference needs as JSON. No pickles.

A trained model is a folder::

    RUN/<stage>/model.safetensors   the best weights
    RUN/<stage>/config.json         {"kind": ..., "config": {...}, "cspine_version": ..., "extra": {...}}
    RUN/<stage>/log.jsonl           one line per epoch
    RUN/<stage>/metrics.json        what the best checkpoint reached
    RUN/<stage>/last.safetensors + last.json   the training state for ``--resume``
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from cspine import __version__
from cspine.errors import CheckpointError
from cspine.fileio import atomic_path, read_json, write_json

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
LOG = "log.jsonl"
METRICS = "metrics.json"
LAST_WEIGHTS = "last.safetensors"
LAST_STATE = "last.json"

C = TypeVar("C")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone to own each tensor.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_model(folder: str | Path, model: torch.nn.Module, config: Any, kind: str,
               extra: dict[str, Any] | None = None) -> None:
    """Write ``model.safetensors`` and ``config.json`` (a frozen dataclass or a dict) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(_contiguous(model.state_dict()), str(tmp))
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    write_json(folder / CONFIG, {"kind": kind, "config": cfg, "cspine_version": __version__,
                                 "extra": extra or {}})


def read_config(folder: str | Path, kind: str) -> dict[str, Any]:
    """The ``config.json`` of a model folder, checked to be of ``kind``."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG} in the model folder; it is needed to rebuild the model", folder)
    try:
        doc = read_json(path)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"is not valid JSON ({exc})", path) from exc
    if doc.get("kind") != kind:
        raise CheckpointError(f"holds a {doc.get('kind')!r} model, expected {kind!r}", path)
    return doc


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build a dataclass from a dict, ignoring unknown keys and turning lists into tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**kwargs)


def load_weights(folder: str | Path, model: torch.nn.Module, filename: str = WEIGHTS) -> torch.nn.Module:
    path = Path(folder) / filename
    if not path.is_file():
        raise CheckpointError(f"no {filename} in the model folder", folder)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a torn file
        raise CheckpointError(f"cannot be read as safetensors ({exc})", path) from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"does not match the model of config.json (missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]})", path)
    return model


# --- training state for --resume ---------------------------------------------------------------

def save_training_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any | None, state: dict[str, Any]) -> None:
    """Save what ``--resume`` needs: weights, optimizer tensors (safetensors) and the rest (JSON)."""
    folder = Path(folder)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_meta: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
    for pid, pstate in opt["state"].items():
        opt_meta["state"][str(pid)] = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{key}"] = value
                opt_meta["state"][str(pid)][key] = "__tensor__"
            else:
                opt_meta["state"][str(pid)][key] = value
    with atomic_path(folder / LAST_WEIGHTS) as tmp:
        save_file(_contiguous(tensors), str(tmp))
    write_json(folder / LAST_STATE, {
        "state": state, "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    })


def load_training_state(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any | None) -> dict[str, Any] | None:
    """Restore the last training state; ``None`` when there is none to resume from."""
    folder = Path(folder)
    if not (folder / LAST_WEIGHTS).is_file() or not (folder / LAST_STATE).is_file():
        return None
    tensors = load_file(str(folder / LAST_WEIGHTS))
    doc = read_json(folder / LAST_STATE)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_meta = doc["optimizer"]
    opt_state: dict[int, dict[str, Any]] = {}
    for pid, pstate in opt_meta["state"].items():
        opt_state[int(pid)] = {
            key: tensors[f"opt.{pid}.{key}"] if value == "__tensor__" else value
            for key, value in pstate.items()
        }
    optimizer.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
    if scheduler is not None and doc.get("scheduler") is not None:
        scheduler.load_state_dict(doc["scheduler"])
    return doc["state"]
