"""Stage-2 inference with PyTorch: the vertebra classifier of a RUN's ``cls/`` folder with its calibration.

:func:`classify` (crops, batching, calibration, the patient pool) runs on numpy in
:mod:`cspine.ct.cls.scores` (re-exported here), shared with the ONNX Runtime path; this module loads the
PyTorch network and runs it (:meth:`ClsModel.infer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cspine.checkpoint import config_from_dict, load_weights, read_config
from cspine.ct.cls.calibrate import Calibration
from cspine.ct.cls.scores import VertebraScores, classify  # noqa: F401 - re-exported (numpy, shared with ONNX)
from cspine.errors import CheckpointError
from cspine.labels import VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig, VertebraClassifier, build_classifier
from cspine.runtime import autocast, resolve_device

KIND = "vertebra_classifier"


@dataclass
class ClsModel:
    """A loaded stage-2 model folder (``RUN/cls``) with its calibration."""

    model: VertebraClassifier
    cfg: ClsConfig
    calibration: Calibration
    patient_calibration: Calibration
    prior: dict[str, float]
    device: torch.device
    folder: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    patient_pool: str = "noisy_or"  # models saved before the choice existed used the noisy-OR

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device | None = None) -> ClsModel:
        """Load ``RUN/cls`` (or a RUN folder holding ``cls/``).

        Raises:
            CheckpointError: the folder lacks ``config.json``/``model.safetensors`` or they disagree.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError("stage-2 model folder does not exist", folder)
        if not (folder / "config.json").exists() and (folder / "cls").is_dir():
            folder = folder / "cls"
        if not (folder / "config.json").exists():
            raise CheckpointError("no stage-2 model here (expected RUN/cls/config.json); train it with "
                                  "`cspine ct train --stage cls` or `--stage all`", folder)
        doc = read_config(folder, KIND)
        cfg = config_from_dict(ClsConfig, doc["config"])
        # The saved weights replace any pretrained ones: never reach for a file or the network here.
        cfg_build = ClsConfig(**{**doc["config"], "pretrained": "none"}) if cfg.pretrained != "none" else cfg
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        model = load_weights(folder, build_classifier(cfg_build)).to(dev).eval()
        extra = doc.get("extra", {})
        return cls(model=model, cfg=cfg,
                   calibration=Calibration(**extra.get("calibration", {})),
                   patient_calibration=Calibration(**extra.get("patient_calibration", {})),
                   prior={v: float(extra.get("absent_vertebra_prior", {}).get(v, 0.0)) for v in VERTEBRAE},
                   device=dev, folder=folder, extra=extra,
                   patient_pool=str(extra.get("patient_pool", "noisy_or")))

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertebra logits ``(B,)`` and attention ``(B, N)`` (float32 numpy) of crops ``(B, N, C, H, W)``."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).to(self.device)
            with autocast(self.device, self.device.type == "cuda"):
                out = self.model(x)
            return out.logit.float().cpu().numpy(), out.attention.float().cpu().numpy()
