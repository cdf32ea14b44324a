"""Training stage 2 on cached frozen-prefix features (``ClsConfig.frozen_stages`` > 0).

The frozen stem and first block stages of the per-slice CNN never change during training, so their
output is computed once per crop and *augmented variant* and kept in memory (float16), and every epoch
runs only the trainable rest (:meth:`VertebraClassifier.forward_cached`). On a 2-core CPU the
high-resolution early stages are most of a forward pass; caching them buys epochs and larger crops.

Augmentation happens before the prefix, on the crop, so the cached variants carry it: the geometric and
intensity augmentation of :class:`~cspine.ct.cls.dataset.CropDataset` (flip, shift, window scale and
offset) plus what differs between scanners and reconstructions (:func:`scanner_augment`: blur of a
softer kernel or thicker slices, noise, a gamma change of the windowed intensities). Each training draw
picks one of a crop's ``variants`` at random; variant 0 of the validation crops is unaugmented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cspine.ct.cls.dataset import CropDataset, CropSample


def scanner_augment(x: np.ndarray, rng: np.random.Generator, ct_channels: int) -> np.ndarray:
    """Scanner-to-scanner variation on the ``ct_channels`` first channels of a ``(N, C, H, W)`` crop in
    [0, 1]: Gaussian blur (sigma up to 1 px, half the time), noise (sigma up to 0.04, i.e. ~70 HU in the
    bone window) and a gamma in [0.8, 1.25]."""
    from scipy import ndimage

    out = x.copy()
    ct = out[:, :ct_channels]
    if rng.random() < 0.5:
        ct[:] = ndimage.gaussian_filter(ct, sigma=(0, 0, *(2 * [rng.uniform(0.3, 1.0)])))
    ct += rng.normal(0.0, rng.uniform(0.0, 0.04), size=ct.shape).astype(np.float32)
    np.clip(ct, 0.0, 1.0, out=ct)
    ct[:] = ct ** rng.uniform(0.8, 1.25)
    return out


@dataclass
class PrefixCache:
    """Cached prefix features of samples x variants, with each variant's (augmented) targets.

    Attributes:
        feats: float16 ``(S, V, N, C, h, w)``.
        masks: uint8 ``(S, V, N, 1, H, W)`` mask channels (``(S, V, N, 0, H, W)`` without one).
        pixel: uint8 ``(S, V, N, H, W)`` pixel targets (an empty array when the samples carry none).
        labels: float32 ``(S,)``; slice_targets: float32 ``(S, N)``.
    """

    feats: torch.Tensor
    masks: torch.Tensor
    pixel: torch.Tensor
    labels: torch.Tensor
    slice_targets: torch.Tensor

    @property
    def variants(self) -> int:
        return int(self.feats.shape[1])


@torch.no_grad()
def build_prefix_cache(model: torch.nn.Module, samples: Sequence[CropSample], *, variants: int, augment: bool,
                       seed: int, mask_channel: bool, device: torch.device, batch_size: int = 8,
                       progress: bool = True, desc: str = "stage 2 prefix features") -> PrefixCache:
    """Run the frozen prefix of ``model`` (a :class:`VertebraClassifier` with ``frozen_stages``) once per
    sample and variant. ``augment=False`` gives one unaugmented variant (validation)."""
    variants = variants if augment else 1
    ds = CropDataset(list(samples), augment=augment, seed=seed, mask_channel=mask_channel)
    rng = np.random.default_rng(seed + 7919)
    k = model.cfg.k  # type: ignore[union-attr]
    feats, masks, pixel = [], [], []
    model.eval()
    bar = tqdm(total=len(samples) * variants, desc=desc, disable=None if progress else True, leave=False)
    for _ in range(variants):
        f_v, m_v, p_v = [], [], []
        for i0 in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(i0, min(i0 + batch_size, len(ds)))]
            xs = [it[0].numpy() for it in items]
            if augment:
                xs = [scanner_augment(x, rng, k) for x in xs]
            x = model.normalise(torch.from_numpy(np.stack(xs)).to(device))  # type: ignore[operator]
            b, n = x.shape[:2]
            f = model.backbone.prefix(x[:, :, :k].flatten(0, 1))  # type: ignore[union-attr]
            f_v.append(f.reshape(b, n, *f.shape[1:]).half().cpu())
            m_v.append((x[:, :, k:] * 255).round().to(torch.uint8).cpu())
            p_v += [it[3] for it in items]
            bar.update(len(items))
        feats.append(torch.cat(f_v))
        masks.append(torch.cat(m_v))
        pixel.append(torch.stack(p_v) if p_v and p_v[0].numel() else torch.zeros(0, dtype=torch.uint8))
    bar.close()
    pix = torch.stack(pixel, 1) if pixel[0].numel() else torch.zeros(0, dtype=torch.uint8)
    return PrefixCache(feats=torch.stack(feats, 1), masks=torch.stack(masks, 1), pixel=pix,
                       labels=torch.tensor([s.label for s in samples], dtype=torch.float32),
                       slice_targets=torch.from_numpy(np.stack([s.slice_target for s in samples])))


class PrefixDataset(Dataset):
    """Draws from a :class:`PrefixCache`: ``(feats, label, slice targets, pixel targets, mask)``, one
    random variant per draw (seeded per epoch through :meth:`set_epoch`)."""

    def __init__(self, cache: PrefixCache, seed: int) -> None:
        self.cache, self.seed = cache, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self._rng = np.random.default_rng([self.seed, epoch])

    def __len__(self) -> int:
        return int(self.cache.feats.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        c = self.cache
        v = int(self._rng.integers(c.variants))  # a sample drawn twice in an epoch may get another variant
        pix = c.pixel[i, v] if c.pixel.numel() else torch.zeros(0, dtype=torch.uint8)
        return (c.feats[i, v].float(), c.labels[i], c.slice_targets[i], pix, c.masks[i, v].float() / 255.0)


@torch.no_grad()
def cached_logits(model: torch.nn.Module, cache: PrefixCache, device: torch.device,
                  batch_size: int = 32) -> np.ndarray:
    """Vertebra logits of variant 0 of every cached sample (eval mode)."""
    model.eval()
    out = []
    for i in range(0, int(cache.feats.shape[0]), batch_size):
        f = cache.feats[i:i + batch_size, 0].to(device).float()
        m = cache.masks[i:i + batch_size, 0].to(device).float() / 255.0
        logit = model.forward_cached(f, m if m.shape[2] else None).logit  # type: ignore[operator]
        out.append(logit.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)

