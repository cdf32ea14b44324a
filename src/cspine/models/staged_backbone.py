"""A timm EfficientNet-style CNN split into a frozen prefix and a trainable rest.

The prefix (``conv_stem``, ``bn1`` and the first ``n`` block stages) keeps its pretrained weights and
BatchNorm statistics and sees only the ``k`` CT channels of a crop slice. Because it never changes, a
trainer can run it once per (augmented) crop and cache its output (:mod:`cspine.ct.cls.feature_cache`):
on a CPU the high-resolution early stages cost most of a forward pass, so each epoch then costs only the
low-resolution rest. The vertebra mask, which a frozen stem could not learn to read, joins after the
prefix through a zero-initialised 1x1 convolution added to the prefix output (at the start the
pretrained features pass unchanged).

``forward_features``/``forward_head`` keep timm's contract, so Grad-CAM (:mod:`cspine.ct.explain`)
works on this backbone as on a plain timm model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StagedBackbone(nn.Module):
    """``net`` (a timm EfficientNet/MobileNet-style model with ``conv_stem``, ``bn1``, ``blocks``) frozen
    up to block stage ``n``; input ``(B, k + m, H, W)``: ``k`` CT channels, ``m`` (0 or 1) mask channels."""

    def __init__(self, net: nn.Module, n: int, k: int, mask: bool) -> None:
        super().__init__()
        for attr in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head"):
            if not hasattr(net, attr):
                raise ValueError(f"{type(net).__name__} has no {attr}: frozen stages need an "
                                 "EfficientNet-style timm backbone (e.g. tf_efficientnet_lite0)")
        if not 0 < n < len(net.blocks):  # type: ignore[arg-type]
            raise ValueError(f"frozen stages must be between 1 and {len(net.blocks) - 1}, got {n}")  # type: ignore[arg-type]
        self.net, self.n, self.k = net, n, k
        self.num_features = int(net.num_features)  # type: ignore[arg-type]
        for module in self.prefix_modules():
            module.requires_grad_(False)
            module.eval()  # frozen BatchNorm statistics (train() keeps them so)
        with torch.no_grad():
            chans = int(self.prefix(torch.zeros(1, k, 32, 32)).shape[1])
        self.prefix_channels = chans
        self.mask_proj: nn.Conv2d | None = None
        if mask:
            self.mask_proj = nn.Conv2d(1, chans, 1)
            nn.init.zeros_(self.mask_proj.weight)
            nn.init.zeros_(self.mask_proj.bias)

    def prefix_modules(self) -> list[nn.Module]:
        return [self.net.conv_stem, self.net.bn1, *self.net.blocks[:self.n]]  # type: ignore[index]

    def train(self, mode: bool = True) -> StagedBackbone:
        super().train(mode)
        for module in self.prefix_modules():
            module.eval()  # frozen BatchNorm statistics
        return self

    def prefix(self, ct: torch.Tensor) -> torch.Tensor:
        """The frozen features of ``(B, k, H, W)`` CT channels."""
        x = self.net.bn1(self.net.conv_stem(ct))  # type: ignore[operator]
        return self.net.blocks[:self.n](x)  # type: ignore[index]

    def join(self, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Prefix features with the mask added (``mask``: ``(B, 1, H, W)`` at any resolution, or ``None``)."""
        if self.mask_proj is None or mask is None or mask.shape[1] == 0:
            return feats
        (h, w), (mh, mw) = (int(s) for s in feats.shape[-2:]), (int(s) for s in mask.shape[-2:])
        if mh % h == 0 and mw % w == 0:  # uniform windows: the same average, and exportable to ONNX
            small = F.avg_pool2d(mask.to(feats.dtype), (mh // h, mw // w))
        else:
            small = F.adaptive_avg_pool2d(mask.to(feats.dtype), (h, w))
        return feats + self.mask_proj(small)

    def encode(self, feats: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled features (B, num_features), joined prefix map)`` from cached prefix features."""
        joined = self.join(feats, mask)
        return self.forward_head(self.rest(joined)), joined

    def rest(self, joined: torch.Tensor) -> torch.Tensor:
        """The trainable stages on joined prefix features, up to timm's ``forward_features`` output."""
        x = self.net.blocks[self.n:](joined)  # type: ignore[index]
        return self.net.bn2(self.net.conv_head(x))  # type: ignore[operator]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        joined = self.join(self.prefix(x[:, :self.k]), x[:, self.k:])
        self.last_joined = joined  # what the classifier's pixel head reads (not state)
        return self.rest(joined)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.net.forward_head(x, pre_logits=True)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
