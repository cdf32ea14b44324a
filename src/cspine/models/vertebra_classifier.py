"""Stage-2 model: one vertebra's 2.5D crop stack in, a fracture logit out.

Architecture (after the RSNA 2022 winners and the CT paper): a per-slice timm CNN encodes each of the
``n_slices`` 2.5D slices (``k`` adjacent CT slices as channels, plus the vertebra mask as an extra
channel when ``use_mask_channel``), a bidirectional GRU runs over the slice features, and an MLP
attention pools the GRU states into one vertebra logit. Each slice also gets a logit from the GRU
state (the auxiliary per-slice head that teaches a randomly initialised CNN where fractures are).
"""

from __future__ import annotations

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
        pretrained: ``none``, ``imagenet`` (timm's cache; needs network or a filled cache) or a path
            to a local ``.safetensors`` file of backbone weights.
        z_margin: share of the vertebra's z-extent added above and below the crop.
        xy_margin: share of the vertebra's in-plane box size added on each side.
        feature_slice_head: a second per-slice fracture head straight on each slice's CNN features
            (before the GRU), trained on the same slice targets (measured: no gain on the phantom).
        pixel_head: a 1x1 convolution on each slice's stride-8 CNN feature map that predicts where
            on the slice a fracture box lies, trained on the in-plane fracture boxes where a study has
            them (RSNA's ``train_bounding_boxes.csv``): it tells a randomly initialised CNN not only
            which slices but which pixels carry the fracture.
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

    @property
    def in_chans(self) -> int:
        """Channels of one crop slice: ``k`` CT slices, plus the mask when enabled."""
        return self.k + (1 if self.use_mask_channel else 0)


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
    import timm

    kwargs = dict(num_classes=0, in_chans=cfg.in_chans)
    choice = cfg.pretrained.strip()
    if choice.lower() in ("", "none"):
        try:
            return timm.create_model(cfg.backbone, pretrained=False, **kwargs)
        except RuntimeError as exc:  # timm: "Unknown model"
            raise CheckpointError(f"unknown timm backbone {cfg.backbone!r} ({exc})") from exc
    if choice.lower() == "imagenet":
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
        if cfg.pixel_head:
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
        pixel_logits = None
        self._tap.clear()
        feats = self.backbone(x.flatten(0, 1)).reshape(b, n, -1)
        if self.pixel_head is not None and self._tap:
            pix = self.pixel_head(self._tap.pop())
            pixel_logits = pix.reshape(b, n, *pix.shape[-2:]).float()
        self._tap.clear()
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
