"""Inference of the one-stage baseline: calibrated C1..C7 and patient probabilities, and
``predictions.csv`` in the format of ``cspine ct predict`` (so :func:`cspine.ct.evaluate.evaluate`
scores both systems alike)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cspine.checkpoint import config_from_dict, load_weights, read_config
from cspine.ct.baseline.inputs import study_stack
from cspine.ct.baseline.model import KIND, StudyClassifier, build_study_classifier
from cspine.ct.cls.calibrate import Calibration, patient_probability
from cspine.ct.outputs import write_predictions_csv
from cspine.errors import CheckpointError, CspineError
from cspine.io.study import check_ct_study, expand_inputs, load_study, study_uid
from cspine.io.volume import Volume
from cspine.labels import PATIENT_OVERALL, STUDY_UID, VERTEBRAE
from cspine.models.vertebra_classifier import ClsConfig
from cspine.runtime import autocast, resolve_device

log = logging.getLogger(__name__)


@dataclass
class BaselineModel:
    """A loaded baseline model folder with its calibration."""

    model: StudyClassifier
    cfg: ClsConfig
    calibration: Calibration
    patient_calibration: Calibration
    patient_pool: str
    device: torch.device
    folder: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device | None = None) -> BaselineModel:
        """Load a folder written by :func:`cspine.ct.baseline.train.train_baseline`.

        Raises:
            CheckpointError: no such folder, not a baseline model, or weights that do not fit.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError("baseline model folder does not exist", folder)
        doc = read_config(folder, KIND)
        cfg = config_from_dict(ClsConfig, {**doc["config"], "pretrained": "none"})  # weights come from here
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        model = load_weights(folder, build_study_classifier(cfg)).to(dev).eval()
        extra = doc.get("extra", {})
        return cls(model=model, cfg=config_from_dict(ClsConfig, doc["config"]),  # type: ignore[arg-type]
                   calibration=Calibration(**extra.get("calibration", {})),
                   patient_calibration=Calibration(**extra.get("patient_calibration", {})),
                   patient_pool=str(extra.get("patient_pool", "noisy_or")),
                   device=dev, folder=folder, extra=extra)


@dataclass
class BaselinePrediction:
    """One study's result.

    Attributes:
        probs: calibrated probability per C1..C7.
        patient: calibrated noisy-OR patient probability.
        logits: raw level logits.
        attention: ``(N, 7)`` attention over the input slices per level.
        slice_indices: ``(N,)`` volume slice at the centre of each input slice.
    """

    probs: dict[str, float]
    patient: float
    logits: dict[str, float]
    attention: np.ndarray
    slice_indices: np.ndarray

    def row(self, uid: str) -> dict[str, Any]:
        return {STUDY_UID: uid, **self.probs, PATIENT_OVERALL: self.patient}


def predict_volume(volume: Volume, model: BaselineModel) -> BaselinePrediction:
    """Probabilities for one canonical volume."""
    stack = study_stack(volume, model.cfg)
    with torch.inference_mode():
        x = torch.from_numpy(stack.array[None]).to(model.device)
        with autocast(model.device, model.device.type == "cuda"):
            out = model.model(x)
    z = out.logit[0].float().cpu().numpy()
    p = model.calibration.probs(z)
    probs = {v: float(p[i]) for i, v in enumerate(VERTEBRAE)}
    return BaselinePrediction(probs=probs, patient=patient_probability(probs, model.patient_calibration,
                                                                          model.patient_pool),
                              logits={v: float(z[i]) for i, v in enumerate(VERTEBRAE)},
                              attention=out.attention[0].float().cpu().numpy(),
                              slice_indices=stack.slice_indices)


def _load_input(path: Path) -> tuple[str, Volume]:
    """Load, check and name one study as ``cspine ct predict`` does (:mod:`cspine.io.study`)."""
    volume = load_study(path, workers=1)
    check_ct_study(volume, path)
    return study_uid(volume, path), volume


def predict_studies(inputs: Sequence[str | Path] | Mapping[str, Volume], model: BaselineModel,
                    out_dir: str | Path, *, progress: bool = True) -> Path:
    """Predict many studies and write ``out_dir/predictions.csv`` (StudyInstanceUID, C1..C7,
    patient_overall; one row per study, sorted by UID, as ``cspine ct predict`` writes it).

    Args:
        inputs: what ``cspine ct predict`` takes (DICOM study folders, NIfTI CTs, folders of study
            folders, RSNA roots: their ``test_images/``), or ``{uid: canonical Volume}``.
        model: from :meth:`BaselineModel.load`.
        out_dir: output folder (created).
        progress: show a progress bar.

    Returns:
        The path of ``predictions.csv``. A study that fails is logged and left out.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[Any] = list(inputs.items()) if isinstance(inputs, Mapping) else expand_inputs(inputs)[0]
    rows = []
    for item in tqdm(items, desc="baseline predict", unit="study", disable=None if progress else True):
        try:
            uid, volume = item if isinstance(item, tuple) else _load_input(Path(item))
            rows.append(predict_volume(volume, model).row(uid))
        except (CspineError, OSError, ValueError) as exc:
            log.error("skipped %s: %s", item[0] if isinstance(item, tuple) else item, exc)
    return write_predictions_csv(rows, out_dir)
