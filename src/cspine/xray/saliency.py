"""Where the classifier looks: gradient saliency and Grad-CAM, as PNGs at the image's own size.

* Gradient saliency (Simonyan et al. 2014): |d score / d input|, maximum over the 3 channels.
* Grad-CAM (Selvaraju et al. 2017): the last convolutional block's activations weighted by the
  spatially averaged gradients of the class score, ReLU'd.

Both are computed at the model's input size, upsampled to the original image's height and width
and scaled to [0, 1]. The saliency map is written as a grayscale PNG; Grad-CAM as a jet heat map
blended over the radiograph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cspine.fileio import atomic_path
from cspine.io.images import DEFAULT_MAX_PIXELS, read_image
from cspine.models.radiograph import XrayNet
from cspine.xray.transforms import preprocess


def _to_image_size(m: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(m[None, None].float(), size=shape, mode="bilinear", align_corners=False)[0, 0]
    up = up - up.min()
    peak = float(up.max())
    return (up / peak if peak > 0 else up).numpy().astype(np.float32)


def saliency_maps(model: XrayNet, image: np.ndarray, target: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Gradient saliency and Grad-CAM of one ``(H, W)`` [0, 1] image.

    Args:
        model: a trained model (any mode; evaluated in eval mode, restored after).
        image: the radiograph as :func:`cspine.io.images.read_image` returns it.
        target: the class to explain; ``None`` = the predicted class.

    Returns:
        ``(saliency, gradcam, target)``: two float32 ``(H, W)`` maps in [0, 1] and the class used.
    """
    dev = next(model.parameters()).device
    cfg = model.cfg
    x = preprocess(image, int(cfg.image_size), cfg.mean, cfg.std)[None].to(dev)  # type: ignore[arg-type]
    x.requires_grad_(True)
    acts: list[torch.Tensor] = []
    handle = model.cam_layer.register_forward_hook(lambda _m, _i, o: acts.append(o))
    was_training = model.training
    # parameters of a frozen backbone must not block the gradient to the input
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            cls = int(logits.argmax(1)) if target is None else int(target)
            score = logits[0, cls]
            grad_x, grad_a = torch.autograd.grad(score, [x, acts[0]])
    finally:
        handle.remove()
        model.train(was_training)
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
    sal = grad_x[0].abs().amax(0).detach().cpu()
    weights = grad_a[0].mean(dim=(1, 2), keepdim=True)
    cam = F.relu((weights * acts[0][0]).sum(0)).detach().cpu()
    shape = (int(image.shape[0]), int(image.shape[1]))
    return _to_image_size(sal, shape), _to_image_size(cam, shape), cls


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8: the radiograph in gray with the heat map in matplotlib's jet blended over it."""
    from matplotlib import colormaps

    gray = np.repeat(image[..., None], 3, axis=2)
    color = colormaps["jet"](heat)[..., :3]
    return np.round(255 * np.clip((1 - alpha) * gray + alpha * color, 0, 1)).astype(np.uint8)


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def unique_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct output stem per image: the file name's stem, with ``-2``, ``-3``... appended to the
    second and later images of the same stem (``a/p0.png`` and ``b/p0.png`` must not share a PNG)."""
    out: dict[Path, str] = {}
    taken: set[str] = set()
    for p in paths:
        stem, k = Path(p).stem, 2
        while stem in taken:
            stem, k = f"{Path(p).stem}-{k}", k + 1
        taken.add(stem)
        out[Path(p)] = stem
    return out


def saliency_names(stem: str, tag: str = "") -> tuple[str, str]:
    """File names of the saliency and Grad-CAM PNGs of an image with output stem ``stem``."""
    base = stem + (f".{tag}" if tag else "")
    return f"{base}.saliency.png", f"{base}.gradcam.png"


def write_saliency(model: XrayNet, image_path: str | Path, out_dir: str | Path, tag: str = "",
                   target: int | None = None, *, stem: str | None = None,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Path, Path]:
    """Write ``<stem>[.<tag>].saliency.png`` and ``<stem>[.<tag>].gradcam.png`` into ``out_dir``
    (``stem``: the image's file stem unless given, see :func:`unique_stems`)."""
    image_path, out_dir = Path(image_path), Path(out_dir)
    img = read_image(image_path, max_pixels)
    sal, cam, _ = saliency_maps(model, img, target)
    name_sal, name_cam = saliency_names(image_path.stem if stem is None else stem, tag)
    p_sal, p_cam = out_dir / name_sal, out_dir / name_cam
    _write_png(p_sal, np.round(sal * 255).astype(np.uint8))
    _write_png(p_cam, overlay(img, cam))
    return p_sal, p_cam
