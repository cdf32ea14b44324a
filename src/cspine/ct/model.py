"""A trained two-stage CT model: the RUN folder's ``seg/`` (stage 1) and ``cls/`` (stage 2), loaded once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cspine.errors import CheckpointError
from cspine.fileio import read_json
from cspine.labels import PATIENT_OVERALL, VERTEBRAE
from cspine.output_folder import file_sha256

if TYPE_CHECKING:
    from cspine.ct.cls.operating_points import OperatingPoints
    from cspine.ct.cls.scores import VertebraNet
    from cspine.ct.seg.segment import StackModel

__all__ = ["CLS_DIR", "SEG_DIR", "CtModel"]

#: The stage folders of a RUN folder.
SEG_DIR, CLS_DIR = "seg", "cls"


@dataclass
class CtModel:
    """Both stages of a trained RUN folder (``RUN/seg`` and ``RUN/cls``), loaded once.

    Attributes:
        seg: the stage-1 model.
        cls: the stage-2 model with its calibration.
        run_dir: the RUN folder.
        info: per stage: config kind, cspine version that trained it, weights digest.
    """

    seg: StackModel
    cls: VertebraNet
    run_dir: Path
    info: dict[str, Any] = field(default_factory=dict)
    #: What runs the networks (``"torch"`` here; :class:`cspine.onnx.runtime.OnnxCtModel` says ``"onnx"``).
    runtime: ClassVar[str] = "torch"

    @classmethod
    def load(cls, run_dir: str | Path, device: str | None = None) -> CtModel:
        """Load ``RUN/seg`` and ``RUN/cls``.

        Args:
            run_dir: a folder written by ``cspine ct train --stage all`` (or both stages).
            device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

        Raises:
            CheckpointError: the folder or one stage is missing (the message names the stage and
                the command that makes it), or a stage's files do not match its config.
            DeviceError: a device this machine does not have.

        Example:
            >>> model = CtModel.load("runs/demo", device="cpu")  # doctest: +SKIP
        """
        from cspine.checkpoint import WEIGHTS
        from cspine.ct.cls.predict import ClsModel
        from cspine.ct.seg.predict import SegModel

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError("model RUN folder not found", run_dir)
        stages = {SEG_DIR: "stage 1 (segmentation, `cspine ct train --stage seg`)",
                  CLS_DIR: "stage 2 (vertebra classifier, `cspine ct train --stage cls`)"}
        missing = [f"{name}/ for {what}" for name, what in stages.items()
                   if not (run_dir / name / "config.json").is_file()]
        if missing:
            raise CheckpointError(f"the RUN folder lacks {' and '.join(missing)}; "
                                  "`cspine ct train --stage all` trains both", run_dir)
        seg = SegModel.load(run_dir / SEG_DIR, device=device)
        clsm = ClsModel.load(run_dir / CLS_DIR, device=device)
        info: dict[str, Any] = {"run_dir": str(run_dir.resolve())}
        fingerprint = hashlib.sha256()
        for name in (SEG_DIR, CLS_DIR):
            doc = read_json(run_dir / name / "config.json")
            digest = file_sha256(run_dir / name / WEIGHTS)
            info[name] = {"kind": doc.get("kind"), "trained_with": doc.get("cspine_version"),
                          "weights_sha256_16": digest[:16], "config": doc.get("config")}
            fingerprint.update(f"{name}:{digest}:".encode())
            fingerprint.update((run_dir / name / "config.json").read_bytes())
        info["fingerprint"] = fingerprint.hexdigest()[:32]
        return cls(seg=seg, cls=clsm, run_dir=run_dir, info=info)

    @property
    def fingerprint(self) -> str:
        """A digest of both stages' weights and ``config.json`` (calibration and operating points
        included): two models with the same fingerprint predict the same."""
        return str(self.info.get("fingerprint", ""))

    def operating_points(self) -> OperatingPoints | None:
        """The operating points stage 2's training stored (``None`` for an older model)."""
        from cspine.ct.cls.operating_points import load_operating_points

        return load_operating_points(self.run_dir / CLS_DIR)

    def check_explain(self) -> None:
        """Raise :class:`~cspine.errors.CspineError` when this model cannot explain a prediction
        (attention plots and Grad-CAM); the PyTorch model can."""

    @property
    def device(self) -> str:
        return str(self.cls.device)

    def identity(self) -> dict[str, Any]:
        """What a prediction records of the model: the RUN folder and, per stage, kind, training
        version and weights digest (the configs are left out)."""
        stages = {s: {k: v for k, v in self.info.get(s, {}).items() if k != "config"}
                  for s in (SEG_DIR, CLS_DIR)}
        return {"run_dir": self.info.get("run_dir"), "fingerprint": self.fingerprint, **stages}

    def prior(self) -> dict[str, float]:
        """Training prevalence per vertebra (stage 2's prior) and its noisy-OR for the patient."""
        p = {v: float(self.cls.prior.get(v, 0.0)) for v in VERTEBRAE}
        p[PATIENT_OVERALL] = float(1.0 - np.prod([1.0 - x for x in p.values()]))
        return p
