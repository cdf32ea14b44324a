"""Inference with one or several trained radiograph models (PyTorch); an ensemble averages probabilities.

Reading, preprocessing, batching, failures and the CSV are :mod:`cspine.xray.batch` (numpy, shared with
the ONNX Runtime path; re-exported here); this module loads the PyTorch models.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cspine.checkpoint import config_from_dict, load_weights, read_config
from cspine.errors import CheckpointError
from cspine.models.radiograph import CHECKPOINT_KIND, XrayConfig, XrayNet, build_xray_model
from cspine.runtime import resolve_device
from cspine.xray.batch import (  # noqa: F401 - re-exported
    FAILED,
    FAILURES_JSON,
    OK,
    PREDICTIONS_CSV,
    Predictions,
    check_same_classes,
    collect_images,
    model_proba,
    predict_images,
    write_failures,
    write_predictions,
)


def load_xray_model(folder: str | Path, device: str | torch.device | None = "cpu") -> XrayNet:
    """Rebuild a trained model from its folder (``config.json`` + ``model.safetensors``), in eval mode."""
    doc = read_config(folder, CHECKPOINT_KIND)
    try:
        cfg = config_from_dict(XrayConfig, doc["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"config.json does not describe a radiograph model ({exc})", folder) from exc
    model = build_xray_model(cfg, load_pretrained=False)
    load_weights(folder, model)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(dev).eval()
