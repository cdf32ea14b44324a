"""Stage-2 inference: calibrated fracture probabilities per vertebra and for the patient.

A vertebra stage 1 did not find gets the training prevalence of that level (stored in the model's
``config.json`` as ``absent_vertebra_prior``): the model has no evidence either way, and the prior is
the probability that minimises the expected log loss then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cspine.checkpoint import config_from_dict, load_weights, read_config
from cspine.ct.cls.calibrate import Calibration, patient_probability
from cspine.ct.cls.crops import VertebraCrop, extract_crops
from cspine.ct.seg.postprocess import Segmentation
from cspine.errors import CheckpointError
from cspine.io.volume import Volume
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


@dataclass
class VertebraScores:
    """Stage-2 result for one study.

    Attributes:
        probs: calibrated fracture probability per C1..C7 (absent vertebra: the training prior).
        patient: calibrated patient probability (noisy-OR, then patient calibration).
        logits: raw model logits of the vertebrae that were classified.
        attention: ``{name: (weights (N,), volume slice indices (N,))}``.
        crops: the crops the model saw (for Grad-CAM and overlays).
        present: vertebrae that stage 1 found and stage 2 classified.
    """

    probs: dict[str, float]
    patient: float
    logits: dict[str, float]
    attention: dict[str, tuple[np.ndarray, np.ndarray]]
    crops: dict[str, VertebraCrop]
    present: tuple[str, ...]


def classify(volume: Volume, seg: Segmentation, model: ClsModel, batch_size: int = 7, *,
             crops: Mapping[str, VertebraCrop] | None = None) -> VertebraScores:
    """Fracture probabilities for every vertebra of one study.

    Args:
        volume: the study in canonical orientation.
        seg: its stage-1 segmentation (on the volume's grid).
        model: a loaded :class:`ClsModel`.
        batch_size: vertebrae per forward pass.
        crops: the study's crops when the caller has cut them already
            (``extract_crops(volume, seg, model.cfg)``, e.g. to time them apart); cut here otherwise.
    """
    crops = dict(crops) if crops is not None else extract_crops(volume, seg, model.cfg)
    names = list(crops)
    logits: dict[str, float] = {}
    attention: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    amp = model.device.type == "cuda"
    with torch.inference_mode():
        for i in range(0, len(names), batch_size):
            chunk = names[i:i + batch_size]
            x = torch.from_numpy(np.stack([crops[n].array for n in chunk])).to(model.device)
            with autocast(model.device, amp):
                out = model.model(x)
            for j, n in enumerate(chunk):
                logits[n] = float(out.logit[j].float())
                attention[n] = (out.attention[j].float().cpu().numpy(), crops[n].slice_indices)
    probs = {v: float(model.calibration.probs(np.array(logits[v]))) if v in logits else model.prior[v]
             for v in VERTEBRAE}
    return VertebraScores(probs=probs, patient=patient_probability(probs, model.patient_calibration,
                                                                      model.patient_pool),
                          logits=logits, attention=attention, crops=crops, present=tuple(names))
