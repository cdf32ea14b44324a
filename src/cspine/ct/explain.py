"""``--explain``: why stage 2 called a vertebra fractured.

For every vertebra with probability >= a threshold two PNGs are written:

* ``<UID>_<V>_attention.png``: the stage-2 attention over the vertebra's crop slices (x axis: the
  canonical volume slice each crop slice came from), the most attended slice marked;
* ``<UID>_<V>_gradcam.png``: that slice (bone window, the crop's centre channel) beside a
  Grad-CAM heat map overlay. Grad-CAM (Selvaraju et al. 2017) weighs the per-slice CNN's last
  feature map by the gradient of the vertebra's fracture logit averaged over space, keeps the
  positive part and upsamples it to the crop. Because the logit depends on all slices through the
  GRU and the attention, the map is the evidence this slice contributes to the vertebra's call.

The per-slice CNN is ``VertebraClassifier.backbone`` (a timm model); its feature map is caught by
temporarily routing the backbone's ``forward`` through ``forward_features`` + ``forward_head``, which
every timm model has, so no layer name is hard-coded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cspine.fileio import atomic_path  # noqa: E402
from cspine.labels import VERTEBRAE  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["explain_study", "grad_cam", "plot_attention", "plot_gradcam"]


@contextlib.contextmanager
def _capture_features(backbone: torch.nn.Module, store: dict[str, torch.Tensor]) -> Iterator[None]:
    """Wrap ``backbone.forward_features`` (which a timm model's ``forward`` calls, and the classifier
    calls directly when it has a pixel head) so the feature map and its gradient land in ``store``
    (``"features"``, ``"grad"``)."""
    if not (hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")):
        raise TypeError(f"{type(backbone).__name__} has no forward_features/forward_head (not a timm model)")
    original = backbone.forward_features

    def forward_features(x: torch.Tensor) -> torch.Tensor:
        fmap = original(x)
        store["features"] = fmap
        fmap.register_hook(lambda g: store.__setitem__("grad", g))
        return fmap

    backbone.forward_features = forward_features  # type: ignore[method-assign]
    try:
        yield
    finally:
        del backbone.forward_features  # back to the class's method


def grad_cam(model: torch.nn.Module, crop: np.ndarray, slice_pos: int) -> np.ndarray:
    """Grad-CAM of the vertebra logit on one crop slice.

    Args:
        model: a ``VertebraClassifier`` (``.backbone`` = the per-slice timm CNN).
        crop: the crop stack ``(N, C, H, W)`` the model classified.
        slice_pos: which crop slice (0..N-1) to explain.

    Returns:
        float32 ``(H, W)`` heat map in [0, 1] (all zeros when no positive evidence).
    """
    device = next(model.parameters()).device
    store: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None].to(device)
    # cuDNN's RNN backward refuses eval mode; the plain kernels compute the same gradient.
    with (torch.enable_grad(), torch.backends.cudnn.flags(enabled=False),
          _capture_features(model.backbone, store)):
        out = model(x)
        logit = out.logit if hasattr(out, "logit") else out
        model.zero_grad(set_to_none=True)
        logit.float().sum().backward()
    model.train(was_training)
    fmap, grad = store["features"].detach().float(), store["grad"].detach().float()
    if fmap.ndim != 4:
        raise TypeError(f"expected a (N, C, h, w) feature map, got {tuple(fmap.shape)}")
    weights = grad[slice_pos].mean(dim=(1, 2))  # (C,)
    cam = F.relu((weights[:, None, None] * fmap[slice_pos]).sum(0))
    cam = F.interpolate(cam[None, None], size=crop.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam.cpu().numpy()
    top = float(cam.max())
    return (cam / top).astype(np.float32) if top > 0 else np.zeros_like(cam, dtype=np.float32)


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_attention(weights: np.ndarray, slice_indices: np.ndarray, path: Path, title: str) -> Path:
    """Bar plot of attention weights over crop slices, labelled by source slice index."""
    w = np.asarray(weights, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 2.8))
    colors = ["tab:red" if i == int(np.argmax(w)) else "tab:blue" for i in range(len(w))]
    ax.bar(np.arange(len(w)), w, color=colors)
    ax.axhline(1.0 / max(1, len(w)), ls="--", color="0.5", lw=1, label="uniform")
    step = max(1, len(w) // 12)
    ax.set_xticks(np.arange(0, len(w), step), [str(int(s)) for s in np.asarray(slice_indices)[::step]])
    ax.set(xlabel="source slice (canonical index, cranial -> caudal)", ylabel="attention", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gradcam(image: np.ndarray, cam: np.ndarray, path: Path, title: str) -> Path:
    """The slice beside the slice with the Grad-CAM map overlaid (jet, 45% opacity)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.4, 3.4))
    for ax in (a, b):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    b.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    a.set_title("crop slice", fontsize=9)
    b.set_title("Grad-CAM", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def explain_study(volume: Any, scores: Any, cls_model: Any, out_dir: Path, *, threshold: float = 0.5,
                  title: str = "study") -> list[Path]:
    """Attention plot + Grad-CAM overlay for each vertebra with probability >= ``threshold``.

    Args:
        volume: the canonical volume (unused beyond naming; crops carry the pixels).
        scores: ``VertebraScores`` from stage 2 (``probs``, ``attention``, ``crops``).
        cls_model: the loaded ``ClsModel`` (``.model`` is the ``VertebraClassifier``).
        out_dir: where the PNGs go (created).
        threshold: probability from which a vertebra is explained.
        title: prefix of the file names and titles (the study UID).

    Returns:
        The PNG paths written.
    """
    del volume
    out_dir = Path(out_dir)
    files: list[Path] = []
    for name in VERTEBRAE:
        p = float(scores.probs.get(name, 0.0))
        if p < threshold or name not in scores.attention or name not in scores.crops:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        weights, indices = scores.attention[name]
        weights = np.asarray(weights, dtype=np.float64)
        top = int(np.argmax(weights))
        label = f"{title} {name}: p = {p:.2f}"
        files.append(plot_attention(weights, indices, out_dir / f"{title}_{name}_attention.png", label))
        crop = scores.crops[name].array
        cam = grad_cam(cls_model.model, crop, top)
        k = int(getattr(cls_model.cfg, "k", crop.shape[1]))
        image = crop[top, k // 2]  # the centre CT channel of the most attended slice
        files.append(plot_gradcam(image, cam, out_dir / f"{title}_{name}_gradcam.png",
                                  f"{label}, slice {int(np.asarray(indices)[top])}"))
    return files
