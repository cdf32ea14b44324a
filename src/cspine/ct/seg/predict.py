"""Stage-1 inference: a canonical CT volume in, C1..C7 labels and boxes on its own grid out.

For speed the network never sees the full grid. The volume is resampled to ``cfg.z_spacing`` mm
between slices (linear) and ``image_size`` pixels in-plane (antialiased), the 2.5D stacks of the
reduced volume run through the U-Net in batches (bf16/fp16 autocast on a GPU), the argmax labels are
post-processed on the reduced grid (largest component per level, level order) and then mapped back
to every voxel of the original grid by nearest neighbour. Boundaries are therefore as fine as the
reduced grid (e.g. 2 mm in z, 512/256 = 2 pixels in-plane), which is ample for the vertebra crops
stage 2 takes; the boxes and centroids are computed on the full grid.

A study with no bone in view (no voxel above :data:`BONE_HU`) is not an error: ``segment`` returns
all vertebrae absent with a warning, so that a batch of studies goes on. A study with fewer than two
slices raises :class:`SegmentationInputError`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cspine.checkpoint import WEIGHTS, load_weights, read_config
from cspine.errors import CheckpointError, CspineError
from cspine.io.volume import Volume
from cspine.models.fold import fold_batchnorm
from cspine.models.unet2p5d import SegConfig, build_seg_model
from cspine.runtime import autocast, resolve_device

from .grid import reduced_grid, resample_image, stack_indices, to_full_grid
from .postprocess import Segmentation, postprocess

log = logging.getLogger(__name__)

#: ``config.json`` kind of a stage-1 model folder.
KIND = "seg"
#: HU above which a voxel counts as bone when checking that a study shows any.
BONE_HU = 200
#: Fewest bone voxels a study must have before the model runs.
MIN_BONE_VOXELS = 50


class SegmentationInputError(CspineError):
    """A volume cannot be segmented (e.g. a single slice)."""


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


#: Stacks per forward pass when the caller gives none: small batches keep a CPU's activations in
#: cache (at 256 px, 4 ran ~1.7x faster per slice than 16 on 2 cores); a GPU wants large ones.
CPU_BATCH, GPU_BATCH = 4, 32
#: On a CPU the batch grows as the image shrinks (same pixels per pass, up to 64 stacks): at 64 px a
#: batch of 4 is dominated by per-call overhead (EfficientNet-Lite0 U-Net: 16 stacks ~1.5x faster).
CPU_BATCH_PIXELS, CPU_BATCH_MAX = CPU_BATCH * 256 * 256, 64


def default_batch_size(device: torch.device, image_size: int = 256) -> int:
    """Stacks per forward pass on ``device`` for ``image_size`` px slices."""
    if device.type != "cpu":
        return GPU_BATCH
    return int(min(CPU_BATCH_MAX, max(CPU_BATCH, CPU_BATCH_PIXELS // max(image_size, 1) ** 2)))


def predict_stacks(net: torch.nn.Module, image: np.ndarray, k: int, device: torch.device,
                   batch_size: int | None = None) -> np.ndarray:
    """Run ``net`` (in eval mode) over every 2.5D stack of ``image`` (n, S, S) in [0, 1] (float32 or
    uint8 scaled 0..255); return the argmax classes, uint8 (n, S, S)."""
    batch_size = batch_size or default_batch_size(device, int(image.shape[-1]))
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    n = len(image)
    idx = stack_indices(n, k)
    out = np.empty((n, image.shape[1], image.shape[2]), np.uint8)
    src = torch.from_numpy(np.ascontiguousarray(image))
    scale = 1 / 255 if image.dtype == np.uint8 else 1.0
    with torch.inference_mode(), autocast(device):
        for b0 in range(0, n, batch_size):
            x = src[torch.from_numpy(idx[b0:b0 + batch_size])].to(device, non_blocking=True)
            x = x.float() * scale if scale != 1.0 else x
            logits = net(x.contiguous(memory_format=memory_format))
            out[b0:b0 + len(x)] = logits.argmax(1).to(torch.uint8).cpu().numpy()
    return out


def _check_volume(volume: Volume) -> None:
    if volume.hu.ndim != 3:
        raise SegmentationInputError(f"expected a 3-D volume, got shape {volume.hu.shape}")
    if volume.shape[0] < 2:
        where = volume.slices[0].path if volume.slices and volume.slices[0].path else None
        raise SegmentationInputError(
            f"the study has {volume.shape[0]} axial slice(s); stage 1 needs a CT volume of at least 2 slices "
            "(is this a localizer or a single image rather than the axial series?)", where)


def segment(volume: Volume, model: SegModel, *, batch_size: int | None = None) -> Segmentation:
    """Label C1..C7 in a canonical volume (axis 0 superior -> inferior; see ``cspine.io.orient``).

    Args:
        volume: the study in canonical orientation.
        model: a loaded :class:`SegModel`.
        batch_size: 2.5D stacks per forward pass (default: 4 on a CPU, 32 on a GPU).

    Returns:
        A :class:`Segmentation` on ``volume``'s grid, with warnings for levels not found, levels
        relabelled to keep their order, or a study without bone.

    Raises:
        SegmentationInputError: fewer than two slices.
    """
    _check_volume(volume)
    hu = volume.hu
    if _bone_voxels(hu) < MIN_BONE_VOXELS:
        msg = f"no bone in view (fewer than {MIN_BONE_VOXELS} voxels above {BONE_HU} HU): no vertebra found"
        log.warning("%s: %s", volume.study_uid or "study", msg)
        return Segmentation.from_labels(np.zeros(volume.shape, np.uint8), [msg])
    grid = reduced_grid(volume.shape, volume.spacing[0], model.cfg)
    image = resample_image(hu, grid, model.cfg)
    small = model.predict_reduced(image, batch_size=batch_size)
    small, warnings = postprocess(small, model.levels)
    labels = to_full_grid(small, grid)
    seg = Segmentation.from_labels(labels, warnings)
    missing = [n for n, b in seg.vertebrae.items() if not b.present]
    if missing:
        seg = Segmentation(seg.labels, seg.vertebrae, (*seg.warnings, f"not found: {', '.join(missing)}"))
    return seg


def _bone_voxels(hu: np.ndarray) -> int:
    # Every 4th slice and pixel: a cheap, memmap-friendly check.
    return int(np.count_nonzero(np.asarray(hu[::4, ::4, ::4]) > BONE_HU)) * 64
