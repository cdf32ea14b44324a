"""Stage-1 inference with PyTorch: the U-Net of a RUN's ``seg/`` folder, loaded for :func:`segment`.

:func:`segment` and everything around the network (resampling, post-processing, mapping back) run on
numpy in :mod:`cspine.ct.seg.segment` (re-exported here), shared with the ONNX Runtime path; this module
holds the PyTorch model (channels-last and BatchNorm folded on a CPU, bf16/fp16 autocast on a GPU).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cspine.checkpoint import WEIGHTS, load_weights, read_config
from cspine.errors import CheckpointError
from cspine.models.fold import fold_batchnorm
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.runtime import autocast, resolve_device

from .segment import (  # noqa: F401 - re-exported: the numpy steps and their errors live there
    BONE_HU,
    CPU_BATCH,
    CPU_BATCH_MAX,
    CPU_BATCH_PIXELS,
    GPU_BATCH,
    MIN_BONE_VOXELS,
    SegmentationInputError,
    default_batch_size,
    segment,
    stack_batches,
)

log = logging.getLogger(__name__)

#: ``config.json`` kind of a stage-1 model folder.
KIND = "seg"

def seg_config_from_dict(data: dict) -> SegConfig:
    """A :class:`SegConfig` from its JSON form (unknown keys ignored, lists made tuples)."""
    names = set(SegConfig.__dataclass_fields__)
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return SegConfig(**kw)


class SegModel:
    """A loaded stage-1 model: the network in eval mode, its config and its device."""

    def __init__(self, net: torch.nn.Module, cfg: SegConfig, device: torch.device) -> None:
        net = net.to(device).eval()
        memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        # NHWC convolutions run ~1.5x faster on x86 CPUs (oneDNN); weights are unchanged.
        net = net.to(memory_format=memory_format)
        # Inference only: BatchNorm folded into the convolutions (checked against the original).
        example = torch.rand(1, cfg.in_slices, cfg.image_size, cfg.image_size,
                             generator=torch.Generator().manual_seed(0)).to(device)
        self.net = fold_batchnorm(net, example.contiguous(memory_format=memory_format))
        self.cfg = cfg
        self.device = device

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> SegModel:
        """Load ``folder/config.json`` + ``folder/model.safetensors`` (a training run's ``RUN/seg``).

        A RUN folder holding a ``seg/`` subfolder is accepted too.

        Raises:
            CheckpointError: the folder lacks config.json or the weights, or they do not match.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError("model folder not found", folder)
        if not (folder / "config.json").is_file() and (folder / KIND / "config.json").is_file():
            folder = folder / KIND
        doc = read_config(folder, KIND)
        if not (folder / WEIGHTS).is_file():
            raise CheckpointError(f"no {WEIGHTS} in the model folder (was training interrupted before the "
                                  "first validation?)", folder)
        try:
            cfg = seg_config_from_dict(doc["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"config.json does not describe a stage-1 model ({exc})", folder) from exc
        # The weights come from the folder: never fetch or load pretrained encoder weights here.
        net = build_seg_model(SegConfig(**{**asdict(cfg), "pretrained": "none"}))
        load_weights(folder, net)
        return cls(net, cfg, resolve_device(device))

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(range(1, self.cfg.n_classes))

    def predict_reduced(self, image: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Argmax classes (uint8 (n, S, S)) for a reduced volume ``image`` float32 (n, S, S) in [0, 1]."""
        return predict_stacks(self.net, image, self.cfg.in_slices, self.device, batch_size)


def predict_stacks(net: torch.nn.Module, image: np.ndarray, k: int, device: torch.device,
                   batch_size: int | None = None) -> np.ndarray:
    """Run ``net`` (in eval mode) over every 2.5D stack of ``image`` (n, S, S) in [0, 1] (float32 or
    uint8 scaled 0..255); return the argmax classes, uint8 (n, S, S)."""
    batch_size = batch_size or default_batch_size(device.type, int(image.shape[-1]))
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    out = np.empty(image.shape, np.uint8)
    scale = 1 / 255 if image.dtype == np.uint8 else 1.0
    with torch.inference_mode(), autocast(device):
        for b0, stacks in stack_batches(image, k, batch_size):
            x = torch.from_numpy(stacks).to(device, non_blocking=True)
            x = x.float() * scale if scale != 1.0 else x
            logits = net(x.contiguous(memory_format=memory_format))
            out[b0:b0 + len(x)] = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return out
